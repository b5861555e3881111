//! Root integration tests of the signals beyond resets and retransmits:
//! packets the kernel dropped (with its reason), the error a socket hands
//! its application, sends after an idle gap, and the size of
//! retransmitted segments. Real programs, real traffic in namespaces
//! each test makes, exact assertions on `tcptrace trace --json`.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{Netns, NetnsPair, Records, Trace, kill_group, owner_pid, require_root};

/// Starts the `peer` helper inside `ns`; returns it and its port.
fn spawn_peer(
    ns: &Netns,
    args: &[&str],
) -> (Child, std::io::BufReader<std::process::ChildStdout>, u16) {
    use std::io::BufRead;
    let mut child = ns
        .command(env!("CARGO_BIN_EXE_peer"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn peer");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("peer port line");
    let port = line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .expect("port N");
    (child, out, port)
}

fn iptables(ns: &Netns, v6: bool, rule: &[&str]) {
    ns.exec(if v6 { "ip6tables" } else { "iptables" }, rule);
}

fn me() -> u64 {
    u64::from(std::process::id())
}

/// One line per event for the test log: what was seen, for the record.
fn show(test: &str, ev: &Value) {
    let keep = [
        "kind",
        "local_addr",
        "local_port",
        "remote_addr",
        "remote_port",
        "netns",
        "state",
        "reason",
        "tcp_flags",
        "direction",
        "error",
        "errno",
        "idle_ns",
        "age_ns",
        "seg_len",
        "segs",
        "mss",
        "pmtu",
        "err",
    ];
    let mut line: serde_json::Map<String, Value> = keep
        .iter()
        .filter_map(|k| ev.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    line.insert(
        "owner".into(),
        ev["owner"].get("pid").cloned().unwrap_or(Value::Null),
    );
    eprintln!("[{test}] {}", Value::Object(line));
}

/// Every drop event in `records` whose 4-tuple involves `port`.
fn drops_on_port(records: &Records, port: u16) -> Vec<&Value> {
    records.on_port("drop", port)
}

/// The kernel's exact per-reason count of drops (summary) equals the
/// drop events the stream delivered, reason by reason.
fn assert_counts_match_events(records: &Records) {
    let summary = records.summary();
    assert_eq!(summary["events_lost"], 0, "nothing lost: {summary}");
    let counted = summary["drops_by_reason"]
        .as_object()
        .expect("drops_by_reason");
    let mut seen = std::collections::BTreeMap::<String, u64>::new();
    for ev in records.of_kind("drop") {
        *seen
            .entry(ev["reason"].as_str().expect("reason").to_string())
            .or_default() += 1;
    }
    // QUEUE_PURGE (buffers freed with their socket) is counted, not streamed.
    let counted: std::collections::BTreeMap<String, u64> = counted
        .iter()
        .filter(|(k, _)| k.as_str() != "QUEUE_PURGE")
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(counted, seen, "kernel counts vs events");
    // The host-wide counts (before any filter) hold these and maybe more.
    let host = &summary["host_drops_by_reason"];
    for (reason, n) in &counted {
        assert!(
            host[reason].as_u64() >= Some(*n),
            "host-wide {reason}: {host} vs {n}"
        );
    }
    assert_eq!(
        summary["by_kind"]["drop"].as_u64(),
        Some(seen.values().sum()),
        "{summary}"
    );
}

/// A firewall on the client dropping its SYNs: each SYN the kernel sent
/// (the first and its retransmits) is a `drop` with reason
/// NETFILTER_DROP, the connection's own addresses, flags SYN, direction
/// out, and the connecting process as owner.
fn syn_dropped_on_the_way_out(loopback: &str, v6: bool) {
    require_root();
    let ns = Netns::new("dropout");
    let listener_addr = SocketAddr::new(loopback.parse().unwrap(), 0);
    let trace = Trace::start(&["--netns", &ns.inode().to_string(), "--events", "drop"]);
    let (port, client_port) = ns.run(|| {
        let listener = TcpListener::bind(listener_addr).expect("bind");
        let port = listener.local_addr().unwrap().port();
        iptables(
            &ns,
            v6,
            &[
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "--syn",
                "--dport",
                &port.to_string(),
                "-j",
                "DROP",
            ],
        );
        let target = SocketAddr::new(listener_addr.ip(), port).to_string();
        let client = tests::sockets::connect_pending(&target);
        let client_port = client.local_addr().unwrap().as_socket().unwrap().port();
        // The SYN at 0 s and its retransmit at 1 s.
        thread::sleep(Duration::from_millis(1600));
        drop(client);
        (port, client_port)
    });
    thread::sleep(Duration::from_millis(200));
    let records = trace.stop();
    let drops = drops_on_port(&records, port);
    assert!(
        drops.len() >= 2,
        "the SYN and its retransmit: {:?}",
        records.records
    );
    for d in &drops {
        show("syn_dropped_on_the_way_out", d);
        assert_eq!(d["reason"], "NETFILTER_DROP", "{d}");
        assert_eq!(d["tcp_flags"], "SYN", "{d}");
        assert_eq!(d["direction"], "out", "{d}");
        assert_eq!(d["family"], if v6 { "ipv6" } else { "ipv4" });
        assert_eq!(d["local_addr"], loopback);
        assert_eq!(d["remote_addr"], loopback);
        assert_eq!(d["local_port"], client_port, "{d}");
        assert_eq!(d["remote_port"], port, "{d}");
        assert_eq!(owner_pid(d), me(), "the connecting process: {d}");
        assert_eq!(d["netns"], ns.inode());
    }
    assert_counts_match_events(&records);
}

#[test]
fn syn_dropped_on_the_way_out_ipv4() {
    syn_dropped_on_the_way_out("127.0.0.1", false);
}

#[test]
fn syn_dropped_on_the_way_out_ipv6() {
    syn_dropped_on_the_way_out("::1", true);
}

/// A firewall on the server dropping SYNs on arrival (another host,
/// seen over a veth): the drop is in the server's namespace, direction
/// in, local = the server's address, and belongs to the process that
/// listens there (no socket took the packet).
#[test]
fn syn_dropped_on_arrival_belongs_to_the_listener() {
    require_root();
    let pair = NetnsPair::new("dropin");
    let bind = format!("{}:0", NetnsPair::B4);
    let (mut server, _out, port) = spawn_peer(&pair.b, &["hold", &bind]);
    iptables(
        &pair.b,
        false,
        &[
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--syn",
            "--dport",
            &port.to_string(),
            "-j",
            "DROP",
        ],
    );
    let trace = Trace::start(&["--port", &port.to_string(), "--events", "drop"]);
    let client_port = pair.a.run(|| {
        let client = tests::sockets::connect_pending(&format!("{}:{port}", NetnsPair::B4));
        let local = client.local_addr().unwrap().as_socket().unwrap().port();
        thread::sleep(Duration::from_millis(1600));
        local
    });
    thread::sleep(Duration::from_millis(200));
    let records = trace.stop();
    kill_group(&mut server);
    let drops = drops_on_port(&records, port);
    assert!(drops.len() >= 2, "{:?}", records.records);
    for d in &drops {
        show("syn_dropped_on_arrival", d);
        assert_eq!(d["reason"], "NETFILTER_DROP", "{d}");
        assert_eq!(d["direction"], "in", "{d}");
        assert_eq!(d["tcp_flags"], "SYN");
        assert_eq!(d["netns"], pair.b.inode(), "the namespace that dropped it");
        assert_eq!(d["local_addr"], NetnsPair::B4);
        assert_eq!(d["local_port"], port);
        assert_eq!(d["remote_addr"], NetnsPair::A4);
        assert_eq!(d["remote_port"], client_port);
        assert_eq!(owner_pid(d), u64::from(server.id()), "the listener: {d}");
    }
    assert_counts_match_events(&records);
}

/// A connection reset by its peer: the client's socket hands its
/// application ECONNRESET, attributed to the client process; the peer's
/// own abortive close (SO_LINGER 0) hands nobody an error and is not one.
#[test]
fn reset_by_peer_is_econnreset_for_its_owner() {
    require_root();
    let ns = Netns::new("econnreset");
    let (mut server, _out, port) = spawn_peer(&ns, &["reset-after", "127.0.0.1:0", "100"]);
    let trace = Trace::start(&["--netns", &ns.inode().to_string(), "--events", "error,rst"]);
    let client_port = ns.run(|| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"hello").unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).expect("answer");
        assert!(n > 0);
        // The peer resets 100 ms after answering.
        let err = s.read(&mut buf).expect_err("reset");
        assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
        s.local_addr().unwrap().port()
    });
    server.wait().unwrap();
    thread::sleep(Duration::from_millis(200));
    let records = trace.stop();
    let errors: Vec<_> = records.on_port("socket_error", port);
    assert_eq!(errors.len(), 1, "only the client's: {:?}", records.records);
    let e = errors[0];
    show("reset_by_peer", e);
    assert_eq!(e["error"], "ECONNRESET");
    assert_eq!(e["errno"], libc::ECONNRESET);
    assert_eq!(owner_pid(e), me(), "the client process");
    assert_eq!(e["local_port"], client_port);
    assert_eq!(e["remote_port"], port);
    assert_eq!(e["netns"], ns.inode());
    assert_eq!(e["state"], "CLOSE");
    assert!(e["age_ns"].as_u64().unwrap() >= 100_000_000, "{e}");
    // The reset that caused it, received on the same socket just before.
    let rst = records.on_port("rst_received", client_port);
    assert_eq!(rst.len(), 1);
    assert_eq!(rst[0]["sock"], e["sock"]);
    assert!(rst[0]["mono_ns"].as_u64() <= e["mono_ns"].as_u64());
}

/// TCP_USER_TIMEOUT expiring while the peer has gone silent hands the
/// application ETIMEDOUT.
#[test]
fn user_timeout_expiry_is_etimedout() {
    require_root();
    let pair = NetnsPair::new("etimedout");
    let bind = format!("{}:0", NetnsPair::B4);
    let (mut server, _out, port) = spawn_peer(&pair.b, &["hold", &bind]);
    let trace = Trace::start(&["--port", &port.to_string(), "--events", "error,retrans"]);
    let (client_port, read_error) = pair.a.run(|| {
        let mut s = TcpStream::connect((NetnsPair::B4, port)).expect("connect");
        let timeout_ms: libc::c_uint = 600;
        // SAFETY: a valid socket and a pointer to an unsigned int.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_USER_TIMEOUT,
                (&timeout_ms as *const libc::c_uint).cast(),
                size_of::<libc::c_uint>() as libc::socklen_t,
            )
        };
        assert_eq!(
            rc,
            0,
            "TCP_USER_TIMEOUT: {}",
            std::io::Error::last_os_error()
        );
        // The peer goes silent: everything from us is dropped.
        iptables(
            &pair.b,
            false,
            &["-A", "INPUT", "-s", NetnsPair::A4, "-j", "DROP"],
        );
        s.write_all(b"are you there?").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = Instant::now();
        let err = s.read(&mut [0u8; 16]).expect_err("timed out");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "user timeout, not the read timeout"
        );
        (s.local_addr().unwrap().port(), err.raw_os_error())
    });
    assert_eq!(read_error, Some(libc::ETIMEDOUT));
    thread::sleep(Duration::from_millis(200));
    let records = trace.stop();
    kill_group(&mut server);
    let errors: Vec<_> = records.on_port("socket_error", port);
    assert_eq!(errors.len(), 1, "{:?}", records.records);
    let e = errors[0];
    show("user_timeout", e);
    assert_eq!(e["error"], "ETIMEDOUT");
    assert_eq!(e["errno"], libc::ETIMEDOUT);
    assert_eq!(owner_pid(e), me());
    assert_eq!(e["local_port"], client_port);
    assert_eq!(e["local_addr"], NetnsPair::A4);
    assert_eq!(e["remote_addr"], NetnsPair::B4);
    assert_eq!(e["netns"], pair.a.inode());
    assert!(
        !records.on_port("retransmit", port).is_empty(),
        "it gave up retransmitting"
    );
}

/// Sends after 0.2 s, 0.8 s and 1.5 s of idle with `--reuse-idle 500ms`:
/// exactly the two longer gaps are `reuse` events, their idle within
/// 50 ms of the gap, on the client's socket; the server answering at
/// once never is.
fn reuse_after_idle_gaps(hook: Option<&str>) {
    require_root();
    let ns = Netns::new("reuse");
    let netns = ns.inode().to_string();
    let args = [
        "--netns",
        &netns,
        "--events",
        "reuse,connect",
        "--reuse-idle",
        "500ms",
    ];
    let trace = match hook {
        None => Tracing::Default(Trace::start(&args)),
        Some(hook) => Tracing::Hook(TraceWithHook::start(&args, hook)),
    };
    let gaps = [200u64, 800, 1500];
    let (client_port, measured) = ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let echo = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 64];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let mut s = TcpStream::connect(addr).expect("connect");
        let exchange = |s: &mut TcpStream| {
            s.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            Instant::now()
        };
        let mut last = exchange(&mut s);
        let mut measured = Vec::new();
        for gap in gaps {
            thread::sleep(Duration::from_millis(gap));
            measured.push(last.elapsed());
            last = exchange(&mut s);
        }
        let port = s.local_addr().unwrap().port();
        drop(s);
        echo.join().unwrap();
        (port, measured)
    });
    thread::sleep(Duration::from_millis(200));
    let records = match trace {
        Tracing::Default(trace) => trace.stop(),
        Tracing::Hook(trace) => trace.stop(),
    };
    let reuses: Vec<_> = records.of_kind("reuse").collect();
    assert_eq!(reuses.len(), 2, "{:?}", records.records);
    for (ev, gap) in reuses.iter().zip(&measured[1..]) {
        show(&format!("reuse_after_idle (gap {gap:?})"), ev);
        assert_eq!(ev["local_port"], client_port, "the client's send: {ev}");
        assert_eq!(owner_pid(ev), me());
        assert_eq!(ev["state"], "ESTABLISHED");
        let idle = ev["idle_ns"].as_u64().expect("idle_ns") as i128;
        let gap = gap.as_nanos() as i128;
        assert!(
            (idle - gap).abs() <= 50_000_000,
            "idle {idle} ns vs gap {gap} ns: {ev}"
        );
        assert!(ev["age_ns"].as_u64().unwrap() as i128 >= gap);
    }
}

#[test]
fn reuse_after_idle_gaps_from_tcp_sendmsg_locked() {
    reuse_after_idle_gaps(None);
}

/// The same on the fallback that kernels without `tcp_sendmsg_locked`
/// (6.12) use, forced here: `sock_send_length` and the socket map.
#[test]
fn reuse_after_idle_gaps_from_sock_send_length() {
    reuse_after_idle_gaps(Some("send_length"));
}

enum Tracing {
    Default(Trace),
    Hook(TraceWithHook),
}

/// `tcptrace trace --json` with `TCPTRACE_REUSE_HOOK` set; it must say
/// that it took the fallback, and nothing else.
struct TraceWithHook {
    child: Child,
    stderr: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl TraceWithHook {
    fn start(args: &[&str], hook: &str) -> TraceWithHook {
        let mut cmd = std::process::Command::new(tests::tcptrace_bin());
        cmd.args(["trace", "--json"])
            .args(args)
            .env("TCPTRACE_REUSE_HOOK", hook);
        let (child, stderr, seen) = tests::trace::spawn_until(&mut cmd, "tracing; Ctrl-C to stop");
        let warnings: Vec<_> = seen
            .iter()
            .filter(|l| l.contains("not traced on this kernel"))
            .collect();
        assert_eq!(warnings.len(), 1, "{seen:?}");
        assert!(
            warnings[0].contains("reuse after idle comes from sock:sock_send_length"),
            "{seen:?}"
        );
        TraceWithHook {
            child,
            stderr,
            seen,
        }
    }

    fn stop(mut self) -> Records {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let (out, status) = tests::trace::collect(&mut self.child, &self.stderr, &mut self.seen);
        assert!(status.success(), "{status}: {:?}", self.seen);
        Records {
            records: out
                .lines()
                .map(|l| serde_json::from_str(l).expect("NDJSON"))
                .collect(),
            stderr: std::mem::take(&mut self.seen),
            text: out,
        }
    }
}

impl Drop for TraceWithHook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PMTU black hole: the path to the server crosses a router whose link
/// towards it has an MTU of 1400, and the router's ICMP "fragmentation
/// needed" is filtered. A small exchange passes; the bulk send stalls,
/// and every retransmitted segment is full-size (length = segments x
/// MSS, MSS from a 1500-byte MTU); the router drops them as PKT_TOO_BIG.
#[test]
fn pmtu_black_hole_retransmits_full_size_segments() {
    require_root();
    let client = Netns::new("pmtuc");
    let router = Netns::new("pmtur");
    let server = Netns::new("pmtus");
    const C: &str = "198.18.1.1";
    const RC: &str = "198.18.1.2";
    const RS: &str = "198.18.2.2";
    const S: &str = "198.18.2.1";
    client.ip(&[
        "link",
        "add",
        "veth0",
        "type",
        "veth",
        "peer",
        "name",
        "veth1",
        "netns",
        router.name(),
    ]);
    router.ip(&[
        "link",
        "add",
        "veth2",
        "type",
        "veth",
        "peer",
        "name",
        "veth3",
        "netns",
        server.name(),
    ]);
    client.ip(&["addr", "add", &format!("{C}/24"), "dev", "veth0"]);
    router.ip(&["addr", "add", &format!("{RC}/24"), "dev", "veth1"]);
    router.ip(&["addr", "add", &format!("{RS}/24"), "dev", "veth2"]);
    server.ip(&["addr", "add", &format!("{S}/24"), "dev", "veth3"]);
    // The narrow hop: the router's side of the link to the server. Both
    // ends still have 1500-byte interfaces and announce MSS 1460.
    router.ip(&["link", "set", "veth2", "mtu", "1400"]);
    for (ns, dev) in [
        (&client, "veth0"),
        (&router, "veth1"),
        (&router, "veth2"),
        (&server, "veth3"),
    ] {
        ns.ip(&["link", "set", dev, "up"]);
    }
    client.ip(&["route", "add", "default", "via", RC]);
    server.ip(&["route", "add", "default", "via", RS]);
    router.sysctl("net.ipv4.ip_forward", "1");
    router.exec(
        "iptables",
        &[
            "-A",
            "OUTPUT",
            "-p",
            "icmp",
            "--icmp-type",
            "fragmentation-needed",
            "-j",
            "DROP",
        ],
    );

    let listener = server.run(|| TcpListener::bind((S, 0)).expect("bind"));
    let port = listener.local_addr().unwrap().port();
    let trace = Trace::start(&["--port", &port.to_string(), "--events", "retrans,drop"]);
    let server_side = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut small = [0u8; 100];
        conn.read_exact(&mut small).unwrap();
        conn.write_all(&small).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
        let mut got = 0;
        let mut buf = [0u8; 65536];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        got
    });
    let (mss, client_port) = client.run(|| {
        let mut s = TcpStream::connect_timeout(
            &SocketAddr::new(S.parse().unwrap(), port),
            Duration::from_secs(3),
        )
        .expect("connect through the router");
        // The small exchange works.
        s.write_all(&[7u8; 100]).unwrap();
        let mut echo = [0u8; 100];
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.read_exact(&mut echo)
            .expect("small answer through the black hole");
        let mss = tcp_maxseg(&s);
        // A whole number of full segments (one initial window: nothing
        // waits for an ACK that never comes), so every one is full-size.
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(&vec![1u8; 10 * mss as usize]);
        thread::sleep(Duration::from_millis(2500));
        let port = s.local_addr().unwrap().port();
        set_linger_zero_and_close(s);
        (mss, port)
    });
    let received = server_side.join().unwrap();
    thread::sleep(Duration::from_millis(200));
    let records = trace.stop();
    assert_eq!(received, 0, "no full-size segment crossed the hop");
    assert!(mss > 1400 - 40, "MSS from the 1500-byte interfaces: {mss}");
    let retransmits: Vec<_> = records
        .on_port("retransmit", port)
        .into_iter()
        .filter(|r| r["local_port"] == client_port)
        .collect();
    assert!(retransmits.len() >= 2, "{:?}", records.records);
    for r in &retransmits {
        show("pmtu_black_hole", r);
        let len = r["seg_len"].as_u64().expect("seg_len");
        let segs = r["segs"].as_u64().expect("segs");
        assert_eq!(r["mss"], u64::from(mss), "{r}");
        assert_eq!(len, segs * u64::from(mss), "full-size segments: {r}");
        assert_eq!(r["pmtu"], 1500, "the client never learnt of the hop: {r}");
        assert_eq!(owner_pid(r), me());
    }
    let too_big: Vec<_> = records
        .on_port("drop", port)
        .into_iter()
        .filter(|d| d["reason"] == "PKT_TOO_BIG")
        .collect();
    assert!(
        !too_big.is_empty(),
        "the router's drops: {:?}",
        records.records
    );
    for d in &too_big {
        show("pmtu_black_hole", d);
        assert_eq!(d["netns"], router.inode(), "{d}");
        assert_eq!(d["direction"], "in");
        assert_eq!(
            d["local_addr"], S,
            "a forwarded packet: local is its destination"
        );
        assert_eq!(d["remote_addr"], C);
        assert_eq!(d["remote_port"], client_port);
        assert!(d["owner"].is_null(), "no process on the router owns it");
    }
    assert_counts_match_events(&records);
}

fn tcp_maxseg(s: &TcpStream) -> u32 {
    let mut mss: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket and out-pointers of the right sizes.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&mut mss as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_MAXSEG: {}", std::io::Error::last_os_error());
    mss as u32
}

fn set_linger_zero_and_close(s: TcpStream) {
    tests::set_linger_zero(&s);
    drop(s);
}

/// `top --json` counts drops by reason and socket errors by errno in the
/// rows of the process and of the peer they concern.
#[test]
fn top_shows_drops_by_reason_and_errors_by_errno() {
    require_root();
    let ns = Netns::new("topsig");
    let mut cmd = std::process::Command::new(tests::tcptrace_bin());
    cmd.args(["top", "--json", "--interval", "500ms", "--duration", "4s"])
        .args(["--netns", ns.name()]);
    let (mut child, _stderr, _seen) = tests::trace::spawn_until(&mut cmd, "top; Ctrl-C to stop");
    let port = ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        iptables(
            &ns,
            false,
            &[
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "--syn",
                "--dport",
                &port.to_string(),
                "-j",
                "DROP",
            ],
        );
        let pending = tests::sockets::connect_pending(&format!("127.0.0.1:{port}"));
        thread::sleep(Duration::from_millis(1300));
        drop(pending);
        // Nothing listens on 9: ECONNREFUSED.
        assert!(TcpStream::connect("127.0.0.1:9").is_err());
        port
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success());
    let last: Value = serde_json::from_str(out.lines().last().expect("a snapshot")).unwrap();
    let me_row = last["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == me())
        .unwrap_or_else(|| panic!("no row for this process: {last}"));
    eprintln!("[top] {me_row}");
    assert!(
        me_row["drops_by_reason"]["NETFILTER_DROP"].as_u64() >= Some(2),
        "{me_row}"
    );
    assert_eq!(
        me_row["socket_errors_by_errno"]["ECONNREFUSED"], 1,
        "{me_row}"
    );
    assert_eq!(
        me_row["socket_errors"], 1,
        "the failed connect's clean-up is no second error"
    );
    let peer = last["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["label"] == format!("127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("no row for the firewalled port: {last}"));
    assert_eq!(peer["drops"], me_row["drops_by_reason"]["NETFILTER_DROP"]);
}
