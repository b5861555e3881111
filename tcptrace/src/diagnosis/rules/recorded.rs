//! Rules on event streams recorded with `tcptrace trace --json` on this
//! kind of machine (kernel 6.18), one per cause, replayed without root:
//! python3 clients/servers in a namespace, a real HAProxy 2.6 with
//! `timeout client 2s`, an iptables DROP with TCP_USER_TIMEOUT 2 s.

use super::*;
use crate::{
    aggregate::testing::{from_ndjson, names},
    diagnosis::finding::rank,
};

fn diagnose(ndjson: &str, host: &HostFacts) -> Vec<Finding> {
    let mut agg = Aggregate::new(names());
    for e in from_ndjson(ndjson) {
        agg.add(&e);
    }
    agg.finish();
    let mut findings: Vec<Finding> = evaluate(&Inputs {
        agg: &agg,
        host,
        seconds: 5.0,
    })
    .into_iter()
    .flat_map(|o| o.findings)
    .collect();
    rank(&mut findings);
    findings
}

/// The top finding, checked to be `cause` at high confidence with
/// nothing else high.
fn top(findings: &[Finding], cause: Cause) -> &Finding {
    let top = findings.first().expect("a finding");
    assert_eq!(top.cause, cause, "{findings:#?}");
    assert_eq!(top.confidence, Confidence::High, "{top:#?}");
    assert!(
        findings[1..]
            .iter()
            .all(|f| f.confidence < Confidence::High),
        "{findings:#?}"
    );
    top
}

#[test]
fn haproxy_idle_timeout() {
    let findings = diagnose(include_str!("../recorded/lb.ndjson"), &HostFacts::default());
    let f = top(&findings, Cause::LbIdleTimeout);
    assert_eq!(
        (f.affected[0].pid, f.affected[0].comm.as_str()),
        (11037, "python3")
    );
    let idle = f.figures["idle_timeout_s"];
    assert!((1.95..=2.1).contains(&idle), "{idle}");
    assert_eq!(f.figures["resets"], 3.0);
    assert!(
        f.affected
            .iter()
            .any(|a| a.comm == "haproxy" && a.role == "closer")
    );
    // HAProxy's own aborts of its backend connections: known, low.
    let linger = findings
        .iter()
        .find(|f| f.cause == Cause::LingerZeroAbort)
        .expect("haproxy's backend resets");
    assert_eq!(linger.confidence, Confidence::Low);
}

#[test]
fn unread_data_on_close() {
    let findings = diagnose(
        include_str!("../recorded/unread.ndjson"),
        &HostFacts::default(),
    );
    let f = top(&findings, Cause::CloseWithUnreadData);
    assert_eq!(f.affected[0].comm, "python3");
    assert_eq!(f.figures["resets"], 4.0);
}

#[test]
fn linger_zero() {
    let findings = diagnose(
        include_str!("../recorded/linger.ndjson"),
        &HostFacts::default(),
    );
    let f = top(&findings, Cause::LingerZeroAbort);
    assert_eq!(f.figures["resets"], 4.0);
}

#[test]
fn refused() {
    let findings = diagnose(
        include_str!("../recorded/refused.ndjson"),
        &HostFacts::default(),
    );
    let f = top(&findings, Cause::NothingListening);
    assert_eq!(f.figures["refused"], 4.0);
    assert!(f.summary.contains("127.0.0.1:7999"), "{}", f.summary);
}

#[test]
fn black_hole_with_user_timeout() {
    let findings = diagnose(
        include_str!("../recorded/rto.ndjson"),
        &HostFacts::default(),
    );
    let f = top(&findings, Cause::RetransmissionTimeout);
    assert_eq!(f.figures["timeout_aborts"], 2.0);
    let for_s = f.figures["retransmitting_for_s"];
    assert!((1.0..=3.0).contains(&for_s), "{for_s}");
    assert!(f.summary.contains("198.18.0.2:9000"), "{}", f.summary);
}

#[test]
fn healthy_traffic() {
    let findings = diagnose(
        include_str!("../recorded/clean.ndjson"),
        &HostFacts::default(),
    );
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn haproxy_idle_timeout_seen_from_the_lb_host_only() {
    // The same recording without the client's own events: what a run on
    // the load balancer's host sees.
    let mut agg = Aggregate::new(names());
    for e in from_ndjson(include_str!("../recorded/lb.ndjson")) {
        if e.owner.as_ref().is_none_or(|o| o.pid != 11037) {
            agg.add(&e);
        }
    }
    agg.finish();
    let mut findings: Vec<Finding> = evaluate(&Inputs {
        agg: &agg,
        host: &HostFacts::default(),
        seconds: 5.0,
    })
    .into_iter()
    .flat_map(|o| o.findings)
    .collect();
    rank(&mut findings);
    let f = top(&findings, Cause::LbIdleTimeout);
    assert_eq!(
        (f.affected[0].comm.as_str(), f.affected[0].role),
        ("haproxy", "closer")
    );
    assert!((1.95..=2.1).contains(&f.figures["idle_timeout_s"]));
}
