//! Idle-timeout rules (causes 1, 7, 8, 13) on streams recorded with
//! `tcptrace trace --json` on kernel 6.18 behind a NAT namespace that
//! forgets flows (conntrack `tcp_timeout_established` 2-3 s, `tcp_loose`
//! 0, INVALID dropped or rejected with an RST), and on constructed ones.

use super::*;
use crate::{
    aggregate::testing::*,
    diagnosis::finding::rank,
    event::{EventKind as K, TcpEvent},
    host::conntrack::{Conntrack, ConntrackChange, ConntrackState, parse_stat},
};

fn diagnose_events(events: &[TcpEvent], host: &HostFacts) -> Vec<Finding> {
    let mut agg = Aggregate::new(names());
    for e in events {
        agg.add(e);
    }
    agg.finish();
    let mut findings: Vec<Finding> = evaluate(&Inputs {
        agg: &agg,
        host,
        seconds: 10.0,
    })
    .into_iter()
    .flat_map(|o| o.findings)
    .collect();
    rank(&mut findings);
    findings
}

fn diagnose(ndjson: &str, host: &HostFacts) -> Vec<Finding> {
    diagnose_events(&from_ndjson(ndjson), host)
}

/// The top finding is `cause`, high, and nothing else is medium or high.
fn only(findings: &[Finding], cause: Cause) -> &Finding {
    if std::env::var_os("SHOW").is_some() {
        eprintln!("{findings:#?}");
    }
    let top = findings.first().expect("a finding");
    assert_eq!(top.cause, cause, "{findings:#?}");
    assert_eq!(top.confidence, Confidence::High, "{top:#?}");
    assert!(
        findings[1..]
            .iter()
            .all(|f| f.confidence == Confidence::Low),
        "{findings:#?}"
    );
    top
}

fn serious(findings: &[Finding]) -> Vec<Cause> {
    findings
        .iter()
        .filter(|f| f.confidence > Confidence::Low)
        .map(|f| f.cause)
        .collect()
}

fn within(f: &Finding, figure: &str, low: f64, high: f64) {
    let v = *f
        .figures
        .get(figure)
        .unwrap_or_else(|| panic!("no figure {figure}: {f:#?}"));
    assert!((low..=high).contains(&v), "{figure} = {v}: {f:#?}");
}

#[test]
fn silent_nat_seen_from_the_client() {
    // 4 pooled connections through a NAT forgetting flows idle > 3 s;
    // gaps 0.5, 1, 2 s answered, the 4 s one retransmitted until the app
    // gave up (ipvs_idle_blackhole, recorded).
    let findings = diagnose(
        include_str!("../recorded/nat_silent_client.ndjson"),
        &HostFacts::default(),
    );
    let f = only(&findings, Cause::MiddleboxIdleBlackhole);
    assert_eq!(f.affected[0].comm, "report-job");
    assert_eq!(f.affected[0].peer, Some("10.77.9.9:5432".parse().unwrap()));
    within(f, "idle_survived_s", 2.1, 2.2);
    within(f, "idle_failed_s", 3.95, 4.05);
    within(f, "idle_timeout_s", 2.1, 4.05);
    assert_eq!(f.figures["reuses_failed"], 4.0);
    assert_eq!(f.figures["reuses_worked"], 12.0);
    assert!(f.summary.contains("10.77.9.9:5432"), "{}", f.summary);
    assert!(f.fix[0].contains("2.1 s"), "{}", f.fix[0]);
}

#[test]
fn silent_nat_ipv6_with_user_timeout() {
    // The same over IPv6 with a 2 s timeout; TCP_USER_TIMEOUT 1.5 s makes
    // the kernel give up (ETIMEDOUT): explained, so no loss finding.
    let findings = diagnose(
        include_str!("../recorded/nat_silent6_client.ndjson"),
        &HostFacts::default(),
    );
    let f = only(&findings, Cause::MiddleboxIdleBlackhole);
    within(f, "idle_survived_s", 1.55, 1.65);
    within(f, "idle_failed_s", 2.55, 2.65);
    assert!(f.summary.contains("[fd78:9::9]:5432"), "{}", f.summary);
    assert!(
        f.evidence.iter().any(|e| e.contains("3 ETIMEDOUT")),
        "{f:#?}"
    );
}

fn conntrack(invalid_before: u64, invalid_after: u64, loose: u64, established: u64) -> HostFacts {
    let state = |invalid| {
        Conntrack::Loaded(ConntrackState {
            stats: parse_stat(&format!(
                "entries found invalid\n00000000 00000000 {invalid:08x}\n"
            ))
            .expect("stat text")
            .1,
            count: Some(0),
            max: Some(262_144),
            tcp_loose: Some(loose),
            tcp_timeout_established: Some(established),
            ..ConntrackState::default()
        })
    };
    HostFacts {
        conntrack: Some(ConntrackChange::new(
            state(invalid_before),
            state(invalid_after),
        )),
        ..HostFacts::default()
    }
}

#[test]
fn silent_nat_seen_from_the_node() {
    let ndjson = include_str!("../recorded/nat_silent6_node.ndjson");
    let findings = diagnose(ndjson, &conntrack(0, 15, 0, 2));
    let f = only(&findings, Cause::MiddleboxIdleBlackhole);
    assert_eq!(f.figures["idle_timeout_s"], 2.0);
    assert_eq!(f.figures["flows"], 3.0);
    assert_eq!(
        f.affected[0].peer,
        Some("[fd78:9::9]:5432".parse().unwrap())
    );
    assert!(f.summary.contains("fd78:1::2"), "{}", f.summary);
    assert!(f.fix[0].contains("nf_conntrack_tcp_timeout_established (now 2 s"));
    assert!(f.summary.contains("never answered"), "{}", f.summary);
    // A tracker that picks mid-stream packets up again does not drop
    // forgotten flows; without conntrack figures nothing says it forgot.
    for host in [
        conntrack(0, 15, 1, 2),
        conntrack(15, 15, 0, 2),
        HostFacts::default(),
    ] {
        let findings = diagnose(ndjson, &host);
        assert!(
            !serious(&findings).contains(&Cause::MiddleboxIdleBlackhole),
            "{findings:#?}"
        );
    }
}

/// A node that rejects forgotten flows (RST from netfilter, no tracepoint):
/// one dropped segment per flow, the clients send nothing more.
#[test]
fn rejecting_nat_seen_from_the_node() {
    let mut seen = std::collections::HashSet::new();
    let first_per_flow: String = include_str!("../recorded/nat_silent6_node.ndjson")
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("recorded line");
            v["type"] != "event" || seen.insert(v["remote_port"].as_u64())
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let findings = diagnose(&first_per_flow, &conntrack(0, 15, 0, 2));
    let f = only(&findings, Cause::MiddleboxIdleBlackhole);
    assert_eq!(f.figures["flows"], f.figures["drops"]);
    assert!(
        f.summary.contains("REJECT") && !f.summary.contains("never answered"),
        "{}",
        f.summary
    );
}

#[test]
fn rejecting_nat_with_varied_idle_is_an_idle_timeout_not_a_restart() {
    // A 3 s NAT rejecting forgotten flows with an RST; three connections
    // reused after varied gaps: resets after 3.6, 5.05 and 6.6 s (no
    // cluster), answers after up to 2.8 s.
    let findings = diagnose(
        include_str!("../recorded/nat_reset_varied_client.ndjson"),
        &HostFacts::default(),
    );
    let f = only(&findings, Cause::LbIdleTimeout);
    within(f, "idle_survived_s", 2.75, 2.85);
    within(f, "idle_failed_s", 3.55, 3.65);
    assert_eq!(f.figures["resets"], 3.0);
    assert!(f.summary.contains("10.78.9.9:5432"), "{}", f.summary);
    assert!(
        !findings
            .iter()
            .any(|f| f.cause == Cause::HalfOpenAfterPeerRestart),
        "{findings:#?}"
    );
}

/// A client connection `sock` to `remote` reused at each `(at_ms,
/// idle_ms, answered)`; an answer comes 2 ms after the send.
fn reuses(sock: u64, remote: &str, uses: &[(u64, u64, bool)]) -> Vec<TcpEvent> {
    let mut events = connect(sock, 10, 42, "api-client", remote);
    for (at, idle, answered) in uses {
        events.push(
            ev(K::Reuse, *at)
                .sock(sock)
                .owner(42, "api-client")
                .remote(remote)
                .state("ESTABLISHED")
                .idle_ms(*idle, *idle)
                .build(),
        );
        if !answered {
            for n in 0..4 {
                events.push(
                    ev(K::Retransmit, at + 200 * (1 << n))
                        .sock(sock)
                        .owner(42, "api-client")
                        .remote(remote)
                        .state("ESTABLISHED")
                        .build(),
                );
            }
        }
    }
    events
}

#[test]
fn peer_restart_is_half_open_not_an_idle_timeout() {
    // Resets after 1.2 s and 2 s idle while a reuse after 5 s worked: how
    // long a connection idled does not decide it.
    let peer = "10.0.0.7:443";
    let mut events = reuses(1, peer, &[(5_100, 5_000, true)]);
    for (sock, at, idle) in [(2u64, 8_000u64, 1_200u64), (3, 8_010, 2_000)] {
        events.extend(reuses(sock, peer, &[]));
        events.push(
            ev(K::Reuse, at)
                .sock(sock)
                .owner(42, "api-client")
                .remote(peer)
                .state("ESTABLISHED")
                .idle_ms(idle, idle)
                .build(),
        );
        events.push(
            ev(K::RstReceived, at + 1)
                .sock(sock)
                .owner(42, "api-client")
                .remote(peer)
                .state("ESTABLISHED")
                .idle_ms(1, idle)
                .build(),
        );
    }
    let findings = diagnose_events(&events, &HostFacts::default());
    assert_eq!(
        serious(&findings),
        vec![Cause::HalfOpenAfterPeerRestart],
        "{findings:#?}"
    );
    assert!(
        findings[0]
            .evidence
            .iter()
            .any(|e| e.contains("does not decide")),
        "{:#?}",
        findings[0]
    );
}

#[test]
fn stalls_idle_does_not_separate_are_loss_not_a_middlebox() {
    // A reuse after 4 s worked, one after 2 s stalled: not an idle timeout.
    let peer = "10.0.0.7:443";
    let mut events = reuses(1, peer, &[(4_100, 4_000, true), (8_200, 1_000, true)]);
    events.extend(reuses(
        2,
        peer,
        &[(2_100, 2_000, false), (2_300, 600, false)],
    ));
    let findings = diagnose_events(&events, &HostFacts::default());
    assert!(
        !serious(&findings).contains(&Cause::MiddleboxIdleBlackhole),
        "{findings:#?}"
    );
}

#[test]
fn one_stall_alone_is_no_middlebox_finding() {
    let events = reuses(1, "10.0.0.7:443", &[(3_100, 3_000, false)]);
    let findings = diagnose_events(&events, &HostFacts::default());
    assert!(
        !serious(&findings).contains(&Cause::MiddleboxIdleBlackhole),
        "{findings:#?}"
    );
}

#[test]
fn healthy_pool_reuses_are_no_finding() {
    let peer = "10.0.0.7:443";
    let mut events = Vec::new();
    for sock in 1..=4 {
        events.extend(reuses(
            sock,
            peer,
            &[
                (1_000, 800, true),
                (3_000, 1_900, true),
                (9_000, 5_900, true),
            ],
        ));
    }
    let findings = diagnose_events(&events, &HostFacts::default());
    assert!(serious(&findings).is_empty(), "{findings:#?}");
}

#[test]
fn server_side_rst_in_close_wait_is_no_keepalive_timeout() {
    // An accepted connection (server side): the client sent its request
    // and closed (FIN 1 ms after the server's last send), the server's
    // late answer met an RST. No idle, no reuse by a client.
    let mut events = Vec::new();
    for n in 0..6u64 {
        let sock = 500 + n;
        let client = format!("10.73.0.1:{}", 40_000 + n);
        events.push(
            ev(K::State, 100)
                .sock(sock)
                .owner(9, "order-api")
                .local("10.73.0.2:8080")
                .remote(&client)
                .transition("SYN_RECV", "ESTABLISHED")
                .build(),
        );
        events.push(
            ev(K::State, 5_100)
                .sock(sock)
                .owner(9, "order-api")
                .local("10.73.0.2:8080")
                .remote(&client)
                .transition("ESTABLISHED", "CLOSE_WAIT")
                .idle_ms(1, 0)
                .build(),
        );
        events.push(
            ev(K::RstReceived, 5_200)
                .sock(sock)
                .owner(9, "order-api")
                .local("10.73.0.2:8080")
                .remote(&client)
                .state("CLOSE_WAIT")
                .idle_ms(0, 100)
                .build(),
        );
    }
    let findings = diagnose_events(&events, &HostFacts::default());
    assert!(
        !findings.iter().any(|f| matches!(
            f.cause,
            Cause::ServerKeepaliveTimeout | Cause::LbIdleTimeout
        )),
        "{findings:#?}"
    );
}

#[test]
fn client_reusing_right_after_the_peer_closed_is_no_idle_timeout() {
    // The server closed 20 ms after its answer (Connection: close), the
    // client sent again: no keep-alive timeout to tune.
    let mut events = Vec::new();
    for n in 0..3u64 {
        let sock = 600 + n;
        events.extend(connect(sock, 10, 42, "python3", "10.0.0.7:80"));
        let local = format!("10.0.0.1:{}", 40_000 + sock % 20_000);
        events.push(
            ev(K::State, 500)
                .sock(sock)
                .owner(42, "python3")
                .local(&local)
                .remote("10.0.0.7:80")
                .transition("ESTABLISHED", "CLOSE_WAIT")
                .idle_ms(20, 0)
                .build(),
        );
        events.push(
            ev(K::RstReceived, 700)
                .sock(sock)
                .owner(42, "python3")
                .local(&local)
                .remote("10.0.0.7:80")
                .state("CLOSE_WAIT")
                .idle_ms(0, 200)
                .build(),
        );
    }
    let findings = diagnose_events(&events, &HostFacts::default());
    assert!(
        !serious(&findings).contains(&Cause::ServerKeepaliveTimeout),
        "{findings:#?}"
    );
}

#[test]
fn accepted_connections_reset_in_close_wait_are_no_keepalive_timeout() {
    // Recorded on a server with a full accept queue and
    // tcp_abort_on_overflow=1: clients gave up and closed (FIN 0 ms after
    // the server's last send), the server's late answers met RSTs in
    // CLOSE_WAIT. Its own accepted connections: no client reuse, no idle.
    let findings = diagnose(
        include_str!("../recorded/overflow_abort_server.ndjson"),
        &HostFacts::default(),
    );
    assert!(
        !findings.iter().any(|f| matches!(
            f.cause,
            Cause::ServerKeepaliveTimeout | Cause::LbIdleTimeout
        )),
        "{findings:#?}"
    );
}

/// Accepted connections, each answered then reset by its client after
/// `idle_ms` of silence both ways (`sent_ms_before`: how long before the
/// RST this server last sent).
fn clients_drop_idle(idle_ms: u64, sent_ms_before: u64) -> Vec<TcpEvent> {
    let mut events = Vec::new();
    for sock in 1..=8u64 {
        let client = format!("10.106.0.1:{}", 41000 + sock);
        events.push(
            ev(K::State, sock * 10)
                .sock(sock)
                .owner(80, "ledger-api")
                .local("10.106.0.2:8080")
                .remote(&client)
                .transition("SYN_RECV", "ESTABLISHED")
                .build(),
        );
        events.push(
            ev(K::RstReceived, sock * 10 + idle_ms)
                .sock(sock)
                .owner(80, "ledger-api")
                .local("10.106.0.2:8080")
                .remote(&client)
                .state("ESTABLISHED")
                .idle_ms(sent_ms_before, idle_ms)
                // Nothing in flight, the request (received 10 ms before
                // the answer) answered.
                .queues(0, 0, idle_ms + 10)
                .build(),
        );
    }
    events
}

#[test]
fn clients_dropping_idle_connections_with_an_rst_are_benign() {
    // A pool (or a proxy) evicting its idle connections to this server
    // with SO_LINGER 0: the server sent nothing in the gap either.
    let findings = diagnose_events(&clients_drop_idle(4_300, 4_300), &HostFacts::default());
    assert!(serious(&findings).is_empty(), "{findings:#?}");
    let f = findings
        .iter()
        .find(|f| f.cause == Cause::LingerZeroAbort)
        .expect("listed as the clients' abortive close");
    assert!(
        f.evidence[0].contains("8 on connections idle both ways"),
        "{f:#?}"
    );
    // The server answering after the same gap (its send met the reset):
    // something in between forgot the flows.
    let findings = diagnose_events(&clients_drop_idle(4_300, 0), &HostFacts::default());
    assert_eq!(
        serious(&findings),
        vec![Cause::LbIdleTimeout],
        "{findings:#?}"
    );
}

/// `n` pooled client connections opened at 10 ms, each reset after a
/// quiet gap of 2.88 s without receiving: `at(i)` is when connection
/// `i`'s RST arrives, `sent_ms` how long before it the client last sent
/// (small: the RST met a send).
fn pool_resets(n: u64, at: impl Fn(u64) -> u64, sent_ms: u64, origin: Option<u8>) -> Vec<TcpEvent> {
    pool_resets_with(n, at, sent_ms, origin, None)
}

/// `pool_resets`, the RSTs also telling what the connections held:
/// `answered_after` Some(ms): the last data arrived that long after the
/// last send (negative: before it, the request unanswered; 0: in the
/// same jiffy, as a fast answer on veth).
fn pool_resets_with(
    n: u64,
    at: impl Fn(u64) -> u64,
    sent_ms: u64,
    origin: Option<u8>,
    answered_after: Option<i64>,
) -> Vec<TcpEvent> {
    let mut events = Vec::new();
    for i in 0..n {
        let sock = 900 + i;
        events.extend(connect(sock, 10, 77, "pool", "10.77.0.2:8080"));
        let local = format!("10.0.0.1:{}", 40_000 + sock % 20_000);
        let t = at(i);
        let mut rst = ev(K::RstReceived, t)
            .sock(sock)
            .owner(77, "pool")
            .local(&local)
            .remote("10.77.0.2:8080")
            .state("ESTABLISHED")
            .idle_ms(sent_ms, 2_880);
        if let Some(after) = answered_after {
            rst = rst.queues(0, 0, sent_ms.checked_add_signed(-after).unwrap());
        }
        if let Some(hops) = origin {
            rst = rst.origin(hops);
        }
        events.push(rst.build());
    }
    events
}

#[test]
fn idle_connections_reset_at_one_moment_are_a_peer_restart_not_an_idle_timeout() {
    // restart_cli: 20 never-used pooled connections sat in a busy
    // server's accept queue; the server was killed and its closing
    // listener reset them all within microseconds, idle 2.88 s each. The
    // client sent nothing: no middlebox forgot a flow it was using.
    let mut events = pool_resets(20, |i| 2_890 + i / 10, 2_880, Some(0));
    events.push(
        ev(K::RstReceived, 3_100)
            .sock(990)
            .owner(77, "pool")
            .local("10.0.0.1:0")
            .remote("10.77.0.2:8080")
            .state("SYN_SENT")
            .build(),
    );
    let findings = diagnose_events(&events, &HostFacts::default());
    assert!(
        !findings.iter().any(|f| f.cause == Cause::LbIdleTimeout),
        "{findings:#?}"
    );
    let top = &findings[0];
    assert_eq!(top.cause, Cause::HalfOpenAfterPeerRestart, "{findings:#?}");
    assert_eq!(top.confidence, Confidence::High, "{top:#?}");
    assert_eq!(top.affected[0].comm, "pool");
    within(top, "resets", 20.0, 20.0);
    within(top, "burst_s", 0.0, 0.01);
}

#[test]
fn idle_connections_reset_each_at_its_own_moment_stay_an_idle_timeout() {
    // The same pool went idle at different times (used one after the
    // other, 700 ms apart); something resets each ~2.9 s after its last
    // packet, unprovoked (an LB with reset on idle): spread over 3.5 s.
    let events = pool_resets(6, |i| 2_900 + i * 700, 2_890, None);
    let findings = diagnose_events(&events, &HostFacts::default());
    assert_eq!(
        serious(&findings).first(),
        Some(&Cause::LbIdleTimeout),
        "{findings:#?}"
    );
}

#[test]
fn resets_that_met_a_send_after_the_gap_stay_an_idle_timeout_even_at_one_moment() {
    // A pool reused all its connections at once after 2.9 s idle; each
    // send met an RST from a middlebox that had forgotten the flow.
    let events = pool_resets(6, |i| 2_900 + i, 1, None);
    let findings = diagnose_events(&events, &HostFacts::default());
    assert_eq!(
        serious(&findings).first(),
        Some(&Cause::LbIdleTimeout),
        "{findings:#?}"
    );
}

#[test]
fn idle_resets_the_peer_itself_sent_after_complete_exchanges_are_its_idle_timeout() {
    // server_idle_rst: a server closes connections idle 2 s with
    // SO_LINGER 0; each RST came from the server's own stack (origin
    // peer), each connection at its own moment, after answered requests.
    let events = pool_resets_with(6, |i| 2_900 + i * 700, 2_890, Some(0), Some(5));
    let findings = diagnose_events(&events, &HostFacts::default());
    let top = &findings[0];
    assert_eq!(top.cause, Cause::ServerKeepaliveTimeout, "{findings:#?}");
    assert_eq!(top.confidence, Confidence::High);
    assert!(top.summary.contains("itself"), "{top:#?}");
    within(top, "idle_timeout_s", 2.8, 3.0);
    assert!(
        !serious(&findings).contains(&Cause::LbIdleTimeout),
        "{findings:#?}"
    );
}

#[test]
fn idle_resets_the_peer_itself_sent_on_unanswered_requests_are_its_request_timeout() {
    // nginx reset_timedout_connection, client view: the client sent part
    // of a request and paused; nginx reset it when its timeout fired.
    let events = pool_resets_with(6, |i| 2_900 + i * 700, 2_890, Some(0), Some(-5));
    let findings = diagnose_events(&events, &HostFacts::default());
    let top = &findings[0];
    assert_eq!(top.cause, Cause::LingerZeroAbort, "{findings:#?}");
    assert!(top.summary.contains("unanswered"), "{top:#?}");
    assert!(
        !serious(&findings).contains(&Cause::LbIdleTimeout),
        "{findings:#?}"
    );
}

#[test]
fn idle_resets_forged_on_the_path_stay_a_middlebox() {
    // The same resets, 2 hops closer than the peer: a device in between.
    let events = pool_resets_with(6, |i| 2_900 + i * 700, 2_890, Some(2), Some(5));
    let findings = diagnose_events(&events, &HostFacts::default());
    assert!(
        !serious(&findings).contains(&Cause::ServerKeepaliveTimeout),
        "{findings:#?}"
    );
}

#[test]
fn idle_resets_after_an_answer_in_the_same_jiffy_are_still_an_idle_timeout() {
    // server_idle_rst on veth: the answer came within the jiffy of the
    // request, so the two idle times are equal: no request was pending.
    let events = pool_resets_with(6, |i| 2_900 + i * 700, 2_890, Some(0), Some(0));
    let findings = diagnose_events(&events, &HostFacts::default());
    assert_eq!(
        findings[0].cause,
        Cause::ServerKeepaliveTimeout,
        "{findings:#?}"
    );
}
