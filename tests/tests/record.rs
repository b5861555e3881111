//! Root tests of `trace --record` and `replay`: a real storm recorded
//! while the same session prints it live; the replay must print exactly
//! the same bytes (with the TC programs' verdicts on received RSTs and
//! the `--pcap` summary too). Damaged and cut-short files fail with one
//! line. Pods, namespaces and containers: the exporter test that names
//! them also replays its trace.

use std::{
    fs,
    net::{TcpListener, TcpStream},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use tests::{
    Netns,
    diagnose::causes,
    require_root,
    trace::{collect, spawn_until, wait_within},
};

/// A private scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("tcptrace-record-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `connections` connects, each closed with SO_LINGER 0 (an RST), in `ns`.
fn storm(ns: &Netns, connections: usize) {
    ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = std::thread::spawn(move || {
            for _ in 0..connections {
                let (s, _) = listener.accept().unwrap();
                drop(s);
            }
        });
        for _ in 0..connections {
            let s = TcpStream::connect(addr).unwrap();
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s);
        }
        acceptor.join().unwrap();
    });
    // Let the last records reach the ring buffer.
    std::thread::sleep(Duration::from_millis(300));
}

fn replay(args: &[&str], file: &Path) -> Output {
    Command::new(tests::tcptrace_bin())
        .arg("replay")
        .args(args)
        .arg(file)
        .output()
        .expect("run tcptrace replay")
}

/// Records a storm while the same run prints it (`extra` picks JSON or
/// human lines) and returns (live output, record file).
fn record_live(dir: &Path, tag: &str, ring_kib: &str, extra: &[String]) -> (Vec<u8>, PathBuf) {
    let ns = Netns::new(tag);
    let live = dir.join(format!("{tag}.out"));
    let record = dir.join(format!("{tag}.rec"));
    let mut cmd = Command::new(tests::tcptrace_bin());
    cmd.arg("trace")
        .args(extra)
        .args(["--netns", &ns.inode().to_string(), "--ring-kib", ring_kib])
        .arg("--output")
        .arg(&live)
        .arg("--record")
        .arg(&record);
    let (mut child, stderr, mut seen) = spawn_until(&mut cmd, "tracing; Ctrl-C to stop");
    storm(&ns, 1500);
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    wait_within(&mut child, Duration::from_secs(20));
    let (_, status) = collect(&mut child, &stderr, &mut seen);
    assert!(status.success(), "trace --record: {status}: {seen:?}");
    let mode = fs::metadata(&record).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the record file names processes: 0600");
    (fs::read(&live).unwrap(), record)
}

#[test]
fn replay_prints_what_the_live_trace_printed() {
    require_root();
    let scratch = Scratch::new();
    // JSON with a 4 KiB ring: the storm overflows it, so the stream has
    // loss records between events; the TC programs on the namespace's lo
    // judge every received RST (records with the peer's profile) and the
    // flight recorder writes a few captures. Human lines with the
    // default ring.
    let flights = scratch.0.join("flights");
    let json_args: Vec<String> = ["--json", "--iface", "lo", "--pcap-max", "3", "--pcap"]
        .iter()
        .map(|a| a.to_string())
        .chain([flights.display().to_string()])
        .collect();
    for (tag, ring_kib, live_args, replay_args) in [
        ("recjson", "4", &json_args[..], &["--json"][..]),
        ("rechuman", "8192", &[][..], &[][..]),
    ] {
        let (live, record) = record_live(&scratch.0, tag, ring_kib, live_args);
        let text = String::from_utf8_lossy(&live);
        assert!(text.lines().count() > 100, "{tag}: a storm, not {text}");
        if tag == "recjson" {
            assert!(text.contains("\"type\":\"loss\""), "{tag}: loss records");
            assert!(text.contains("\"type\":\"summary\""), "{tag}: the summary");
            assert!(
                text.contains("\"origin\":\""),
                "{tag}: RSTs judged by origin"
            );
            assert!(
                text.contains("\"pcap\":{"),
                "{tag}: the flight recorder's line"
            );
        }
        let replayed = replay(replay_args, &record);
        assert!(
            replayed.status.success(),
            "{tag}: replay failed: {}",
            String::from_utf8_lossy(&replayed.stderr)
        );
        assert!(
            replayed.stdout == live,
            "{tag}: replay differs from the live output ({} vs {} bytes); first differing line: {:?}",
            replayed.stdout.len(),
            live.len(),
            String::from_utf8_lossy(&replayed.stdout)
                .lines()
                .zip(text.lines())
                .find(|(a, b)| a != b)
        );
        // The summary on stderr is the live one too.
        assert!(String::from_utf8_lossy(&replayed.stderr).contains("events"));
    }

    // Cut short and damaged copies of the JSON run's file.
    let record = scratch.0.join("recjson.rec");
    let bytes = fs::read(&record).unwrap();
    let cut = scratch.0.join("cut.rec");
    let damaged = scratch.0.join("damaged.rec");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0xff;
    fs::write(&damaged, &flipped).unwrap();
    for (file, words) in [
        (&cut, "truncated at byte"),
        (&damaged, "corrupt at byte"),
        (&scratch.0.join("recjson.out"), "not a tcptrace record file"),
    ] {
        let out = replay(&["--json"], file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", file.display());
        assert!(out.stdout.is_empty(), "nothing printed from a bad file");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(words), "{}: {stderr}", file.display());
    }
}

/// An incident in `ns`: five connects to a port where nothing listens
/// (refused), and five connections to a listener closed with SO_LINGER
/// 0 by the client (RSTs), the listener's queue holding one unaccepted.
/// Returns how many connects were refused, and the listener with its
/// queued connection (open until the caller drops them, so that the
/// diagnosis names its holder at the end).
fn incident(ns: &Netns) -> (usize, (TcpListener, TcpStream)) {
    ns.run(|| {
        let refused = (0..5)
            .filter(|_| {
                matches!(TcpStream::connect("127.0.0.1:9"),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
            })
            .count();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        for _ in 0..5 {
            let client = TcpStream::connect(addr).unwrap();
            let (_server, _) = listener.accept().unwrap();
            tests::set_linger_zero(&client);
            drop(client);
        }
        // Waits in the accept queue while the sampler looks (500 ms).
        let queued = TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        (refused, (listener, queued))
    })
}

/// Runs `cmd` (which records to `record`) through the incident in `ns`,
/// stops it with Ctrl-C once it said `ready`, checks the file's mode, and
/// asserts that `replay` (`--json` when `json`) prints byte for byte
/// what the command printed live, once `ns` is gone. Returns that output.
fn live_equals_replay(
    cmd: &mut Command,
    ready: &str,
    ns: Netns,
    record: &Path,
    json: bool,
    tag: &str,
) -> String {
    let (mut child, stderr, mut seen) = spawn_until(cmd, ready);
    let (refused, listener) = incident(&ns);
    assert_eq!(refused, 5, "{tag}: refused connects");
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    wait_within(&mut child, Duration::from_secs(30));
    let (live, status) = collect(&mut child, &stderr, &mut seen);
    assert!(status.success(), "{tag}: {status}: {seen:?}");
    drop(listener);
    let mode = fs::metadata(record).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the record file names processes: 0600");
    // The replay needs nothing of the host it was recorded on.
    drop(ns);
    let args: &[&str] = if json { &["--json"] } else { &[] };
    let replayed = replay(args, record);
    assert!(
        replayed.status.success(),
        "{tag}: replay failed: {}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let replayed_text = String::from_utf8_lossy(&replayed.stdout);
    assert!(
        replayed.stdout == live.as_bytes(),
        "{tag}: replay differs from the live output ({} vs {} bytes); first differing line: {:?}",
        replayed.stdout.len(),
        live.len(),
        replayed_text
            .lines()
            .zip(live.lines())
            .find(|(a, b)| a != b)
    );
    live
}

#[test]
fn replay_prints_what_the_live_diagnosis_printed() {
    require_root();
    let scratch = Scratch::new();
    for (tag, json) in [("diagjson", true), ("diaghuman", false)] {
        let ns = Netns::new(tag);
        let record = scratch.0.join(format!("{tag}.rec"));
        let mut cmd = Command::new(tests::tcptrace_bin());
        cmd.args(["diagnose", "--netns", ns.name()])
            .args(json.then_some("--json"))
            .arg("--record")
            .arg(&record);
        let live = live_equals_replay(&mut cmd, "diagnosing", ns, &record, json, tag);
        let size = fs::metadata(&record).unwrap().len();
        eprintln!("{tag}: record file {size} bytes");
        if json {
            let report: serde_json::Value = serde_json::from_str(&live).unwrap();
            let causes = causes(&report);
            assert!(
                causes.contains(&"nothing_listening"),
                "the finding is there: {causes:?}"
            );
            assert!(
                report["listeners_peak"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|l| l["owner"]["pid"] == u64::from(std::process::id())),
                "the listener's holder is named: {:#}",
                report["listeners_peak"]
            );
        } else {
            assert!(live.contains("127.0.0.1:9"), "the finding is there: {live}");
        }
    }
}

/// `top --record`: every snapshot `top --json` (and `--plain`) printed
/// live, replayed byte for byte from the file after the namespace is
/// gone: the same aggregate over the same events, with the opens the
/// kernel counted and the counts each snapshot took.
#[test]
fn replay_prints_the_snapshots_live_top_printed() {
    require_root();
    let scratch = Scratch::new();
    for (tag, json) in [("topjson", true), ("topplain", false)] {
        let ns = Netns::new(tag);
        let record = scratch.0.join(format!("{tag}.rec"));
        let mut cmd = Command::new(tests::tcptrace_bin());
        cmd.args(["top", "--netns", ns.name(), "--interval", "300ms"])
            .arg(if json { "--json" } else { "--plain" })
            .arg("--record")
            .arg(&record);
        let live = live_equals_replay(&mut cmd, "Ctrl-C to stop", ns, &record, json, tag);
        if json {
            // Several snapshots, the last with what the incident made:
            // 5 refused connects, 5 resets each way, 6 opens counted in
            // the kernel.
            let snaps: Vec<serde_json::Value> = live
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert!(snaps.len() >= 3, "{tag}: {} snapshots", snaps.len());
            let last = snaps.last().unwrap();
            assert!(
                last["opens_counted_in_kernel"].as_u64() >= Some(6),
                "{tag}: {last}"
            );
            // This test process made every connection.
            let me = last["processes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["pid"] == u64::from(std::process::id()))
                .unwrap_or_else(|| panic!("{tag}: this process is ranked: {last}"));
            assert_eq!(me["connect_failed"], 5, "{tag}: {me}");
            assert_eq!(me["rst_sent"], 5, "{tag}: {me}");
            assert!(me["connects"].as_u64() >= Some(6), "{tag}: {me}");
        }
    }
}
