//! Findings name the peer that carries their own evidence, not the
//! process's busiest peer: a process with healthy traffic to one peer and
//! the cause's events on another, less busy one.

use super::*;
use crate::{
    aggregate::testing::*,
    diagnosis::finding::rank,
    event::{EventKind as K, TcpEvent},
};

const BUSY: &str = "127.0.0.1:18080";
const FAULTY: &str = "127.0.0.1:18099";

fn run(events: &[TcpEvent]) -> Vec<Finding> {
    let mut agg = Aggregate::new(names());
    for e in events {
        agg.add(e);
    }
    agg.finish();
    let host = HostFacts::default();
    let mut findings: Vec<Finding> = evaluate(&Inputs {
        agg: &agg,
        host: &host,
        seconds: 10.0,
    })
    .into_iter()
    .flat_map(|o| o.findings)
    .collect();
    rank(&mut findings);
    findings
}

/// `n` healthy connections from `pid` to the busy peer, each closed with
/// a FIN after a short exchange.
fn healthy(pid: u32, comm: &str, remote: &str, n: u64) -> Vec<TcpEvent> {
    let mut events = Vec::new();
    for k in 0..n {
        let sock = 9_000 + k;
        events.extend(connect(sock, 10 + k, pid, comm, remote));
        events.push(
            ev(K::State, 20 + k)
                .sock(sock)
                .owner(pid, comm)
                .remote(remote)
                .transition("ESTABLISHED", "FIN_WAIT1")
                .idle_ms(1, 1)
                .build(),
        );
        events.push(
            ev(K::State, 21 + k)
                .sock(sock)
                .owner(pid, comm)
                .remote(remote)
                .transition("FIN_WAIT2", "CLOSE")
                .build(),
        );
    }
    events
}

fn finding(findings: &[Finding], cause: Cause) -> &Finding {
    findings
        .iter()
        .find(|f| f.cause == cause)
        .unwrap_or_else(|| panic!("no {cause:?} finding in {findings:#?}"))
}

/// The finding's text and its first affected process point at the faulty
/// peer, never at the busy one.
fn names_faulty_peer(f: &Finding) {
    let faulty: SocketAddr = FAULTY.parse().unwrap();
    let text = format!(
        "{} | {} | {}",
        f.summary,
        f.evidence.join(" | "),
        f.fix.join(" | ")
    );
    assert!(
        text.contains(FAULTY),
        "{:?} does not name {FAULTY}: {text}",
        f.cause
    );
    assert!(
        !text.contains(BUSY),
        "{:?} names the busy peer {BUSY}: {text}",
        f.cause
    );
    assert_eq!(f.affected[0].peer, Some(faulty), "{:?}", f.cause);
}

#[test]
fn nothing_listening_names_the_peer_that_refused() {
    let mut events = healthy(21_595, "python3", BUSY, 20);
    for n in 0..5 {
        events.push(
            ev(K::RstReceived, 100 + n)
                .sock(700 + n)
                .owner(21_595, "python3")
                .remote(FAULTY)
                .state("SYN_SENT")
                .build(),
        );
        events.push(
            ev(K::ConnectFailed, 100 + n)
                .sock(700 + n)
                .owner(21_595, "python3")
                .remote(FAULTY)
                .transition("SYN_SENT", "CLOSE")
                .connect_ms(0.1)
                .build(),
        );
    }
    let findings = run(&events);
    let f = finding(&findings, Cause::NothingListening);
    assert_eq!(f.affected[0].pid, 21_595);
    names_faulty_peer(f);
}

#[test]
fn abortive_close_names_the_peer_it_reset() {
    let mut events = healthy(32, "closer", BUSY, 20);
    for n in 0..4 {
        let sock = 500 + n;
        events.extend(connect(sock, 100 + n, 32, "closer", FAULTY));
        events.push(
            ev(K::RstSent, 150 + n)
                .sock(sock)
                .owner(32, "closer")
                .remote(FAULTY)
                .reason("TCP_STATE")
                .age_ms(50)
                .build(),
        );
    }
    let findings = run(&events);
    names_faulty_peer(finding(&findings, Cause::LingerZeroAbort));
}

#[test]
fn resets_received_name_the_peer_that_sent_them() {
    let mut events = healthy(44, "client", BUSY, 20);
    for n in 0..4 {
        let sock = 600 + n;
        events.extend(connect(sock, 100 + n, 44, "client", FAULTY));
        events.push(
            ev(K::RstReceived, 150 + n)
                .sock(sock)
                .owner(44, "client")
                .remote(FAULTY)
                .state("ESTABLISHED")
                .idle_ms(5, 5)
                .queues(100, 0, 5)
                .build(),
        );
    }
    let findings = run(&events);
    let f = findings
        .iter()
        .find(|f| f.affected.first().is_some_and(|a| a.pid == 44))
        .unwrap_or_else(|| panic!("no finding for pid 44 in {findings:#?}"));
    names_faulty_peer(f);
}

#[test]
fn timeouts_name_the_peer_that_stopped_answering() {
    let mut events = healthy(61, "client", BUSY, 20);
    events.extend(connect(600, 100, 61, "client", FAULTY));
    for t in [500, 700, 1_100, 1_900] {
        events.push(
            ev(K::Retransmit, t)
                .sock(600)
                .owner(61, "client")
                .remote(FAULTY)
                .state("ESTABLISHED")
                .build(),
        );
    }
    events.push(
        ev(K::State, 2_500)
            .sock(600)
            .owner(61, "client")
            .remote(FAULTY)
            .transition("ESTABLISHED", "CLOSE")
            .build(),
    );
    let findings = run(&events);
    names_faulty_peer(finding(&findings, Cause::RetransmissionTimeout));
}

/// A local server (pid 900) that closes connections idle 2 s with an RST
/// (SO_LINGER 0), and a local pool (pid 42) that receives those RSTs on
/// its idle connections and gets ECONNRESET when it reuses them. The
/// tracer reports the receipt first (loopback delivers the RST before
/// the sender's tracepoint fires); `sent_first` swaps them.
fn local_server_resets_idle(n: u64, sent_first: bool) -> Vec<TcpEvent> {
    let mut events = Vec::new();
    for k in 0..n {
        let at = 10 + k * 3_000;
        let client = format!("127.0.0.1:{}", 50_000 + k);
        let (csock, ssock) = (100 + k, 1_000 + k);
        events.push(
            ev(K::State, at)
                .sock(csock)
                .owner(42, "pool")
                .local("127.0.0.1:0")
                .remote("127.0.0.1:8080")
                .transition("CLOSE", "SYN_SENT")
                .build(),
        );
        events.push(
            ev(K::State, at)
                .sock(ssock)
                .local("127.0.0.1:8080")
                .remote(&client)
                .transition("SYN_RECV", "ESTABLISHED")
                .build(),
        );
        events.push(
            ev(K::Connect, at)
                .sock(csock)
                .owner(42, "pool")
                .local(&client)
                .remote("127.0.0.1:8080")
                .transition("SYN_SENT", "ESTABLISHED")
                .connect_ms(0.1)
                .build(),
        );
        let sent = ev(K::RstSent, at + 2_010)
            .sock(ssock)
            .owner(900, "server")
            .local("127.0.0.1:8080")
            .remote(&client)
            .reason("TCP_STATE")
            .age_ms(2_010)
            .queues(0, 0, 2_000)
            .build();
        let received = ev(K::RstReceived, at + 2_010)
            .sock(csock)
            .owner(42, "pool")
            .local(&client)
            .remote("127.0.0.1:8080")
            .state("ESTABLISHED")
            .idle_ms(2_000, 2_000)
            .build();
        if sent_first {
            events.extend([sent, received]);
        } else {
            events.extend([received, sent]);
        }
        events.push(
            ev(K::SocketError, at + 2_500)
                .sock(csock)
                .owner(42, "pool")
                .local(&client)
                .remote("127.0.0.1:8080")
                .socket_errno(104)
                .build(),
        );
    }
    events
}

#[test]
fn a_local_server_resetting_idle_connections_is_its_keepalive_not_a_middlebox() {
    for sent_first in [false, true] {
        local_server_resets_idle_is_its_keepalive(sent_first);
    }
}

fn local_server_resets_idle_is_its_keepalive(sent_first: bool) {
    let findings = run(&local_server_resets_idle(6, sent_first));
    let top = &findings[0];
    assert_eq!(top.cause, Cause::ServerKeepaliveTimeout, "{findings:#?}");
    assert!(top.confidence >= Confidence::Medium, "{top:#?}");
    assert!(top.summary.contains("pid 900 (server)"), "{}", top.summary);
    assert!(
        top.affected
            .iter()
            .any(|a| a.pid == 900 && a.role == "closer"),
        "{:?}",
        top.affected
    );
    assert!(
        (1.9..=2.1).contains(&top.figures["idle_timeout_s"]),
        "{:?}",
        top.figures
    );
    let fix = top.fix.join(" ");
    assert!(fix.contains("idle") && fix.contains("SO_LINGER 0"), "{fix}");
    assert!(
        findings.iter().all(|f| f.cause != Cause::LbIdleTimeout),
        "a middlebox is blamed: {findings:#?}"
    );
    assert!(
        findings
            .iter()
            .all(|f| !f.summary.contains("nothing was lost")),
        "ECONNRESET on reuse called lossless: {findings:#?}"
    );
}

/// A server's accepted connection `k`: `on(t, kind)` starts its event
/// of `kind` at `t` ms (pid `pid`, `comm`, on `local`, from `client_ip`
/// port 40_000 + k, socket `sock_base` + k).
fn accepted(
    (pid, comm): (u32, &'static str),
    local: &'static str,
    client_ip: &'static str,
    sock_base: u64,
    k: u64,
) -> impl Fn(u64, K) -> Ev {
    let client = format!("{client_ip}:{}", 40_000 + k);
    move |t, kind| {
        ev(kind, t)
            .sock(sock_base + k)
            .owner(pid, comm)
            .local(local)
            .remote(&client)
    }
}

/// `n` health checks accepted by `backend` on 10.78.0.2:8080, each reset
/// by the checker `reset_after_ms` after the backend's answer went out
/// (answer of 769 bytes unacknowledged, request read 4 ms before).
fn checks_reset_after_answer(n: u64, reset_after_ms: u64) -> Vec<TcpEvent> {
    let mut events = Vec::new();
    for k in 0..n {
        let on = accepted((7, "backend"), "10.78.0.2:8080", "10.78.0.1", 3_000, k);
        let at = 300 * k + 10;
        events.push(
            on(at, K::State)
                .transition("SYN_RECV", "ESTABLISHED")
                .build(),
        );
        events.push(
            on(at + 2 + reset_after_ms, K::RstReceived)
                .state("ESTABLISHED")
                .idle_ms(reset_after_ms, reset_after_ms + 4)
                .queues(769, 0, reset_after_ms + 4)
                .build(),
        );
    }
    events
}

#[test]
fn health_checks_reset_right_after_the_answer_are_benign() {
    // hc_http_be: HAProxy's `option httpchk` reads the status line and
    // resets (SO_LINGER 0) before its kernel's delayed ACK of the answer:
    // every check leaves the backend an RST with its answer unacked.
    let findings = run(&checks_reset_after_answer(12, 0));
    assert!(
        findings.iter().all(|f| f.confidence == Confidence::Low),
        "{findings:#?}"
    );
}

#[test]
fn resets_long_after_the_answer_still_cut_exchanges_short() {
    // The same answers never acknowledged for 2 s, then reset: the
    // answer was lost, not read.
    let findings = run(&checks_reset_after_answer(12, 2_000));
    let f = finding(&findings, Cause::LingerZeroAbort);
    assert_eq!(f.confidence, Confidence::Medium, "{f:#?}");
}

/// `n` requests accepted by `node-api`; the proxy closes each after the
/// backend was silent `waited_ms(k)` (FIN), the backend answers
/// `late_ms` after that and meets an RST in CLOSE_WAIT.
fn late_answers(n: u64, waited_ms: impl Fn(u64) -> u64, late_ms: u64) -> Vec<TcpEvent> {
    let mut events = Vec::new();
    for k in 0..n {
        let on = accepted((8, "node-api"), "10.79.0.2:8080", "10.79.0.1", 4_000, k);
        let at = 500 * k + 10;
        let waited = waited_ms(k);
        events.push(
            on(at, K::State)
                .transition("SYN_RECV", "ESTABLISHED")
                .build(),
        );
        events.push(
            on(at + waited, K::State)
                .transition("ESTABLISHED", "CLOSE_WAIT")
                .idle_ms(waited, 0)
                .build(),
        );
        events.push(
            on(at + waited + late_ms, K::RstReceived)
                .state("CLOSE_WAIT")
                .idle_ms(0, 0)
                .queues(120, 0, waited + late_ms)
                .build(),
        );
    }
    events
}

#[test]
fn a_proxy_giving_up_before_the_backend_answers_is_its_timeout() {
    // nginx proxy_read_timeout 2s in front of a backend taking 2.6 s:
    // nginx closes each upstream connection after 2 s of silence, the
    // backend's answer 0.6 s later meets an RST (and EPIPE).
    let findings = run(&late_answers(5, |_| 2_000, 600));
    let f = &findings[0];
    assert_eq!(f.cause, Cause::ClientTimeout, "{findings:#?}");
    assert_eq!(f.confidence, Confidence::High, "{f:#?}");
    assert_eq!(f.affected[0].comm, "node-api");
    let t = f.figures["client_timeout_s"];
    assert!((1.9..=2.1).contains(&t), "{f:#?}");
}

#[test]
fn scattered_client_waits_are_no_sure_timeout() {
    // Clients going away after 0.3-4 s, each its own choice.
    let findings = run(&late_answers(5, |k| 300 + k * 900, 600));
    let f = finding(&findings, Cause::ClientTimeout);
    assert_eq!(f.confidence, Confidence::Medium, "{f:#?}");
}

/// HAProxy's `timeout server` in mode tcp: it closes the silent server
/// connection with a FIN and an RST 50 us later; the backend's next push
/// fails with EPIPE when `pushes`.
fn proxy_cuts_silent_streams(n: u64, pushes: bool) -> Vec<TcpEvent> {
    let mut events = Vec::new();
    for k in 0..n {
        let on = accepted((9, "notify-svc"), "10.222.1.2:7070", "10.222.1.1", 5_000, k);
        let at = 200 * k + 10;
        events.push(
            on(at, K::State)
                .transition("SYN_RECV", "ESTABLISHED")
                .build(),
        );
        events.push(
            on(at + 2_300, K::State)
                .transition("ESTABLISHED", "CLOSE_WAIT")
                .idle_ms(2_000, 0)
                .build(),
        );
        events.push(
            on(at + 2_300, K::RstReceived)
                .state("CLOSE_WAIT")
                .idle_ms(2_000, 0)
                .queues(0, 0, 2_300)
                .build(),
        );
        events.push(
            on(at + 2_300, K::State)
                .transition("CLOSE_WAIT", "CLOSE")
                .build(),
        );
        if pushes {
            events.push(on(at + 3_000, K::SocketError).socket_errno(32).build());
        }
    }
    events
}

#[test]
fn a_proxy_cutting_silent_streams_is_its_timeout_when_the_server_writes_again() {
    let findings = run(&proxy_cuts_silent_streams(5, true));
    let f = &findings[0];
    assert_eq!(f.cause, Cause::ClientTimeout, "{findings:#?}");
    assert_eq!(f.confidence, Confidence::High, "{f:#?}");
    let t = f.figures["client_timeout_s"];
    assert!((1.9..=2.1).contains(&t), "{f:#?}");
}

#[test]
fn clients_closing_connections_the_server_owes_nothing_are_no_timeout() {
    // The same closes, and the server never writes again.
    let findings = run(&proxy_cuts_silent_streams(5, false));
    assert!(
        !findings.iter().any(|f| f.cause == Cause::ClientTimeout),
        "{findings:#?}"
    );
}

#[test]
fn a_proxy_resetting_requests_it_stopped_waiting_for_is_its_timeout() {
    // HAProxy `timeout server 1s` (its server side closes with an RST):
    // on kept-alive backend connections, each new request arrived 1.003 s
    // before the RST, the previous answer 1.5 s before it.
    let mut events = Vec::new();
    for k in 0..5u64 {
        let on = accepted((11, "pricing"), "10.80.1.2:8080", "10.80.1.1", 6_000, k);
        let at = 300 * k + 10;
        events.push(
            on(at, K::State)
                .transition("SYN_RECV", "ESTABLISHED")
                .build(),
        );
        events.push(
            on(at + 2_000, K::RstReceived)
                .state("ESTABLISHED")
                .idle_ms(1_500, 1_003)
                .queues(0, 0, 1_003)
                .build(),
        );
    }
    let findings = run(&events);
    let f = &findings[0];
    assert_eq!(f.cause, Cause::ClientTimeout, "{findings:#?}");
    assert_eq!(f.confidence, Confidence::High, "{f:#?}");
    let t = f.figures["client_timeout_s"];
    assert!((0.95..=1.05).contains(&t), "{f:#?}");
}

/// `n` connections accepted by `comm` (pid 7) on 10.208.0.2:80, each
/// reset `after_ms` after the request arrived (the creation jiffy, so
/// `lsndtime` = `lrcvtime`), nothing in flight or unread, having sent
/// `segs` data segments: `sent` RSTs (the server aborts), or received
/// ones (its client, a proxy timing out, aborts).
fn server_resets(comm: &str, n: u64, after_ms: u64, segs: u32, sent: bool) -> Vec<TcpEvent> {
    let mut events = Vec::new();
    for k in 0..n {
        let sock = 5_000 + k;
        let client = format!("10.208.0.1:{}", 43_000 + k);
        let at = 300 * k + 10;
        events.push(
            ev(K::State, at)
                .sock(sock)
                .owner(7, comm)
                .local("10.208.0.2:80")
                .remote(&client)
                .transition("SYN_RECV", "ESTABLISHED")
                .build(),
        );
        let rst = if sent {
            ev(K::RstSent, at + after_ms).reason("TCP_ABORT_ON_LINGER")
        } else {
            ev(K::RstReceived, at + after_ms)
        };
        events.push(
            rst.sock(sock)
                .owner(7, comm)
                .local("10.208.0.2:80")
                .remote(&client)
                .state("ESTABLISHED")
                .age_ms(after_ms)
                .idle_ms(after_ms, after_ms)
                .queues(0, 0, after_ms)
                .data_segs_out(segs)
                .build(),
        );
    }
    events
}

#[test]
fn a_server_resetting_before_it_answered_is_not_benign() {
    // nginx `reset_timedout_connection on`: the server resets stalled
    // uploads after client_body_timeout, having sent nothing.
    let findings = run(&server_resets("nginx", 6, 1_003, 0, true));
    let f = finding(&findings, Cause::LingerZeroAbort);
    assert!(!f.summary.contains("benign"), "{f:#?}");
    assert!(!f.summary.contains("complete exchange"), "{f:#?}");
    assert_eq!(f.confidence, Confidence::High, "{f:#?}");
    assert!(
        f.evidence
            .iter()
            .any(|e| e.starts_with("0 of the 6 after a complete exchange")),
        "{f:#?}"
    );
    // The same resets after an answer went out: benign by design.
    let findings = run(&server_resets("nginx", 6, 1_003, 2, true));
    let f = finding(&findings, Cause::LingerZeroAbort);
    assert!(f.summary.contains("after complete exchanges"), "{f:#?}");
    assert_eq!(f.confidence, Confidence::Low);
}

#[test]
fn a_backend_reset_by_its_proxy_before_it_answered_is_not_benign() {
    // HAProxy `timeout server 1s` against a 1.6 s backend: the backend
    // receives the RST 1.003 s after the request, never having answered.
    let findings = run(&server_resets("backend", 6, 1_003, 0, false));
    assert!(
        findings
            .iter()
            .all(|f| !f.summary.contains("benign") && !f.summary.contains("no problem")),
        "{findings:#?}"
    );
    assert!(
        findings.iter().any(|f| f.confidence >= Confidence::Medium),
        "{findings:#?}"
    );
    // Answered (a data segment sent): the proxy's abortive close by design.
    let findings = run(&server_resets("backend", 6, 1_003, 1, false));
    assert!(
        findings.iter().all(|f| f.confidence == Confidence::Low),
        "{findings:#?}"
    );
}
