//! Root integration tests of the tracer: the real eBPF programs, real
//! traffic in a network namespace made by each test, exact assertions on
//! the NDJSON records `tcptrace trace --json` prints.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use tests::{Netns, NetnsPair, Trace, owner_pid, require_root, sh};

fn netns_arg(ns: &Netns) -> String {
    ns.inode().to_string()
}

/// Starts the `peer` helper inside `ns`; returns it, its stdout and its port.
fn spawn_peer(ns: &Netns, args: &[&str]) -> (Child, BufReader<std::process::ChildStdout>, u16) {
    tests::peer::spawn(ns.command(env!("CARGO_BIN_EXE_peer")).args(args))
}

fn linger0_close(stream: TcpStream) {
    tests::set_linger_zero(&stream);
    drop(stream);
}

fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

/// Stops `trace` once the last events had time to arrive; its records.
fn stop_settled(trace: Trace) -> tests::Records {
    settle();
    trace.stop()
}

/// This test process's pid, as the tracer reports owners.
fn me() -> u64 {
    u64::from(std::process::id())
}

/// The `peer` helper holding one connection in `pair.b`, on B4.
fn hold_peer_in_b(pair: &NetnsPair) -> (Child, BufReader<std::process::ChildStdout>, u16) {
    spawn_peer(&pair.b, &["hold", &format!("{}:0", NetnsPair::B4)])
}

/// The client (this test process) connects to a server in another
/// process, then aborts with linger 0: both ends' events, including the
/// RST the server receives in softirq, must name the right pid.
fn attribution(listen: &str, connect: &str, expect_family: &str, _server_sees: &str) {
    require_root();
    let ns = Netns::new("attr");
    let trace = Trace::start(&["--netns", &netns_arg(&ns)]);
    let bind = std::net::SocketAddr::new(listen.parse().unwrap(), 0).to_string();
    let (mut server, mut server_out, port) = spawn_peer(&ns, &["hold", &bind]);
    let client_port = ns.run(|| {
        let mut s = TcpStream::connect((connect, port)).expect("connect");
        s.write_all(b"hello").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let local = s.local_addr().unwrap().port();
        linger0_close(s);
        local
    });
    let mut ended = String::new();
    server_out.read_line(&mut ended).unwrap();
    assert_eq!(
        ended.trim(),
        "ended: ConnectionReset",
        "server should see the reset"
    );
    server.wait().unwrap();
    let records = stop_settled(trace);

    let server_pid = u64::from(server.id());

    let connects: Vec<_> = records.on_port("connect", client_port);
    assert_eq!(connects.len(), 1, "one connect: {:?}", records.records);
    assert_eq!(owner_pid(connects[0]), me());
    assert_eq!(connects[0]["family"], expect_family);
    assert!(connects[0]["connect_ns"].as_u64().unwrap() > 0);

    let passive: Vec<_> = records
        .on_port("state", client_port)
        .into_iter()
        .filter(|e| e["local_port"] == port && e["new_state"] == "ESTABLISHED")
        .collect();
    assert_eq!(passive.len(), 1, "server side SYN_RECV -> ESTABLISHED");
    assert_eq!(
        owner_pid(passive[0]),
        server_pid,
        "passive open belongs to the server process"
    );

    let sent: Vec<_> = records.on_port("rst_sent", client_port);
    assert_eq!(sent.len(), 1, "the client's abort: {:?}", records.records);
    assert_eq!(owner_pid(sent[0]), me());
    assert_eq!(sent[0]["local_port"], client_port);

    let received: Vec<_> = records.on_port("rst_received", client_port);
    assert_eq!(received.len(), 1);
    assert_eq!(
        owner_pid(received[0]),
        server_pid,
        "RST received in softirq is the server's"
    );
    assert_eq!(received[0]["local_port"], port);
    assert_eq!(received[0]["state"], "ESTABLISHED");
}

#[test]
fn attribution_ipv4() {
    attribution("127.0.0.1", "127.0.0.1", "ipv4", "127.0.0.1");
}

#[test]
fn attribution_ipv6() {
    attribution("::1", "::1", "ipv6", "::1");
}

#[test]
fn attribution_v4_mapped() {
    // A dual-stack listener sees an IPv4 client as ::ffff:127.0.0.1.
    attribution("::", "127.0.0.1", "ipv4", "::ffff:127.0.0.1");
}

/// A tracefs instance of our own, so the raw tracepoint can be read
/// without touching the global trace buffer.
struct RawTracepoint {
    dir: std::path::PathBuf,
}

impl RawTracepoint {
    fn enable(event: &str) -> RawTracepoint {
        let dir = std::path::PathBuf::from(format!(
            "/sys/kernel/tracing/instances/tcptrace-test-{}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).expect("create tracefs instance");
        std::fs::write(dir.join("events").join(event).join("enable"), "1").expect("enable event");
        RawTracepoint { dir }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(self.dir.join("trace")).expect("read trace")
    }
}

impl Drop for RawTracepoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `reason=` of the raw tcp_send_reset line whose source port is `port`.
fn raw_reason(text: &str, port: u16) -> Option<String> {
    text.lines()
        .filter(|l| l.contains("tcp_send_reset") && l.contains(&format!(":{port} dest=")))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("reason="))
                .map(str::to_string)
        })
}

#[test]
fn reset_reasons_match_the_kernel() {
    require_root();
    let ns = Netns::new("reason");
    let trace = Trace::start(&["--netns", &netns_arg(&ns), "--events", "rst"]);
    let raw = RawTracepoint::enable("tcp/tcp_send_reset");
    let (linger_port, unread_port, unread_client, answered_port, server_port) = ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();

        // 1. The client aborts with SO_LINGER 0.
        let client = TcpStream::connect(addr).unwrap();
        let (_accepted, _) = listener.accept().unwrap();
        let linger_port = client.local_addr().unwrap().port();
        linger0_close(client);

        // 2. The server closes with unread data in its receive queue.
        let mut client = TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        client.write_all(b"never read").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let unread_port = accepted.local_addr().unwrap().port();
        let unread_client = client.local_addr().unwrap().port();
        drop(accepted);
        let mut buf = [0u8; 8];
        let _ = client.read(&mut buf);

        // 3. The server answers a request, then aborts with SO_LINGER 0.
        let mut client = TcpStream::connect(addr).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        client.write_all(b"ping").unwrap();
        let mut request = [0u8; 4];
        accepted.read_exact(&mut request).unwrap();
        accepted.write_all(b"pong").unwrap();
        client.read_exact(&mut request).unwrap();
        let answered_port = client.local_addr().unwrap().port();
        std::thread::sleep(Duration::from_millis(50));
        linger0_close(accepted);
        let _ = client.read(&mut buf);
        (
            linger_port,
            unread_port,
            unread_client,
            answered_port,
            addr.port(),
        )
    });
    let records = stop_settled(trace);
    let kernel = raw.text();

    // Data segments each side had sent when its connection was reset:
    // 0 for a side that never sent a byte (however the jiffies compare),
    // more after a send.
    let segs = |kind: &str, local: u16, remote: u16| -> u64 {
        let found: Vec<_> = records
            .of_kind(kind)
            .filter(|e| e["local_port"] == local && e["remote_port"] == remote)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{kind} {local}->{remote}: {:?}",
            records.records
        );
        found[0]["data_segs_out"]
            .as_u64()
            .unwrap_or_else(|| panic!("data_segs_out known on this kernel: {:?}", found[0]))
    };
    // 1: neither side sent anything.
    assert_eq!(segs("rst_sent", linger_port, server_port), 0);
    assert_eq!(segs("rst_received", server_port, linger_port), 0);
    // 2: the server read nothing and answered nothing; the client had sent.
    assert_eq!(segs("rst_sent", server_port, unread_client), 0);
    assert!(segs("rst_received", unread_client, server_port) >= 1);
    // 3: both had sent.
    assert!(segs("rst_sent", server_port, answered_port) >= 1);
    assert!(segs("rst_received", answered_port, server_port) >= 1);

    let ours = |port: u16| -> String {
        let sent: Vec<_> = records
            .of_kind("rst_sent")
            .filter(|e| e["local_port"] == port)
            .collect();
        assert!(
            !sent.is_empty(),
            "no rst_sent from port {port}: {:?}",
            records.records
        );
        sent[0]["reason"]
            .as_str()
            .expect("a reason on this kernel")
            .to_string()
    };
    let linger_reason = ours(linger_port);
    assert_eq!(
        Some(linger_reason.clone()),
        raw_reason(&kernel, linger_port),
        "kernel said:\n{kernel}"
    );
    let unread_reason = ours(unread_port);
    assert_eq!(
        Some(unread_reason.clone()),
        raw_reason(&kernel, unread_port),
        "kernel said:\n{kernel}"
    );
    assert_eq!(unread_reason, "TCP_ABORT_ON_CLOSE");
    assert_ne!(linger_reason, unread_reason);
}

#[test]
fn idle_before_reset_matches_the_gap() {
    require_root();
    const GAP_MS: u64 = 1500;
    let ns = Netns::new("idle");
    let trace = Trace::start(&["--netns", &netns_arg(&ns), "--events", "rst"]);
    let (mut server, _out, port) =
        spawn_peer(&ns, &["reset-after", "127.0.0.1:0", &GAP_MS.to_string()]);
    let client_port = ns.run(|| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // Started before the exchange: the server's gap starts after it
        // answers, so this can only be longer than the gap, however late
        // a busy machine schedules this thread after the answer.
        let started = Instant::now();
        s.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        let err = s.read(&mut buf).expect_err("the server resets");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        assert!(started.elapsed() >= Duration::from_millis(GAP_MS));
        s.local_addr().unwrap().port()
    });
    server.wait().unwrap();
    let records = stop_settled(trace);
    let received: Vec<_> = records
        .of_kind("rst_received")
        .filter(|e| e["local_port"] == client_port)
        .collect();
    assert_eq!(received.len(), 1, "{:?}", records.records);
    let idle_ms = received[0]["idle_ns"].as_u64().expect("idle known") as f64 / 1e6;
    assert!(
        (idle_ms - GAP_MS as f64).abs() <= 100.0,
        "idle {idle_ms} ms, gap {GAP_MS} ms"
    );
    let age_ms = received[0]["age_ns"].as_u64().expect("age known") as f64 / 1e6;
    assert!(
        age_ms >= GAP_MS as f64 && age_ms < GAP_MS as f64 + 1000.0,
        "age {age_ms} ms"
    );
    assert_eq!(owner_pid(received[0]), me());
}

#[test]
fn retransmits_under_loss_are_counted_and_attributed() {
    require_root();
    let pair = NetnsPair::new("loss");
    let trace = Trace::start(&["--netns", &netns_arg(&pair.a), "--events", "retrans"]);
    let (mut server, _out, port) = hold_peer_in_b(&pair);
    let rule = format!("INPUT -p tcp --dport {port} -j DROP");
    let client_port = pair.a.run(|| {
        let mut s = TcpStream::connect((NetnsPair::B4, port)).unwrap();
        s.write_all(b"before").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // Everything to the server is lost for a while: the client retransmits.
        pair.b.exec_line(&format!("iptables -A {rule}"));
        s.write_all(b"lost for a while").unwrap();
        std::thread::sleep(Duration::from_millis(1300));
        pair.b.exec_line(&format!("iptables -D {rule}"));
        std::thread::sleep(Duration::from_millis(1000));
        let local = s.local_addr().unwrap().port();
        drop(s);
        local
    });
    server.wait().unwrap();
    let records = stop_settled(trace);
    let retrans: Vec<_> = records
        .of_kind("retransmit")
        .filter(|e| e["local_port"] == client_port)
        .collect();
    assert!(
        retrans.len() >= 2,
        "expected RTO retransmits, got {:?}",
        records.records
    );
    for event in &retrans {
        assert_eq!(owner_pid(event), me());
        assert_eq!(event["state"], "ESTABLISHED");
        assert_eq!(event["remote_addr"], NetnsPair::B4);
    }
    assert_eq!(
        records.summary()["by_kind"]["retransmit"].as_u64(),
        Some(retrans.len() as u64)
    );
}

/// The state hook runs as a raw tracepoint where BTF gives the socket's
/// layout, as the formatted tracepoint otherwise (and with
/// `TCPTRACE_STATE_HOOK=record`): both tracers, attached at once, must
/// report the same transitions field for field, for IPv4, IPv6 and
/// v4-mapped connections closed both ways, and a refused connect.
#[test]
fn state_changes_are_the_same_from_the_socket_and_from_the_record() {
    require_root();
    let ns = Netns::new("hook");
    let args = ["--netns", &netns_arg(&ns), "--events", "state,connect,rst"];
    let raw = Trace::start(&args);
    let record = Trace::start_with_env(&args, &[("TCPTRACE_STATE_HOOK", "record")]);
    // The one program that differs: a raw tracepoint (BPF prog type 17)
    // in the first, a formatted one (type 5) in the second.
    let (raw_types, record_types) = (prog_types(raw.pid()), prog_types(record.pid()));
    assert_eq!(raw_types.0, record_types.0 + 1, "raw tracepoints");
    assert_eq!(raw_types.1 + 1, record_types.1, "formatted tracepoints");
    let mut ports = Vec::new();
    ns.run(|| {
        for (listen, connect) in [
            ("127.0.0.1", "127.0.0.1"),
            ("::1", "::1"),
            ("::", "127.0.0.1"),
        ] {
            let listener = TcpListener::bind((listen, 0)).unwrap();
            let port = listener.local_addr().unwrap().port();
            for abort in [false, true] {
                let mut client = TcpStream::connect((connect, port)).unwrap();
                let (mut server, _) = listener.accept().unwrap();
                client.write_all(b"ping").unwrap();
                let mut buf = [0u8; 4];
                server.read_exact(&mut buf).unwrap();
                if abort {
                    linger0_close(client);
                } else {
                    drop(client);
                }
                drop(server);
            }
            ports.push(port);
        }
        TcpStream::connect("127.0.0.1:9").expect_err("nothing listens on 9");
    });
    let (raw, record) = (stop_settled(raw), stop_settled(record));
    let transitions = |records: &tests::Records| -> Vec<String> {
        let mut seen: Vec<String> = ["state", "connect", "connect_failed"]
            .iter()
            .flat_map(|kind| records.of_kind(kind))
            .map(|e| {
                let fields = [
                    "kind",
                    "family",
                    "local_addr",
                    "local_port",
                    "remote_addr",
                    "remote_port",
                    "old_state",
                    "new_state",
                    "netns",
                    "sock",
                ];
                let pid = &e["owner"]["pid"];
                format!("{} pid={pid}", fields.map(|f| e[f].to_string()).join(" "))
            })
            .collect();
        seen.sort();
        seen
    };
    let (from_socket, from_record) = (transitions(&raw), transitions(&record));
    // Six connections (two ends each) and a refused connect.
    assert!(from_socket.len() >= 6 * 5, "{from_socket:#?}");
    assert_eq!(from_socket, from_record);
    for port in ports {
        assert!(
            from_socket
                .iter()
                .any(|t| t.contains(&format!(" {port} ")) && t.contains("CLOSE_WAIT")),
            "port {port}: {from_socket:#?}"
        );
    }
}

/// A connection made by a named worker thread (tokio, Java and most
/// servers name theirs) is the process's: events carry the process's
/// name, and `--comm` with that name keeps them.
#[test]
fn owners_are_named_after_their_process_not_the_thread() {
    require_root();
    let ns = Netns::new("comm");
    let process = std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim()
        .to_string();
    let trace = Trace::start(&[
        "--netns",
        &netns_arg(&ns),
        "--comm",
        &process,
        "--events",
        "connect",
    ]);
    let port = ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::Builder::new()
            .name("conn-worker".into())
            .spawn(move || drop(TcpStream::connect(("127.0.0.1", port)).unwrap()))
            .unwrap()
            .join()
            .unwrap();
        drop(listener.accept().unwrap());
        port
    });
    let records = stop_settled(trace);
    let connects = records.on_port("connect", port);
    assert_eq!(connects.len(), 1, "{:?}", records.records);
    assert_eq!(
        connects[0]["owner"]["comm"],
        process.as_str(),
        "{}",
        connects[0]
    );
    assert_ne!(
        connects[0]["owner"]["tid"], connects[0]["owner"]["pid"],
        "a worker thread connected"
    );
}

/// How many raw (BPF_PROG_TYPE_RAW_TRACEPOINT, 17) and formatted
/// (BPF_PROG_TYPE_TRACEPOINT, 5) tracepoint programs process `pid` holds.
fn prog_types(pid: u32) -> (usize, usize) {
    let mut counts = (0, 0);
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let info = std::fs::read_to_string(fd.unwrap().path()).unwrap_or_default();
        match info
            .lines()
            .find_map(|l| l.strip_prefix("prog_type:"))
            .map(str::trim)
        {
            Some("17") => counts.0 += 1,
            Some("5") => counts.1 += 1,
            _ => {}
        }
    }
    counts
}

#[test]
fn failed_connect_to_a_closed_port() {
    require_root();
    let ns = Netns::new("refused");
    let trace = Trace::start(&["--netns", &netns_arg(&ns), "--events", "connect,rst"]);
    ns.run(|| {
        let err = TcpStream::connect("127.0.0.1:9").expect_err("nothing listens on 9");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    });
    let records = stop_settled(trace);
    let failed: Vec<_> = records.of_kind("connect_failed").collect();
    assert_eq!(failed.len(), 1, "{:?}", records.records);
    assert_eq!(failed[0]["remote_port"], 9);
    assert_eq!(owner_pid(failed[0]), me());
    assert_eq!(failed[0]["old_state"], "SYN_SENT");
    assert_eq!(failed[0]["new_state"], "CLOSE");
    assert!(failed[0]["connect_ns"].as_u64().is_some());
    // The connecting socket receives the RST; it never exchanged data, so
    // there is no idle time or age (its timestamps are still zero).
    let received: Vec<_> = records.of_kind("rst_received").collect();
    assert_eq!(received.len(), 1, "{:?}", records.records);
    assert_eq!(received[0]["state"], "SYN_SENT");
    assert_eq!(received[0]["remote_port"], 9);
    for field in ["idle_ns", "idle_send_ns", "idle_recv_ns", "age_ns"] {
        assert!(received[0][field].is_null(), "{field}: {}", received[0]);
    }
}

#[test]
fn ring_buffer_loss_is_counted_exactly() {
    require_root();
    let ns = Netns::new("storm");
    // 4 KiB holds about 30 records: a connection storm must overflow it.
    let trace = Trace::start(&["--netns", &netns_arg(&ns), "--ring-kib", "4"]);
    let made = ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = std::thread::spawn(move || {
            for _ in 0..2000 {
                let (s, _) = listener.accept().unwrap();
                drop(s);
            }
        });
        for _ in 0..2000 {
            let s = TcpStream::connect(addr).unwrap();
            linger0_close(s);
        }
        acceptor.join().unwrap();
        2000
    });
    let records = stop_settled(trace);
    let summary = records.summary();
    let received = summary["events_received"].as_u64().unwrap();
    let produced = summary["events_produced"].as_u64().unwrap();
    let lost = summary["events_lost"].as_u64().unwrap();
    assert!(
        lost > 0,
        "a 4 KiB ring should overflow under {made} connections"
    );
    assert_eq!(
        received + lost,
        produced,
        "received {received} + lost {lost} != produced {produced}"
    );
    assert_eq!(records.events().count() as u64, received);
    let loss_records: u64 = records
        .records
        .iter()
        .filter(|r| r["type"] == "loss")
        .map(|r| r["lost"].as_u64().unwrap())
        .sum();
    assert_eq!(loss_records, lost, "loss records add up to the total");
    // Every connection produced at least its connect and its reset.
    assert!(produced >= 2 * made);
}

#[test]
fn json_piped_to_head_exits_quietly() {
    require_root();
    let ns = Netns::new("head");
    let bin = tests::tcptrace_bin();
    let script = format!(
        "{} trace --json --netns {} | head -1",
        bin.display(),
        netns_arg(&ns)
    );
    let mut child = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stderr, _) = tests::trace::wait_for_stderr(child.stderr.take().unwrap(), "Ctrl-C to stop");
    ns.run(|| {
        let _ = TcpStream::connect("127.0.0.1:9");
    });
    // head exits after one line; tcptrace must notice and leave quietly.
    let status = tests::trace::wait_within(&mut child, Duration::from_secs(5));
    assert!(status.success());
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!(stdout.lines().count(), 1);
    let rest: Vec<String> = stderr.try_iter().collect();
    assert!(
        rest.iter()
            .all(|l| !l.contains("error") && !l.contains("panicked")),
        "{rest:?}"
    );
}

/// A full disk ends the run with the summary of what was seen and one
/// error line last, exit 1.
#[test]
fn full_disk_is_one_clear_error() {
    require_root();
    let ns = Netns::new("full");
    let mut child = std::process::Command::new(tests::tcptrace_bin())
        .args([
            "trace",
            "--json",
            "--output",
            "/dev/full",
            "--netns",
            &netns_arg(&ns),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stderr, _) = tests::trace::wait_for_stderr(child.stderr.take().unwrap(), "Ctrl-C to stop");
    ns.run(|| {
        let _ = TcpStream::connect("127.0.0.1:9");
    });
    let status = tests::trace::wait_within(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    let lines: Vec<String> = stderr.iter().collect();
    let last = lines.last().map(String::as_str).unwrap_or_default();
    assert!(
        last.starts_with("tcptrace: writing events to /dev/full:")
            && last.contains("No space left"),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.contains("panicked")));
    // The run still says what it saw before the error.
    assert!(
        lines.iter().any(|l| l.starts_with("--- tcptrace: ")),
        "the summary: {lines:?}"
    );
}

#[test]
fn not_root_is_one_clear_error() {
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(tests::tcptrace_bin())
        .args(["trace", "--duration", "1s"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
}

#[test]
fn bad_flags_are_one_line_and_exit_2() {
    let out = std::process::Command::new(tests::tcptrace_bin())
        .args(["trace", "--pid", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let _ = sh("true", &[]);
}

#[test]
fn connect_latency_matches_a_50ms_delay() {
    require_root();
    // No netem on this kernel: the server's namespace holds every packet
    // it sends (its SYN-ACKs included) for 50 ms via NFQUEUE.
    let pair = NetnsPair::new("lat");
    let trace = Trace::start(&["--netns", &netns_arg(&pair.a), "--events", "connect"]);
    let (mut server, _out, port) = hold_peer_in_b(&pair);
    let delay = tests::delay::Delay::new(&pair.b, Duration::from_millis(50));
    let client_port = pair.a.run(|| {
        let s = TcpStream::connect((NetnsPair::B4, port)).unwrap();
        let local = s.local_addr().unwrap().port();
        drop(s);
        local
    });
    assert!(delay.packets() > 0, "the delay rule matched nothing");
    drop(delay);
    server.wait().unwrap();
    let records = stop_settled(trace);
    let connects: Vec<_> = records.on_port("connect", client_port);
    assert_eq!(connects.len(), 1, "{:?}", records.records);
    let latency_ms = connects[0]["connect_ns"].as_u64().unwrap() as f64 / 1e6;
    eprintln!("connect latency under a 50 ms delay: {latency_ms:.2} ms");
    assert!(
        (latency_ms - 50.0).abs() <= 5.0,
        "connect latency {latency_ms} ms, delay 50 ms"
    );
    assert_eq!(owner_pid(connects[0]), me());
}

#[test]
fn kernel_filters_keep_only_what_was_asked() {
    require_root();
    let ns = Netns::new("filter");
    // The peer (another process, comm "peer") serves on one port; the
    // test process also makes a failed connect to port 9.
    let (mut server, mut server_out, port) = spawn_peer(&ns, &["hold", "127.0.0.1:0"]);
    let server_pid = server.id();
    let traces = [
        Trace::start(&["--netns", &netns_arg(&ns), "--pid", &server_pid.to_string()]),
        Trace::start(&["--netns", &netns_arg(&ns), "--port", "9"]),
        Trace::start(&["--netns", &netns_arg(&ns), "--comm", "peer"]),
        Trace::start(&["--netns", &netns_arg(&ns), "--events", "connect"]),
    ];
    ns.run(|| {
        let _ = TcpStream::connect("127.0.0.1:9");
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"x").unwrap();
        linger0_close(s);
    });
    let mut ended = String::new();
    server_out.read_line(&mut ended).unwrap();
    server.wait().unwrap();
    settle();
    let [by_pid, by_port, by_comm, by_kind] = traces.map(Trace::stop);

    let pids = |r: &tests::Records| -> Vec<u64> {
        r.events()
            .filter_map(|e| e["owner"]["pid"].as_u64())
            .collect()
    };
    assert!(
        by_pid.events().count() > 0,
        "the server's events: {:?} / comm: {:?} / kind: {:?}",
        by_pid.records,
        by_comm.records,
        by_kind.records
    );
    assert!(
        pids(&by_pid).iter().all(|p| *p == u64::from(server_pid)),
        "{:?}",
        by_pid.records
    );
    assert!(
        by_pid.events().all(|e| !e["owner"].is_null()),
        "unknown owners are not the server's"
    );

    assert!(by_port.events().count() > 0);
    assert!(
        by_port
            .events()
            .all(|e| e["local_port"] == 9 || e["remote_port"] == 9),
        "{:?}",
        by_port.records
    );

    assert!(by_comm.events().count() > 0);
    assert!(
        by_comm.events().all(|e| e["owner"]["comm"] == "peer"),
        "{:?}",
        by_comm.records
    );

    let kinds: Vec<&str> = by_kind
        .events()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"connect") && kinds.contains(&"connect_failed"),
        "{kinds:?}"
    );
    assert!(
        kinds
            .iter()
            .all(|k| *k == "connect" || *k == "connect_failed"),
        "{kinds:?}"
    );
    // Filtering happens in the kernel: what was filtered out was never produced.
    for r in [&by_pid, &by_port, &by_comm, &by_kind] {
        assert_eq!(
            r.summary()["events_produced"].as_u64(),
            Some(r.events().count() as u64)
        );
    }
}

#[test]
fn connections_open_before_tracing_are_attributed() {
    require_root();
    // The incident case: a client pool connected long before anyone ran
    // tcptrace; the reset that kills a pooled connection must still name
    // the client process.
    let ns = Netns::new("before");
    let (mut server, _out, port) = spawn_peer(&ns, &["reset-after", "127.0.0.1:0", "3000"]);
    let (client_port, reset) = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        let client = s.spawn(|| {
            ns.run(move || {
                let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
                c.write_all(b"ping").unwrap();
                let mut buf = [0u8; 4];
                c.read_exact(&mut buf).unwrap();
                tx.send(c.local_addr().unwrap().port()).unwrap();
                c.read(&mut buf).expect_err("the server resets").kind()
            })
        });
        let client_port = rx.recv().unwrap();
        // Only now does tracing start, while the connection sits idle.
        let trace = Trace::start(&["--netns", &netns_arg(&ns), "--events", "rst"]);
        let reset = client.join().unwrap();
        settle();
        ((client_port, trace.stop()), reset)
    });
    assert_eq!(reset, std::io::ErrorKind::ConnectionReset);
    server.wait().unwrap();
    let (client_port, records) = client_port;
    let received: Vec<_> = records
        .of_kind("rst_received")
        .filter(|e| e["local_port"] == client_port)
        .collect();
    assert_eq!(received.len(), 1, "{:?}", records.records);
    assert_eq!(
        owner_pid(received[0]),
        me(),
        "the pooled client owns the reset"
    );
    let sent: Vec<_> = records
        .of_kind("rst_sent")
        .filter(|e| e["remote_port"] == client_port)
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        owner_pid(sent[0]),
        u64::from(server.id()),
        "the server that reset it"
    );
    let idle_ms = received[0]["idle_ns"].as_u64().unwrap() as f64 / 1e6;
    assert!((idle_ms - 3000.0).abs() <= 100.0, "idle {idle_ms} ms");
}
