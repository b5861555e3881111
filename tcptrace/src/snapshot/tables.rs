//! Turns a plain list of sockets into the snapshot's tables. Pure: no
//! kernel, no /proc, so every figure is unit-tested.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use serde::Serialize;

use crate::host::{
    owners::Owner,
    sock_diag::{TcpSocket, TcpState},
};

/// How many sockets are in each state (states with none are left out).
pub type StateCounts = BTreeMap<TcpState, usize>;

/// How the tables are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Rows kept in each ranked table.
    pub top: usize,
    /// Ephemeral port use per destination, in percent of the range, from
    /// which a destination is flagged.
    pub ephemeral_warn_percent: u8,
}

/// `net.ipv4.ip_local_port_range`: the ports connect() picks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortRange {
    /// First port.
    pub low: u16,
    /// Last port (inclusive).
    pub high: u16,
}

impl PortRange {
    /// Parses the sysctl's text, `32768\t60999`.
    pub fn parse(text: &str) -> Option<PortRange> {
        let mut parts = text.split_whitespace().map(str::parse::<u16>);
        let (Some(Ok(low)), Some(Ok(high)), None) = (parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        (low <= high).then_some(PortRange { low, high })
    }

    /// Ports in the range.
    pub fn size(self) -> u32 {
        u32::from(self.high) - u32::from(self.low) + 1
    }

    /// True when `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }
}

/// Every table of a snapshot, built from one socket dump.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tables {
    /// TCP sockets in all.
    pub total: usize,
    /// Sockets by state.
    pub states: StateCounts,
    /// Processes holding the most sockets.
    pub processes: Vec<ProcessRow>,
    /// Sockets no process holds: TIME_WAIT, connections not yet accepted,
    /// orphans closing down.
    pub unowned: StateCounts,
    /// Local ports with the most sockets.
    pub local_ports: Vec<PortRow>,
    /// Remote endpoints with the most sockets.
    pub remote_endpoints: Vec<EndpointRow>,
    /// Client-side TIME_WAIT (this host connected and closed first) by
    /// destination, most first: what uses up ephemeral ports to it.
    pub time_wait_by_destination: Vec<DestinationCount>,
    /// Server-side TIME_WAIT (this host's service closed first) by the
    /// local service (address:port), most first: the socket's local
    /// port is the service's, its remote port the client's ephemeral one.
    pub time_wait_by_local_service: Vec<ServiceCount>,
    /// Ephemeral port use per source and destination.
    pub ephemeral_ports: EphemeralUse,
    /// Listening sockets with their accept queue fill.
    pub listeners: Vec<ListenerRow>,
    /// The connections that look worst (stalled, retransmitting, slow).
    pub top_connections: Vec<ConnectionRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessRow {
    pub pid: u32,
    pub comm: String,
    pub total: usize,
    pub states: StateCounts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortRow {
    pub port: u16,
    pub total: usize,
    pub states: StateCounts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointRow {
    pub endpoint: SocketAddr,
    pub total: usize,
    pub states: StateCounts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestinationCount {
    pub destination: SocketAddr,
    pub count: usize,
}

/// Server-side TIME_WAIT sockets of one local service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceCount {
    /// The local address and port the clients connected to.
    pub service: SocketAddr,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EphemeralUse {
    pub range: PortRange,
    pub range_size: u32,
    pub warn_percent: u8,
    pub destinations: Vec<EphemeralRow>,
}

/// Ports from the ephemeral range held towards one destination from one
/// source address: each such pair has the whole range to itself, and
/// connect() fails with EADDRNOTAVAIL when it is used up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EphemeralRow {
    pub source: IpAddr,
    pub destination: SocketAddr,
    pub used: u32,
    pub percent: f64,
    pub warning: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerRow {
    pub local: SocketAddr,
    /// Connections completed by the kernel, waiting for accept().
    pub queued: u32,
    /// The accept queue limit: min(listen backlog, net.core.somaxconn).
    pub limit: u32,
    /// The kernel accepts one more than `limit` before it drops SYNs, so
    /// a full queue shows as more than 100%.
    pub fill_percent: Option<u32>,
    pub owner: Option<Owner>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionRow {
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub owner: Option<Owner>,
    pub recv_q: u32,
    pub send_q: u32,
    pub rtt_us: u32,
    pub rttvar_us: u32,
    pub rto_us: u32,
    /// Retransmits of the segment in flight now (a stalled connection).
    pub retransmits: u8,
    pub total_retrans: u32,
    pub lost: u32,
    pub unacked: u32,
    /// Milliseconds since data was last sent and received; `None` before
    /// the handshake completed, when the kernel has no such time.
    pub last_send_ms: Option<u32>,
    pub last_recv_ms: Option<u32>,
}

/// Builds every table from one socket dump.
pub fn build(
    sockets: &[TcpSocket],
    owners: &HashMap<u64, Owner>,
    port_range: PortRange,
    options: Options,
) -> Tables {
    let owner_of = |socket: &TcpSocket| {
        (socket.inode != 0)
            .then(|| owners.get(&socket.inode))
            .flatten()
    };
    let mut states = StateCounts::new();
    let mut unowned = StateCounts::new();
    let mut processes: HashMap<&Owner, StateCounts> = HashMap::new();
    let mut local_ports: HashMap<u16, StateCounts> = HashMap::new();
    let mut remote_endpoints: HashMap<SocketAddr, StateCounts> = HashMap::new();
    let mut time_wait: HashMap<SocketAddr, usize> = HashMap::new();
    let mut time_wait_served: HashMap<SocketAddr, usize> = HashMap::new();
    let listening: HashSet<u16> = sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen)
        .map(|s| s.local.port())
        .collect();
    // A TIME_WAIT whose local port a listener has (or, with the listener
    // gone, a fixed local port facing an ephemeral one) is a server's.
    let server_side = |socket: &TcpSocket| {
        listening.contains(&socket.local.port())
            || (!port_range.contains(socket.local.port())
                && port_range.contains(socket.remote.port()))
    };
    for socket in sockets {
        *states.entry(socket.state).or_default() += 1;
        match owner_of(socket) {
            Some(owner) => {
                *processes
                    .entry(owner)
                    .or_default()
                    .entry(socket.state)
                    .or_default() += 1
            }
            None => *unowned.entry(socket.state).or_default() += 1,
        }
        *local_ports
            .entry(socket.local.port())
            .or_default()
            .entry(socket.state)
            .or_default() += 1;
        if socket.state != TcpState::Listen {
            *remote_endpoints
                .entry(socket.remote)
                .or_default()
                .entry(socket.state)
                .or_default() += 1;
        }
        if socket.state == TcpState::TimeWait {
            if server_side(socket) {
                *time_wait_served.entry(socket.local).or_default() += 1;
            } else {
                *time_wait.entry(socket.remote).or_default() += 1;
            }
        }
    }

    let mut processes: Vec<ProcessRow> = processes
        .into_iter()
        .map(|(owner, states)| ProcessRow {
            pid: owner.pid,
            comm: owner.comm.clone(),
            total: states.values().sum(),
            states,
        })
        .collect();
    processes.sort_by(|a, b| b.total.cmp(&a.total).then(a.pid.cmp(&b.pid)));
    processes.truncate(options.top);

    let mut local_ports: Vec<PortRow> = local_ports
        .into_iter()
        .map(|(port, states)| PortRow {
            port,
            total: states.values().sum(),
            states,
        })
        .collect();
    local_ports.sort_by(|a, b| b.total.cmp(&a.total).then(a.port.cmp(&b.port)));
    local_ports.truncate(options.top);

    let mut remote_endpoints: Vec<EndpointRow> = remote_endpoints
        .into_iter()
        .map(|(endpoint, states)| EndpointRow {
            endpoint,
            total: states.values().sum(),
            states,
        })
        .collect();
    remote_endpoints.sort_by(|a, b| b.total.cmp(&a.total).then(a.endpoint.cmp(&b.endpoint)));
    remote_endpoints.truncate(options.top);

    let mut time_wait_by_destination: Vec<DestinationCount> = time_wait
        .into_iter()
        .map(|(destination, count)| DestinationCount { destination, count })
        .collect();
    time_wait_by_destination.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.destination.cmp(&b.destination))
    });
    time_wait_by_destination.truncate(options.top);
    let mut time_wait_by_local_service: Vec<ServiceCount> = time_wait_served
        .into_iter()
        .map(|(service, count)| ServiceCount { service, count })
        .collect();
    time_wait_by_local_service
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.service.cmp(&b.service)));
    time_wait_by_local_service.truncate(options.top);

    let mut listeners: Vec<ListenerRow> = sockets
        .iter()
        .filter(|socket| socket.state == TcpState::Listen)
        .map(|socket| ListenerRow {
            local: socket.local,
            queued: socket.recv_q,
            limit: socket.send_q,
            fill_percent: (socket.send_q > 0).then(|| {
                u32::try_from(u64::from(socket.recv_q) * 100 / u64::from(socket.send_q))
                    .unwrap_or(u32::MAX)
            }),
            owner: owner_of(socket).cloned(),
        })
        .collect();
    listeners.sort_by(|a, b| {
        b.fill_percent
            .cmp(&a.fill_percent)
            .then(a.local.cmp(&b.local))
    });

    Tables {
        total: sockets.len(),
        states,
        processes,
        unowned,
        local_ports,
        remote_endpoints,
        time_wait_by_destination,
        time_wait_by_local_service,
        ephemeral_ports: ephemeral_use(sockets, port_range, options),
        listeners,
        top_connections: top_connections(sockets, &owner_of, options.top),
    }
}

fn ephemeral_use(sockets: &[TcpSocket], range: PortRange, options: Options) -> EphemeralUse {
    // A server's accepted connections share its listening port; they are
    // not ephemeral even when that port lies inside the range.
    let listening: HashSet<u16> = sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen)
        .map(|s| s.local.port())
        .collect();
    let mut used: HashMap<(IpAddr, SocketAddr), u32> = HashMap::new();
    for socket in sockets {
        let port = socket.local.port();
        if socket.state == TcpState::Listen
            || socket.remote.port() == 0
            || !range.contains(port)
            || listening.contains(&port)
        {
            continue;
        }
        *used.entry((socket.local.ip(), socket.remote)).or_default() += 1;
    }
    let range_size = range.size();
    let mut destinations: Vec<EphemeralRow> = used
        .into_iter()
        .map(|((source, destination), used)| {
            let percent = f64::from(used) * 100.0 / f64::from(range_size);
            EphemeralRow {
                source,
                destination,
                used,
                percent: (percent * 10.0).round() / 10.0,
                warning: percent >= f64::from(options.ephemeral_warn_percent),
            }
        })
        .collect();
    destinations.sort_by(|a, b| {
        b.used
            .cmp(&a.used)
            .then(a.destination.cmp(&b.destination))
            .then(a.source.cmp(&b.source))
    });
    destinations.truncate(options.top);
    EphemeralUse {
        range,
        range_size,
        warn_percent: options.ephemeral_warn_percent,
        destinations,
    }
}

/// The connections most likely to hurt: stalled on a retransmit first,
/// then by retransmits over their life, losses, and round-trip time.
fn top_connections<'a>(
    sockets: &'a [TcpSocket],
    owner_of: &dyn Fn(&'a TcpSocket) -> Option<&'a Owner>,
    top: usize,
) -> Vec<ConnectionRow> {
    let mut rows: Vec<ConnectionRow> = sockets
        .iter()
        .filter(|socket| socket.state != TcpState::Listen)
        .filter_map(|socket| {
            let info = socket.info?;
            let connected = socket.state != TcpState::SynSent;
            Some(ConnectionRow {
                state: socket.state,
                local: socket.local,
                remote: socket.remote,
                owner: owner_of(socket).cloned(),
                recv_q: socket.recv_q,
                send_q: socket.send_q,
                rtt_us: info.rtt_us,
                rttvar_us: info.rttvar_us,
                rto_us: info.rto_us,
                retransmits: info.retransmits,
                total_retrans: info.total_retrans,
                lost: info.lost,
                unacked: info.unacked,
                last_send_ms: connected.then_some(info.last_data_sent_ms),
                last_recv_ms: connected.then_some(info.last_data_recv_ms),
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.retransmits, b.total_retrans, b.lost, b.rtt_us)
            .cmp(&(a.retransmits, a.total_retrans, a.lost, a.rtt_us))
            .then(a.local.cmp(&b.local))
    });
    rows.truncate(top);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sock_diag::TcpInfo;

    const RANGE: PortRange = PortRange {
        low: 40000,
        high: 40009,
    };
    const OPTIONS: Options = Options {
        top: 10,
        ephemeral_warn_percent: 50,
    };

    fn socket(state: TcpState, local: &str, remote: &str, inode: u64) -> TcpSocket {
        TcpSocket {
            state,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            recv_q: 0,
            send_q: 0,
            inode,
            uid: 0,
            info: None,
        }
    }

    fn owners() -> HashMap<u64, Owner> {
        HashMap::from([
            (
                1,
                Owner {
                    pid: 100,
                    comm: "server".into(),
                },
            ),
            (
                2,
                Owner {
                    pid: 200,
                    comm: "client".into(),
                },
            ),
            (
                3,
                Owner {
                    pid: 200,
                    comm: "client".into(),
                },
            ),
            (
                4,
                Owner {
                    pid: 200,
                    comm: "client".into(),
                },
            ),
        ])
    }

    /// A server on :80 with a queue of 3 out of 2, a client holding two
    /// connections to it, three TIME_WAITs to :80 and one to :443.
    fn sockets() -> Vec<TcpSocket> {
        let mut listener = socket(TcpState::Listen, "0.0.0.0:80", "0.0.0.0:0", 1);
        listener.recv_q = 3;
        listener.send_q = 2;
        vec![
            listener,
            socket(TcpState::Established, "10.0.0.2:40001", "10.0.0.1:80", 2),
            socket(TcpState::Established, "10.0.0.2:40002", "10.0.0.1:80", 3),
            socket(TcpState::Established, "10.0.0.1:80", "10.0.0.2:40001", 0),
            socket(TcpState::Established, "10.0.0.1:80", "10.0.0.2:40002", 0),
            socket(TcpState::SynSent, "10.0.0.2:40003", "10.0.0.9:443", 4),
            socket(TcpState::TimeWait, "10.0.0.2:40004", "10.0.0.1:80", 0),
            socket(TcpState::TimeWait, "10.0.0.2:40005", "10.0.0.1:80", 0),
            socket(TcpState::TimeWait, "10.0.0.2:40006", "10.0.0.1:80", 0),
            socket(TcpState::TimeWait, "10.0.0.2:50000", "10.0.0.9:443", 0),
        ]
    }

    #[test]
    fn counts_states_overall_and_unowned() {
        let tables = build(&sockets(), &owners(), RANGE, OPTIONS);
        assert_eq!(tables.total, 10);
        assert_eq!(
            tables.states,
            StateCounts::from([
                (TcpState::Established, 4),
                (TcpState::SynSent, 1),
                (TcpState::TimeWait, 4),
                (TcpState::Listen, 1)
            ])
        );
        assert_eq!(
            tables.unowned,
            StateCounts::from([(TcpState::Established, 2), (TcpState::TimeWait, 4)])
        );
    }

    #[test]
    fn groups_by_process_port_and_peer() {
        let tables = build(&sockets(), &owners(), RANGE, OPTIONS);
        let pids: Vec<(u32, &str, usize)> = tables
            .processes
            .iter()
            .map(|p| (p.pid, p.comm.as_str(), p.total))
            .collect();
        assert_eq!(pids, vec![(200, "client", 3), (100, "server", 1)]);
        assert_eq!(tables.processes[0].states[&TcpState::SynSent], 1);

        assert_eq!(tables.local_ports[0].port, 80);
        assert_eq!(tables.local_ports[0].total, 3);
        assert_eq!(tables.local_ports[0].states[&TcpState::Listen], 1);

        let peer: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert_eq!(tables.remote_endpoints[0].endpoint, peer);
        assert_eq!(tables.remote_endpoints[0].total, 5);
        assert!(
            !tables
                .remote_endpoints
                .iter()
                .any(|r| r.endpoint.port() == 0),
            "listeners have no peer"
        );
    }

    #[test]
    fn time_wait_per_destination() {
        let tables = build(&sockets(), &owners(), RANGE, OPTIONS);
        let rows: Vec<(String, usize)> = tables
            .time_wait_by_destination
            .iter()
            .map(|r| (r.destination.to_string(), r.count))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("10.0.0.1:80".to_string(), 3),
                ("10.0.0.9:443".to_string(), 1)
            ]
        );
    }

    #[test]
    fn server_side_time_wait_is_counted_by_local_service_not_client_port() {
        let mut sockets = sockets();
        // The server on :80 closed first: its TIME_WAIT sockets have the
        // service's port locally and the clients' ephemeral ports.
        for port in 40007..40010 {
            sockets.push(socket(
                TcpState::TimeWait,
                "10.0.0.1:80",
                &format!("10.0.0.7:{port}"),
                0,
            ));
        }
        // A server on a port nothing listens on any more (restarted).
        sockets.push(socket(
            TcpState::TimeWait,
            "10.0.0.1:8443",
            "10.0.0.8:40008",
            0,
        ));
        let tables = build(&sockets, &owners(), RANGE, OPTIONS);
        let served: Vec<(String, usize)> = tables
            .time_wait_by_local_service
            .iter()
            .map(|r| (r.service.to_string(), r.count))
            .collect();
        assert_eq!(
            served,
            [
                ("10.0.0.1:80".to_string(), 3),
                ("10.0.0.1:8443".to_string(), 1)
            ]
        );
        assert!(
            tables
                .time_wait_by_destination
                .iter()
                .all(|r| !RANGE.contains(r.destination.port())),
            "no client's ephemeral port as a destination: {:?}",
            tables.time_wait_by_destination
        );
        assert_eq!(tables.time_wait_by_destination.len(), 2);
    }

    #[test]
    fn ephemeral_ports_against_the_range() {
        let tables = build(&sockets(), &owners(), RANGE, OPTIONS);
        let ephemeral = &tables.ephemeral_ports;
        assert_eq!(ephemeral.range_size, 10);
        // To :80: 40001, 40002 (established) and 40004-6 (TIME_WAIT); the
        // server side (local port 80) and port 50000 are outside the range.
        let rows: Vec<(String, u32, f64, bool)> = ephemeral
            .destinations
            .iter()
            .map(|r| (r.destination.to_string(), r.used, r.percent, r.warning))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("10.0.0.1:80".to_string(), 5, 50.0, true),
                ("10.0.0.9:443".to_string(), 1, 10.0, false)
            ]
        );
    }

    #[test]
    fn accepted_connections_on_a_port_inside_the_range_are_not_ephemeral() {
        let mut listener = socket(TcpState::Listen, "0.0.0.0:40005", "0.0.0.0:0", 1);
        listener.send_q = 8;
        let sockets = vec![
            listener,
            socket(TcpState::Established, "10.0.0.1:40005", "10.0.0.2:5555", 0),
        ];
        let tables = build(&sockets, &owners(), RANGE, OPTIONS);
        assert!(tables.ephemeral_ports.destinations.is_empty());
    }

    #[test]
    fn listeners_show_queue_fill_and_owner() {
        let tables = build(&sockets(), &owners(), RANGE, OPTIONS);
        let listener = &tables.listeners[0];
        assert_eq!(
            (listener.queued, listener.limit, listener.fill_percent),
            (3, 2, Some(150))
        );
        assert_eq!(listener.owner.as_ref().map(|o| o.pid), Some(100));
    }

    #[test]
    fn top_connections_rank_stalled_and_lossy_first() {
        let mut sockets = sockets();
        let info = |retransmits, total_retrans, rtt_us| TcpInfo {
            retransmits,
            total_retrans,
            rtt_us,
            ..TcpInfo::default()
        };
        sockets[1].info = Some(info(0, 5, 900));
        sockets[2].info = Some(info(2, 1, 100));
        sockets[3].info = Some(info(0, 5, 2000));
        sockets[4].info = Some(info(0, 0, 50));
        let tables = build(&sockets, &owners(), RANGE, Options { top: 3, ..OPTIONS });
        let order: Vec<String> = tables
            .top_connections
            .iter()
            .map(|r| r.local.to_string())
            .collect();
        assert_eq!(
            order,
            vec!["10.0.0.2:40002", "10.0.0.1:80", "10.0.0.2:40001"]
        );
        assert_eq!(
            tables.top_connections[0].owner.as_ref().map(|o| o.pid),
            Some(200)
        );
    }

    #[test]
    fn connects_in_progress_have_no_last_send_or_receive() {
        let mut sockets = sockets();
        sockets[5].info = Some(TcpInfo {
            last_data_sent_ms: 999_999,
            ..TcpInfo::default()
        });
        sockets[1].info = Some(TcpInfo {
            last_data_sent_ms: 40,
            last_data_recv_ms: 50,
            ..TcpInfo::default()
        });
        let tables = build(&sockets, &owners(), RANGE, OPTIONS);
        let times = |state| {
            let row = tables
                .top_connections
                .iter()
                .find(|r| r.state == state)
                .unwrap();
            (row.last_send_ms, row.last_recv_ms)
        };
        assert_eq!(times(TcpState::SynSent), (None, None));
        assert_eq!(times(TcpState::Established), (Some(40), Some(50)));
    }

    #[test]
    fn ranked_tables_are_cut_at_top() {
        let mut sockets = sockets();
        sockets.push(socket(TcpState::Listen, "0.0.0.0:22", "0.0.0.0:0", 0));
        let tables = build(&sockets, &owners(), RANGE, Options { top: 1, ..OPTIONS });
        assert_eq!(tables.processes.len(), 1);
        assert_eq!(tables.local_ports.len(), 1);
        assert_eq!(tables.time_wait_by_destination.len(), 1);
        assert_eq!(tables.listeners.len(), 2, "listeners are never cut");
    }

    #[test]
    fn port_range_parsing() {
        assert_eq!(
            PortRange::parse("32768\t60999\n"),
            Some(PortRange {
                low: 32768,
                high: 60999
            })
        );
        assert_eq!(PortRange::parse("32768 60999").unwrap().size(), 28232);
        assert_eq!(PortRange::parse("60999 32768"), None);
        assert_eq!(PortRange::parse("1 2 3"), None);
        assert_eq!(PortRange::parse("x 2"), None);
    }
}
