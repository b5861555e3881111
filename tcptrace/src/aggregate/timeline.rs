//! Incidents over time: counts per second by kind for the whole run, and
//! when each process's and each peer's incidents of each kind began and
//! ended (the moments a finding refers to).
//!
//! Memory is bounded whatever the length of the run: at most
//! `MAX_BUCKETS` buckets are kept; when a run outgrows them, neighbouring
//! buckets are merged and the bucket width doubles (1 s, 2 s, 4 s, ...: a
//! day fits in 64 s buckets). Moments are kept for at most
//! `MAX_PROCESSES` processes and `MAX_PEERS` peers, like the aggregate.

use std::net::SocketAddr;

use serde::Serialize;

use super::{MAX_PEERS, MAX_PROCESSES, TopN, Weight};
use crate::event::EventKind;

/// Buckets kept (30 minutes of 1 s buckets) before they are merged.
pub const MAX_BUCKETS: usize = 1800;
/// Width of a bucket until the run outgrows `MAX_BUCKETS`.
pub const SECOND_NS: u64 = 1_000_000_000;

/// The kinds of incident the timeline counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Series {
    /// RSTs this host sent.
    RstSent,
    /// RSTs this host received.
    RstReceived,
    /// Retransmits: data, SYN and SYN-ACK.
    Retransmits,
    /// Connects that failed.
    ConnectFailed,
    /// TCP packets the kernel dropped.
    Drops,
    /// Errors handed to applications.
    SocketErrors,
}

/// Number of series.
pub const SERIES: usize = 6;

impl Series {
    /// Every series, in the order reports show them.
    pub const ALL: [Series; SERIES] = [
        Series::RstSent,
        Series::RstReceived,
        Series::Retransmits,
        Series::ConnectFailed,
        Series::Drops,
        Series::SocketErrors,
    ];

    /// The series an event counts in; `None` for kinds that are no
    /// incident (connects, state changes, reuses).
    pub fn of(kind: EventKind) -> Option<Series> {
        match kind {
            EventKind::RstSent => Some(Series::RstSent),
            EventKind::RstReceived => Some(Series::RstReceived),
            EventKind::Retransmit | EventKind::SynAckRetransmit => Some(Series::Retransmits),
            EventKind::ConnectFailed => Some(Series::ConnectFailed),
            EventKind::Drop => Some(Series::Drops),
            EventKind::SocketError => Some(Series::SocketErrors),
            EventKind::State | EventKind::Connect | EventKind::Reuse => None,
        }
    }

    /// The JSON key (`rst_sent`, ...).
    pub fn key(self) -> &'static str {
        match self {
            Series::RstSent => "rst_sent",
            Series::RstReceived => "rst_received",
            Series::Retransmits => "retransmits",
            Series::ConnectFailed => "connect_failed",
            Series::Drops => "drops",
            Series::SocketErrors => "socket_errors",
        }
    }

    /// The series of a JSON key.
    pub fn from_key(key: &str) -> Option<Series> {
        Series::ALL.into_iter().find(|s| s.key() == key)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// First and last event of each series, in CLOCK_MONOTONIC nanoseconds
/// (0: none yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moments {
    first_ns: [u64; SERIES],
    last_ns: [u64; SERIES],
    events: u64,
}

impl Moments {
    fn note(&mut self, series: Series, mono_ns: u64) {
        // 0 means "never": an event at exactly 0 ns counts as 1 ns.
        let ns = mono_ns.max(1);
        let i = series.index();
        if self.first_ns[i] == 0 || ns < self.first_ns[i] {
            self.first_ns[i] = ns;
        }
        self.last_ns[i] = self.last_ns[i].max(ns);
        self.events += 1;
    }

    /// The first and the last event of any of `series`; `None` when there
    /// was none.
    pub fn span(&self, series: &[Series]) -> Option<(u64, u64)> {
        let firsts = series
            .iter()
            .map(|s| self.first_ns[s.index()])
            .filter(|ns| *ns != 0);
        let first = firsts.min()?;
        let last = series.iter().map(|s| self.last_ns[s.index()]).max()?;
        Some((first, last))
    }

    /// Incidents noted.
    pub fn events(&self) -> u64 {
        self.events
    }
}

impl Weight for Moments {
    fn weight(&self) -> u64 {
        self.events
    }
}

/// Incidents per bucket of time, by series, and their moments.
#[derive(Debug, Clone)]
pub struct Timeline {
    origin_ns: Option<u64>,
    bucket_ns: u64,
    buckets: Vec<[u64; SERIES]>,
    total: Moments,
    processes: TopN<u32, Moments>,
    peers: TopN<SocketAddr, Moments>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            origin_ns: None,
            bucket_ns: SECOND_NS,
            buckets: Vec::new(),
            total: Moments::default(),
            processes: TopN::new(MAX_PROCESSES),
            peers: TopN::new(MAX_PEERS),
        }
    }
}

impl Timeline {
    /// Starts the first bucket at `mono_ns` (CLOCK_MONOTONIC ns, usually
    /// when tracing started). Without it, the first event starts it.
    /// Ignored once an event was counted.
    pub fn set_origin(&mut self, mono_ns: u64) {
        if self.buckets.is_empty() {
            self.origin_ns = Some(mono_ns);
        }
    }

    /// Counts an event of `kind` at `mono_ns` for process `pid` (0: no
    /// owner) and remote endpoint `peer`; events that are no incident are
    /// not counted.
    pub fn record(&mut self, kind: EventKind, mono_ns: u64, pid: u32, peer: SocketAddr) {
        let Some(series) = Series::of(kind) else {
            return;
        };
        let origin = *self.origin_ns.get_or_insert(mono_ns);
        // An event stamped a moment before the origin (read from the ring
        // after it was set) belongs to the first bucket.
        let offset = mono_ns.saturating_sub(origin);
        while offset / self.bucket_ns >= MAX_BUCKETS as u64 {
            self.coarsen();
        }
        let index = (offset / self.bucket_ns) as usize;
        if self.buckets.len() <= index {
            self.buckets.resize(index + 1, [0; SERIES]);
        }
        self.buckets[index][series.index()] += 1;
        self.total.note(series, mono_ns);
        self.processes
            .entry(&pid, Moments::default)
            .note(series, mono_ns);
        self.peers
            .entry(&peer, Moments::default)
            .note(series, mono_ns);
    }

    /// Halves the resolution: buckets 2k and 2k+1 become bucket k.
    fn coarsen(&mut self) {
        let merged = self
            .buckets
            .chunks(2)
            .map(|pair| {
                let mut sum = pair[0];
                if let Some(second) = pair.get(1) {
                    for (s, v) in sum.iter_mut().zip(second) {
                        *s += v;
                    }
                }
                sum
            })
            .collect();
        self.buckets = merged;
        self.bucket_ns *= 2;
    }

    /// Width of a bucket in nanoseconds (1 s, or a power-of-two multiple
    /// of it on long runs).
    pub fn bucket_ns(&self) -> u64 {
        self.bucket_ns
    }

    /// Where the first bucket starts (CLOCK_MONOTONIC ns), once known.
    pub fn origin_ns(&self) -> Option<u64> {
        self.origin_ns
    }

    /// Counts of `series`, one per bucket from the origin to the last
    /// bucket with an event.
    pub fn counts(&self, series: Series) -> Vec<u64> {
        self.buckets.iter().map(|b| b[series.index()]).collect()
    }

    /// Seconds from the origin to `mono_ns`.
    pub fn seconds_at(&self, mono_ns: u64) -> f64 {
        mono_ns.saturating_sub(self.origin_ns.unwrap_or(mono_ns)) as f64 / 1e9
    }

    /// Moments of every incident.
    pub fn total(&self) -> &Moments {
        &self.total
    }

    /// Moments of process `pid`'s incidents, if it is among those kept.
    pub fn process(&self, pid: u32) -> Option<&Moments> {
        self.processes.get(&pid)
    }

    /// Moments of the incidents with `peer`, if it is among those kept.
    pub fn peer(&self, peer: &SocketAddr) -> Option<&Moments> {
        self.peers.get(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = SECOND_NS;

    fn peer() -> SocketAddr {
        "198.18.0.2:80".parse().unwrap()
    }

    #[test]
    fn counts_per_second_by_series() {
        let mut t = Timeline::default();
        t.set_origin(100 * S);
        t.record(EventKind::RstReceived, 100 * S + 10, 7, peer());
        t.record(EventKind::RstReceived, 100 * S + 20, 7, peer());
        t.record(EventKind::Retransmit, 102 * S + 5, 8, peer());
        t.record(EventKind::SynAckRetransmit, 102 * S + 6, 8, peer());
        t.record(EventKind::Connect, 103 * S, 8, peer());
        t.record(EventKind::State, 104 * S, 8, peer());
        assert_eq!(t.counts(Series::RstReceived), vec![2, 0, 0]);
        assert_eq!(t.counts(Series::Retransmits), vec![0, 0, 2]);
        assert_eq!(t.counts(Series::Drops), vec![0, 0, 0]);
        assert_eq!(t.bucket_ns(), S);
        let m = t.process(7).unwrap();
        assert_eq!(
            m.span(&[Series::RstReceived]),
            Some((100 * S + 10, 100 * S + 20))
        );
        assert_eq!(m.span(&[Series::Drops]), None);
        assert_eq!(
            t.peer(&peer()).unwrap().span(&Series::ALL),
            Some((100 * S + 10, 102 * S + 6))
        );
        assert_eq!(t.seconds_at(102 * S + 6), 2.000_000_006);
    }

    #[test]
    fn a_day_long_run_stays_bounded_and_keeps_every_count() {
        let mut t = Timeline::default();
        t.set_origin(0);
        let mut recorded = 0;
        for second in (0..86_400u64).step_by(7) {
            t.record(EventKind::Drop, second * S, 1, peer());
            recorded += 1;
        }
        let counts = t.counts(Series::Drops);
        assert!(counts.len() <= MAX_BUCKETS, "{}", counts.len());
        assert_eq!(t.bucket_ns(), 64 * S);
        assert_eq!(counts.iter().sum::<u64>(), recorded);
        // The origin does not move after the first event.
        t.set_origin(5 * S);
        assert_eq!(t.origin_ns(), Some(0));
    }

    #[test]
    fn without_an_origin_the_first_event_starts_it() {
        let mut t = Timeline::default();
        t.record(EventKind::ConnectFailed, 42 * S, 0, peer());
        assert_eq!(t.origin_ns(), Some(42 * S));
        assert_eq!(t.counts(Series::ConnectFailed), vec![1]);
        assert_eq!(
            Series::from_key("connect_failed"),
            Some(Series::ConnectFailed)
        );
    }
}
