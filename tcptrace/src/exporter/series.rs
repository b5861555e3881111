//! The exporter's counters and histograms, cumulative since it started,
//! with bounded cardinality.
//!
//! Each interval's `Tally` is folded in: its owners are named
//! (`Workload`: process, and on a Kubernetes node namespace, pod and
//! container), the heaviest `top_processes` workloads and `top_peers`
//! peers of that interval keep their own labels, the rest are counted
//! under `other`. A series that has not moved for `ttl` is dropped (it
//! comes back from zero if it moves again: `rate()` and `increase()`
//! handle both), and no more than `max_series` exist: beyond that, new
//! ones are counted under `other`. Totals are exact whatever the
//! folding: every count lands in exactly one series.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::{
    kernel::{errno, names::Names},
    tally::{LogHistogram, Measure, Signal, Tally, Who},
};

/// The label value for everything outside the top N.
pub const OTHER: &str = "other";

/// Whose a series is: labels from the socket's owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    /// The command name (empty: the kernel could not attribute the socket).
    pub process: String,
    /// The pod's namespace (empty outside Kubernetes or when unknown).
    pub namespace: String,
    /// The pod (its name, or UID when the log layout does not name it).
    pub pod: String,
    /// The container's name or short ID (also outside Kubernetes).
    pub container: String,
}

impl Workload {
    /// Everything outside the top N processes.
    pub fn other() -> Workload {
        Workload {
            process: OTHER.into(),
            ..Workload::default()
        }
    }

    /// The labels, in exposition order.
    pub fn labels(&self) -> [(&'static str, String); 4] {
        [
            ("process", self.process.clone()),
            ("namespace", self.namespace.clone()),
            ("pod", self.pod.clone()),
            ("container", self.container.clone()),
        ]
    }
}

/// The metric families counted from a tally (docs/exporter.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `tcptrace_resets_total{direction, reason, state}`.
    Resets,
    /// `tcptrace_retransmits_total{state}`: data segments.
    Retransmits,
    /// `tcptrace_syn_retransmits_total{segment}`: SYN and SYN-ACK.
    SynRetransmits,
    /// `tcptrace_connect_failures_total{errno}`.
    ConnectFailures,
    /// `tcptrace_connections_opened_total{direction}`.
    ConnectionsOpened,
    /// `tcptrace_drops_total{reason, direction}`.
    Drops,
    /// `tcptrace_socket_errors_total{errno}`.
    SocketErrors,
}

impl Family {
    /// Every family, in exposition order.
    pub const ALL: [Family; 7] = [
        Family::Resets,
        Family::Retransmits,
        Family::SynRetransmits,
        Family::ConnectFailures,
        Family::ConnectionsOpened,
        Family::Drops,
        Family::SocketErrors,
    ];

    /// The metric name without `_total`, and its help text.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Family::Resets => (
                "tcptrace_resets",
                "TCP RSTs sent or received: direction, the kernel's reason (sent, Linux >= 6.10) and the socket's state",
            ),
            Family::Retransmits => (
                "tcptrace_retransmits",
                "TCP data segments retransmitted, by the socket's state (SYNs in tcptrace_syn_retransmits)",
            ),
            Family::SynRetransmits => (
                "tcptrace_syn_retransmits",
                "SYNs (connects waiting for an answer) and SYN-ACKs (handshakes this host answered) retransmitted",
            ),
            Family::ConnectFailures => (
                "tcptrace_connect_failures",
                "connects that failed (SYN_SENT -> CLOSE), by the error the socket reported (none: the application gave up first)",
            ),
            Family::ConnectionsOpened => (
                "tcptrace_connections_opened",
                "connections that reached ESTABLISHED: active (connect) or passive (accepted)",
            ),
            Family::Drops => (
                "tcptrace_drops",
                "TCP packets the kernel dropped, by drop reason and direction",
            ),
            Family::SocketErrors => (
                "tcptrace_socket_errors",
                "errors the kernel handed applications on TCP sockets, by errno",
            ),
        }
    }

    /// Counted as trouble (ranks owners and peers above mere activity).
    fn incident(self) -> bool {
        self != Family::ConnectionsOpened
    }
}

/// A family's own labels (`direction`, `reason`, ...), named.
pub type Detail = Vec<(&'static str, String)>;

/// The family and own labels of a signal, named with this kernel's names.
pub fn describe_signal(signal: &Signal, names: &Names) -> (Family, Detail) {
    let state = |s: Option<u8>| s.map_or_else(String::new, |s| names.state(s).to_string());
    let errno_label = |e: i32| {
        if e == 0 {
            "none".to_string()
        } else {
            errno::label(e)
        }
    };
    match *signal {
        Signal::RstSent { reason, state: st } => (
            Family::Resets,
            vec![
                ("direction", "sent".into()),
                (
                    "reason",
                    reason.map_or_else(|| "UNKNOWN".into(), |r| names.reason(r).into_owned()),
                ),
                ("state", state(st)),
            ],
        ),
        Signal::RstReceived { state: st } => (
            Family::Resets,
            vec![
                ("direction", "received".into()),
                ("reason", String::new()),
                ("state", state(st)),
            ],
        ),
        Signal::Retransmit { state: st } => (Family::Retransmits, vec![("state", state(Some(st)))]),
        Signal::SynRetransmit => (Family::SynRetransmits, vec![("segment", "SYN".into())]),
        Signal::SynAckRetransmit => (Family::SynRetransmits, vec![("segment", "SYN-ACK".into())]),
        Signal::ConnectFailed { errno } => {
            (Family::ConnectFailures, vec![("errno", errno_label(errno))])
        }
        Signal::Opened { passive } => (
            Family::ConnectionsOpened,
            vec![(
                "direction",
                if passive { "passive" } else { "active" }.into(),
            )],
        ),
        Signal::Drop { reason, incoming } => (
            Family::Drops,
            vec![
                (
                    "reason",
                    reason.map_or_else(|| "UNKNOWN".into(), |r| names.drop_reason(r).into_owned()),
                ),
                ("direction", if incoming { "in" } else { "out" }.into()),
            ],
        ),
        Signal::SocketError { errno } => {
            (Family::SocketErrors, vec![("errno", errno_label(errno))])
        }
    }
}

/// The histogram families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HistFamily {
    /// `tcptrace_connect_latency_seconds`.
    ConnectLatency,
    /// `tcptrace_idle_before_reset_seconds{direction}`.
    IdleBeforeReset,
}

impl HistFamily {
    /// Every histogram family, in exposition order.
    pub const ALL: [HistFamily; 2] = [HistFamily::ConnectLatency, HistFamily::IdleBeforeReset];

    /// The name (without the unit), its help and its bucket bounds in seconds.
    pub fn describe(self) -> (&'static str, &'static str, &'static [f64]) {
        match self {
            HistFamily::ConnectLatency => (
                "tcptrace_connect_latency",
                "SYN_SENT -> ESTABLISHED time of successful connects",
                &[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            HistFamily::IdleBeforeReset => (
                "tcptrace_idle_before_reset",
                "how long a connection had sent and received nothing when an RST was sent or received: the figure that exposes idle timeouts",
                &[
                    0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
                    3600.0,
                ],
            ),
        }
    }

    fn of(measure: Measure) -> (HistFamily, Detail) {
        match measure {
            Measure::ConnectLatency => (HistFamily::ConnectLatency, vec![]),
            Measure::IdleBeforeReset { sent } => (
                HistFamily::IdleBeforeReset,
                vec![("direction", if sent { "sent" } else { "received" }.into())],
            ),
        }
    }
}

/// A counter series' identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key<F> {
    /// The family.
    pub family: F,
    /// Its own labels.
    pub detail: Detail,
    /// Whose.
    pub who: Workload,
    /// The remote endpoint (`other` outside the top N).
    pub peer: String,
}

impl<F> Key<F> {
    /// Every label of the series, in exposition order.
    pub fn labels(&self) -> Vec<(&'static str, String)> {
        let mut labels = self.detail.clone();
        labels.extend(self.who.labels());
        labels.push(("peer", self.peer.clone()));
        labels
    }
}

/// A histogram series: values per bucket of its family's bounds (the
/// last one above them all), their sum and count.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Values per bucket, the last above every bound.
    pub per_bucket: Vec<u64>,
    /// Sum of the values, seconds.
    pub sum_s: f64,
    /// Values.
    pub count: u64,
}

/// The bounds of a histogram family, in nanoseconds.
fn bounds_ns(family: HistFamily) -> Vec<u64> {
    family
        .describe()
        .2
        .iter()
        .map(|s| (s * 1e9).round() as u64)
        .collect()
}

/// How folding cuts cardinality.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Workloads with their own series per interval.
    pub top_processes: usize,
    /// Peers with their own series per interval.
    pub top_peers: usize,
    /// Series at most (counters and histograms together).
    pub max_series: usize,
    /// A series that has not moved for this long is dropped.
    pub ttl: Duration,
}

/// Every counter and histogram series, cumulative.
#[derive(Debug)]
pub struct Series {
    limits: Limits,
    /// Value and when it last moved.
    pub counters: BTreeMap<Key<Family>, (u64, Instant)>,
    /// Histogram and when it last moved.
    pub histograms: BTreeMap<Key<HistFamily>, (Histogram, Instant)>,
    /// Series dropped for not moving, so far.
    pub expired: u64,
    /// Counts put under `other` because `max_series` was reached, so far.
    pub capped: u64,
    /// Events the tallies had no room for (see `Tally::overflowed`).
    pub tally_overflow: u64,
}

impl Series {
    /// No series yet.
    pub fn new(limits: Limits) -> Series {
        Series {
            limits,
            counters: BTreeMap::new(),
            histograms: BTreeMap::new(),
            expired: 0,
            capped: 0,
            tally_overflow: 0,
        }
    }

    /// Series kept.
    pub fn len(&self) -> usize {
        self.counters.len() + self.histograms.len()
    }

    /// Adds one interval's tally: owners named by `name`, the top
    /// workloads and peers of the interval kept apart, the rest `other`;
    /// then drops the series that have not moved for the TTL.
    pub fn fold(&mut self, tally: &Tally, names: &Names, mut name: impl FnMut(&Who) -> Workload) {
        let now = Instant::now();
        self.tally_overflow += tally.overflowed;
        let mut workloads: HashMap<Who, Workload> = HashMap::new();
        let mut workload_of =
            |who: &Who| -> Workload { workloads.entry(*who).or_insert_with(|| name(who)).clone() };
        // Rank this interval's workloads and peers by what happened to them.
        let mut who_weight: HashMap<Workload, u64> = HashMap::new();
        let mut peer_weight: HashMap<String, u64> = HashMap::new();
        let mut counts = Vec::with_capacity(tally.counts.len());
        for ((who, peer, signal), n) in &tally.counts {
            let (family, detail) = describe_signal(signal, names);
            let weight = if family.incident() { n * 64 } else { *n };
            let workload = workload_of(who);
            let peer = peer_label(*peer);
            *who_weight.entry(workload.clone()).or_default() += weight;
            *peer_weight.entry(peer.clone()).or_default() += weight;
            counts.push((family, detail, workload, peer, *n));
        }
        // Values of distributions are activity too (a connect, a reset).
        for ((who, peer, _), values) in &tally.histograms {
            *who_weight.entry(workload_of(who)).or_default() += values.count;
            *peer_weight.entry(peer_label(*peer)).or_default() += values.count;
        }
        let top_who = top(&who_weight, self.limits.top_processes);
        let top_peer = top(&peer_weight, self.limits.top_peers);
        let fold_key = |workload: Workload, peer: String| {
            let who = if top_who.contains(&workload) {
                workload
            } else {
                Workload::other()
            };
            let peer = if top_peer.contains(&peer) {
                peer
            } else {
                OTHER.to_string()
            };
            (who, peer)
        };
        for (family, detail, workload, peer, n) in counts {
            let (who, peer) = fold_key(workload, peer);
            let key = self.capped_key(
                Key {
                    family,
                    detail,
                    who,
                    peer,
                },
                n,
            );
            let entry = self.counters.entry(key).or_insert((0, now));
            entry.0 += n;
            entry.1 = now;
        }
        for ((who, peer, measure), values) in &tally.histograms {
            let (family, detail) = HistFamily::of(*measure);
            let (who, peer) = fold_key(workload_of(who), peer_label(*peer));
            let key = Key {
                family,
                detail,
                who,
                peer,
            };
            let key = if self.histograms.contains_key(&key) || self.len() < self.limits.max_series {
                key
            } else {
                Key {
                    who: Workload::other(),
                    peer: OTHER.into(),
                    ..key
                }
            };
            let bounds = bounds_ns(family);
            let (hist, touched) = self.histograms.entry(key).or_insert_with(|| {
                (
                    Histogram {
                        per_bucket: vec![0; bounds.len() + 1],
                        sum_s: 0.0,
                        count: 0,
                    },
                    now,
                )
            });
            add_values(hist, values, &bounds);
            *touched = now;
        }
        self.expire(now);
    }

    /// The key to count under: `key`, or its `other` series once
    /// `max_series` is reached.
    fn capped_key(&mut self, key: Key<Family>, n: u64) -> Key<Family> {
        if self.counters.contains_key(&key) || self.len() < self.limits.max_series {
            return key;
        }
        self.capped += n;
        Key {
            who: Workload::other(),
            peer: OTHER.into(),
            ..key
        }
    }

    fn expire(&mut self, now: Instant) {
        let ttl = self.limits.ttl;
        let before = self.len();
        self.counters
            .retain(|_, (_, t)| now.duration_since(*t) < ttl);
        self.histograms
            .retain(|_, (_, t)| now.duration_since(*t) < ttl);
        self.expired += (before - self.len()) as u64;
    }
}

fn add_values(hist: &mut Histogram, values: &LogHistogram, bounds_ns: &[u64]) {
    for (ours, theirs) in hist.per_bucket.iter_mut().zip(values.rebucket(bounds_ns)) {
        *ours += theirs;
    }
    hist.sum_s += values.sum_ns as f64 / 1e9;
    hist.count += values.count;
}

/// The `n` heaviest keys (ties by key, so the choice is stable).
fn top<K: Clone + Ord + std::hash::Hash>(weights: &HashMap<K, u64>, n: usize) -> Vec<K> {
    let mut all: Vec<(&K, &u64)> = weights.iter().collect();
    all.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    all.into_iter().take(n).map(|(k, _)| k.clone()).collect()
}

/// `10.0.0.5:8080`, `[2001:db8::1]:443`, or the address alone for the
/// clients of a local server (port 0); `other` for the tally's overflow.
pub fn peer_label(peer: SocketAddr) -> String {
    if peer.ip().is_unspecified() && peer.port() == 0 {
        OTHER.into()
    } else if peer.port() == 0 {
        peer.ip().to_string()
    } else {
        peer.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{aggregate::testing::names, event::Comm, tally::Signal};

    fn who(pid: u32, comm: &str) -> Who {
        Who {
            pid,
            comm: Comm::from(comm),
            cgroup_id: 0,
        }
    }

    fn by_comm(who: &Who) -> Workload {
        Workload {
            process: who.comm.to_string(),
            ..Workload::default()
        }
    }

    fn limits(top: usize) -> Limits {
        Limits {
            top_processes: top,
            top_peers: top,
            max_series: 10_000,
            ttl: Duration::from_secs(300),
        }
    }

    fn rst(tally: &mut Tally, pid: u32, comm: &str, peer: &str, n: u64) {
        tally.count(
            who(pid, comm),
            peer.parse().unwrap(),
            Signal::RstReceived { state: Some(1) },
            n,
        );
    }

    fn total(series: &Series, family: Family) -> u64 {
        series
            .counters
            .iter()
            .filter(|(k, _)| k.family == family)
            .map(|(_, (v, _))| v)
            .sum()
    }

    #[test]
    fn the_top_keep_their_labels_the_rest_is_other_and_totals_stay_exact() {
        let mut series = Series::new(limits(2));
        let mut tally = Tally::default();
        rst(&mut tally, 1, "checkout", "10.0.0.5:8080", 50);
        rst(&mut tally, 2, "payments", "10.0.0.6:9090", 30);
        rst(&mut tally, 3, "cron", "10.0.0.7:22", 1);
        rst(&mut tally, 4, "backup", "10.0.0.8:873", 2);
        series.fold(&tally, &names(), by_comm);
        assert_eq!(
            total(&series, Family::Resets),
            83,
            "every count lands somewhere"
        );
        let processes: Vec<&str> = series
            .counters
            .keys()
            .map(|k| k.who.process.as_str())
            .collect();
        assert!(processes.contains(&"checkout") && processes.contains(&"payments"));
        assert!(processes.contains(&OTHER) && !processes.contains(&"cron"));
        let other = series
            .counters
            .iter()
            .find(|(k, _)| k.who.process == OTHER)
            .unwrap();
        assert_eq!((other.0.peer.as_str(), other.1.0), (OTHER, 3));
        let labels = series.counters.keys().next().unwrap().labels();
        let label_names: Vec<&str> = labels.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            label_names,
            [
                "direction",
                "reason",
                "state",
                "process",
                "namespace",
                "pod",
                "container",
                "peer"
            ]
        );

        // The next interval ranks afresh: cron is on top now.
        let mut tally = Tally::default();
        rst(&mut tally, 3, "cron", "10.0.0.7:22", 5);
        series.fold(&tally, &names(), by_comm);
        assert_eq!(total(&series, Family::Resets), 88);
        assert!(series.counters.keys().any(|k| k.who.process == "cron"));
    }

    #[test]
    fn series_are_capped_and_expire() {
        let mut series = Series::new(Limits {
            max_series: 3,
            ttl: Duration::from_millis(50),
            ..limits(100)
        });
        let mut tally = Tally::default();
        for i in 0..10u8 {
            rst(
                &mut tally,
                u32::from(i),
                &format!("p{i}"),
                &format!("10.0.0.{i}:80"),
                1,
            );
        }
        series.fold(&tally, &names(), by_comm);
        assert!(
            series.len() <= 4,
            "3 and the other series: {}",
            series.len()
        );
        assert_eq!(total(&series, Family::Resets), 10);
        assert_eq!(series.capped, 7);
        std::thread::sleep(Duration::from_millis(60));
        series.fold(&Tally::default(), &names(), by_comm);
        assert_eq!(series.len(), 0);
        assert_eq!(series.expired, 4);
    }

    #[test]
    fn histograms_fold_like_counters() {
        let mut series = Series::new(limits(10));
        let mut tally = Tally::default();
        let peer: SocketAddr = "10.0.0.5:0".parse().unwrap();
        for ms in [1000u64, 45_000, 90_000] {
            tally.record(
                who(1, "nginx"),
                peer,
                Measure::IdleBeforeReset { sent: true },
                ms * 1_000_000,
            );
        }
        series.fold(&tally, &names(), by_comm);
        let (key, (hist, _)) = series.histograms.iter().next().unwrap();
        assert_eq!(key.peer, "10.0.0.5", "clients by address");
        assert_eq!(key.detail, vec![("direction", "sent".to_string())]);
        assert_eq!(hist.count, 3);
        assert!((hist.sum_s - 136.0).abs() < 1e-9);
        let bounds = HistFamily::IdleBeforeReset.describe().2;
        let at = |s: f64| bounds.iter().position(|b| *b == s).unwrap();
        assert_eq!(hist.per_bucket[at(1.0)], 1);
        assert_eq!(hist.per_bucket[at(60.0)], 1);
        assert_eq!(hist.per_bucket[at(120.0)], 1);
    }

    #[test]
    fn signals_are_named_with_the_kernel_names() {
        let names = names();
        let (family, detail) = describe_signal(
            &Signal::RstSent {
                reason: Some(11),
                state: Some(1),
            },
            &names,
        );
        assert_eq!(family, Family::Resets);
        assert_eq!(detail[1], ("reason", "TCP_ABORT_ON_CLOSE".to_string()));
        assert_eq!(detail[2], ("state", "ESTABLISHED".to_string()));
        let (_, detail) = describe_signal(
            &Signal::ConnectFailed {
                errno: libc::ECONNREFUSED,
            },
            &names,
        );
        assert_eq!(detail, vec![("errno", "ECONNREFUSED".to_string())]);
        let (_, detail) = describe_signal(&Signal::ConnectFailed { errno: 0 }, &names);
        assert_eq!(detail, vec![("errno", "none".to_string())]);
        let (family, detail) = describe_signal(
            &Signal::Drop {
                reason: Some(12),
                incoming: true,
            },
            &names,
        );
        assert_eq!(family, Family::Drops);
        assert_eq!(detail[0].1, "NETFILTER_DROP");
        assert_eq!(
            peer_label("[2001:db8::1]:443".parse().unwrap()),
            "[2001:db8::1]:443"
        );
        assert_eq!(peer_label("0.0.0.0:0".parse().unwrap()), OTHER);
    }
}
