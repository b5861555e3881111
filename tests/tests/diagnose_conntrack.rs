//! Scenario tests for the conntrack and drop causes of `diagnose`:
//! a client namespace, a router namespace that forwards (and DNATs a
//! service address, with its own conntrack table) and a server
//! namespace; the trouble is made at the router with real iptables and
//! real conntrack, `tcptrace diagnose` watches the client's or the
//! server's namespace, and the drops the router makes are tied back to
//! the watched connections by their 4-tuple.
//!
//! Each scenario is a few seconds of bounded traffic; everything is
//! undone in `Drop` (namespaces, the host-global `nf_conntrack_max`).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    Netns, Routed,
    diagnose::{Diagnose, describe, figure, findings, first_affected},
    hostglobal::HostSysctl,
    require_root,
    server::Server,
};

/// The service address the router DNATs (a ClusterIP).
const SERVICE4: &str = "198.19.0.10";

/// The router DNATs `SERVICE4:80` to `SERVER4:port` (a ClusterIP).
fn service(net: &Routed, port: u16) -> SocketAddr {
    net.router.exec_line(&format!(
        "iptables -t nat -A PREROUTING -d {SERVICE4} -p tcp --dport 80 -j DNAT --to-destination {}:{port}",
        Routed::SERVER4
    ));
    format!("{SERVICE4}:80").parse().unwrap()
}

/// A file server in `ns` on `addr`: every request line gets `size`
/// bytes, until the client closes or the server is dropped.
fn file_server(ns: &Netns, addr: SocketAddr, size: usize) -> Server {
    let listener = ns.run(|| TcpListener::bind(addr).expect("bind"));
    Server::spawn(listener, move |mut conn, stop| {
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let blob = vec![b'f'; 65536];
        let mut buf = [0u8; 256];
        while !stop.load(Ordering::Relaxed) {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            for _ in 0..size / blob.len() {
                if conn.write_all(&blob).is_err() {
                    return;
                }
            }
        }
    })
}

/// `lanes` clients downloading `size` bytes per request from `to` for
/// `run`, reconnecting after an error. Returns (downloads, errors).
fn download(ns: &Netns, to: SocketAddr, lanes: usize, size: usize, run: Duration) -> (u32, u32) {
    let results: Vec<(u32, u32)> = thread::scope(|s| {
        let workers: Vec<_> = (0..lanes)
            .map(|_| {
                s.spawn(|| {
                    ns.enter();
                    let t0 = Instant::now();
                    let (mut ok, mut failed) = (0, 0);
                    let mut conn: Option<TcpStream> = None;
                    let mut buf = vec![0u8; 262144];
                    while t0.elapsed() < run {
                        let result = (|| -> std::io::Result<()> {
                            if conn.is_none() {
                                let c = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
                                c.set_read_timeout(Some(Duration::from_secs(3)))?;
                                conn = Some(c);
                            }
                            let c = conn.as_mut().unwrap();
                            c.write_all(b"GET /blob\r\n")?;
                            let mut need = size;
                            while need > 0 {
                                let n = c.read(&mut buf[..need.min(262144)])?;
                                if n == 0 {
                                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                                }
                                need -= n;
                            }
                            Ok(())
                        })();
                        match result {
                            Ok(()) => ok += 1,
                            Err(_) => {
                                failed += 1;
                                conn = None;
                            }
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    results
        .iter()
        .fold((0, 0), |(a, b), (ok, failed)| (a + ok, b + failed))
}

/// `n` connects at once to `to`, each given up after `timeout`; returns
/// how many timed out.
fn connects(ns: &Netns, to: SocketAddr, n: usize, timeout: Duration) -> usize {
    thread::scope(|s| {
        let all: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    ns.enter();
                    TcpStream::connect_timeout(&to, timeout)
                })
            })
            .collect();
        all.into_iter()
            .map(|h| h.join().unwrap())
            .filter(|c| matches!(c, Err(e) if e.kind() == std::io::ErrorKind::TimedOut))
            .count()
    })
}

/// Findings at medium or high confidence.
fn problems(report: &Value) -> Vec<&Value> {
    findings(report)
        .iter()
        .filter(|f| f["confidence"] != "low")
        .collect()
}

/// The top finding is `cause` at medium or high, naming this process.
fn assert_top_names_me<'a>(report: &'a Value, cause: &str) -> &'a Value {
    let top = findings(report)
        .first()
        .unwrap_or_else(|| panic!("no finding; expected {cause}: {report:#}"));
    assert_eq!(top["cause"], cause, "top finding: {report:#}");
    assert_ne!(top["confidence"], "low", "{top:#}");
    assert_eq!(
        first_affected(top).0,
        u64::from(std::process::id()),
        "{top:#}"
    );
    top
}

/// A firewall on the router drops SYNs to one port (IPv6 here); the
/// client's connects to it time out while those to another port work.
#[test]
fn syns_dropped_by_a_firewall_on_the_router() {
    require_root();
    let t0 = Instant::now();
    let net = Routed::new("synfw");
    let open: SocketAddr = format!("[{}]:8080", Routed::SERVER6).parse().unwrap();
    let closed: SocketAddr = format!("[{}]:8081", Routed::SERVER6).parse().unwrap();
    let servers = [
        file_server(&net.server, open, 65536),
        file_server(&net.server, closed, 65536),
    ];
    net.router
        .exec_line("ip6tables -A FORWARD -p tcp --syn --dport 8081 -j DROP");
    let diagnose = Diagnose::start(net.client.name());
    let (ok, _) = download(&net.client, open, 2, 65536, Duration::from_millis(500));
    let timed_out = connects(&net.client, closed, 3, Duration::from_millis(2500));
    let (report, seconds) = diagnose.finish();
    drop(servers);
    assert!(ok > 0, "the open port works");
    assert_eq!(timed_out, 3);
    let top = assert_top_names_me(&report, "syn_dropped_on_path");
    assert!(top["summary"].as_str().unwrap().contains("8081"), "{top:#}");
    assert!(figure(top, "syn_retransmits") >= 3.0);
    assert!(figure(top, "connects_unanswered") >= 3.0);
    // The router's drops were tied to the watched connections.
    assert!(figure(top, "dropped_syns") >= 3.0, "{top:#}");
    describe(
        "syn_dropped_on_path",
        &report,
        seconds.max(t0.elapsed().as_secs_f64()),
    );
}

/// The router's conntrack table is full (`nf_conntrack_max` is
/// host-global, the count per namespace): held connections fill it, new
/// SYNs through it are dropped.
#[test]
fn conntrack_table_full_on_the_router() {
    require_root();
    let t0 = Instant::now();
    let net = Routed::new("ctfull");
    let server: SocketAddr = format!("{}:8080", Routed::SERVER4).parse().unwrap();
    let files = file_server(&net.server, server, 65536);
    for state in ["ESTABLISHED,RELATED", "NEW"] {
        net.router.exec_line(&format!(
            "iptables -A FORWARD -m conntrack --ctstate {state} -j ACCEPT"
        ));
    }
    // Hold connections through the router (its table gets one entry
    // each), then make that the limit.
    const HELD: usize = 120;
    let held: Vec<TcpStream> = net.client.run(|| {
        (0..HELD)
            .map(|_| TcpStream::connect_timeout(&server, Duration::from_secs(2)).expect("hold"))
            .collect()
    });
    let host_count: usize = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .map_or(0, |s| s.trim().parse().unwrap_or(0));
    assert!(
        host_count < HELD / 2,
        "the initial namespace tracks {host_count} flows: lowering nf_conntrack_max to {HELD} would hurt it"
    );
    let limit = HostSysctl::set("net.netfilter.nf_conntrack_max", &HELD.to_string());
    let diagnose = Diagnose::start(net.client.name());
    let timed_out = connects(&net.client, server, 3, Duration::from_millis(2500));
    let (report, seconds) = diagnose.finish();
    drop(limit);
    drop(held);
    drop(files);
    assert_eq!(timed_out, 3);
    let top = assert_top_names_me(&report, "conntrack_table_full");
    assert_eq!(top["confidence"], "high", "{top:#}");
    assert_eq!(top["figures"]["conntrack_max"], HELD as f64, "{top:#}");
    assert!(figure(top, "conntrack_drops") >= 3.0);
    let text = top.to_string();
    assert!(
        text.contains(net.router.name()),
        "names the router's namespace: {top:#}"
    );
    assert!(text.contains("nf_conntrack_max"), "{top:#}");
    describe(
        "conntrack_table_full",
        &report,
        seconds.max(t0.elapsed().as_secs_f64()),
    );
}

/// What `bulk_through_dnat` runs `diagnose` on.
#[derive(Clone, Copy)]
enum Watched {
    Client,
    Server,
}

/// Three clients download 4 MiB per request for 4 s from a file server
/// behind the router's DNAT (`SERVICE4:80`) while `diagnose` watches one
/// end. With `bypass_every`, the router lets 1 in that many of the
/// server's packets skip conntrack (NOTRACK on 1 in N: the same path as
/// a reply conntrack marks INVALID), so they miss the reverse NAT.
/// Returns the report, the seconds it covers, and the downloads that
/// worked and that failed.
fn bulk_through_dnat(
    tag: &str,
    bypass_every: Option<u32>,
    watched: Watched,
) -> (Value, f64, u32, u32) {
    let t0 = Instant::now();
    let net = Routed::new(tag);
    let files = file_server(
        &net.server,
        format!("{}:8080", Routed::SERVER4).parse().unwrap(),
        4 << 20,
    );
    let service = service(&net, 8080);
    if let Some(every) = bypass_every {
        net.router.exec_line(&format!(
            "iptables -t raw -A PREROUTING -i {} -p tcp --sport 8080 -m statistic --mode nth --every {every} --packet 0 -j NOTRACK",
            Routed::ROUTER_TO_SERVER
        ));
    }
    let diagnose = Diagnose::start(match watched {
        Watched::Client => net.client.name(),
        Watched::Server => net.server.name(),
    });
    let (ok, failed) = download(&net.client, service, 3, 4 << 20, Duration::from_secs(4));
    let (report, seconds) = diagnose.finish();
    drop(files);
    (report, seconds.max(t0.elapsed().as_secs_f64()), ok, failed)
}

/// Replies that skip reverse NAT at the router (NOTRACK on 1 in 200
/// server packets: the same path as a reply conntrack marks INVALID)
/// reach the client under the server's own address; the client's kernel
/// answers RST (no socket), which kills the server's connection, and the
/// client's next packet gets an RST back.
#[test]
fn invalid_replies_bypass_nat_on_the_router() {
    require_root();
    let (report, seconds, ok, failed) = bulk_through_dnat("ctinv", Some(200), Watched::Client);
    assert!(ok > 0 && failed > 0, "downloads {ok}, reset {failed}");
    let top = assert_top_names_me(&report, "conntrack_invalid_nat_bypass");
    let summary = top["summary"].as_str().unwrap();
    assert!(
        summary.contains(Routed::SERVER4) && summary.contains(SERVICE4),
        "{top:#}"
    );
    assert!(figure(top, "strays") >= 1.0);
    assert!(
        top["fix"].to_string().contains("ctstate INVALID"),
        "{top:#}"
    );
    describe("conntrack_invalid_nat_bypass", &report, seconds);
}

/// Control: bulk downloads through the same DNAT router, nothing wrong
/// (some retransmits from queue drops are normal): no finding above low.
#[test]
fn healthy_forwarded_bulk_transfer_is_silent() {
    require_root();
    let (report, seconds, ok, failed) = bulk_through_dnat("ctok", None, Watched::Client);
    assert!(ok > 0 && failed == 0, "downloads {ok}, failed {failed}");
    let problems = problems(&report);
    assert!(problems.is_empty(), "{report:#}");
    assert!(report["events"].as_u64().unwrap() > 0, "traffic was seen");
    describe("control_bulk_forwarded", &report, seconds);
}

/// The same bypass watched from the backend's namespace only: the
/// client's kernel (another namespace of this host) answers the
/// backend's packets "no socket" and kills its connections.
#[test]
fn invalid_replies_bypass_nat_seen_from_the_backend() {
    require_root();
    let (report, seconds, ok, failed) = bulk_through_dnat("ctinb", Some(150), Watched::Server);
    assert!(ok > 0 && failed > 0, "downloads {ok}, reset {failed}");
    let top = findings(&report)
        .first()
        .unwrap_or_else(|| panic!("no finding: {report:#}"));
    assert_eq!(top["cause"], "conntrack_invalid_nat_bypass", "{report:#}");
    assert_ne!(top["confidence"], "low", "{top:#}");
    let (pid, _, role) = first_affected(top);
    assert_eq!(pid, u64::from(std::process::id()), "{top:#}");
    assert_eq!(role, "backend", "{top:#}");
    assert!(figure(top, "conntrack_invalid") >= 1.0, "{top:#}");
    describe(
        "conntrack_invalid_nat_bypass (backend side)",
        &report,
        seconds,
    );
}
