//! What an unprivileged local user can plant for root to trip over: a
//! symbolic link, a link to a directory, a file of their own, a FIFO, or a
//! `tune` state file listing keys to write as root. The user is real
//! (`setpriv --reuid=65534`, nobody), the shared directory is sticky and
//! world-writable like /tmp, and each case checks that root's run refuses
//! with one line and exit 1 and that nothing was written through it.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use tests::{
    Netns,
    host::{ScratchDir, failure, success, tcptrace, tcptrace_in, tune_state_file},
    require_root, tcptrace_bin,
};

const NOBODY: u32 = 65534;

/// Runs a command as nobody (uid and gid 65534, no supplementary groups).
fn as_nobody(program: &str, args: &[&str]) -> Output {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(program)
        .args(args)
        .output()
        .expect("run setpriv");
    assert!(
        out.status.success(),
        "as nobody: {program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A scratch directory anyone can write to, sticky, as /tmp is.
fn shared_dir(tag: &str) -> ScratchDir {
    let dir = ScratchDir::new(tag);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A file of root's that nobody wants overwritten.
fn root_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, "root's own\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// snapshot without root: it prints what it can, and says once that
/// the owners of other users' sockets need root.
#[test]
fn unprivileged_snapshot_says_owners_need_root_once() {
    require_root();
    let bin = tcptrace_bin();
    let out = as_nobody(s(&bin), &["snapshot", "--watch", "200ms", "--count", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("TCP sockets:"), "{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, once: {stderr}");
    assert!(
        lines[0].starts_with("tcptrace: warning: ") && lines[0].contains("need root"),
        "{stderr}"
    );
}

/// trace --output into a shared directory: every kind of plant is refused
/// before anything is traced, and the target is untouched.
#[test]
fn unprivileged_plants_under_trace_output_are_refused() {
    require_root();
    let shared = shared_dir("unpriv-out");
    let private = ScratchDir::new("unpriv-root");
    let victim = root_file(private.path(), "victim");
    let trace_to = |path: &Path| {
        let out = tcptrace(&["trace", "--output", s(path), "--duration", "1s"]);
        let error = failure(&out);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's own\n");
        assert_eq!(mode(&victim), 0o644);
        error
    };

    // A link to root's file.
    let link = shared.path().join("x.ndjson");
    as_nobody("ln", &["-s", s(&victim), s(&link)]);
    assert!(trace_to(&link).contains("is a symbolic link"));
    // A dangling link: creating through it would create root's file.
    let dangling = shared.path().join("new.ndjson");
    let target = private.path().join("created-through-a-link");
    as_nobody("ln", &["-s", s(&target), s(&dangling)]);
    assert!(trace_to(&dangling).contains("is a symbolic link"));
    assert!(!target.exists());
    // A link to root's directory, with root's file name after it.
    let dir_link = shared.path().join("d");
    as_nobody("ln", &["-s", s(private.path()), s(&dir_link)]);
    let error = trace_to(&dir_link.join("victim"));
    assert!(
        error.contains("a symbolic link owned by uid 65534"),
        "{error}"
    );
    // nobody's own file: theirs to read, so not for pids and peers.
    let theirs = shared.path().join("theirs.ndjson");
    as_nobody("sh", &["-c", &format!("echo mine > {}", s(&theirs))]);
    assert!(trace_to(&theirs).contains("owned by uid 65534"));
    assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "mine\n");
    // A FIFO: refused at once, no hang waiting for a reader.
    let fifo = shared.path().join("fifo.ndjson");
    as_nobody("mkfifo", &[s(&fifo)]);
    let t0 = std::time::Instant::now();
    assert!(trace_to(&fifo).contains("is a FIFO"));
    assert!(t0.elapsed() < Duration::from_secs(5));
    // A second name of root's file.
    let hard = shared.path().join("hard.ndjson");
    std::fs::hard_link(&victim, &hard).unwrap();
    assert!(trace_to(&hard).contains("2 hard links"));
}

/// `diagnose --report` into a shared directory: a plant is refused before
/// the watch starts (not after a long run, with the page lost), and the
/// target is untouched.
#[test]
fn unprivileged_plants_under_diagnose_report_are_refused_at_once() {
    require_root();
    let shared = shared_dir("unpriv-report");
    let private = ScratchDir::new("unpriv-report-root");
    let victim = root_file(private.path(), "victim");
    let report_to = |path: &Path| {
        let t0 = std::time::Instant::now();
        let out = tcptrace(&["diagnose", "--report", s(path), "--duration", "60s"]);
        let error = failure(&out);
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's own\n");
        error
    };
    let link = shared.path().join("x.html");
    as_nobody("ln", &["-s", s(&victim), s(&link)]);
    let error = report_to(&link);
    assert!(error.contains("is a symbolic link"), "{error}");
    assert_eq!(error.matches(s(&link)).count(), 1, "{error}");
    let theirs = shared.path().join("theirs.html");
    as_nobody("sh", &["-c", &format!("echo mine > {}", s(&theirs))]);
    assert!(report_to(&theirs).contains("owned by uid 65534"));
    assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "mine\n");
}

/// `tune --apply` and `--revert` with a drop-in or state files someone
/// else planted: refused, no kernel value and no file written.
#[test]
fn unprivileged_plants_under_tune_are_refused() {
    require_root();
    let ns = Netns::new("unpriv-tune");
    ns.sysctl("net.ipv4.tcp_fin_timeout", "45");
    let shared = shared_dir("unpriv-tune");
    let private = ScratchDir::new("unpriv-tune-root");
    let victim = root_file(private.path(), "victim");
    let drop_in = shared.path().join("90-tcptrace.conf");
    let value = |key: &str| ns.exec("sysctl", &["-n", key]).trim().to_string();
    let fin_before = value("net.ipv4.tcp_fin_timeout");
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let tune = |args: &[&str], state_dir: &Path| {
        let mut all = vec!["tune", "--file", s(&drop_in), "--state-dir", s(state_dir)];
        all.extend_from_slice(args);
        tcptrace_in(&ns, &all)
    };
    let refused = |args: &[&str], state_dir: &Path| {
        let error = failure(&tune(args, state_dir));
        assert_eq!(value("net.ipv4.tcp_fin_timeout"), fin_before, "{error}");
        assert_eq!(
            std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
            core_pattern
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's own\n");
        error
    };
    let apply = ["--profile", "high-churn-client", "--apply"];

    // The state directory is shared: only the files in it can be planted.
    let state_dir = shared.path();
    // Learn the state file's name from a real run, then undo it.
    let out = success(&tune(&apply, state_dir));
    let saved = tune_state_file(&out);
    assert_eq!(std::fs::metadata(&saved).unwrap().uid(), 0);
    success(&tune(&["--revert"], state_dir));
    assert_eq!(value("net.ipv4.tcp_fin_timeout"), fin_before);
    assert!(!saved.exists() && !drop_in.exists());

    // nobody's state file, with the marker and a key that would run a
    // program as root on the next crash.
    let planted = format!(
        "# Written by tcptrace tune.\nnet.ipv4.tcp_fin_timeout = 7\nkernel.core_pattern = |{} %p\n",
        s(&victim)
    );
    as_nobody(
        "sh",
        &[
            "-c",
            &format!("printf '%s' \"$0\" > {}", s(&saved)),
            &planted,
        ],
    );
    assert_eq!(std::fs::metadata(&saved).unwrap().uid(), NOBODY);
    let error = refused(&["--revert"], state_dir);
    assert!(error.contains("owned by uid 65534"), "{error}");
    let error = refused(&apply, state_dir);
    assert!(error.contains("owned by uid 65534"), "{error}");
    assert!(!drop_in.exists());
    std::fs::remove_file(&saved).unwrap();

    // A link to a state file of root's.
    let elsewhere = private.path().join("saved");
    std::fs::write(
        &elsewhere,
        "# Written by tcptrace tune.\nnet.ipv4.tcp_fin_timeout = 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600)).unwrap();
    as_nobody("ln", &["-s", s(&elsewhere), s(&saved)]);
    let error = refused(&["--revert"], state_dir);
    assert!(error.contains("is a symbolic link"), "{error}");
    std::fs::remove_file(&saved).unwrap();

    // root's, but anyone could have written it.
    std::fs::write(&saved, &planted).unwrap();
    std::fs::set_permissions(&saved, std::fs::Permissions::from_mode(0o666)).unwrap();
    let error = refused(&["--revert"], state_dir);
    assert!(error.contains("group or others can write to it"), "{error}");
    // root's and private, but with a key tune does not manage.
    std::fs::set_permissions(&saved, std::fs::Permissions::from_mode(0o600)).unwrap();
    let error = refused(&["--revert"], state_dir);
    assert!(
        error.contains("kernel.core_pattern is not a key tune manages"),
        "{error}"
    );
    std::fs::remove_file(&saved).unwrap();

    // A state directory of nobody's.
    let theirs = shared.path().join("theirs");
    as_nobody("mkdir", &["-m", "0700", s(&theirs)]);
    let error = refused(&apply, &theirs);
    assert!(error.contains("owned by uid 65534"), "{error}");

    // A drop-in planted as a link to root's file, or as nobody's own file
    // that says it was written by tune.
    let private_state = private.path().join("state");
    as_nobody("ln", &["-s", s(&victim), s(&drop_in)]);
    let error = refused(&apply, &private_state);
    assert!(error.contains("is a symbolic link"), "{error}");
    std::fs::remove_file(&drop_in).unwrap();
    as_nobody(
        "sh",
        &[
            "-c",
            &format!("echo '# Written by tcptrace tune.' > {}", s(&drop_in)),
        ],
    );
    let error = refused(&apply, &private_state);
    assert!(error.contains("owned by uid 65534"), "{error}");
    let leftovers: Vec<_> = std::fs::read_dir(&private_state)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != "tune.lock")
        .collect();
    assert!(leftovers.is_empty(), "nothing saved: {leftovers:?}");
}

/// Files holding pids, commands and peers are 0600 even under umask 000,
/// and tune's state directory 0700.
#[test]
fn unprivileged_users_cannot_read_outputs_at_umask_000() {
    require_root();
    let ns = Netns::new("umask");
    let dir = shared_dir("umask");
    let output = dir.path().join("events.ndjson");
    let drop_in = dir.path().join("90-tcptrace.conf");
    let state_dir = dir.path().join("state");
    let trace_to_output = [
        "trace",
        "--json",
        "--output",
        s(&output),
        "--duration",
        "1s",
    ];
    let with_umask_000 = |args: &[&str]| {
        let out = ns
            .command("sh")
            .args(["-c", "umask 000; exec \"$0\" \"$@\""])
            .arg(tcptrace_bin())
            .args(args)
            .output()
            .unwrap();
        success(&out)
    };
    with_umask_000(&trace_to_output);
    assert_eq!(mode(&output), 0o600);
    // An existing file of root's with a looser mode is tightened.
    std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o644)).unwrap();
    with_umask_000(&trace_to_output);
    assert_eq!(mode(&output), 0o600);
    let read = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(&output)
        .output()
        .unwrap();
    assert!(!read.status.success(), "nobody cannot read the events");

    let files = ["--file", s(&drop_in), "--state-dir", s(&state_dir)];
    let out = with_umask_000(&[&["tune", "--profile", "proxy", "--apply"][..], &files].concat());
    let saved = state_dir.join(tune_state_file(&out).file_name().unwrap());
    assert_eq!(mode(&drop_in), 0o600);
    assert_eq!(mode(&saved), 0o600);
    assert_eq!(mode(&state_dir.join("tune.lock")), 0o600);
    assert_eq!(mode(&state_dir), 0o700);
    with_umask_000(&[&["tune", "--revert"][..], &files].concat());
}
