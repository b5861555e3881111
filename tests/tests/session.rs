//! The one session lifecycle, seen from outside: under one connection
//! storm, `trace`, `top --json`, `diagnose --json` and `stress churn
//! --trace` each account for every event (received + lost = produced,
//! hook runs the kernel skipped reported), and agree with each other;
//! SIGHUP ends a trace as SIGTERM does (complete last record, summary);
//! and `--netns` means the same, with the same errors, in every command.

use std::{
    fs,
    io::Read as _,
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use serde_json::Value;
use tests::{
    Netns,
    host::{ScratchDir, failure, tcptrace},
    require_root, set_linger_zero, tcptrace_bin,
    trace::{collect, spawn_until, wait_within},
};

/// A child started with `spawn_until`, interrupted (SIGINT) at the end.
struct Running {
    child: Child,
    stderr: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(cmd: &mut Command, ready: &str) -> Running {
        let (child, stderr, seen) = spawn_until(cmd, ready);
        Running {
            child,
            stderr,
            seen,
        }
    }

    /// Sends `signal`, waits, and returns stdout; the run must succeed.
    fn stop_with(mut self, signal: i32) -> (String, Vec<String>) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let (out, status) = collect(&mut self.child, &self.stderr, &mut self.seen);
        assert!(status.success(), "exited with {status}: {:?}", self.seen);
        (out, std::mem::take(&mut self.seen))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `events_received + events_lost == events_produced` in a record, which
/// must also report the hook runs the kernel skipped; returns
/// (received, lost, produced).
fn exact(what: &str, record: &Value) -> (u64, u64, u64) {
    let field = |name: &str| {
        record[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{what}: no {name}: {record}"))
    };
    let (received, lost, produced) = (
        field("events_received"),
        field("events_lost"),
        field("events_produced"),
    );
    let skipped = field("missed_by_kernel");
    assert_eq!(
        received + lost,
        produced,
        "{what}: received {received} + lost {lost} != produced {produced} ({skipped} hook runs skipped)"
    );
    eprintln!(
        "{what}: received {received}, lost {lost}, produced {produced}, hook runs skipped {skipped}"
    );
    (received, lost, produced)
}

#[test]
fn every_command_accounts_for_every_event_under_one_storm() {
    require_root();
    let ns = Netns::new("loss");
    let bin = tcptrace_bin();
    let port = "7311";
    let target = format!("127.0.0.1:{port}");
    // The same filters everywhere, so every tracer sees the same events:
    // this namespace, this port, the kinds `stress --trace` asks for.
    let filters = [
        "--netns",
        ns.name(),
        "--port",
        port,
        "--events",
        "connect,retrans,rst",
    ];
    let mut server_cmd = ns.command(&bin);
    server_cmd.args(["stress", "serve", &target, "--duration", "120s"]);
    let server = Running::start(&mut server_cmd, "listening on");

    let mut trace_cmd = Command::new(&bin);
    trace_cmd.args(["trace", "--json"]).args(filters);
    let trace = Running::start(&mut trace_cmd, "tracing; Ctrl-C to stop");
    // A 4 KiB ring (about 30 records) must overflow in the storm: loss is
    // then real and has to be counted, not merely absent.
    let mut top_cmd = Command::new(&bin);
    top_cmd
        .args(["top", "--json", "--interval", "1s", "--ring-kib", "4"])
        .args(filters);
    let top = Running::start(&mut top_cmd, "top; Ctrl-C to stop");
    let mut diagnose_cmd = Command::new(&bin);
    diagnose_cmd
        .args(["diagnose", "--json", "--ring-kib", "4"])
        .args(filters);
    let diagnose = Running::start(&mut diagnose_cmd, "diagnosing");

    let out = ns
        .command(&bin)
        .args(["stress", "churn", &target, "--count", "3000", "--rst"])
        .args([
            "--concurrency",
            "32",
            "--duration",
            "60s",
            "--trace",
            "--json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("run stress churn --trace");
    assert!(out.status.success(), "stress churn failed");
    let stress: Value = serde_json::from_slice(&out.stdout).expect("stress report is JSON");
    assert_eq!(stress["connected"], 3000, "{stress}");
    // Let the last resets reach every tracer before they stop.
    thread::sleep(Duration::from_millis(500));

    let (trace_out, _) = trace.stop_with(libc::SIGINT);
    let (top_out, _) = top.stop_with(libc::SIGINT);
    let (diagnose_out, _) = diagnose.stop_with(libc::SIGINT);
    server.stop_with(libc::SIGTERM);

    let summary: Value = trace_out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("NDJSON"))
        .find(|r| r["type"] == "summary")
        .expect("trace summary");
    let (_, trace_lost, produced) = exact("trace", &summary);
    assert_eq!(trace_lost, 0, "an 8 MiB ring holds this storm: {summary}");
    // Each connection: one connect, one RST sent, one RST received.
    assert!(produced >= 3 * 3000, "{summary}");

    let last_top: Value = top_out
        .lines()
        .last()
        .map(|l| serde_json::from_str(l).expect("top JSON line"))
        .expect("top printed snapshots");
    let (_, top_lost, top_produced) = exact("top", &last_top);
    assert!(top_lost > 0, "a 4 KiB ring overflows: {last_top}");
    // top counts the successful connects in the kernel instead of
    // sending them: together they are what trace saw, exactly.
    let top_counted = last_top["opens_counted_in_kernel"].as_u64().unwrap();
    assert!(top_counted > 0, "{last_top}");
    assert_eq!(
        top_produced + top_counted,
        produced,
        "top and trace saw the same storm"
    );

    let report: Value = serde_json::from_str(&diagnose_out).expect("diagnose JSON");
    let (_, diagnose_lost, diagnose_produced) = exact("diagnose", &report);
    assert!(diagnose_lost > 0, "a 4 KiB ring overflows");
    // diagnose reads every open (its flow index needs them): it counts
    // none in the kernel today, and would add up the same if it did.
    let diagnose_counted = report["opens_counted_in_kernel"].as_u64().unwrap();
    assert_eq!(
        diagnose_produced + diagnose_counted,
        produced,
        "diagnose and trace saw the same storm"
    );

    // stress --trace attaches right before its first connect and detaches
    // right after its last close, so at most the last RST received can
    // fall outside; before the session it drained once and reported a
    // quarter of the events with `lost: 0`.
    let kernel = &stress["kernel"];
    let (stress_received, _, stress_produced) = exact("stress --trace", kernel);
    assert!(
        stress_produced <= produced && stress_produced + 3 >= produced,
        "stress --trace produced {stress_produced}, trace {produced}: {kernel}"
    );
    assert_eq!(kernel["connects"], 3000, "{kernel}");
    assert_eq!(
        kernel["events_received"], stress_received,
        "the figures add up to what was received: {kernel}"
    );
}

#[test]
fn sighup_ends_a_trace_with_its_last_record_whole_and_a_summary() {
    require_root();
    let ns = Netns::new("hup");
    let dir = ScratchDir::new("hup");
    let output = dir.path().join("events.ndjson");
    let mut cmd = Command::new(tcptrace_bin());
    cmd.args(["trace", "--json", "--netns", ns.name(), "--output"])
        .arg(&output);
    let trace = Running::start(&mut cmd, "tracing; Ctrl-C to stop");
    // Traffic keeps flowing while the signal arrives, so a record is being
    // written when it does.
    let storming = AtomicBool::new(true);
    let (stderr, made) = thread::scope(|scope| {
        let storm = scope.spawn(|| {
            ns.enter();
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mut made = 0u64;
            while storming.load(Ordering::Relaxed) && made < 200_000 {
                let client = TcpStream::connect(addr).unwrap();
                let (server, _) = listener.accept().unwrap();
                set_linger_zero(&client);
                drop(client);
                drop(server);
                made += 1;
            }
            made
        });
        thread::sleep(Duration::from_millis(700));
        let (_, stderr) = trace.stop_with(libc::SIGHUP);
        storming.store(false, Ordering::Relaxed);
        (stderr, storm.join().unwrap())
    });
    assert!(made > 0);

    let text = fs::read_to_string(&output).unwrap();
    assert!(text.ends_with('\n'), "the last record is whole");
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("cut record {l:?}: {e}")))
        .collect();
    let summary = records.last().expect("records");
    assert_eq!(summary["type"], "summary", "the summary is last");
    let (received, _, _) = exact("trace --output after SIGHUP", summary);
    let events = records.iter().filter(|r| r["type"] == "event").count() as u64;
    assert_eq!(events, received, "every event received was written");
    assert!(received > 0);
    assert!(
        stderr.iter().any(|l| l.starts_with("--- tcptrace:")),
        "the human summary on stderr: {stderr:?}"
    );
}

#[test]
fn bad_netns_values_are_the_same_one_line_error_in_every_command() {
    require_root();
    let dir = ScratchDir::new("badns");
    let file = dir.path().join("plain-file");
    fs::write(&file, "not a namespace").unwrap();
    let file = file.to_string_lossy().into_owned();
    let directory = dir.path().to_string_lossy().into_owned();
    let cases: [(&str, &str); 6] = [
        ("0", "no namespace has inode 0"),
        (&file, "is a regular file, not a network namespace"),
        (&directory, "is a directory, not a network namespace"),
        (
            "/proc/self/ns/uts",
            "is a uts namespace, not a network namespace",
        ),
        (
            "tt-no-such-netns",
            "cannot open network namespace /run/netns/tt-no-such-netns",
        ),
        (
            "4294967295",
            "no process or /run/netns entry is in a network namespace",
        ),
    ];
    let commands: [&[&str]; 4] = [
        &["trace", "--duration", "1s"],
        &["top", "--json", "--duration", "1s"],
        &["diagnose", "--duration", "1s"],
        &["snapshot"],
    ];
    for (spec, expected) in cases {
        let mut messages = Vec::new();
        for command in commands {
            let mut args = command.to_vec();
            args.extend(["--netns", spec]);
            let error = failure(&tcptrace(&args));
            assert!(
                error.starts_with(&format!("tcptrace: --netns {spec}"))
                    || error.starts_with(&format!("tcptrace: --netns '{spec}'")),
                "{args:?}: {error}"
            );
            assert!(error.contains(expected), "{args:?}: {error}");
            messages.push(error);
        }
        messages.dedup();
        assert_eq!(messages.len(), 1, "one message for {spec}: {messages:?}");
    }
}

#[test]
fn a_netns_given_by_name_path_or_inode_traces_the_same_namespace() {
    require_root();
    let ns = Netns::new("nsforms");
    let inode = ns.inode().to_string();
    let path = ns.path().to_string_lossy().into_owned();
    for spec in [ns.name(), path.as_str(), inode.as_str()] {
        let mut cmd = Command::new(tcptrace_bin());
        cmd.args(["trace", "--json", "--events", "connect", "--netns", spec]);
        let trace = Running::start(&mut cmd, "tracing; Ctrl-C to stop");
        let refused = ns.run(|| TcpStream::connect("127.0.0.1:9").is_err());
        assert!(refused);
        // Traffic outside the namespace is filtered out in the kernel.
        let _ = TcpStream::connect("127.0.0.1:9");
        thread::sleep(Duration::from_millis(200));
        let (out, _) = trace.stop_with(libc::SIGINT);
        let failed: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["kind"] == "connect_failed")
            .collect();
        assert_eq!(failed.len(), 1, "--netns {spec}: {failed:?}");
        assert_eq!(failed[0]["netns"], ns.inode(), "--netns {spec}");
    }
    let mut child = Command::new(tcptrace_bin())
        .args(["snapshot", "--json", "--netns", &inode])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_within(&mut child, Duration::from_secs(20));
    assert!(status.success());
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let snapshot: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(snapshot["netns"], inode.as_str());
}
