//! Handshake trouble by listening endpoint: which listener's clients were
//! reset, or left waiting, while their handshake could not complete.
//!
//! The counters of a namespace (`TcpExtListenOverflows`) say that some
//! accept queue overflowed, not which; these events name the listener:
//! the RSTs it sends instead of completing a handshake (reason
//! `INVALID_SYN` when `tcp_abort_on_overflow=1` refuses a final ACK the
//! accept queue has no room for), the SYN-ACKs it retransmits (the
//! client's final ACK was dropped on overflow), and the handshake
//! segments dropped on their way to it.

use std::{collections::BTreeMap, net::SocketAddr};

use tcptrace_common::tcp_state;

use super::{TopN, Weight};
use crate::event::{EventKind, TcpEvent};

/// Listening endpoints kept.
const MAX_LISTENERS: usize = 64;
/// TCP header flags.
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// What one listening endpoint's handshakes went through.
#[derive(Debug, Clone, Default)]
pub struct HandshakeTrouble {
    /// RSTs sent by the listener or one of its request sockets in answer
    /// to a handshake, by reason name.
    pub resets: BTreeMap<&'static str, u64>,
    /// SYN-ACKs retransmitted: the client's final ACK did not complete
    /// the handshake (dropped on a full accept queue, or lost).
    pub synack_retransmits: u64,
    /// Handshake segments (a SYN, or a bare ACK) dropped on arrival, by
    /// drop reason name (`TCP_LISTEN_OVERFLOW`, `NETFILTER_DROP`, ...).
    pub drops: BTreeMap<&'static str, u64>,
    /// The process the kernel attributed the events to (0: none).
    pub pid: u32,
    /// Its command name.
    pub comm: String,
}

impl HandshakeTrouble {
    /// RSTs sent, all reasons.
    pub fn resets_total(&self) -> u64 {
        self.resets.values().sum()
    }

    /// Dropped handshake segments, all reasons.
    pub fn drops_total(&self) -> u64 {
        self.drops.values().sum()
    }

    /// Every event that points at this listener.
    pub fn total(&self) -> u64 {
        self.resets_total() + self.synack_retransmits + self.drops_total()
    }
}

impl Weight for HandshakeTrouble {
    fn weight(&self) -> u64 {
        self.total()
    }
}

/// Handshake trouble by local (listening) endpoint, IPv4 shown as IPv4.
#[derive(Debug, Clone)]
pub struct Handshakes {
    /// By the listener's address and port, the `MAX_LISTENERS` heaviest.
    pub by_listener: TopN<SocketAddr, HandshakeTrouble>,
}

impl Default for Handshakes {
    fn default() -> Self {
        Handshakes {
            by_listener: TopN::new(MAX_LISTENERS),
        }
    }
}

/// What about an event concerns a listener's handshakes.
pub(super) enum HandshakeEvent {
    /// An RST sent with this reason.
    Reset(&'static str),
    /// A SYN-ACK retransmitted.
    SynAckRetransmit,
    /// A handshake segment dropped with this reason.
    Drop(&'static str),
}

impl Handshakes {
    /// Takes what `ev` says about a listener (`what`, from the event's
    /// kind; the caller names reasons). Events of established
    /// connections are not handshake trouble and are ignored.
    pub(super) fn add(&mut self, ev: &TcpEvent, what: HandshakeEvent) {
        let of_listener = match (&what, ev.kind) {
            (HandshakeEvent::Reset(_), EventKind::RstSent) => ev.state.is_some_and(|s| {
                matches!(
                    i32::from(s),
                    tcp_state::LISTEN | tcp_state::NEW_SYN_RECV | tcp_state::SYN_RECV
                )
            }),
            (HandshakeEvent::SynAckRetransmit, _) => true,
            (HandshakeEvent::Drop(reason), EventKind::Drop) => ev.dropped().is_some_and(|d| {
                d.incoming
                    && (*reason == "TCP_LISTEN_OVERFLOW"
                        || d.tcp_flags & (SYN | ACK) == SYN
                        || d.tcp_flags == ACK)
            }),
            _ => false,
        };
        if !of_listener {
            return;
        }
        let key = SocketAddr::new(ev.local.ip().to_canonical(), ev.local.port());
        let entry = self.by_listener.entry(&key, HandshakeTrouble::default);
        if let Some(owner) = &ev.owner
            && entry.pid == 0
        {
            entry.pid = owner.pid;
            entry.comm = owner.comm.to_string();
        }
        match what {
            HandshakeEvent::Reset(reason) => *entry.resets.entry(reason).or_default() += 1,
            HandshakeEvent::SynAckRetransmit => entry.synack_retransmits += 1,
            HandshakeEvent::Drop(reason) => *entry.drops.entry(reason).or_default() += 1,
        }
    }

    /// Listeners by trouble, most first; ties by address.
    pub fn ranked(&self) -> Vec<(SocketAddr, &HandshakeTrouble)> {
        let mut all: Vec<_> = self.by_listener.iter().map(|(k, v)| (*k, v)).collect();
        all.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then(a.0.cmp(&b.0)));
        all
    }
}

impl Handshakes {
    /// Adds the figures of `other` (an exporter window's slices).
    pub fn merge(&mut self, other: &Handshakes) {
        self.by_listener.merge_from(
            &other.by_listener,
            HandshakeTrouble::default,
            |ours, theirs| {
                for (reason, n) in &theirs.resets {
                    *ours.resets.entry(reason).or_default() += n;
                }
                for (reason, n) in &theirs.drops {
                    *ours.drops.entry(reason).or_default() += n;
                }
                ours.synack_retransmits += theirs.synack_retransmits;
                if theirs.pid != 0 {
                    ours.pid = theirs.pid;
                    ours.comm.clone_from(&theirs.comm);
                }
            },
        );
    }
}
