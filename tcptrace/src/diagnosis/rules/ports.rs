//! Cause 3: ephemeral port exhaustion.

use super::*;

/// Cause 3: each closed connection holds its port in TIME_WAIT for 60 s;
/// churn to one destination runs out of ephemeral ports and connect()
/// fails with EADDRNOTAVAIL (no TCP event at all).
pub(super) fn port_exhaustion(i: &Inputs) -> Outcome {
    let range = i.host.port_range();
    let size = range.map(|(lo, hi)| u64::from(hi.saturating_sub(lo)) + 1);
    let sockets = i.host.sockets();
    let tw_total = sockets.map_or(0, |s| s.in_state("TIME_WAIT"));
    let top = sockets.and_then(|s| s.time_wait_by_peer.first().copied());
    let checked = format!(
        "ephemeral ports: {} TIME_WAIT{}, port range {}",
        tw_total,
        top.map_or_else(String::new, |(p, n)| format!(" ({n} to {p})")),
        range.map_or_else(
            || "unknown".into(),
            |(lo, hi)| format!("{lo}-{hi} ({} ports)", hi - lo + 1)
        )
    );
    let (Some(size), Some((dest, tw))) = (size, top) else {
        return Outcome {
            checked,
            findings: Vec::new(),
        };
    };
    let used = tw as f64 / size as f64;
    let confidence = if used >= 0.8 {
        Confidence::High
    } else if used >= 0.5 {
        Confidence::Medium
    } else {
        return Outcome {
            checked,
            findings: Vec::new(),
        };
    };
    // The process that opened and closed the most connections to it.
    let mut hit = processes_with(i.agg, |s| s.connects);
    hit.retain(|(_, p, _)| p.stats.related.get(&Related::Peer(dest)).is_some());
    hit.sort_by_key(|h| std::cmp::Reverse(h.2));
    let (client, runs_out) = hit.first().map_or_else(
        || ("the clients".to_string(), "run out"),
        |(pid, p, _)| (who(*pid, &p.comm), "runs out"),
    );
    let mut f = Finding::new(
        Cause::PortExhaustion,
        confidence,
        tw,
        format!(
            "{tw} connections to {dest} sit in TIME_WAIT, {:.0} % of the {size} ephemeral ports: {client} {runs_out} of source ports",
            used * 100.0
        ),
    );
    f.evidence.push(format!(
        "{tw} TIME_WAIT sockets to {dest} ({tw_total} in all); net.ipv4.ip_local_port_range {} = {size} ports",
        i.host.sysctl("net.ipv4.ip_local_port_range").unwrap_or("?")
    ));
    if let Some((pid, p, connects)) = hit.first() {
        f.evidence.push(format!(
            "{} opened {connects} connections to {dest} in {:.1} s and closed {} of them itself (each close holds the port 60 s)",
            who(*pid, &p.comm),
            i.seconds,
            p.stats.active_closes
        ));
    }
    f.evidence
        .push("connect() then fails with EADDRNOTAVAIL, which no TCP tracepoint sees".into());
    f.figures.insert("time_wait", tw as f64);
    f.figures.insert("port_range_size", size as f64);
    f.fix.push(format!(
        "Reuse connections in {client} (keep-alive / a connection pool) instead of one connection per request."
    ));
    f.fix.push(format!(
        "Widen net.ipv4.ip_local_port_range (now {}) to \"1024 65535\".",
        i.host.sysctl("net.ipv4.ip_local_port_range").unwrap_or("?")
    ));
    if i.host.sysctl_u64("net.ipv4.tcp_tw_reuse") != Some(1) {
        f.fix.push(format!(
            "Set net.ipv4.tcp_tw_reuse=1 (now {}) so outgoing connections may reuse TIME_WAIT ports.",
            i.host.sysctl("net.ipv4.tcp_tw_reuse").unwrap_or("?")
        ));
    }
    f.fix
        .push("Or spread connections over more source IPs / destination ports.".into());
    f.affected = affected(&hit, "client");
    Outcome {
        checked,
        findings: vec![f],
    }
}
