//! Scenario tests for the causes `diagnose` names from the newer signals
//! (path MTU black hole, orphans / TCP memory, PAWS behind NAT), for its
//! calibrated rules (the accept queue names its listener, an abortive
//! close after a complete exchange is benign, loss is judged against the
//! segments sent) and for "never silent" (failures no cause explains are
//! listed). Real parts: a router namespace with a narrow hop, iptables
//! NAT and filters, conntrack, a real HAProxy, real kernel queues.
//!
//! Each test makes its own namespaces, runs `tcptrace diagnose` on one of
//! them for a few seconds, and undoes everything in `Drop`.

use std::{
    io::{ErrorKind, Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use socket2::{Domain, Socket, Type};
use tests::{
    Netns, NetnsPair,
    diagnose::{
        Diagnose, Guard, assert_top, describe_since, diagnose_while, figure, findings,
        first_affected,
    },
    haproxy::Haproxy,
    hostglobal::HostSysctl,
    require_root,
    server::Server,
    sockopt,
};

fn me() -> u64 {
    u64::from(std::process::id())
}

/// A veth pair from `a` (`a_if`, `a_addr`) to `b` (`b_if`, `b_addr`),
/// addresses with their prefix length, both ends up.
fn link(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    a.add_veth(a_if, b, b_if);
    a.up(a_if, &[a_addr]);
    b.up(b_if, &[b_addr]);
}

/// Findings at medium or high confidence.
fn problems(report: &Value) -> Vec<&Value> {
    findings(report)
        .iter()
        .filter(|f| f["confidence"] != "low")
        .collect()
}

/// The finding's text a reader acts on: summary and evidence.
fn text(finding: &Value) -> String {
    let mut all = vec![finding["summary"].as_str().unwrap_or_default().to_string()];
    all.extend(
        finding["evidence"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str().map(String::from)),
    );
    all.join("\n")
}

fn fixes(finding: &Value) -> String {
    finding["fix"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A PMTU black hole: the client reaches the server through a router
/// whose link to the server has an MTU of 1400, and the router's ICMP
/// "fragmentation needed" is filtered. Small exchanges pass; two uploads
/// stall until TCP_USER_TIMEOUT gives up. Watched from the client.
#[test]
fn pmtu_black_hole_behind_a_router() {
    require_root();
    let t0 = Instant::now();
    let client = Netns::new("mtuc");
    let router = Netns::new("mtur");
    let server = Netns::new("mtus");
    link(
        &client,
        "veth0",
        "198.18.1.1/24",
        &router,
        "veth1",
        "198.18.1.2/24",
    );
    link(
        &router,
        "veth2",
        "198.18.2.2/24",
        &server,
        "veth3",
        "198.18.2.1/24",
    );
    // Both ends keep 1500-byte interfaces (and announce MSS 1460).
    router.ip(&["link", "set", "veth2", "mtu", "1400"]);
    client.default_route("198.18.1.2");
    server.default_route("198.18.2.2");
    router.sysctl("net.ipv4.ip_forward", "1");
    router.exec_line("iptables -A OUTPUT -p icmp --icmp-type fragmentation-needed -j DROP");
    let listener = server.run(|| TcpListener::bind("198.18.2.1:0").expect("bind"));
    let addr = listener.local_addr().unwrap();
    let sink = thread::spawn(move || {
        let mut handlers = Vec::new();
        for _ in 0..2 {
            let Ok((mut conn, _)) = listener.accept() else {
                break;
            };
            handlers.push(thread::spawn(move || {
                let mut small = [0u8; 100];
                conn.read_exact(&mut small).unwrap();
                conn.write_all(&small).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 65536];
                let mut got = 0;
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                got
            }));
        }
        handlers
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<usize>()
    });

    let ((mss, stalled), report) = diagnose_while(&client, || {
        let uploads: Vec<_> = (0..2)
            .map(|_| {
                thread::spawn(move || {
                    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                        .expect("connect through the router");
                    s.write_all(&[7u8; 100]).unwrap();
                    let mut echo = [0u8; 100];
                    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    s.read_exact(&mut echo).expect("the small exchange passes");
                    let mss = sockopt::get_int(&s, libc::IPPROTO_TCP, libc::TCP_MAXSEG);
                    sockopt::set_int(&s, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 2_500);
                    s.set_write_timeout(Some(Duration::from_secs(4))).unwrap();
                    let _ = s.write_all(&vec![1u8; 10 * mss as usize]);
                    // The kernel gives up: the next call reports it.
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let timed_out =
                        matches!(s.read(&mut echo), Err(e) if e.kind() == ErrorKind::TimedOut);
                    (mss, timed_out)
                })
            })
            .collect();
        let results: Vec<_> = uploads.into_iter().map(|u| u.join().unwrap()).collect();
        (
            results[0].0,
            results.iter().filter(|(_, timed_out)| *timed_out).count(),
        )
    });
    assert_eq!(sink.join().unwrap(), 0, "no full-size segment crossed");
    assert_eq!(stalled, 2, "both uploads timed out");

    let top = assert_top(&report, "pmtu_black_hole");
    let (pid, _, role) = first_affected(top);
    assert_eq!((pid, role), (me(), "sender"), "{top:#}");
    assert_eq!(top["figures"]["mss"], f64::from(mss), "{top:#}");
    assert!(figure(top, "full_size_retransmits") >= 3.0);
    assert!(
        text(top).contains("198.18.2.1"),
        "the peer is named: {top:#}"
    );
    assert!(
        text(top).contains("no ICMP destination unreachable"),
        "{top:#}"
    );
    assert!(fixes(top).contains("clamp-mss"), "{top:#}");
    // The connections died of it: that finding defers to this one.
    let rto = findings(&report)
        .iter()
        .find(|f| f["cause"] == "retransmission_timeout");
    assert!(rto.is_none_or(|f| f["confidence"] == "low"), "{report:#}");
    describe_since("pmtu_black_hole", &report, t0);
}

/// Clients behind one NAT address, each with its own timestamp clock,
/// reuse the source port of a connection the server still holds in
/// TIME_WAIT. The kernel draws a random timestamp offset per 4-tuple;
/// `plan` measures it (TCP_TIMESTAMP of a probe from each client address
/// on each port, closed with an RST so no TIME_WAIT is left), so the
/// reuse always carries the older timestamp and PAWS rejects it.
struct NatClients {
    client: Netns,
    _nat: Netns,
    server: Netns,
    /// The two client addresses.
    sources: [IpAddr; 2],
    /// The NAT's address on the server's side.
    nat: IpAddr,
    /// The server's address and port.
    server_addr: SocketAddr,
    served: Arc<AtomicUsize>,
    /// The server answering; stopped on drop.
    _answering: Server,
}

impl NatClients {
    fn new(tag: &str, v6: bool) -> NatClients {
        let client = Netns::new(&format!("{tag}c"));
        let nat = Netns::new(&format!("{tag}n"));
        let server = Netns::new(&format!("{tag}s"));
        let (c1, c2, nc, ns, s, len, tables) = if v6 {
            (
                "2001:db8:5::1",
                "2001:db8:5::2",
                "2001:db8:5::fe",
                "2001:db8:6::fe",
                "2001:db8:6::1",
                "64",
                "ip6tables",
            )
        } else {
            (
                "198.18.5.1",
                "198.18.5.2",
                "198.18.5.254",
                "198.18.6.254",
                "198.18.6.1",
                "24",
                "iptables",
            )
        };
        let cidr = |addr: &str| format!("{addr}/{len}");
        link(&client, "veth0", &cidr(c1), &nat, "veth1", &cidr(nc));
        client.add_address("veth0", &cidr(c2));
        link(&nat, "veth2", &cidr(ns), &server, "veth3", &cidr(s));
        client.default_route(nc);
        server.default_route(ns);
        nat.sysctl(
            if v6 {
                "net.ipv6.conf.all.forwarding"
            } else {
                "net.ipv4.ip_forward"
            },
            "1",
        );
        nat.exec_line(&format!(
            "{tables} -t nat -A POSTROUTING -o veth2 -j MASQUERADE"
        ));
        // Forget finished flows at once, so the next client can have the
        // same source port (a busy NAT recycles ports the same way).
        nat.sysctl("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1");
        nat.sysctl("net.netfilter.nf_conntrack_tcp_timeout_close", "1");
        // Random timestamp offsets per address pair (the default).
        client.sysctl("net.ipv4.tcp_timestamps", "1");

        let listener = server
            .run(|| TcpListener::bind(SocketAddr::new(s.parse().unwrap(), 8000)))
            .expect("bind");
        let server_addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        // The server answers each request and closes first: the
        // TIME_WAIT stays on its side.
        let counted = served.clone();
        let answering = Server::spawn(listener, move |mut conn, _| {
            conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buf = [0u8; 64];
            if matches!(conn.read(&mut buf), Ok(n) if n > 0) {
                let _ = conn.write_all(b"ok");
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        NatClients {
            client,
            _nat: nat,
            server,
            sources: [c1.parse().unwrap(), c2.parse().unwrap()],
            nat: ns.parse().unwrap(),
            server_addr,
            served,
            _answering: answering,
        }
    }

    /// One request from `source` (port `port`) and its answer; returns
    /// how long the connect took.
    fn request(&self, source: IpAddr, port: u16) -> Duration {
        let socket =
            Socket::new(Domain::for_address(self.server_addr), Type::STREAM, None).expect("socket");
        socket.set_reuse_address(true).unwrap();
        socket
            .bind(&SocketAddr::new(source, port).into())
            .expect("bind the client port");
        let started = Instant::now();
        socket
            .connect_timeout(&self.server_addr.into(), Duration::from_secs(5))
            .expect("connect (after PAWS retries)");
        let took = started.elapsed();
        let mut conn: TcpStream = socket.into();
        conn.write_all(b"GET").unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest)
            .expect("the answer, then the server's FIN");
        assert_eq!(rest, b"ok");
        took
    }

    /// For `n` ports, which client address goes first (the one whose
    /// timestamps are ahead on that 4-tuple) and which reuses the port.
    /// Run before the diagnosis: the probes end with RSTs.
    fn plan(&self, n: u16) -> Vec<(u16, IpAddr, IpAddr)> {
        let plan = self.client.run(|| {
            (0..n)
                .map(|i| {
                    let port = 20_000 + i;
                    let [a, b] = self.sources;
                    let (ta, tb) = (
                        probe_timestamp(a, port, self.server_addr),
                        probe_timestamp(b, port, self.server_addr),
                    );
                    // Timestamps compare modulo 2^32, as PAWS does.
                    let gap = ta.wrapping_sub(tb) as i32;
                    assert!(gap.unsigned_abs() > 1_000, "clocks too close: {ta} {tb}");
                    if gap > 0 { (port, a, b) } else { (port, b, a) }
                })
                .collect()
        });
        // The NAT forgets the probes' flows (closed: 1 s).
        thread::sleep(Duration::from_millis(1_200));
        plan
    }

    /// Three planned ports collide while `diagnose` watches `watched`
    /// (the server's or the clients' namespace): every request, first
    /// and second round, was answered, and the top finding is
    /// `paws_rejected_syn` naming this process as `role`. Returns the
    /// report.
    fn diagnose_collisions(&self, watched: &Netns, role: &str) -> Value {
        let plan = self.plan(3);
        let diagnose = Diagnose::start(watched.name());
        let connects = self.collide(&plan);
        let (report, _) = diagnose.finish();
        eprintln!("connect times of the reusing clients: {connects:?}");
        assert_eq!(self.served.load(Ordering::Relaxed), 3 + 3);
        let top = assert_top(&report, "paws_rejected_syn");
        let (pid, _, affected) = first_affected(top);
        assert_eq!((pid, affected), (me(), role), "{top:#}");
        report
    }

    /// Per planned port, a client from the address whose clock is ahead;
    /// then, once the NAT has forgotten them, one from the other address
    /// on the same port. Returns the second round's connect times.
    fn collide(&self, plan: &[(u16, IpAddr, IpAddr)]) -> Vec<Duration> {
        self.client.run(|| {
            for (port, ahead, _) in plan {
                self.request(*ahead, *port);
            }
        });
        thread::sleep(Duration::from_millis(1_300));
        self.client.run(|| {
            thread::scope(|s| {
                let handles: Vec<_> = plan
                    .iter()
                    .map(|(port, _, behind)| s.spawn(move || self.request(*behind, *port)))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            })
        })
    }
}

/// The timestamp clock a connection from `source:port` to `server` uses
/// (`TCP_TIMESTAMP`: the kernel's clock plus the offset it derives from
/// the 4-tuple). Closed with an RST: no TIME_WAIT on either side.
fn probe_timestamp(source: IpAddr, port: u16, server: SocketAddr) -> u32 {
    let socket = Socket::new(Domain::for_address(server), Type::STREAM, None).expect("socket");
    socket.set_reuse_address(true).unwrap();
    socket.bind(&SocketAddr::new(source, port).into()).unwrap();
    socket
        .connect_timeout(&server.into(), Duration::from_secs(3))
        .expect("probe connect");
    let conn: TcpStream = socket.into();
    let ts = sockopt::get_int(&conn, libc::IPPROTO_TCP, libc::TCP_TIMESTAMP) as u32;
    tests::set_linger_zero(&conn);
    ts
}

/// PAWS behind NAT, watched on the server: its kernel drops the SYNs
/// that reuse a TIME_WAIT tuple with an older timestamp.
#[test]
fn paws_rejects_syns_from_clients_behind_nat() {
    require_root();
    let t0 = Instant::now();
    let nat = NatClients::new("paws", false);
    let report = nat.diagnose_collisions(&nat.server, "server");
    let top = &findings(&report)[0];
    assert!(figure(top, "paws_rejected") >= 2.0, "{top:#}");
    assert!(
        text(top).contains(&nat.nat.to_string()),
        "the NAT address is named: {top:#}"
    );
    assert!(fixes(top).contains("Let the clients close first"));
    describe_since("paws_rejected_syn (server)", &report, t0);
}

/// The same over IPv6, watched from the clients' side: they reset the
/// server's ACK for the old connection and retry their SYN a second later.
#[test]
fn paws_seen_from_the_clients_ipv6() {
    require_root();
    let t0 = Instant::now();
    let nat = NatClients::new("paws6", true);
    let report = nat.diagnose_collisions(&nat.client, "client");
    let top = &findings(&report)[0];
    assert!(figure(top, "client_resets") >= 2.0, "{top:#}");
    assert!(figure(top, "syn_retransmits") >= 2.0, "{top:#}");
    assert!(text(top).contains(&nat.server_addr.to_string()), "{top:#}");
    describe_since("paws_rejected_syn (clients, IPv6)", &report, t0);
}

/// A relay that closes right after queueing a big reply for slow
/// clients leaves orphans; with the host's `tcp_max_orphans` lowered to
/// 1 (host-global, under the lock, restored at once) the kernel resets
/// the next closing connections.
#[test]
fn orphan_limit_resets_closing_connections() {
    require_root();
    let t0 = Instant::now();
    let pair = NetnsPair::new("orph");
    let server: SocketAddr = format!("{}:1080", NetnsPair::B4).parse().unwrap();
    let listener = pair.b.run(|| TcpListener::bind(server).expect("bind"));
    const CLIENTS: usize = 12;
    let relay = thread::spawn(move || {
        let mut handlers = Vec::new();
        for _ in 0..CLIENTS {
            let Ok((mut conn, _)) = listener.accept() else {
                break;
            };
            handlers.push(thread::spawn(move || {
                sockopt::set_int(&conn, libc::SOL_SOCKET, libc::SO_SNDBUF, 1 << 20);
                let mut buf = [0u8; 64];
                let _ = conn.read(&mut buf);
                // Fits in the send buffer: write returns at once, and the
                // close leaves an orphan holding most of it.
                let _ = conn.write_all(&vec![b'z'; 300_000]);
            }));
        }
        for h in handlers {
            let _ = h.join();
        }
    });

    let limit = HostSysctl::set("net.ipv4.tcp_max_orphans", "1");
    let diagnose = Diagnose::start(pair.b.name());
    let outcomes = pair.a.run(|| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                thread::spawn(move || {
                    thread::sleep(Duration::from_millis(40 * i as u64));
                    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                    socket.set_recv_buffer_size(65_536).unwrap();
                    socket
                        .connect_timeout(&server.into(), Duration::from_secs(3))
                        .expect("connect to the relay");
                    let mut conn: TcpStream = socket.into();
                    conn.write_all(b"CONNECT x:443\r\n\r\n").unwrap();
                    // A slow consumer.
                    thread::sleep(Duration::from_millis(1_200));
                    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    let mut got = 0;
                    let mut buf = [0u8; 65536];
                    loop {
                        match conn.read(&mut buf) {
                            Ok(0) => return got == 300_000,
                            Ok(n) => got += n,
                            Err(_) => return false,
                        }
                    }
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().unwrap())
            .collect::<Vec<bool>>()
    });
    drop(limit);
    let (report, _) = diagnose.finish();
    relay.join().unwrap();
    let cut = outcomes.iter().filter(|complete| !**complete).count();
    assert!(cut >= 3, "replies cut by the kernel: {outcomes:?}");

    let top = assert_top(&report, "orphan_or_memory_abort");
    let (pid, _, role) = first_affected(top);
    assert_eq!((pid, role), (me(), "closer"), "{top:#}");
    assert!(figure(top, "resets") >= 3.0, "{top:#}");
    assert_eq!(top["figures"]["tcp_max_orphans"], 1.0, "{top:#}");
    assert!(text(top).contains("tcp_max_orphans = 1"), "{top:#}");
    assert!(fixes(top).contains("Raise net.ipv4.tcp_max_orphans"));
    describe_since("orphan_or_memory_abort", &report, t0);
}

/// A listener (the `peer` helper, backlog 16) that accepts one connection
/// every 300 ms, in the server's namespace; 40 clients at once from the
/// other namespace. The SYNs beyond the full queue are dropped; their
/// retransmits a second later come in a burst that is answered while a
/// slot is free, and most of the final ACKs then find the queue full.
/// Returns the report, the peer's pid and the listener's address, and
/// how many clients were reset.
fn overflow(v6: bool, abort_on_overflow: bool) -> (Value, u32, SocketAddr, usize) {
    let pair = NetnsPair::new(if v6 { "ovf6" } else { "ovf" });
    pair.b.sysctl(
        "net.ipv4.tcp_abort_on_overflow",
        if abort_on_overflow { "1" } else { "0" },
    );
    let ip = if v6 {
        format!("[{}]", NetnsPair::B6)
    } else {
        NetnsPair::B4.to_string()
    };
    let (child, _out, port) =
        tests::peer::spawn(pair.b.command(env!("CARGO_BIN_EXE_peer")).args([
            "slow-accept",
            &format!("{ip}:0"),
            "15000",
            "16",
            "300",
        ]));
    let peer = Guard(child);
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    // Without TC programs: on this loaded 2-core machine their per-packet
    // work spread the 40 SYNs out enough that the queue was full at SYN
    // time (silent SYN drops) instead of at the final ACK (the RST this
    // test is about) in 2 of 3 runs.
    let diagnose = Diagnose::start_with(pair.b.name(), &["--no-tc"]);
    let resets = pair.a.run(|| {
        let clients: Vec<_> = (0..40)
            .map(|_| {
                thread::spawn(move || {
                    let reset = |e: &std::io::Error| {
                        matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)
                    };
                    // The RST can beat the end of connect() itself.
                    let mut conn = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                        Ok(conn) => conn,
                        Err(e) => return reset(&e),
                    };
                    // The RST may come before the request is even written.
                    if let Err(e) = conn.write_all(b"GET / HTTP/1.1\r\n\r\n") {
                        return reset(&e);
                    }
                    // Long enough for a dropped final ACK's SYN-ACK retransmit
                    // (1 s after the first, later on a loaded machine).
                    conn.set_read_timeout(Some(Duration::from_millis(3_000)))
                        .unwrap();
                    let mut buf = [0u8; 16];
                    matches!(conn.read(&mut buf), Err(e) if reset(&e))
                })
            })
            .collect();
        clients
            .into_iter()
            .filter_map(|c| c.join().ok())
            .filter(|reset| *reset)
            .count()
    });
    let (report, _) = diagnose.finish();
    (report, peer.0.id(), addr, resets)
}

/// `tcp_abort_on_overflow=1`: the overflowing clients get RSTs. The
/// finding names the listener (process, address, backlog, somaxconn)
/// and says the setting turned overflows into resets.
#[test]
fn accept_queue_overflow_with_abort_on_overflow() {
    require_root();
    let t0 = Instant::now();
    let (report, pid, addr, resets) = overflow(false, true);
    let top = assert_top(&report, "accept_queue_overflow");
    assert!(resets >= 2, "clients reset: {resets}: {top:#}");
    let server = &top["affected"][0];
    assert_eq!(
        (
            server["pid"].as_u64(),
            server["comm"].as_str(),
            server["role"].as_str()
        ),
        (Some(u64::from(pid)), Some("peer"), Some("server")),
        "{top:#}"
    );
    assert!(text(top).contains(&addr.to_string()), "{top:#}");
    assert!(text(top).contains("tcp_abort_on_overflow=1"), "{top:#}");
    assert_eq!(top["figures"]["backlog"], 16.0, "{top:#}");
    assert!(top["figures"]["somaxconn"].as_f64().is_some());
    assert!(figure(top, "overflow_resets") >= 3.0);
    assert!(fixes(top).contains("tcp_abort_on_overflow=0"), "{top:#}");
    assert!(fixes(top).contains("now 16"), "{top:#}");
    describe_since("accept_queue_overflow (abort_on_overflow=1)", &report, t0);
}

/// `tcp_abort_on_overflow=0` over IPv6: the final ACKs are dropped and
/// the listener retransmits its SYN-ACKs; no client is reset.
#[test]
fn accept_queue_overflow_without_abort_ipv6() {
    require_root();
    let t0 = Instant::now();
    let (report, pid, addr, resets) = overflow(true, false);
    assert_eq!(resets, 0, "no client is reset");
    let top = assert_top(&report, "accept_queue_overflow");
    assert_eq!(
        top["affected"][0]["pid"].as_u64(),
        Some(u64::from(pid)),
        "{top:#}"
    );
    assert_eq!(top["affected"][0]["role"], "server");
    assert!(text(top).contains(&addr.to_string()), "{top:#}");
    assert!(!text(top).contains("tcp_abort_on_overflow=1"), "{top:#}");
    assert!(figure(top, "synack_retransmits") >= 1.0, "{top:#}");
    assert_eq!(top["figures"]["backlog"], 16.0, "{top:#}");
    describe_since(
        "accept_queue_overflow (abort_on_overflow=0, IPv6)",
        &report,
        t0,
    );
}

/// A backend behind a real HAProxy (`option http-server-close`) over
/// IPv6: HAProxy ends every finished server connection with an RST
/// (SO_LINGER 0, by design). Watched on the backend, which logs the
/// resets: every request was answered, so nothing is at medium or high.
#[test]
fn haproxy_linger_zero_to_backends_is_benign() {
    require_root();
    let t0 = Instant::now();
    let pair = NetnsPair::new("hlz");
    let backend: SocketAddr = format!("[{}]:8081", NetnsPair::B6).parse().unwrap();
    let listener = pair
        .b
        .run(|| TcpListener::bind(backend).expect("bind backend"));
    let resets = Arc::new(AtomicUsize::new(0));
    let counted = resets.clone();
    let server = Server::spawn(listener, move |mut conn, _| {
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {
                    if conn
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    if e.kind() == ErrorKind::ConnectionReset {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
            }
        }
    });
    let front: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let _haproxy = Haproxy::start(
        &pair.a,
        &format!(
            "global\n  maxconn 100\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n  option http-server-close\n\
             frontend fe\n  bind 127.0.0.1:8080\n  default_backend be\n\
             backend be\n  server b1 {backend}\n"
        ),
        front,
    );

    let diagnose = Diagnose::start(pair.b.name());
    let answered = pair.a.run(|| {
        (0..20)
            .filter(|i| {
                let mut conn = TcpStream::connect(front).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                conn.write_all(
                    format!("GET /invoice/{i} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .unwrap();
                let mut reply = Vec::new();
                let _ = conn.read_to_end(&mut reply);
                thread::sleep(Duration::from_millis(50));
                reply.starts_with(b"HTTP/1.1 200")
            })
            .count()
    });
    // The backend reports the last reset a moment after the reply.
    thread::sleep(Duration::from_millis(200));
    let (report, _) = diagnose.finish();
    drop(server);
    assert_eq!(answered, 20, "every request succeeded");
    assert!(
        resets.load(Ordering::Relaxed) >= 15,
        "the backend saw the resets: {}",
        resets.load(Ordering::Relaxed)
    );
    assert!(problems(&report).is_empty(), "{report:#}");
    assert_eq!(report["verdict"], "no_problem");
    let linger = findings(&report)
        .iter()
        .find(|f| f["cause"] == "linger_zero_abort")
        .unwrap_or_else(|| panic!("the resets are explained: {report:#}"));
    assert!(
        text(linger).contains("after complete exchanges"),
        "{linger:#}"
    );
    assert_eq!(linger["affected"][0]["role"], "server", "{linger:#}");
    describe_since("haproxy linger 0 (control)", &report, t0);
}

/// A busy bulk transfer with a trace of loss (iptables drops one packet
/// in 2000): the kernel repairs it, the retransmits are a sliver of the
/// segments sent, and nothing is reported at medium or high.
#[test]
fn busy_bulk_transfer_with_rare_loss_is_healthy() {
    require_root();
    let t0 = Instant::now();
    let pair = NetnsPair::new("bulk");
    let server: SocketAddr = format!("{}:9100", NetnsPair::B4).parse().unwrap();
    let listener = pair.b.run(|| TcpListener::bind(server).expect("bind"));
    // Every 2000th packet, not a random one in 2000: with GRO a packet
    // carries up to 64 KiB, so the transfer is only ~6,400 packets and a
    // random draw missed them all about once in 25 runs.
    pair.a.exec_line(
        "iptables -A INPUT -p tcp --sport 9100 -m statistic --mode nth --every 2000 --packet 0 -j DROP",
    );
    const BYTES: usize = 400 << 20;
    let sender = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..BYTES / chunk.len() {
            conn.write_all(&chunk).unwrap();
        }
        conn.shutdown(Shutdown::Write).unwrap();
    });
    let diagnose = Diagnose::start(pair.b.name());
    let received = pair.a.run(|| {
        let mut conn = TcpStream::connect(server).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break got,
                Ok(n) => got += n,
                Err(e) => panic!("transfer failed after {got} bytes: {e}"),
            }
        }
    });
    sender.join().unwrap();
    let (report, _) = diagnose.finish();
    assert_eq!(received, BYTES);
    let retransmits = report["counters"]["TcpRetransSegs"].as_i64().unwrap_or(0);
    assert!(
        retransmits > 0,
        "the loss was real: {:#}",
        report["counters"]
    );
    assert!(problems(&report).is_empty(), "{report:#}");
    assert_eq!(report["verdict"], "no_problem");
    let checked = report["checked"].to_string();
    assert!(checked.contains("segments sent retransmitted"), "{checked}");
    describe_since("bulk transfer (control)", &report, t0);
}

/// Connects rejected by a firewall with ICMP host-unreachable: no known
/// cause names it, but the run does not say "no problem": the failures
/// are listed with who was hit.
#[test]
fn failures_no_cause_explains_are_never_silent() {
    require_root();
    let t0 = Instant::now();
    let pair = NetnsPair::new("unx");
    let server: SocketAddr = format!("{}:9200", NetnsPair::B4).parse().unwrap();
    let _listener = pair.b.run(|| TcpListener::bind(server).expect("bind"));
    pair.b.exec_line(
        "iptables -A INPUT -p tcp --dport 9200 --syn -j REJECT --reject-with icmp-host-unreachable",
    );
    let (unreachable, report) = diagnose_while(&pair.a, || {
        (0..5)
            .filter(|_| {
                matches!(TcpStream::connect_timeout(&server, Duration::from_secs(3)),
                    Err(e) if e.raw_os_error() == Some(libc::EHOSTUNREACH))
            })
            .count()
    });
    assert_eq!(unreachable, 5);
    assert_eq!(report["verdict"], "problem", "{report:#}");
    let top = &findings(&report)[0];
    assert_eq!(top["cause"], "unexplained", "{report:#}");
    assert_eq!(top["confidence"], "medium", "{top:#}");
    let (pid, _, _) = first_affected(top);
    assert_eq!(pid, me(), "{top:#}");
    let all = text(top);
    // The connects fail at once on the ICMP error (observed: no socket
    // error event comes with them on 6.18, so the failed connects are
    // what is listed).
    assert!(
        all.contains("5 connects failed") || all.contains("EHOSTUNREACH"),
        "{top:#}"
    );
    assert!(
        top["figures"]["unexplained_events"].as_f64() >= Some(5.0),
        "{top:#}"
    );
    assert!(
        all.contains(&server.to_string()),
        "who was hit, with whom: {top:#}"
    );
    describe_since("unexplained", &report, t0);
}
