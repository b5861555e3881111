//! Root tests of reset provenance and the flight recorder: a router
//! namespace between client and server, real RSTs from the server
//! (SO_LINGER 0) and from the router (`iptables -j REJECT --reject-with
//! tcp-reset`), the real TC programs, pcapng files read back by tshark.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    Netns, NetnsPair, Routed, Trace, require_root, sh,
    trace::{spawn_until, wait_within},
};

fn netns_arg(ns: &Netns) -> String {
    ns.inode().to_string()
}

/// One request/answer, so the client has seen the server's own segments.
fn exchange(client: &mut TcpStream, server: &mut TcpStream) {
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
    server.write_all(b"pong").unwrap();
    client.read_exact(&mut buf).unwrap();
}

/// Connects from the client namespace to a listener in the server's;
/// returns both ends and the client's port.
fn connect(net: &Routed, listener: &TcpListener, server: &str) -> (TcpStream, TcpStream, u16) {
    let port = listener.local_addr().unwrap().port();
    let addr = SocketAddr::new(server.parse().unwrap(), port);
    let client = net
        .client
        .run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect"));
    let (accepted, _) = listener.accept().expect("accept");
    let client_port = client.local_addr().unwrap().port();
    (client, accepted, client_port)
}

/// The router answers every further segment to `listener`'s port with an
/// RST of its own (`iptables` or `ip6tables`, REJECT tcp-reset).
fn reject_on_router(net: &Routed, iptables: &str, listener: &TcpListener) {
    let port = listener.local_addr().unwrap().port();
    net.router.exec_line(&format!(
        "{iptables} -I FORWARD -p tcp --dport {port} -j REJECT --reject-with tcp-reset"
    ));
}

/// The client's next read fails with ECONNRESET.
fn expect_reset(client: &mut TcpStream) {
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    let err = client.read(&mut buf).expect_err("an RST");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
}

fn rst_received(records: &tests::Records, client_port: u16) -> Value {
    let got = records.on_port("rst_received", client_port);
    assert_eq!(got.len(), 1, "one rst_received on {client_port}: {got:?}");
    got[0].clone()
}

/// One flow reset by the router's REJECT rule, one by the server: the
/// first is `middlebox` one hop closer, the second `peer`.
fn origins(v6: bool) {
    require_root();
    let net = Routed::new(if v6 { "prov6" } else { "prov4" });
    let (server, iptables) = if v6 {
        (Routed::SERVER6, "ip6tables")
    } else {
        (Routed::SERVER4, "iptables")
    };
    let bind = SocketAddr::new(server.parse().unwrap(), 0);
    let forged = net.server.run(|| TcpListener::bind(bind).unwrap());
    let real = net.server.run(|| TcpListener::bind(bind).unwrap());
    let trace = Trace::start(&["--netns", &netns_arg(&net.client), "--events", "rst"]);

    let (mut client, mut accepted, forged_port) = connect(&net, &forged, server);
    exchange(&mut client, &mut accepted);
    reject_on_router(&net, iptables, &forged);
    client.write_all(b"again").unwrap();
    expect_reset(&mut client);

    let (mut client2, mut accepted2, real_port) = connect(&net, &real, server);
    exchange(&mut client2, &mut accepted2);
    tests::set_linger_zero(&accepted2);
    drop(accepted2);
    expect_reset(&mut client2);
    std::thread::sleep(Duration::from_millis(300));
    let records = trace.stop();

    let mb = rst_received(&records, forged_port);
    assert_eq!(mb["origin"], "middlebox", "{mb}");
    assert_eq!(mb["origin_hops_closer"], 1, "{mb}");
    let evidence = &mb["origin_evidence"];
    assert_eq!(evidence["rst_ttl"], 64, "the router's own RST: {mb}");
    assert_eq!(evidence["peer_ttl_min"], 63, "the server, one hop on: {mb}");

    let peer = rst_received(&records, real_port);
    assert_eq!(peer["origin"], "peer", "{peer}");
    assert!(peer.get("origin_hops_closer").is_none(), "{peer}");
    assert_eq!(peer["origin_evidence"]["rst_ttl"], 63, "{peer}");

    let summary = records.summary();
    assert_eq!(summary["rst_origin"]["middlebox"], 1, "{summary}");
    assert_eq!(summary["rst_origin"]["peer"], 1, "{summary}");
    assert_eq!(
        summary["tc"]["interfaces"],
        serde_json::json!(["eth0"]),
        "{summary}"
    );
}

#[test]
fn provenance_reject_on_path_is_middlebox_v4() {
    origins(false);
}

#[test]
fn provenance_reject_on_path_is_middlebox_v6() {
    origins(true);
}

/// `tshark -r FILE` fields, one line per packet, tab-separated.
fn tshark(file: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec![
        "-r",
        file.to_str().unwrap(),
        "-T",
        "fields",
        "-E",
        "separator=/t",
    ];
    for f in fields {
        args.extend(["-e", f]);
    }
    let out = Command::new("tshark")
        .args(&args)
        .stderr(Stdio::null())
        .output()
        .expect("tshark (Debian package tshark)");
    assert!(
        out.status.success(),
        "tshark cannot read {}",
        file.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// A reset storm under `--pcap DIR --pcap-max 4`: four files, 0600,
/// each ending with the RST of its own connection, the rest counted.
#[test]
fn provenance_pcap_storm() {
    require_root();
    let net = Routed::new("pcap");
    let dir = tempdir("pcap");
    let listener = net
        .server
        .run(|| TcpListener::bind((Routed::SERVER4, 0)).unwrap());
    let trace = Trace::start(&[
        "--netns",
        &netns_arg(&net.client),
        "--events",
        "rst",
        "--pcap",
        dir.to_str().unwrap(),
        "--pcap-max",
        "4",
    ]);
    let mut ports = Vec::new();
    for _ in 0..6 {
        let (mut client, mut accepted, port) = connect(&net, &listener, Routed::SERVER4);
        exchange(&mut client, &mut accepted);
        tests::set_linger_zero(&accepted);
        drop(accepted);
        expect_reset(&mut client);
        ports.push(port);
    }
    // The recorder writes a file once the RST went through the TC program.
    std::thread::sleep(Duration::from_millis(600));
    let records = trace.stop();
    let pcap = &records.summary()["pcap"];
    assert_eq!(pcap["written"], 4, "{pcap}");
    assert_eq!(pcap["over_max"], 2, "{pcap}");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let server_port = listener.local_addr().unwrap().port().to_string();
    let mut seen = Vec::new();
    for file in &files {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
        let packets = tshark(
            file,
            &[
                "ip.src",
                "tcp.srcport",
                "ip.dst",
                "tcp.dstport",
                "tcp.flags.reset",
                "frame.comment",
            ],
        );
        assert!(packets.len() >= 4, "handshake, data, RST: {packets:?}");
        let last = packets.last().unwrap();
        let [src, sport, dst, dport, rst, comment] = &last[..] else {
            panic!("{last:?}")
        };
        assert!(rst == "1" || rst == "True", "the RST last: {packets:?}");
        assert_eq!(
            (src.as_str(), sport.as_str()),
            (Routed::SERVER4, server_port.as_str())
        );
        assert_eq!(dst, Routed::CLIENT4);
        assert!(comment.contains("origin: peer"), "{comment}");
        assert!(comment.contains("process: pid"), "{comment}");
        seen.push(dport.parse::<u16>().unwrap());
    }
    seen.sort();
    let mut first = ports[..4].to_vec();
    first.sort();
    assert_eq!(seen, first, "the first four connections reset");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `tc` filters and qdiscs on the namespace's veth, as text.
fn tc_state(ns: &Netns) -> String {
    let mut out = String::new();
    for dir in ["ingress", "egress"] {
        out += &sh(
            "tc",
            &["-n", ns.name(), "filter", "show", "dev", "veth0", dir],
        );
    }
    out + &sh("tc", &["-n", ns.name(), "qdisc", "show", "dev", "veth0"])
}

fn start(ns: &Netns, clsact: bool) -> (std::process::Child, Vec<String>) {
    let mut cmd = Command::new(tests::tcptrace_bin());
    cmd.args([
        "trace",
        "--json",
        "--events",
        "rst",
        "--netns",
        &netns_arg(ns),
    ]);
    if clsact {
        cmd.env("TCPTRACE_TC_ATTACH", "clsact");
    }
    let (child, _rx, seen) = spawn_until(&mut cmd, "tracing; Ctrl-C to stop");
    (child, seen)
}

fn signal(child: &mut std::process::Child, sig: i32) {
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, sig) };
    wait_within(child, Duration::from_secs(10));
}

/// Nothing the tool added stays: TCX links go with the process (no
/// clsact qdisc is added at all), clsact filters go on Ctrl-C and
/// SIGTERM, and those a SIGKILL left are removed by the next start.
#[test]
fn provenance_tc_leaves_nothing() {
    require_root();
    let pair = NetnsPair::new("tcx");
    let before = tc_state(&pair.a);
    assert!(!before.contains("clsact"), "{before}");

    let (mut tcx, _) = start(&pair.a, false);
    let during = tc_state(&pair.a);
    assert!(!during.contains("clsact"), "TCX adds no qdisc: {during}");
    signal(&mut tcx, libc::SIGKILL);
    assert_eq!(tc_state(&pair.a), before);

    let (mut run, _) = start(&pair.a, true);
    let during = tc_state(&pair.a);
    assert!(
        during.contains("clsact") && during.contains("bpf"),
        "{during}"
    );
    signal(&mut run, libc::SIGINT);
    assert_eq!(tc_state(&pair.a), before, "after Ctrl-C");

    let (mut killed, _) = start(&pair.a, true);
    signal(&mut killed, libc::SIGKILL);
    assert!(
        tc_state(&pair.a).contains("bpf"),
        "SIGKILL leaves clsact filters"
    );
    let (mut next, _) = start(&pair.a, true);
    signal(&mut next, libc::SIGTERM);
    assert_eq!(
        tc_state(&pair.a),
        before,
        "the next run removed the leftovers"
    );
}

/// `diagnose` on the client: resets forged by the router's REJECT rule
/// point at the path (`reset_on_path`, one hop in front of the server),
/// not at the server aborting connections.
#[test]
fn provenance_diagnose_blames_the_path() {
    require_root();
    let net = Routed::new("diag");
    let listener = net
        .server
        .run(|| TcpListener::bind((Routed::SERVER4, 0)).unwrap());
    let diagnose = tests::diagnose::Diagnose::start(&netns_arg(&net.client));
    let mut conns: Vec<_> = (0..3)
        .map(|_| {
            let (mut client, mut accepted, _) = connect(&net, &listener, Routed::SERVER4);
            exchange(&mut client, &mut accepted);
            (client, accepted)
        })
        .collect();
    reject_on_router(&net, "iptables", &listener);
    for (client, _) in &mut conns {
        client.write_all(b"again").unwrap();
        expect_reset(client);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (report, seconds) = diagnose.finish();
    tests::diagnose::describe("reset on path", &report, seconds);
    let top = tests::diagnose::assert_top(&report, "reset_on_path");
    assert_eq!(top["figures"]["hops_closer"], 1.0, "{top:#}");
    assert_eq!(top["affected"][0]["pid"], std::process::id(), "{top:#}");
    let blames_server = tests::diagnose::findings(&report)
        .iter()
        .any(|f| f["cause"] == "linger_zero_abort");
    assert!(!blames_server, "{report:#}");
}

/// `--pcap` in a namespace whose only interface is the loopback has no
/// packets to keep by default: one line naming the `--iface` to pass,
/// not a run that captures nothing; with `--iface lo` it runs.
#[test]
fn pcap_with_only_the_loopback_says_to_pass_iface_lo() {
    require_root();
    let ns = Netns::new("pcaplo");
    let dir = tests::host::ScratchDir::new("pcaplo");
    let pcap = dir.path().join("pcap");
    let pcap = pcap.to_str().unwrap();
    let run = |extra: &[&str]| {
        Command::new(tests::tcptrace_bin())
            .args(["trace", "--json", "--netns", ns.name(), "--duration", "1s"])
            .args(["--pcap", pcap])
            .args(extra)
            .output()
            .expect("run tcptrace")
    };
    let err = tests::host::failure(&run(&[]));
    assert!(err.contains("pass --iface lo"), "{err}");
    let out = run(&["--iface", "lo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
