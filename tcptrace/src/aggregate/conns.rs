//! Per-connection memory (by kernel socket address) for what a single
//! event cannot tell: when the peer's FIN came, whether the connection
//! was retransmitting, whether an RST explained its end.
//!
//! Bounded by two generations (`Generations`): connections seen recently
//! survive whatever the churn.

use std::{collections::VecDeque, net::SocketAddr};

use super::{generations::Generations, hashing::MixHashMap};
use crate::event::Comm;

/// Connections per generation.
const GENERATION: usize = 32_768;

#[derive(Debug, Clone, Copy, Default)]
pub struct Conn {
    pub established_ns: u64,
    pub peer_closed_ns: Option<u64>,
    /// On an accepted connection: how long this server had sent nothing
    /// when the client's FIN came (ms, saturating): the client's (or the
    /// proxy's) read timeout when a late answer then meets an RST.
    pub silent_at_fin_ms: u32,
    pub retransmits: u32,
    pub first_retransmit_ns: u64,
    pub reset: bool,
    /// Accepted from a listener (true) or connected out (false), once
    /// the handshake was seen.
    pub accepted: Option<bool>,
}

#[derive(Debug)]
pub struct ConnTable {
    conns: Generations<u64, Conn>,
    /// How the last few connections removed at CLOSE were opened: the
    /// error a reset socket reports comes right after its CLOSE.
    recently_closed: VecDeque<(u64, bool)>,
}

/// Closed connections remembered for `ConnTable::recently_accepted`:
/// enough for the events that follow a close on the other CPUs too.
const RECENTLY_CLOSED: usize = 64;

impl Default for ConnTable {
    fn default() -> ConnTable {
        ConnTable {
            conns: Generations::new(GENERATION),
            recently_closed: VecDeque::new(),
        }
    }
}

impl ConnTable {
    pub fn get_or_insert(&mut self, sock: u64) -> &mut Conn {
        self.conns.entry(sock, Conn::default)
    }

    /// How the connection was opened, if it was seen opening.
    pub fn accepted(&self, sock: u64) -> Option<bool> {
        self.conns.get(&sock).and_then(|c| c.accepted)
    }

    pub fn remove(&mut self, sock: u64) -> Option<Conn> {
        let conn = self.conns.remove(&sock);
        if let Some(accepted) = conn.and_then(|c| c.accepted) {
            if self.recently_closed.len() >= RECENTLY_CLOSED {
                self.recently_closed.pop_front();
            }
            self.recently_closed.push_back((sock, accepted));
        }
        conn
    }

    /// How a connection removed at its CLOSE a moment ago was opened.
    pub fn recently_accepted(&self, sock: u64) -> Option<bool> {
        self.recently_closed
            .iter()
            .rev()
            .find(|(s, _)| *s == sock)
            .map(|(_, accepted)| *accepted)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.conns.len()
    }
}

/// An abortive close (ESTABLISHED/CLOSE_WAIT/FIN_WAIT1 -> CLOSE) waiting
/// to see whether an RST follows.
#[derive(Debug, Clone)]
pub struct PendingClose {
    pub sock: u64,
    /// The connection's namespace inode (0: unknown).
    pub netns: u32,
    pub closed_ns: u64,
    pub pid: u32,
    /// Copied, not allocated: one of these per abortive close.
    pub comm: Comm,
    pub peer: SocketAddr,
    pub retransmits: u32,
    pub first_retransmit_ns: u64,
}

/// Abortive closes in arrival order, each cancelled if an RST for its
/// socket follows. O(1) per event whatever the storm: no scan per RST.
#[derive(Debug, Default)]
pub struct PendingCloses {
    order: VecDeque<PendingClose>,
    /// Socket -> close time of its live entry (a socket address can be
    /// reused; only the newest entry counts).
    live: MixHashMap<u64, u64>,
}

impl PendingCloses {
    /// Beyond this many waiting, new ones are not tracked (a storm of
    /// aborts shows through its RSTs and counters anyway).
    const MAX: usize = 65_536;

    pub fn push(&mut self, close: PendingClose) {
        if self.order.len() < Self::MAX {
            self.live.insert(close.sock, close.closed_ns);
            self.order.push_back(close);
        }
    }

    /// An RST for `sock` explains its abortive close.
    pub fn cancel(&mut self, sock: u64) {
        self.live.remove(&sock);
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether `due` would look at any close: the oldest is older than
    /// `window_ns` at `now_ns` (or `now_ns` is `u64::MAX`). Inlined into
    /// the per-event check, so the usual "not yet" costs no call.
    #[inline]
    pub fn any_due(&self, now_ns: u64, window_ns: u64) -> bool {
        self.order.front().is_some_and(|front| {
            now_ns == u64::MAX || front.closed_ns.saturating_add(window_ns) < now_ns
        })
    }

    /// Takes the closes older than `window_ns` at `now_ns` (all if
    /// `now_ns` is `u64::MAX`) that no RST cancelled.
    pub fn due(&mut self, now_ns: u64, window_ns: u64) -> Vec<PendingClose> {
        let mut due = Vec::new();
        while let Some(front) = self.order.front() {
            if front.closed_ns.saturating_add(window_ns) >= now_ns && now_ns != u64::MAX {
                break;
            }
            let close = self.order.pop_front().expect("front exists");
            if self.live.get(&close.sock) == Some(&close.closed_ns) {
                self.live.remove(&close.sock);
                due.push(close);
            }
        }
        due
    }
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

    fn close(sock: u64, closed_ns: u64) -> PendingClose {
        PendingClose {
            sock,
            netns: 0,
            closed_ns,
            pid: 1,
            comm: Comm::new(b"c"),
            peer: "127.0.0.1:1".parse().unwrap(),
            retransmits: 0,
            first_retransmit_ns: 0,
        }
    }

    #[test]
    fn pending_closes_settle_unless_cancelled() {
        let mut p = PendingCloses::default();
        p.push(close(1, 100));
        p.push(close(2, 150));
        p.push(close(3, 400));
        p.cancel(2);
        let due: Vec<u64> = p.due(300, 100).iter().map(|c| c.sock).collect();
        assert_eq!(due, vec![1]);
        // A reused socket address: only the newest close counts.
        p.push(close(3, 500));
        let due: Vec<u64> = p.due(u64::MAX, 100).iter().map(|c| c.closed_ns).collect();
        assert_eq!(due, vec![500]);
        assert!(p.is_empty());
    }
}
