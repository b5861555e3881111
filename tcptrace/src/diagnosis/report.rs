//! The diagnosis report: ranked findings, what was checked, and the raw
//! figures behind them; human text that fits a terminal, or one JSON
//! document (schema in docs/diagnose.md).

use std::{
    collections::BTreeMap,
    io::{self, Write},
};

use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    aggregate::{
        Aggregate, Percentiles, Related, ReuseOutcomes, Stats, Weight as _, timeline::Series,
    },
    counts::Counts,
    diagnosis::{
        facts::{HostFacts, NamespaceFacts},
        finding::{Cause, Confidence, Finding},
    },
    event::SCHEMA_VERSION,
    timefmt::duration_ns,
};

/// Processes listed in the report's figures.
const TOP_PROCESSES: usize = 10;
/// Peers (and addresses of scattered resets) listed.
const TOP_PEERS: usize = 10;
/// Text width for the human report.
const WIDTH: usize = 100;

/// Everything a diagnosis found and looked at (docs/diagnose.md).
#[derive(Debug)]
pub struct Report {
    /// How long it watched.
    pub seconds: f64,
    /// `--netns` as given.
    pub netns: Option<String>,
    /// Events aggregated.
    pub events: u64,
    /// The session's exact counts: received, produced, lost, hook runs
    /// the kernel skipped.
    pub counts: Counts,
    /// Ranked findings.
    pub findings: Vec<Finding>,
    /// Pods and containers of the affected processes, by (pid, cgroup id).
    pub workloads: Workloads,
    /// What each rule checked, one line each.
    pub checked: Vec<String>,
    /// Counter deltas, sysctls, socket tables.
    pub host: HostFacts,
    /// What this kernel could not trace.
    pub missing: Vec<String>,
    /// The `--during` load, if any.
    pub load: Option<LoadRun>,
    /// When tracing started (RFC 3339, UTC).
    pub started_at: Option<String>,
    /// The running kernel's release (`uname -r`).
    pub kernel: Option<String>,
    /// The filters the events were taken with (`pid`, `comm`, `port`,
    /// `netns`, `events`, `reuse_idle_ms`).
    pub filters: Value,
}

/// A process's pod and container, as `host::cgroups` names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// The pod's namespace.
    pub namespace: Option<String>,
    /// The pod's name (its UID when not named).
    pub pod: Option<String>,
    /// The container's name (its short ID when not named).
    pub container: Option<String>,
}

/// Workloads by (pid, cgroup id).
pub type Workloads = BTreeMap<(u32, u64), Workload>;

/// The `--during` load and how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct LoadRun {
    /// The stress command line.
    pub command: String,
    /// How it ended (`exit status: 0`), or `None` if it was stopped.
    pub status: Option<String>,
}

impl Report {
    /// Findings a reader should act on.
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.confidence > Confidence::Low)
    }

    /// The report as one JSON document.
    pub fn to_json(&self, agg: &Aggregate) -> Value {
        let nonzero: serde_json::Map<String, Value> = self
            .host
            .counters
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let mut report = json!({
            "v": SCHEMA_VERSION,
            "type": "diagnose",
            "seconds": self.seconds,
            "netns": self.netns,
            "events": self.events,
            "verdict": if self.problems().next().is_some() { "problem" } else { "no_problem" },
            "findings": self.findings,
            "checked": self.checked,
            "counters": nonzero,
            "sysctls": self.host.sysctls,
            "sockets_start": self.host.sockets_start,
            "sockets_end": self.host.sockets_end,
            "listeners_peak": self.host.listeners_peak,
            "conntrack": self.host.conntrack,
            "host_global": {
                "start": self.host.host_global_start,
                "end": self.host.host_global_end,
            },
            "namespaces": namespaces_json(&self.host),
            "drops_by_reason": self.host.kernel_drops,
            "processes": processes_json(agg),
            "peers": peers_json(agg),
            "scattered_resets": scattered_json(agg),
            "timeline": timeline_json(agg),
            "distributions": distributions_json(agg),
            "missing": self.missing,
            "load": self.load,
            "started_at": self.started_at,
            "kernel": self.kernel,
            "filters": self.filters,
        });
        if let Value::Object(fields) = &mut report {
            fields.extend(self.counts.json_fields());
        }
        self.name_affected(&mut report);
        report
    }

    /// `pod`, `namespace`, `container` on each affected process the
    /// cgroups named (absent otherwise).
    fn name_affected(&self, report: &mut Value) {
        let Some(findings) = report["findings"].as_array_mut() else {
            return;
        };
        for affected in findings
            .iter_mut()
            .filter_map(|f| f["affected"].as_array_mut())
            .flatten()
        {
            let key = (
                affected["pid"].as_u64().unwrap_or(0) as u32,
                affected["cgroup_id"].as_u64().unwrap_or(0),
            );
            let (Some(workload), Value::Object(fields)) = (self.workloads.get(&key), affected)
            else {
                continue;
            };
            for (name, value) in [
                ("namespace", &workload.namespace),
                ("pod", &workload.pod),
                ("container", &workload.container),
            ] {
                if let Some(value) = value {
                    fields.insert(name.into(), json!(value));
                }
            }
        }
    }

    /// Prints the report as `diagnose` does: `json` (`to_json`) pretty
    /// and a newline with `--json`, else the human text.
    ///
    /// # Errors
    /// Failures to write.
    pub fn print(&self, json: &Value, as_json: bool, out: &mut impl Write) -> io::Result<()> {
        if as_json {
            serde_json::to_writer_pretty(&mut *out, json)?;
            writeln!(out)?;
        } else {
            self.write_human(out)?;
        }
        out.flush()
    }

    /// The report as text that fits a terminal.
    pub fn write_human(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "tcptrace diagnose: watched {:.1} s{}: {}",
            self.seconds,
            self.netns
                .as_deref()
                .map_or_else(String::new, |n| format!(" in netns {n}")),
            self.counts.human()
        )?;
        if let Some(load) = &self.load {
            writeln!(
                out,
                "load: {} ({})",
                load.command,
                load.status.as_deref().unwrap_or("stopped")
            )?;
        }
        if self.counts.lost() > 0 {
            writeln!(
                out,
                "warning: {} events were lost (ring buffer full): counts are lower bounds; try --ring-kib larger",
                self.counts.lost()
            )?;
        }
        writeln!(out)?;
        let problems: Vec<_> = self.problems().collect();
        let unexplained = self
            .findings
            .iter()
            .filter(|f| f.cause == Cause::Unexplained)
            .filter_map(|f| f.figures.get("unexplained_events"))
            .sum::<f64>();
        if problems.is_empty() && unexplained > 0.0 {
            // Never "no problem" while failures went unexplained.
            writeln!(
                out,
                "No known cause at medium or high confidence, but {unexplained} failure events went unexplained (listed below)."
            )?;
            writeln!(out)?;
        } else if problems.is_empty() {
            writeln!(
                out,
                "No problem found (nothing at medium or high confidence)."
            )?;
            writeln!(out)?;
        }
        for (n, f) in self.findings.iter().enumerate() {
            let head = format!(
                "{}. [{}] {} ({})",
                n + 1,
                f.confidence.name().to_uppercase(),
                f.title,
                f.cause.id()
            );
            wrap(out, &head, "", "   ")?;
            wrap(out, &f.summary, "   ", "   ")?;
            writeln!(out, "   evidence:")?;
            for e in &f.evidence {
                wrap(out, e, "   - ", "     ")?;
            }
            if !f.affected.is_empty() {
                writeln!(out, "   affected:")?;
                for a in &f.affected {
                    let who = if a.pid == 0 {
                        "unattributed".to_string()
                    } else {
                        format!("pid {} ({})", a.pid, a.comm)
                    };
                    let peer = a.peer.map_or_else(String::new, |p| format!(" peer {p}"));
                    // The root cgroup says nothing; a service or container does.
                    let cgroup = a
                        .cgroup
                        .as_deref()
                        .filter(|c| *c != "/")
                        .map_or_else(String::new, |c| format!(" in {c}"));
                    writeln!(
                        out,
                        "   - {who} {}{peer}{cgroup}: {}",
                        a.role,
                        events(a.events)
                    )?;
                }
            }
            writeln!(out, "   fix:")?;
            for fix in &f.fix {
                wrap(out, fix, "   - ", "     ")?;
            }
            writeln!(out)?;
        }
        writeln!(out, "Checked:")?;
        for c in &self.checked {
            wrap(out, c, "  - ", "    ")?;
        }
        let changed: Vec<String> = self
            .host
            .counters
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| format!("{k} {v:+}"))
            .collect();
        if !changed.is_empty() {
            wrap(
                out,
                &format!("Kernel counters changed: {}", changed.join(", ")),
                "",
                "  ",
            )?;
        }
        if let Some(conntrack) = &self.host.conntrack {
            wrap(out, &conntrack.to_string(), "", "  ")?;
        }
        // Per namespace when the run spans more than one (a lone one's
        // counters are the line above).
        if self.host.namespaces.len() > 1 {
            for ns in &self.host.namespaces {
                wrap(out, &namespace_line(ns), "", "  ")?;
            }
        }
        let host_drops: Vec<String> = self
            .host
            .kernel_drops
            .host
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        if !host_drops.is_empty() {
            wrap(
                out,
                &format!(
                    "TCP drops on the whole host (kernel counts, before any filter): {}",
                    host_drops.join(", ")
                ),
                "",
                "  ",
            )?;
        }
        // The host-global figures (orphans, TCP memory) are in the
        // orphans / TCP memory check's line already.
        for m in &self.missing {
            wrap(out, &format!("not traced on this kernel: {m}"), "", "  ")?;
        }
        Ok(())
    }
}

/// `1 event`, `12 events`.
fn events(n: u64) -> String {
    match n {
        1 => "1 event".to_string(),
        n => format!("{n} events"),
    }
}

/// `netns ctf-node (4026532301): 12 events; counters: TcpRetransSegs +3;
/// conntrack: ...`
fn namespace_line(ns: &NamespaceFacts) -> String {
    let mut line = format!(
        "{}{}: {}",
        ns.label(),
        if ns.watched { " (watched)" } else { "" },
        events(ns.events)
    );
    if ns.created_during_run {
        line += ", created during the run";
    }
    if ns.deleted_during_run {
        line += ", deleted during the run (read at the end through tcptrace's hold on it)";
    }
    let changed: Vec<String> = ns
        .counters
        .iter()
        .filter(|(_, v)| **v != 0)
        .map(|(k, v)| format!("{k} {v:+}"))
        .collect();
    if !changed.is_empty() {
        line += &format!("; counters changed: {}", changed.join(", "));
    }
    if let Some(ct) = ns.conntrack.as_ref().filter(|ct| ct.loaded()) {
        line += &format!("; {ct}");
    }
    line
}

/// The per-namespace facts with their non-zero counters only.
fn namespaces_json(host: &HostFacts) -> Value {
    host.namespaces
        .iter()
        .map(|ns| {
            let counters: serde_json::Map<String, Value> = ns
                .counters
                .iter()
                .filter(|(_, v)| **v != 0)
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            json!({
                "inode": ns.inode,
                "name": ns.name,
                "watched": ns.watched,
                "events": ns.events,
                "created_during_run": ns.created_during_run,
                "deleted_during_run": ns.deleted_during_run,
                "counters": counters,
                "conntrack": ns.conntrack,
            })
        })
        .collect()
}

fn pct(p: Option<Percentiles>) -> Value {
    match p {
        Some(p) => json!({
            "count": p.count, "p50_ns": p.p50_ns, "p90_ns": p.p90_ns,
            "p99_ns": p.p99_ns, "max_ns": p.max_ns,
        }),
        None => Value::Null,
    }
}

/// A group's figures, as `processes` and `peers` list them.
fn stats_json(s: &Stats) -> serde_json::Map<String, Value> {
    let value = json!({
        "connects": s.connects,
        "connect_failed": s.connect_failed,
        "refused": s.refused,
        "rst_sent": s.rst_sent,
        "rst_received": s.rst_received,
        "retransmits": s.retransmits,
        "syn_retransmits": s.syn_retransmits,
        "synack_retransmits": s.synack_retransmits,
        "timeout_aborts": s.timeout_aborts,
        "drops": s.drops,
        "socket_errors": s.socket_errors,
        "connect_latency": pct(s.connect_latency.percentiles()),
        "idle_before_rst": pct(s.idle_before_rst.percentiles()),
        "age_at_rst": pct(s.age_at_rst.percentiles()),
        "lifetime": pct(s.lifetimes.percentiles()),
        "reuses": reuses_json(&s.reuse_outcomes),
    });
    match value {
        Value::Object(fields) => fields,
        _ => serde_json::Map::new(),
    }
}

fn processes_json(agg: &Aggregate) -> Value {
    agg.ranked_processes()
        .into_iter()
        .take(TOP_PROCESSES)
        .map(|(pid, p)| {
            let mut row = serde_json::Map::new();
            row.insert("pid".into(), json!(pid));
            row.insert("comm".into(), json!(p.comm));
            row.extend(stats_json(&p.stats));
            Value::Object(row)
        })
        .collect()
}

/// The heaviest remote endpoints, without the one-off unowned ports that
/// `scattered_resets` counts by address.
fn peers_json(agg: &Aggregate) -> Value {
    let mut peers: Vec<_> = agg
        .peers
        .iter()
        .filter(|(peer, s)| !agg.scattered.folds(**peer, s))
        .collect();
    peers.sort_by(|a, b| {
        (b.1.incidents(), b.1.weight(), a.0).cmp(&(a.1.incidents(), a.1.weight(), b.0))
    });
    peers
        .into_iter()
        .take(TOP_PEERS)
        .map(|(peer, s)| {
            let mut row = serde_json::Map::new();
            row.insert("peer".into(), json!(peer.to_string()));
            row.insert(
                "processes".into(),
                s.related
                    .ranked()
                    .into_iter()
                    .filter_map(|(r, _)| match r {
                        Related::Process(pid) => Some(json!(pid)),
                        Related::Peer(_) => None,
                    })
                    .collect(),
            );
            row.extend(stats_json(s));
            Value::Object(row)
        })
        .collect()
}

fn scattered_json(agg: &Aggregate) -> Value {
    agg.scattered
        .ranked()
        .into_iter()
        .take(TOP_PEERS)
        .map(|(ip, s)| {
            json!({
                "address": ip.to_string(),
                "rst_sent": s.rst_sent,
                "rst_received": s.rst_received,
                "drops": s.drops,
                "ports": s.ports,
            })
        })
        .collect()
}

/// Reuses after idle by outcome: `{"answered": {"count", "min_idle_s",
/// "max_idle_s"}, "recovered", "stalled", "timed_out", "reset",
/// "reset_after_fin", "unknown": n}`; outcomes that never happened are
/// left out, null when there was no reuse.
fn reuses_json(r: &ReuseOutcomes) -> Value {
    if r.total() == 0 {
        return Value::Null;
    }
    let mut out = serde_json::Map::new();
    for (name, range) in [
        ("answered", r.answered),
        ("recovered", r.recovered),
        ("stalled", r.stalled),
        ("timed_out", r.timed_out),
        ("reset", r.reset),
        ("reset_after_fin", r.reset_after_fin),
    ] {
        if range.count > 0 {
            out.insert(
                name.into(),
                json!({
                    "count": range.count,
                    "min_idle_s": range.min_ns as f64 / 1e9,
                    "max_idle_s": range.max_ns as f64 / 1e9,
                }),
            );
        }
    }
    if r.unknown > 0 {
        out.insert("unknown".into(), json!(r.unknown));
    }
    Value::Object(out)
}

fn timeline_json(agg: &Aggregate) -> Value {
    let t = &agg.timeline;
    let series: serde_json::Map<String, Value> = Series::ALL
        .iter()
        .map(|s| (s.key().to_string(), json!(t.counts(*s))))
        .collect();
    json!({
        "bucket_s": t.bucket_ns() as f64 / 1e9,
        "series": series,
    })
}

fn distributions_json(agg: &Aggregate) -> Value {
    let total = &agg.total;
    json!({
        "connect_latency": total.connect_latency.values(),
        "idle_before_rst": total.idle_before_rst.values(),
        "peer_close_idle": total.peer_close_idle.values(),
        "local_close_idle": total.local_close_idle.values(),
        "reuse_idle": total.reuse_idle.values(),
    })
}

/// Writes `text` wrapped at `WIDTH`, the first line after `first`, the
/// others after `rest`.
fn wrap(out: &mut impl Write, text: &str, first: &str, rest: &str) -> io::Result<()> {
    let mut line = String::from(first);
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.len() + 1 + word.len() > WIDTH {
            writeln!(out, "{line}")?;
            line = String::from(rest);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    writeln!(out, "{line}")
}

/// `p50 1.2ms p99 3.0s` for the human report and `top`.
pub fn latency_text(p: &Percentiles) -> String {
    format!(
        "p50 {} p90 {} p99 {} max {}",
        duration_ns(p.p50_ns),
        duration_ns(p.p90_ns),
        duration_ns(p.p99_ns),
        duration_ns(p.max_ns)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{aggregate::testing::names, diagnosis::finding::Finding};

    fn report(findings: Vec<Finding>) -> Report {
        Report {
            seconds: 10.0,
            netns: Some("blue".into()),
            events: 12,
            counts: Counts::default(),
            findings,
            workloads: Workloads::new(),
            checked: vec!["accept queues: TcpExtListenOverflows +0".into()],
            host: HostFacts::default(),
            missing: vec![],
            load: None,
            started_at: None,
            kernel: None,
            filters: Value::Null,
        }
    }

    #[test]
    fn human_report_wraps_and_says_when_nothing_is_wrong() {
        let agg = Aggregate::new(names());
        let mut text = Vec::new();
        report(vec![]).write_human(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("No problem found"), "{text}");
        assert!(text.contains("Checked:\n  - accept queues: TcpExtListenOverflows +0"));

        let mut f = Finding::new(
            Cause::NothingListening,
            Confidence::High,
            3,
            "x ".repeat(80),
        );
        f.fix.push("start it".into());
        let r = report(vec![f]);
        let mut text = Vec::new();
        r.write_human(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("1. [HIGH] Nothing listening"));
        assert!(!text.contains("No problem found"));
        assert!(text.lines().all(|l| l.len() <= WIDTH), "{text}");
        let j = r.to_json(&agg);
        assert_eq!(j["type"], "diagnose");
        assert_eq!(j["verdict"], "problem");
        assert_eq!(j["findings"][0]["cause"], "nothing_listening");
        assert_eq!(j["findings"][0]["confidence"], "high");
    }

    #[test]
    fn affected_processes_carry_their_pod_in_json() {
        use crate::diagnosis::finding::{Affected, Confidence};
        let mut finding = Finding::new(Cause::LbIdleTimeout, Confidence::High, 3, "x".into());
        for (pid, cgroup_id) in [(42, 7), (43, 8)] {
            finding.affected.push(Affected {
                pid,
                comm: "app".into(),
                peer: None,
                events: 3,
                role: "client",
                cgroup_id,
                cgroup: None,
            });
        }
        let mut report = report(vec![finding]);
        report.workloads.insert(
            (42, 7),
            Workload {
                namespace: Some("shop".into()),
                pod: Some("checkout-1".into()),
                container: Some("app".into()),
            },
        );
        let json = report.to_json(&Aggregate::new(names()));
        let affected = &json["findings"][0]["affected"];
        assert_eq!(affected[0]["pod"], "checkout-1");
        assert_eq!(affected[0]["namespace"], "shop");
        assert_eq!(affected[0]["container"], "app");
        assert!(affected[1].get("pod").is_none(), "{affected}");
    }
}
