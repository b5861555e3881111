//! Root integration test of the conntrack and host-wide readers: inside a
//! namespace made here, with a stateful iptables rule, real connections
//! and a real INVALID packet move conntrack's figures, and `snapshot
//! --netns` / `diagnose --netns` report them, together with the
//! host-wide TCP limits read in the initial namespace and the ICMP
//! counters.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{TcpStream, UdpSocket},
    time::Duration,
};

use serde_json::Value;
use tests::{
    Netns,
    diagnose::Diagnose,
    host::{success, tcptrace},
    require_root,
    sockets::{connect, listen},
};

/// New connections made while conntrack watches.
const CONNECTIONS: usize = 5;
const PORT: &str = "127.0.0.1:7101";

fn snapshot(ns: &Netns) -> Value {
    let out = success(&tcptrace(&["snapshot", "--netns", ns.name(), "--json"]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("snapshot is not JSON ({e}): {out}"))
}

fn u64_at(v: &Value, path: &[&str]) -> u64 {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_u64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {v:#}"))
}

/// Packets the INVALID rule dropped, from `iptables -L -v -x`.
fn invalid_rule_drops(ns: &Netns) -> u64 {
    let listing = ns.exec("iptables", &["-L", "INPUT", "-v", "-x", "-n"]);
    listing
        .lines()
        .find(|l| l.contains("ctstate INVALID"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no INVALID rule in {listing}"))
}

fn host_global_is_read_in_the_initial_namespace(global: &Value) {
    // tcp_mem and tcp_max_orphans do not exist inside the test's
    // namespace: seen only if read where they live.
    let expected_mem: Vec<u64> = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem")
        .expect("tcp_mem")
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(
        [
            u64_at(global, &["tcp_mem", "low"]),
            u64_at(global, &["tcp_mem", "pressure"]),
            u64_at(global, &["tcp_mem", "high"]),
        ],
        expected_mem[..],
        "{global:#}"
    );
    let max_orphans: u64 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_max_orphans")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(u64_at(global, &["tcp_max_orphans"]), max_orphans);
    assert!(global["tcp_mem_pages"].is_u64(), "{global:#}");
    assert!(global["orphans"].is_u64(), "{global:#}");
}

#[test]
fn conntrack_counters_follow_connections_and_an_invalid_packet() {
    require_root();
    let ns = Netns::new("ct");
    // A connection made before any rule needs conntrack in this
    // namespace: conntrack never saw its handshake.
    let (listener, mut old_client, mut old_server) = ns.run(|| {
        let listener = listen(PORT, 64);
        let client = connect(PORT);
        let (server, _) = listener.accept().expect("accept");
        (listener, client, server)
    });

    // The module is loaded on this host (the file exists in the initial
    // namespace), but nothing is tracked here yet.
    let before_rules = snapshot(&ns);
    let ct = &before_rules["conntrack"];
    assert_eq!(ct["loaded"], true, "{ct:#}");
    assert_eq!(u64_at(ct, &["count"]), 0, "{ct:#}");
    assert_eq!(u64_at(ct, &["stats", "invalid"]), 0, "{ct:#}");
    host_global_is_read_in_the_initial_namespace(&before_rules["host_global"]);

    // A stateful rule, and a strict tracker: a mid-stream packet of a
    // connection conntrack does not know is INVALID, and dropped.
    ns.exec(
        "iptables",
        &[
            "-A",
            "INPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "INVALID",
            "-j",
            "DROP",
        ],
    );
    ns.sysctl("net.netfilter.nf_conntrack_tcp_loose", "0");

    let diagnose = Diagnose::start_with(ns.name(), &["--duration", "60s"]);

    let (clients, servers) = ns.run(|| {
        let clients: Vec<TcpStream> = (0..CONNECTIONS).map(|_| connect(PORT)).collect();
        let servers: Vec<TcpStream> = (0..CONNECTIONS)
            .map(|_| listener.accept().expect("accept").0)
            .collect();
        // A UDP datagram to a closed port: ICMP destination unreachable
        // (type 3) sent and received on loopback.
        let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
        udp.send_to(b"x", "127.0.0.1:9").expect("udp send");
        (clients, servers)
    });
    old_client
        .write_all(b"lost")
        .expect("send on the old connection");
    // The first transmission and a retransmission or two.
    std::thread::sleep(Duration::from_millis(700));
    old_server.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    match old_server.read(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the INVALID segment should have been dropped, read gave {other:?}"),
    }
    let dropped = invalid_rule_drops(&ns);
    assert!(dropped >= 1, "the INVALID rule dropped {dropped} packets");

    let after = snapshot(&ns);
    let ct = &after["conntrack"];
    let count = u64_at(ct, &["count"]);
    assert!(
        count >= CONNECTIONS as u64,
        "{CONNECTIONS} connections tracked, count {count}: {ct:#}"
    );
    let invalid = u64_at(ct, &["stats", "invalid"]);
    // Each dropped segment was judged at OUTPUT and again at PREROUTING.
    assert!(
        invalid >= dropped,
        "invalid {invalid} < {dropped} dropped: {ct:#}"
    );
    assert_eq!(u64_at(ct, &["tcp_loose"]), 0, "{ct:#}");
    for column in [
        "found",
        "insert_failed",
        "drop",
        "early_drop",
        "search_restart",
    ] {
        assert!(ct["stats"][column].is_u64(), "no {column}: {ct:#}");
    }
    for timeout in [
        "tcp_timeout_established",
        "tcp_timeout_close_wait",
        "tcp_timeout_time_wait",
    ] {
        assert!(u64_at(ct, &[timeout]) > 0, "{timeout}: {ct:#}");
    }

    let (report, _) = diagnose.finish();
    let ct = &report["conntrack"];
    assert_eq!(ct["loaded"], true, "{ct:#}");
    let start = u64_at(ct, &["start", "count"]);
    let end = u64_at(ct, &["end", "count"]);
    assert!(
        end >= start + CONNECTIONS as u64,
        "count {start} -> {end} for {CONNECTIONS} new connections: {ct:#}"
    );
    let invalid_delta = u64_at(ct, &["delta", "invalid"]);
    assert!(
        invalid_delta >= dropped,
        "invalid +{invalid_delta} for {dropped} dropped: {ct:#}"
    );
    assert_eq!(
        u64_at(ct, &["delta", "invalid"]),
        u64_at(ct, &["end", "stats", "invalid"]) - u64_at(ct, &["start", "stats", "invalid"])
    );
    host_global_is_read_in_the_initial_namespace(&report["host_global"]["start"]);
    host_global_is_read_in_the_initial_namespace(&report["host_global"]["end"]);
    let counters = &report["counters"];
    assert!(
        counters["IcmpMsgOutType3"].as_i64() >= Some(1)
            && counters["IcmpMsgInType3"].as_i64() >= Some(1),
        "the port unreachable should show: {counters:#}"
    );
    eprintln!(
        "conntrack in {}: count {start} -> {end}, invalid +{invalid_delta}, {dropped} dropped by the INVALID rule; ICMP type 3 out +{}, in +{}",
        ns.name(),
        counters["IcmpMsgOutType3"],
        counters["IcmpMsgInType3"]
    );
    drop((clients, servers, old_client, old_server));
}

#[test]
fn human_reports_show_conntrack_and_host_wide_figures() {
    require_root();
    let ns = Netns::new("cth");
    let text = success(&tcptrace(&["snapshot", "--netns", ns.name()]));
    assert!(text.contains("Conntrack (this namespace)"), "{text}");
    assert!(text.contains("conntrack: 0 entries of "), "{text}");
    assert!(text.contains("Host-wide TCP (initial namespace)"), "{text}");
    assert!(text.contains("allowed (tcp_max_orphans)"), "{text}");
    assert!(!text.contains("tcp_mem unknown"), "{text}");
}
