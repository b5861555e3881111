//! Bad input over every subcommand's flags, run on the real binary: each
//! case ends with the exit code it should (2 usage, 1 anything else),
//! exactly one line on stderr that starts with `tcptrace: ` and says what
//! is wrong, nothing on stdout, and never a panic.

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use tests::{Netns, host::ScratchDir, require_root, tcptrace_bin};

/// (arguments, exit code, words the line must contain)
type Case = (&'static [&'static str], i32, &'static str);

const USAGE: i32 = 2;
const ERROR: i32 = 1;

const CASES: &[Case] = &[
    // The command itself.
    (
        &[],
        USAGE,
        "a subcommand is needed: trace, snapshot, tune, stress, diagnose, top, exporter, replay",
    ),
    (&["nonsense"], USAGE, "unrecognized subcommand 'nonsense'"),
    (&["--bogus"], USAGE, "unexpected argument '--bogus'"),
    // trace (and the filters every tracing command shares)
    (&["trace", "--pid", "0"], USAGE, "--pid"),
    // clap reads a leading '-' as a flag: named as such, still one line.
    (&["trace", "--pid", "-1"], USAGE, "unexpected argument '-1'"),
    (&["trace", "--pid", "x"], USAGE, "invalid digit"),
    (&["trace", "--pid", "4294967296"], USAGE, "--pid"),
    (
        &["trace", "--pid"],
        USAGE,
        "a value is required for '--pid <PID>'",
    ),
    (&["trace", "--comm", ""], USAGE, "1 to 15 bytes"),
    (
        &["trace", "--comm", "sixteen-bytes-xx"],
        USAGE,
        "1 to 15 bytes",
    ),
    (&["trace", "--port", "0"], USAGE, "--port"),
    (&["trace", "--port", "65536"], USAGE, "--port"),
    (
        &["trace", "--events", "bogus"],
        USAGE,
        "[possible values: rst, retrans, connect, state, drop, error, reuse, all]",
    ),
    (&["trace", "--events", ""], USAGE, "--events"),
    (&["trace", "--reuse-idle", "0"], USAGE, "out of range"),
    (&["trace", "--reuse-idle", "500us"], USAGE, "at least 1ms"),
    (&["top", "--reuse-idle", "x"], USAGE, "--reuse-idle"),
    (&["trace", "--duration", "0"], USAGE, "out of range"),
    (
        &["trace", "--duration", "0.0000000001s"],
        USAGE,
        "at least 1ms",
    ),
    (&["trace", "--duration", "500us"], USAGE, "at least 1ms"),
    (&["trace", "--duration", "2y"], USAGE, "unknown unit 'y'"),
    (&["trace", "--duration", "400d"], USAGE, "unknown unit 'd'"),
    (&["trace", "--duration", "9000h"], USAGE, "at most a year"),
    (
        &["trace", "--duration", "-1s"],
        USAGE,
        "unexpected argument '-1'",
    ),
    (&["trace", "--duration", "NaN"], USAGE, "not a duration"),
    (&["trace", "--duration", "1e9"], USAGE, "unknown unit"),
    (
        &["trace", "--ring-kib", "3"],
        USAGE,
        "power of two from 4 KiB to 1 GiB",
    ),
    (&["trace", "--ring-kib", "1000"], USAGE, "power of two"),
    (&["trace", "--ring-kib", "2097152"], USAGE, "power of two"),
    (
        &["trace", "--ring-kib", "4294967296"],
        USAGE,
        "not a number of KiB",
    ),
    (
        &["trace", "--ring-kib", "-4"],
        USAGE,
        "unexpected argument '-4'",
    ),
    (
        &["trace", "--output", "/nonexistent-dir/x.ndjson"],
        ERROR,
        "/nonexistent-dir/x.ndjson",
    ),
    (&["trace", "--output", "/"], ERROR, "not a file name"),
    (
        &["trace", "--output", "/tmp"],
        ERROR,
        "is a directory, not a regular file",
    ),
    (
        &["trace", "--output", ""],
        USAGE,
        "a value is required for '--output",
    ),
    (
        &["trace", "--output", "/proc/self/fd/1"],
        ERROR,
        "symbolic link",
    ),
    (
        &["trace", "--record", "/proc/self/fd/1"],
        ERROR,
        "symbolic link",
    ),
    (
        &["trace", "--record", "/tmp"],
        ERROR,
        "is a directory, not a regular file",
    ),
    (
        &["trace", "--record", "/tmp/x.rec", "--output", "/tmp/x.rec"],
        ERROR,
        "--record and --output name the same file",
    ),
    // replay
    (&["replay"], USAGE, "<FILE>"),
    (
        &["replay", "/nonexistent-dir/x.rec"],
        ERROR,
        "reading /nonexistent-dir/x.rec",
    ),
    (
        &["replay", "/proc/version"],
        ERROR,
        "not a tcptrace record file",
    ),
    // snapshot
    (&["snapshot", "--watch", "0"], USAGE, "out of range"),
    (&["snapshot", "--watch", "0.1ms"], USAGE, "at least 1ms"),
    (&["snapshot", "--count", "2"], USAGE, "--watch"),
    (
        &["snapshot", "--watch", "1s", "--count", "0"],
        USAGE,
        "--count",
    ),
    (&["snapshot", "--top", "0"], USAGE, "1 to 10000"),
    (&["snapshot", "--top", "10001"], USAGE, "1 to 10000"),
    (
        &["snapshot", "--ephemeral-warn", "0"],
        USAGE,
        "--ephemeral-warn",
    ),
    (
        &["snapshot", "--ephemeral-warn", "101"],
        USAGE,
        "--ephemeral-warn",
    ),
    // tune
    (
        &["tune", "--profile", "fast"],
        USAGE,
        "[possible values: default, lb-backend",
    ),
    (
        &["tune", "--set", "net.core.somaxconn"],
        USAGE,
        "expected KEY=VALUE",
    ),
    (&["tune", "--set", "=5"], USAGE, "expected KEY=VALUE"),
    (
        &["tune", "--apply", "--revert"],
        USAGE,
        "cannot be used with",
    ),
    (&["tune", "--lb", "haproxy"], USAGE, "--idle-timeout"),
    (
        &["tune", "--lb", "f5", "--idle-timeout", "60s"],
        USAGE,
        "[possible values: haproxy, nginx]",
    ),
    (&["tune", "--idle-timeout", "500ms"], USAGE, "at least 1s"),
    (
        &["tune", "--idle-timeout", "0.0000001s"],
        USAGE,
        "at least 1s",
    ),
    (
        &["tune", "--revert", "--profile", "proxy"],
        USAGE,
        "cannot be used with",
    ),
    (
        &["tune", "--set", "kernel.core_pattern=|/bin/sh"],
        USAGE,
        "unknown key 'kernel.core_pattern'",
    ),
    (
        &["tune", "--set", "net.ipv4.tcp_fin_timeout=0"],
        USAGE,
        "out of range (1 to 3600)",
    ),
    (
        &["tune", "--set", "net.ipv4.tcp_fin_timeout=x"],
        USAGE,
        "'x' is not an integer",
    ),
    // stress client modes
    (
        &["stress"],
        USAGE,
        "needs a subcommand: churn, hold, pool, latency, serve",
    ),
    (&["stress", "churn"], USAGE, "not provided: <TARGET>"),
    (&["stress", "churn", "nonsense"], USAGE, "is not a target"),
    (&["stress", "churn", "::1:80"], USAGE, "is not a target"),
    (&["stress", "churn", "[::1:80"], USAGE, "is not a target"),
    (&["stress", "churn", "host:http"], USAGE, "is not a target"),
    (
        &["stress", "churn", "127.0.0.1:70000"],
        USAGE,
        "is not a target",
    ),
    (
        &["stress", "churn", "127.0.0.1:0"],
        USAGE,
        "port 0 cannot be connected to",
    ),
    (
        &["stress", "churn", "127.0.0.1:9", "--count", "0"],
        USAGE,
        "--count",
    ),
    (
        &["stress", "churn", "127.0.0.1:9", "--concurrency", "0"],
        USAGE,
        "--concurrency",
    ),
    (
        &["stress", "churn", "127.0.0.1:9", "--concurrency", "100001"],
        USAGE,
        "--concurrency",
    ),
    (
        &["stress", "churn", "127.0.0.1:9", "--rate", "0"],
        USAGE,
        "--rate",
    ),
    (
        &["stress", "churn", "127.0.0.1:9", "--duration", "0s"],
        USAGE,
        "out of range",
    ),
    (
        &[
            "stress",
            "churn",
            "127.0.0.1:9",
            "--connect-timeout",
            "0.1ms",
        ],
        USAGE,
        "at least 1ms",
    ),
    (
        &["stress", "churn", "127.0.0.1:9", "--parent-fd", "1"],
        USAGE,
        "--parent-fd",
    ),
    (
        &["stress", "hold", "127.0.0.1:9", "--count", "0"],
        USAGE,
        "--count",
    ),
    (
        &["stress", "hold", "127.0.0.1:9", "--count", "1000001"],
        USAGE,
        "--count",
    ),
    (
        &["stress", "hold", "127.0.0.1:9", "--hold", "0"],
        USAGE,
        "out of range",
    ),
    (
        &["stress", "pool", "127.0.0.1:9", "--connections", "0"],
        USAGE,
        "--connections",
    ),
    (
        &["stress", "pool", "127.0.0.1:9", "--requests", "0"],
        USAGE,
        "--requests",
    ),
    (
        &["stress", "pool", "127.0.0.1:9", "--idle", "8s..1s"],
        USAGE,
        "from short to long",
    ),
    (
        &["stress", "pool", "127.0.0.1:9", "--idle", "0"],
        USAGE,
        "out of range",
    ),
    (
        &["stress", "pool", "127.0.0.1:9", "--idle", "0.1us"],
        USAGE,
        "at least 1us",
    ),
    (
        &["stress", "pool", "127.0.0.1:9", "--idle", "1s.."],
        USAGE,
        "not a duration",
    ),
    (
        &["stress", "pool", "127.0.0.1:9", "--http", "health"],
        USAGE,
        "starts with /",
    ),
    (
        &["stress", "pool", "127.0.0.1:9", "--host", "x"],
        USAGE,
        "--http",
    ),
    (
        &["stress", "pool", "127.0.0.1:9", "--reply-timeout", "0"],
        USAGE,
        "out of range",
    ),
    (
        &["stress", "latency", "127.0.0.1:9", "--samples", "0"],
        USAGE,
        "--samples",
    ),
    (
        &["stress", "latency", "127.0.0.1:9", "--interval", "0"],
        USAGE,
        "out of range",
    ),
    (
        &["stress", "latency", "127.0.0.1:9", "--interval", "0.0001us"],
        USAGE,
        "at least 1us",
    ),
    // stress serve
    (&["stress", "serve"], USAGE, "not provided: <LISTEN>"),
    (
        &["stress", "serve", "localhost:80"],
        USAGE,
        "not a listen address",
    ),
    (
        &["stress", "serve", "127.0.0.1:0", "--backlog", "65536"],
        USAGE,
        "--backlog",
    ),
    (
        &["stress", "serve", "127.0.0.1:0", "--accept-delay", "0"],
        USAGE,
        "out of range",
    ),
    (
        &[
            "stress",
            "serve",
            "127.0.0.1:0",
            "--no-accept",
            "--accept-delay",
            "1s",
        ],
        USAGE,
        "cannot be used with",
    ),
    (
        &["stress", "serve", "127.0.0.1:0", "--idle-close", "0.5ms"],
        USAGE,
        "at least 1ms",
    ),
    (
        &["stress", "serve", "127.0.0.1:0", "--close-after", "0"],
        USAGE,
        "--close-after",
    ),
    (
        &["stress", "serve", "127.0.0.1:0", "--max-conns", "0"],
        USAGE,
        "--max-conns",
    ),
    (
        &["stress", "serve", "127.0.0.1:0", "--duration", "0"],
        USAGE,
        "out of range",
    ),
    // diagnose
    (
        &["diagnose", "--duration", "0.0000001s"],
        USAGE,
        "at least 1ms",
    ),
    (&["diagnose", "--ring-kib", "5"], USAGE, "power of two"),
    (
        &["diagnose", "--during", "trace --json"],
        USAGE,
        "expected a stress command",
    ),
    (
        &["diagnose", "--during", ""],
        USAGE,
        "expected a stress command",
    ),
    (
        &["diagnose", "--during", "stress"],
        USAGE,
        "needs a subcommand",
    ),
    (
        &["diagnose", "--during", "stress churn"],
        USAGE,
        "not provided: <TARGET>",
    ),
    (
        &["diagnose", "--during", "stress churn nonsense"],
        USAGE,
        "is not a target",
    ),
    (
        &["diagnose", "--during", "stress churn 127.0.0.1:9 --rate 0"],
        USAGE,
        "--rate",
    ),
    (
        &["diagnose", "--during", "stress serve 127.0.0.1:0"],
        USAGE,
        "a server is not a load",
    ),
    // top
    (
        &["top", "--interval", "0.0000000001s"],
        USAGE,
        "at least 1ms",
    ),
    (&["top", "--interval", "0"], USAGE, "out of range"),
    (&["top", "--duration", "0ms"], USAGE, "out of range"),
    (&["top", "--rows", "0"], USAGE, "--rows"),
    (&["top", "--rows", "1001"], USAGE, "--rows"),
    (&["top", "--ring-kib", "6"], USAGE, "power of two"),
];

/// Runs `tcptrace ARGS` (as `user`, if given) with a time limit.
fn run(args: &[&str], user: Option<&str>) -> Output {
    let mut cmd = match user {
        Some(uid) => {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "--",
            ])
            .arg(tcptrace_bin());
            cmd
        }
        None => Command::new(tcptrace_bin()),
    };
    let child = cmd
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tcptrace");
    let pid = child.id();
    let t0 = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            // SAFETY: kill(2) on our own child, still running.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("tcptrace {args:?} still running after {:?}", t0.elapsed());
        }
    }
}

/// Checks one case; returns a description of what went wrong, if anything.
fn check(args: &[&str], user: Option<&str>, code: i32, words: &str) -> Option<String> {
    let out = run(args, user);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut wrong = Vec::new();
    if out.status.code() != Some(code) {
        wrong.push(format!("exit {:?}, expected {code}", out.status.code()));
    }
    if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
        wrong.push("panicked".into());
    }
    if stderr.lines().count() != 1 || !stderr.starts_with("tcptrace: ") {
        wrong.push("not one `tcptrace: ` line on stderr".into());
    }
    if stderr.contains("tcptrace: tcptrace") {
        wrong.push("the program's name twice".into());
    }
    if !stderr.contains(words) {
        wrong.push(format!("does not say {words:?}"));
    }
    if !stdout.is_empty() {
        wrong.push("wrote to stdout".into());
    }
    (!wrong.is_empty()).then(|| format!("{args:?}: {}: {stderr:?}", wrong.join("; ")))
}

#[test]
fn bad_input_over_every_subcommand_exits_with_one_line_and_no_panic() {
    require_root();
    let failed: Vec<String> = CASES
        .iter()
        .filter_map(|(args, code, words)| check(args, None, *code, words))
        .collect();
    eprintln!("{} bad-input cases, {} failed", CASES.len(), failed.len());
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
}

/// Runtime errors, as the wrong user or where nothing can work: exit 1,
/// one line that says why.
#[test]
fn bad_input_at_run_time_exits_1_with_one_line() {
    require_root();
    let ns = Netns::new("badrun");
    let scratch = ScratchDir::new("badrun");
    let drop_in = scratch.path().join("90-tcptrace.conf");
    let state_dir = scratch.path().join("state");
    let nobody = Some("65534");
    let mut failed = Vec::new();
    let mut cases = 0;
    let mut case = |args: &[&str], user: Option<&str>, words: &str| {
        cases += 1;
        failed.extend(check(args, user, 1, words));
    };
    for command in [&["trace"][..], &["top", "--json"], &["diagnose"]] {
        case(command, nobody, "needs root");
    }
    let (drop_in, state_dir) = (drop_in.to_str().unwrap(), state_dir.to_str().unwrap());
    case(
        &[
            "tune",
            "--apply",
            "--file",
            drop_in,
            "--state-dir",
            state_dir,
        ],
        nobody,
        "run them as root",
    );
    case(
        &[
            "tune",
            "--revert",
            "--file",
            drop_in,
            "--state-dir",
            state_dir,
        ],
        None,
        "nothing to revert",
    );
    case(
        &[
            "tune",
            "--apply",
            "--file",
            "/nonexistent-dir/x.conf",
            "--state-dir",
            state_dir,
        ],
        None,
        "/nonexistent-dir/x.conf",
    );
    case(
        &[
            "tune",
            "--apply",
            "--file",
            drop_in,
            "--state-dir",
            "/nonexistent-dir/state",
        ],
        None,
        "/nonexistent-dir/state",
    );
    // No route from an empty namespace: the target is checked before load.
    let out = ns
        .command(tcptrace_bin())
        .args(["stress", "churn", "198.18.0.1:80", "--duration", "5s"])
        .output()
        .unwrap();
    cases += 1;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(1)
        || stderr.lines().count() != 1
        || !stderr.contains("198.18.0.1:80 is unreachable")
    {
        failed.push(format!(
            "stress to an unreachable target: {:?} {stderr:?}",
            out.status
        ));
    }
    eprintln!("{cases} run-time cases, {} failed", failed.len());
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
}
