//! Rules on synthesized event streams shaped like what the tracer
//! recorded for each cause (see the scenario tests for the real thing).

use super::*;
use crate::{
    aggregate::testing::*,
    diagnosis::{
        facts::{Listener, SocketFacts},
        finding::rank,
    },
    event::{EventKind as K, TcpEvent},
};

fn run(events: &[TcpEvent], host: &HostFacts) -> (Vec<Finding>, Vec<String>) {
    let mut agg = Aggregate::new(names());
    for e in events {
        agg.add(e);
    }
    agg.finish();
    let outcomes = evaluate(&Inputs {
        agg: &agg,
        host,
        seconds: 10.0,
    });
    let checked = outcomes.iter().map(|o| o.checked.clone()).collect();
    let mut findings: Vec<Finding> = outcomes.into_iter().flat_map(|o| o.findings).collect();
    rank(&mut findings);
    (findings, checked)
}

/// The rules on `events` with no counters find `cause` alone, high: that
/// finding.
fn the_only(events: &[TcpEvent], cause: Cause) -> Finding {
    let (findings, _) = run(events, &counters(&[]));
    assert_eq!(causes(&findings), vec![cause], "{findings:#?}");
    assert_eq!(findings[0].confidence, Confidence::High);
    findings[0].clone()
}

/// Every finding's cause, in rank order.
fn causes(findings: &[Finding]) -> Vec<Cause> {
    findings.iter().map(|f| f.cause).collect()
}

fn high(findings: &[Finding]) -> Vec<Cause> {
    findings
        .iter()
        .filter(|f| f.confidence == Confidence::High)
        .map(|f| f.cause)
        .collect()
}

/// A pooled client (pid 42) whose connections to 127.0.0.1:8080 are
/// closed by the peer after `idle_ms` and reused 1 s later.
fn pool_reuse_after_close(closer: Option<(u32, &str)>, idle_ms: &[u64]) -> Vec<TcpEvent> {
    let mut events = Vec::new();
    for (n, idle) in idle_ms.iter().enumerate() {
        let sock = 100 + n as u64;
        let local = format!("127.0.0.1:{}", 50_000 + n);
        events.extend(connect(sock, 10, 42, "python3", "127.0.0.1:8080"));
        let fin_at = 300 + idle;
        if let Some((pid, comm)) = closer {
            events.push(
                ev(K::State, fin_at)
                    .sock(1000 + sock)
                    .owner(pid, comm)
                    .local("127.0.0.1:8080")
                    .remote(&local)
                    .transition("ESTABLISHED", "FIN_WAIT1")
                    .idle_ms(*idle, *idle)
                    .build(),
            );
        }
        events.push(
            ev(K::State, fin_at)
                .sock(sock)
                .owner(42, "python3")
                .local(&local)
                .remote("127.0.0.1:8080")
                .transition("ESTABLISHED", "CLOSE_WAIT")
                .idle_ms(*idle, 0)
                .build(),
        );
        events.push(
            ev(K::RstReceived, fin_at + 1_000)
                .sock(sock)
                .owner(42, "python3")
                .local(&local)
                .remote("127.0.0.1:8080")
                .state("CLOSE_WAIT")
                .idle_ms(0, 1_000)
                .build(),
        );
    }
    events
}

#[test]
fn proxy_closing_idle_connections_is_an_lb_idle_timeout() {
    let events = pool_reuse_after_close(Some((11, "haproxy")), &[2_000, 2_010, 1_995]);
    let (findings, _) = run(&events, &HostFacts::default());
    let top = &findings[0];
    assert_eq!(top.cause, Cause::LbIdleTimeout);
    assert_eq!(top.confidence, Confidence::High);
    assert_eq!(top.affected[0].pid, 42);
    assert_eq!(top.affected[0].role, "client");
    assert!(
        top.affected
            .iter()
            .any(|a| a.pid == 11 && a.role == "closer")
    );
    let idle = top.figures["idle_timeout_s"];
    assert!((1.95..=2.05).contains(&idle), "{idle}");
    assert!((0.95..=1.05).contains(&top.figures["reuse_after_close_s"]));
    assert!(top.summary.contains("pid 42 (python3)"), "{}", top.summary);
    assert!(
        top.fix[0].contains("below 2.0 s (e.g. 1.6 s)"),
        "{}",
        top.fix[0]
    );
    assert_eq!(high(&findings), vec![Cause::LbIdleTimeout]);
}

#[test]
fn unseen_closer_is_a_server_keepalive_timeout() {
    let events = pool_reuse_after_close(None, &[5_000, 5_020]);
    let (findings, _) = run(&events, &HostFacts::default());
    assert_eq!(findings[0].cause, Cause::ServerKeepaliveTimeout);
    assert_eq!(findings[0].confidence, Confidence::High);
    assert!((4.9..=5.1).contains(&findings[0].figures["idle_timeout_s"]));
    // One reset with scattered idle times is not enough to be sure.
    let events = pool_reuse_after_close(None, &[5_000]);
    let (findings, _) = run(&events, &HostFacts::default());
    assert_eq!(findings[0].confidence, Confidence::Medium);
}

fn quiet_gap_resets(idle_ms: &[u64]) -> Vec<TcpEvent> {
    let mut events = Vec::new();
    for (n, idle) in idle_ms.iter().enumerate() {
        let sock = 200 + n as u64;
        events.extend(connect(sock, 10, 42, "api-client", "10.0.0.7:443"));
        events.push(
            ev(K::RstReceived, 20 + idle)
                .sock(sock)
                .owner(42, "api-client")
                .remote("10.0.0.7:443")
                .state("ESTABLISHED")
                .idle_ms(1, *idle)
                .age_ms(*idle + 10)
                .build(),
        );
    }
    events
}

#[test]
fn clustered_resets_after_idle_without_fin_are_a_middlebox_timeout() {
    let (findings, _) = run(
        &quiet_gap_resets(&[59_800, 60_100, 60_300, 59_900]),
        &HostFacts::default(),
    );
    assert_eq!(findings[0].cause, Cause::LbIdleTimeout);
    assert_eq!(findings[0].confidence, Confidence::High);
    assert!((59.0..=61.0).contains(&findings[0].figures["idle_timeout_s"]));
    assert!(
        findings[0].fix[0].contains("e.g. 45 s"),
        "{}",
        findings[0].fix[0]
    );
    assert_eq!(high(&findings), vec![Cause::LbIdleTimeout]);
}

#[test]
fn scattered_resets_after_idle_are_half_open_connections() {
    let (findings, _) = run(
        &quiet_gap_resets(&[3_000, 45_000, 200_000]),
        &HostFacts::default(),
    );
    assert_eq!(findings[0].cause, Cause::HalfOpenAfterPeerRestart);
    assert_eq!(findings[0].confidence, Confidence::Medium);
    assert!(high(&findings).is_empty());
}

fn counters(pairs: &[(&str, i64)]) -> HostFacts {
    let mut host = HostFacts::default();
    for (k, v) in pairs {
        host.counters.insert(k.to_string(), *v);
    }
    host.sysctls
        .insert("net.core.somaxconn".into(), "4096".into());
    host
}

#[test]
fn accept_queue_overflow_needs_the_counters() {
    let mut events = Vec::new();
    for n in 0..10 {
        events.extend(connect(300 + n, 10, 77, "loadgen", "127.0.0.1:7003"));
        events.push(
            ev(K::Retransmit, 1_010)
                .sock(300 + n)
                .owner(77, "loadgen")
                .remote("127.0.0.1:7003")
                .state("SYN_SENT")
                .build(),
        );
    }
    let mut host = counters(&[("TcpExtListenOverflows", 12), ("TcpExtListenDrops", 12)]);
    host.sockets_end = Some(SocketFacts {
        listeners: vec![Listener {
            local: "127.0.0.1:7003".parse().unwrap(),
            queued: 2,
            limit: Some(1),
            owner: None,
            inode: 0,
        }],
        ..SocketFacts::default()
    });
    let (findings, _) = run(&events, &host);
    let top = &findings[0];
    assert_eq!(top.cause, Cause::AcceptQueueOverflow);
    assert_eq!(top.confidence, Confidence::High);
    assert_eq!(top.affected[0].pid, 77);
    assert!(top.summary.contains("127.0.0.1:7003"), "{}", top.summary);
    assert!(top.fix[0].contains("now 1"), "{}", top.fix[0]);
    assert_eq!(top.figures["listen_overflows"], 12.0);
    // SYN retransmits alone are loss, not an overflow.
    let (findings, _) = run(&events, &counters(&[]));
    assert!(
        findings
            .iter()
            .all(|f| f.cause != Cause::AcceptQueueOverflow)
    );
}

/// `--netns` on pid 77's namespace: its 10 connections to 10.9.0.2:5000
/// are each reset just after connecting; the server listens in another
/// namespace of the host ("srv"), which counted `server`.
fn clients_reset_in_use(server: &[(&str, i64)]) -> (Vec<TcpEvent>, HostFacts) {
    use crate::diagnosis::facts::NamespaceFacts;
    const CLIENTS: u32 = 4026532001;
    const SERVER: u32 = 4026532002;
    let mut events = Vec::new();
    for n in 0..10 {
        events.extend(connect(300 + n, 10, 77, "loadgen", "10.9.0.2:5000"));
        events.push(
            ev(K::RstReceived, 20 + n)
                .sock(300 + n)
                .owner(77, "loadgen")
                .remote("10.9.0.2:5000")
                .state("ESTABLISHED")
                .build(),
        );
    }
    let namespace = |inode: u32, name: &str, counters: &[(&str, i64)]| NamespaceFacts {
        inode,
        name: name.into(),
        watched: inode == CLIENTS,
        counters: counters.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        ..NamespaceFacts::default()
    };
    let mut host = counters(&[]);
    host.watched_netns = Some(CLIENTS);
    host.namespaces = vec![
        namespace(CLIENTS, "cli", &[]),
        namespace(SERVER, "srv", server),
    ];
    (events, host)
}

/// The clients of a server in another namespace of the host: the
/// overflows are counted where the server listens.
#[test]
fn accept_queue_overflow_of_a_server_in_another_namespace() {
    let (events, mut host) = clients_reset_in_use(&[
        ("TcpExtListenOverflows", 40),
        ("TcpExtListenDrops", 40),
        ("TcpExtEmbryonicRsts", 10),
    ]);
    let (findings, _) = run(&events, &host);
    let top = &findings[0];
    assert_eq!(top.cause, Cause::AcceptQueueOverflow, "{findings:#?}");
    assert_eq!(top.confidence, Confidence::High);
    assert!(top.summary.contains("10.9.0.2:5000"), "{}", top.summary);
    assert!(top.summary.contains("netns srv"), "{}", top.summary);
    assert_eq!(top.figures["listen_overflows"], 40.0);
    assert_eq!(top.figures["overflow_resets"], 10.0);
    assert_eq!(top.affected[0].pid, 77);
    // The resets are the overflow's, not the peer aborting connections
    // in use: said at low, not as a second problem.
    let serious: Vec<Cause> = findings
        .iter()
        .filter(|f| f.confidence > Confidence::Low)
        .map(|f| f.cause)
        .collect();
    assert_eq!(serious, vec![Cause::AcceptQueueOverflow], "{findings:#?}");
    let reset = findings
        .iter()
        .find(|f| f.cause == Cause::LingerZeroAbort)
        .expect("the resets are still listed");
    assert!(
        reset
            .evidence
            .last()
            .unwrap()
            .contains("wake of the accept queue overflow"),
        "{reset:#?}"
    );
    // The same clients, with no namespace of the host overflowing: no
    // overflow to blame.
    host.namespaces[1].counters.clear();
    let (findings, _) = run(&events, &host);
    assert!(
        findings
            .iter()
            .all(|f| f.cause != Cause::AcceptQueueOverflow),
        "{findings:#?}"
    );
}

#[test]
fn time_wait_filling_the_port_range_is_port_exhaustion() {
    let mut events = Vec::new();
    for n in 0..10 {
        events.extend(connect(400 + n, 10 + n, 55, "churn", "198.18.0.2:8000"));
        events.push(
            ev(K::State, 20 + n)
                .sock(400 + n)
                .owner(55, "churn")
                .remote("198.18.0.2:8000")
                .transition("ESTABLISHED", "FIN_WAIT1")
                .idle_ms(0, 0)
                .build(),
        );
    }
    let mut host = counters(&[]);
    host.sysctls
        .insert("net.ipv4.ip_local_port_range".into(), "40000\t40009".into());
    host.sysctls
        .insert("net.ipv4.tcp_tw_reuse".into(), "2".into());
    host.sockets_end = Some(SocketFacts {
        states: [("TIME_WAIT".to_string(), 10)].into(),
        time_wait_by_peer: vec![("198.18.0.2:8000".parse().unwrap(), 10)],
        ..SocketFacts::default()
    });
    let (findings, _) = run(&events, &host);
    let top = &findings[0];
    assert_eq!(top.cause, Cause::PortExhaustion);
    assert_eq!(top.confidence, Confidence::High);
    assert_eq!(top.affected[0].pid, 55);
    assert_eq!(top.figures["port_range_size"], 10.0);
    assert!(top.fix.iter().any(|f| f.contains("tcp_tw_reuse=1 (now 2)")));
    // Half the range is a warning; a few TIME_WAIT nothing.
    host.sockets_end.as_mut().unwrap().time_wait_by_peer[0].1 = 6;
    assert_eq!(run(&events, &host).0[0].confidence, Confidence::Medium);
    host.sockets_end.as_mut().unwrap().time_wait_by_peer[0].1 = 2;
    assert!(run(&events, &host).0.is_empty());
}

/// A process that never closes its connections holds every port of the
/// range open; its next connects fail at once (EADDRNOTAVAIL, no SYN).
#[test]
fn open_connections_filling_the_port_range_are_port_exhaustion() {
    let dest = "198.18.0.2:8080";
    let mut events = Vec::new();
    for n in 0..10 {
        events.extend(connect(500 + n, 10 + n, 56, "leaky", dest));
    }
    for n in 0..8 {
        events.push(
            ev(K::ConnectFailed, 100 + n)
                .sock(600 + n)
                .owner(56, "leaky")
                .remote(dest)
                .transition("SYN_SENT", "CLOSE")
                .connect_ms(0.01)
                .build(),
        );
    }
    let mut host = counters(&[]);
    host.sysctls
        .insert("net.ipv4.ip_local_port_range".into(), "40000\t40009".into());
    host.sockets_end = Some(SocketFacts {
        states: [("ESTABLISHED".to_string(), 10)].into(),
        held_by_peer: vec![(dest.parse().unwrap(), 10)],
        ..SocketFacts::default()
    });
    let (findings, _) = run(&events, &host);
    assert_eq!(
        causes(&findings),
        vec![Cause::PortExhaustion],
        "{findings:#?}"
    );
    let top = &findings[0];
    assert_eq!(top.confidence, Confidence::High);
    assert_eq!(top.affected[0].pid, 56);
    assert!(top.summary.contains("10 still open"), "{}", top.summary);
    assert!(
        top.evidence
            .iter()
            .any(|e| e.contains("opened 10 connections")),
        "{top:#?}"
    );
    assert_eq!(top.figures["failed_connects"], 8.0);
    assert!(top.fix[0].contains("leak"), "{}", top.fix[0]);
    assert!(!top.fix.iter().any(|f| f.contains("tcp_tw_reuse")));
    // The same open connections with every connect working: a big pool,
    // no failure.
    let ok: Vec<TcpEvent> = events
        .iter()
        .filter(|e| e.kind != K::ConnectFailed)
        .cloned()
        .collect();
    assert!(run(&ok, &host).0.is_empty());
}

fn resets_sent(pid: u32, comm: &str, reason: &str, n: u64) -> Vec<TcpEvent> {
    (0..n)
        .map(|i| {
            ev(K::RstSent, 100 + i)
                .sock(500 + i)
                .owner(pid, comm)
                .local("127.0.0.1:7001")
                .remote("127.0.0.1:51000")
                .reason(reason)
                .age_ms(50)
                .build()
        })
        .collect()
}

#[test]
fn close_with_unread_data_names_the_closer() {
    let events = resets_sent(31, "server", "TCP_ABORT_ON_CLOSE", 3);
    let (findings, _) = run(&events, &counters(&[("TcpExtTCPAbortOnClose", 3)]));
    assert_eq!(findings[0].cause, Cause::CloseWithUnreadData);
    assert_eq!(findings[0].confidence, Confidence::High);
    assert_eq!(findings[0].affected[0].pid, 31);
    assert_eq!(high(&findings), vec![Cause::CloseWithUnreadData]);
    // Kernels without reasons: the counter alone, less sure.
    let (findings, _) = run(&[], &counters(&[("TcpExtTCPAbortOnClose", 4)]));
    assert_eq!(findings[0].confidence, Confidence::Medium);
}

/// The clients of a server in another namespace of the host that closes
/// with unread data (a 413 before reading the upload): named from that
/// namespace's counter, the resets at the clients its wake.
#[test]
fn close_with_unread_data_of_a_server_in_another_namespace() {
    let (events, mut host) = clients_reset_in_use(&[("TcpExtTCPAbortOnClose", 10)]);
    let (findings, _) = run(&events, &host);
    let top = &findings[0];
    assert_eq!(top.cause, Cause::CloseWithUnreadData, "{findings:#?}");
    assert_eq!(top.confidence, Confidence::High);
    assert!(
        top.summary.contains("10.9.0.2:5000 in netns srv"),
        "{}",
        top.summary
    );
    assert_eq!(top.figures["abort_on_close"], 10.0);
    assert_eq!(high(&findings), vec![Cause::CloseWithUnreadData]);
    assert!(
        findings
            .iter()
            .skip(1)
            .all(|f| f.confidence == Confidence::Low),
        "{findings:#?}"
    );
    // Without the counter there, the resets stay the peer's aborts.
    host.namespaces[1].counters.clear();
    let (findings, _) = run(&events, &host);
    assert_eq!(findings[0].cause, Cause::LingerZeroAbort, "{findings:#?}");
}

/// A restart that does not drain: the listener closes with connections
/// in its queue, and the kernel resets each (TCP_STATE, as SO_LINGER 0
/// would).
#[test]
fn a_listener_closed_with_queued_connections_is_no_linger_zero() {
    let mut events = vec![
        ev(K::State, 1_000)
            .owner(90, "search-api")
            .local("10.0.0.1:8080")
            .remote("0.0.0.0:0")
            .transition("LISTEN", "CLOSE")
            .build(),
    ];
    for n in 0..5 {
        events.push(
            ev(K::RstSent, 1_001 + n)
                .sock(900 + n)
                .owner(90, "search-api")
                .local("10.0.0.1:8080")
                .remote(&format!("10.0.0.9:{}", 41000 + n))
                .reason("TCP_STATE")
                .age_ms(250)
                .build(),
        );
    }
    let f = &the_only(&events, Cause::NothingListening);
    assert!(
        f.summary.contains("closed its listener with 5 connections"),
        "{}",
        f.summary
    );
    assert!(f.fix[0].contains("drain"), "{}", f.fix[0]);
    // The same resets with no listener closing are the application's
    // aborts.
    let (findings, _) = run(&events[1..], &counters(&[]));
    assert_eq!(findings[0].cause, Cause::LingerZeroAbort, "{findings:#?}");
}

#[test]
fn linger_zero_by_an_app_is_high_by_a_proxy_low() {
    let (findings, _) = run(&resets_sent(32, "closer", "TCP_STATE", 5), &counters(&[]));
    assert_eq!(findings[0].cause, Cause::LingerZeroAbort);
    assert_eq!(findings[0].confidence, Confidence::High);
    assert_eq!(findings[0].affected[0].pid, 32);
    let (findings, _) = run(&resets_sent(33, "haproxy", "TCP_STATE", 5), &counters(&[]));
    assert_eq!(findings[0].confidence, Confidence::Low);
}

/// A client's connection that retransmits 4 times until the kernel closes
/// it; each retransmitted segment also dropped on this host for
/// `dropped` (a drop reason number), if given.
fn retransmitting_until_closed(dropped: Option<u32>) -> Vec<TcpEvent> {
    let mut events = connect(600, 10, 61, "client", "198.18.0.2:9000");
    let on_the_connection = |kind, t| {
        ev(kind, t)
            .sock(600)
            .owner(61, "client")
            .remote("198.18.0.2:9000")
    };
    for t in [500, 700, 1_100, 1_900] {
        events.push(
            on_the_connection(K::Retransmit, t)
                .state("ESTABLISHED")
                .build(),
        );
        if let Some(reason) = dropped {
            events.push(on_the_connection(K::Drop, t).dropped(reason, 0x18).build());
        }
    }
    events.push(
        on_the_connection(K::State, 2_500)
            .transition("ESTABLISHED", "CLOSE")
            .build(),
    );
    events
}

#[test]
fn retransmitting_until_the_kernel_gives_up_is_a_timeout() {
    let events = retransmitting_until_closed(None);
    let (findings, _) = run(&events, &counters(&[("TcpExtTCPAbortOnTimeout", 1)]));
    let top = &findings[0];
    assert_eq!(top.cause, Cause::RetransmissionTimeout);
    assert_eq!(top.confidence, Confidence::High);
    assert_eq!(top.affected[0].pid, 61);
    assert!((1.9..=2.1).contains(&top.figures["retransmitting_for_s"]));
    assert_eq!(high(&findings), vec![Cause::RetransmissionTimeout]);
}

/// The same death, with the data segments dropped by a netfilter rule on
/// this host: the fix names that rule, not the path beyond.
#[test]
fn a_timeout_whose_segments_a_local_firewall_dropped_names_the_firewall() {
    // 12: NETFILTER_DROP in the test kernel's names.
    let events = retransmitting_until_closed(Some(12));
    let (findings, _) = run(&events, &counters(&[("TcpExtTCPAbortOnTimeout", 1)]));
    let f = findings
        .iter()
        .find(|f| f.cause == Cause::RetransmissionTimeout)
        .expect("the timeout");
    assert_eq!(f.figures["netfilter_drops"], 4.0, "{f:#?}");
    assert!(f.fix[0].contains("iptables -L -v -n"), "{:?}", f.fix);
    assert!(
        f.evidence.iter().any(|e| e.contains("NETFILTER_DROP")),
        "{:?}",
        f.evidence
    );
}

#[test]
fn refused_connects_mean_nothing_listens() {
    let mut events = Vec::new();
    for n in 0..4 {
        let remote = "127.0.0.1:7999";
        events.push(
            ev(K::RstReceived, 10 + n)
                .sock(700 + n)
                .owner(71, "curl")
                .remote(remote)
                .state("SYN_SENT")
                .idle_ms(971_000, 971_000)
                .build(),
        );
        events.push(
            ev(K::ConnectFailed, 10 + n)
                .sock(700 + n)
                .owner(71, "curl")
                .remote(remote)
                .transition("SYN_SENT", "CLOSE")
                .connect_ms(0.1)
                .build(),
        );
    }
    // The refusals as the host saw them when the client is local: each
    // SYN dropped for want of a socket and answered by an unowned RST.
    for n in 0..4 {
        events.push(
            ev(K::Drop, 10 + n)
                .local("127.0.0.1:7999")
                .remote("127.0.0.1:40000")
                .dropped_incoming(2, 0x02)
                .build(),
        );
        events.push(
            ev(K::RstSent, 10 + n)
                .local("127.0.0.1:7999")
                .remote("127.0.0.1:40000")
                .reason("NO_SOCKET")
                .build(),
        );
    }
    let (findings, _) = run(&events, &counters(&[]));
    assert_eq!(findings[0].cause, Cause::NothingListening);
    assert_eq!(findings[0].confidence, Confidence::High);
    assert!(findings[0].summary.contains("127.0.0.1:7999"));
    assert_eq!(high(&findings), vec![Cause::NothingListening]);
    // The refusals' own RSTs and drops are no second, unexplained problem.
    assert_eq!(
        causes(&findings),
        vec![Cause::NothingListening],
        "{findings:#?}"
    );
}

/// The server's host, the clients elsewhere: each SYN to a port nothing
/// listens on is dropped (NO_SOCKET) and answered by an RST.
#[test]
fn syns_to_a_port_nothing_listens_on_are_refusals() {
    let mut events = Vec::new();
    for n in 0..6 {
        let client = format!("10.0.0.1:{}", 40000 + n);
        events.push(
            ev(K::Drop, 10 + n)
                .local("10.0.0.9:5432")
                .remote(&client)
                .dropped_incoming(2, 0x02)
                .build(),
        );
        events.push(
            ev(K::RstSent, 10 + n)
                .local("10.0.0.9:5432")
                .remote(&client)
                .reason("NO_SOCKET")
                .build(),
        );
    }
    let f = &the_only(&events, Cause::NothingListening);
    assert!(f.summary.contains("10.0.0.9:5432"), "{}", f.summary);
    assert!(
        f.summary.contains("6 connection attempts from 10.0.0.1"),
        "{}",
        f.summary
    );
    assert!(f.fix[0].contains("port 5432"), "{}", f.fix[0]);
    // Two stray SYNs are no outage.
    let (findings, _) = run(&events[..4], &counters(&[]));
    assert!(
        findings.iter().all(|f| f.cause != Cause::NothingListening),
        "{findings:#?}"
    );
}

/// The server's own firewall drops the SYNs to its service; the clients
/// (elsewhere) retry each SYN, then give up: seen only as drops here.
#[test]
fn syns_to_a_local_port_dropped_by_a_local_firewall_are_found_from_the_server() {
    const NETFILTER_DROP: u32 = 12;
    let mut events = Vec::new();
    for n in 0..12u64 {
        let client = format!("10.108.0.1:{}", 40000 + n / 3);
        events.push(
            ev(K::Drop, 10 + n * 1000)
                .local("10.108.0.2:5432")
                .remote(&client)
                .dropped_incoming(NETFILTER_DROP, 0x02)
                .build(),
        );
    }
    let (findings, _) = run(&events, &counters(&[]));
    let top = &findings[0];
    assert_eq!(top.cause, Cause::SynDroppedOnPath, "{findings:#?}");
    assert_eq!(top.confidence, Confidence::High);
    assert!(top.summary.contains("10.108.0.2:5432"), "{}", top.summary);
    assert!(top.fix[0].contains("iptables -L -v -n"), "{}", top.fix[0]);
    // A few stray SYNs dropped stay a low note.
    let (findings, _) = run(&events[..3], &counters(&[]));
    assert!(
        findings.iter().all(|f| f.confidence == Confidence::Low),
        "{findings:#?}"
    );
}

#[test]
fn healthy_traffic_has_no_finding_and_says_what_was_checked() {
    let mut events = Vec::new();
    for n in 0..50 {
        let sock = 800 + n;
        events.extend(connect(sock, 10 + n, 81, "client", "127.0.0.1:8000"));
        events.push(
            ev(K::State, 20 + n)
                .sock(sock)
                .owner(81, "client")
                .transition("ESTABLISHED", "FIN_WAIT1")
                .idle_ms(1, 1)
                .build(),
        );
        events.push(
            ev(K::State, 21 + n)
                .sock(sock)
                .owner(81, "client")
                .transition("FIN_WAIT2", "CLOSE")
                .build(),
        );
    }
    let mut host = counters(&[]);
    host.sysctls
        .insert("net.ipv4.ip_local_port_range".into(), "32768 60999".into());
    host.sockets_end = Some(SocketFacts {
        states: [("TIME_WAIT".to_string(), 50)].into(),
        time_wait_by_peer: vec![("127.0.0.1:8000".parse().unwrap(), 50)],
        ..SocketFacts::default()
    });
    let (findings, checked) = run(&events, &host);
    assert!(findings.is_empty(), "{findings:#?}");
    assert_eq!(
        checked.len(),
        RULES.len() + 1,
        "every rule and `unexplained`"
    );
    assert!(
        checked
            .iter()
            .any(|c| c.contains("TcpExtListenOverflows +0"))
    );
}

#[test]
fn server_side_view_of_a_keepalive_race() {
    let mut events = Vec::new();
    for n in 0..3u64 {
        let client = format!("10.0.0.{}:5000{n}", 20 + n);
        events.push(
            ev(K::State, 100 + n)
                .sock(900 + n)
                .owner(7, "nginx")
                .local("10.0.0.1:80")
                .remote(&client)
                .transition("ESTABLISHED", "FIN_WAIT1")
                .idle_ms(1_000 + n * 5, 1_000 + n * 5)
                .build(),
        );
        // The client's next request hits the closed connection.
        events.push(
            ev(K::RstSent, 900 + n)
                .sock(950 + n)
                .local("10.0.0.1:80")
                .remote(&client)
                .reason("TCP_TIMEWAIT_SOCKET")
                .build(),
        );
    }
    let (findings, _) = run(&events, &counters(&[]));
    let top = &findings[0];
    assert_eq!(top.cause, Cause::ServerKeepaliveTimeout);
    assert_eq!(top.confidence, Confidence::High);
    assert_eq!((top.affected[0].pid, top.affected[0].role), (7, "closer"));
    assert!((0.95..=1.05).contains(&top.figures["idle_timeout_s"]));
    assert!(
        top.fix[1].contains("nginx's keep-alive timeout"),
        "{:?}",
        top.fix
    );
    assert_eq!(high(&findings), vec![Cause::ServerKeepaliveTimeout]);
}

#[test]
fn a_remote_peer_resetting_connections_in_use() {
    let mut events = Vec::new();
    for n in 0..4u64 {
        events.extend(connect(960 + n, 10, 42, "api-client", "10.0.0.9:443"));
        events.push(
            ev(K::RstReceived, 50 + n)
                .sock(960 + n)
                .owner(42, "api-client")
                .remote("10.0.0.9:443")
                .state("ESTABLISHED")
                .idle_ms(1, 5)
                .build(),
        );
    }
    let (findings, _) = run(&events, &counters(&[]));
    assert_eq!(findings[0].cause, Cause::LingerZeroAbort);
    assert_eq!(findings[0].confidence, Confidence::Medium);
    assert_eq!(findings[0].affected[0].pid, 42);
    assert!(
        findings[0].summary.starts_with("10.0.0.9:443 reset 4"),
        "{}",
        findings[0].summary
    );
    // When the resetting side is local, its own finding explains them.
    events.extend(resets_sent(43, "server", "TCP_ABORT_ON_CLOSE", 4));
    let (findings, _) = run(&events, &counters(&[]));
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].cause, Cause::CloseWithUnreadData);
}

/// Four resets of connections in use, `hops_closer` as given (0: the peer).
fn resets_in_use(hops_closer: u8) -> Vec<TcpEvent> {
    let mut events = Vec::new();
    for n in 0..4u64 {
        events.extend(connect(970 + n, 10, 42, "api-client", "10.0.0.9:443"));
        events.push(
            ev(K::RstReceived, 50 + n)
                .sock(970 + n)
                .owner(42, "api-client")
                .remote("10.0.0.9:443")
                .state("ESTABLISHED")
                .idle_ms(1, 5)
                .origin(hops_closer)
                .build(),
        );
    }
    events
}

#[test]
fn forged_resets_point_at_the_path_not_the_server() {
    let (findings, checked) = run(&resets_in_use(2), &counters(&[]));
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!(f.cause, Cause::ResetOnPath);
    assert_eq!(f.confidence, Confidence::High);
    assert_eq!(f.figures["hops_closer"], 2.0);
    assert!(
        f.summary.contains("not sent by 10.0.0.9:443"),
        "{}",
        f.summary
    );
    assert!(
        f.fix[0].contains("2 hop(s) in front of 10.0.0.9:443"),
        "{}",
        f.fix[0]
    );
    assert!(
        checked
            .iter()
            .any(|c| c.contains("4 received RSTs from a middlebox"))
    );
    // The same resets sent by the peer itself: the peer aborted them.
    let (findings, _) = run(&resets_in_use(0), &counters(&[]));
    assert_eq!(findings[0].cause, Cause::LingerZeroAbort, "{findings:#?}");
    assert!(findings.iter().all(|f| f.cause != Cause::ResetOnPath));
}

#[test]
fn forged_resets_after_idle_name_the_idle_timeout() {
    let mut events = quiet_gap_resets(&[30_100, 29_900, 30_000]);
    for e in events.iter_mut().filter(|e| e.kind == K::RstReceived) {
        *e = Ev(e.clone()).origin(1).build();
    }
    let (findings, _) = run(&events, &HostFacts::default());
    let f = findings
        .iter()
        .find(|f| f.cause == Cause::ResetOnPath)
        .expect("reset_on_path");
    assert!(
        (29.0..=31.0).contains(&f.figures["idle_timeout_s"]),
        "{f:#?}"
    );
    assert!(f.fix[0].contains("drops flows idle ~30"), "{}", f.fix[0]);
}

#[test]
fn counts_of_one_are_singular() {
    assert_eq!(
        singular("1 RSTs sent, 11 RSTs received, 1 connections: 1 times"),
        "1 RST sent, 11 RSTs received, 1 connection: 1 time"
    );
}
