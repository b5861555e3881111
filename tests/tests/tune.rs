//! Root integration tests of `tcptrace tune`, run under `ip netns exec` in
//! a fresh namespace (net.* sysctls are per namespace), with the drop-in
//! file in a scratch directory: the host's own values and files are never
//! touched, which the tests check too.

use std::{collections::BTreeMap, path::Path};

use tests::{
    Netns,
    host::{ScratchDir, failure, success, tcptrace_in},
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

#[test]
fn apply_then_revert_restores_every_value_exactly() {
    require_root();
    let ns = tweaked_netns("tune");
    let scratch = ScratchDir::new("tune");
    let drop_in = scratch.path().join("90-tcptrace.conf");
    let saved = scratch.path().join("90-tcptrace.conf.before");
    let drop_in_arg = drop_in.to_str().unwrap();
    let before = values_in(&ns);
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
        &ns,
        &[
            "tune",
            "--profile",
            "high-churn-client",
            "--file",
            drop_in_arg,
        ],
    ));
    assert!(
        dry.contains(&format!(
            "dry run: {changes} to change, {unchanged} already set"
        )),
        "{dry}"
    );
    assert_eq!(values_in(&ns), before, "a dry run changes nothing");
    assert!(!drop_in.exists());

    let out = success(&tcptrace_in(
        &ns,
        &[
            "tune",
            "--profile",
            "high-churn-client",
            "--file",
            drop_in_arg,
            "--apply",
        ],
    ));
    assert!(out.contains(&format!("applied {changes} changes")), "{out}");
    let expected: Vec<(String, String)> = HIGH_CHURN_CLIENT
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        file_entries(&drop_in),
        expected,
        "the drop-in holds the whole profile"
    );
    let now = values_in(&ns);
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
    ns.exec("sysctl", &["-p", drop_in_arg]);
    assert_eq!(values_in(&ns), now);

    let out = success(&tcptrace_in(
        &ns,
        &["tune", "--revert", "--file", drop_in_arg],
    ));
    assert!(
        out.starts_with(&format!("restored {} values", expected.len())),
        "{out}"
    );
    assert_eq!(values_in(&ns), before, "every value as before");
    assert!(!drop_in.exists() && !saved.exists(), "both files removed");

    let error = failure(&tcptrace_in(
        &ns,
        &["tune", "--revert", "--file", drop_in_arg],
    ));
    assert!(error.contains("nothing to revert"), "{error}");
}

#[test]
fn bad_values_keys_and_absent_keys_apply_nothing() {
    require_root();
    let ns = tweaked_netns("tunebad");
    let scratch = ScratchDir::new("tunebad");
    let drop_in = scratch.path().join("90-tcptrace.conf");
    let drop_in_arg = drop_in.to_str().unwrap();
    let before = values_in(&ns);
    let apply_with = |set: &str| {
        let args = [
            "tune",
            "--profile",
            "high-churn-client",
            "--file",
            drop_in_arg,
            "--set",
            set,
            "--apply",
        ];
        let error = failure(&tcptrace_in(&ns, &args));
        assert_eq!(values_in(&ns), before, "nothing applied after: {error}");
        assert_eq!(
            std::fs::read_dir(scratch.path()).unwrap().count(),
            0,
            "no file after: {error}"
        );
        error
    };

    // Refused by tune before anything is written.
    assert_eq!(
        apply_with("net.ipv4.tcp_fin_timeout=0"),
        "tcptrace: net.ipv4.tcp_fin_timeout = 0: out of range (1 to 3600)"
    );
    assert_eq!(
        apply_with("net.ipv4.tcp_fin_timeout=soon"),
        "tcptrace: net.ipv4.tcp_fin_timeout = soon: 'soon' is not an integer"
    );
    assert!(apply_with("net.ipv4.tcp_nonsense=1").contains("unknown key 'net.ipv4.tcp_nonsense'"));
    // Host-wide: it does not exist inside a namespace.
    assert_eq!(
        apply_with("net.core.netdev_max_backlog=5000"),
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
    let error = apply_with("net.ipv4.ip_local_port_range=500 60000");
    assert!(
        error.starts_with("tcptrace: the kernel refused net.ipv4.ip_local_port_range = 500 60000"),
        "{error}"
    );
    let rolled_back = format!("nothing was applied ({written_before} earlier writes rolled back)");
    assert!(error.ends_with(&rolled_back), "{error}");
}
