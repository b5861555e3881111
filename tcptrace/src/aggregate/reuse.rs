//! Reuse after idle, and what became of each reuse on its connection.
//!
//! A `reuse` event is a send that ended an idle gap. Whether the flow
//! still existed shows in what the same connection does next: data or an
//! ACK arrives (answered), the send is retransmitted and nothing comes
//! back until the connection closes or the kernel gives up (stalled,
//! timed out), or an RST arrives (reset, with or without the peer's FIN
//! first). Reuses that worked next to reuses that failed bound an idle
//! timeout on the path: it lies between the longest gap that survived and
//! the shortest that did not.
//!
//! One open reuse per connection (by kernel socket address) is followed
//! until the next reuse, its close or the end of the run; memory is
//! bounded by `MAX_OPEN` connections.

use std::{collections::VecDeque, net::SocketAddr};

use tcptrace_common::tcp_state;

use super::{dist::Dist, hashing::MixHashMap};
use crate::event::{Comm, EventKind, TcpEvent};

/// Connections with a reuse being followed; beyond this new reuses are
/// not followed (counted in `ReuseOutcomes::untracked`).
const MAX_OPEN: usize = 65_536;
/// A send not retransmitted for this long was acknowledged: the
/// retransmission timer (at least 200 ms, ~RTT + 4 x deviation) would
/// have fired by then on any path this tool diagnoses.
const ACKED_AFTER_NS: u64 = 2_000_000_000;
/// How long after a connection's CLOSE the error its application is
/// handed (reported after the CLOSE) or a linger-0 RST may still come.
const CLOSE_SETTLE_NS: u64 = 100_000_000;
/// Receive times are in jiffies (up to 10 ms at HZ=100): a receive this
/// much before the send that opened a reuse still counts as after it.
const JIFFY_SLACK_NS: u64 = 20_000_000;

/// What became of one reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Data or an ACK came back with no retransmit first.
    Answered,
    /// Retransmitted, then answered: the flow was alive, a packet was lost.
    Recovered,
    /// Retransmitted with nothing back until the connection closed or the
    /// run ended (the application gave up, or is still waiting).
    Stalled,
    /// Retransmitted until the kernel gave up (ETIMEDOUT, or a close with
    /// no RST either way).
    TimedOut,
    /// An RST came back, with no FIN from the peer first.
    Reset,
    /// An RST came back after the peer had closed (FIN): the connection was
    /// reused in CLOSE_WAIT, or the peer's close crossed the send.
    ResetAfterFin,
}

/// How many reuses ended one way, and the range of their idle gaps
/// (exact, nanoseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdleRange {
    /// Reuses.
    pub count: u64,
    /// Shortest idle gap.
    pub min_ns: u64,
    /// Longest idle gap.
    pub max_ns: u64,
}

impl IdleRange {
    fn record(&mut self, idle_ns: u64) {
        if self.count == 0 {
            (self.min_ns, self.max_ns) = (idle_ns, idle_ns);
        } else {
            self.min_ns = self.min_ns.min(idle_ns);
            self.max_ns = self.max_ns.max(idle_ns);
        }
        self.count += 1;
    }

    /// Both ranges together.
    pub fn merge(self, other: IdleRange) -> IdleRange {
        match (self.count, other.count) {
            (0, _) => other,
            (_, 0) => self,
            _ => IdleRange {
                count: self.count + other.count,
                min_ns: self.min_ns.min(other.min_ns),
                max_ns: self.max_ns.max(other.max_ns),
            },
        }
    }
}

/// An idle timeout bounded by reuses: every reuse after `failed_ns` or
/// more failed, every one that worked had been idle at most
/// `survived_ns`. The timeout lies in (`survived_ns`, `failed_ns`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleBound {
    /// The longest idle gap that worked; `None` if none worked.
    pub survived_ns: Option<u64>,
    /// The shortest idle gap that failed.
    pub failed_ns: u64,
    /// The longest idle gap that failed.
    pub failed_max_ns: u64,
    /// Reuses that failed.
    pub failed: u64,
    /// Reuses that worked.
    pub worked: u64,
}

impl IdleBound {
    /// The best single figure for the timeout: the middle of the bounds,
    /// or the shortest failing gap when nothing bounds it from below.
    pub fn estimate_ns(&self) -> u64 {
        match self.survived_ns {
            Some(low) => low + (self.failed_ns - low) / 2,
            None => self.failed_ns,
        }
    }
}

/// Reuses of one group (process, peer, or all) by outcome.
#[derive(Debug, Clone)]
pub struct ReuseOutcomes {
    /// Answered with no retransmit.
    pub answered: IdleRange,
    /// Retransmitted, then answered.
    pub recovered: IdleRange,
    /// Retransmitted, no answer until the close or the end of the run.
    pub stalled: IdleRange,
    /// Retransmitted until the kernel gave up.
    pub timed_out: IdleRange,
    /// Reset with no FIN from the peer first.
    pub reset: IdleRange,
    /// Reset after the peer's FIN.
    pub reset_after_fin: IdleRange,
    /// Outcome unknown (closed or run ended too soon to tell).
    pub unknown: u64,
    /// Reuses not followed (too many connections at once).
    pub untracked: u64,
    /// Retransmits of the reuses that stalled or timed out: loss that an
    /// idle timeout explains.
    pub stall_retransmits: u64,
    /// Send to first retransmit, for the reuses that stalled or timed out.
    pub stall_start: Dist,
    /// Errors handed to the application after a failed reuse, by errno name.
    pub errors: std::collections::BTreeMap<&'static str, u64>,
}

impl Default for ReuseOutcomes {
    fn default() -> Self {
        ReuseOutcomes {
            answered: IdleRange::default(),
            recovered: IdleRange::default(),
            stalled: IdleRange::default(),
            timed_out: IdleRange::default(),
            reset: IdleRange::default(),
            reset_after_fin: IdleRange::default(),
            unknown: 0,
            untracked: 0,
            stall_retransmits: 0,
            stall_start: Dist::new(Dist::MILLIS),
            errors: std::collections::BTreeMap::new(),
        }
    }
}

impl ReuseOutcomes {
    /// Reuses after which the flow was alive.
    pub fn worked(&self) -> IdleRange {
        self.answered.merge(self.recovered)
    }

    /// Reuses that got nothing back at all.
    pub fn silent(&self) -> IdleRange {
        self.stalled.merge(self.timed_out)
    }

    /// The idle timeout `failed` reuses imply next to the ones that
    /// worked, if idle alone separates them (every failure idle longer
    /// than every success) and the failures were idle at least
    /// `min_idle_ns`; `None` otherwise.
    pub fn bound(&self, failed: IdleRange, min_idle_ns: u64) -> Option<IdleBound> {
        let worked = self.worked();
        if failed.count == 0 || failed.min_ns < min_idle_ns {
            return None;
        }
        if worked.count > 0 && worked.max_ns >= failed.min_ns {
            return None;
        }
        Some(IdleBound {
            survived_ns: (worked.count > 0).then_some(worked.max_ns),
            failed_ns: failed.min_ns,
            failed_max_ns: failed.max_ns,
            failed: failed.count,
            worked: worked.count,
        })
    }

    /// Every reuse followed to an outcome.
    pub fn total(&self) -> u64 {
        [
            self.answered,
            self.recovered,
            self.stalled,
            self.timed_out,
            self.reset,
            self.reset_after_fin,
        ]
        .iter()
        .map(|r| r.count)
        .sum::<u64>()
            + self.unknown
    }

    pub(super) fn apply(&mut self, s: &Settled) {
        let range = match s.outcome {
            None => {
                self.unknown += 1;
                return;
            }
            Some(Outcome::Answered) => &mut self.answered,
            Some(Outcome::Recovered) => &mut self.recovered,
            Some(Outcome::Stalled) => &mut self.stalled,
            Some(Outcome::TimedOut) => &mut self.timed_out,
            Some(Outcome::Reset) => &mut self.reset,
            Some(Outcome::ResetAfterFin) => &mut self.reset_after_fin,
        };
        range.record(s.idle_ns);
        if matches!(s.outcome, Some(Outcome::Stalled | Outcome::TimedOut)) {
            self.stall_retransmits += u64::from(s.retransmits);
            if let Some(ns) = s.stall_start_ns {
                self.stall_start.record(ns);
            }
        }
        if let Some(errno) = s.errno {
            *self.errors.entry(errno).or_default() += 1;
        }
    }
}

/// A reuse followed to its outcome, for the process and peer it belongs to.
#[derive(Debug, Clone)]
pub(super) struct Settled {
    pub pid: u32,
    pub comm: Comm,
    pub cgroup_id: u64,
    pub peer: SocketAddr,
    /// `None`: unknown.
    pub outcome: Option<Outcome>,
    pub idle_ns: u64,
    pub retransmits: u32,
    pub stall_start_ns: Option<u64>,
    pub errno: Option<&'static str>,
}

/// A reuse being followed on its connection.
#[derive(Debug, Clone)]
struct Open {
    at_ns: u64,
    idle_ns: u64,
    pid: u32,
    comm: Comm,
    cgroup_id: u64,
    peer: SocketAddr,
    /// The peer's FIN came before the send or crossed it.
    after_fin: bool,
    /// Retransmits before any answer.
    retransmits: u32,
    first_retransmit_ns: u64,
    answered: bool,
    reset: bool,
    /// The application reset it itself (linger 0) after the send.
    aborted: bool,
    /// Closed without an RST either way, from a state only a timeout
    /// leaves that way (ESTABLISHED, FIN_WAIT1, CLOSE_WAIT).
    abortive_close: bool,
    /// Closed the orderly way: the peer acknowledged our FIN.
    graceful_close: bool,
    errno: Option<&'static str>,
    /// CLOSE seen: waiting `CLOSE_SETTLE_NS` for the error that follows.
    closed_ns: Option<u64>,
}

impl Open {
    fn outcome(&self, now_ns: u64) -> Option<Outcome> {
        let timed_out = self.errno == Some("ETIMEDOUT");
        Some(if self.answered {
            if self.retransmits > 0 {
                Outcome::Recovered
            } else {
                Outcome::Answered
            }
        } else if self.reset || self.errno == Some("ECONNRESET") {
            if self.after_fin {
                Outcome::ResetAfterFin
            } else {
                Outcome::Reset
            }
        } else if self.retransmits > 0 {
            if timed_out || (self.abortive_close && !self.aborted) {
                Outcome::TimedOut
            } else {
                Outcome::Stalled
            }
        } else if self.graceful_close || now_ns.saturating_sub(self.at_ns) >= ACKED_AFTER_NS {
            // Nothing retransmitted for long enough, or the peer
            // acknowledged the FIN that followed: the send arrived.
            Outcome::Answered
        } else {
            return None;
        })
    }

    fn settle(self, now_ns: u64) -> Settled {
        let outcome = self.outcome(now_ns);
        Settled {
            pid: self.pid,
            comm: self.comm,
            cgroup_id: self.cgroup_id,
            peer: self.peer,
            outcome,
            idle_ns: self.idle_ns,
            retransmits: self.retransmits,
            stall_start_ns: (self.retransmits > 0)
                .then(|| self.first_retransmit_ns.saturating_sub(self.at_ns)),
            errno: self.errno,
        }
    }

    /// Something was received at `received_ns`: after the send?
    fn received(&mut self, received_ns: u64) {
        let slack = JIFFY_SLACK_NS.min(self.idle_ns / 2);
        if received_ns + slack >= self.at_ns {
            self.answered = true;
        }
    }
}

/// Follows each reuse on its connection until its outcome is known.
#[derive(Debug, Default)]
pub(super) struct ReuseTracker {
    open: MixHashMap<u64, Open>,
    /// Sockets closed, in close order, waiting for their error.
    closing: VecDeque<(u64, u64)>,
    /// Reuses not followed since the last `take_untracked`.
    untracked: u64,
}

impl ReuseTracker {
    /// Takes one event; reuses whose outcome it decides go to `out`.
    /// `peer` is the event's group key, `errno` its socket error's name.
    pub fn observe(
        &mut self,
        ev: &TcpEvent,
        peer: SocketAddr,
        errno: Option<&'static str>,
        out: &mut Vec<Settled>,
    ) {
        if ev.sock == 0 {
            return;
        }
        match ev.kind {
            EventKind::Reuse => {
                if let Some(mut prev) = self.open.remove(&ev.sock) {
                    if let Some(recv) = ev.idle_recv_ns {
                        prev.received(ev.mono_ns.saturating_sub(recv));
                    }
                    out.push(prev.settle(ev.mono_ns));
                }
                if self.open.len() >= MAX_OPEN {
                    self.untracked += 1;
                    return;
                }
                let after_fin = ev
                    .state
                    .is_some_and(|s| i32::from(s) == tcp_state::CLOSE_WAIT);
                self.open.insert(
                    ev.sock,
                    Open {
                        at_ns: ev.mono_ns,
                        idle_ns: ev.idle_ns().unwrap_or(0),
                        pid: ev.owner.as_ref().map_or(0, |o| o.pid),
                        comm: ev
                            .owner
                            .as_ref()
                            .map_or_else(|| Comm::new(b"?"), |o| o.comm),
                        cgroup_id: ev.owner.as_ref().map_or(0, |o| o.cgroup_id),
                        peer,
                        after_fin,
                        retransmits: 0,
                        first_retransmit_ns: 0,
                        answered: false,
                        reset: false,
                        aborted: false,
                        abortive_close: false,
                        graceful_close: false,
                        errno: None,
                        closed_ns: None,
                    },
                );
            }
            EventKind::Retransmit => {
                if let Some(open) = self.open.get_mut(&ev.sock)
                    && !open.answered
                    && ev
                        .state
                        .is_some_and(|s| i32::from(s) != tcp_state::SYN_SENT)
                {
                    if open.retransmits == 0 {
                        open.first_retransmit_ns = ev.mono_ns;
                    }
                    open.retransmits += 1;
                }
            }
            EventKind::RstReceived => {
                if let Some(open) = self.open.get_mut(&ev.sock) {
                    if let Some(recv) = ev.idle_recv_ns {
                        open.received(ev.mono_ns.saturating_sub(recv));
                    }
                    open.reset = true;
                }
            }
            EventKind::RstSent => {
                if let Some(open) = self.open.get_mut(&ev.sock) {
                    open.aborted = true;
                }
            }
            EventKind::SocketError => {
                if let Some(open) = self.open.get_mut(&ev.sock) {
                    open.errno = errno;
                    if open.closed_ns.is_some() {
                        let open = self.open.remove(&ev.sock).expect("present");
                        out.push(open.settle(ev.mono_ns));
                    }
                }
            }
            EventKind::Connect | EventKind::ConnectFailed => {
                // A new connection at the address of one that is gone.
                if let Some(open) = self.open.remove(&ev.sock) {
                    out.push(open.settle(ev.mono_ns));
                }
            }
            EventKind::State => self.state(ev),
            EventKind::SynAckRetransmit | EventKind::Drop => {}
        }
    }

    fn state(&mut self, ev: &TcpEvent) {
        let Some((old, new)) = ev.transition else {
            return;
        };
        let Some(open) = self.open.get_mut(&ev.sock) else {
            return;
        };
        let (old, new) = (i32::from(old), i32::from(new));
        if (old, new) == (tcp_state::ESTABLISHED, tcp_state::CLOSE_WAIT) {
            // The FIN just arrived: the peer was there, but that is no
            // answer to the send (it may be the close that crossed it).
            open.after_fin = true;
        } else if let Some(recv) = ev.idle_recv_ns {
            open.received(ev.mono_ns.saturating_sub(recv));
        }
        if new == tcp_state::CLOSE && open.closed_ns.is_none() {
            open.closed_ns = Some(ev.mono_ns);
            match old {
                tcp_state::ESTABLISHED | tcp_state::FIN_WAIT1 | tcp_state::CLOSE_WAIT => {
                    open.abortive_close = !open.reset;
                }
                // FIN_WAIT2, TIME_WAIT, CLOSING, LAST_ACK: the peer
                // acknowledged our FIN, so everything sent before it.
                tcp_state::SYN_SENT | tcp_state::SYN_RECV => {}
                _ => open.graceful_close = !open.reset,
            }
            self.closing.push_back((ev.sock, ev.mono_ns));
        }
    }

    /// Settles the closed connections whose error had time to arrive.
    pub fn settle(&mut self, now_ns: u64, out: &mut Vec<Settled>) {
        while let Some(&(sock, closed_ns)) = self.closing.front() {
            if closed_ns.saturating_add(CLOSE_SETTLE_NS) >= now_ns {
                break;
            }
            self.closing.pop_front();
            // Already settled (its error came), or a newer close.
            if self
                .open
                .get(&sock)
                .is_some_and(|o| o.closed_ns == Some(closed_ns))
            {
                let open = self.open.remove(&sock).expect("present");
                out.push(open.settle(now_ns));
            }
        }
    }

    /// The run is over at `now_ns`: every reuse still followed is settled.
    pub fn finish(&mut self, now_ns: u64, out: &mut Vec<Settled>) {
        self.closing.clear();
        let mut open: Vec<_> = self.open.drain().collect();
        open.sort_by_key(|(sock, o)| (o.at_ns, *sock));
        out.extend(open.into_iter().map(|(_, o)| o.settle(now_ns)));
    }

    /// Reuses not followed since the last call (too many connections).
    pub fn take_untracked(&mut self) -> u64 {
        std::mem::take(&mut self.untracked)
    }
}

impl ReuseOutcomes {
    /// Adds every figure of `other`. Written field by field with no `..`:
    /// a figure added here does not compile until it merges too.
    pub fn merge(&mut self, other: &ReuseOutcomes) {
        let ReuseOutcomes {
            answered,
            recovered,
            stalled,
            timed_out,
            reset,
            reset_after_fin,
            unknown,
            untracked,
            stall_retransmits,
            stall_start,
            errors,
        } = other;
        self.answered = self.answered.merge(*answered);
        self.recovered = self.recovered.merge(*recovered);
        self.stalled = self.stalled.merge(*stalled);
        self.timed_out = self.timed_out.merge(*timed_out);
        self.reset = self.reset.merge(*reset);
        self.reset_after_fin = self.reset_after_fin.merge(*reset_after_fin);
        self.unknown += unknown;
        self.untracked += untracked;
        self.stall_retransmits += stall_retransmits;
        self.stall_start.merge(stall_start);
        for (errno, n) in errors {
            *self.errors.entry(errno).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Aggregate, testing::*};
    use super::*;
    use crate::event::EventKind as K;

    const PEER: &str = "10.0.0.7:443";

    fn reuse(sock: u64, at: u64, idle: u64, state: &str) -> TcpEvent {
        ev(K::Reuse, at)
            .sock(sock)
            .owner(42, "client")
            .remote(PEER)
            .state(state)
            .idle_ms(idle, idle)
            .build()
    }

    fn retransmit(sock: u64, at: u64) -> TcpEvent {
        ev(K::Retransmit, at)
            .sock(sock)
            .owner(42, "client")
            .remote(PEER)
            .state("ESTABLISHED")
            .build()
    }

    fn closed(sock: u64, at: u64, from: &str) -> TcpEvent {
        ev(K::State, at)
            .sock(sock)
            .owner(42, "client")
            .remote(PEER)
            .transition(from, "CLOSE")
            .build()
    }

    fn outcomes(events: Vec<TcpEvent>) -> ReuseOutcomes {
        let mut a = Aggregate::new(names());
        for e in &events {
            a.add(e);
        }
        a.finish();
        let peer = a.peers.get(&PEER.parse().unwrap()).expect("the peer");
        assert_eq!(
            peer.reuse_outcomes.total(),
            a.process(42).unwrap().stats.reuse_outcomes.total()
        );
        a.total.reuse_outcomes.clone()
    }

    #[test]
    fn answered_by_the_next_reuse_or_the_close() {
        let mut events = connect(1, 0, 42, "client", PEER);
        events.push(reuse(1, 1_000, 900, "ESTABLISHED"));
        // Received 1 ms after that send, then idle again until 3_000.
        events.push(reuse(1, 3_000, 1_999, "ESTABLISHED"));
        // Closed by the client after its answer came (idle_recv 5 ms).
        events.push(
            ev(K::State, 3_010)
                .sock(1)
                .owner(42, "client")
                .remote(PEER)
                .transition("ESTABLISHED", "FIN_WAIT1")
                .idle_ms(5, 5)
                .build(),
        );
        let r = outcomes(events);
        assert_eq!(r.answered.count, 2);
        assert_eq!(
            (r.answered.min_ns, r.answered.max_ns),
            (900_000_000, 1_999_000_000)
        );
        assert_eq!(r.silent().count + r.reset.count + r.unknown, 0);
    }

    #[test]
    fn stalled_until_the_application_gave_up() {
        let mut events = connect(1, 0, 42, "client", PEER);
        events.push(reuse(1, 5_000, 4_000, "ESTABLISHED"));
        for at in [5_200, 5_600, 6_400] {
            events.push(retransmit(1, at));
        }
        // The application closes; nothing was received since before the send.
        events.push(
            ev(K::State, 7_000)
                .sock(1)
                .owner(42, "client")
                .remote(PEER)
                .transition("ESTABLISHED", "FIN_WAIT1")
                .idle_ms(600, 6_000)
                .build(),
        );
        events.push(retransmit(1, 8_000));
        let r = outcomes(events);
        assert_eq!(r.stalled.count, 1);
        assert_eq!(r.stalled.min_ns, 4_000_000_000);
        assert_eq!(r.stall_retransmits, 4);
        let start = r.stall_start.percentiles().unwrap();
        assert!(
            (195_000_000..=205_000_000).contains(&start.p50_ns),
            "{start:?}"
        );
        assert_eq!(r.worked().count, 0);
    }

    #[test]
    fn timed_out_when_the_kernel_gave_up() {
        let mut events = connect(1, 0, 42, "client", PEER);
        events.push(reuse(1, 3_000, 2_600, "ESTABLISHED"));
        events.push(retransmit(1, 3_200));
        events.push(retransmit(1, 3_600));
        // The kernel closes it, then reports the error (in that order).
        events.push(closed(1, 4_000, "ESTABLISHED"));
        events.push(
            ev(K::SocketError, 4_000)
                .sock(1)
                .owner(42, "client")
                .remote(PEER)
                .state("CLOSE")
                .socket_errno(libc::ETIMEDOUT)
                .build(),
        );
        let r = outcomes(events);
        assert_eq!(r.timed_out.count, 1);
        assert_eq!(r.errors.get("ETIMEDOUT"), Some(&1));
        // Without the error event: a close with no RST either way.
        let mut events = connect(2, 0, 42, "client", PEER);
        events.push(reuse(2, 3_000, 2_600, "ESTABLISHED"));
        events.push(retransmit(2, 3_200));
        events.push(closed(2, 4_000, "ESTABLISHED"));
        events.push(ev(K::State, 4_500).sock(99).build());
        assert_eq!(outcomes(events).timed_out.count, 1);
    }

    #[test]
    fn resets_with_and_without_the_peers_fin() {
        let mut events = connect(1, 0, 42, "client", PEER);
        events.push(reuse(1, 3_000, 2_900, "ESTABLISHED"));
        events.push(
            ev(K::RstReceived, 3_001)
                .sock(1)
                .owner(42, "client")
                .remote(PEER)
                .state("ESTABLISHED")
                .idle_ms(1, 2_901)
                .build(),
        );
        events.push(closed(1, 3_001, "ESTABLISHED"));
        events.push(
            ev(K::SocketError, 3_001)
                .sock(1)
                .owner(42, "client")
                .remote(PEER)
                .state("CLOSE")
                .socket_errno(libc::ECONNRESET)
                .build(),
        );
        // Reused after the peer's FIN (CLOSE_WAIT): reset after FIN.
        events.extend(connect(2, 0, 42, "client", PEER));
        events.push(reuse(2, 5_000, 3_000, "CLOSE_WAIT"));
        events.push(
            ev(K::RstReceived, 5_001)
                .sock(2)
                .owner(42, "client")
                .remote(PEER)
                .state("CLOSE_WAIT")
                .idle_ms(1, 1_000)
                .build(),
        );
        events.push(closed(2, 5_001, "CLOSE_WAIT"));
        let r = outcomes(events);
        assert_eq!(r.reset.count, 1);
        assert_eq!(r.reset_after_fin.count, 1);
        assert_eq!(r.errors.get("ECONNRESET"), Some(&1));
        assert_eq!(r.timed_out.count + r.stalled.count, 0);
    }

    #[test]
    fn recovered_and_unknown() {
        let mut events = connect(1, 0, 42, "client", PEER);
        events.push(reuse(1, 2_000, 1_500, "ESTABLISHED"));
        events.push(retransmit(1, 2_200));
        // The next reuse shows something arrived at 2_300, after the send.
        events.push(reuse(1, 4_000, 1_700, "ESTABLISHED"));
        // The last reuse: nothing follows before the run ends 100 ms later.
        events.push(ev(K::State, 4_100).sock(99).build());
        let r = outcomes(events);
        assert_eq!(r.recovered.count, 1);
        assert_eq!(r.unknown, 1);
        assert_eq!(r.worked().count, 1);
    }

    #[test]
    fn idle_bounds() {
        let mut r = ReuseOutcomes::default();
        let settle = |outcome, idle_ms: u64| Settled {
            pid: 1,
            comm: Comm::new(b"c"),
            cgroup_id: 0,
            peer: PEER.parse().unwrap(),
            outcome: Some(outcome),
            idle_ns: idle_ms * 1_000_000,
            retransmits: 0,
            stall_start_ns: None,
            errno: None,
        };
        for (o, ms) in [
            (Outcome::Answered, 500),
            (Outcome::Answered, 2_100),
            (Outcome::Stalled, 4_000),
            (Outcome::TimedOut, 4_100),
        ] {
            r.apply(&settle(o, ms));
        }
        let b = r
            .bound(r.silent(), 100_000_000)
            .expect("idle separates them");
        assert_eq!(b.survived_ns, Some(2_100_000_000));
        assert_eq!((b.failed_ns, b.failed, b.worked), (4_000_000_000, 2, 2));
        assert_eq!(b.estimate_ns(), 3_050_000_000);
        // Too short to be an idle timeout.
        assert!(r.bound(r.silent(), 5_000_000_000).is_none());
        // A longer gap that worked: idle does not separate them.
        r.apply(&settle(Outcome::Answered, 6_000));
        assert!(r.bound(r.silent(), 100_000_000).is_none());
        assert!(r.bound(r.reset, 0).is_none(), "nothing failed that way");
    }
}
