//! Segments of established flows (ACK set, no SYN, no RST) that arrived
//! and were dropped with no socket to take them. On a router, NAT or
//! load-balancer node these are the packets of flows it no longer knows:
//! a connection tracker that forgot an idle flow drops (or rejects) its
//! next segment. By destination (the service address the clients use).
//!
//! Bounded: at most `MAX_DESTINATIONS` destinations, `MAX_FLOWS` flows
//! remembered to count distinct ones.

use std::{collections::BTreeMap, net::SocketAddr};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::event::{EventKind, TcpEvent};

const MAX_DESTINATIONS: usize = 64;
const MAX_FLOWS: usize = 4_096;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// Mid-flow drops to one destination.
#[derive(Debug, Clone, Default)]
pub struct MidflowDest {
    /// Segments dropped.
    pub drops: u64,
    /// Distinct flows (source endpoints) they belonged to.
    pub flows: u64,
    /// Distinct client addresses among those flows (up to 8 kept).
    pub clients: Vec<std::net::IpAddr>,
    /// By drop reason name.
    pub reasons: BTreeMap<&'static str, u64>,
    /// Of which FIN segments (a close arriving after the flow was forgotten).
    pub fins: u64,
}

/// Mid-flow drops with no socket, by destination endpoint.
#[derive(Debug, Clone, Default)]
pub struct MidflowDrops {
    /// By destination (`local` side of the incoming packet).
    pub by_dest: FxHashMap<SocketAddr, MidflowDest>,
    /// Drops whose destination was not kept (too many destinations).
    pub untracked: u64,
    pub(super) flows: FxHashSet<(SocketAddr, SocketAddr)>,
}

impl MidflowDrops {
    /// Takes a drop event named `reason`; ignores anything that is not an
    /// incoming mid-flow segment no socket owned.
    pub(super) fn add(&mut self, ev: &TcpEvent, reason: &'static str) {
        let Some(d) = ev.dropped() else { return };
        let mid_flow = d.tcp_flags & ACK != 0 && d.tcp_flags & (SYN | RST) == 0;
        if ev.kind != EventKind::Drop
            || !d.incoming
            || !mid_flow
            || ev.sock != 0
            || ev.owner.is_some()
        {
            return;
        }
        let dest_key = SocketAddr::new(ev.local.ip().to_canonical(), ev.local.port());
        let source = SocketAddr::new(ev.remote.ip().to_canonical(), ev.remote.port());
        if !self.by_dest.contains_key(&dest_key) && self.by_dest.len() >= MAX_DESTINATIONS {
            self.untracked += 1;
            return;
        }
        let new_flow = self.flows.len() < MAX_FLOWS && self.flows.insert((dest_key, source));
        let dest = self.by_dest.entry(dest_key).or_default();
        dest.drops += 1;
        dest.fins += u64::from(d.tcp_flags & FIN != 0);
        *dest.reasons.entry(reason).or_default() += 1;
        if new_flow {
            dest.flows += 1;
            if dest.clients.len() < 8 && !dest.clients.contains(&source.ip()) {
                dest.clients.push(source.ip());
            }
        }
    }

    /// Destinations by drops, most first (ties by address).
    pub fn ranked(&self) -> Vec<(SocketAddr, &MidflowDest)> {
        let mut all: Vec<_> = self.by_dest.iter().map(|(k, v)| (*k, v)).collect();
        all.sort_by(|a, b| b.1.drops.cmp(&a.1.drops).then(a.0.cmp(&b.0)));
        all
    }
}

impl MidflowDrops {
    /// Forgets the flows remembered to count distinct ones (up to
    /// `MAX_FLOWS`, 0.5 MiB): a slice of the exporter's window is only
    /// read and merged from now on, and its counts already hold them.
    pub fn seal(&mut self) {
        self.flows = FxHashSet::default();
    }

    /// Adds the drops of `other` (an exporter window's slices).
    pub fn merge(&mut self, other: &MidflowDrops) {
        for (dest, theirs) in &other.by_dest {
            let ours = self.by_dest.entry(*dest).or_default();
            ours.drops += theirs.drops;
            ours.flows += theirs.flows;
            ours.fins += theirs.fins;
            for client in &theirs.clients {
                if ours.clients.len() < 8 && !ours.clients.contains(client) {
                    ours.clients.push(*client);
                }
            }
            for (reason, n) in &theirs.reasons {
                *ours.reasons.entry(reason).or_default() += n;
            }
        }
        self.untracked += other.untracked;
        self.flows.extend(other.flows.iter().copied());
    }
}
