//! What the host itself says, besides the events: kernel counter deltas,
//! the relevant sysctls and socket tables at the start and the end. Plain
//! data, so the rules can be tested without a kernel.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
};

use serde::{Deserialize, Serialize};

use crate::host::{
    conntrack::ConntrackChange,
    global::HostGlobal,
    owners::Owner,
    reading::tcp_delta,
    sock_diag::{TcpSocket, TcpState},
    survey::Survey,
};

/// Sysctls the rules read and the report shows.
pub const SYSCTLS: [&str; 13] = [
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_abort_on_overflow",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_retries2",
    "net.ipv4.tcp_syn_retries",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_max_tw_buckets",
    "net.netfilter.nf_conntrack_max",
];

/// The host's side of a diagnosis, read before and after the watch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostFacts {
    /// Change of each kernel counter over the run, by nstat name
    /// (`TcpExtListenOverflows`, `TcpEstabResets`, ...).
    pub counters: BTreeMap<String, i64>,
    /// Values at the start, by sysctl key; absent keys are missing.
    pub sysctls: BTreeMap<String, String>,
    /// The socket table when the watch started (`None`: sock_diag failed).
    pub sockets_start: Option<SocketFacts>,
    /// The socket table when it ended.
    pub sockets_end: Option<SocketFacts>,
    /// The namespace's conntrack at the start and the end; `None` when a
    /// reading failed.
    pub conntrack: Option<ConntrackChange>,
    /// Host-wide TCP limits and usage (initial namespace) at the start
    /// and the end.
    pub host_global_start: Option<HostGlobal>,
    /// The same at the end.
    pub host_global_end: Option<HostGlobal>,
    // --- per namespace (conntrack and drop rules) ---
    /// The namespace `--netns` watched (inode); `None`: the whole host.
    pub watched_netns: Option<u32>,
    /// The namespaces the events came from, the watched one, and any
    /// whose conntrack refused packets or is full, each with its own
    /// counters and conntrack (see [`NamespaceFacts`]), most events first.
    pub namespaces: Vec<NamespaceFacts>,
    /// More namespaces were in use than were read: a namespace missing
    /// here may be one of them.
    pub namespaces_truncated: bool,
    /// TCP drops the kernel counted by drop reason name over the run,
    /// exact even when events were lost: `in_scope` those the filters
    /// kept (and the watched connections' own, wherever they were
    /// dropped), `host` every one on the host before any filter.
    pub kernel_drops: KernelDrops,
    /// Every listener sampled while watching, with the fullest accept
    /// queue seen (`ListenerPeaks`).
    pub listeners_peak: Vec<Listener>,
}

/// The kernel's own per-reason drop counts (see `HostFacts::kernel_drops`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct KernelDrops {
    /// `skb:kfree_skb` was traced: the counts below are complete (empty
    /// means no TCP packet was dropped).
    pub traced: bool,
    /// Drops the filters kept, by reason name.
    pub in_scope: BTreeMap<String, u64>,
    /// Every TCP drop on the host, by reason name.
    pub host: BTreeMap<String, u64>,
}

impl KernelDrops {
    /// Host-wide drops with this reason.
    pub fn host(&self, reason: &str) -> u64 {
        self.host.get(reason).copied().unwrap_or(0)
    }
}

/// One network namespace's side of the run: its own counters and
/// conntrack, quoted where they belong.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NamespaceFacts {
    /// Its inode (what events carry as `netns`).
    pub inode: u32,
    /// How to find it: `ip netns` name, `host`, or `pid N (comm)`.
    pub name: String,
    /// The namespace `--netns` named.
    pub watched: bool,
    /// Events that came from it.
    pub events: u64,
    /// Created during the run (not there at the start): its counters are
    /// counted from zero at its creation.
    pub created_during_run: bool,
    /// Deleted during the run: its end figures were read through the hold
    /// `diagnose` kept on it (see `survey::Held`), as its last process
    /// or `ip netns del` left them.
    pub deleted_during_run: bool,
    /// Change of each TCP/ICMP counter over the run, by nstat name.
    pub counters: BTreeMap<String, i64>,
    /// Its conntrack at the start and the end (start = end for one
    /// created during the run); `None` when unreadable.
    pub conntrack: Option<ConntrackChange>,
}

impl NamespaceFacts {
    /// A counter's change by nstat name; 0 when absent.
    pub fn counter(&self, name: &str) -> i64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// `netns ctf-node (4026532301)`: where a figure comes from.
    pub fn label(&self) -> String {
        format!("netns {} ({})", self.name, self.inode)
    }

    /// The conntrack table refused or flagged packets over the run, or
    /// is full now: `drop`, `early_drop`, `insert_failed` or `invalid`
    /// rose, or the count reached `nf_conntrack_max`.
    pub fn conntrack_notable(&self) -> bool {
        let Some(ct) = &self.conntrack else {
            return false;
        };
        let full = ct
            .end
            .state()
            .is_some_and(|s| matches!((s.count, s.max), (Some(c), Some(m)) if m > 0 && c >= m));
        full || ["drop", "early_drop", "insert_failed", "invalid"]
            .iter()
            .any(|k| ct.delta_of(k) > 0)
    }

    /// A failure counter rose over the run (`NOTABLE_COUNTERS`): the
    /// other end of watched connections may live here (a server's
    /// namespace seen from its clients with `--netns`, which keeps its
    /// events out).
    pub fn counters_notable(&self) -> bool {
        NOTABLE_COUNTERS.iter().any(|c| self.counter(c) > 0)
    }

    /// Per-namespace facts from a survey before and after the run:
    /// the namespaces in `events` (inode -> events from it), the
    /// `watched` one, and those whose conntrack is notable or where a
    /// failure counter rose (`counters_notable`), most
    /// events first. A namespace in `after` only was created during the
    /// run, unless `before` was truncated (then it is left out: its
    /// counters could not be told from their change).
    pub fn from_surveys(
        before: &Survey,
        after: &Survey,
        events: &BTreeMap<u32, u64>,
        watched: Option<u32>,
    ) -> Vec<NamespaceFacts> {
        let mut facts: Vec<NamespaceFacts> = after
            .namespaces
            .iter()
            .filter_map(|(inode, end)| {
                // A namespace deleted during the watch whose inode a new
                // one took over: the new one's counters did not start
                // from the old one's (they would change by negative
                // amounts), so it counts as created during the run.
                let start = before
                    .namespaces
                    .get(inode)
                    .filter(|start| same_namespace(start.cookie, end.cookie));
                if start.is_none() && before.truncated {
                    return None;
                }
                let conntrack = match (start.and_then(|s| s.conntrack.clone()), &end.conntrack) {
                    (Some(s), Some(e)) => Some(ConntrackChange::new(s, e.clone())),
                    (None, Some(e)) if start.is_none() => {
                        Some(ConntrackChange::new(e.clone(), e.clone()))
                    }
                    _ => None,
                };
                Some(NamespaceFacts {
                    inode: *inode,
                    name: end.name.clone(),
                    watched: watched == Some(*inode),
                    events: events.get(inode).copied().unwrap_or(0),
                    created_during_run: start.is_none(),
                    deleted_during_run: end.deleted,
                    counters: tcp_delta(&end.counters, start.map(|s| &s.counters)),
                    conntrack,
                })
            })
            .filter(|ns| {
                ns.events > 0 || ns.watched || ns.conntrack_notable() || ns.counters_notable()
            })
            .collect();
        facts.sort_by(|a, b| (b.watched, b.events, a.inode).cmp(&(a.watched, a.events, b.inode)));
        facts
    }

    /// Every counter summed over the namespaces that had events: the
    /// host-wide figure a rule quotes when no namespace was named.
    pub fn summed(namespaces: &[NamespaceFacts]) -> Option<BTreeMap<String, i64>> {
        let mut sum: BTreeMap<String, i64> = BTreeMap::new();
        let mut any = false;
        for ns in namespaces.iter().filter(|ns| ns.events > 0) {
            any = true;
            for (k, v) in &ns.counters {
                *sum.entry(k.clone()).or_default() += v;
            }
        }
        any.then_some(sum)
    }
}

/// Whether two readings of one inode are the same namespace: their
/// cookies agree, or a kernel before 5.14 gave none to compare.
fn same_namespace(before: Option<u64>, after: Option<u64>) -> bool {
    match (before, after) {
        (Some(before), Some(after)) => before == after,
        _ => true,
    }
}

impl HostFacts {
    /// A counter's change by nstat name; 0 when absent.
    pub fn counter(&self, name: &str) -> i64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// A sysctl's value at the start, by key.
    pub fn sysctl(&self, key: &str) -> Option<&str> {
        self.sysctls.get(key).map(String::as_str)
    }

    /// A numeric sysctl's value.
    pub fn sysctl_u64(&self, key: &str) -> Option<u64> {
        self.sysctl(key)?.trim().parse().ok()
    }

    /// `net.ipv4.ip_local_port_range` as (low, high).
    pub fn port_range(&self) -> Option<(u32, u32)> {
        let text = self.sysctl("net.ipv4.ip_local_port_range")?;
        let mut parts = text.split_whitespace().map(|p| p.parse::<u32>().ok());
        Some((parts.next()??, parts.next()??))
    }

    /// The later socket table, else the earlier one.
    pub fn sockets(&self) -> Option<&SocketFacts> {
        self.sockets_end.as_ref().or(self.sockets_start.as_ref())
    }

    /// The facts of the namespace with this inode, if it was kept.
    pub fn namespace(&self, inode: u32) -> Option<&NamespaceFacts> {
        self.namespaces.iter().find(|ns| ns.inode == inode)
    }

    /// How a report names the namespace with this inode: its label when
    /// it was kept (`netns ctf-node (4026532301)`), else `netns INODE`.
    pub fn namespace_label(&self, inode: u32) -> String {
        self.namespace(inode)
            .map_or_else(|| format!("netns {inode}"), NamespaceFacts::label)
    }

    /// With `--netns`, the other namespace of this host where `counter`
    /// rose most over the run, if by `at_least`: where the other end of
    /// the watched connections may be (a server in another pod of the
    /// node). `None` host-wide.
    pub fn elsewhere_most(&self, counter: &str, at_least: i64) -> Option<&NamespaceFacts> {
        let watched = self.watched_netns?;
        self.namespaces
            .iter()
            .filter(|ns| ns.inode != watched && ns.counter(counter) >= at_least)
            .max_by_key(|ns| ns.counter(counter))
    }

    /// A counter's change in one namespace (0: absent or not read).
    pub fn counter_in(&self, inode: u32, name: &str) -> i64 {
        self.namespace(inode).map_or(0, |ns| ns.counter(name))
    }
}

/// Counters whose rise in a namespace without events keeps it in the
/// facts: the other end's failures the rules read through
/// `HostFacts::elsewhere_most` (listen queue overflows, closes with
/// unread data, aborts).
const NOTABLE_COUNTERS: [&str; 8] = [
    "TcpExtListenOverflows",
    "TcpExtListenDrops",
    "TcpExtEmbryonicRsts",
    "TcpExtTCPAbortOnClose",
    "TcpExtTCPAbortOnData",
    "TcpExtTCPAbortOnLinger",
    "TcpExtTCPAbortOnMemory",
    "TcpExtTCPAbortOnTimeout",
];

/// Consecutive retransmission timeouts of one segment from which a
/// connection counts as stuck: 200 ms + 400 + 800 ms at the least, more
/// than any loss TCP repairs by itself.
pub const STUCK_RTOS: u8 = 3;
/// And no ACK received for this long (ms).
const STUCK_WITHOUT_ACK_MS: u32 = 1000;

/// The 10 endpoints with the most sockets, most first.
fn most_first(by_peer: HashMap<SocketAddr, u64>) -> Vec<(SocketAddr, u64)> {
    let mut by_peer: Vec<_> = by_peer.into_iter().collect();
    by_peer.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    by_peer.truncate(10);
    by_peer
}

/// A socket table reduced to what the rules use.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SocketFacts {
    /// Sockets by state name (`ESTABLISHED`, `TIME_WAIT`, ...).
    pub states: BTreeMap<String, u64>,
    /// Client-side TIME_WAIT sockets (this host connected and closed
    /// first) by remote endpoint, most first (top 10). Server-side ones
    /// (local port a listener's) are left out: their remote ports are
    /// the clients' ephemeral ports, and they hold none of ours.
    pub time_wait_by_peer: Vec<(SocketAddr, u64)>,
    /// Client-side sockets in any state by remote endpoint, most first
    /// (top 10): each holds one of this host's ephemeral ports, whether
    /// in TIME_WAIT or still open (a leak, an unbounded pool).
    pub held_by_peer: Vec<(SocketAddr, u64)>,
    /// Connections stuck when the table was read: the current segment
    /// retransmitted on timeout `STUCK_RTOS` times or more in a row with
    /// no ACK for a second (`tcp_info` `tcpi_retransmits`,
    /// `tcpi_last_ack_recv`), by remote endpoint (a server's clients by
    /// address, port 0), most first (top 10). Empty without `tcp_info`.
    pub stuck_by_peer: Vec<(SocketAddr, u64)>,
    /// Listening sockets with their accept queues.
    pub listeners: Vec<Listener>,
}

impl SocketFacts {
    /// A socket table reduced to what the rules use: counts by state,
    /// TIME_WAIT by peer (v4-mapped addresses shown as IPv4), listeners
    /// with their accept queues.
    pub fn of(sockets: &[TcpSocket]) -> SocketFacts {
        let mut facts = SocketFacts::default();
        let mut time_wait: HashMap<SocketAddr, u64> = HashMap::new();
        let mut held: HashMap<SocketAddr, u64> = HashMap::new();
        let mut stuck: HashMap<SocketAddr, u64> = HashMap::new();
        let listening: std::collections::HashSet<u16> = sockets
            .iter()
            .filter(|s| s.state == TcpState::Listen)
            .map(|s| s.local.port())
            .collect();
        for s in sockets {
            *facts.states.entry(s.state.name().to_string()).or_default() += 1;
            let client_side = s.state != TcpState::Listen && !listening.contains(&s.local.port());
            if client_side {
                let remote = SocketAddr::new(s.remote.ip().to_canonical(), s.remote.port());
                *held.entry(remote).or_default() += 1;
            }
            if s.info.is_some_and(|i| {
                i.retransmits >= STUCK_RTOS && i.last_ack_recv_ms >= STUCK_WITHOUT_ACK_MS
            }) {
                let port = if client_side { s.remote.port() } else { 0 };
                *stuck
                    .entry(SocketAddr::new(s.remote.ip().to_canonical(), port))
                    .or_default() += 1;
            }
            match s.state {
                TcpState::TimeWait if listening.contains(&s.local.port()) => {}
                TcpState::TimeWait => {
                    let remote = SocketAddr::new(s.remote.ip().to_canonical(), s.remote.port());
                    *time_wait.entry(remote).or_default() += 1;
                }
                TcpState::Listen => facts.listeners.push(Listener {
                    // Listeners sharing an address (SO_REUSEPORT) are
                    // named by the first one with a file.
                    inode: sockets
                        .iter()
                        .find(|l| l.state == TcpState::Listen && l.local == s.local && l.inode != 0)
                        .map_or(0, |l| l.inode),
                    ..Listener::of(s)
                }),
                _ => {}
            }
        }
        facts.time_wait_by_peer = most_first(time_wait);
        facts.held_by_peer = most_first(held);
        facts.stuck_by_peer = most_first(stuck);
        facts
    }

    /// Sockets in the state named `state` (`TIME_WAIT`, ...).
    pub fn in_state(&self, state: &str) -> u64 {
        self.states.get(state).copied().unwrap_or(0)
    }

    /// Names the process holding each listener from an inode -> process
    /// map (`host::owners::socket_owners`).
    pub fn name_listeners(&mut self, owners: &HashMap<u64, Owner>) {
        for l in &mut self.listeners {
            l.owner = l.owner_in(owners);
        }
    }

    /// The socket inodes of the listeners (0: none has a file).
    pub fn listener_inodes(&self) -> impl Iterator<Item = u64> + '_ {
        self.listeners.iter().map(|l| l.inode)
    }

    /// The listener that accepts connections for `local` (its own address
    /// or a wildcard one on the same port).
    pub fn listener_for(&self, local: SocketAddr) -> Option<&Listener> {
        listener_for(&self.listeners, local)
    }
}

/// The fullest each listener's accept queue was when sampled during the
/// run: the start and end tables alone miss a queue that was full in
/// between.
#[derive(Debug, Clone, Default)]
pub struct ListenerPeaks {
    /// Each listener as its fullest sample had it (its inode is that
    /// socket's, to name its holder).
    by_local: BTreeMap<SocketAddr, Listener>,
}

impl ListenerPeaks {
    /// Takes one sample of the listening sockets (`Listener::of_table`).
    pub fn sample(&mut self, listeners: &[Listener]) {
        for l in listeners {
            let entry = self.by_local.entry(l.local).or_insert_with(|| l.clone());
            if l.queued >= entry.queued {
                entry.queued = l.queued;
                entry.limit = l.limit;
                entry.inode = l.inode;
            }
        }
    }

    /// The socket inodes of the peaks (0: no file).
    pub fn inodes(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_local.values().map(|l| l.inode)
    }

    /// The peaks, holders named from an inode -> process map.
    pub fn into_listeners(self, owners: &HashMap<u64, Owner>) -> Vec<Listener> {
        self.by_local
            .into_values()
            .map(|mut l| {
                l.owner = l.owner_in(owners);
                l
            })
            .collect()
    }
}

/// The listener in `listeners` that accepts for `local` (its address or
/// a wildcard one on the same port).
pub fn listener_for(listeners: &[Listener], local: SocketAddr) -> Option<&Listener> {
    let ip = local.ip().to_canonical();
    let same = |l: &&Listener| l.local.port() == local.port();
    listeners
        .iter()
        .filter(same)
        .find(|l| l.local.ip().to_canonical() == ip)
        .or_else(|| {
            listeners
                .iter()
                .filter(same)
                .find(|l| l.local.ip().is_unspecified())
        })
}

/// A listening socket and its accept queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// The address it listens on.
    pub local: SocketAddr,
    /// Connections waiting to be accepted.
    pub queued: u32,
    /// The queue limit, min(backlog, somaxconn), when known.
    pub limit: Option<u32>,
    /// The process holding it, when /proc names one.
    pub owner: Option<Owner>,
    /// The socket's inode, which names its holder (0: no file). Not in
    /// the report: only the holder it names is.
    #[serde(skip)]
    pub inode: u64,
}

impl Listener {
    /// A listening socket as sock_diag reported it (holder not named yet).
    pub fn of(socket: &TcpSocket) -> Listener {
        Listener {
            local: socket.local,
            queued: socket.recv_q,
            limit: Some(socket.send_q),
            owner: None,
            inode: socket.inode,
        }
    }

    /// The listening sockets of a table, in its order.
    pub fn of_table(sockets: &[TcpSocket]) -> Vec<Listener> {
        sockets
            .iter()
            .filter(|s| s.state == TcpState::Listen)
            .map(Listener::of)
            .collect()
    }

    fn owner_in(&self, owners: &HashMap<u64, Owner>) -> Option<Owner> {
        (self.inode != 0)
            .then(|| owners.get(&self.inode))
            .flatten()
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{counters::Counters, survey::NamespaceReading};

    fn socket(state: TcpState, local: &str, remote: &str, recv_q: u32, send_q: u32) -> TcpSocket {
        TcpSocket {
            state,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            recv_q,
            send_q,
            inode: 0,
            uid: 0,
            info: None,
        }
    }

    #[test]
    fn socket_tables_reduce_to_what_the_rules_use() {
        let facts = SocketFacts::of(&[
            socket(TcpState::Listen, "127.0.0.1:8080", "0.0.0.0:0", 3, 1),
            socket(
                TcpState::TimeWait,
                "198.18.0.1:40000",
                "198.18.0.2:8000",
                0,
                0,
            ),
            socket(
                TcpState::TimeWait,
                "[::ffff:198.18.0.1]:40001",
                "[::ffff:198.18.0.2]:8000",
                0,
                0,
            ),
            socket(TcpState::Established, "127.0.0.1:1", "127.0.0.1:2", 0, 0),
            // The server on :8080 closed first: not a peer of ours.
            socket(
                TcpState::TimeWait,
                "127.0.0.1:8080",
                "127.0.0.1:45000",
                0,
                0,
            ),
        ]);
        assert_eq!(facts.in_state("TIME_WAIT"), 3);
        assert_eq!(
            facts.time_wait_by_peer,
            vec![("198.18.0.2:8000".parse().unwrap(), 2)]
        );
        assert_eq!(
            facts.listeners,
            vec![Listener {
                local: "127.0.0.1:8080".parse().unwrap(),
                queued: 3,
                limit: Some(1),
                owner: None,
                inode: 0,
            }]
        );
    }

    #[test]
    fn sockets_held_and_stuck_by_peer() {
        use crate::host::sock_diag::TcpInfo;
        let stuck = TcpInfo {
            retransmits: 4,
            last_ack_recv_ms: 6_000,
            ..TcpInfo::default()
        };
        let recovering = TcpInfo {
            retransmits: 1,
            last_ack_recv_ms: 300,
            ..TcpInfo::default()
        };
        let with = |mut s: TcpSocket, info: TcpInfo| {
            s.info = Some(info);
            s
        };
        let facts = SocketFacts::of(&[
            socket(TcpState::Listen, "10.0.0.1:8080", "0.0.0.0:0", 0, 16),
            with(
                socket(
                    TcpState::Established,
                    "10.0.0.1:40000",
                    "10.0.0.2:5672",
                    0,
                    0,
                ),
                stuck,
            ),
            with(
                socket(
                    TcpState::Established,
                    "10.0.0.1:40001",
                    "10.0.0.2:5672",
                    0,
                    0,
                ),
                recovering,
            ),
            socket(TcpState::TimeWait, "10.0.0.1:40002", "10.0.0.2:5672", 0, 0),
            // A client of our server, stuck: keyed by its address alone.
            with(
                socket(
                    TcpState::Established,
                    "10.0.0.1:8080",
                    "10.0.0.9:51000",
                    0,
                    0,
                ),
                stuck,
            ),
        ]);
        let peer: SocketAddr = "10.0.0.2:5672".parse().unwrap();
        assert_eq!(facts.held_by_peer, vec![(peer, 3)]);
        assert_eq!(
            facts.stuck_by_peer,
            vec![(peer, 1), ("10.0.0.9:0".parse().unwrap(), 1)]
        );
    }

    fn reading(cookie: Option<u64>, active_opens: i64) -> NamespaceReading {
        let snmp = format!("Tcp: ActiveOpens PassiveOpens\nTcp: {active_opens} 0\n");
        NamespaceReading {
            name: "pod".into(),
            counters: Counters::parse("", &snmp).unwrap(),
            conntrack: None,
            cookie,
            deleted: false,
        }
    }

    fn survey(reading: NamespaceReading) -> Survey {
        Survey {
            namespaces: BTreeMap::from([(4_026_532_458, reading)]),
            truncated: false,
        }
    }

    #[test]
    fn a_namespace_that_took_over_a_deleted_ones_inode_starts_from_zero() {
        let events = BTreeMap::from([(4_026_532_458, 10)]);
        let facts = |before, after| {
            NamespaceFacts::from_surveys(&survey(before), &survey(after), &events, None)
        };
        let same = facts(reading(Some(7), 100), reading(Some(7), 130));
        assert!(!same[0].created_during_run);
        assert_eq!(same[0].counters["TcpActiveOpens"], 30);
        let replaced = facts(reading(Some(7), 100), reading(Some(9), 5));
        assert!(replaced[0].created_during_run);
        assert_eq!(replaced[0].counters["TcpActiveOpens"], 5);
        // Kernels before 5.14 have no cookie: the inode is all there is.
        let old_kernel = facts(reading(None, 100), reading(None, 130));
        assert_eq!(old_kernel[0].counters["TcpActiveOpens"], 30);
    }
}
