//! Root integration test of the kernel counters: an accept-queue overflow
//! made by the test shows up, exactly, in the delta `snapshot --watch`
//! reports for the namespace it happened in.

use std::{
    io::{BufRead, BufReader},
    net::TcpStream,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    Netns, require_root,
    sockets::{connect, connect_pending, listen},
    tcptrace_bin,
};

#[test]
fn listen_queue_overflow_moves_listen_overflows_in_the_delta() {
    require_root();
    const BACKLOG: usize = 1;
    const DROPPED: usize = 3;
    let ns = Netns::new("ctr");
    // A full queue: backlog + 1 completed connections nobody accepts.
    let (listener, queued) = ns.run(|| {
        let listener = listen("127.0.0.1:7001", BACKLOG as i32);
        let queued: Vec<TcpStream> = (0..=BACKLOG).map(|_| connect("127.0.0.1:7001")).collect();
        (listener, queued)
    });

    let mut watch = Command::new(tcptrace_bin())
        .args([
            "snapshot",
            "--netns",
            ns.name(),
            "--json",
            "--watch",
            "2s",
            "--count",
            "2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn tcptrace");
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut report = || -> Value {
        let line = lines.next().expect("a report").expect("read");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON ({e}): {line}"))
    };
    // The first report is printed after its counters were read: what
    // happens from here on falls in the interval of the second.
    let first = report();
    assert_eq!(first["listeners"][0]["queued"], BACKLOG + 1);
    assert_eq!(
        first["counters"]["values"]["TcpExtListenOverflows"], 0,
        "a fresh namespace"
    );

    // Each SYN to the full queue is dropped once; closing the socket
    // before its first retransmit (1 s) keeps the count exact.
    ns.run(|| {
        let pending: Vec<_> = (0..DROPPED)
            .map(|_| connect_pending("127.0.0.1:7001"))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        drop(pending);
    });

    let second = report();
    assert!(watch.wait().unwrap().success());
    let delta = &second["counters"];
    assert!(
        (1.5..4.0).contains(&delta["interval"].as_f64().unwrap()),
        "{delta}"
    );
    assert_eq!(delta["values"]["TcpExtListenOverflows"], DROPPED, "{delta}");
    assert_eq!(delta["values"]["TcpExtListenDrops"], DROPPED, "{delta}");
    assert_eq!(delta["values"]["TcpActiveOpens"], DROPPED, "{delta}");
    assert_eq!(delta["values"]["TcpExtTCPSynRetrans"], 0, "{delta}");
    drop((listener, queued));
}
