//! Root integration tests of `tcptrace snapshot`: sockets in known states
//! inside a namespace made by the test, exact figures in the report.

use std::{
    io::{BufRead, BufReader},
    net::{TcpListener, TcpStream},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use socket2::Socket;
use tests::{
    Netns,
    host::{failure, success, tcptrace, tcptrace_in},
    require_root,
    sockets::{Holder, connect, connect_pending, listen, time_wait_via},
    tcptrace_bin,
};

/// Accept queue limit of the full listener.
const BACKLOG: usize = 3;
/// Connects beyond what the full queue takes: they stay in SYN_SENT.
const PENDING: usize = 2;
const TIME_WAITS: usize = 5;

/// Everything the scene keeps open while tcptrace looks at it.
struct Scene {
    ns: Netns,
    _full: TcpListener,
    _queued: Vec<TcpStream>,
    _pending: Vec<Socket>,
    _time_wait_listener: TcpListener,
    _pair_listener: TcpListener,
    _pair_servers: Vec<TcpStream>,
    holder: Holder,
}

/// In a fresh namespace with a 16-port ephemeral range:
/// - 127.0.0.1:7001, backlog 3, filled with 4 connections it never accepts
///   (the kernel queues backlog + 1) and 2 more whose SYNs it drops;
/// - 127.0.0.1:7002, with 5 connections the client closed first (TIME_WAIT);
/// - [::1]:7003, with 2 accepted connections whose client ends belong to a
///   `sleep` child.
fn scene() -> Scene {
    let ns = Netns::new("snap");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40015");
    // Fresh ports for every connect, so TIME_WAIT counts are exact.
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let (full, queued, pending, time_wait_listener, pair_listener, clients, pair_servers) =
        ns.run(|| {
            let full = listen("127.0.0.1:7001", BACKLOG as i32);
            let queued: Vec<TcpStream> = (0..=BACKLOG).map(|_| connect("127.0.0.1:7001")).collect();
            let pending: Vec<Socket> = (0..PENDING)
                .map(|_| connect_pending("127.0.0.1:7001"))
                .collect();
            let time_wait_listener = listen("127.0.0.1:7002", 16);
            for _ in 0..TIME_WAITS {
                time_wait_via(&time_wait_listener);
            }
            let pair_listener = listen("[::1]:7003", 16);
            let clients: Vec<TcpStream> = (0..2).map(|_| connect("[::1]:7003")).collect();
            let servers: Vec<TcpStream> = (0..2)
                .map(|_| pair_listener.accept().expect("accept").0)
                .collect();
            (
                full,
                queued,
                pending,
                time_wait_listener,
                pair_listener,
                clients,
                servers,
            )
        });
    let [first, second] = <[TcpStream; 2]>::try_from(clients).expect("two clients");
    let holder = Holder::new(first, second);
    // Let the SYNs of the pending connects reach the full listener.
    std::thread::sleep(Duration::from_millis(200));
    Scene {
        ns,
        _full: full,
        _queued: queued,
        _pending: pending,
        _time_wait_listener: time_wait_listener,
        _pair_listener: pair_listener,
        _pair_servers: pair_servers,
        holder,
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

/// A table's row whose `field` equals `value`.
fn row<'a>(table: &'a Value, field: &str, value: &str) -> &'a Value {
    table
        .as_array()
        .expect("table")
        .iter()
        .find(|row| {
            row[field]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| row[field].to_string())
                == value
        })
        .unwrap_or_else(|| panic!("no row with {field} = {value} in {table}"))
}

fn states(pairs: &[(&str, usize)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(state, n)| (state.to_string(), Value::from(*n)))
            .collect(),
    )
}

#[test]
fn snapshot_reports_exact_states_owners_queues_and_ports() {
    require_root();
    let scene = scene();
    let me = u64::from(std::process::id());
    let child = u64::from(scene.holder.pid());
    let report = json(&success(&tcptrace(&[
        "snapshot",
        "--netns",
        scene.ns.name(),
        "--json",
        "--ephemeral-warn",
        "35",
    ])));

    let established = 2 * (BACKLOG + 1) + 4;
    assert_eq!(report["netns"], scene.ns.name());
    assert_eq!(report["total"], 3 + established + PENDING + TIME_WAITS);
    assert_eq!(
        report["states"],
        states(&[
            ("ESTABLISHED", established),
            ("SYN_SENT", PENDING),
            ("TIME_WAIT", TIME_WAITS),
            ("LISTEN", 3)
        ])
    );

    // Owners: this test holds the listeners, the queued and pending
    // clients and the accepted pair ends; the child holds the pair's
    // clients; nobody holds the unaccepted server ends and TIME_WAIT.
    let processes = &report["processes"];
    assert_eq!(processes.as_array().unwrap().len(), 2, "{processes}");
    let mine = row(processes, "pid", &me.to_string());
    assert_eq!(
        mine["states"],
        states(&[
            ("ESTABLISHED", BACKLOG + 1 + 2),
            ("SYN_SENT", PENDING),
            ("LISTEN", 3)
        ])
    );
    let held = row(processes, "pid", &child.to_string());
    assert_eq!(held["comm"], "sleep");
    assert_eq!(held["states"], states(&[("ESTABLISHED", 2)]));
    assert_eq!(
        report["unowned"],
        states(&[("ESTABLISHED", BACKLOG + 1), ("TIME_WAIT", TIME_WAITS)])
    );

    // Listeners: the full one first, queued backlog + 1 of backlog.
    let listeners = report["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 3);
    let full = &listeners[0];
    assert_eq!(full["local"], "127.0.0.1:7001");
    assert_eq!(full["queued"], BACKLOG + 1);
    assert_eq!(full["limit"], BACKLOG);
    assert_eq!(full["fill_percent"], (BACKLOG + 1) * 100 / BACKLOG);
    assert_eq!(full["owner"]["pid"], me);
    let pairs = row(&report["listeners"], "local", "[::1]:7003");
    assert_eq!(
        (pairs["queued"].as_u64(), pairs["limit"].as_u64()),
        (Some(0), Some(16))
    );

    let port = row(&report["local_ports"], "port", "7001");
    assert_eq!(
        port["states"],
        states(&[("ESTABLISHED", BACKLOG + 1), ("LISTEN", 1)])
    );
    let peer = row(&report["remote_endpoints"], "endpoint", "127.0.0.1:7001");
    assert_eq!(
        peer["states"],
        states(&[("ESTABLISHED", BACKLOG + 1), ("SYN_SENT", PENDING)])
    );
    assert_eq!(
        row(&report["remote_endpoints"], "endpoint", "[::1]:7003")["total"],
        2
    );

    assert_eq!(
        report["time_wait_by_destination"],
        serde_json::json!([{ "destination": "127.0.0.1:7002", "count": TIME_WAITS }])
    );

    // Ephemeral ports out of 16: 6 towards :7001 (37.5%, over the 35%
    // warning), 5 towards :7002, 2 towards :7003.
    let ephemeral = &report["ephemeral_ports"];
    assert_eq!(
        ephemeral["range"],
        serde_json::json!({ "low": 40000, "high": 40015 })
    );
    assert_eq!(ephemeral["range_size"], 16);
    let summary: Vec<(String, u64, f64, bool)> = ephemeral["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["destination"].as_str().unwrap().to_string(),
                d["used"].as_u64().unwrap(),
                d["percent"].as_f64().unwrap(),
                d["warning"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "127.0.0.1:7001".into(),
                (BACKLOG + 1 + PENDING) as u64,
                37.5,
                true
            ),
            ("127.0.0.1:7002".into(), TIME_WAITS as u64, 31.3, false),
            ("[::1]:7003".into(), 2, 12.5, false),
        ]
    );

    // tcp_info of the busiest sockets: the default top 10 of the 14 that
    // have it (TIME_WAIT and listeners have none).
    let top = report["top_connections"].as_array().unwrap();
    assert_eq!(top.len(), 10);
    assert!(
        top.iter()
            .all(|c| c["state"] == "ESTABLISHED" || c["state"] == "SYN_SENT"),
        "{top:?}"
    );
    let established_rtt = top
        .iter()
        .filter(|c| c["state"] == "ESTABLISHED")
        .all(|c| c["rtt_us"].as_u64() > Some(0));
    assert!(
        established_rtt,
        "a completed handshake measured an RTT: {top:?}"
    );

    // sockstat is per namespace: its TIME_WAIT count is ours.
    assert_eq!(report["sockstat"]["TCP"]["tw"], TIME_WAITS);
    assert_eq!(report["counters"]["interval"], Value::Null);
    assert!(report["counters"]["values"]["TcpExtListenOverflows"].as_u64() >= Some(PENDING as u64));
}

#[test]
fn snapshot_under_ip_netns_exec_sees_the_same_and_prints_tables() {
    require_root();
    let scene = scene();
    let text = success(&tcptrace_in(&scene.ns, &["snapshot"]));
    let line = |start: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(line("TCP sockets"), ["TCP", "sockets:", "22"]);
    assert_eq!(line("ESTABLISHED"), ["ESTABLISHED", "12"]);
    assert_eq!(line("TIME_WAIT "), ["TIME_WAIT", "5"]);
    let me = std::process::id().to_string();
    assert_eq!(
        line("127.0.0.1:7001"),
        [
            "127.0.0.1:7001",
            "4",
            "3",
            "133%",
            me.as_str(),
            comm().as_str(),
            "FULL"
        ]
    );
    let child = scene.holder.pid().to_string();
    assert_eq!(
        line(&format!("{child} ")),
        [child.as_str(), "sleep", "2", "ESTABLISHED", "2"]
    );
    assert!(text.contains("Kernel counters since boot"), "{text}");
}

#[test]
fn watch_repeats_with_state_deltas() {
    require_root();
    let scene = scene();
    let mut watch = std::process::Command::new(tcptrace_bin())
        .args([
            "snapshot",
            "--netns",
            scene.ns.name(),
            "--json",
            "--watch",
            "1s",
            "--count",
            "2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn tcptrace");
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = json(&lines.next().expect("first report").expect("read"));
    assert_eq!(first["states"]["TIME_WAIT"], TIME_WAITS);
    assert!(first.get("states_delta").is_none());
    // Three more TIME_WAITs between the two reports.
    scene.ns.run(|| {
        let listener = listen("127.0.0.1:7004", 4);
        (0..3).for_each(|_| time_wait_via(&listener));
    });
    let second = json(&lines.next().expect("second report").expect("read"));
    assert!(lines.next().is_none(), "--count 2 stops after two reports");
    assert!(watch.wait().unwrap().success());
    assert_eq!(second["states"]["TIME_WAIT"], TIME_WAITS + 3);
    assert_eq!(
        second["states_delta"],
        serde_json::json!({ "TIME_WAIT": 3 })
    );
    let interval = second["counters"]["interval"].as_f64().unwrap();
    assert!((0.9..3.0).contains(&interval), "{interval}");
    assert_eq!(second["counters"]["values"]["TcpActiveOpens"], 3);
}

#[test]
fn a_missing_namespace_is_a_one_line_error() {
    require_root();
    let error = failure(&tcptrace(&["snapshot", "--netns", "tt-no-such-netns"]));
    assert!(
        error.contains("cannot open network namespace /run/netns/tt-no-such-netns"),
        "{error}"
    );
}

fn comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim_end()
        .to_string()
}
