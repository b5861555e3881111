//! Dropped TCP packets by where and why: per namespace and drop reason,
//! how many were connection attempts (SYN), answers (SYN-ACK) or resets,
//! which flows they belonged to and whose connections those are.
//!
//! A drop in a namespace with no socket of its own (a node forwarding a
//! pod's packets) has no owner; the connection it belongs to is found by
//! its two ends in the flow index (`Flows::holder`), so "the node dropped
//! 40 SYNs" can say whose connects they were.

use std::net::SocketAddr;

use super::{Weight, flows::Flows, topn::TopN};
use crate::event::{Comm, TcpEvent};

/// (namespace, reason) groups kept.
const MAX_GROUPS: usize = 64;
/// Flows and owners kept per group.
const MAX_PER_GROUP: usize = 8;

/// TCP flag bits (include/net/tcp.h `TCPHDR_*`).
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// Where and why: a namespace inode (0: unknown) and a drop reason name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropKey {
    /// Network namespace inode the packet was dropped in (0: unknown).
    pub netns: u32,
    /// `enum skb_drop_reason` name (`NETFILTER_DROP`, ...).
    pub reason: &'static str,
}

/// A process whose connections lost packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropOwner {
    /// Its command name.
    pub comm: Comm,
    /// Its cgroup v2 id.
    pub cgroup_id: u64,
    /// Drops of its packets.
    pub drops: u64,
    /// Of those, dropped in another namespace than the connection's own
    /// (its owner found through the flow index).
    pub elsewhere: u64,
}

impl Weight for DropOwner {
    fn weight(&self) -> u64 {
        self.drops
    }
}

/// The drops of one (namespace, reason).
#[derive(Debug, Clone)]
pub struct DropGroup {
    /// Packets dropped.
    pub count: u64,
    /// Of those, SYNs (connection attempts: SYN without ACK).
    pub syns: u64,
    /// SYN-ACKs.
    pub synacks: u64,
    /// RSTs.
    pub resets: u64,
    /// Received (the others were being sent).
    pub incoming: u64,
    /// By (local, remote) as the events give them (local: the
    /// destination of a received packet).
    pub flows: TopN<(SocketAddr, SocketAddr), u64>,
    /// Connection attempts (SYNs) by the local address they were for:
    /// with no socket for them (`NO_SOCKET`), the ports nothing listens
    /// on.
    pub syn_targets: TopN<SocketAddr, u64>,
    /// When the first and the last of them were dropped (monotonic ns):
    /// a burst, or drops that go on.
    pub first_ns: u64,
    /// See `first_ns`.
    pub last_ns: u64,
    /// By the process whose connection it was (pid 0: nobody known).
    pub owners: TopN<u32, DropOwner>,
}

impl Default for DropGroup {
    fn default() -> Self {
        DropGroup {
            count: 0,
            syns: 0,
            synacks: 0,
            resets: 0,
            incoming: 0,
            flows: TopN::new(MAX_PER_GROUP),
            syn_targets: TopN::new(MAX_PER_GROUP),
            first_ns: 0,
            last_ns: 0,
            owners: TopN::new(MAX_PER_GROUP),
        }
    }
}

impl Weight for DropGroup {
    fn weight(&self) -> u64 {
        self.count
    }
}

impl DropGroup {
    /// From the first drop to the last.
    pub fn span_ns(&self) -> u64 {
        self.last_ns.saturating_sub(self.first_ns)
    }

    /// The flows most dropped, heaviest first.
    pub fn top_flows(&self) -> Vec<((SocketAddr, SocketAddr), u64)> {
        let mut all: Vec<_> = self.flows.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all
    }

    /// The owners most hit, heaviest first (pid 0 last among equals).
    pub fn top_owners(&self) -> Vec<(u32, &DropOwner)> {
        let mut all: Vec<_> = self.owners.iter().map(|(k, v)| (*k, v)).collect();
        all.sort_by(|a, b| (b.1.drops, a.0 == 0, a.0).cmp(&(a.1.drops, b.0 == 0, b.0)));
        all
    }
}

/// Every drop, grouped by namespace and reason.
#[derive(Debug, Clone)]
pub struct Drops {
    /// By (namespace, reason), the `MAX_GROUPS` heaviest.
    pub groups: TopN<DropKey, DropGroup>,
}

impl Default for Drops {
    fn default() -> Self {
        Drops {
            groups: TopN::new(MAX_GROUPS),
        }
    }
}

impl Drops {
    /// Takes a `drop` event whose reason is named `reason`; `flows`
    /// names the connection's holder when the packet had no owner.
    pub fn add(&mut self, ev: &TcpEvent, reason: &'static str, flows: &Flows) {
        let Some(dropped) = ev.dropped() else {
            return;
        };
        let netns = ev.netns.unwrap_or(0);
        let group = self
            .groups
            .entry(&DropKey { netns, reason }, DropGroup::default);
        group.count += 1;
        if group.count == 1 {
            group.first_ns = ev.mono_ns;
        }
        group.last_ns = ev.mono_ns;
        let flags = dropped.tcp_flags;
        let local = SocketAddr::new(ev.local.ip().to_canonical(), ev.local.port());
        let remote = SocketAddr::new(ev.remote.ip().to_canonical(), ev.remote.port());
        if flags & SYN != 0 && flags & ACK == 0 {
            group.syns += 1;
            *group.syn_targets.entry(&local, || 0) += 1;
        } else if flags & SYN != 0 {
            group.synacks += 1;
        }
        if flags & RST != 0 {
            group.resets += 1;
        }
        group.incoming += u64::from(dropped.incoming);
        *group.flows.entry(&(local, remote), || 0) += 1;
        let (pid, comm, cgroup_id, elsewhere) = match (&ev.owner, flows.holder(local, remote)) {
            (Some(o), _) => (o.pid, o.comm, o.cgroup_id, false),
            (None, Some(h)) => (h.pid, h.comm, h.cgroup_id, h.netns != netns),
            (None, None) => (0, Comm::new(b"?"), 0, false),
        };
        let owner = group.owners.entry(&pid, || DropOwner {
            comm,
            cgroup_id,
            drops: 0,
            elsewhere: 0,
        });
        owner.drops += 1;
        owner.elsewhere += u64::from(elsewhere);
    }

    /// Groups by reason name, heaviest first.
    pub fn ranked(&self) -> Vec<(DropKey, &DropGroup)> {
        let mut all: Vec<_> = self.groups.iter().map(|(k, v)| (*k, v)).collect();
        all.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(&b.0)));
        all
    }

    /// Groups with this reason, heaviest first.
    pub fn with_reason(&self, reason: &str) -> Vec<(DropKey, &DropGroup)> {
        self.ranked()
            .into_iter()
            .filter(|(k, _)| k.reason == reason)
            .collect()
    }
}

impl Drops {
    /// Adds the drops of `other` (an exporter window's slices).
    pub fn merge(&mut self, other: &Drops) {
        self.groups
            .merge_from(&other.groups, DropGroup::default, |ours, theirs| {
                let DropGroup {
                    count,
                    syns,
                    synacks,
                    resets,
                    incoming,
                    flows,
                    syn_targets,
                    first_ns,
                    last_ns,
                    owners,
                } = theirs;
                // Slices merge in time order; an empty group has no first.
                if ours.count == 0 {
                    ours.first_ns = *first_ns;
                }
                ours.last_ns = ours.last_ns.max(*last_ns);
                ours.count += count;
                ours.syns += syns;
                ours.synacks += synacks;
                ours.resets += resets;
                ours.incoming += incoming;
                ours.flows.merge_from(flows, || 0, |a, b| *a += b);
                ours.syn_targets
                    .merge_from(syn_targets, || 0, |a, b| *a += b);
                ours.owners.merge_from(
                    owners,
                    || DropOwner {
                        comm: Comm::new(b"?"),
                        cgroup_id: 0,
                        drops: 0,
                        elsewhere: 0,
                    },
                    |a, b| {
                        a.comm = b.comm;
                        a.cgroup_id = b.cgroup_id;
                        a.drops += b.drops;
                        a.elsewhere += b.elsewhere;
                    },
                );
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{aggregate::testing::ev, event::EventKind};

    #[test]
    fn drops_group_by_namespace_and_reason_with_whose_connection() {
        let mut flows = Flows::default();
        let connect = ev(EventKind::Connect, 1)
            .owner(7, "checkout")
            .local("10.79.1.2:40000")
            .remote("10.79.2.2:8080")
            .build();
        flows.observe(&connect, Some(false), None, None);
        let mut drops = Drops::default();
        // The node (another namespace) drops the client's SYNs: seen as
        // received there, so its local end is the server.
        for at in 0..3 {
            let mut e = ev(EventKind::Drop, at)
                .local("10.79.2.2:8080")
                .remote("10.79.1.2:40000")
                .dropped(12, SYN)
                .build();
            e.netns = Some(99);
            if let crate::event::Detail::Drop(d) = &mut e.detail {
                d.incoming = true;
            }
            drops.add(&e, "NETFILTER_DROP", &flows);
        }
        let owned = ev(EventKind::Drop, 5)
            .owner(8, "nginx")
            .dropped(12, ACK)
            .build();
        drops.add(&owned, "NETFILTER_DROP", &flows);
        let groups = drops.with_reason("NETFILTER_DROP");
        assert_eq!(groups.len(), 2);
        let (key, node) = groups[0];
        assert_eq!(
            (key.netns, node.count, node.syns, node.incoming),
            (99, 3, 3, 3)
        );
        let (pid, owner) = node.top_owners()[0];
        assert_eq!((pid, owner.drops, owner.elsewhere), (7, 3, 3));
        assert_eq!(owner.comm, "checkout");
        assert_eq!(node.top_flows()[0].1, 3);
        let (_, own) = groups[1];
        assert_eq!((own.count, own.syns), (1, 0));
        assert_eq!(own.top_owners()[0].0, 8);
    }
}
