//! Root integration tests of `tcptrace tune`, run under `ip netns exec` in
//! a fresh namespace (net.* sysctls are per namespace), with the drop-in
//! file in a scratch directory: the host's own values and files are never
//! touched, which the tests check too.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
};

use tests::{
    Netns,
    host::{ScratchDir, failure, success, tcptrace_in, tune_state_file},
    require_root,
};

/// What `--profile high-churn-client` writes in a child namespace, where
/// netdev_max_backlog does not exist and nf_conntrack_max (if loaded) is
/// read-only.
const HIGH_CHURN_CLIENT: &[(&str, &str)] = &[
    ("net.ipv4.tcp_keepalive_time", "300"),
    ("net.ipv4.tcp_keepalive_intvl", "30"),
    ("net.ipv4.tcp_keepalive_probes", "5"),
    ("net.core.somaxconn", "4096"),
    ("net.ipv4.tcp_max_syn_backlog", "4096"),
    ("net.ipv4.tcp_abort_on_overflow", "0"),
    ("net.ipv4.ip_local_port_range", "10240 65535"),
    ("net.ipv4.tcp_tw_reuse", "1"),
    ("net.ipv4.tcp_fin_timeout", "15"),
    ("net.ipv4.tcp_retries2", "8"),
    ("net.ipv4.tcp_syn_retries", "3"),
];

/// Every per-namespace key tune manages, as `sysctl -n` reads them there.
fn values_in(ns: &Netns) -> BTreeMap<String, String> {
    HIGH_CHURN_CLIENT
        .iter()
        .map(|(key, _)| (key.to_string(), normalize(&ns.exec("sysctl", &["-n", key]))))
        .chain(
            [
                "net.ipv4.tcp_rmem",
                "net.ipv4.tcp_wmem",
                "net.ipv4.tcp_congestion_control",
            ]
            .map(|key| (key.to_string(), normalize(&ns.exec("sysctl", &["-n", key])))),
        )
        .collect()
}

/// The same keys in the host's own namespace.
fn host_values() -> BTreeMap<String, String> {
    HIGH_CHURN_CLIENT
        .iter()
        .map(|(key, _)| {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            (
                key.to_string(),
                normalize(&std::fs::read_to_string(path).unwrap()),
            )
        })
        .collect()
}

fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A namespace whose values differ from the kernel defaults, so that
/// "restored" cannot be confused with "reset to defaults".
fn tweaked_netns(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.sysctl("net.ipv4.tcp_fin_timeout", "45");
    ns.sysctl("net.ipv4.tcp_keepalive_time", "1234");
    ns.sysctl("net.ipv4.ip_local_port_range", "20000 50001");
    ns
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every file below `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn file_entries(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (key, value) = line
                .split_once(" = ")
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            (key.to_string(), value.to_string())
        })
        .collect()
}

/// A tweaked namespace, and tune's drop-in and state directory in a
/// scratch directory of the test's own (removed on drop, with the
/// namespace): where every tune test starts.
struct Tuned {
    ns: Netns,
    scratch: ScratchDir,
    drop_in: PathBuf,
    state_dir: PathBuf,
    /// Every managed value before the test changed anything.
    before: BTreeMap<String, String>,
}

impl Tuned {
    fn new(tag: &str) -> Tuned {
        let ns = tweaked_netns(tag);
        let scratch = ScratchDir::new(tag);
        let drop_in = scratch.path().join("90-tcptrace.conf");
        let state_dir = scratch.path().join("state");
        let before = values_in(&ns);
        Tuned {
            ns,
            scratch,
            drop_in,
            state_dir,
            before,
        }
    }

    fn drop_in_arg(&self) -> &str {
        self.drop_in.to_str().unwrap()
    }

    /// `tune ARGS --file DROP_IN --state-dir STATE_DIR`, as arguments.
    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["tune"];
        all.extend_from_slice(args);
        all.extend([
            "--file",
            self.drop_in_arg(),
            "--state-dir",
            self.state_dir.to_str().unwrap(),
        ]);
        all
    }

    /// Runs `tcptrace tune ARGS` with the test's files in the namespace.
    fn tune(&self, args: &[&str]) -> Output {
        tcptrace_in(&self.ns, &self.args(args))
    }

    /// The same as a `Command`, to start in the background.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.ns.command(tests::tcptrace_bin());
        cmd.args(self.args(args));
        cmd
    }

    /// `--revert`, which must succeed; its output.
    fn revert(&self) -> String {
        success(&self.tune(&["--revert"]))
    }

    fn values(&self) -> BTreeMap<String, String> {
        values_in(&self.ns)
    }
}

#[test]
fn apply_then_revert_restores_every_value_exactly() {
    require_root();
    let tuned = Tuned::new("tune");
    let (drop_in, state_dir, before) = (&tuned.drop_in, &tuned.state_dir, &tuned.before);
    let host_before = host_values();
    let changes = HIGH_CHURN_CLIENT
        .iter()
        .filter(|(key, value)| before[*key] != *value)
        .count();
    let unchanged = HIGH_CHURN_CLIENT.len() - changes;
    assert!(
        changes >= 8,
        "the tweaked namespace differs from the profile in most keys"
    );

    let dry = success(&tcptrace_in(
        &tuned.ns,
        &[
            "tune",
            "--profile",
            "high-churn-client",
            "--file",
            tuned.drop_in_arg(),
        ],
    ));
    assert!(
        dry.contains(&format!(
            "dry run: {changes} to change, {unchanged} already set"
        )),
        "{dry}"
    );
    assert_eq!(&tuned.values(), before, "a dry run changes nothing");
    assert!(!drop_in.exists());

    let out = success(&tuned.tune(&["--profile", "high-churn-client", "--apply"]));
    assert!(out.contains(&format!("applied {changes} changes")), "{out}");
    let saved = tune_state_file(&out);
    assert_eq!(saved.parent(), Some(state_dir.as_path()), "{out}");
    assert_eq!(mode(drop_in), 0o600);
    assert_eq!(mode(&saved), 0o600);
    assert_eq!(mode(state_dir), 0o700);
    let expected: Vec<(String, String)> = HIGH_CHURN_CLIENT
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        file_entries(drop_in),
        expected,
        "the drop-in holds the whole profile"
    );
    let now = tuned.values();
    for (key, value) in &expected {
        assert_eq!(&now[key], value, "{key} applied");
    }
    assert_eq!(file_entries(&saved).len(), expected.len());
    assert_eq!(
        host_values(),
        host_before,
        "the host's own values are untouched"
    );

    // sysctl itself reads the file, and it sets what is already set.
    tuned.ns.exec("sysctl", &["-p", tuned.drop_in_arg()]);
    assert_eq!(tuned.values(), now);

    let out = tuned.revert();
    assert!(
        out.starts_with(&format!("restored {} values", expected.len())),
        "{out}"
    );
    assert_eq!(&tuned.values(), before, "every value as before");
    assert!(!drop_in.exists() && !saved.exists(), "both files removed");

    let error = failure(&tuned.tune(&["--revert"]));
    assert!(error.contains("nothing to revert"), "{error}");
}

#[test]
fn bad_values_keys_and_absent_keys_apply_nothing() {
    require_root();
    let tuned = Tuned::new("tunebad");
    let before = &tuned.before;
    // Exit 2 for what the command line alone gets wrong, 1 for what
    // this kernel refuses.
    let apply_with = |set: &str, code: i32| {
        let args = ["--profile", "high-churn-client", "--set", set, "--apply"];
        let error = tests::host::failure_with(&tuned.tune(&args), code);
        assert_eq!(&tuned.values(), before, "nothing applied after: {error}");
        assert_eq!(
            files_under(tuned.scratch.path()),
            vec![tuned.state_dir.join("tune.lock")],
            "no file but the lock after: {error}"
        );
        error
    };

    // Refused by tune before anything is written.
    assert_eq!(
        apply_with("net.ipv4.tcp_fin_timeout=0", 2),
        "tcptrace: net.ipv4.tcp_fin_timeout = 0: out of range (1 to 3600)"
    );
    assert_eq!(
        apply_with("net.ipv4.tcp_fin_timeout=soon", 2),
        "tcptrace: net.ipv4.tcp_fin_timeout = soon: 'soon' is not an integer"
    );
    assert!(
        apply_with("net.ipv4.tcp_nonsense=1", 2).contains("unknown key 'net.ipv4.tcp_nonsense'")
    );
    // Host-wide: it does not exist inside a namespace.
    assert_eq!(
        apply_with("net.core.netdev_max_backlog=5000", 1),
        "tcptrace: net.core.netdev_max_backlog does not exist on this kernel (or in this network namespace)"
    );

    // Refused by the kernel half-way (a range starting under
    // ip_unprivileged_port_start): the keys written before it are rolled
    // back.
    let written_before = HIGH_CHURN_CLIENT
        .iter()
        .take_while(|(key, _)| *key != "net.ipv4.ip_local_port_range")
        .filter(|(key, value)| before[*key] != *value)
        .count();
    assert!(
        written_before >= 3,
        "keepalive time, interval and probes come first"
    );
    let error = apply_with("net.ipv4.ip_local_port_range=500 60000", 1);
    assert!(
        error.starts_with("tcptrace: the kernel refused net.ipv4.ip_local_port_range = 500 60000"),
        "{error}"
    );
    let rolled_back = format!("nothing was applied ({written_before} earlier writes rolled back)");
    assert!(error.ends_with(&rolled_back), "{error}");
}

/// An exclusive flock on `path`, as a running `tune --apply` holds it.
fn hold_lock(path: &Path) -> std::fs::File {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .unwrap();
    // SAFETY: flock(2) on an open file.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
    file
}

/// Two `--apply` of different profiles at once, the second started
/// later: the second must not save the first one's values as the
/// originals, so one `--revert` returns every value to what it was.
#[test]
fn tune_concurrent_applies_keep_the_originals() {
    require_root();
    let tuned = Tuned::new("tunelock");
    let (state_dir, before) = (&tuned.state_dir, &tuned.before);
    let spawn = |profile: &str| {
        tuned
            .command(&["--profile", profile, "--apply"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait = |child: Child| success(&child.wait_with_output().unwrap());

    // First with the lock held by someone else (as a run in progress
    // holds it): both wait for it instead of going ahead.
    std::fs::create_dir_all(state_dir).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let gate = hold_lock(&state_dir.join("tune.lock"));
    let mut first = spawn("high-churn-client");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mut second = spawn("proxy");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        first.try_wait().unwrap().is_none() && second.try_wait().unwrap().is_none(),
        "both wait for the lock"
    );
    assert_eq!(
        &tuned.values(),
        before,
        "nothing applied while the lock is held"
    );
    drop(gate);
    wait(first);
    wait(second);
    assert_ne!(&tuned.values(), before);
    tuned.revert();
    assert_eq!(
        &tuned.values(),
        before,
        "the originals, not the first run's values"
    );

    // Then started together, no gate, a few times.
    for round in 0..3 {
        let first = spawn("high-churn-client");
        let second = spawn(if round % 2 == 0 {
            "proxy"
        } else {
            "lb-backend"
        });
        wait(first);
        wait(second);
        tuned.revert();
        assert_eq!(&tuned.values(), before, "round {round}");
    }

    // A lock held for longer than tune waits: refused, nothing written.
    let gate = hold_lock(&state_dir.join("tune.lock"));
    let t0 = std::time::Instant::now();
    let error = failure(&tuned.tune(&["--profile", "proxy", "--apply"]));
    assert!(
        error.contains("another tcptrace run has held this lock for"),
        "{error}"
    );
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(8),
        "bounded wait"
    );
    drop(gate);
    assert_eq!(&tuned.values(), before);
    assert!(!tuned.drop_in.exists());
}

/// SIGKILL at any point of an `--apply`: the next run removes the
/// temporary files left behind, and `--revert` still finds the originals.
#[test]
fn tune_killed_applies_leave_no_temp_files() {
    require_root();
    let tuned = Tuned::new("tunekill");
    let apply_proxy = ["--profile", "proxy", "--apply"];
    let out = success(&tuned.tune(&apply_proxy));
    let saved = tune_state_file(&out);
    tuned.revert();

    // What a SIGKILL between create and rename leaves, from a pid that is
    // gone now.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let temp_of = |path: &Path| {
        path.with_file_name(format!(
            ".{}.tmp{dead}",
            path.file_name().unwrap().to_str().unwrap()
        ))
    };
    for path in [&tuned.drop_in, &saved] {
        std::fs::write(temp_of(path), "half a file").unwrap();
    }
    // And real kills at various points of a run.
    for delay_ms in [0, 2, 4, 6, 8, 10, 15, 20, 30, 40] {
        let mut child = tuned
            .command(&["--profile", "high-churn-client", "--apply"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
    }
    success(&tuned.tune(&apply_proxy));
    let temps: Vec<PathBuf> = files_under(tuned.scratch.path())
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_str().unwrap().contains(".tmp"))
        .collect();
    assert_eq!(temps, Vec::<PathBuf>::new(), "temporary files left");
    tuned.revert();
    assert_eq!(tuned.values(), tuned.before, "the originals after kills");
}
