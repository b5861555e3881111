//! `tcptrace exporter` for real: a real Prometheus (Debian's package)
//! scrapes it every second while a storm runs in a namespace, and during
//! the nginx keep-alive scenario; pods named from cgroups the test makes
//! and a fake kubelet log tree; bad input (a port in use, an unreadable
//! pods directory, a scrape during shutdown).

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    Netns, Trace,
    exporter::{Exporter, Prometheus, alert_rules, get, sum_of},
    host::ScratchDir,
    nginx::Nginx,
    require_root,
    server::Sink,
    tcptrace_bin,
};

fn me() -> u32 {
    std::process::id()
}

/// A reset storm (`stress churn --rst`, every close an RST) in a
/// namespace, watched by `trace` and by the exporter scraped by a real
/// Prometheus: the reset counter Prometheus holds rose by exactly what
/// `trace` counted, and nothing was lost on either side.
#[test]
fn exporter_counts_a_reset_storm_exactly_for_prometheus() {
    require_root();
    let t0 = Instant::now();
    let ns = Netns::new("expstorm");
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").expect("bind"));
    let server = listener.local_addr().unwrap();
    let sink = Sink::spawn(listener);
    // The namespace has only loopback: no TC programs (no origin needed here).
    let trace = Trace::start(&["--netns", ns.name(), "--events", "rst", "--no-tc"]);
    let exporter = Exporter::start(&["--netns", ns.name(), "--interval", "1s", "--window", "30s"]);
    let prometheus = Prometheus::start(&[exporter.addr], None);
    let resets = "sum(tcptrace_resets_total)";
    prometheus.wait_for(Duration::from_secs(15), "first scrape", |p| {
        p.scalar("up{job=\"tcptrace\"}").filter(|up| *up == 1.0)
    });
    let before = prometheus.scalar(resets).unwrap_or(0.0);

    let churn = ns
        .command(tcptrace_bin())
        .args([
            "stress",
            "churn",
            &server.to_string(),
            "--rst",
            "--count",
            "3000",
        ])
        .args(["--concurrency", "16", "--duration", "10s", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run stress churn");
    assert!(
        churn.status.success(),
        "{}",
        String::from_utf8_lossy(&churn.stderr)
    );
    let report: Value = serde_json::from_slice(&churn.stdout).expect("churn report");

    // Wait until Prometheus holds what the exporter serves now, and that
    // no longer moves.
    let mut settled = None;
    let after = prometheus.wait_for(Duration::from_secs(20), "a settled reset count", |p| {
        let now = p.scalar(resets)?;
        let served = sum_of(&exporter.scrape(), "tcptrace_resets", "");
        let stable = settled == Some(now) && now == served;
        settled = Some(now);
        stable.then_some(now)
    });
    let records = trace.stop();
    drop(sink);

    let traced = records.of_kind("rst_sent").count() + records.of_kind("rst_received").count();
    let summary = records.summary();
    assert_eq!(summary["events_lost"], 0, "trace lost events: {summary}");
    let lost = prometheus
        .scalar("sum(tcptrace_events_lost_total)")
        .unwrap();
    assert_eq!(lost, 0.0, "the exporter lost events");
    assert!(
        report["connected"].as_u64().unwrap_or(0) >= 1000,
        "a storm: {report}"
    );
    assert!(traced >= 2000, "every close is an RST both ways: {traced}");
    assert_eq!(
        after - before,
        traced as f64,
        "Prometheus' {resets} rose by {} while trace counted {traced} RSTs",
        after - before
    );
    // By direction too, as the kernel's reason for the sender.
    let sent = prometheus
        .scalar("sum(tcptrace_resets_total{direction=\"sent\"})")
        .unwrap();
    assert_eq!(sent, records.of_kind("rst_sent").count() as f64);
    eprintln!(
        "EXPORTER storm: {traced} RSTs traced, {resets} rose by {} in Prometheus ({:.1} s)",
        after - before,
        t0.elapsed().as_secs_f64()
    );
}

/// A real nginx with `keepalive_timeout 1s` and a pooled python3 client
/// that reuses its connections after 2 s idle, in a namespace: the
/// finding series `server_keepalive_timeout` appears in Prometheus with
/// the client (python3) and the closer (nginx), and the shipped alert
/// (deploy/prometheus-rules.yaml) fires with the idle timeout.
#[test]
fn exporter_findings_reach_prometheus_and_the_alert_fires() {
    require_root();
    let t0 = Instant::now();
    let ns = Netns::new("expka");
    let server: SocketAddr = "127.0.0.1:8090".parse().unwrap();
    let _nginx = Nginx::start(&ns, server, "1s");
    let exporter = Exporter::start(&["--netns", ns.name(), "--interval", "1s", "--window", "20s"]);
    let prometheus = Prometheus::start(&[exporter.addr], Some(&alert_rules("0s")));
    prometheus.wait_for(Duration::from_secs(15), "first scrape", |p| {
        p.scalar("up{job=\"tcptrace\"}").filter(|up| *up == 1.0)
    });

    let client = ns
        .command("/usr/bin/python3")
        .arg("-c")
        .arg(POOLED_CLIENT)
        .arg(server.ip().to_string())
        .arg(server.port().to_string())
        .output()
        .expect("run python3");
    let said = String::from_utf8_lossy(&client.stdout);
    assert!(
        client.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&client.stderr)
    );
    assert_eq!(said.trim(), "failed 3", "every reuse after the gap fails");

    let series = prometheus.wait_for(Duration::from_secs(20), "finding series", |p| {
        let found = p.query("tcptrace_finding{cause=\"server_keepalive_timeout\"}");
        let roles: BTreeSet<(String, String)> = found
            .iter()
            .map(|s| {
                let l = &s["metric"];
                (
                    l["role"].as_str().unwrap_or("").to_string(),
                    l["process"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let client = roles.iter().any(|(r, p)| r == "client" && p == "python3");
        let closer = roles.iter().any(|(r, p)| r == "closer" && p == "nginx");
        (client && closer).then_some(found)
    });
    let alert = prometheus.wait_for(Duration::from_secs(15), "firing alert", |p| {
        let alerts = p.api("alerts", None);
        alerts["alerts"]
            .as_array()?
            .iter()
            .find(|a| {
                a["labels"]["alertname"] == "TcpIdleTimeoutShorterThanPool"
                    && a["state"] == "firing"
            })
            .cloned()
    });
    let labels = &alert["labels"];
    assert_eq!(labels["cause"], "server_keepalive_timeout", "{alert:#}");
    assert_eq!(labels["process"], "python3", "{alert:#}");
    assert_eq!(labels["peer"], server.to_string(), "{alert:#}");
    let idle: f64 = alert["value"].as_str().unwrap().parse().unwrap();
    assert!((0.9..=1.5).contains(&idle), "keep-alive {idle}: {alert:#}");
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("python3") && summary.contains("idle ~1"),
        "{summary}"
    );
    // The figure Prometheus keeps is the one the rules gave.
    let figure = prometheus
        .scalar("max(tcptrace_finding_figure{cause=\"server_keepalive_timeout\",figure=\"idle_timeout_s\"})")
        .unwrap();
    assert_eq!(figure, idle);
    eprintln!(
        "EXPORTER finding: {} series; alert {}: {summary} ({:.1} s)",
        series.len(),
        labels["alertname"],
        t0.elapsed().as_secs_f64()
    );
}

/// Three keep-alive connections used once, then again after 2 s idle;
/// prints how many reuses failed.
const POOLED_CLIENT: &str = r#"
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
req = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
pool = [socket.create_connection((host, port), timeout=5) for _ in range(3)]
for c in pool:
    c.sendall(req)
    assert c.recv(4096)
time.sleep(2)
failed = 0
for c in pool:
    try:
        c.sendall(req)
        if not c.recv(4096):
            failed += 1
    except OSError:
        failed += 1
print("failed", failed)
"#;

/// cgroup directories the test made, removed deepest first at the end
/// (after the processes in them are gone).
struct Cgroups(Vec<PathBuf>);

impl Cgroups {
    /// Makes `leaf` below `root` (every level), remembering each level.
    fn make(&mut self, root: &Path, leaf: &str) -> PathBuf {
        let mut dir = root.to_path_buf();
        for part in leaf.split('/') {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                self.0.push(dir.clone());
            }
        }
        dir
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Where a cgroup filesystem of `fstype` is mounted (with `option` among
/// its super options for v1), from /proc/self/mountinfo.
fn mount_of(fstype: &str, option: &str) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut fields = right.split_whitespace();
        let (fs, _source, options) = (fields.next()?, fields.next()?, fields.next()?);
        let ok = fs == fstype && (option.is_empty() || options.split(',').any(|o| o == option));
        ok.then(|| PathBuf::from(left.split_whitespace().nth(4).unwrap_or("")))
    })
}

/// A python3 that waits for a line on stdin, connects to `addr`,
/// closes with an RST, says `done`, and exits at the next line (a
/// process looked up by pid, on a v1 host, must still be there).
fn held_client(addr: SocketAddr) -> std::process::Child {
    Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import socket, struct, sys\n\
             sys.stdin.readline()\n\
             s = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\n\
             s.close()\n\
             print('done', flush=True)\n\
             sys.stdin.readline()\n",
        )
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3")
}

/// Processes placed in cgroups of a kubelet's shapes, with a fake
/// /var/log/pods tree: `trace` events and the exporter's series name
/// their pod, namespace and container. The v2 shape (systemd driver,
/// containerd) on the cgroup2 mount; the v1 shape (cgroupfs driver) in
/// the v1 `pids` hierarchy when this host has one (hybrid hosts). The
/// trace also records (`--record`): `replay --json` elsewhere prints the
/// same names, byte for byte.
#[test]
fn exporter_and_trace_name_pods_from_cgroups_and_the_kubelet_log_tree() {
    require_root();
    let uid = "5f0e5b2a-8c3d-4e1f-9a7b-0c1d2e3f4a5b";
    let cid = "7c9f1b2a3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
    let uid1 = "1a2b3c4d-5e6f-4a8b-9c0d-e1f2a3b4c5d6";
    let cid1 = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let logs = ScratchDir::new("pods");
    let pods = logs.path().join("pods");
    for dir in [
        format!("shop_checkout-7d9f8b6c5-x2x4z_{uid}/app"),
        format!("shop_checkout-7d9f8b6c5-x2x4z_{uid}/istio-proxy"),
        format!("batch_nightly-job-29384_{uid1}/worker"),
    ] {
        std::fs::create_dir_all(pods.join(dir)).unwrap();
    }
    std::fs::create_dir_all(logs.path().join("containers")).unwrap();
    std::fs::write(
        logs.path().join(format!(
            "containers/checkout-7d9f8b6c5-x2x4z_shop_app-{cid}.log"
        )),
        "",
    )
    .unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    listener.set_nonblocking(true).unwrap();
    let acceptor = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while count.load(Ordering::Relaxed) < 2 && Instant::now() < deadline {
            match listener.accept() {
                Ok(_) => {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    });

    let mut made = Cgroups(Vec::new());
    let v2 = mount_of("cgroup2", "").expect("a cgroup2 mount");
    let v2_leaf = made.make(
        &v2,
        &format!(
            "tt-k8s-{}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{cid}.scope",
            me(),
            uid.replace('-', "_")
        ),
    );
    let v1 = mount_of("cgroup", "pids");
    let mut clients = vec![(
        held_client(addr),
        v2_leaf,
        ("shop", "checkout-7d9f8b6c5-x2x4z", "app"),
    )];
    if let Some(v1) = &v1 {
        let leaf = made.make(
            v1,
            &format!("tt-k8s-{}/kubepods/besteffort/pod{uid1}/{cid1}", me()),
        );
        clients.push((
            held_client(addr),
            leaf,
            ("batch", "nightly-job-29384", "worker"),
        ));
    } else {
        eprintln!(
            "EXPORTER k8s: no v1 pids hierarchy here: the v1 shape is covered by the unit fixtures only"
        );
    }
    let pids: Vec<String> = clients.iter().map(|(c, _, _)| c.id().to_string()).collect();
    let pods_dir = pods.display().to_string();
    let record = logs.path().join("pods.rec");
    let record_arg = record.display().to_string();
    let mut trace_args = vec![
        "--events",
        "connect,rst",
        "--pods-dir",
        &pods_dir,
        "--record",
        &record_arg,
    ];
    let mut exporter_args = vec!["--pods-dir", &pods_dir, "--interval", "1s"];
    // One tracer per client would do; the exporter takes one --pid, so
    // the exporter watches the first client and trace both (by comm).
    trace_args.extend(["--comm", "python3"]);
    exporter_args.extend(["--pid", &pids[0]]);
    let trace = Trace::start(&trace_args);
    let exporter = Exporter::start(&exporter_args);
    for (client, leaf, _) in &mut clients {
        std::fs::write(leaf.join("cgroup.procs"), client.id().to_string())
            .unwrap_or_else(|e| panic!("moving {} into {}: {e}", client.id(), leaf.display()));
        client.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        let mut done = [0u8; 5];
        client
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut done)
            .unwrap();
        assert_eq!(&done, b"done\n");
    }
    // The exporter counts what came by the time of the scrape.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = exporter.scrape();
        if sum_of(&text, "tcptrace_connections_opened", "python3") >= 1.0
            || Instant::now() > deadline
        {
            break text;
        }
        thread::sleep(Duration::from_millis(200));
    };
    // Written out by now (trace flushes every 50 ms); then the clients go.
    thread::sleep(Duration::from_millis(500));
    let records = trace.stop();
    acceptor.join().unwrap();
    for (client, _, _) in &mut clients {
        client.stdin.take().unwrap().write_all(b"exit\n").unwrap();
        assert!(client.wait().unwrap().success());
    }

    for (client, _, (namespace, pod, container)) in &clients {
        let pid = u64::from(client.id());
        let events: Vec<&Value> = records
            .events()
            .filter(|e| e["owner"]["pid"] == pid)
            .collect();
        assert!(
            events.iter().any(|e| e["kind"] == "connect"),
            "pid {pid}: {events:?}"
        );
        for e in &events {
            let owner = &e["owner"];
            assert_eq!(
                (&owner["namespace"], &owner["pod"], &owner["container"]),
                (
                    &Value::from(*namespace),
                    &Value::from(*pod),
                    &Value::from(*container)
                ),
                "{e}"
            );
        }
    }
    // Replayed without the cgroups or the pods directory (gone by then
    // on another host): the names come from the record file.
    drop(made);
    let replayed = Command::new(tcptrace_bin())
        .args(["replay", "--json", "--no-summary"])
        .arg(&record)
        .output()
        .expect("tcptrace replay");
    assert!(
        replayed.status.success(),
        "replay: {}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let replayed = String::from_utf8(replayed.stdout).unwrap();
    assert!(
        replayed == records.text,
        "replay differs from the live trace; first differing line: {:?}",
        replayed
            .lines()
            .zip(records.text.lines())
            .find(|(a, b)| a != b)
    );
    let labels = r#"namespace="shop",pod="checkout-7d9f8b6c5-x2x4z",container="app""#;
    let line = text
        .lines()
        .find(|l| l.starts_with("tcptrace_connections_opened_total") && l.contains(labels))
        .unwrap_or_else(|| panic!("no opened series with {labels}:\n{text}"));
    assert!(line.contains("process=\"python3\""), "{line}");
    let resets = sum_of(&text, "tcptrace_resets", labels);
    assert_eq!(resets, 1.0, "the client's RST on close:\n{text}");
    eprintln!("EXPORTER k8s: {line}");
}

/// A port in use, an unreadable pods directory, a window shorter than
/// the interval: one line on stderr, the right exit code, at once.
#[test]
fn exporter_bad_input_is_one_line() {
    require_root();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let not_a_dir = ScratchDir::new("notadir");
    let file = not_a_dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let file = file.display().to_string();
    for (args, code, says) in [
        (
            vec!["--listen", addr.as_str()],
            1,
            format!("cannot listen on {addr}"),
        ),
        (
            vec!["--pods-dir", "/nonexistent/pods"],
            1,
            "cannot read the pod log directory /nonexistent/pods".to_string(),
        ),
        (
            vec!["--pods-dir", file.as_str()],
            1,
            "cannot read the pod log directory".to_string(),
        ),
        (
            vec!["--interval", "10s", "--window", "5s"],
            2,
            "--interval 10s is longer than --window 5s".to_string(),
        ),
        (
            vec!["--listen", "localhost:80"],
            2,
            "is not a listen address".to_string(),
        ),
        (vec!["--top-peers", "0"], 2, "0".to_string()),
    ] {
        let started = Instant::now();
        let out = Command::new(tcptrace_bin())
            .arg("exporter")
            .args(&args)
            .args(["--duration", "5s"])
            .output()
            .expect("run tcptrace");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(&says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    drop(taken);
}

/// Scrapes in a loop, and a connection that never sends its request,
/// while the exporter is told to stop: it exits 0 within seconds with its
/// one summary line, every scrape got an answer or a refused connection
/// (never a hang), and nothing panicked.
#[test]
fn exporter_scrape_during_shutdown_gets_an_answer() {
    require_root();
    let exporter = Exporter::start(&["--interval", "1s", "--comm", "nothing-matches"]);
    let addr = exporter.addr;
    let silent = TcpStream::connect(addr).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let outcome = match get(addr, "/metrics") {
                    Ok((200, body)) => {
                        assert!(body.ends_with("# EOF\n"), "{body}");
                        "200".to_string()
                    }
                    Ok((status, _)) => status.to_string(),
                    Err(e) => format!("{:?}", e.kind()),
                };
                seen.insert(outcome);
            }
            seen
        })
    };
    thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    let (status, stderr) = exporter.stop_with(libc::SIGTERM, Duration::from_secs(5));
    let took = asked.elapsed();
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = outcomes.join().expect("scraper panicked");
    drop(silent);
    assert!(status.success(), "{status}: {stderr:?}");
    assert!(took < Duration::from_secs(3), "stopping took {took:?}");
    assert!(stderr.iter().all(|l| !l.contains("panicked")), "{stderr:?}");
    let last = stderr.last().unwrap();
    assert!(
        last.starts_with("tcptrace exporter: ") && last.contains(" lost;"),
        "{stderr:?}"
    );
    assert!(seen.contains("200"), "{seen:?}");
    let allowed = [
        "200",
        "503",
        "ConnectionRefused",
        "ConnectionReset",
        "UnexpectedEof",
    ];
    assert!(
        seen.iter().all(|s| allowed.contains(&s.as_str())),
        "{seen:?}"
    );
    eprintln!(
        "EXPORTER shutdown: stopped in {:.0} ms; scrapes saw {seen:?}",
        took.as_secs_f64() * 1e3
    );
}
