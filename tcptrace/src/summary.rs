//! End-of-run summary of a trace: counts by kind, loss, connect latency
//! percentiles, drops by reason and socket errors by errno, and the
//! processes most hit by resets, retransmits, drops and errors.

use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf};

use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;
use serde_json::{Value, json};

use crate::{
    counts::Counts,
    event::{Comm, EventKind, SCHEMA_VERSION, TcpEvent},
    kernel::{errno, names::Names},
    timefmt,
    tracer::TcReport,
};

/// What the flight recorder (`trace --pcap`) did, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecorderReport {
    /// The directory.
    pub dir: PathBuf,
    /// Files written.
    pub written: u64,
    /// Connections not written because `--pcap-max` files were reached.
    pub over_max: u64,
    /// Connections with no packet kept (they crossed no watched
    /// interface, or the LRU had made room for busier ones).
    pub without_packets: u64,
    /// Files that could not be written, and the first error.
    pub failed: u64,
    /// The first write error.
    pub error: Option<String>,
}

/// Processes listed in the summary.
const TOP: usize = 10;

#[derive(Debug, Default, Clone)]
struct ProcessCounts {
    comm: Comm,
    rst_sent: u64,
    rst_received: u64,
    retransmits: u64,
    failed_connects: u64,
    drops: u64,
    socket_errors: u64,
}

impl ProcessCounts {
    fn weight(&self) -> u64 {
        self.rst_sent
            + self.rst_received
            + self.retransmits
            + self.failed_connects
            + self.drops
            + self.socket_errors
    }
}

/// What `trace` prints at the end: events by kind, the exact loss
/// accounting, connect latency percentiles (µs resolution) and the
/// processes most hit. Human text on stderr, one JSON record in the
/// stream (`"type": "summary"`, docs/events.md).
pub struct Summary {
    seconds: f64,
    /// Socket errors by errno name (`ERRNO_<n>` when unnamed), from events.
    socket_errors: BTreeMap<String, u64>,
    /// TCP drops by reason name, as the kernel counted them (exact):
    /// those the filters kept, and every one on the host.
    drops_by_reason: BTreeMap<String, u64>,
    host_drops_by_reason: BTreeMap<String, u64>,
    connect_latency_us: Histogram<u64>,
    /// FxHash: updated for every reset, retransmit, drop and error.
    processes: FxHashMap<u32, ProcessCounts>,
    counts: Counts,
    missing: Vec<String>,
    /// Received RSTs by origin (`peer`, `middlebox`, `unknown`), when TC
    /// programs watched the socket's namespace.
    rst_origins: BTreeMap<&'static str, u64>,
    /// Where the TC programs watched packets.
    tc: Option<TcReport>,
    /// What `--pcap` wrote.
    pcap: Option<RecorderReport>,
}

impl Default for Summary {
    fn default() -> Self {
        Summary {
            seconds: 0.0,
            socket_errors: BTreeMap::new(),
            drops_by_reason: BTreeMap::new(),
            host_drops_by_reason: BTreeMap::new(),
            connect_latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static bounds"),
            processes: FxHashMap::default(),
            counts: Counts::default(),
            missing: Vec::new(),
            rst_origins: BTreeMap::new(),
            tc: None,
            pcap: None,
        }
    }
}

impl Summary {
    /// Takes one event into the latency and per-process figures.
    pub fn add(&mut self, ev: &TcpEvent) {
        if ev.kind == EventKind::Connect
            && let Some(ns) = ev.connect_ns
        {
            self.connect_latency_us
                .saturating_record((ns / 1000).max(1));
        }
        if let Some(errno) = ev.socket_errno() {
            // Counted by name without allocating one per event (a storm
            // of resets is as many ECONNRESETs).
            match errno::name(errno).and_then(|name| self.socket_errors.get_mut(name)) {
                Some(count) => *count += 1,
                None => *self.socket_errors.entry(errno::label(errno)).or_default() += 1,
            }
        }
        if let Some(p) = ev.provenance() {
            *self.rst_origins.entry(p.origin.name()).or_default() += 1;
        }
        let Some(owner) = &ev.owner else { return };
        let counts = match ev.kind {
            EventKind::RstSent
            | EventKind::RstReceived
            | EventKind::Retransmit
            | EventKind::SynAckRetransmit
            | EventKind::ConnectFailed
            | EventKind::Drop
            | EventKind::SocketError => self.processes.entry(owner.pid).or_default(),
            _ => return,
        };
        counts.comm = owner.comm;
        match ev.kind {
            EventKind::RstSent => counts.rst_sent += 1,
            EventKind::RstReceived => counts.rst_received += 1,
            EventKind::ConnectFailed => counts.failed_connects += 1,
            EventKind::Drop => counts.drops += 1,
            EventKind::SocketError => counts.socket_errors += 1,
            _ => counts.retransmits += 1,
        }
    }

    /// Completes it with the run's length in seconds, the session's
    /// exact counts (the kernel's per-reason drop counts among them, named
    /// with this kernel's `names`) and what this kernel could not trace.
    pub fn finish(&mut self, seconds: f64, counts: Counts, missing: &[String], names: &Names) {
        let named = |counts: &BTreeMap<u32, u64>| {
            counts
                .iter()
                .map(|(reason, n)| (names.drop_reason(*reason).into_owned(), *n))
                .collect()
        };
        self.drops_by_reason = named(&counts.drops.in_scope);
        self.host_drops_by_reason = named(&counts.drops.host);
        self.seconds = seconds;
        self.counts = counts;
        self.missing = missing.to_vec();
    }

    /// Where the TC programs watched packets and what `--pcap` wrote.
    pub fn set_packets(&mut self, tc: Option<TcReport>, pcap: Option<RecorderReport>) {
        self.tc = tc;
        self.pcap = pcap;
    }

    fn top(&self) -> Vec<(u32, &ProcessCounts)> {
        let mut top: Vec<_> = self.processes.iter().map(|(pid, c)| (*pid, c)).collect();
        top.sort_by(|a, b| b.1.weight().cmp(&a.1.weight()).then(a.0.cmp(&b.0)));
        top.truncate(TOP);
        top
    }

    fn latency(&self, quantile: f64) -> Option<u64> {
        (!self.connect_latency_us.is_empty())
            .then(|| self.connect_latency_us.value_at_quantile(quantile))
    }

    /// The summary record of the NDJSON stream.
    pub fn to_json(&self) -> Value {
        let by_kind: serde_json::Map<String, Value> = self
            .counts
            .received_by_kind()
            .map(|(k, n)| (k.name().to_string(), json!(n)))
            .collect();
        let lost: serde_json::Map<String, Value> = self
            .counts
            .kernel
            .lost_by_kind()
            .map(|(k, n)| (k.name().to_string(), json!(n)))
            .collect();
        let mut record = json!({
            "v": SCHEMA_VERSION,
            "type": "summary",
            "seconds": self.seconds,
            "by_kind": by_kind,
            "lost_by_kind": lost,
            "connect_latency_us": {
                "count": self.connect_latency_us.len(),
                "p50": self.latency(0.5),
                "p90": self.latency(0.9),
                "p99": self.latency(0.99),
                "max": self.latency(1.0),
            },
            "drops_by_reason": self.drops_by_reason,
            "host_drops_by_reason": self.host_drops_by_reason,
            "socket_errors_by_errno": self.socket_errors,
            "top_processes": self.top().iter().map(|(pid, c)| json!({
                "pid": pid, "comm": c.comm, "rst_sent": c.rst_sent, "rst_received": c.rst_received,
                "retransmits": c.retransmits, "failed_connects": c.failed_connects,
                "drops": c.drops, "socket_errors": c.socket_errors,
            })).collect::<Vec<_>>(),
            "missing": self.missing,
            "rst_origin": self.rst_origins,
            "tc": self.tc.as_ref().map(|tc| json!({
                "mode": tc.mode,
                "interfaces": tc.interfaces,
            })),
            "pcap": self.pcap.as_ref().map(|p| json!({
                "dir": p.dir.display().to_string(),
                "written": p.written,
                "over_max": p.over_max,
                "without_packets": p.without_packets,
                "failed": p.failed,
                "error": p.error,
            })),
        });
        if let Value::Object(fields) = &mut record {
            fields.extend(self.counts.json_fields());
        }
        record
    }

    /// The summary as text, for stderr.
    pub fn to_human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "--- tcptrace: {:.1} s, {} ---",
            self.seconds,
            self.counts.human()
        );
        let kinds: Vec<String> = self
            .counts
            .received_by_kind()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        let _ = writeln!(s, "events: {}", kinds.join(", "));
        if self.counts.lost() > 0 {
            let lost: Vec<String> = self
                .counts
                .kernel
                .lost_by_kind()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{} {n}", k.name()))
                .collect();
            let _ = writeln!(
                s,
                "LOST (ring buffer full; try --ring-kib larger): {}",
                lost.join(", ")
            );
        }
        if let (Some(p50), Some(p99), Some(max)) =
            (self.latency(0.5), self.latency(0.99), self.latency(1.0))
        {
            let _ = writeln!(
                s,
                "connect latency: n={} p50={} p99={} max={}",
                self.connect_latency_us.len(),
                timefmt::duration_ns(p50 * 1000),
                timefmt::duration_ns(p99 * 1000),
                timefmt::duration_ns(max * 1000)
            );
        }
        let listed = |counts: &BTreeMap<String, u64>| {
            counts
                .iter()
                .map(|(name, n)| format!("{name} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.drops_by_reason.is_empty() {
            let _ = writeln!(
                s,
                "TCP drops by reason (kernel counts): {}",
                listed(&self.drops_by_reason)
            );
        }
        if self.host_drops_by_reason != self.drops_by_reason {
            let _ = writeln!(
                s,
                "TCP drops on the whole host, outside the filters too: {}",
                listed(&self.host_drops_by_reason)
            );
        }
        if !self.socket_errors.is_empty() {
            let _ = writeln!(s, "socket errors: {}", listed(&self.socket_errors));
        }
        if let Some(tc) = &self.tc {
            let origins: Vec<String> = self
                .rst_origins
                .iter()
                .map(|(origin, n)| format!("{origin} {n}"))
                .collect();
            let _ = writeln!(
                s,
                "received RSTs by origin: {} (packets watched on {} via {})",
                if origins.is_empty() {
                    "none".to_string()
                } else {
                    origins.join(", ")
                },
                tc.interfaces.join(", "),
                tc.mode
            );
        }
        if let Some(p) = &self.pcap {
            let _ = writeln!(
                s,
                "pcap: {} files written to {}; {} connections not written (--pcap-max reached), {} with no packet kept{}",
                p.written,
                p.dir.display(),
                p.over_max,
                p.without_packets,
                if p.failed > 0 {
                    format!(
                        ", {} failed ({})",
                        p.failed,
                        p.error.as_deref().unwrap_or("?")
                    )
                } else {
                    String::new()
                }
            );
        }
        let top = self.top();
        if !top.is_empty() {
            let _ = writeln!(
                s,
                "{:>8} {:<16} {:>8} {:>8} {:>8} {:>12} {:>6} {:>6}",
                "PID", "COMM", "RST_SENT", "RST_RECV", "RETRANS", "CONNECT_FAIL", "DROPS", "ERRORS"
            );
            for (pid, c) in top {
                let _ = writeln!(
                    s,
                    "{pid:>8} {:<16} {:>8} {:>8} {:>8} {:>12} {:>6} {:>6}",
                    c.comm.as_str(),
                    c.rst_sent,
                    c.rst_received,
                    c.retransmits,
                    c.failed_connects,
                    c.drops,
                    c.socket_errors
                );
            }
        }
        if self.counts.missed_by_kernel() > 0 {
            let _ = writeln!(
                s,
                "MISSED by the kernel: {} hook runs skipped (the same program was already running on that CPU)",
                self.counts.missed_by_kernel()
            );
        }
        for missing in &self.missing {
            let _ = writeln!(s, "not traced on this kernel: {missing}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::event::Owner;

    fn event(kind: EventKind, pid: u32) -> TcpEvent {
        let addr: SocketAddr = "127.0.0.1:80".parse().unwrap();
        TcpEvent {
            mono_ns: 0,
            kind,
            sock: 1,
            netns: None,
            local: addr,
            remote: addr,
            owner: Some(Owner {
                pid,
                tid: pid,
                comm: format!("p{pid}").as_str().into(),
                cgroup_id: 0,
            }),
            accepted: None,
            transition: None,
            state: None,
            rst_reason: None,
            connect_ns: Some(2_000_000),
            age_ns: None,
            idle_send_ns: None,
            idle_recv_ns: None,
            err: None,
            detail: Default::default(),
        }
    }

    #[test]
    fn ranks_processes_and_counts_kinds() {
        let mut s = Summary::default();
        let mut counts = Counts::default();
        for (kind, pid, times) in [
            (EventKind::RstReceived, 7, 3),
            (EventKind::RstSent, 9, 1),
            (EventKind::Connect, 9, 1),
        ] {
            for _ in 0..times {
                s.add(&event(kind, pid));
                counts.received[kind.index()] += 1;
                counts.kernel.produced[kind.index()] += 1;
            }
        }
        s.finish(1.0, counts, &[], &Names::default());
        let j = s.to_json();
        assert_eq!(j["events_received"], 5);
        assert_eq!(j["events_produced"], 5);
        assert_eq!(j["by_kind"]["rst_received"], 3);
        assert_eq!(j["top_processes"][0]["pid"], 7);
        assert_eq!(j["top_processes"][0]["rst_received"], 3);
        assert_eq!(j["connect_latency_us"]["count"], 1);
        assert!(s.to_human().contains("connect latency: n=1 p50=2ms"));
        assert!(
            s.to_human()
                .starts_with("--- tcptrace: 1.0 s, 5 events received, 5 produced, 0 lost ---")
        );
    }
}
