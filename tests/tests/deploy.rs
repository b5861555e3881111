//! deploy/ checked against what it deploys: the manifests against
//! Kubernetes' schemas (kubernetes-validate, strict), the alert rules
//! with promtool, the Grafana dashboard's structure, and every metric
//! the dashboard and the rules name against a real scrape, every flag
//! the DaemonSet passes against the real binary.

use std::{collections::BTreeSet, path::Path, process::Command};

use serde_json::Value;
use tests::{
    exporter::{Exporter, alert_rules, deploy_venv, workspace},
    require_root, tcptrace_bin,
};

fn read(path: &str) -> String {
    let path = workspace().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every resource of deploy/kubernetes.yaml passes kubernetes-validate
/// in strict mode (unknown fields are errors); the PrometheusRule is a
/// CRD the validator has no schema for, so promtool checks its rules.
#[test]
fn deploy_manifests_validate_against_the_kubernetes_schemas() {
    let validator = deploy_venv().join("bin/kubernetes-validate");
    let manifests = workspace().join("deploy/kubernetes.yaml");
    let out = Command::new(&validator)
        .arg("--strict")
        .arg(&manifests)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", validator.display()));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let passed: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("INFO") && l.contains(" passed for resource "))
        .filter_map(|l| {
            l.split(" passed for resource ")
                .nth(1)?
                .split_whitespace()
                .next()
        })
        .collect();
    assert_eq!(
        passed,
        BTreeSet::from([
            "daemonset/tcptrace",
            "namespace/tcptrace",
            "service/tcptrace",
            "serviceaccount/tcptrace"
        ]),
        "{text}"
    );
    assert!(!text.contains("ERROR") && !text.contains("WARN"), "{text}");

    // A mistake the validator must catch: a field the schema lacks.
    let broken = std::env::temp_dir().join(format!("tcptrace-broken-{}.yaml", std::process::id()));
    std::fs::write(
        &broken,
        read("deploy/kubernetes.yaml").replace("hostPID: true", "hostPid: true"),
    )
    .unwrap();
    let out = Command::new(&validator)
        .arg("--strict")
        .arg(&broken)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&broken);
    assert!(!out.status.success(), "a misspelt field passed");
}

/// The PrometheusRule's spec is a valid Prometheus rules file.
#[test]
fn deploy_alert_rules_pass_promtool() {
    let rules = alert_rules("1m");
    let file = std::env::temp_dir().join(format!("tcptrace-rules-{}.yaml", std::process::id()));
    std::fs::write(&file, &rules).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (apt-get install prometheus)");
    let _ = std::fs::remove_file(&file);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{rules}");
    assert!(text.contains("SUCCESS: 5 rules found"), "{text}");
}

/// The dashboard has the structure Grafana imports: a title and uid,
/// panels with unique ids inside the 24-column grid, each on the
/// `$datasource` variable with queries; every variable it uses defined.
#[test]
fn deploy_dashboard_has_grafanas_structure() {
    let dash: Value = serde_json::from_str(&read("deploy/grafana-dashboard.json")).expect("JSON");
    for key in [
        "title",
        "uid",
        "schemaVersion",
        "panels",
        "templating",
        "time",
    ] {
        assert!(!dash[key].is_null(), "no {key}");
    }
    let variables: BTreeSet<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    let datasource = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["query"], "prometheus");
    let mut ids = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().expect("a title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "{title}: id twice"
        );
        assert!(
            ["timeseries", "table", "stat", "heatmap"].contains(&panel["type"].as_str().unwrap())
        );
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && grid["h"].as_u64().unwrap() > 0,
            "{title}: {grid}"
        );
        assert_eq!(
            panel["datasource"]["uid"],
            format!("${{{}}}", datasource["name"].as_str().unwrap())
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            assert!(expr.contains("tcptrace_"), "{title}: {expr}");
            for used in variables_in(expr) {
                assert!(
                    used.starts_with("__") || variables.contains(used.as_str()),
                    "{title}: ${used} is not defined"
                );
            }
        }
    }
    assert!(ids.len() >= 10, "{} panels", ids.len());
}

/// `$name` and `${name}` in a query.
fn variables_in(expr: &str) -> Vec<String> {
    expr.split('$')
        .skip(1)
        .map(|rest| {
            rest.trim_start_matches('{')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// `tcptrace_...` names in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.match_indices("tcptrace_")
        .filter(|(at, _)| *at == 0 || !text.as_bytes()[at - 1].is_ascii_alphanumeric())
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// Every metric the dashboard and the alert rules query is one the
/// exporter serves, and every flag the DaemonSet passes is one it takes:
/// the DaemonSet's own command line runs.
#[test]
fn deploy_names_only_what_the_exporter_has() {
    require_root();
    let exporter = Exporter::start(&["--comm", "nothing-matches", "--interval", "1s"]);
    let text = exporter.scrape();
    let mut served = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut words = line.split_whitespace().skip(2);
        let (name, kind) = (words.next().unwrap(), words.next().unwrap());
        match kind {
            "counter" => served.insert(format!("{name}_total")),
            "histogram" => {
                for suffix in ["bucket", "sum", "count"] {
                    served.insert(format!("{name}_{suffix}"));
                }
                true
            }
            _ => served.insert(name.to_string()),
        };
    }
    for file in [
        "deploy/grafana-dashboard.json",
        "deploy/prometheus-rules.yaml",
        "docs/exporter.md",
    ] {
        let unknown: Vec<String> = metric_names(&read(file))
            .into_iter()
            .filter(|name| !served.contains(name) && !served.contains(&format!("{name}_total")))
            .filter(|name| !served.iter().any(|s| s.starts_with(&format!("{name}_"))))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} names {unknown:?}, not served:\n{text}"
        );
    }
    drop(exporter);

    // The DaemonSet's arguments, as the kubelet passes them.
    let manifest = read("deploy/kubernetes.yaml");
    let args: Vec<String> = manifest
        .lines()
        .skip_while(|l| l.trim() != "args:")
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("- "))
        .map(|l| l.trim_start().trim_start_matches("- ").to_string())
        .collect();
    assert_eq!(
        args.first().map(String::as_str),
        Some("exporter"),
        "{args:?}"
    );
    let pods = std::env::temp_dir().join(format!("tcptrace-deploy-pods-{}", std::process::id()));
    std::fs::create_dir_all(&pods).unwrap();
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("$(NODE_IP):9469", "127.0.0.1:0")
                .replace("/var/log/pods", pods.to_str().unwrap())
        })
        .collect();
    let out = Command::new(tcptrace_bin())
        .args(&args)
        .args(["--duration", "1s", "--comm", "nothing-matches"])
        .output()
        .expect("run tcptrace");
    let _ = std::fs::remove_dir_all(&pods);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Dockerfile: two stages, the build as an unprivileged user, the
/// runtime stage without a shell, the exporter as its command. (No
/// docker here to build it: this is what can be checked without.)
#[test]
fn deploy_dockerfile_builds_unprivileged_into_a_small_image() {
    let text = read("deploy/Dockerfile");
    let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[0].ends_with(" AS build"), "{stages:?}");
    assert!(stages[1].contains("distroless"), "{stages:?}");
    let build = &text[..text.find(stages[1]).unwrap()];
    let user = build.find("\nUSER build").expect("a build user");
    let cargo = build
        .find("cargo build --release --locked")
        .expect("the build");
    assert!(user < cargo, "the build runs as the unprivileged user");
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/tcptrace\"]"));
    assert!(Path::new(&workspace().join(".dockerignore")).exists());
    assert!(read(".dockerignore").lines().any(|l| l.trim() == "target"));
}
