//! Scenario tests: reproduce each cause for real (real HAProxy, real
//! kernel queues, real port ranges, real packet drops) in a namespace of
//! its own, run `tcptrace diagnose` on that namespace only, and assert
//! that the top finding names the cause, the process and the figures,
//! and that nothing else is reported at high confidence.
//!
//! Each scenario is bounded (a few seconds of traffic) and everything it
//! starts is undone in `Drop`.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    Netns, NetnsPair,
    diagnose::{
        Diagnose, assert_top, describe_since, diagnose_while, figure, findings, first_affected,
    },
    haproxy::IdleTimeoutLb,
    http::{pooled_reuse, request},
    nginx::Nginx,
    require_root,
    server::Sink,
    sockopt,
};

fn me() -> u32 {
    std::process::id()
}

/// A real HAProxy with `timeout client 2s` in front of a backend; a
/// pooled client keeps 3 keep-alive connections and reuses them after
/// 3 s idle. HAProxy has closed them at 2 s; the reuse gets RSTs.
#[test]
fn lb_idle_timeout_behind_haproxy() {
    require_root();
    let t0 = Instant::now();
    let ns = Netns::new("lb");
    let lb = IdleTimeoutLb::start(&ns);
    let diagnose = Diagnose::start(ns.name());
    let failed_reuses = lb.pooled_reuse_after_gap(&ns);
    let (report, seconds) = diagnose.finish();
    assert_eq!(failed_reuses, 3, "every reuse after the gap should fail");

    let top = assert_top(&report, "lb_idle_timeout");
    assert_eq!(first_affected(top).0, u64::from(me()), "{top:#}");
    let idle = figure(top, "idle_timeout_s");
    assert!((1.9..=2.6).contains(&idle), "idle timeout {idle}: {top:#}");
    assert_eq!(top["figures"]["resets"], 3.0);
    let closer = top["affected"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["role"] == "closer")
        .expect("the closer is named");
    assert_eq!(closer["comm"], "haproxy");
    describe_since("lb_idle_timeout", &report, t0);
    let _ = seconds;
}

/// nginx with `keepalive_timeout 1s` on `server` in `server_ns`, watched
/// by `diagnose` there, and a pool in `client_ns` that reuses its three
/// connections after 2 s idle: every reuse fails. Returns the report and
/// its top finding, `server_keepalive_timeout` with a keep-alive timeout
/// of about 1 s.
fn keepalive_race(server_ns: &Netns, client_ns: &Netns, server: SocketAddr) -> Value {
    let _nginx = Nginx::start(server_ns, server, "1s");
    let diagnose = Diagnose::start(server_ns.name());
    let failed_reuses = client_ns.run(|| pooled_reuse(server, Duration::from_secs(2)));
    let (report, _) = diagnose.finish();
    assert_eq!(failed_reuses, 3, "every reuse after the gap should fail");
    let top = assert_top(&report, "server_keepalive_timeout");
    let idle = figure(top, "idle_timeout_s");
    assert!((0.9..=1.5).contains(&idle), "keep-alive {idle}: {top:#}");
    report
}

/// A real nginx with `keepalive_timeout 1s` (a server, not a proxy) and a
/// pooled client that reuses its connections after 2 s idle.
#[test]
fn server_keepalive_timeout_behind_nginx() {
    require_root();
    let t0 = Instant::now();
    let ns = Netns::new("ka");
    let report = keepalive_race(&ns, &ns, "127.0.0.1:8090".parse().unwrap());
    let top = &findings(&report)[0];
    assert_eq!(first_affected(top).0, u64::from(me()), "{top:#}");
    assert!(
        top["affected"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["role"] == "closer" && a["comm"] == "nginx"),
        "{top:#}"
    );
    describe_since("server_keepalive_timeout", &report, t0);
}

/// The same race watched from the server's host only: the clients are in
/// another namespace, tcptrace sees nginx close idle connections and then
/// answer the late requests with RSTs.
#[test]
fn server_keepalive_timeout_seen_from_the_server_host() {
    require_root();
    let t0 = Instant::now();
    let pair = NetnsPair::new("kas");
    let server = format!("{}:8090", NetnsPair::B4).parse().unwrap();
    let report = keepalive_race(&pair.b, &pair.a, server);
    let top = &findings(&report)[0];
    let (_, comm, role) = first_affected(top);
    assert_eq!((comm, role), ("nginx", "closer"), "{top:#}");
    assert_eq!(top["figures"]["resets"], 3.0, "{top:#}");
    describe_since("server_keepalive_timeout (server host)", &report, t0);
}

/// A listener with backlog 1 that accepts every 250 ms, under the
/// built-in `stress churn` run by `diagnose --during` in the namespace.
#[test]
fn accept_queue_overflow_on_a_tiny_backlog() {
    require_root();
    let t0 = Instant::now();
    let ns = Netns::new("accq");
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").expect("bind"));
    // listen() again only changes the backlog.
    // SAFETY: a valid listening socket.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 1) }, 0);
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let done = done.clone();
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut accepted = 0;
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(250));
                if listener.accept().is_ok() {
                    accepted += 1;
                }
            }
            accepted
        })
    };

    let load = format!(
        "stress churn {addr} --count 40 --concurrency 40 --duration 6s --connect-timeout 5s"
    );
    let diagnose = Diagnose::start_with(ns.name(), &["--during", &load]);
    // The run ends when the load does.
    let (report, _) = diagnose.finish_within(Duration::from_secs(20));
    done.store(true, Ordering::Relaxed);
    assert!(acceptor.join().unwrap() > 0, "the server accepted nothing");

    let top = assert_top(&report, "accept_queue_overflow");
    // The listener's holder (us) is named as the server; the clients are
    // the stress child (its tokio worker threads), not us.
    let affected = top["affected"].as_array().unwrap();
    assert!(
        affected
            .iter()
            .any(|a| a["role"] == "server" && a["pid"].as_u64() == Some(u64::from(me()))),
        "{top:#}"
    );
    let client = affected
        .iter()
        .find(|a| a["role"] == "client")
        .expect("the clients");
    let pid = client["pid"].as_u64().unwrap_or(0);
    assert!(pid != 0 && pid != u64::from(me()), "{top:#}");
    assert!(
        report["load"]["status"].as_str().is_some(),
        "the load ended by itself: {report:#}"
    );
    assert!(figure(top, "listen_overflows") >= 1.0);
    assert!(figure(top, "syn_retransmits") >= 1.0);
    assert!(
        top["summary"].as_str().unwrap().contains(&addr.to_string()),
        "{top:#}"
    );
    describe_since("accept_queue_overflow", &report, t0);
}

/// A client that opens and closes a connection per request, in a
/// namespace whose ephemeral port range has 10 ports.
#[test]
fn port_exhaustion_with_a_narrow_port_range() {
    require_root();
    let t0 = Instant::now();
    let pair = NetnsPair::new("port");
    pair.a.sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    let server: SocketAddr = format!("{}:8000", NetnsPair::B4).parse().unwrap();
    let listener = pair.b.run(|| TcpListener::bind(server).expect("bind"));
    let sink = Sink::spawn(listener);

    let ((ok, no_port), report) = diagnose_while(&pair.a, || {
        let (mut ok, mut no_port) = (0, 0);
        for _ in 0..30 {
            match TcpStream::connect_timeout(&server, Duration::from_secs(2)) {
                Ok(mut conn) => {
                    conn.write_all(b"x").unwrap();
                    conn.shutdown(Shutdown::Both).unwrap();
                    ok += 1;
                }
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => no_port += 1,
                Err(e) => panic!("unexpected connect error {e}"),
            }
            thread::sleep(Duration::from_millis(20));
        }
        (ok, no_port)
    });
    drop(sink);
    assert_eq!(ok, 10, "10 ports, 10 connections");
    assert_eq!(no_port, 20, "then EADDRNOTAVAIL");

    let top = assert_top(&report, "port_exhaustion");
    assert_eq!(first_affected(top).0, u64::from(me()), "{top:#}");
    assert_eq!(top["figures"]["port_range_size"], 10.0);
    assert_eq!(top["figures"]["time_wait"], 10.0);
    describe_since("port_exhaustion", &report, t0);
}

/// Five connections over loopback in a namespace of their own, each
/// ended by `end(client, server)`, which says whether the side that
/// should have got an RST did (read failed with ECONNRESET), while
/// `diagnose` watches: all five were reset, and the top finding is
/// `cause`, naming this process, with 5 resets.
fn five_resets(tag: &str, cause: &str, end: impl Fn(TcpStream, TcpStream) -> bool + Send) {
    let t0 = Instant::now();
    let ns = Netns::new(tag);
    let (resets, report) = diagnose_while(&ns, move || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        (0..5)
            .filter(|_| {
                let client = TcpStream::connect(addr).unwrap();
                let (server, _) = listener.accept().unwrap();
                end(client, server)
            })
            .count()
    });
    assert_eq!(resets, 5);
    let top = assert_top(&report, cause);
    assert_eq!(first_affected(top).0, u64::from(me()), "{top:#}");
    assert_eq!(top["figures"]["resets"], 5.0);
    describe_since(cause, &report, t0);
}

/// The next read on `conn` (2 s at most) fails with ECONNRESET.
fn read_is_reset(conn: &mut TcpStream) -> bool {
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 16];
    matches!(conn.read(&mut buf), Err(e) if e.kind() == ErrorKind::ConnectionReset)
}

/// A server that closes connections without reading the request.
#[test]
fn close_with_unread_data() {
    require_root();
    five_resets("unread", "close_with_unread_data", |mut client, server| {
        client.write_all(&[b'x'; 100]).unwrap();
        thread::sleep(Duration::from_millis(20));
        drop(server); // 100 bytes unread
        read_is_reset(&mut client)
    });
}

/// A client that closes with SO_LINGER {1, 0}.
#[test]
fn linger_zero_closer() {
    require_root();
    five_resets("linger", "linger_zero_abort", |mut client, mut server| {
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).unwrap();
        tests::set_linger_zero(&client);
        drop(client);
        read_is_reset(&mut server)
    });
}

/// Packets start being dropped mid-connection (iptables DROP on the
/// server's side); TCP_USER_TIMEOUT 2 s makes the client's kernel give up.
#[test]
fn retransmission_timeout_after_a_black_hole() {
    require_root();
    let t0 = Instant::now();
    let pair = NetnsPair::new("rto");
    let server: SocketAddr = format!("{}:9000", NetnsPair::B4).parse().unwrap();
    let listener = pair.b.run(|| TcpListener::bind(server).expect("bind"));
    let echo = thread::spawn(move || {
        for _ in 0..2 {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(15)))
                    .unwrap();
                let mut buf = [0u8; 64];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });

    let (timeouts, report) = diagnose_while(&pair.a, || {
        let mut conns: Vec<TcpStream> = (0..2)
            .map(|_| {
                let mut c = TcpStream::connect(server).unwrap();
                sockopt::set_int(&c, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 2000);
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                c.write_all(b"hello").unwrap();
                let mut buf = [0u8; 5];
                c.read_exact(&mut buf).unwrap();
                c
            })
            .collect();
        // The server's side drops everything from now on: a black hole
        // on the path (a local OUTPUT DROP would fail the sends locally).
        pair.b
            .exec_line("iptables -A INPUT -p tcp --dport 9000 -j DROP");
        for c in &mut conns {
            c.write_all(b"lost").unwrap();
        }
        let mut buf = [0u8; 4];
        conns
            .iter_mut()
            .map(|c| c.read(&mut buf))
            .filter(|r| matches!(r, Err(e) if e.kind() == ErrorKind::TimedOut))
            .count()
    });
    drop(pair); // ends the echo threads' connections
    let _ = echo.join();
    assert_eq!(timeouts, 2, "both connections time out");
    let top = assert_top(&report, "retransmission_timeout");
    assert_eq!(first_affected(top).0, u64::from(me()), "{top:#}");
    assert_eq!(top["figures"]["timeout_aborts"], 2.0);
    let for_s = figure(top, "retransmitting_for_s");
    assert!((1.0..=3.5).contains(&for_s), "{for_s}: {top:#}");
    describe_since("retransmission_timeout", &report, t0);
}

/// Connects to a port where nothing listens.
#[test]
fn nothing_listening() {
    require_root();
    let t0 = Instant::now();
    let ns = Netns::new("refused");
    let (refused, report) = diagnose_while(&ns, || {
        (0..5)
            .filter(|_| {
                matches!(TcpStream::connect("127.0.0.1:9"),
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused)
            })
            .count()
    });
    assert_eq!(refused, 5);
    let top = assert_top(&report, "nothing_listening");
    assert_eq!(first_affected(top).0, u64::from(me()), "{top:#}");
    assert_eq!(top["figures"]["refused"], 5.0);
    assert!(top["summary"].as_str().unwrap().contains("127.0.0.1:9"));
    describe_since("nothing_listening", &report, t0);
}

/// Healthy request/response traffic: no finding above low confidence.
#[test]
fn clean_run_has_no_problem() {
    require_root();
    let t0 = Instant::now();
    let ns = Netns::new("clean");
    let diagnose = Diagnose::start(ns.name());
    ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            for _ in 0..21 {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 256];
                // Answer every request until the client closes.
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .unwrap();
                }
            }
        });
        for _ in 0..20 {
            let mut conn = TcpStream::connect(addr).unwrap();
            request(&mut conn).unwrap();
            conn.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            conn.read_to_end(&mut rest).unwrap();
        }
        let mut kept = TcpStream::connect(addr).unwrap();
        for _ in 0..5 {
            request(&mut kept).unwrap();
            thread::sleep(Duration::from_millis(100));
        }
        kept.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        kept.read_to_end(&mut rest).unwrap();
        server.join().unwrap();
    });
    let (report, _) = diagnose.finish();
    let problems: Vec<_> = findings(&report)
        .iter()
        .filter(|f| f["confidence"] != "low")
        .collect();
    assert!(problems.is_empty(), "{report:#}");
    assert_eq!(report["verdict"], "no_problem");
    // One line per rule, each with what it looked at.
    let checked = report["checked"].as_array().unwrap();
    assert!(checked.len() >= 15, "{checked:#?}");
    assert!(
        checked.iter().any(|c| c
            .as_str()
            .unwrap()
            .starts_with("silent idle timeouts: 0 reuses")),
        "{checked:#?}"
    );
    assert!(report["events"].as_u64().unwrap() >= 40, "traffic was seen");
    describe_since("clean", &report, t0);
}
