//! Rules for path MTU black holes, orphan/memory aborts, PAWS, loss
//! against segments sent, stray aborts and `unexplained`, on
//! synthesized event streams (the scenario tests in
//! tests/tests/diagnose_causes.rs run the real thing).

use std::collections::BTreeMap;

use super::*;
use crate::{
    aggregate::testing::*,
    diagnosis::finding::rank,
    event::{EventKind as K, TcpEvent},
    host::global::HostGlobal,
};

/// Drop reason numbers for these tests (names are what matter).
const TW_PAWS: u32 = 70;
const TCP_FLAGS_DROP: u32 = 71;
const OLD_DATA: u32 = 72;
const NO_SOCKET: u32 = 2;
const INVALID_SYN: u32 = 73;

fn run(events: &[TcpEvent], host: &HostFacts) -> Vec<Finding> {
    let names = names().with_drop_reasons(BTreeMap::from([
        (93, "PKT_TOO_BIG".to_string()),
        (TW_PAWS, "TCP_RFC7323_TW_PAWS".to_string()),
        (TCP_FLAGS_DROP, "TCP_FLAGS".to_string()),
        (OLD_DATA, "TCP_OLD_DATA".to_string()),
        (NO_SOCKET, "NO_SOCKET".to_string()),
        (INVALID_SYN, "TCP_INVALID_SYN".to_string()),
    ]));
    let mut agg = Aggregate::new(names);
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

fn counters(pairs: &[(&str, i64)]) -> HostFacts {
    let mut host = HostFacts::default();
    for (k, v) in pairs {
        host.counters.insert(k.to_string(), *v);
    }
    host
}

fn find(findings: &[Finding], cause: Cause) -> Option<&Finding> {
    findings.iter().find(|f| f.cause == cause)
}

/// `n` data retransmits by pid 51 to 10.0.0.2:443, of `len` bytes each
/// with an MSS of 1448.
fn retransmits(n: u64, len: u32) -> Vec<TcpEvent> {
    let mut events = connect(700, 10, 51, "uploader", "10.0.0.2:443");
    for t in 0..n {
        events.push(
            ev(K::Retransmit, 300 + t * 200)
                .sock(700)
                .owner(51, "uploader")
                .remote("10.0.0.2:443")
                .state("ESTABLISHED")
                .segment(len, 1, 1448)
                .build(),
        );
    }
    events
}

#[test]
fn full_size_retransmits_on_timeout_are_a_pmtu_black_hole() {
    let events = retransmits(6, 1448);
    let host = counters(&[("TcpExtTCPTimeouts", 6), ("TcpOutSegs", 40)]);
    let findings = run(&events, &host);
    let top = &findings[0];
    assert_eq!(top.cause, Cause::PmtuBlackHole, "{findings:#?}");
    assert_eq!(top.confidence, Confidence::High);
    assert_eq!(top.affected[0].pid, 51);
    assert_eq!(top.figures["mss"], 1448.0);
    // ICMP arriving makes it less sure; small segments lost too is not it.
    let mut icmp = host.clone();
    icmp.counters.insert("IcmpMsgInType3".into(), 2);
    assert_eq!(run(&events, &icmp)[0].confidence, Confidence::Medium);
    let mut mixed = retransmits(3, 1448);
    mixed.extend(retransmits(3, 200).into_iter().skip(3));
    assert!(find(&run(&mixed, &host), Cause::PmtuBlackHole).is_none());
}

/// Path MTU discovery that works: a hop drops the first full-size
/// packets as PKT_TOO_BIG and sends its ICMP, the sender lowers its MSS;
/// a few retransmits, none on timeout.
#[test]
fn pmtu_discovery_at_work_is_no_finding() {
    const PKT_TOO_BIG: u32 = 93;
    let mut events = retransmits(3, 1448);
    for t in 0..30u64 {
        events.push(
            ev(K::Drop, 300 + t)
                .owner(51, "uploader")
                .local("10.0.0.9:41000")
                .remote("10.0.0.2:443")
                .dropped(PKT_TOO_BIG, 0x18)
                .build(),
        );
    }
    let host = counters(&[("IcmpMsgInType3", 33), ("TcpOutSegs", 4000)]);
    let findings = run(&events, &host);
    assert!(findings.is_empty(), "{findings:#?}");
    // The same burst with no ICMP received (the sender not watched, or
    // the ICMP filtered) is listed, at low only.
    let findings = run(&events, &counters(&[("TcpOutSegs", 4000)]));
    let f = find(&findings, Cause::PmtuBlackHole).expect("listed");
    assert_eq!(f.confidence, Confidence::Low, "{findings:#?}");
    assert!(
        findings.iter().all(|f| f.confidence == Confidence::Low),
        "{findings:#?}"
    );
    // Drops that go on for seconds: the sender never learns (the
    // receiver's view of a black hole).
    let spread: Vec<TcpEvent> = (0..30u64)
        .map(|t| {
            ev(K::Drop, 300 + t * 200)
                .local("10.0.0.9:41000")
                .remote("10.0.0.2:443")
                .dropped(PKT_TOO_BIG, 0x18)
                .build()
        })
        .collect();
    let findings = run(&spread, &counters(&[("TcpOutSegs", 4000)]));
    let f = find(&findings, Cause::PmtuBlackHole).expect("found");
    assert_eq!(f.confidence, Confidence::Medium, "{findings:#?}");
    assert!(
        f.evidence.iter().any(|e| e.contains("never learns")),
        "{f:#?}"
    );
    assert!(
        f.summary
            .starts_with("full-size packets from 10.0.0.2:443 to 10.0.0.9:41000 are dropped"),
        "{}",
        f.summary
    );
}

/// A peer that died silently: a few retransmits each (the backoff
/// doubles), no connection dead yet when the run ends, every one stuck.
#[test]
fn connections_stuck_retransmitting_at_the_end_are_a_timeout() {
    let events = retransmits(6, 600);
    let mut host = counters(&[("TcpExtTCPTimeouts", 6), ("TcpOutSegs", 40)]);
    host.sysctls
        .insert("net.ipv4.tcp_retries2".into(), "15".into());
    // Below the floor of retransmits alone.
    assert!(find(&run(&events, &host), Cause::RetransmissionTimeout).is_none());
    host.sockets_end = Some(crate::diagnosis::facts::SocketFacts {
        stuck_by_peer: vec![("10.0.0.2:443".parse().unwrap(), 3)],
        ..Default::default()
    });
    let findings = run(&events, &host);
    let top = &findings[0];
    assert_eq!(top.cause, Cause::RetransmissionTimeout, "{findings:#?}");
    assert_eq!(top.confidence, Confidence::High);
    assert!(
        top.summary.contains("3 connections to 10.0.0.2:443 stuck"),
        "{}",
        top.summary
    );
    assert_eq!(top.figures["stuck_connections"], 3.0);
    assert!(
        top.evidence
            .iter()
            .any(|e| e.contains("tcp_retries2 (now 15)")),
        "{top:#?}"
    );
}

#[test]
fn loss_is_judged_against_segments_sent() {
    let events = retransmits(30, 600);
    // 30 of a million segments: a healthy busy transfer.
    let busy = counters(&[
        ("TcpRetransSegs", 30),
        ("TcpOutSegs", 1_000_000),
        ("TcpExtTCPFastRetrans", 30),
    ]);
    assert!(run(&events, &busy).is_empty(), "{:#?}", run(&events, &busy));
    // 30 of 1000: real loss.
    let lossy = counters(&[("TcpRetransSegs", 30), ("TcpOutSegs", 1_000)]);
    let findings = run(&events, &lossy);
    let f = find(&findings, Cause::RetransmissionTimeout).expect("loss");
    assert_eq!(f.confidence, Confidence::Medium);
    assert!((f.figures["retransmit_rate"] - 0.03).abs() < 1e-9);
    assert!(f.evidence.iter().any(|e| e.contains("sized retransmits")));
}

fn memory_resets(n: u64) -> Vec<TcpEvent> {
    (0..n)
        .map(|i| {
            ev(K::RstSent, 100 + i)
                .sock(900 + i)
                .owner(61, "relay")
                .local("10.0.0.1:1080")
                .remote("10.0.0.9:50000")
                .reason("TCP_ABORT_ON_MEMORY")
                .age_ms(20)
                .queues(200_000, 0, 5)
                .build()
        })
        .collect()
}

fn orphans(now: u64, max: u64) -> HostGlobal {
    HostGlobal {
        tcp_max_orphans: Some(max),
        tcp_mem: None,
        orphans: Some(now),
        sockets_allocated: Some(now + 10),
        tcp_mem_pages: Some(30),
    }
}

#[test]
fn memory_aborts_name_the_orphan_limit() {
    let mut host = counters(&[("TcpExtTCPAbortOnMemory", 5)]);
    host.host_global_start = Some(orphans(12, 8));
    host.host_global_end = Some(orphans(3, 8));
    let findings = run(&memory_resets(5), &host);
    let top = &findings[0];
    assert_eq!(top.cause, Cause::OrphanOrMemoryAbort);
    assert_eq!(top.confidence, Confidence::High);
    assert_eq!(top.affected[0].pid, 61);
    assert_eq!(top.figures["tcp_max_orphans"], 8.0);
    assert_eq!(top.figures["orphans"], 12.0);
    assert!(top.fix[0].contains("now 8"), "{}", top.fix[0]);
    // One stray abort far below the limit is listed, not an alarm...
    let mut calm = counters(&[("TcpExtTCPAbortOnMemory", 1)]);
    calm.host_global_start = Some(orphans(3, 131_072));
    let findings = run(&memory_resets(1), &calm);
    assert_eq!(findings[0].confidence, Confidence::Low, "{findings:#?}");
    // ...at the limit it is the cause.
    let findings = run(&memory_resets(1), &host);
    assert_eq!(findings[0].confidence, Confidence::Medium);
}

#[test]
fn paws_at_time_wait_on_the_server_and_on_the_clients() {
    // Server side: SYNs from one NAT address dropped at TIME_WAIT.
    let events: Vec<TcpEvent> = (0..4)
        .map(|i| {
            ev(K::Drop, 100 + i * 300)
                .owner(71, "api")
                .local("10.0.0.1:80")
                .remote(&format!("203.0.113.7:{}", 40_000 + i))
                .dropped(TW_PAWS, 0x02)
                .build()
        })
        .collect();
    let findings = run(&events, &counters(&[("TcpExtPAWSTimewait", 4)]));
    let top = &findings[0];
    assert_eq!(top.cause, Cause::PawsRejectedSyn, "{findings:#?}");
    assert_eq!(top.confidence, Confidence::High);
    assert_eq!(top.affected[0].pid, 71);
    assert!(top.summary.contains("203.0.113.7"), "{}", top.summary);
    // One stray rejection: low.
    let findings = run(&events[..1], &counters(&[]));
    assert_eq!(findings[0].confidence, Confidence::Low, "{findings:#?}");

    // Client side: the server's ACK for the old connection is reset in
    // SYN_SENT, then the SYN is retried.
    let mut events = Vec::new();
    for i in 0..3u64 {
        let sock = 1_000 + i;
        events.push(
            ev(K::RstSent, 100 + i * 1_100)
                .sock(sock)
                .owner(72, "curl")
                .remote("198.51.100.4:80")
                .state("SYN_SENT")
                .reason("TCP_INVALID_ACK_SEQUENCE")
                .build(),
        );
        events.push(
            ev(K::Retransmit, 1_100 + i * 1_100)
                .sock(sock)
                .owner(72, "curl")
                .remote("198.51.100.4:80")
                .state("SYN_SENT")
                .build(),
        );
    }
    let findings = run(&events, &counters(&[]));
    let top = &findings[0];
    assert_eq!(top.cause, Cause::PawsRejectedSyn, "{findings:#?}");
    assert_eq!(top.confidence, Confidence::High);
    assert_eq!((top.affected[0].pid, top.affected[0].role), (72, "client"));
}

fn resets(pid: u32, reason: &str, n: u64) -> Vec<TcpEvent> {
    (0..n)
        .map(|i| {
            ev(K::RstSent, 100 + i)
                .sock(1_200 + i)
                .owner(pid, "worker")
                .local("10.0.0.1:8080")
                .remote("10.0.0.9:51000")
                .reason(reason)
                .queues(0, 4_096, 1)
                .build()
        })
        .collect()
}

#[test]
fn a_single_stray_abort_is_low() {
    for reason in ["TCP_STATE", "TCP_ABORT_ON_CLOSE"] {
        let findings = run(&resets(81, reason, 1), &counters(&[]));
        assert!(
            findings.iter().all(|f| f.confidence == Confidence::Low),
            "{reason}: {findings:#?}"
        );
        let findings = run(&resets(81, reason, 2), &counters(&[]));
        assert_eq!(findings[0].confidence, Confidence::Medium, "{reason}");
    }
}

#[test]
fn failures_nothing_explains_are_never_silent() {
    // Connects that time out and RSTs with a reason no rule covers.
    let mut events = Vec::new();
    for i in 0..3u64 {
        events.push(
            ev(K::ConnectFailed, 100 + i)
                .sock(1_300 + i)
                .owner(91, "probe")
                .remote("10.9.9.9:5432")
                .state("SYN_SENT")
                .connect_ms(2_000.0)
                .build(),
        );
    }
    events.extend(resets(92, "TCP_OLD_ACK", 2));
    let findings = run(&events, &counters(&[]));
    let f = find(&findings, Cause::Unexplained).expect("never silent");
    assert_eq!(f.confidence, Confidence::Medium, "{findings:#?}");
    assert!(f.summary.contains("TCP_OLD_ACK"), "{}", f.summary);
    assert!(f.affected.iter().any(|a| a.pid == 92));
    // A single stray RST is listed at low.
    let findings = run(&resets(92, "TCP_OLD_ACK", 1), &counters(&[]));
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(
        (findings[0].cause, findings[0].confidence),
        (Cause::Unexplained, Confidence::Low)
    );
}

#[test]
fn what_arrives_after_a_reset_belongs_to_its_cause() {
    let mut events = resets(81, "TCP_ABORT_ON_CLOSE", 5);
    // The client's data after the reset reaches only the listener.
    for i in 0..2u64 {
        events.push(
            ev(K::Drop, 200 + i)
                .owner(81, "worker")
                .local("10.0.0.1:8080")
                .remote("10.0.0.9:51000")
                .dropped(TCP_FLAGS_DROP, 0x10)
                .build(),
        );
        events.push(
            ev(K::RstSent, 201 + i)
                .local("10.0.0.1:8080")
                .remote("10.0.0.9:51000")
                .reason("TCP_FLAGS")
                .build(),
        );
    }
    let findings = run(&events, &counters(&[]));
    assert_eq!(findings[0].cause, Cause::CloseWithUnreadData);
    assert!(
        find(&findings, Cause::Unexplained).is_none(),
        "{findings:#?}"
    );
}

#[test]
fn duplicates_dropped_after_retransmits_are_no_failure() {
    // A healthy transfer: the receiver drops segments it already had.
    let drops = |reason: u32| -> Vec<TcpEvent> {
        (0..40u64)
            .map(|i| {
                ev(K::Drop, 300 + i)
                    .owner(93, "downloader")
                    .local("10.0.0.9:41000")
                    .remote("10.0.0.1:80")
                    .dropped(reason, 0x18)
                    .build()
            })
            .collect()
    };
    let findings = run(&drops(OLD_DATA), &counters(&[]));
    assert!(findings.is_empty(), "{findings:#?}");
    // The same count of drops for a reason that is a failure is listed,
    // at low: nothing else failed (the retransmits recovered them).
    let findings = run(&drops(NO_SOCKET), &counters(&[]));
    let f = find(&findings, Cause::Unexplained).expect("never silent");
    assert!(f.summary.contains("NO_SOCKET"), "{}", f.summary);
    assert_eq!(f.confidence, Confidence::Low, "{f:#?}");
}

/// A slow first answer: each of three connects retransmits its SYN at
/// 1 s, the first SYN-ACK then arrives and the connect succeeds, and the
/// second SYN-ACK (the answer to the retransmit) reaches a socket already
/// established, dropped as TCP_INVALID_SYN. Nothing was lost on the path
/// but time: at most a low finding (seen once in a NAT idle-timeout
/// scenario, where it stood beside the real cause at medium).
#[test]
fn duplicate_syn_acks_after_a_slow_answer_are_not_path_loss() {
    let mut events = Vec::new();
    for lane in 0..3u64 {
        let (sock, at) = (2_000 + lane, 100 + lane * 50);
        let remote = "[fd00::2]:8080";
        events.push(
            ev(K::Retransmit, at + 1_000)
                .sock(sock)
                .owner(81, "client")
                .remote(remote)
                .state("SYN_SENT")
                .build(),
        );
        events.extend(connect(sock, at + 1_020, 81, "client", remote));
        events.push(
            ev(K::Drop, at + 1_030)
                .sock(sock)
                .owner(81, "client")
                .remote(remote)
                .dropped(INVALID_SYN, 0x12)
                .build(),
        );
    }
    let findings = run(&events, &counters(&[]));
    if let Some(f) = find(&findings, Cause::SynDroppedOnPath) {
        assert_eq!(f.confidence, Confidence::Low, "{findings:#?}");
    }
}
