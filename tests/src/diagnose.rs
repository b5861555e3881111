//! Runs the real `tcptrace diagnose --json` as a child for the scenario
//! tests: start it on a namespace, make the trouble, stop it with SIGINT
//! and look at its report.

use std::{
    process::{Child, Command},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{Netns, tcptrace_bin};

pub struct Diagnose {
    child: Child,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
    started: Instant,
}

impl Diagnose {
    /// Starts `tcptrace diagnose --json --netns NETNS` and waits until it
    /// says it is diagnosing (programs attached, host facts read).
    pub fn start(netns: &str) -> Diagnose {
        Diagnose::start_with(netns, &[])
    }

    /// The same with more arguments (e.g. `--during`).
    pub fn start_with(netns: &str, args: &[&str]) -> Diagnose {
        let started = Instant::now();
        let mut cmd = Command::new(tcptrace_bin());
        cmd.args(["diagnose", "--json", "--netns", netns])
            .args(args);
        let (child, stderr, seen) = crate::trace::spawn_until(&mut cmd, "diagnosing");
        Diagnose {
            child,
            stderr,
            seen,
            started,
        }
    }

    /// Stops it as Ctrl-C does and returns the report and the seconds
    /// since start.
    pub fn finish(self) -> (Value, f64) {
        self.finish_within(Duration::ZERO)
    }

    /// Lets it stop by itself (a `--during` load ending) for up to
    /// `grace`, then stops it as Ctrl-C does.
    pub fn finish_within(mut self, grace: Duration) -> (Value, f64) {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: plain kill(2) on our own child, still running.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        }
        let (out, status) = crate::trace::collect(&mut self.child, &self.stderr, &mut self.seen);
        assert!(
            status.success(),
            "tcptrace diagnose exited with {status}: {:?}",
            self.seen
        );
        let report: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("report is not JSON ({e}): {out}"));
        (report, self.started.elapsed().as_secs_f64())
    }
}

impl Drop for Diagnose {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `traffic` on a thread inside `ns` while `tcptrace diagnose`
/// watches `ns` (started before, stopped with Ctrl-C after); returns
/// what `traffic` returned and the report.
pub fn diagnose_while<T: Send>(ns: &Netns, traffic: impl FnOnce() -> T + Send) -> (T, Value) {
    let diagnose = Diagnose::start(ns.name());
    let result = ns.run(traffic);
    let (report, _) = diagnose.finish();
    (result, report)
}

/// A child process killed when the test ends, however it ends.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        crate::kill_group(&mut self.0);
    }
}

pub fn findings(report: &Value) -> &Vec<Value> {
    report["findings"].as_array().expect("findings array")
}

/// The cause of each finding, in the report's order.
pub fn causes(report: &Value) -> Vec<&str> {
    findings(report)
        .iter()
        .filter_map(|f| f["cause"].as_str())
        .collect()
}

/// Asserts the top finding is `cause` at high confidence and that no
/// other finding is high; returns it.
pub fn assert_top<'a>(report: &'a Value, cause: &str) -> &'a Value {
    let all = findings(report);
    let top = all
        .first()
        .unwrap_or_else(|| panic!("no finding; expected {cause}: {report:#}"));
    assert_eq!(top["cause"], cause, "top finding: {report:#}");
    assert_eq!(top["confidence"], "high", "{top:#}");
    let others: Vec<_> = all[1..]
        .iter()
        .filter(|f| f["confidence"] == "high")
        .map(|f| f["cause"].clone())
        .collect();
    assert!(
        others.is_empty(),
        "other high findings {others:?}: {report:#}"
    );
    top
}

/// The figure `name` of a finding (panics, showing the finding, if it
/// has none).
pub fn figure(finding: &Value, name: &str) -> f64 {
    finding["figures"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("no figure {name}: {finding:#}"))
}

/// The first affected process of a finding (pid, comm, role).
pub fn first_affected(finding: &Value) -> (u64, &str, &str) {
    let a = &finding["affected"][0];
    (
        a["pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("no affected process: {finding:#}")),
        a["comm"].as_str().unwrap_or_default(),
        a["role"].as_str().unwrap_or_default(),
    )
}

/// [`describe`] with the seconds since `started` (the test's start).
pub fn describe_since(name: &str, report: &Value, started: Instant) {
    describe(name, report, started.elapsed().as_secs_f64());
}

/// One line for the log (and the closing note).
pub fn describe(name: &str, report: &Value, seconds: f64) {
    let top = findings(report).first().map_or_else(
        || "no finding".to_string(),
        |f| {
            format!(
                "[{}] {}: {}",
                f["confidence"].as_str().unwrap_or("?"),
                f["cause"].as_str().unwrap_or("?"),
                f["summary"].as_str().unwrap_or("")
            )
        },
    );
    eprintln!("SCENARIO {name} ({seconds:.1} s): {top}");
}
