//! Cause 11: too many orphaned sockets, or TCP out of memory.

use super::*;
use crate::host::global::HostGlobal;

/// The RST reason `tcp_close` / `tcp_out_of_resources` use when
/// `tcp_check_oom` says the host has too many orphans or too little TCP
/// memory.
const MEMORY_RESET: &str = "TCP_ABORT_ON_MEMORY";

/// Which host-wide limit was hit, as far as the two readings tell.
enum Limit {
    Orphans { peak: u64, max: u64 },
    Memory { peak: u64, high: u64 },
    Unknown,
}

fn limit(start: Option<&HostGlobal>, end: Option<&HostGlobal>) -> Limit {
    let both = [start, end];
    let peak = |f: fn(&HostGlobal) -> Option<u64>| both.iter().flatten().filter_map(|g| f(g)).max();
    // The stricter of the two readings: the limit in force at some point.
    let max_orphans = both
        .iter()
        .flatten()
        .filter_map(|g| g.tcp_max_orphans)
        .min();
    let high = both
        .iter()
        .flatten()
        .find_map(|g| g.tcp_mem.map(|m| m.high));
    let pressure = both
        .iter()
        .flatten()
        .find_map(|g| g.tcp_mem.map(|m| m.pressure));
    let orphans = peak(|g| g.orphans);
    let pages = peak(|g| g.tcp_mem_pages);
    // Memory first when TCP is at its pressure mark: tcp_check_oom then
    // aborts whatever the orphan count. Otherwise orphans, as soon as the
    // limit is known: the count moves too fast for two readings to catch
    // its peak, but a limit within reach of a busy host tells.
    if let (Some(pages), Some(pressure), Some(high)) = (pages, pressure, high)
        && pages >= pressure
    {
        return Limit::Memory { peak: pages, high };
    }
    match (orphans, max_orphans) {
        (Some(peak), Some(max)) => Limit::Orphans { peak, max },
        _ => Limit::Unknown,
    }
}

/// Cause 11: past `net.ipv4.tcp_max_orphans` (host-global) or under
/// `tcp_mem` pressure the kernel resets connections as they close
/// (reason `TCP_ABORT_ON_MEMORY`, `TcpExtTCPAbortOnMemory`, "too many
/// orphaned sockets" in the kernel log); the peers see resets and
/// truncated replies.
pub(super) fn orphan_or_memory_abort(i: &Inputs) -> Outcome {
    let events = i.agg.total.rst_sent_with(MEMORY_RESET);
    let counter = i.host.counter("TcpExtTCPAbortOnMemory");
    let start = i.host.host_global_start.as_ref();
    let end = i.host.host_global_end.as_ref();
    let checked = format!(
        "orphans / TCP memory: {events} RSTs with reason {MEMORY_RESET}, TcpExtTCPAbortOnMemory {counter:+}, {}",
        end.or(start)
            .map_or_else(|| "host-wide figures unknown".into(), HostGlobal::to_string)
    );
    let score = events.max(counter.max(0) as u64);
    let limit = limit(start, end);
    // A limit seen reached corroborates a few aborts; one stray abort
    // alone is worth listing, not an alarm.
    let reached = match limit {
        Limit::Orphans { peak, max } => peak >= max,
        Limit::Memory { .. } => true,
        Limit::Unknown => false,
    };
    let confidence = match (events, counter) {
        (0, 0) => {
            return Outcome {
                checked,
                findings: Vec::new(),
            };
        }
        (3.., _) => Confidence::High,
        (1.., _) | (_, 3..) if reached => Confidence::Medium,
        (2.., _) | (_, 3..) => Confidence::Medium,
        _ => Confidence::Low,
    };
    let hit = processes_with(i.agg, |s| s.rst_sent_with(MEMORY_RESET));
    let closer = hit.first().copied();
    let culprit = closer.map_or_else(|| "local processes".into(), |(pid, p, _)| who(pid, &p.comm));
    let peer = closer
        .and_then(|(pid, _, _)| hit.peer(pid))
        .map_or_else(String::new, |p| format!(" to {}", endpoint(p)));
    let why = match &limit {
        Limit::Orphans { peak, max } => {
            format!("the host had {peak} orphaned sockets against net.ipv4.tcp_max_orphans = {max}")
        }
        Limit::Memory { peak, high } => {
            format!("TCP memory reached {peak} pages against tcp_mem's limit {high}")
        }
        Limit::Unknown => "the host ran out of orphan slots or TCP memory".into(),
    };
    let mut f = Finding::new(
        Cause::OrphanOrMemoryAbort,
        confidence,
        score,
        format!(
            "the kernel reset {score} connections of {culprit}{peer} as they closed: {why}; the peers got resets and truncated replies"
        ),
    );
    for (pid, p, n) in hit.iter().take(3) {
        let lost = p.stats.rst_lost_data.min(*n);
        f.evidence.push(format!(
            "{n} RSTs with reason {MEMORY_RESET} sent by {}{}, {lost} of them with data still unsent or unacknowledged",
            who(*pid, &p.comm),
            hit.peer(*pid).map_or_else(String::new, |peer| format!(" to {}", endpoint(peer)))
        ));
    }
    f.evidence.push(format!(
        "TcpExtTCPAbortOnMemory {counter:+} over {:.1} s",
        i.seconds
    ));
    let orphans = |g: Option<&HostGlobal>| {
        g.and_then(|g| g.orphans)
            .map_or_else(|| "?".into(), |v| v.to_string())
    };
    let max_text = [start, end]
        .iter()
        .flatten()
        .filter_map(|g| g.tcp_max_orphans)
        .min()
        .map_or_else(|| "unknown".into(), |v| v.to_string());
    f.evidence.push(format!(
        "host-wide (all namespaces): {} orphaned sockets at the start, {} at the end; net.ipv4.tcp_max_orphans = {max_text} (host-global: no per-namespace copy)",
        orphans(start),
        orphans(end)
    ));
    if let Some(g) = end.or(start)
        && let (Some(pages), Some(mem)) = (g.tcp_mem_pages, g.tcp_mem)
    {
        f.evidence.push(format!(
            "TCP memory {pages} pages; net.ipv4.tcp_mem pressure from {}, refused at {} pages{}",
            mem.pressure,
            mem.high,
            if pages < mem.pressure {
                ": not the limit here"
            } else {
                ""
            }
        ));
    }
    if let Some(age) = closer.and_then(|(_, p, _)| p.stats.age_at_rst.percentiles()) {
        f.evidence.push(format!(
            "connections were {} old when reset: closed right after writing, their data still queued",
            spread(&age)
        ));
    }
    f.figures.insert("resets", score as f64);
    match limit {
        Limit::Orphans { peak, max } => {
            f.figures.insert("orphans", peak as f64);
            f.figures.insert("tcp_max_orphans", max as f64);
            f.fix.push(format!(
                "Raise net.ipv4.tcp_max_orphans (host-global, now {max}) back to the kernel's boot-time default (sized from RAM) or above the peak of `orphan` in /proc/net/sockstat; each orphan holds its unsent data until the peer reads it."
            ));
        }
        Limit::Memory { peak, high } => {
            f.figures.insert("tcp_mem_pages", peak as f64);
            f.figures.insert("tcp_mem_high", high as f64);
            f.fix.push(format!(
                "Raise net.ipv4.tcp_mem (host-global, limit now {high} pages) or find what holds TCP memory (`ss -tm`: large send queues to slow peers)."
            ));
        }
        Limit::Unknown => f.fix.push(
            "Raise net.ipv4.tcp_max_orphans and net.ipv4.tcp_mem (host-global) after checking `cat /proc/net/sockstat` (orphan, mem) against them.".into(),
        ),
    }
    f.fix.push(format!(
        "In {culprit}: do not close() while a large reply is still queued for a slow peer: shutdown(SHUT_WR) and read until EOF (the peer has everything), or stream with back-pressure; every such close leaves an orphan holding the data."
    ));
    f.fix.push(
        "Orphans live shorter with net.ipv4.tcp_orphan_retries (e.g. 2) and tcp_fin_timeout (e.g. 15); the kernel log says \"too many orphaned sockets\" when this happens."
            .into(),
    );
    f.affected = affected(&hit, "closer");
    Outcome {
        checked,
        findings: vec![f],
    }
}
