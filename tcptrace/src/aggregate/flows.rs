//! Which connection holds which ends, and packets that reached a port
//! under the wrong address: the signature of a reply that skipped
//! reverse NAT.
//!
//! A client talks to a service address (a Kubernetes ClusterIP, a load
//! balancer VIP) that a node DNATs to a backend. Replies are un-NATed by
//! the node's conntrack entry; one that conntrack marks INVALID (out of
//! window under load) or does not track skips that and reaches the client
//! with the backend's own address. The client's kernel has no socket for
//! (its port, the backend) and answers with an RST (reason `NO_SOCKET`),
//! which kills the backend's side of the connection; the client's next
//! packets then get RSTs too. What tells it from any other stray packet:
//! the client port belongs to a live connection *to another remote* (the
//! service address), and no connection ever had the backend's address as
//! its remote on that port.
//!
//! Bounded like the connection table: two generations of at most
//! `GENERATION` flows each; strays are counted in `TopN`s.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::{Weight, generations::Generations, hashing::MixHashMap, topn::TopN};
use crate::event::{Comm, EventKind, TcpEvent};

/// Flows per generation: 7/8 of 32,768, the most a `hashbrown` table of
/// 32,768 buckets holds before it doubles. Under churn both generations
/// of both tables stay full, so 32,768 flows took tables of 65,536
/// buckets: twice the memory (8 MiB more, the largest part of the
/// exporter's and `diagnose`'s heap) for 14% more flows remembered.
const GENERATION: usize = 28_672;
/// Service/backend pairs and holders kept in the stray figures.
const MAX_PAIRS: usize = 16;
/// Strays remembered to match the resets that follow them.
const MAX_RECENT_STRAYS: usize = 4096;

/// Who holds a connection, as its events named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// The owning process (0: unknown).
    pub pid: u32,
    /// Its command name.
    pub comm: Comm,
    /// Its cgroup v2 id.
    pub cgroup_id: u64,
    /// The namespace the connection lives in (0: unknown).
    pub netns: u32,
    /// The connection has closed (kept: a late packet of it is no stray).
    pub closed: bool,
}

/// A local port that got packets from an address none of its connections
/// talks to, while a connection to another address held it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StrayPair {
    /// The remote the holding connection talks to (the service address).
    pub service: SocketAddr,
    /// Where the stray packets came from (the backend's own address).
    pub backend: SocketAddr,
}

/// Strays per process holding the ports they hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrayHolder {
    /// Its command name.
    pub comm: Comm,
    /// Its cgroup v2 id.
    pub cgroup_id: u64,
    /// Strays that hit its ports.
    pub strays: u64,
    /// RSTs its connections received after a stray hit them.
    pub resets_after: u64,
}

impl StrayHolder {
    /// A holder with nothing counted yet.
    fn new(comm: Comm, cgroup_id: u64) -> StrayHolder {
        StrayHolder {
            comm,
            cgroup_id,
            strays: 0,
            resets_after: 0,
        }
    }
}

impl Weight for StrayHolder {
    fn weight(&self) -> u64 {
        self.strays + self.resets_after
    }
}

/// Strays (see the module doc) and what followed them.
#[derive(Debug, Clone)]
pub struct Strays {
    /// RSTs (reason `NO_SOCKET`, no owning socket) this host sent for
    /// packets that hit a port a connection to another remote held.
    pub resets: u64,
    /// Drops (reason `NO_SOCKET`) of such packets.
    pub drops: u64,
    /// By service and backend address.
    pub pairs: TopN<StrayPair, u64>,
    /// By the process holding the port (pid 0: unknown).
    pub holders: TopN<u32, StrayHolder>,
    /// Namespaces the strays arrived in, by inode.
    pub netns: TopN<u32, u64>,
    /// RSTs received on a connection of this host whose far end had just
    /// answered a stray with "no socket": the backend's side killed by
    /// the client kernel's RST.
    pub peer_resets: u64,
    /// Those, by the process whose connection it was.
    pub reset_peers: TopN<u32, StrayHolder>,
    /// RSTs (reason `NO_SOCKET`, no owning socket) answering packets of a
    /// live connection seen from its other end in another namespace,
    /// where no connection of the answering namespace holds the port:
    /// what a watched backend sees of the same bypass (see `Flows::unheld`).
    pub unheld_resets: u64,
    /// Drops (reason `NO_SOCKET`) of such packets.
    pub unheld_drops: u64,
    /// Those by the process at the far end (the backend).
    pub unheld_peers: TopN<u32, StrayHolder>,
}

impl Default for Strays {
    fn default() -> Self {
        Strays {
            resets: 0,
            drops: 0,
            pairs: TopN::new(MAX_PAIRS),
            holders: TopN::new(MAX_PAIRS),
            netns: TopN::new(MAX_PAIRS),
            peer_resets: 0,
            reset_peers: TopN::new(MAX_PAIRS),
            unheld_resets: 0,
            unheld_drops: 0,
            unheld_peers: TopN::new(MAX_PAIRS),
        }
    }
}

impl Strays {
    /// Stray packets seen: each is answered with an RST and dropped, so
    /// the larger of the two counts.
    pub fn packets(&self) -> u64 {
        self.resets.max(self.drops)
    }

    /// Answers "no socket" to live connections seen from their far end
    /// only (see `unheld_resets`).
    pub fn unheld(&self) -> u64 {
        self.unheld_resets.max(self.unheld_drops)
    }
}

/// One end of a connection as the flow index keys it: the canonical
/// address's 16 bytes (IPv4 as its IPv4-mapped IPv6 form) and the port.
/// 18 bytes where a `SocketAddr` takes 32: the index holds two
/// generations of tens of thousands of flows under churn, in the
/// exporter for weeks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct End {
    ip: [u8; 16],
    port: u16,
}

impl End {
    /// The end at `addr`, canonical (an IPv4-mapped IPv6 address is the
    /// IPv4 one, as `canonical` makes it).
    fn of(addr: SocketAddr) -> End {
        let ip = match addr.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        End {
            ip: ip.octets(),
            port: addr.port(),
        }
    }

    /// Its address again, canonical.
    fn addr(self) -> SocketAddr {
        SocketAddr::new(Ipv6Addr::from(self.ip).to_canonical(), self.port)
    }
}

/// Flow index and stray figures.
#[derive(Debug)]
pub struct Flows {
    /// (local, remote) -> holder.
    holders: Generations<(End, End), Holder>,
    /// (netns, local) of connections this host opened -> their remote.
    ports: Generations<(u32, End), End>,
    /// Recent strays as (local, stray remote): the resets they cause.
    recent: MixHashMap<(SocketAddr, SocketAddr), u32>,
    /// Holder pid by (netns, local) of recent strays.
    recent_ports: MixHashMap<(u32, SocketAddr), u32>,
    /// The figures.
    pub strays: Strays,
}

impl Default for Flows {
    fn default() -> Flows {
        Flows {
            holders: Generations::new(GENERATION),
            ports: Generations::new(GENERATION),
            recent: MixHashMap::default(),
            recent_ports: MixHashMap::default(),
            strays: Strays::default(),
        }
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl Flows {
    /// Takes one event: remembers the ends of connections, and checks
    /// unowned `NO_SOCKET` answers against them. `accepted` is how the
    /// connection was opened when known (see `ConnTable::accepted`);
    /// `rst_reason` and `drop_reason` are the event's reason names.
    pub fn observe(
        &mut self,
        ev: &TcpEvent,
        accepted: Option<bool>,
        rst_reason: Option<&str>,
        drop_reason: Option<&str>,
    ) {
        let local = canonical(ev.local);
        let remote = canonical(ev.remote);
        if local.port() == 0 || remote.port() == 0 {
            return;
        }
        let netns = ev.netns.unwrap_or(0);
        match ev.kind {
            EventKind::RstSent if ev.owner.is_none() && rst_reason == Some("NO_SOCKET") => {
                if self.stray(netns, local, remote) {
                    self.strays.resets += 1;
                } else if self.unheld(netns, local, remote) {
                    self.strays.unheld_resets += 1;
                }
            }
            EventKind::Drop
                if drop_reason == Some("NO_SOCKET") && ev.dropped().is_some_and(|d| d.incoming) =>
            {
                if self.stray(netns, local, remote) {
                    self.strays.drops += 1;
                } else if self.unheld(netns, local, remote) {
                    self.strays.unheld_drops += 1;
                }
            }
            EventKind::RstReceived => self.reset_after_stray(ev, netns, local, remote),
            EventKind::Connect => self.hold(ev, netns, local, remote, true),
            EventKind::Reuse | EventKind::Retransmit => {
                let connecting = ev
                    .state
                    .is_some_and(|s| i32::from(s) == tcptrace_common::tcp_state::SYN_SENT);
                self.hold(
                    ev,
                    netns,
                    local,
                    remote,
                    connecting || accepted == Some(false),
                );
            }
            EventKind::State => match ev.transition {
                Some((_, new)) if i32::from(new) == tcptrace_common::tcp_state::CLOSE => {
                    self.close(local, remote);
                }
                Some((old, _)) if i32::from(old) == tcptrace_common::tcp_state::SYN_RECV => {
                    self.hold(ev, netns, local, remote, false);
                }
                _ => {}
            },
            EventKind::ConnectFailed => self.close(local, remote),
            _ => {}
        }
    }

    /// The holder of the connection with these ends, seen from either.
    pub fn holder(&self, a: SocketAddr, b: SocketAddr) -> Option<&Holder> {
        let (a, b) = (End::of(a), End::of(b));
        [(a, b), (b, a)]
            .iter()
            .find_map(|key| self.holders.get(key))
    }

    fn hold(
        &mut self,
        ev: &TcpEvent,
        netns: u32,
        local: SocketAddr,
        remote: SocketAddr,
        active: bool,
    ) {
        let (local, remote) = (End::of(local), End::of(remote));
        let holder = self.holders.entry((local, remote), || Holder {
            pid: 0,
            comm: Comm::new(b"?"),
            cgroup_id: 0,
            netns,
            closed: false,
        });
        holder.closed = false;
        if let Some(owner) = &ev.owner {
            holder.pid = owner.pid;
            holder.comm = owner.comm;
            holder.cgroup_id = owner.cgroup_id;
        }
        // Accepted connections share the listener's local end: only the
        // ones this host opened own their port.
        if active {
            self.ports.insert((netns, local), remote);
        }
    }

    fn close(&mut self, local: SocketAddr, remote: SocketAddr) {
        let key = (End::of(local), End::of(remote));
        if let Some(h) = self.holders.get_mut(&key) {
            h.closed = true;
        }
    }

    /// Whether an answer "no socket" for (local, remote) in `netns` is a
    /// stray: the port is held by a live connection this host opened to
    /// another remote, and no connection ever had this remote there.
    fn stray(&mut self, netns: u32, local: SocketAddr, remote: SocketAddr) -> bool {
        let port = (netns, local);
        let Some(service) = self.ports.get(&(netns, End::of(local))).map(|e| e.addr()) else {
            return false;
        };
        // A connection of this namespace that had this remote on the
        // port (a late packet of it is no stray). The far end's own socket
        // (the backend's, seen on a host-wide run) does not count.
        let key = (End::of(local), End::of(remote));
        let had_remote = self.holders.get(&key).is_some_and(|h| h.netns == netns);
        if service == remote || had_remote {
            return false;
        }
        let Some(holder) = self
            .holders
            .get(&(End::of(local), End::of(service)))
            .copied()
            .filter(|h| !h.closed)
        else {
            return false;
        };
        let s = &mut self.strays;
        *s.pairs.entry(
            &StrayPair {
                service,
                backend: remote,
            },
            || 0,
        ) += 1;
        s.holders
            .entry(&holder.pid, || {
                StrayHolder::new(holder.comm, holder.cgroup_id)
            })
            .strays += 1;
        *s.netns.entry(&netns, || 0) += 1;
        self.remember_stray(local, remote, holder.pid);
        self.recent_ports.insert(port, holder.pid);
        true
    }

    /// Whether an answer "no socket" for (local, remote) in `netns`
    /// concerns a live connection whose far end (remote) is seen in
    /// another namespace while no connection of this namespace holds the
    /// port: the client's side, out of sight, knows that connection under
    /// another address (or forgot it). What a watched backend sees.
    fn unheld(&mut self, netns: u32, local: SocketAddr, remote: SocketAddr) -> bool {
        if self.ports.contains_key(&(netns, End::of(local))) {
            return false;
        }
        let key = (End::of(remote), End::of(local));
        let Some(far) = self
            .holders
            .get(&key)
            .copied()
            .filter(|h| !h.closed && h.netns != netns)
        else {
            return false;
        };
        let s = &mut self.strays;
        *s.netns.entry(&netns, || 0) += 1;
        s.unheld_peers
            .entry(&far.pid, || StrayHolder::new(far.comm, far.cgroup_id))
            .strays += 1;
        self.remember_stray(local, remote, far.pid);
        true
    }

    /// Keeps (local, remote) -> pid of a stray, so an RST that follows it
    /// is told apart; bounded: a full memory starts over.
    fn remember_stray(&mut self, local: SocketAddr, remote: SocketAddr, pid: u32) {
        if self.recent.len() >= MAX_RECENT_STRAYS {
            self.recent.clear();
            self.recent_ports.clear();
        }
        self.recent.insert((local, remote), pid);
    }

    /// An RST received on a connection a stray hit (the client's) or
    /// whose far end answered a stray (the backend's).
    fn reset_after_stray(
        &mut self,
        ev: &TcpEvent,
        netns: u32,
        local: SocketAddr,
        remote: SocketAddr,
    ) {
        if self.recent.is_empty() {
            return;
        }
        if let Some(pid) = self.recent_ports.get(&(netns, local)).copied()
            && let Some(h) = self.strays.holders.get_mut(&pid)
        {
            h.resets_after += 1;
        }
        // The backend's end: its remote is the client port that answered
        // "no socket" to its packet.
        if self.recent.contains_key(&(remote, local)) {
            self.strays.peer_resets += 1;
            let (pid, comm, cgroup_id) = ev
                .owner
                .as_ref()
                .map_or((0, Comm::new(b"?"), 0), |o| (o.pid, o.comm, o.cgroup_id));
            self.strays
                .reset_peers
                .entry(&pid, || StrayHolder::new(comm, cgroup_id))
                .resets_after += 1;
        }
    }
}

impl Flows {
    /// Moves the stray figures out (an exporter window's slice); the flow
    /// index stays.
    pub fn take_figures(&mut self) -> Flows {
        Flows {
            strays: std::mem::take(&mut self.strays),
            ..Flows::default()
        }
    }
}

impl Strays {
    /// Adds the figures of `other` (an exporter window's slices).
    pub fn merge(&mut self, other: &Strays) {
        let Strays {
            resets,
            drops,
            pairs,
            holders,
            netns,
            peer_resets,
            reset_peers,
            unheld_resets,
            unheld_drops,
            unheld_peers,
        } = other;
        let holder = || StrayHolder::new(Comm::new(b"?"), 0);
        let add_holder = |a: &mut StrayHolder, b: &StrayHolder| {
            a.comm = b.comm;
            a.cgroup_id = b.cgroup_id;
            a.strays += b.strays;
            a.resets_after += b.resets_after;
        };
        self.resets += resets;
        self.drops += drops;
        self.pairs.merge_from(pairs, || 0, |a, b| *a += b);
        self.holders.merge_from(holders, holder, add_holder);
        self.netns.merge_from(netns, || 0, |a, b| *a += b);
        self.peer_resets += peer_resets;
        self.reset_peers.merge_from(reset_peers, holder, add_holder);
        self.unheld_resets += unheld_resets;
        self.unheld_drops += unheld_drops;
        self.unheld_peers
            .merge_from(unheld_peers, holder, add_holder);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::testing::{ev, state};

    const POD: &str = "10.83.1.2:40000";
    const VIP: &str = "10.96.0.10:80";
    const BACKEND: &str = "10.83.2.2:8080";

    fn connected() -> Flows {
        let mut flows = Flows::default();
        let connect = ev(EventKind::Connect, 1)
            .owner(7, "downloader")
            .local(POD)
            .remote(VIP)
            .transition("SYN_SENT", "ESTABLISHED")
            .build();
        flows.observe(&connect, None, None, None);
        flows
    }

    fn stray_rst() -> TcpEvent {
        ev(EventKind::RstSent, 5).local(POD).remote(BACKEND).build()
    }

    #[test]
    fn a_reply_from_the_backend_to_a_port_held_for_the_service_is_a_stray() {
        let mut flows = connected();
        flows.observe(&stray_rst(), None, Some("NO_SOCKET"), None);
        let s = &flows.strays;
        assert_eq!(s.resets, 1);
        let (pair, n) = s.pairs.ranked()[0];
        assert_eq!(pair.service, VIP.parse().unwrap());
        assert_eq!(pair.backend, BACKEND.parse().unwrap());
        assert_eq!(*n, 1);
        assert_eq!(s.holders.get(&7).unwrap().comm, "downloader");
        // The backend's connection is then reset by that RST...
        let backend_reset = ev(EventKind::RstReceived, 6)
            .owner(9, "file-server")
            .local(BACKEND)
            .remote(POD)
            .state("ESTABLISHED")
            .build();
        flows.observe(&backend_reset, None, None, None);
        assert_eq!(flows.strays.peer_resets, 1);
        assert_eq!(flows.strays.reset_peers.get(&9).unwrap().resets_after, 1);
        // ...and the client's next packets get RSTs from the service.
        let client_reset = ev(EventKind::RstReceived, 7)
            .owner(7, "downloader")
            .local(POD)
            .remote(VIP)
            .state("ESTABLISHED")
            .build();
        flows.observe(&client_reset, None, None, None);
        assert_eq!(flows.strays.holders.get(&7).unwrap().resets_after, 1);
    }

    #[test]
    fn the_backends_own_socket_does_not_hide_a_stray() {
        // Host-wide: the backend's accepted connection is seen too.
        let mut flows = connected();
        let mut accepted = ev(EventKind::State, 1)
            .owner(9, "file-server")
            .local(BACKEND)
            .remote(POD)
            .transition("SYN_RECV", "ESTABLISHED")
            .build();
        accepted.netns = Some(77);
        flows.observe(&accepted, Some(true), None, None);
        flows.observe(&stray_rst(), None, Some("NO_SOCKET"), None);
        assert_eq!(flows.strays.resets, 1);
    }

    #[test]
    fn a_watched_backend_sees_the_client_kernel_answer_no_socket() {
        // Only the backend's connection is in sight (its namespace is
        // watched); the client's kernel answers its packet "no socket".
        let mut flows = Flows::default();
        let mut accepted = ev(EventKind::State, 1)
            .owner(9, "file-server")
            .local(BACKEND)
            .remote(POD)
            .transition("SYN_RECV", "ESTABLISHED")
            .build();
        accepted.netns = Some(77);
        flows.observe(&accepted, Some(true), None, None);
        flows.observe(&stray_rst(), None, Some("NO_SOCKET"), None);
        assert_eq!(flows.strays.packets(), 0);
        assert_eq!(flows.strays.unheld(), 1);
        assert_eq!(flows.strays.unheld_peers.get(&9).unwrap().strays, 1);
        let mut reset = ev(EventKind::RstReceived, 6)
            .owner(9, "file-server")
            .local(BACKEND)
            .remote(POD)
            .state("ESTABLISHED")
            .build();
        reset.netns = Some(77);
        flows.observe(&reset, None, None, None);
        assert_eq!(flows.strays.peer_resets, 1);
    }

    #[test]
    fn other_answers_without_a_socket_are_no_strays() {
        // A port nobody holds: a plain "nothing there".
        let mut flows = Flows::default();
        flows.observe(&stray_rst(), None, Some("NO_SOCKET"), None);
        assert_eq!(flows.strays.packets(), 0);
        // A late packet of a connection that had that remote on the port.
        let mut flows = connected();
        let old = ev(EventKind::Connect, 0)
            .owner(7, "downloader")
            .local(POD)
            .remote(BACKEND)
            .build();
        flows.observe(&old, None, None, None);
        let closed = ev(EventKind::State, 2)
            .local(POD)
            .remote(BACKEND)
            .transition("FIN_WAIT2", "CLOSE")
            .build();
        flows.observe(&closed, None, None, None);
        flows.observe(&stray_rst(), None, Some("NO_SOCKET"), None);
        assert_eq!(flows.strays.packets(), 0);
        // An RST with another reason, or one a socket sent.
        let mut flows = connected();
        flows.observe(&stray_rst(), None, Some("TCP_FLAGS"), None);
        let owned = ev(EventKind::RstSent, 5)
            .owner(7, "downloader")
            .local(POD)
            .remote(BACKEND)
            .build();
        flows.observe(&owned, None, Some("NO_SOCKET"), None);
        assert_eq!(flows.strays.packets(), 0);
        // The holder closed before the packet came.
        let mut flows = connected();
        let closed = ev(EventKind::State, 2)
            .local(POD)
            .remote(VIP)
            .transition("LAST_ACK", "CLOSE")
            .build();
        flows.observe(&closed, None, None, None);
        flows.observe(&stray_rst(), None, Some("NO_SOCKET"), None);
        assert_eq!(flows.strays.packets(), 0);
        let _ = state("CLOSE");
    }

    /// A compact end is the canonical address again, and tells apart
    /// what `canonical` tells apart.
    #[test]
    fn ends_keep_the_canonical_address() {
        for (addr, canonical) in [
            ("10.0.0.1:80", "10.0.0.1:80"),
            ("[::ffff:10.0.0.1]:80", "10.0.0.1:80"),
            ("[2001:db8::1]:443", "[2001:db8::1]:443"),
            ("[::1]:0", "[::1]:0"),
            ("0.0.0.0:65535", "0.0.0.0:65535"),
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(End::of(addr).addr(), canonical.parse().unwrap(), "{addr}");
        }
        let v4 = End::of("10.0.0.1:80".parse().unwrap());
        assert_eq!(v4, End::of("[::ffff:10.0.0.1]:80".parse().unwrap()));
        assert_ne!(v4, End::of("10.0.0.1:81".parse().unwrap()));
        assert_ne!(v4, End::of("[::a00:1]:80".parse().unwrap()));
        assert_eq!(size_of::<End>(), 18);
    }

    #[test]
    fn holders_are_found_from_either_end_and_memory_is_bounded() {
        let mut flows = connected();
        let h = flows
            .holder(BACKEND.parse().unwrap(), POD.parse().unwrap())
            .is_none();
        assert!(h);
        let h = flows
            .holder(VIP.parse().unwrap(), POD.parse().unwrap())
            .unwrap();
        assert_eq!((h.pid, h.netns), (7, 4026531840));
        for port in 0..(GENERATION as u16 / 2) {
            for host in 1..=5u8 {
                let e = ev(EventKind::Connect, 1)
                    .local(&format!("10.0.{host}.1:{}", 1024 + port))
                    .remote(VIP)
                    .build();
                flows.observe(&e, None, None, None);
            }
        }
        assert!(flows.holders.len() <= 2 * GENERATION);
        assert!(flows.ports.len() <= 2 * GENERATION);
    }
}
