//! Packets of the watched connections wherever the host handles them.
//!
//! With a scope filter on (`--netns` a pod, `--pid`, ...), the packets of
//! the connections in scope also cross other namespaces of the host: a
//! node namespace forwards them, NATs them, tracks them, and may drop
//! them there (a full conntrack table, a firewall) or answer them with an
//! RST no socket owns. Those events fail the scope filter (another
//! namespace, no owner), yet they are what explains the watched
//! connections' timeouts. So the connections in scope leave their two
//! ends in `WATCHED_FLOWS`, and a drop or an unowned RST whose addresses
//! and ports are those of a watched flow (either way round) is kept, with
//! the namespace where it really happened.

use tcptrace_common::{Config, Event, WatchedFlowKey, kind, tcp_state};

use crate::maps::WATCHED_FLOWS;

/// Remembers the flow of `ev`, an event that passed the scope filters,
/// when it is one that names both ends of a connection: a connect, an
/// accepted connection reaching ESTABLISHED, a retransmit (a SYN's is
/// the first moment its port is known: connect() sets SYN_SENT before it
/// picks the port).
#[inline(always)]
pub fn remember(cfg: &Config, ev: &Event) {
    if cfg.related_flows == 0 || ev.sport == 0 || ev.dport == 0 {
        return;
    }
    let names_flow = ev.kind == kind::RETRANSMIT
        || ev.kind == kind::SYNACK_RETRANSMIT
        || ev.kind == kind::CONNECT
        || (ev.kind == kind::STATE && i32::from(ev.new_state) == tcp_state::ESTABLISHED);
    if !names_flow {
        return;
    }
    let key = key(ev, false);
    if WATCHED_FLOWS.get_ptr(&key).is_none() {
        let _ = WATCHED_FLOWS.insert(&key, &ev.netns, 0);
    }
}

/// Whether `ev` (a drop or an unowned RST, addresses and ports filled)
/// belongs to a watched flow, seen from either end.
#[inline(always)]
pub fn watched(cfg: &Config, ev: &Event) -> bool {
    cfg.related_flows != 0
        && (WATCHED_FLOWS.get_ptr(&key(ev, false)).is_some()
            || WATCHED_FLOWS.get_ptr(&key(ev, true)).is_some())
}

/// The flow key of `ev`, local end first (or remote first when
/// `swapped`); v4-mapped IPv6 addresses folded to IPv4, as a packet's
/// own headers give them.
#[inline(always)]
fn key(ev: &Event, swapped: bool) -> WatchedFlowKey {
    let mut key = WatchedFlowKey::default();
    let (a, b, pa, pb) = if swapped {
        (&ev.daddr, &ev.saddr, ev.dport, ev.sport)
    } else {
        (&ev.saddr, &ev.daddr, ev.sport, ev.dport)
    };
    fold_into(a, &mut key.local);
    fold_into(b, &mut key.remote);
    key.local_port = pa;
    key.remote_port = pb;
    key
}

/// Copies an address, an IPv4-mapped IPv6 one (::ffff:a.b.c.d) as IPv4.
#[inline(always)]
fn fold_into(addr: &[u8; 16], out: &mut [u8; 16]) {
    let mut mapped = addr[10] == 0xff && addr[11] == 0xff;
    for i in 0..10 {
        if addr[i] != 0 {
            mapped = false;
        }
    }
    if mapped {
        for i in 0..4 {
            out[i] = addr[12 + i];
        }
    } else {
        for i in 0..16 {
            out[i] = addr[i];
        }
    }
}
