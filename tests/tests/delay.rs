//! The NFQUEUE packet delayer really delays: connect time across a veth
//! pair rises by the configured delay while a `Delay` lives, and falls
//! back once it is dropped.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use tests::{Netns, NetnsPair, delay::Delay, require_root};

/// Median time of `n` connects to `addr`, made from inside `netns`.
fn median_connect(netns: &Netns, addr: SocketAddr, n: usize) -> Duration {
    let mut times: Vec<Duration> = netns.run(|| {
        (0..n)
            .map(|_| {
                let start = Instant::now();
                let stream =
                    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
                let elapsed = start.elapsed();
                drop(stream);
                elapsed
            })
            .collect()
    });
    times.sort();
    times[n / 2]
}

#[test]
fn delay_adds_the_configured_latency_and_goes_away() {
    require_root();
    let pair = NetnsPair::new("dly");
    let addr: SocketAddr = format!("{}:7100", NetnsPair::B4).parse().unwrap();
    // Nobody accepts: 45 connects fit the backlog, which is all we need.
    let listener = pair.b.run(|| TcpListener::bind(addr).expect("listen in b"));

    let before = median_connect(&pair.a, addr, 15);
    assert!(
        before < Duration::from_millis(5),
        "undelayed connect took {before:?}"
    );

    let delay = Delay::new(&pair.b, Duration::from_millis(30));
    let delayed = median_connect(&pair.a, addr, 15);
    // Only b's packets (the SYN-ACKs) are held: one direction, one delay.
    assert!(
        delayed >= Duration::from_millis(30) && delayed < Duration::from_millis(33),
        "connect under a 30 ms delay took {delayed:?}"
    );
    assert!(
        delay.packets() >= 15,
        "the rule matched {} packets",
        delay.packets()
    );
    drop(delay);

    let after = median_connect(&pair.a, addr, 15);
    eprintln!("median connect: before {before:?}, under 30 ms delay {delayed:?}, after {after:?}");
    assert!(
        after < Duration::from_millis(5),
        "connect after the delay was removed took {after:?}"
    );
    let rules = pair.b.exec("iptables", &["-S", "OUTPUT"]);
    assert!(!rules.contains("NFQUEUE"), "rule left behind: {rules}");
    drop(listener);
}

#[test]
fn delay_matching_only_synacks_on_one_loopback() {
    require_root();
    let ns = Netns::new("dlo");
    let addr: SocketAddr = "127.0.0.1:7101".parse().unwrap();
    let listener = ns.run(|| TcpListener::bind(addr).expect("listen"));
    let delay = Delay::matching(
        &ns,
        Duration::from_millis(20),
        &["--tcp-flags", "SYN,ACK", "SYN,ACK"],
    );
    let median = median_connect(&ns, addr, 11);
    eprintln!("median connect under a 20 ms SYN-ACK delay: {median:?}");
    assert!(
        median >= Duration::from_millis(20) && median < Duration::from_millis(23),
        "median {median:?}"
    );
    // One SYN-ACK per connect, nothing else.
    assert_eq!(delay.packets(), 11);
    drop(delay);
    drop(listener);
}
