//! Unowned RSTs (and drops) exchanged with ephemeral ports, by remote
//! address.
//!
//! When the kernel answers stray segments for connections it no longer
//! has (RSTs with no socket, so no owner) to the random client ports of
//! one address, each port is a "peer" with one RST (and the dropped
//! segment that provoked it): a storm of them floods any per-peer table
//! and pushes the real peers out. Counted here by address, they show as
//! one line with the total they stand for, exact even when the per-peer
//! table had to evict them.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::{Related, Stats, TopN, Weight};
use crate::event::{EventKind, TcpEvent};

/// Remote addresses kept.
pub const MAX_ADDRESSES: usize = 64;
/// Ports from here up are taken for ephemeral client ports (Linux's
/// default `ip_local_port_range` starts at 32768).
pub const EPHEMERAL_PORTS: u16 = 32_768;

/// Unowned RSTs with the ephemeral ports of one remote address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Scattered {
    /// RSTs this host sent to those ports.
    pub rst_sent: u64,
    /// RSTs this host received from them.
    pub rst_received: u64,
    /// Segments to or from them the kernel dropped.
    pub drops: u64,
    /// Ports first seen in an RST here (a port evicted from the peer
    /// table and seen again counts again).
    pub ports: u64,
}

impl Scattered {
    /// RSTs both ways.
    pub fn resets(&self) -> u64 {
        self.rst_sent + self.rst_received
    }
}

impl Weight for Scattered {
    fn weight(&self) -> u64 {
        self.resets()
    }
}

/// `Scattered` by remote address, the `MAX_ADDRESSES` heaviest.
#[derive(Debug, Clone)]
pub struct ScatteredResets {
    by_address: TopN<IpAddr, Scattered>,
}

impl Default for ScatteredResets {
    fn default() -> Self {
        ScatteredResets {
            by_address: TopN::new(MAX_ADDRESSES),
        }
    }
}

impl ScatteredResets {
    /// Counts `ev` if it is an unowned RST or drop with an ephemeral port of
    /// `peer` (its key in the peer table); `new_peer` says whether that
    /// key was not in the peer table before.
    pub fn record(&mut self, ev: &TcpEvent, peer: SocketAddr, new_peer: bool) {
        if ev.owner.is_some() || !is_ephemeral(peer) {
            return;
        }
        if !matches!(
            ev.kind,
            EventKind::RstSent | EventKind::RstReceived | EventKind::Drop
        ) {
            return;
        }
        let entry = self
            .by_address
            .entry(&peer.ip().to_canonical(), Scattered::default);
        match ev.kind {
            EventKind::RstSent => entry.rst_sent += 1,
            EventKind::RstReceived => entry.rst_received += 1,
            _ => entry.drops += 1,
        }
        entry.ports += u64::from(new_peer);
    }

    /// The counts for remote address `ip`, if kept.
    pub fn get(&self, ip: IpAddr) -> Option<&Scattered> {
        self.by_address.get(&ip.to_canonical())
    }

    /// Every address kept, heaviest first.
    pub fn ranked(&self) -> Vec<(IpAddr, Scattered)> {
        let mut all: Vec<_> = self.by_address.iter().map(|(ip, s)| (*ip, *s)).collect();
        all.sort_by(|a, b| b.1.resets().cmp(&a.1.resets()).then(a.0.cmp(&b.0)));
        all
    }
}

impl ScatteredResets {
    /// Whether the peer-table row `peer` with `stats` is one of the
    /// scattered one-off "peers" counted here: an ephemeral port with at
    /// most two RSTs and two drops and nothing else, owned by no process.
    /// Tables show these folded into their address's line.
    pub fn folds(&self, peer: SocketAddr, stats: &Stats) -> bool {
        let resets = stats.rst_sent_total() + stats.rst_received_total();
        let drops = stats.drops_total();
        is_ephemeral(peer)
            && self.get(peer.ip()).is_some()
            && resets <= 2
            && drops <= 2
            && stats.incidents() == resets + drops
            && stats.connects == 0
            && stats.related.iter().all(|(r, _)| *r == Related::Process(0))
    }
}

/// A peer key whose port is a client's ephemeral port (port 0 stands for
/// "many client ports" already).
pub fn is_ephemeral(peer: SocketAddr) -> bool {
    peer.port() >= EPHEMERAL_PORTS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::testing::ev;

    #[test]
    fn counts_unowned_rsts_to_ephemeral_ports_by_address() {
        let mut s = ScatteredResets::default();
        for port in 40_000..40_010u16 {
            let e = ev(EventKind::RstSent, 1)
                .remote(&format!("198.18.0.2:{port}"))
                .build();
            s.record(&e, e.remote, true);
        }
        let received = ev(EventKind::RstReceived, 2)
            .remote("198.18.0.2:40000")
            .build();
        s.record(&received, received.remote, false);
        // Owned, a server port, or neither RST nor drop: not counted.
        let owned = ev(EventKind::RstSent, 3)
            .remote("198.18.0.2:40001")
            .owner(7, "app")
            .build();
        s.record(&owned, owned.remote, true);
        let server = ev(EventKind::RstSent, 3).remote("198.18.0.2:80").build();
        s.record(&server, server.remote, true);
        let connect = ev(EventKind::ConnectFailed, 3)
            .remote("198.18.0.2:40002")
            .build();
        s.record(&connect, connect.remote, true);
        let drop = ev(EventKind::Drop, 3).remote("198.18.0.2:40003").build();
        s.record(&drop, drop.remote, true);
        let ip: IpAddr = "198.18.0.2".parse().unwrap();
        assert_eq!(
            s.get(ip),
            Some(&Scattered {
                rst_sent: 10,
                rst_received: 1,
                drops: 1,
                ports: 11
            })
        );
        assert_eq!(s.ranked().len(), 1);
    }

    #[test]
    fn one_off_unowned_peers_fold_into_their_address() {
        let mut agg = crate::aggregate::Aggregate::new(crate::aggregate::testing::names());
        for port in 40_000..40_005u16 {
            agg.add(
                &ev(EventKind::RstSent, 1)
                    .sock(0)
                    .local("198.18.0.1:40000")
                    .remote(&format!("198.18.0.2:{port}"))
                    .reason("NO_SOCKET")
                    .build(),
            );
        }
        // A real client of the same address, with a connect.
        agg.add(
            &ev(EventKind::Connect, 2)
                .sock(9)
                .owner(7, "app")
                .remote("198.18.0.2:40004")
                .connect_ms(1.0)
                .build(),
        );
        let ip: IpAddr = "198.18.0.2".parse().unwrap();
        assert_eq!(agg.scattered.get(ip).unwrap().rst_sent, 5);
        let folded = agg
            .peers
            .iter()
            .filter(|(p, s)| agg.scattered.folds(**p, s))
            .count();
        assert_eq!(folded, 4, "the port with a connect stays a peer");
        assert_eq!(agg.peers.len(), 5);
    }
}
