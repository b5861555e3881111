use super::{testing::*, *};
use crate::event::EventKind as K;

fn agg(events: impl IntoIterator<Item = TcpEvent>) -> Aggregate {
    let mut a = Aggregate::new(names());
    for e in events {
        a.add(&e);
    }
    a.finish();
    a
}

#[test]
fn groups_by_process_and_peer_with_reasons_and_states() {
    let mut events = connect(1, 0, 42, "api-client", "10.0.0.7:443");
    events.push(
        ev(K::RstReceived, 5_000)
            .sock(1)
            .owner(42, "api-client")
            .remote("10.0.0.7:443")
            .state("ESTABLISHED")
            .age_ms(5_000)
            .idle_ms(0, 4_900)
            .build(),
    );
    events.push(
        ev(K::RstSent, 6_000)
            .sock(2)
            .owner(7, "nginx")
            .local("10.0.0.1:80")
            .remote("10.0.0.9:51000")
            .reason("TCP_ABORT_ON_CLOSE")
            .build(),
    );
    events.push(
        ev(K::Retransmit, 6_100)
            .sock(3)
            .owner(42, "api-client")
            .state("SYN_SENT")
            .build(),
    );
    events.push(
        ev(K::Retransmit, 6_200)
            .sock(1)
            .owner(42, "api-client")
            .state("ESTABLISHED")
            .build(),
    );
    let a = agg(events);
    let client = &a.process(42).unwrap().stats;
    assert_eq!(a.process(42).unwrap().comm, "api-client");
    assert_eq!(client.connects, 1);
    assert_eq!(client.rst_received_in("ESTABLISHED"), 1);
    assert_eq!(client.rst_after_quiet_gap, 1);
    assert_eq!(client.syn_retransmits, 1);
    assert_eq!(client.retransmits.get("ESTABLISHED"), Some(&1));
    assert_eq!(client.retransmits.get("SYN_SENT"), None, "SYNs apart");
    let idle = client.idle_before_rst.percentiles().unwrap();
    assert!(
        (4_850_000_000..=4_950_000_000).contains(&idle.p50_ns),
        "{idle:?}"
    );
    assert_eq!(
        a.process(7)
            .unwrap()
            .stats
            .rst_sent_with("TCP_ABORT_ON_CLOSE"),
        1
    );
    let peer = a.peers.get(&"10.0.0.7:443".parse().unwrap()).unwrap();
    assert_eq!(peer.rst_received_total(), 1);
    // The server-side peer is keyed without the client's ephemeral port.
    assert!(a.peers.get(&"10.0.0.9:0".parse().unwrap()).is_some());
    assert_eq!(a.total.incidents(), 4);
    assert_eq!(a.ranked_processes()[0].0, 42);
}

#[test]
fn drops_errors_reuses_and_segment_sizes_by_process() {
    let mut events = connect(1, 0, 42, "client", "10.0.0.7:443");
    for t in [100, 1_100] {
        events.push(
            ev(K::Drop, t)
                .sock(1)
                .owner(42, "client")
                .remote("10.0.0.7:443")
                .dropped(12, 0x02)
                .build(),
        );
    }
    // A drop no process owns (a router forwarding it).
    events.push(ev(K::Drop, 1_200).sock(0).dropped(93, 0x10).build());
    events.push(
        ev(K::Reuse, 2_000)
            .sock(1)
            .owner(42, "client")
            .remote("10.0.0.7:443")
            .idle_ms(800, 801)
            .build(),
    );
    for (t, len) in [(2_100, 1448), (2_300, 2896), (2_700, 100)] {
        let segs = if len == 2896 { 2 } else { 1 };
        events.push(
            ev(K::Retransmit, t)
                .sock(1)
                .owner(42, "client")
                .remote("10.0.0.7:443")
                .state("ESTABLISHED")
                .segment(len, segs, 1448)
                .build(),
        );
    }
    events.push(
        ev(K::SocketError, 3_000)
            .sock(1)
            .owner(42, "client")
            .remote("10.0.0.7:443")
            .state("CLOSE")
            .socket_errno(libc::ETIMEDOUT)
            .build(),
    );
    let a = agg(events);
    let client = &a.process(42).unwrap().stats;
    assert_eq!(client.drops.get("NETFILTER_DROP"), Some(&2));
    assert_eq!(client.socket_errors.get("ETIMEDOUT"), Some(&1));
    assert_eq!(client.reuses, 1);
    let reuse_idle_ms = client.reuse_idle.percentiles().unwrap().max_ns / 1_000_000;
    assert!((790..=810).contains(&reuse_idle_ms), "{reuse_idle_ms}");
    assert_eq!(
        (client.full_size_retransmits, client.sized_retransmits),
        (2, 3)
    );
    // 2 drops + 3 retransmits + 1 error; a reuse is no incident.
    assert_eq!(client.incidents(), 6);
    assert_eq!(
        a.process(0).unwrap().stats.drops.get("PKT_TOO_BIG"),
        Some(&1)
    );
    let peer = a.peers.get(&"10.0.0.7:443".parse().unwrap()).unwrap();
    assert_eq!(peer.drops_total(), 2);
    assert_eq!(a.total.drops_total(), 3);
}

#[test]
fn reuse_after_peer_close_is_timed_from_the_fin() {
    let mut events = connect(1, 0, 42, "client", "10.0.0.2:8080");
    events.push(
        ev(K::State, 2_200)
            .sock(1)
            .owner(42, "client")
            .transition("ESTABLISHED", "CLOSE_WAIT")
            .idle_ms(2_000, 0)
            .age_ms(2_200)
            .build(),
    );
    events.push(
        ev(K::RstReceived, 3_200)
            .sock(1)
            .owner(42, "client")
            .state("CLOSE_WAIT")
            .idle_ms(0, 1_000)
            .build(),
    );
    let a = agg(events);
    let s = &a.process(42).unwrap().stats;
    assert_eq!(s.rst_after_peer_close, 1);
    let idle = s.peer_close_idle.percentiles().unwrap();
    assert!((1_990_000_000..=2_010_000_000).contains(&idle.p50_ns));
    let reuse = s.reuse_after_peer_close.percentiles().unwrap();
    assert!((990_000_000..=1_010_000_000).contains(&reuse.p50_ns));
}

#[test]
fn silent_abort_after_retransmits_is_a_timeout_but_linger_zero_is_not() {
    let mut events = connect(1, 100, 42, "client", "10.0.0.2:8080");
    events.extend(connect(2, 100, 43, "closer", "10.0.0.2:8080"));
    for t in [1_000, 1_200, 1_600] {
        events.push(
            ev(K::Retransmit, t)
                .sock(1)
                .owner(42, "client")
                .state("ESTABLISHED")
                .build(),
        );
    }
    events.push(
        ev(K::State, 3_000)
            .sock(1)
            .owner(42, "client")
            .transition("ESTABLISHED", "CLOSE")
            .build(),
    );
    // linger 0: the state change comes first, the RST right after.
    events.push(
        ev(K::Retransmit, 3_000)
            .sock(2)
            .owner(43, "closer")
            .state("ESTABLISHED")
            .build(),
    );
    events.push(
        ev(K::State, 3_001)
            .sock(2)
            .owner(43, "closer")
            .transition("ESTABLISHED", "CLOSE")
            .build(),
    );
    events.push(
        ev(K::RstSent, 3_001)
            .sock(2)
            .owner(43, "closer")
            .reason("TCP_STATE")
            .build(),
    );
    let a = agg(events);
    let s = &a.process(42).unwrap().stats;
    assert_eq!(s.timeout_aborts, 1);
    let for_ = s.retransmitting_for.percentiles().unwrap();
    assert!((1_990_000_000..=2_010_000_000).contains(&for_.p50_ns));
    assert_eq!(a.process(43).unwrap().stats.timeout_aborts, 0);
    assert_eq!(a.total.timeout_aborts, 1);
    assert_eq!(a.process(42).unwrap().stats.lifetimes.count(), 1);
}

#[test]
fn silent_abort_without_traced_retransmits_is_still_a_timeout() {
    // A local firewall DROP makes retransmits fail before the tracepoint.
    let mut events = connect(1, 100, 42, "client", "10.0.0.2:8080");
    events.push(
        ev(K::State, 2_300)
            .sock(1)
            .owner(42, "client")
            .transition("ESTABLISHED", "CLOSE")
            .build(),
    );
    let a = agg(events);
    let s = &a.process(42).unwrap().stats;
    assert_eq!(s.timeout_aborts, 1);
    assert!(s.retransmitting_for.is_empty());
}

#[test]
fn refused_connects_and_idle_closers() {
    let events = vec![
        ev(K::RstReceived, 10)
            .sock(5)
            .owner(9, "curl")
            .state("SYN_SENT")
            .build(),
        ev(K::ConnectFailed, 10)
            .sock(5)
            .owner(9, "curl")
            .connect_ms(0.1)
            .build(),
        ev(K::State, 20)
            .sock(6)
            .owner(11, "haproxy")
            .local("127.0.0.1:8080")
            .remote("127.0.0.1:50000")
            .transition("ESTABLISHED", "FIN_WAIT1")
            .idle_ms(2_000, 2_000)
            .build(),
    ];
    let a = agg(events);
    let curl = &a.process(9).unwrap().stats;
    assert_eq!((curl.refused, curl.connect_failed), (1, 1));
    let closer = a.closers.get(&"127.0.0.1:8080".parse().unwrap()).unwrap();
    assert_eq!((closer.pid, closer.comm.as_str()), (11, "haproxy"));
    assert_eq!(a.process(11).unwrap().stats.active_closes, 1);
}

#[test]
fn memory_stays_bounded_under_a_scan() {
    let mut a = Aggregate::new(names());
    for i in 0..20_000u64 {
        let remote = format!("10.1.{}.{}:{}", i / 250 % 250, i % 250, 1 + i % 60_000);
        a.add(
            &ev(K::RstReceived, i)
                .sock(i + 10)
                .owner(1000 + (i % 1000) as u32, "scanner")
                .remote(&remote)
                .state("SYN_SENT")
                .build(),
        );
    }
    assert!(a.processes.len() <= MAX_PROCESSES);
    assert!(a.peers.len() <= MAX_PEERS);
    assert!(a.peers.evicted() > 0);
    assert_eq!(a.total.refused, 20_000);
}

#[test]
fn accepted_connections_are_keyed_by_client_address_whatever_its_ports() {
    // A server in a namespace with ip_local_port_range 1024-65000: client
    // ports below 32768 defeat the port guess; the handshake decides.
    let mut events = Vec::new();
    for (sock, client_port) in [(1u64, 20_000u16), (2, 20_001), (3, 50_000)] {
        let remote = format!("10.0.0.9:{client_port}");
        events.push(
            ev(K::State, sock)
                .sock(sock)
                .owner(7, "server")
                .local("10.0.0.1:9000")
                .remote(&remote)
                .transition("SYN_RECV", "ESTABLISHED")
                .build(),
        );
        events.push(
            ev(K::RstReceived, 10 + sock)
                .sock(sock)
                .owner(7, "server")
                .local("10.0.0.1:9000")
                .remote(&remote)
                .state("ESTABLISHED")
                .build(),
        );
    }
    // A client of port 9000 with a low port of its own stays keyed by the
    // server's full address.
    events.extend(connect(4, 20, 42, "client", "10.0.0.1:9000"));
    let a = agg(events);
    let clients = a.peers.get(&"10.0.0.9:0".parse().unwrap()).unwrap();
    assert_eq!(clients.rst_received_total(), 3);
    assert_eq!(a.peers.len(), 2, "one per client host, one per server");
    assert!(a.peers.get(&"10.0.0.1:9000".parse().unwrap()).is_some());
}

/// A reset server socket reports its error after its CLOSE: the error is
/// still keyed by the client's address, not by each ephemeral port (a
/// wide ip_local_port_range defeats the port guess).
#[test]
fn socket_error_after_close_keeps_the_accepted_side() {
    let mut events = Vec::new();
    for (sock, port) in [(1u64, 2_000u16), (2, 3_000)] {
        let remote = format!("10.0.0.9:{port}");
        events.push(
            ev(K::State, 0)
                .sock(sock)
                .owner(7, "server")
                .local("10.0.0.1:8080")
                .remote(&remote)
                .transition("SYN_RECV", "ESTABLISHED")
                .build(),
        );
        events.push(
            ev(K::State, 10)
                .sock(sock)
                .owner(7, "server")
                .local("10.0.0.1:8080")
                .remote(&remote)
                .transition("ESTABLISHED", "CLOSE")
                .build(),
        );
        events.push(
            ev(K::SocketError, 10)
                .sock(sock)
                .owner(7, "server")
                .local("10.0.0.1:8080")
                .remote(&remote)
                .socket_errno(libc::ECONNRESET)
                .build(),
        );
    }
    let a = agg(events);
    let clients = a.peers.get(&"10.0.0.9:0".parse().unwrap()).unwrap();
    assert_eq!(clients.socket_errors.get("ECONNRESET"), Some(&2));
    assert_eq!(a.peers.len(), 1, "one peer for the client host");
}

/// What the kernel's `OPENS` map would hold for these connect events:
/// one count per owner, peer and latency bucket.
fn counted(events: &[TcpEvent]) -> Vec<OpenCount> {
    type Key = (u32, Option<u32>, SocketAddr, Option<u16>);
    let mut by_key: BTreeMap<Key, OpenCount> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == K::Connect) {
        let bucket = e.connect_ns.map(tcptrace_common::log_bucket);
        let owner = e.owner.clone();
        by_key
            .entry((
                owner.as_ref().map_or(0, |o| o.pid),
                e.netns,
                e.remote,
                bucket,
            ))
            .or_insert(OpenCount {
                owner,
                netns: e.netns,
                peer: e.remote,
                passive: false,
                latency_bucket: bucket,
                n: 0,
            })
            .n += 1;
    }
    by_key.into_values().collect()
}

/// Opens counted in the kernel give the figures their events give:
/// connects exactly, per process and peer, latency within a bucket.
#[test]
fn opens_counted_in_the_kernel_equal_their_events() {
    let mut events = Vec::new();
    for i in 0..300u64 {
        let (pid, comm, remote) = if i % 3 == 0 {
            (42, "api", "10.0.0.7:443")
        } else {
            (43, "worker", "10.0.0.8:5432")
        };
        events.push(
            ev(K::Connect, i)
                .sock(i + 1)
                .owner(pid, comm)
                .remote(remote)
                .connect_ms(0.05 + (i % 17) as f64 * 0.3)
                .build(),
        );
    }
    let from_events = agg(events.clone());
    let mut from_counts = Aggregate::new(names());
    from_counts.add_opens(&counted(&events));
    from_counts.finish();
    assert_eq!(from_counts.total.connects, 300);
    for pid in [42, 43] {
        let (a, b) = (
            &from_events.process(pid).unwrap().stats,
            &from_counts.process(pid).unwrap().stats,
        );
        assert_eq!(a.connects, b.connects, "pid {pid}");
        assert_eq!(
            from_counts.process(pid).unwrap().comm,
            from_events.process(pid).unwrap().comm
        );
        let (pa, pb) = (
            a.connect_latency.percentiles().unwrap(),
            b.connect_latency.percentiles().unwrap(),
        );
        assert_eq!(pa.count, pb.count);
        for (x, y) in [(pa.p50_ns, pb.p50_ns), (pa.p99_ns, pb.p99_ns)] {
            let err = (x as f64 - y as f64).abs() / x as f64;
            assert!(err < 0.10, "pid {pid}: {x} vs {y}");
        }
    }
    for peer in ["10.0.0.7:443", "10.0.0.8:5432"] {
        let peer: SocketAddr = peer.parse().unwrap();
        assert_eq!(
            from_events.peers.get(&peer).unwrap().connects,
            from_counts.peers.get(&peer).unwrap().connects
        );
    }
    // Their namespace had the same events and connects (what diagnose's
    // survey of namespaces goes by).
    let netns = events[0].netns.unwrap();
    let (na, nb) = (
        from_events.namespaces.get(&netns).unwrap(),
        from_counts.namespaces.get(&netns).unwrap(),
    );
    assert_eq!((na.events, na.stats.connects), (300, 300));
    assert_eq!((nb.events, nb.stats.connects), (300, 300));
}

/// A close whose open was counted in the kernel takes its lifetime from
/// the age the kernel sends with it.
#[test]
fn a_counted_open_closes_with_its_lifetime() {
    let a = agg([ev(K::State, 9_000)
        .sock(5)
        .owner(42, "api")
        .remote("10.0.0.7:443")
        .transition("FIN_WAIT2", "CLOSE")
        .age_ms(7_000)
        .build()]);
    let lifetimes = a.total.lifetimes.percentiles().unwrap();
    assert_eq!(lifetimes.count, 1);
    assert!((lifetimes.p50_ns as i64 - 7_000_000_000).abs() < 100_000_000);
}

/// The peer's FIN answered by a TIME_WAIT socket and freed without a
/// reason ends every connection this side closed first: no drop in the
/// tables. A FIN freed for a reason, or an ACK freed without one, is.
#[test]
fn a_closing_fin_freed_without_a_reason_is_no_drop() {
    let mut agg = Aggregate::new(names());
    let fin_ack = 0x11;
    for (i, (reason, flags)) in [(1, fin_ack), (1, fin_ack), (2, fin_ack), (1, 0x10)]
        .into_iter()
        .enumerate()
    {
        agg.add(
            &ev(K::Drop, 100 + i as u64)
                .owner(7, "srv")
                .remote("10.0.0.9:40000")
                .dropped_incoming(reason, flags)
                .build(),
        );
    }
    let drops = &agg.process(7).unwrap().stats.drops;
    assert_eq!(drops.get("NOT_SPECIFIED"), Some(&1), "{drops:?}");
    assert_eq!(drops.get("NO_SOCKET"), Some(&1), "{drops:?}");
    assert_eq!(agg.total.drops_total(), 2);
}

/// A passive child's `lsndtime` and `lrcvtime` both start at its
/// creation jiffy: a request that arrived in that jiffy and no answer at
/// all compare equal. The data segments sent tell them apart; unknown,
/// the jiffies alone decide as before.
#[test]
fn complete_exchange_needs_a_data_segment_sent_when_known() {
    let reset = |segs: Option<u32>| {
        let e = ev(K::RstSent, 2_000)
            .sock(1)
            .owner(7, "backend")
            .state("ESTABLISHED")
            .idle_ms(1_003, 1_003)
            .queues(0, 0, 1_003);
        match segs {
            Some(n) => e.data_segs_out(n),
            None => e,
        }
        .build()
    };
    // Equal jiffies, server side.
    assert!(
        !complete_exchange(&reset(Some(0)), true),
        "never sent a byte"
    );
    assert!(complete_exchange(&reset(Some(1)), true));
    assert!(complete_exchange(&reset(None), true), "unknown: jiffies");
    assert_eq!(reset(Some(0)).answered(), Some(false));
    assert_eq!(reset(Some(2)).answered(), Some(true));
    // The client side is unchanged (equal jiffies are no answer there).
    for segs in [Some(0), Some(1), None] {
        assert!(!complete_exchange(&reset(segs), false));
    }
    // A server whose answer went out 1 ms ago, request 5 ms ago, reset by
    // the client before its ACK: right after the answer, unless the
    // "answer" was no data segment at all.
    let checked = |segs: Option<u32>| {
        let e = ev(K::RstReceived, 2_000)
            .sock(2)
            .owner(7, "backend")
            .state("ESTABLISHED")
            .idle_ms(1, 1)
            .queues(769, 0, 5);
        match segs {
            Some(n) => e.data_segs_out(n),
            None => e,
        }
        .build()
    };
    assert!(reset_right_after_answer(&checked(Some(1))));
    assert!(reset_right_after_answer(&checked(None)));
    assert!(!reset_right_after_answer(&checked(Some(0))));
}

/// Counted per process: a server's RSTs with nothing ever sent are not
/// clean, those after an answer are.
#[test]
fn resets_of_a_server_that_sent_nothing_are_not_clean() {
    let events = |segs: u32, kind: K| -> Vec<TcpEvent> {
        (0..4u64)
            .flat_map(|k| {
                let client = format!("10.0.0.9:{}", 51_000 + k);
                [
                    ev(K::State, 10 * k)
                        .sock(100 + k)
                        .owner(7, "backend")
                        .local("10.0.0.1:8080")
                        .remote(&client)
                        .transition("SYN_RECV", "ESTABLISHED")
                        .build(),
                    ev(kind, 10 * k + 1_003)
                        .sock(100 + k)
                        .owner(7, "backend")
                        .local("10.0.0.1:8080")
                        .remote(&client)
                        .state("ESTABLISHED")
                        .reason("TCP_ABORT_ON_LINGER")
                        .idle_ms(1_003, 1_003)
                        .queues(0, 0, 1_003)
                        .data_segs_out(segs)
                        .build(),
                ]
            })
            .collect()
    };
    let a = agg(events(0, K::RstSent));
    assert_eq!((a.total.rst_sent_clean, a.total.rst_lost_data), (0, 0));
    let a = agg(events(3, K::RstSent));
    assert_eq!(a.total.rst_sent_clean, 4);
    let a = agg(events(0, K::RstReceived));
    assert_eq!(a.total.rst_received_clean, 0);
    let a = agg(events(3, K::RstReceived));
    assert_eq!(a.total.rst_received_clean, 4);
}
