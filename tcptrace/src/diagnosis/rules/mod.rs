//! The diagnosis rules: plain data in (event aggregates, counter deltas,
//! sysctls, socket tables), findings out. Each rule also says what it
//! checked, so a run without a problem can show its work.
//!
//! Signatures and fixes follow shared/diagnosis.md; thresholds are chosen
//! so that one stray event never reaches high confidence.

mod accept;
mod blackhole;
mod client_timeout;
mod conntrack;
mod idle;
mod memory;
mod path;
mod paws;
mod pmtu;
mod ports;
mod refused;
mod resets;
mod timeout;
mod unexplained;
mod wake;

use std::net::SocketAddr;

use super::{
    facts::HostFacts,
    finding::{Affected, Cause, Confidence, Finding},
};
use crate::{
    aggregate::{Aggregate, Closer, Percentiles, Process, Related, Stats},
    timefmt::duration_ns,
};

/// Everything a rule may look at.
pub struct Inputs<'a> {
    /// Every event, aggregated.
    pub agg: &'a Aggregate,
    /// Counters, sysctls and socket tables.
    pub host: &'a HostFacts,
    /// Length of the observation.
    pub seconds: f64,
}

/// One rule's result: what it looked at, and what it concluded.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What the rule looked at, in one line (the report's "Checked" list).
    pub checked: String,
    /// What it found; empty when nothing.
    pub findings: Vec<Finding>,
}

type Rule = fn(&Inputs) -> Outcome;

/// Every rule, in the order the "checked" list shows them.
pub const RULES: [Rule; 17] = [
    idle::idle_timeouts,
    blackhole::middlebox_idle_blackhole,
    idle::half_open,
    accept::accept_queue,
    ports::port_exhaustion,
    resets::close_with_unread_data,
    resets::abortive_close,
    resets::forged_on_path,
    timeout::retransmission_timeout,
    refused::nothing_listening,
    // conntrack & drops
    conntrack::conntrack_table_full,
    conntrack::conntrack_invalid_nat_bypass,
    path::syn_dropped_on_path,
    // the rest
    pmtu::pmtu_black_hole,
    memory::orphan_or_memory_abort,
    paws::paws_rejected_syn,
    client_timeout::client_timeout,
];

/// Runs every rule, then the one that lists what none of them explained
/// (`unexplained`: it reads their findings, so it runs last).
pub fn evaluate(inputs: &Inputs) -> Vec<Outcome> {
    let mut outcomes: Vec<Outcome> = RULES.iter().map(|rule| rule(inputs)).collect();
    wake::lower_wakes(
        &mut outcomes
            .iter_mut()
            .flat_map(|o| o.findings.iter_mut())
            .collect::<Vec<_>>(),
    );
    let found: Vec<Finding> = outcomes
        .iter()
        .flat_map(|o| o.findings.iter().cloned())
        .collect();
    outcomes.push(unexplained::unexplained(inputs, &found));
    for outcome in &mut outcomes {
        outcome.checked = singular(&outcome.checked);
        for f in &mut outcome.findings {
            f.summary = singular(&f.summary);
            f.evidence = f.evidence.iter().map(|e| singular(e)).collect();
        }
    }
    outcomes
}

/// "1 RSTs" -> "1 RST": the rules format counts with plural nouns.
fn singular(text: &str) -> String {
    const NOUNS: [(&str, &str); 7] = [
        ("RSTs", "RST"),
        ("connections", "connection"),
        ("SYNs", "SYN"),
        ("retransmits", "retransmit"),
        ("connects", "connect"),
        ("times", "time"),
        ("segments", "segment"),
    ];
    let words: Vec<&str> = text.split(' ').collect();
    let mut out = Vec::with_capacity(words.len());
    for (i, word) in words.iter().enumerate() {
        let after_one = i > 0 && words[i - 1] == "1";
        let fixed = NOUNS.iter().find_map(|(plural, one)| {
            let rest = word.strip_prefix(plural)?;
            (after_one && rest.chars().all(|c| c.is_ascii_punctuation()))
                .then(|| format!("{one}{rest}"))
        });
        out.push(fixed.unwrap_or_else(|| word.to_string()));
    }
    out.join(" ")
}

/// Idle times within ±15 % of their median come from one timeout.
const CLUSTER: f64 = 0.15;

/// Processes whose name says they are a proxy / load balancer.
const PROXIES: [&str; 6] = [
    "haproxy",
    "envoy",
    "traefik",
    "linkerd2-proxy",
    "pgbouncer",
    "varnishd",
];

fn is_proxy(comm: &str) -> bool {
    PROXIES.iter().any(|p| comm.starts_with(p))
}

fn who(pid: u32, comm: &str) -> String {
    if pid == 0 {
        "unattributed sockets".into()
    } else {
        format!("pid {pid} ({comm})")
    }
}

fn endpoint(peer: SocketAddr) -> String {
    if peer.port() == 0 {
        format!("{} (many ports)", peer.ip())
    } else {
        peer.to_string()
    }
}

/// `2.00s (1.99s-2.01s, n=3)`
fn spread(p: &Percentiles) -> String {
    if p.count == 1 {
        return duration_ns(p.p50_ns);
    }
    format!(
        "{} ({}-{}, n={})",
        duration_ns(p.p50_ns),
        duration_ns(p.min_ns),
        duration_ns(p.max_ns),
        p.count
    )
}

/// A pool idle time safely below a timeout: 80 %, rounded down to a
/// tenth of a second (whole seconds from 10 s, multiples of 5 from 20 s).
fn below(timeout_ns: u64) -> String {
    let s = timeout_ns as f64 / 1e9 * 0.8;
    if s >= 20.0 {
        format!("{} s", (s / 5.0).floor() * 5.0)
    } else if s >= 10.0 {
        format!("{} s", s.floor())
    } else {
        format!("{:.1} s", (s * 10.0).floor() / 10.0)
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The remote endpoint most involved in a process's incidents, all causes
/// together. Rules name the peer of their own evidence with
/// [`Hits::peer`]; this is only its fallback.
fn top_peer(stats: &Stats) -> Option<SocketAddr> {
    stats
        .related
        .ranked()
        .into_iter()
        .find_map(|(r, _)| match r {
            Related::Peer(peer) => Some(*peer),
            Related::Process(_) => None,
        })
}

/// The peer that carries a process's evidence for one cause: of the peers
/// it dealt with, the one with the most of the rule's own `figure`. A
/// process that had refused connects to one port and healthy traffic to
/// another must be told about the port that refused, not its busiest one.
///
/// Peers are aggregated over every process, so a peer shared with other
/// processes counts only this process's share of its figure (its share of
/// the peer's connects and incidents). Falls back to the busiest peer when
/// no peer has the figure (a rule whose figure is not kept per peer).
fn top_peer_by(agg: &Aggregate, pid: u32, figure: impl Fn(&Stats) -> u64) -> Option<SocketAddr> {
    let process = agg.process(pid)?;
    let mut candidates: Vec<SocketAddr> = process
        .stats
        .related
        .iter()
        .filter_map(|(r, _)| match r {
            Related::Peer(peer) => Some(*peer),
            Related::Process(_) => None,
        })
        .chain(
            agg.peers
                .iter()
                .filter(|(_, s)| s.related.get(&Related::Process(pid)).is_some())
                .map(|(peer, _)| *peer),
        )
        .collect();
    candidates.sort();
    candidates.dedup();
    candidates
        .into_iter()
        .filter_map(|peer| {
            let stats = agg.peers.get(&peer)?;
            let mine = stats.related.get(&Related::Process(pid)).copied();
            let all: u64 = stats.related.iter().map(|(_, n)| *n).sum();
            let share = match mine {
                Some(m) if all > 0 => m as f64 / all as f64,
                // The peer's process list was cut short: count it whole.
                _ => 1.0,
            };
            let own = figure(stats) as f64 * share;
            (own > 0.0).then_some((own, peer))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, peer)| peer)
        .or_else(|| top_peer(&process.stats))
}

/// Processes with a positive count of one rule's figure, heaviest first,
/// with that figure kept so the rule can name the peer of its evidence.
struct Hits<'a> {
    agg: &'a Aggregate,
    figure: Box<dyn Fn(&Stats) -> u64 + 'a>,
    rows: Vec<(u32, &'a Process, u64)>,
}

impl<'a> Hits<'a> {
    /// The peer that carries `pid`'s evidence for this rule.
    fn peer(&self, pid: u32) -> Option<SocketAddr> {
        top_peer_by(self.agg, pid, &self.figure)
    }

    /// The same figure for other rows (a rule that re-ranks or merges).
    fn with_rows(self, rows: Vec<(u32, &'a Process, u64)>) -> Hits<'a> {
        Hits { rows, ..self }
    }
}

impl<'a> std::ops::Deref for Hits<'a> {
    type Target = Vec<(u32, &'a Process, u64)>;
    fn deref(&self) -> &Self::Target {
        &self.rows
    }
}

impl std::ops::DerefMut for Hits<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.rows
    }
}

/// Processes with a positive count, heaviest first.
fn processes_with<'a>(agg: &'a Aggregate, count: impl Fn(&Stats) -> u64 + 'a) -> Hits<'a> {
    let mut hit: Vec<_> = agg
        .ranked_processes()
        .into_iter()
        .map(|(pid, p)| (pid, p, count(&p.stats)))
        .filter(|(_, _, n)| *n > 0)
        .collect();
    hit.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    Hits {
        agg,
        figure: Box::new(count),
        rows: hit,
    }
}

/// The first five processes of `hit`, each with the peer of its evidence.
fn affected(hit: &Hits, role: &'static str) -> Vec<Affected> {
    hit.iter()
        .take(5)
        .map(|(pid, p, n)| Affected {
            pid: *pid,
            comm: p.comm.clone(),
            peer: hit.peer(*pid),
            events: *n,
            role,
            cgroup_id: p.cgroup_id,
            cgroup: None,
        })
        .collect()
}

fn counter_line(host: &HostFacts, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n} {:+}", host.counter(n)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod idle_tests;
#[cfg(test)]
mod peer_tests;
#[cfg(test)]
mod recorded;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_c;
