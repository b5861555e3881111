//! `diagnose` and namespaces that go away during the run: a pod deleted
//! mid-incident is often the evidence. Its counters are still read at
//! the end (diagnose holds every namespace it surveyed), the report says
//! it was deleted, and a watched one that vanished is no error.

use std::{
    net::TcpStream,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    Netns,
    diagnose::{Diagnose, causes},
    require_root, sh, tcptrace_bin,
    trace::spawn_until,
};

/// Refused connects made in `ns` (nothing listens on port 1).
const REFUSED: u64 = 12;

/// Makes `REFUSED` refused connects inside `ns`, then deletes it: no
/// process and no /run/netns name keep it any more.
fn refuse_then_delete(ns: &Netns) {
    ns.run(|| {
        for _ in 0..REFUSED {
            assert!(TcpStream::connect("127.0.0.1:1").is_err());
        }
    });
    sh("ip", &["netns", "del", ns.name()]);
    assert!(!ns.path().exists());
}

#[test]
fn a_watched_namespace_deleted_during_the_run_is_still_diagnosed() {
    require_root();
    let ns = Netns::new("gonew");
    let diagnose = Diagnose::start(ns.name());
    refuse_then_delete(&ns);
    let (report, _) = diagnose.finish();
    // Read at the end through the hold: the changes, not +0.
    assert_eq!(report["counters"]["TcpAttemptFails"], REFUSED, "{report:#}");
    assert_eq!(report["counters"]["TcpOutRsts"], REFUSED, "{report:#}");
    assert!(causes(&report).contains(&"nothing_listening"), "{report:#}");
}

#[test]
fn a_namespace_deleted_during_a_host_wide_run_keeps_its_counters() {
    require_root();
    let ns = Netns::new("goneh");
    let inode = ns.inode();
    let mut cmd = Command::new(tcptrace_bin());
    cmd.args(["diagnose", "--json", "--duration", "4s"]);
    let (child, _stderr, _seen) = spawn_until(&mut cmd, "diagnosing");
    let t0 = Instant::now();
    refuse_then_delete(&ns);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(t0.elapsed() < Duration::from_secs(15));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let gone = report["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["inode"] == inode)
        .unwrap_or_else(|| panic!("netns {inode} is not in the report: {report:#}"));
    assert_eq!(gone["deleted_during_run"], true, "{gone:#}");
    assert_eq!(gone["created_during_run"], false, "{gone:#}");
    assert!(gone["events"].as_u64().unwrap() >= REFUSED, "{gone:#}");
    assert_eq!(gone["counters"]["TcpAttemptFails"], REFUSED, "{gone:#}");
    assert_eq!(gone["counters"]["TcpOutRsts"], REFUSED, "{gone:#}");
}
