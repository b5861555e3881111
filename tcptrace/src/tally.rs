//! Counts per owner, peer and signal, interval by interval: what the
//! Prometheus exporter exports, as plain data.
//!
//! This is the seam between what counts and what exports. Today
//! `EventTally` counts the events the session hands out; the in-kernel
//! counters of issue 13 (per-CPU maps keyed by owner, peer, kind and
//! reason or state, and log-linear histograms) are meant to be a second
//! `TallySource` that reads those maps each interval into the same
//! `Tally`, with no change to the exporter. Keys therefore hold the
//! kernel's raw numbers (states, reasons, errnos), named at export, and
//! histograms use buckets a BPF program can compute (`LogHistogram`).

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
};

use rustc_hash::FxHashMap;
use tcptrace_common::tcp_state;

use crate::event::{Comm, EventKind, OpenCount, TcpEvent};

/// Who a count belongs to: the socket's owner as the kernel recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Who {
    /// Process id (0: no owner known).
    pub pid: u32,
    /// Command name (empty: no owner known).
    pub comm: Comm,
    /// cgroup v2 id (0: unknown).
    pub cgroup_id: u64,
}

impl Who {
    /// The owner of `ev` (the zero `Who` when unknown).
    pub fn of(ev: &TcpEvent) -> Who {
        ev.owner.as_ref().map_or(
            Who {
                pid: 0,
                comm: Comm::default(),
                cgroup_id: 0,
            },
            |o| Who {
                pid: o.pid,
                comm: o.comm,
                cgroup_id: o.cgroup_id,
            },
        )
    }
}

/// What is counted, with the kernel's numbers for its detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// A connection reached ESTABLISHED: connected (active) or accepted
    /// (passive, SYN_RECV -> ESTABLISHED).
    Opened {
        /// Accepted from a listener.
        passive: bool,
    },
    /// A connect failed (SYN_SENT -> CLOSE), with the error the socket
    /// reported just before (0: none, the application gave up first).
    ConnectFailed {
        /// Positive errno (`ECONNREFUSED`, `ETIMEDOUT`, ...), or 0.
        errno: i32,
    },
    /// This host sent an RST.
    RstSent {
        /// `enum sk_rst_reason` value; `None` before Linux 6.10.
        reason: Option<u32>,
        /// The socket's state (`None` without a socket).
        state: Option<u8>,
    },
    /// This host received an RST, in this state.
    RstReceived {
        /// The socket's state.
        state: Option<u8>,
    },
    /// A data segment was retransmitted in this state.
    Retransmit {
        /// The socket's state.
        state: u8,
    },
    /// A SYN was retransmitted (a connect waiting for an answer).
    SynRetransmit,
    /// A SYN-ACK was retransmitted (a handshake this side answered).
    SynAckRetransmit,
    /// The kernel dropped a TCP packet.
    Drop {
        /// `enum skb_drop_reason` value; `None` on kernels without reasons.
        reason: Option<u32>,
        /// Received (true) or sent.
        incoming: bool,
    },
    /// The kernel handed an application an error.
    SocketError {
        /// Positive errno.
        errno: i32,
    },
}

/// Which distribution a value goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measure {
    /// SYN_SENT -> ESTABLISHED of successful connects.
    ConnectLatency,
    /// Time since the last data either way when an RST was sent
    /// (`sent`) or received.
    IdleBeforeReset {
        /// An RST this host sent.
        sent: bool,
    },
}

/// Values in nanoseconds in log-linear buckets: 16 per power of two,
/// so a bucket spans at most 1/16 of its values (percentiles within
/// ~6 %). The index is a shift and a mask of the value, so a BPF
/// program can compute it too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogHistogram {
    /// Bucket index -> values.
    pub buckets: BTreeMap<u16, u64>,
    /// Values recorded.
    pub count: u64,
    /// Their sum, nanoseconds (saturating).
    pub sum_ns: u64,
}

impl LogHistogram {
    /// The bucket of `ns`: exact below 16 ns, then 16 per octave
    /// (`tcptrace_common::log_bucket`, which the kernel programs use).
    pub fn bucket(ns: u64) -> u16 {
        tcptrace_common::log_bucket(ns)
    }

    /// The smallest value of bucket `b`.
    pub fn lower_bound(b: u16) -> u64 {
        tcptrace_common::log_bucket_lower_bound(b)
    }

    /// A value that stands for bucket `b`: its middle.
    pub fn middle(b: u16) -> u64 {
        let lo = Self::lower_bound(b);
        let hi = Self::lower_bound(b.saturating_add(1)).max(lo + 1);
        lo + (hi - 1 - lo) / 2
    }

    /// Records `n` values of bucket `b` (the kernel counted them; their
    /// sum is taken at the bucket's middle).
    pub fn record_bucket(&mut self, b: u16, n: u64) {
        *self.buckets.entry(b).or_default() += n;
        self.count += n;
        self.sum_ns = self
            .sum_ns
            .saturating_add(Self::middle(b).saturating_mul(n));
    }

    /// Records one value.
    pub fn record(&mut self, ns: u64) {
        *self.buckets.entry(Self::bucket(ns)).or_default() += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LogHistogram) {
        for (b, n) in &other.buckets {
            *self.buckets.entry(*b).or_default() += n;
        }
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// Values per bucket of `bounds` (ascending, in ns; a value goes to
    /// the first bound at or above it), then those above the last bound.
    /// A log bucket that straddles a bound goes by its middle, so a
    /// value near a bound may land one bound off (by at most 1/32 of it).
    pub fn rebucket(&self, bounds_ns: &[u64]) -> Vec<u64> {
        let mut out = vec![0; bounds_ns.len() + 1];
        for (b, n) in &self.buckets {
            let mid = Self::middle(*b);
            let at = bounds_ns.partition_point(|bound| *bound < mid);
            out[at] += n;
        }
        out
    }
}

/// Counts and distributions of one interval, by owner and peer (port 0:
/// the clients of a local server, by address).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// (who, peer, signal) -> how many.
    pub counts: FxHashMap<(Who, SocketAddr, Signal), u64>,
    /// (who, peer, measure) -> values.
    pub histograms: FxHashMap<(Who, SocketAddr, Measure), LogHistogram>,
    /// Events that found no room (keys beyond `MAX_KEYS`) and were
    /// counted under the zero owner and an unspecified peer instead.
    pub overflowed: u64,
}

/// Keys one interval holds at most: a scan of one-off owners or peers
/// cannot grow a tally without limit (the excess is counted, not lost).
pub const MAX_KEYS: usize = 200_000;

impl Tally {
    /// Counts `n` more of `signal` for `who` and `peer`.
    pub fn count(&mut self, who: Who, peer: SocketAddr, signal: Signal, n: u64) {
        let key =
            if self.counts.len() >= MAX_KEYS && !self.counts.contains_key(&(who, peer, signal)) {
                self.overflowed += n;
                (Who::of_nobody(), unspecified(), signal)
            } else {
                (who, peer, signal)
            };
        *self.counts.entry(key).or_default() += n;
    }

    /// Records a value of `measure` for `who` and `peer`.
    pub fn record(&mut self, who: Who, peer: SocketAddr, measure: Measure, ns: u64) {
        let key = if self.histograms.len() >= MAX_KEYS
            && !self.histograms.contains_key(&(who, peer, measure))
        {
            (Who::of_nobody(), unspecified(), measure)
        } else {
            (who, peer, measure)
        };
        self.histograms.entry(key).or_default().record(ns);
    }

    /// Records `n` values of `measure` in log bucket `b` (counted in the
    /// kernel) for `who` and `peer`.
    pub fn record_bucket(&mut self, who: Who, peer: SocketAddr, measure: Measure, b: u16, n: u64) {
        let key = if self.histograms.len() >= MAX_KEYS
            && !self.histograms.contains_key(&(who, peer, measure))
        {
            (Who::of_nobody(), unspecified(), measure)
        } else {
            (who, peer, measure)
        };
        self.histograms.entry(key).or_default().record_bucket(b, n);
    }

    /// Everything counted, all owners and peers.
    pub fn total(&self, matches: impl Fn(&Signal) -> bool) -> u64 {
        self.counts
            .iter()
            .filter(|((_, _, s), _)| matches(s))
            .map(|(_, n)| n)
            .sum()
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.histograms.is_empty()
    }
}

impl Who {
    fn of_nobody() -> Who {
        Who {
            pid: 0,
            comm: Comm::default(),
            cgroup_id: 0,
        }
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// Where the exporter's counts come from (see the module's doc).
pub trait TallySource {
    /// Takes one event the session handed out, filed under `peer`
    /// (`Aggregate::peer_of`). A source that counts in the kernel skips
    /// what it counted there.
    fn add(&mut self, ev: &TcpEvent, peer: SocketAddr);
    /// Takes the successful opens the kernel counted instead of sending
    /// their events (`Session::take_opens`).
    fn add_opens(&mut self, opens: &[OpenCount]);
    /// What was counted since the last call; starts the next interval.
    fn take(&mut self) -> Tally;
}

/// A `TallySource` that counts the events themselves.
#[derive(Debug, Default)]
pub struct EventTally {
    tally: Tally,
    /// Errors sockets reported, for a failed connect that comes after
    /// its error (older kernels report first).
    recent_errors: VecDeque<RecentError>,
    /// Failed connects waiting for their error (newer kernels report it
    /// right after the CLOSE, in `tcp_done_with_error`).
    pending: VecDeque<PendingFailure>,
}

/// A socket error no failed connect has taken yet.
#[derive(Debug, Clone, Copy)]
struct RecentError {
    sock: u64,
    errno: i32,
    at_ns: u64,
}

/// A failed connect whose error may still come.
#[derive(Debug, Clone, Copy)]
struct PendingFailure {
    sock: u64,
    who: Who,
    peer: SocketAddr,
    at_ns: u64,
}

/// Socket errors and failed connects remembered to pair them: both come
/// from one kernel call, back to back.
const PAIRING: usize = 4096;
/// A failed connect with no error after this long had none (the
/// application closed the socket itself).
const PAIRING_NS: u64 = 50_000_000;
/// An error reported before its failed connect comes from the same kernel
/// call, microseconds earlier. An older error on the same socket address
/// belongs to another connection whose memory the kernel reused (a
/// server's ECONNRESET, then a client's refused connect), not to this one.
const ERROR_FIRST_NS: u64 = 1_000_000;

impl EventTally {
    fn failed(&mut self, failure: PendingFailure, errno: i32) {
        let PendingFailure { who, peer, .. } = failure;
        self.tally
            .count(who, peer, Signal::ConnectFailed { errno }, 1);
    }

    /// Counts the failed connects that waited long enough for an error
    /// (all of them when `now_ns` is `u64::MAX`).
    fn settle(&mut self, now_ns: u64) {
        while let Some(oldest) = self.pending.front().copied() {
            if now_ns.saturating_sub(oldest.at_ns) < PAIRING_NS && self.pending.len() < PAIRING {
                break;
            }
            self.pending.pop_front();
            self.failed(oldest, 0);
        }
    }
}

impl TallySource for EventTally {
    fn add(&mut self, ev: &TcpEvent, peer: SocketAddr) {
        let who = Who::of(ev);
        match ev.kind {
            EventKind::Connect => {
                self.tally
                    .count(who, peer, Signal::Opened { passive: false }, 1);
                if let Some(ns) = ev.connect_ns.filter(|ns| *ns > 0) {
                    self.tally.record(who, peer, Measure::ConnectLatency, ns);
                }
            }
            EventKind::State => {
                if let Some((old, new)) = ev.transition
                    && i32::from(old) == tcp_state::SYN_RECV
                    && i32::from(new) == tcp_state::ESTABLISHED
                {
                    self.tally
                        .count(who, peer, Signal::Opened { passive: true }, 1);
                }
            }
            EventKind::ConnectFailed => {
                let failure = PendingFailure {
                    sock: ev.sock,
                    who,
                    peer,
                    at_ns: ev.mono_ns,
                };
                let earlier = self.recent_errors.iter().rposition(|e| {
                    e.sock == ev.sock && ev.mono_ns.saturating_sub(e.at_ns) <= ERROR_FIRST_NS
                });
                match earlier.and_then(|at| self.recent_errors.remove(at)) {
                    Some(error) => self.failed(failure, error.errno),
                    None => {
                        self.pending.push_back(failure);
                        self.settle(ev.mono_ns);
                    }
                }
            }
            EventKind::RstSent => {
                let signal = Signal::RstSent {
                    reason: ev.rst_reason,
                    state: ev.state,
                };
                self.tally.count(who, peer, signal, 1);
                if let Some(ns) = ev.idle_ns() {
                    self.tally
                        .record(who, peer, Measure::IdleBeforeReset { sent: true }, ns);
                }
            }
            EventKind::RstReceived => {
                self.tally
                    .count(who, peer, Signal::RstReceived { state: ev.state }, 1);
                if let Some(ns) = ev.idle_ns() {
                    self.tally
                        .record(who, peer, Measure::IdleBeforeReset { sent: false }, ns);
                }
            }
            EventKind::Retransmit => {
                let state = ev.state.unwrap_or(0);
                let signal = if i32::from(state) == tcp_state::SYN_SENT {
                    Signal::SynRetransmit
                } else {
                    Signal::Retransmit { state }
                };
                self.tally.count(who, peer, signal, 1);
            }
            EventKind::SynAckRetransmit => self.tally.count(who, peer, Signal::SynAckRetransmit, 1),
            EventKind::Drop => {
                let dropped = ev.dropped();
                let signal = Signal::Drop {
                    reason: dropped.and_then(|d| d.reason),
                    incoming: dropped.is_some_and(|d| d.incoming),
                };
                self.tally.count(who, peer, signal, 1);
            }
            EventKind::SocketError => {
                let errno = ev.socket_errno().unwrap_or(0);
                let waiting = self.pending.iter().position(|p| p.sock == ev.sock);
                match waiting.and_then(|at| self.pending.remove(at)) {
                    // The error of a failed connect: both under the
                    // connect's peer (the closed socket no longer has it).
                    Some(failure) => {
                        self.failed(failure, errno);
                        self.tally.count(
                            failure.who,
                            failure.peer,
                            Signal::SocketError { errno },
                            1,
                        );
                    }
                    None => {
                        self.tally
                            .count(who, peer, Signal::SocketError { errno }, 1);
                        if self.recent_errors.len() >= PAIRING {
                            self.recent_errors.pop_front();
                        }
                        self.recent_errors.push_back(RecentError {
                            sock: ev.sock,
                            errno,
                            at_ns: ev.mono_ns,
                        });
                    }
                }
            }
            EventKind::Reuse => {}
        }
    }

    fn add_opens(&mut self, opens: &[OpenCount]) {
        for open in opens {
            let who = open.owner.as_ref().map_or_else(Who::of_nobody, |o| Who {
                pid: o.pid,
                comm: o.comm,
                cgroup_id: o.cgroup_id,
            });
            let signal = Signal::Opened {
                passive: open.passive,
            };
            self.tally.count(who, open.peer, signal, open.n);
            if let Some(b) = open.latency_bucket {
                self.tally
                    .record_bucket(who, open.peer, Measure::ConnectLatency, b, open.n);
            }
        }
    }

    fn take(&mut self) -> Tally {
        self.settle(crate::kernel::clock::monotonic_ns());
        std::mem::take(&mut self.tally)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::{Aggregate, testing::*},
        event::EventKind as K,
    };

    #[test]
    fn log_buckets_are_contiguous_and_narrow() {
        let mut last = 0;
        for ns in [
            0u64,
            1,
            15,
            16,
            17,
            31,
            32,
            33,
            1000,
            123_456_789,
            u64::MAX / 3,
        ] {
            let b = LogHistogram::bucket(ns);
            assert!(b >= last, "{ns}");
            last = b;
            let (lo, hi) = (
                LogHistogram::lower_bound(b),
                LogHistogram::lower_bound(b + 1),
            );
            assert!(lo <= ns && ns < hi, "{ns} in [{lo}, {hi})");
            assert!(
                (hi - lo) as f64 <= (lo as f64 / 16.0).max(1.0) + 1.0,
                "{ns}: {lo}..{hi}"
            );
        }
        for b in 0..900u16 {
            assert_eq!(
                LogHistogram::bucket(LogHistogram::lower_bound(b)),
                b,
                "bucket {b} starts at its lower bound"
            );
        }
    }

    #[test]
    fn rebucketing_keeps_every_value() {
        let mut h = LogHistogram::default();
        for ms in [1u64, 2, 3, 50, 60, 900, 1000, 1100, 60_000] {
            h.record(ms * 1_000_000);
        }
        let bounds: Vec<u64> = [0.001, 0.01, 0.1, 1.0, 10.0]
            .iter()
            .map(|s| (s * 1e9) as u64)
            .collect();
        let per = h.rebucket(&bounds);
        assert_eq!(per.iter().sum::<u64>(), 9);
        assert_eq!(per, vec![1, 2, 2, 2, 1, 1]);
        assert_eq!(h.sum_ns, 63_116 * 1_000_000);
        let mut twice = h.clone();
        twice.merge(&h);
        assert_eq!(twice.count, 18);
    }

    /// What each event kind counts, with the peer the aggregate files it
    /// under and the errno of a failed connect.
    #[test]
    fn events_become_counts() {
        let agg = Aggregate::new(names());
        let mut source = EventTally::default();
        let events = [
            ev(K::Connect, 1)
                .sock(1)
                .owner(7, "curl")
                .remote("10.0.0.9:443")
                .connect_ms(2.0)
                .build(),
            // Older kernels report the error first, newer ones right after
            // the CLOSE, from a socket that lost its remote port.
            ev(K::SocketError, 2)
                .sock(2)
                .owner(7, "curl")
                .remote("10.0.0.9:444")
                .socket_errno(111)
                .build(),
            ev(K::ConnectFailed, 2)
                .sock(2)
                .owner(7, "curl")
                .remote("10.0.0.9:444")
                .build(),
            ev(K::ConnectFailed, 2)
                .sock(12)
                .owner(7, "curl")
                .remote("10.0.0.9:444")
                .build(),
            ev(K::SocketError, 2)
                .sock(12)
                .owner(7, "curl")
                .remote("10.0.0.9:0")
                .socket_errno(110)
                .build(),
            ev(K::ConnectFailed, 3)
                .sock(3)
                .owner(7, "curl")
                .remote("10.0.0.9:444")
                .build(),
            ev(K::RstReceived, 4)
                .sock(1)
                .owner(7, "curl")
                .remote("10.0.0.9:443")
                .state("ESTABLISHED")
                .idle_ms(5000, 4000)
                .build(),
            ev(K::RstSent, 5)
                .sock(4)
                .owner(8, "nginx")
                .local("10.0.0.1:80")
                .remote("10.0.0.2:50000")
                .reason("TCP_ABORT_ON_DATA")
                .state("CLOSE")
                .build(),
            ev(K::Retransmit, 6)
                .sock(5)
                .owner(7, "curl")
                .remote("10.0.0.9:443")
                .state("SYN_SENT")
                .build(),
            ev(K::Retransmit, 7)
                .sock(1)
                .owner(7, "curl")
                .remote("10.0.0.9:443")
                .state("ESTABLISHED")
                .build(),
            ev(K::State, 8)
                .sock(6)
                .owner(8, "nginx")
                .local("10.0.0.1:80")
                .remote("10.0.0.3:50001")
                .transition("SYN_RECV", "ESTABLISHED")
                .build(),
            ev(K::Reuse, 9)
                .sock(1)
                .owner(7, "curl")
                .remote("10.0.0.9:443")
                .build(),
        ];
        for e in &events {
            source.add(e, agg.peer_of(e));
        }
        let tally = source.take();
        assert!(source.take().is_empty(), "take starts a new interval");
        let curl = |peer: &str, signal| {
            tally
                .counts
                .iter()
                .find(|((w, p, s), _)| {
                    w.comm == "curl" && *p == peer.parse().unwrap() && *s == signal
                })
                .map_or(0, |(_, n)| *n)
        };
        assert_eq!(curl("10.0.0.9:443", Signal::Opened { passive: false }), 1);
        assert_eq!(
            curl("10.0.0.9:444", Signal::ConnectFailed { errno: 111 }),
            1
        );
        assert_eq!(
            curl("10.0.0.9:444", Signal::ConnectFailed { errno: 110 }),
            1
        );
        assert_eq!(curl("10.0.0.9:444", Signal::SocketError { errno: 110 }), 1);
        assert_eq!(
            curl("10.0.0.9:444", Signal::ConnectFailed { errno: 0 }),
            1,
            "no error: none"
        );
        assert_eq!(
            curl("10.0.0.9:443", Signal::RstReceived { state: Some(1) }),
            1
        );
        assert_eq!(curl("10.0.0.9:443", Signal::SynRetransmit), 1);
        assert_eq!(curl("10.0.0.9:443", Signal::Retransmit { state: 1 }), 1);
        // The server side: clients by address (port 0).
        let nginx: Vec<_> = tally
            .counts
            .keys()
            .filter(|(w, _, _)| w.comm == "nginx")
            .collect();
        assert!(nginx.iter().all(|(_, p, _)| p.port() == 0), "{nginx:?}");
        assert!(
            nginx
                .iter()
                .any(|(_, _, s)| *s == Signal::Opened { passive: true })
        );
        assert_eq!(
            tally.total(|s| matches!(s, Signal::RstSent { .. } | Signal::RstReceived { .. })),
            2
        );
        let idle = tally
            .histograms
            .iter()
            .find(|((_, _, m), _)| *m == Measure::IdleBeforeReset { sent: false })
            .unwrap()
            .1;
        assert_eq!(idle.count, 1);
        assert_eq!(
            idle.sum_ns, 4_000_000_000,
            "the smaller of the two idle times"
        );
        assert_eq!(
            tally.counts.values().sum::<u64>(),
            11,
            "a reuse counts nothing"
        );
    }

    /// The kernel reuses a closed socket's memory at once: a server
    /// connection reset (ECONNRESET) and, 200 ms later, a client's refused
    /// connect on the same address are two sockets; the refused connect is
    /// ECONNREFUSED, not the older error.
    #[test]
    fn a_failed_connect_takes_no_older_error_of_a_reused_socket_address() {
        let agg = Aggregate::new(names());
        let mut source = EventTally::default();
        let events = [
            ev(K::SocketError, 10)
                .sock(40)
                .owner(8, "server")
                .local("127.0.0.1:18080")
                .remote("127.0.0.1:50000")
                .socket_errno(104)
                .build(),
            ev(K::ConnectFailed, 200)
                .sock(40)
                .owner(7, "client")
                .remote("127.0.0.1:18099")
                .build(),
            ev(K::SocketError, 200)
                .sock(40)
                .owner(7, "client")
                .remote("127.0.0.1:18099")
                .socket_errno(111)
                .build(),
        ];
        for e in &events {
            source.add(e, agg.peer_of(e));
        }
        let tally = source.take();
        let client = |signal| {
            tally
                .counts
                .iter()
                .filter(|((w, _, s), _)| w.comm == "client" && *s == signal)
                .map(|(_, n)| *n)
                .sum::<u64>()
        };
        assert_eq!(client(Signal::ConnectFailed { errno: 111 }), 1);
        assert_eq!(client(Signal::ConnectFailed { errno: 104 }), 0);
        assert_eq!(client(Signal::SocketError { errno: 111 }), 1);
    }

    /// Opens counted in the kernel become the counts and latencies their
    /// events would have made.
    #[test]
    fn kernel_counted_opens_become_counts() {
        let owner = ev(K::Connect, 1).owner(7, "curl").build().owner;
        let b = LogHistogram::bucket(2_000_000);
        let opens = [
            OpenCount {
                owner: owner.clone(),
                netns: None,
                peer: "10.0.0.9:443".parse().unwrap(),
                passive: false,
                latency_bucket: Some(b),
                n: 5,
            },
            OpenCount {
                owner,
                netns: None,
                peer: "10.0.0.3:0".parse().unwrap(),
                passive: true,
                latency_bucket: None,
                n: 2,
            },
        ];
        let mut source = EventTally::default();
        source.add_opens(&opens);
        let tally = source.take();
        assert_eq!(tally.total(|s| *s == Signal::Opened { passive: false }), 5);
        assert_eq!(tally.total(|s| *s == Signal::Opened { passive: true }), 2);
        let latency = tally
            .histograms
            .iter()
            .find(|((_, _, m), _)| *m == Measure::ConnectLatency)
            .unwrap()
            .1;
        assert_eq!((latency.count, latency.buckets[&b]), (5, 5));
        let mean = latency.sum_ns / 5;
        assert!(mean.abs_diff(2_000_000) < 2_000_000 / 16, "{mean}");
    }

    #[test]
    fn a_flood_of_keys_is_bounded_and_counted() {
        let mut tally = Tally::default();
        let who = Who::of(&ev(K::Drop, 1).build());
        for port in 0..(MAX_KEYS as u32 + 10) {
            let peer =
                SocketAddr::from(([10, 0, (port >> 16) as u8, (port >> 8) as u8], port as u16));
            tally.count(who, peer, Signal::SynRetransmit, 1);
        }
        assert!(tally.counts.len() <= MAX_KEYS + 1);
        assert_eq!(tally.total(|_| true), MAX_KEYS as u64 + 10);
        assert!(tally.overflowed >= 9);
    }
}
