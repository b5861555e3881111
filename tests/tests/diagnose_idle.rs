//! Idle-timeout scenarios through a real NAT: a client namespace, a node
//! namespace that DNATs a service address to a backend namespace with
//! conntrack (a short `nf_conntrack_tcp_timeout_established`,
//! `nf_conntrack_tcp_loose` 0: a forgotten flow is INVALID) and an
//! iptables rule that drops or rejects (RST) INVALID packets, as IPVS /
//! cloud NATs do with flows idle past their timeout. Pooled connections
//! are reused after gaps on both sides of the timeout; `tcptrace
//! diagnose` watches the client's namespace or the node's and must name
//! the cause, the figures and the fix.
//!
//! What varies: silent drop vs RST, timeouts of 2, 3 and 4 s, IPv4 and
//! IPv6, the client or the node watched. Each test takes a few seconds of
//! traffic; everything is undone in `Drop`.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{Mutex, atomic::Ordering},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    Netns,
    diagnose::{Diagnose, assert_top, describe_since, figure, findings, first_affected},
    netns::pin_neighbours,
    require_root,
    server::Server,
    set_linger_zero, sockopt,
};

/// What the node does with a packet of a flow it forgot.
#[derive(Clone, Copy, PartialEq)]
enum Forget {
    /// `-j DROP`: the client's send is never answered.
    Drop,
    /// `-j REJECT --reject-with tcp-reset`: the client gets an RST.
    Reset,
}

/// client --- node (DNAT vip -> backend, conntrack) --- backend.
struct NatPath {
    app: Netns,
    node: Netns,
    _db: Netns,
    /// The service address clients connect to.
    vip: SocketAddr,
    /// The echo server on the backend; stopped first on drop.
    server: Option<Server>,
    /// Client connections whose last send got no answer, aborted with an
    /// RST when the path is dropped (the server side aborts its own open
    /// connections on stop): closed with a FIN into a flow the node forgot
    /// they would live on as orphans retransmitting for minutes, noise for
    /// the next test that watches the whole host.
    stuck: Mutex<Vec<TcpStream>>,
}

impl NatPath {
    fn new(tag: &str, v6: bool, timeout_s: u32, forget: Forget) -> NatPath {
        let app = Netns::new(&format!("{tag}a"));
        let node = Netns::new(&format!("{tag}n"));
        let db = Netns::new(&format!("{tag}d"));
        app.add_veth("a0", &node, "n0");
        node.add_veth("n1", &db, "d0");
        let (app_addr, node_a, node_d, db_addr, vip, prefix) = if v6 {
            (
                "2001:db8:71::2",
                "2001:db8:71::1",
                "2001:db8:72::1",
                "2001:db8:72::2",
                "2001:db8:79::9",
                "64",
            )
        } else {
            (
                "198.18.71.2",
                "198.18.71.1",
                "198.18.72.1",
                "198.18.72.2",
                "198.18.79.9",
                "24",
            )
        };
        for (ns, dev, addr) in [
            (&app, "a0", app_addr),
            (&node, "n0", node_a),
            (&node, "n1", node_d),
            (&db, "d0", db_addr),
        ] {
            ns.up(dev, &[&format!("{addr}/{prefix}")]);
        }
        app.default_route(node_a);
        db.default_route(node_d);
        // The service address routes to the backends, as on a real load
        // balancer: a packet that misses the DNAT meets the FORWARD rule.
        let family = if v6 { "-6" } else { "-4" };
        let vip_host = format!("{vip}/{}", if v6 { 128 } else { 32 });
        node.ip(&[family, "route", "add", &vip_host, "via", db_addr]);
        if v6 {
            node.sysctl("net.ipv6.conf.all.forwarding", "1");
        } else {
            node.sysctl("net.ipv4.ip_forward", "1");
        }
        let tables = if v6 { "ip6tables" } else { "iptables" };
        let backend: SocketAddr = SocketAddr::new(db_addr.parse().unwrap(), 5432);
        node.exec_line(&format!(
            "{tables} -t nat -A PREROUTING -d {vip} -p tcp --dport 5432 -j DNAT --to-destination {backend}"
        ));
        let verdict = match forget {
            Forget::Drop => "DROP",
            Forget::Reset => "REJECT --reject-with tcp-reset",
        };
        node.exec_line(&format!(
            "{tables} -A FORWARD -p tcp -m conntrack --ctstate INVALID -j {verdict}"
        ));
        // Per-namespace conntrack knobs (present once the rules loaded it).
        node.sysctl("net.netfilter.nf_conntrack_tcp_loose", "0");
        node.sysctl(
            "net.netfilter.nf_conntrack_tcp_timeout_established",
            &timeout_s.to_string(),
        );
        // No neighbour discovery to lose on the fresh veths (see
        // `pin_neighbours`): the test's timeline is to the millisecond.
        pin_neighbours((&app, "a0", &[app_addr]), (&node, "n0", &[node_a]));
        pin_neighbours((&node, "n1", &[node_d]), (&db, "d0", &[db_addr]));
        let server = echo_server(&db, backend);
        NatPath {
            app,
            node,
            _db: db,
            vip: SocketAddr::new(vip.parse().unwrap(), 5432),
            server: Some(server),
            stuck: Mutex::default(),
        }
    }

    /// `tcptrace diagnose` on `watched` (the client's or the node's
    /// namespace) while the client runs [`NatPath::pool`]: what each lane
    /// got, and the report.
    fn diagnose_pool(
        &self,
        watched: &Netns,
        lanes: &[&[u64]],
        user_timeout_ms: Option<u32>,
        answer_wait: Duration,
    ) -> (Vec<Vec<String>>, Value) {
        let diagnose = Diagnose::start(watched.name());
        let got = self.pool(lanes, user_timeout_ms, answer_wait);
        let (report, _) = diagnose.finish();
        (got, report)
    }

    /// Pooled connections from the client, one per lane, each reused after
    /// the lane's gaps (ms) until a reuse fails. `user_timeout_ms`: let
    /// the kernel give up on a stalled send (TCP_USER_TIMEOUT); the
    /// client itself waits `answer_wait` for each answer. Returns per lane
    /// what each reuse got: `ok`, `no answer`, or the error.
    fn pool(
        &self,
        lanes: &[&[u64]],
        user_timeout_ms: Option<u32>,
        answer_wait: Duration,
    ) -> Vec<Vec<String>> {
        let vip = self.vip;
        let stuck = &self.stuck;
        self.app.run(|| {
            thread::scope(|s| {
                let handles: Vec<_> = lanes
                    .iter()
                    .map(|gaps| {
                        s.spawn(move || {
                            let mut conn = TcpStream::connect_timeout(&vip, Duration::from_secs(2))
                                .expect("connect to the service address");
                            conn.set_read_timeout(Some(answer_wait)).unwrap();
                            if let Some(ms) = user_timeout_ms {
                                sockopt::set_int(
                                    &conn,
                                    libc::IPPROTO_TCP,
                                    libc::TCP_USER_TIMEOUT,
                                    ms as i32,
                                );
                            }
                            let mut got = Vec::new();
                            for gap in gaps.iter() {
                                thread::sleep(Duration::from_millis(*gap));
                                let result = conn.write_all(b"PING\n").and_then(|()| {
                                    let mut buf = [0u8; 16];
                                    match conn.read(&mut buf)? {
                                        0 => Err(ErrorKind::UnexpectedEof.into()),
                                        _ => Ok(()),
                                    }
                                });
                                match result {
                                    Ok(()) => got.push("ok".to_string()),
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            ErrorKind::WouldBlock | ErrorKind::TimedOut
                                        ) && e.raw_os_error() != Some(libc::ETIMEDOUT) =>
                                    {
                                        got.push("no answer".into());
                                        break;
                                    }
                                    Err(e) => {
                                        got.push(format!("{:?}", e.kind()));
                                        break;
                                    }
                                }
                            }
                            if got.last().is_some_and(|r| r != "ok") {
                                stuck.lock().unwrap().push(conn);
                            }
                            got
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            })
        })
    }
}

impl Drop for NatPath {
    fn drop(&mut self) {
        for conn in self.stuck.lock().unwrap().drain(..) {
            set_linger_zero(&conn);
        }
        drop(self.server.take());
    }
}

/// An echo server on the backend, on threads of its own: each connection
/// echoes until the client closes, or is aborted with an RST when the
/// server stops.
fn echo_server(db: &Netns, backend: SocketAddr) -> Server {
    let listener = db.run(|| TcpListener::bind(backend).expect("bind backend"));
    Server::spawn(listener, |mut conn, stop| {
        conn.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        if stop.load(Ordering::Relaxed) {
            set_linger_zero(&conn);
        }
    })
}

/// What each lane of a pool got, written `ok,TimedOut` per lane.
fn outcomes(lanes: &[&str]) -> Vec<Vec<String>> {
    lanes
        .iter()
        .map(|lane| lane.split(',').map(String::from).collect())
        .collect()
}

/// The text an on-call engineer reads: summary and evidence.
fn text(finding: &Value) -> String {
    let mut all = vec![finding["summary"].as_str().unwrap_or_default().to_string()];
    for e in finding["evidence"].as_array().into_iter().flatten() {
        all.push(e.as_str().unwrap_or_default().to_string());
    }
    all.join("\n")
}

/// The top finding is `cause` at high confidence (`assert_top`) and
/// nothing else is at medium or high; returns it.
fn top_alone<'a>(report: &'a Value, cause: &str) -> &'a Value {
    let top = assert_top(report, cause);
    let others: Vec<_> = findings(report)[1..]
        .iter()
        .filter(|f| f["confidence"] != "low")
        .map(|f| f["cause"].clone())
        .collect();
    assert!(others.is_empty(), "other findings {others:?}: {report:#}");
    top
}

/// The idle timeout's bounds: what worked, what failed, and the figure.
fn assert_bounds(top: &Value, survived: (f64, f64), failed: (f64, f64), timeout_s: f64) {
    let s = figure(top, "idle_survived_s");
    let f = figure(top, "idle_failed_s");
    assert!(
        (survived.0..=survived.1).contains(&s),
        "survived {s}: {top:#}"
    );
    assert!((failed.0..=failed.1).contains(&f), "failed {f}: {top:#}");
    assert!(
        s < timeout_s && timeout_s <= f + 0.05,
        "the real timeout {timeout_s} s lies outside ({s}, {f}]: {top:#}"
    );
}

/// Silent drop, IPv4, 2 s: sends after 2.5 s idle are retransmitted until
/// TCP_USER_TIMEOUT (0.8 s) gives up; gaps up to 1.4 s were answered.
#[test]
fn silent_nat_idle_timeout_seen_from_the_client() {
    require_root();
    let t0 = Instant::now();
    let path = NatPath::new("sb", false, 2, Forget::Drop);
    let (got, report) = path.diagnose_pool(
        &path.app,
        &[&[600, 2_500], &[1_000, 2_700], &[500, 1_000, 1_400]],
        Some(800),
        Duration::from_secs(3),
    );
    let saw = outcomes(&["ok,TimedOut", "ok,TimedOut", "ok,ok,ok"]);
    assert_eq!(got, saw, "what the client saw");
    let top = top_alone(&report, "middlebox_idle_blackhole");
    let (pid, _, role) = first_affected(top);
    assert_eq!((pid, role), (u64::from(std::process::id()), "client"));
    assert_eq!(top["affected"][0]["peer"], path.vip.to_string());
    assert_bounds(top, (1.35, 1.5), (2.45, 2.6), 2.0);
    assert_eq!(figure(top, "reuses_failed"), 2.0);
    let t = text(top);
    assert!(
        t.contains("ETIMEDOUT") && t.contains("198.18.79.9:5432"),
        "{t}"
    );
    assert!(top["fix"][0].as_str().unwrap().contains("1.4 s"), "{top:#}");
    describe_since("middlebox_idle_blackhole (client, v4, 2 s)", &report, t0);
}

/// Silent drop, IPv6, 4 s: the application gives up after 0.8 s without
/// an answer (no kernel timeout); gaps up to 3 s were answered.
#[test]
fn silent_nat_idle_timeout_ipv6_application_gives_up() {
    require_root();
    let t0 = Instant::now();
    let path = NatPath::new("s6", true, 4, Forget::Drop);
    let (got, report) = path.diagnose_pool(
        &path.app,
        &[&[1_000, 3_000], &[4_500], &[4_700]],
        None,
        Duration::from_millis(800),
    );
    let saw = outcomes(&["ok,ok", "no answer", "no answer"]);
    assert_eq!(got, saw, "what the client saw");
    let top = top_alone(&report, "middlebox_idle_blackhole");
    assert_eq!(first_affected(top).2, "client");
    assert_bounds(top, (2.95, 3.1), (4.45, 4.6), 4.0);
    assert!(text(top).contains("[2001:db8:79::9]:5432"), "{top:#}");
    describe_since("middlebox_idle_blackhole (client, v6, 4 s)", &report, t0);
}

/// RST, IPv6, 2 s, a pool whose idle varies: resets after 2.4, 3.2 and
/// 3.8 s idle (no cluster), answers after up to 1.5 s. An idle timeout
/// between them, not a peer restart.
#[test]
fn rejecting_nat_idle_timeout_with_varied_idle_ipv6() {
    require_root();
    let t0 = Instant::now();
    let path = NatPath::new("r6", true, 2, Forget::Reset);
    let (got, report) = path.diagnose_pool(
        &path.app,
        &[&[600, 2_400], &[1_500, 3_200], &[1_000, 3_800]],
        None,
        Duration::from_secs(2),
    );
    for lane in &got {
        assert_eq!(lane.last().unwrap(), "ConnectionReset", "{got:?}");
    }
    let top = top_alone(&report, "lb_idle_timeout");
    assert_eq!(first_affected(top).2, "client");
    assert_bounds(top, (1.45, 1.6), (2.35, 2.5), 2.0);
    assert_eq!(figure(top, "resets"), 3.0);
    assert!(text(top).contains("no FIN"), "{top:#}");
    assert!(
        !findings(&report)
            .iter()
            .any(|f| f["cause"] == "half_open_after_peer_restart"),
        "{report:#}"
    );
    describe_since("lb_idle_timeout (client, v6, RST, 2 s)", &report, t0);
}

/// RST, IPv4, 4 s: the same kind with a longer timeout.
#[test]
fn rejecting_nat_idle_timeout_ipv4() {
    require_root();
    let t0 = Instant::now();
    let path = NatPath::new("r4", false, 4, Forget::Reset);
    let (got, report) = path.diagnose_pool(
        &path.app,
        &[&[1_200, 3_200], &[4_500], &[4_800]],
        None,
        Duration::from_secs(2),
    );
    assert_eq!(
        got,
        outcomes(&["ok,ok", "ConnectionReset", "ConnectionReset"])
    );
    let top = top_alone(&report, "lb_idle_timeout");
    assert_bounds(top, (3.15, 3.3), (4.45, 4.6), 4.0);
    describe_since("lb_idle_timeout (client, v4, RST, 4 s)", &report, t0);
}

/// Silent drop, IPv4, 3 s, watched on the node: no socket there, only
/// the segments of forgotten flows it drops and its conntrack.
#[test]
fn silent_nat_idle_timeout_seen_from_the_node() {
    require_root();
    let t0 = Instant::now();
    let path = NatPath::new("sn", false, 3, Forget::Drop);
    let (got, report) = path.diagnose_pool(
        &path.node,
        &[&[800, 3_400], &[3_500], &[2_000]],
        Some(800),
        Duration::from_secs(2),
    );
    assert_eq!(got, outcomes(&["ok,TimedOut", "TimedOut", "ok"]));
    let top = top_alone(&report, "middlebox_idle_blackhole");
    assert_eq!(figure(top, "idle_timeout_s"), 3.0);
    assert_eq!(figure(top, "flows"), 2.0);
    assert_eq!(top["affected"][0]["peer"], path.vip.to_string());
    assert!(text(top).contains("198.18.71.2"), "{top:#}");
    let fix = top["fix"][0].as_str().unwrap();
    assert!(
        fix.contains("nf_conntrack_tcp_timeout_established (now 3 s"),
        "{top:#}"
    );
    describe_since("middlebox_idle_blackhole (node, v4, 3 s)", &report, t0);
}

/// RST, IPv6, 4 s, watched on the node: the RST netfilter's REJECT sends
/// passes no TCP tracepoint; the node sees one dropped segment per
/// forgotten flow and nothing after it, and says so.
#[test]
fn rejecting_nat_idle_timeout_seen_from_the_node_ipv6() {
    require_root();
    let t0 = Instant::now();
    let path = NatPath::new("rn", true, 4, Forget::Reset);
    let (got, report) = path.diagnose_pool(
        &path.node,
        &[&[1_000, 3_000], &[4_500], &[4_700]],
        None,
        Duration::from_secs(2),
    );
    let saw = outcomes(&["ok,ok", "ConnectionReset", "ConnectionReset"]);
    assert_eq!(got, saw);
    let top = top_alone(&report, "middlebox_idle_blackhole");
    assert_eq!(figure(top, "idle_timeout_s"), 4.0);
    assert_eq!(figure(top, "flows"), 2.0);
    assert_eq!(figure(top, "drops"), 2.0);
    assert_eq!(top["affected"][0]["peer"], path.vip.to_string());
    let t = text(top);
    assert!(
        t.contains("REJECT") && !t.contains("never answered"),
        "{top:#}"
    );
    describe_since("middlebox_idle_blackhole (node, v6, RST, 4 s)", &report, t0);
}
