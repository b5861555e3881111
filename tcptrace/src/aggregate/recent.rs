//! The last few incidents of each process and each peer, for `top`'s
//! detail view ("what just happened to this one").
//!
//! Off unless asked for (`Aggregate::keep_recent`): `diagnose` has no use
//! for it. Bounded: `PER_KEY` incidents for at most `MAX_KEYS` processes
//! and peers; when full, the keys quiet the longest make room.

use std::{collections::VecDeque, net::SocketAddr};

use rustc_hash::FxHashMap;

use crate::event::{Comm, EventKind};

/// Incidents kept per process or peer.
pub const PER_KEY: usize = 12;
/// Processes and peers kept.
pub const MAX_KEYS: usize = 512;

/// Whose incidents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecentKey {
    /// A process id (0: no owner known).
    Process(u32),
    /// A remote endpoint as the peer table keys it.
    Peer(SocketAddr),
}

/// One incident, reduced to what a line of the detail view shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Brief {
    /// CLOCK_MONOTONIC ns.
    pub mono_ns: u64,
    /// What happened.
    pub kind: EventKind,
    /// This host's end.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
    /// The owner's pid (0: unknown) and command name.
    pub pid: u32,
    /// The owner's command name (`?` when unknown).
    pub comm: Comm,
    /// The reset reason, the state, the drop reason or the errno name,
    /// whichever the kind has.
    pub what: &'static str,
    /// Idle before a received RST, or the time to a failed connect.
    pub after_ns: Option<u64>,
}

#[derive(Debug, Default)]
struct Ring {
    last_ns: u64,
    briefs: VecDeque<Brief>,
}

/// The last `PER_KEY` incidents by process and by peer.
#[derive(Debug, Default)]
pub struct Recent {
    rings: FxHashMap<RecentKey, Ring>,
}

impl Recent {
    /// Keeps `brief` as the latest incident of process `pid` and of `peer`.
    pub fn push(&mut self, pid: u32, peer: SocketAddr, brief: Brief) {
        for key in [RecentKey::Process(pid), RecentKey::Peer(peer)] {
            if !self.rings.contains_key(&key) && self.rings.len() >= MAX_KEYS {
                self.evict();
            }
            let ring = self.rings.entry(key).or_default();
            if ring.briefs.len() >= PER_KEY {
                ring.briefs.pop_front();
            }
            ring.briefs.push_back(brief);
            ring.last_ns = brief.mono_ns;
        }
    }

    /// Drops the eighth of the keys quiet the longest.
    fn evict(&mut self) {
        let mut ages: Vec<(u64, RecentKey)> =
            self.rings.iter().map(|(k, r)| (r.last_ns, *k)).collect();
        let n = (MAX_KEYS / 8).max(1).min(ages.len());
        if n == 0 {
            return;
        }
        ages.select_nth_unstable_by_key(n - 1, |(ns, _)| *ns);
        for (_, key) in ages.into_iter().take(n) {
            self.rings.remove(&key);
        }
    }

    /// The last incidents of `key`, oldest first.
    pub fn of(&self, key: RecentKey) -> Vec<Brief> {
        self.rings
            .get(&key)
            .map(|r| r.briefs.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brief(at: u64) -> Brief {
        Brief {
            mono_ns: at,
            kind: EventKind::RstReceived,
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:80".parse().unwrap(),
            pid: 1,
            comm: Comm::from("curl"),
            what: "ESTABLISHED",
            after_ns: None,
        }
    }

    #[test]
    fn keeps_the_last_few_per_key_and_a_bounded_number_of_keys() {
        let mut r = Recent::default();
        let peer: SocketAddr = "10.0.0.2:80".parse().unwrap();
        for at in 0..20 {
            r.push(1, peer, brief(at));
        }
        let last = r.of(RecentKey::Process(1));
        assert_eq!(last.len(), PER_KEY);
        assert_eq!(last.last().unwrap().mono_ns, 19);
        assert_eq!(r.of(RecentKey::Peer(peer)).len(), PER_KEY);
        for pid in 2..2_000 {
            r.push(pid, peer, brief(100 + u64::from(pid)));
        }
        assert!(r.rings.len() <= MAX_KEYS);
        // The busiest, most recent keys stay.
        assert_eq!(r.of(RecentKey::Peer(peer)).len(), PER_KEY);
        assert_eq!(r.of(RecentKey::Process(1999)).len(), 1);
        assert!(r.of(RecentKey::Process(1)).is_empty(), "quiet the longest");
    }
}
