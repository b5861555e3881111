//! Successful opens counted in the kernel (`top`, `diagnose`, the
//! exporter) against the full event stream (`trace`) of the same storm:
//! equal per process and per peer, exactly; and an `OPENS` map too small
//! for the storm loses nothing (the opens it refuses are sent as events
//! and counted as such).

use std::{
    collections::BTreeMap,
    io::Read,
    net::{TcpListener, TcpStream},
    process::{Child, Command},
    sync::mpsc,
    thread,
    time::Duration,
};

use serde_json::Value;
use tests::{
    Netns, require_root, set_linger_zero, tcptrace_bin,
    trace::{Trace, spawn_until},
};

/// Connects per listener and client thread.
const CONNECTS: usize = 150;

/// Listeners on three endpoints (two addresses of the namespace's
/// loopback), accepting until the clients are done; two client threads
/// connect to each in turn, closing half their connections with an RST.
fn storm(ns: &Netns) {
    ns.run(|| {
        let endpoints = ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.2:7103"];
        let listeners: Vec<TcpListener> = endpoints
            .iter()
            .map(|a| TcpListener::bind(a).unwrap_or_else(|e| panic!("bind {a}: {e}")))
            .collect();
        let accepters: Vec<_> = listeners
            .into_iter()
            .map(|l| {
                thread::spawn(move || {
                    for _ in 0..2 * CONNECTS {
                        let (conn, _) = l.accept().expect("accept");
                        drop(conn);
                    }
                })
            })
            .collect();
        let clients: Vec<_> = (0..2)
            .map(|t| {
                thread::Builder::new()
                    .name(format!("client{t}"))
                    .spawn(move || {
                        for i in 0..CONNECTS {
                            for a in endpoints {
                                let conn = TcpStream::connect(a).expect("connect");
                                if i % 2 == 0 {
                                    set_linger_zero(&conn);
                                }
                            }
                        }
                    })
                    .unwrap()
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        for a in accepters {
            a.join().unwrap();
        }
    });
}

/// `tcptrace top --json` on `ns`, started and ready.
fn top(ns: &Netns, open_keys: Option<&str>) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = Command::new(tcptrace_bin());
    cmd.args(["top", "--json", "--interval", "500ms", "--rows", "1000"])
        .args(["--netns", ns.name()]);
    if let Some(keys) = open_keys {
        cmd.env("TCPTRACE_OPEN_KEYS", keys);
    }
    let (child, stderr, _) = spawn_until(&mut cmd, "top; Ctrl-C to stop");
    (child, stderr)
}

/// Stops `top` and returns its last snapshot.
fn stop_top(mut child: Child, stderr: mpsc::Receiver<String>) -> Value {
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    let said: Vec<String> = stderr.try_iter().collect();
    assert!(status.success(), "top failed: {said:?}");
    let last = out.lines().last().unwrap_or_else(|| panic!("no snapshot"));
    serde_json::from_str(last).unwrap()
}

/// Connects per label (`pid` for processes, `ip:port` for peers) in a
/// snapshot's table.
fn connects(
    snapshot: &Value,
    table: &str,
    label: impl Fn(&Value) -> String,
) -> BTreeMap<String, u64> {
    snapshot[table]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["connects"].as_u64().unwrap_or(0) > 0)
        .map(|r| (label(r), r["connects"].as_u64().unwrap()))
        .collect()
}

/// The same figures from every `connect` event of a trace.
fn connects_of_events(events: &[&Value]) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let (mut by_pid, mut by_peer) = (BTreeMap::new(), BTreeMap::new());
    for e in events {
        *by_pid.entry(e["owner"]["pid"].to_string()).or_default() += 1;
        let peer = format!(
            "{}:{}",
            e["remote_addr"].as_str().unwrap(),
            e["remote_port"]
        );
        *by_peer.entry(peer).or_default() += 1;
    }
    (by_pid, by_peer)
}

fn check_storm(open_keys: Option<&str>) -> Value {
    let ns = Netns::new("kcount");
    let trace = Trace::start(&["--netns", ns.name()]);
    let (top, top_stderr) = top(&ns, open_keys);
    storm(&ns);
    thread::sleep(Duration::from_millis(300));
    let snapshot = stop_top(top, top_stderr);
    let records = trace.stop();
    assert_eq!(records.summary()["events_lost"], 0, "the trace lost events");
    assert_eq!(snapshot["events_lost"], 0, "top lost events: {snapshot}");
    let events: Vec<&Value> = records.of_kind("connect").collect();
    assert_eq!(events.len(), 2 * 3 * CONNECTS, "the storm's connects");
    let (by_pid, by_peer) = connects_of_events(&events);
    assert_eq!(
        connects(&snapshot, "processes", |r| r["pid"].to_string()),
        by_pid,
        "connects per process"
    );
    assert_eq!(
        connects(&snapshot, "peers", |r| r["peer"]
            .as_str()
            .unwrap()
            .to_string()),
        by_peer,
        "connects per peer"
    );
    // Latency percentiles from bucketed counts, within 10 % (both
    // tracers time each connect themselves, so values differ a little).
    let ours = snapshot["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["connects"].as_u64() > Some(0))
        .unwrap();
    let mut latencies: Vec<u64> = events
        .iter()
        .map(|e| e["connect_ns"].as_u64().unwrap() / 1000)
        .collect();
    latencies.sort_unstable();
    let p50 = latencies[latencies.len() / 2] as f64;
    let top_p50 = ours["connect_p50_us"].as_u64().unwrap() as f64;
    assert!(
        (top_p50 - p50).abs() <= 0.10 * p50 + 2.0,
        "p50 {top_p50} µs in top, {p50} µs from the events"
    );
    snapshot
}

#[test]
fn kernel_counts_equal_the_event_stream() {
    require_root();
    let snapshot = check_storm(None);
    let counted = snapshot["opens_counted_in_kernel"].as_u64().unwrap();
    // Every connect, and the accepted side of each.
    assert_eq!(counted, 2 * 2 * 3 * CONNECTS as u64, "{snapshot}");
    assert_eq!(snapshot["count_map_full"], 0);
}

#[test]
fn kernel_counts_with_a_full_map_lose_nothing() {
    require_root();
    // Two keys: most opens find the map full and go to the ring buffer.
    let snapshot = check_storm(Some("2"));
    let counted = snapshot["opens_counted_in_kernel"].as_u64().unwrap();
    let full = snapshot["count_map_full"].as_u64().unwrap();
    assert!(full > 0 && counted > 0, "{snapshot}");
    assert_eq!(counted + full, 2 * 2 * 3 * CONNECTS as u64, "{snapshot}");
}
