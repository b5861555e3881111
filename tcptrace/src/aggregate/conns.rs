//! Per-connection memory (by kernel socket address) for what a single
//! event cannot tell: when the peer's FIN came, whether the connection
//! was retransmitting, whether an RST explained its end.
//!
//! Two generations: when the young one fills up, the old one is dropped
//! and the young one ages. Connections seen recently survive; memory is
//! bounded by twice the generation size whatever the churn.

use std::{collections::HashMap, net::SocketAddr};

/// Connections per generation.
const GENERATION: usize = 32_768;

#[derive(Debug, Clone, Copy, Default)]
pub struct Conn {
    pub established_ns: u64,
    pub peer_closed_ns: Option<u64>,
    pub retransmits: u32,
    pub first_retransmit_ns: u64,
    pub reset: bool,
}

#[derive(Debug, Default)]
pub struct ConnTable {
    young: HashMap<u64, Conn>,
    old: HashMap<u64, Conn>,
}

impl ConnTable {
    pub fn get_or_insert(&mut self, sock: u64) -> &mut Conn {
        if !self.young.contains_key(&sock) {
            let conn = self.old.remove(&sock).unwrap_or_default();
            if self.young.len() >= GENERATION {
                self.old = std::mem::take(&mut self.young);
            }
            self.young.insert(sock, conn);
        }
        self.young.get_mut(&sock).expect("inserted above")
    }

    pub fn remove(&mut self, sock: u64) -> Option<Conn> {
        self.young.remove(&sock).or_else(|| self.old.remove(&sock))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

/// An abortive close (ESTABLISHED/CLOSE_WAIT/FIN_WAIT1 -> CLOSE) waiting
/// to see whether an RST follows.
#[derive(Debug, Clone)]
pub struct PendingClose {
    pub sock: u64,
    pub closed_ns: u64,
    pub pid: u32,
    pub comm: String,
    pub peer: SocketAddr,
    pub retransmits: u32,
    pub first_retransmit_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_keeps_recent() {
        let mut t = ConnTable::default();
        for sock in 0..(GENERATION as u64 * 5) {
            t.get_or_insert(sock).retransmits = 1;
        }
        assert!(t.len() <= 2 * GENERATION);
        let last = GENERATION as u64 * 5 - 1;
        assert_eq!(t.remove(last).map(|c| c.retransmits), Some(1));
        assert!(t.remove(0).is_none());
    }
}
