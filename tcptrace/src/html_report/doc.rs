//! The report as plain data: the fields of the `diagnose --json` document
//! (docs/diagnose.md) the page shows. Every field has a default, so a
//! document from an older tcptrace (or a capture replayed without some
//! figure) still renders, with that part saying it has no data; fields
//! the page does not know are ignored.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// A `diagnose --json` document.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Doc {
    /// Length of the observation, s.
    pub seconds: f64,
    /// `--netns` as given.
    pub netns: Option<String>,
    /// Events aggregated.
    pub events: u64,
    /// Events read from the ring buffer.
    pub events_received: u64,
    /// Events the kernel programs kept (received + lost).
    pub events_produced: u64,
    /// Events the ring buffer had no room for.
    pub events_lost: u64,
    /// Hook runs the kernel skipped (`recursion_misses`).
    pub missed_by_kernel: u64,
    /// `problem` or `no_problem`.
    pub verdict: String,
    /// Ranked findings.
    pub findings: Vec<Finding>,
    /// What each rule looked at.
    pub checked: Vec<String>,
    /// Kernel counter changes (non-zero), by nstat name.
    pub counters: BTreeMap<String, i64>,
    /// Sysctls at the start.
    pub sysctls: BTreeMap<String, String>,
    /// Socket tables at the start and the end.
    pub sockets_start: Option<Sockets>,
    /// The same at the end.
    pub sockets_end: Option<Sockets>,
    /// Conntrack: `{"loaded": false}` or `loaded`, `start`, `end`, `delta`.
    pub conntrack: Option<Value>,
    /// Host-wide TCP limits and usage: `start`, `end`.
    pub host_global: Value,
    /// The heaviest processes.
    pub processes: Vec<Group>,
    /// The heaviest remote endpoints.
    pub peers: Vec<Group>,
    /// Unowned RSTs with ephemeral ports, by address.
    pub scattered_resets: Vec<Scattered>,
    /// Incidents per bucket of time.
    pub timeline: Option<Timeline>,
    /// Distributions of durations, host-wide.
    pub distributions: Distributions,
    /// What this kernel could not trace.
    pub missing: Vec<String>,
    /// The `--during` load.
    pub load: Option<Load>,
    /// When tracing started (RFC 3339).
    pub started_at: Option<String>,
    /// The kernel release.
    pub kernel: Option<String>,
    /// The filters the events were taken with.
    pub filters: Value,
}

impl Doc {
    /// Whether a finding at medium or high confidence was made.
    pub fn has_problem(&self) -> bool {
        self.verdict == "problem"
    }
}

/// One finding.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Finding {
    /// `lb_idle_timeout`, ...
    pub cause: String,
    /// The cause in words.
    pub title: String,
    /// `high`, `medium` or `low`.
    pub confidence: String,
    /// Events explained.
    pub score: u64,
    /// Who, how much.
    pub summary: String,
    /// The figures, one fact each.
    pub evidence: Vec<String>,
    /// Who is hit or causing it.
    pub affected: Vec<Affected>,
    /// Exact changes.
    pub fix: Vec<String>,
    /// Key figures by name (`idle_timeout_s`, ...).
    pub figures: BTreeMap<String, f64>,
    /// First and last event it refers to.
    pub moments: Option<Moments>,
}

/// First and last event of a finding, s from the start.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct Moments {
    /// The first.
    pub first_s: f64,
    /// The last.
    pub last_s: f64,
}

/// A process in a finding.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Affected {
    /// 0: unattributed.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// `addr:port`.
    pub peer: Option<String>,
    /// Events involving it.
    pub events: u64,
    /// `client`, `closer`, ...
    pub role: String,
    /// cgroup path (and container).
    pub cgroup: Option<String>,
}

/// A process or a peer with its figures.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Group {
    /// Process rows.
    pub pid: Option<u32>,
    /// Process rows.
    pub comm: Option<String>,
    /// Peer rows: `addr:port` (port 0: many client ports).
    pub peer: Option<String>,
    /// Peer rows: the processes involved.
    pub processes: Vec<u32>,
    /// Connects that succeeded.
    pub connects: u64,
    /// Connects that failed.
    pub connect_failed: u64,
    /// Of which refused.
    pub refused: u64,
    /// RSTs sent by reason.
    pub rst_sent: BTreeMap<String, u64>,
    /// RSTs received by state.
    pub rst_received: BTreeMap<String, u64>,
    /// Data retransmits by state.
    pub retransmits: BTreeMap<String, u64>,
    /// SYN retransmits.
    pub syn_retransmits: u64,
    /// SYN-ACK retransmits.
    pub synack_retransmits: u64,
    /// Connections the kernel gave up on.
    pub timeout_aborts: u64,
    /// Drops by reason.
    pub drops: BTreeMap<String, u64>,
    /// Socket errors by errno.
    pub socket_errors: BTreeMap<String, u64>,
    /// Connect latency.
    pub connect_latency: Option<Percentiles>,
    /// Idle before a received RST.
    pub idle_before_rst: Option<Percentiles>,
}

impl Group {
    /// Data, SYN and SYN-ACK retransmits.
    pub fn retransmits_total(&self) -> u64 {
        self.retransmits.values().sum::<u64>() + self.syn_retransmits + self.synack_retransmits
    }
}

/// Percentiles of a distribution, ns.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct Percentiles {
    /// Values.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Largest.
    pub max_ns: u64,
}

/// Unowned RSTs with the ephemeral ports of one address.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Scattered {
    /// The remote address.
    pub address: String,
    /// RSTs sent.
    pub rst_sent: u64,
    /// RSTs received.
    pub rst_received: u64,
    /// Segments dropped.
    pub drops: u64,
    /// Ports seen.
    pub ports: u64,
}

/// Incidents per bucket of time, by series key (`rst_sent`, ...).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Timeline {
    /// Bucket width, s.
    pub bucket_s: f64,
    /// Counts per bucket from the start, by series.
    pub series: BTreeMap<String, Vec<u64>>,
}

/// Distributions as (ns, count) pairs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Distributions {
    /// Connect latency of the successful connects.
    pub connect_latency: Vec<(u64, u64)>,
    /// Idle before an RST received in ESTABLISHED.
    pub idle_before_rst: Vec<(u64, u64)>,
    /// Idle when the peer closed (FIN).
    pub peer_close_idle: Vec<(u64, u64)>,
    /// Idle when this host closed.
    pub local_close_idle: Vec<(u64, u64)>,
    /// Idle gaps that sends ended (reuses).
    pub reuse_idle: Vec<(u64, u64)>,
}

/// A socket table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Sockets {
    /// Sockets by state.
    pub states: BTreeMap<String, u64>,
    /// TIME_WAIT sockets by peer.
    pub time_wait_by_peer: Vec<(String, u64)>,
    /// Listeners with their queues.
    pub listeners: Vec<Listener>,
}

/// A listening socket.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Listener {
    /// Its address.
    pub local: String,
    /// Connections waiting to be accepted.
    pub queued: u64,
    /// The queue limit.
    pub limit: Option<u64>,
}

/// The `--during` load.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Load {
    /// The command.
    pub command: String,
    /// How it ended.
    pub status: Option<String>,
}
