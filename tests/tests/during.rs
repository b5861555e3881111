//! `diagnose --during`: the load it starts never outlives it, and a load
//! that cannot start is an error, not a clean bill of health.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tests::{
    Netns,
    diagnose::Guard,
    require_root, tcptrace_bin,
    trace::{spawn_until, wait_within},
};

/// The built-in server in `ns` on a free port; returns it and the port.
fn server(ns: &Netns) -> (Guard, u16) {
    let mut child = ns
        .command(tcptrace_bin())
        .args(["stress", "serve", "127.0.0.1:0", "--duration", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let (_rx, seen) = tests::trace::wait_for_stderr(child.stderr.take().unwrap(), "listening on");
    let line = seen.last().unwrap();
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (Guard(child), port)
}

/// Pids whose parent is `parent` (from /proc/PID/stat).
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = stat
                        .rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .to_string();
                    after.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Gone, or a zombie waiting for init: no longer making load.
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Starts diagnose with a 30 s load, kills it with `signal` and checks
/// that the load is gone within a second.
fn load_dies_with_diagnose(signal: i32, tag: &str) {
    require_root();
    let ns = Netns::new(tag);
    let (_server, port) = server(&ns);
    let load = format!("stress churn 127.0.0.1:{port} --rate 100 --duration 30s");
    let mut cmd = Command::new(tcptrace_bin());
    cmd.args([
        "diagnose",
        "--json",
        "--netns",
        ns.name(),
        "--during",
        &load,
    ]);
    let (mut diagnose, _stderr, _seen) = spawn_until(&mut cmd, "diagnosing");
    let deadline = Instant::now() + Duration::from_secs(10);
    let load_pid = loop {
        if let Some(pid) = children_of(diagnose.id()).first() {
            break *pid;
        }
        assert!(Instant::now() < deadline, "the load never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Let it make load for a moment.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!ended(load_pid), "the load runs");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(diagnose.id() as i32, signal) };
    let killed = Instant::now();
    // Watched while diagnose is still exiting (the kernel's teardown of
    // its eBPF programs takes about half a second of that).
    while !ended(load_pid) {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "the load (pid {load_pid}) outlived diagnose by a second"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let load_stopped = killed.elapsed();
    wait_within(&mut diagnose, Duration::from_secs(10));
    eprintln!(
        "signal {signal}: load stopped after {:.0} ms, diagnose after {:.0} ms",
        load_stopped.as_secs_f64() * 1e3,
        killed.elapsed().as_secs_f64() * 1e3
    );
}

#[test]
fn diagnose_during_load_stops_with_a_sigkilled_diagnose() {
    load_dies_with_diagnose(libc::SIGKILL, "durkill");
}

#[test]
fn diagnose_during_load_stops_with_a_hung_up_diagnose() {
    load_dies_with_diagnose(libc::SIGHUP, "durhup");
}

/// A load that cannot start (no route to its target) ends diagnose with
/// exit 1 and one line of its own, no report; a load that starts but
/// finds nothing listening is diagnosed as usual.
#[test]
fn diagnose_during_load_that_fails_at_once_is_an_error() {
    require_root();
    let ns = Netns::new("durfail");
    let t0 = Instant::now();
    let out = Command::new(tcptrace_bin())
        .args([
            "diagnose",
            "--json",
            "--netns",
            ns.name(),
            "--during",
            "stress churn 198.18.0.1:80 --duration 20s",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "no report: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("tcptrace: the --during load failed before it made any load"),
        "{stderr}"
    );
    assert!(
        stderr.contains("198.18.0.1:80 is unreachable"),
        "the load's own reason: {stderr}"
    );
    assert!(!stderr.contains("panicked"));
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "at once, not after 20 s"
    );

    // Refused connects are load, and worth a diagnosis.
    let out = Command::new(tcptrace_bin())
        .args([
            "diagnose",
            "--json",
            "--netns",
            ns.name(),
            "--during",
            "stress churn 127.0.0.1:9 --duration 1s --rate 20",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["load"]["status"], "exit status: 1", "{report:#}");
}

/// A run shorter than its load asks the load to stop and lets it print
/// its report of the attempts so far (it was killed without one), and
/// diagnose still reports in time.
#[test]
fn diagnose_during_load_cut_short_prints_the_loads_report() {
    require_root();
    let ns = Netns::new("durcut");
    let (_server, port) = server(&ns);
    let load = format!("stress churn 127.0.0.1:{port} --rate 200 --duration 60s");
    let t0 = Instant::now();
    let out = Command::new(tcptrace_bin())
        .args([
            "diagnose",
            "--json",
            "--duration",
            "2s",
            "--netns",
            ns.name(),
            "--during",
            &load,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "ended with its --duration, not the load's"
    );
    assert!(
        stderr.contains("SIGTERM: stopping; the report covers the attempts so far"),
        "{stderr}"
    );
    assert!(
        stderr.contains("connect time"),
        "the load's report: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["load"]["status"], "exit status: 0", "{report:#}");
}
