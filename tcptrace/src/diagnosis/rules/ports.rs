//! Cause 3: ephemeral port exhaustion.

use super::*;

/// Cause 3: each closed connection holds its port in TIME_WAIT for 60 s;
/// churn to one destination runs out of ephemeral ports and connect()
/// fails with EADDRNOTAVAIL. So does a process that keeps its
/// connections open (a leak, an unbounded pool). The failing connect()
/// sends no SYN: the kernel takes the socket to SYN_SENT, finds no free
/// port (`inet_hash_connect`) and closes it at once, a failed connect
/// with no answer and no retransmit.
pub(super) fn port_exhaustion(i: &Inputs) -> Outcome {
    let range = i.host.port_range();
    let size = range.map(|(lo, hi)| u64::from(hi.saturating_sub(lo)) + 1);
    let sockets = i.host.sockets();
    let tw_total = sockets.map_or(0, |s| s.in_state("TIME_WAIT"));
    // The destination holding the most of our ports, in any state.
    let top = sockets.and_then(|s| {
        let held = s.held_by_peer.first().copied();
        held.or_else(|| s.time_wait_by_peer.first().copied())
    });
    let tw_to = |dest: SocketAddr| {
        sockets.map_or(0, |s| {
            s.time_wait_by_peer
                .iter()
                .find(|(p, _)| *p == dest)
                .map_or(0, |(_, n)| *n)
        })
    };
    let checked = format!(
        "ephemeral ports: {} TIME_WAIT{}, port range {}",
        tw_total,
        top.map_or_else(String::new, |(p, n)| format!(" ({n} to {p})")),
        range.map_or_else(
            || "unknown".into(),
            |(lo, hi)| format!("{lo}-{hi} ({} ports)", hi - lo + 1)
        )
    );
    let none = || Outcome {
        checked: checked.clone(),
        findings: Vec::new(),
    };
    let (Some(size), Some((dest, held))) = (size, top) else {
        return none();
    };
    let tw = tw_to(dest);
    let open = held.saturating_sub(tw);
    // The process that opened (or failed to open) the most connections
    // to it.
    let mut hit = processes_with(i.agg, |s| s.connects + s.connect_failed);
    hit.retain(|(_, p, _)| p.stats.related.get(&Related::Peer(dest)).is_some());
    hit.sort_by_key(|h| std::cmp::Reverse(h.2));
    // Connects that failed with no answer: with the ports gone, at once.
    let failed: u64 = hit
        .iter()
        .map(|(_, p, _)| p.stats.connect_failed.saturating_sub(p.stats.refused))
        .sum();
    let used = held as f64 / size as f64;
    let time_wait = tw * 2 >= held;
    let confidence = if used >= 0.8 && (time_wait || failed > 0) {
        Confidence::High
    } else if used >= 0.5 && (time_wait || failed > 0) {
        Confidence::Medium
    } else {
        // Open connections alone are a pool, not a failure.
        return none();
    };
    let (client, runs_out) = hit.first().map_or_else(
        || ("the clients".to_string(), "run out"),
        |(pid, p, _)| (who(*pid, &p.comm), "runs out"),
    );
    let summary = if time_wait {
        format!(
            "{tw} connections to {dest} sit in TIME_WAIT, {:.0} % of the {size} ephemeral ports: {client} {runs_out} of source ports",
            used * 100.0
        )
    } else {
        format!(
            "{held} sockets to {dest} hold {:.0} % of the {size} ephemeral ports ({open} still open, {tw} in TIME_WAIT): {client} {runs_out} of source ports",
            used * 100.0
        )
    };
    let mut f = Finding::new(Cause::PortExhaustion, confidence, held + failed, summary);
    f.evidence.push(format!(
        "{held} client-side sockets to {dest}: {open} open, {tw} in TIME_WAIT ({tw_total} TIME_WAIT in all); net.ipv4.ip_local_port_range {} = {size} ports",
        i.host.sysctl("net.ipv4.ip_local_port_range").unwrap_or("?")
    ));
    if failed > 0 {
        f.evidence.push(format!(
            "{failed} connects to {dest} failed without an answer: no free source port, connect() fails with EADDRNOTAVAIL before any SYN is sent"
        ));
    }
    if let Some((pid, p, _)) = hit.first() {
        f.evidence.push(format!(
            "{} opened {} connections to {dest} in {:.1} s and closed {} of them itself{}",
            who(*pid, &p.comm),
            p.stats.connects,
            i.seconds,
            p.stats.active_closes,
            if time_wait {
                " (each close holds the port 60 s)"
            } else {
                ""
            }
        ));
    }
    f.figures.insert("time_wait", tw as f64);
    f.figures.insert("held", held as f64);
    f.figures.insert("failed_connects", failed as f64);
    f.figures.insert("port_range_size", size as f64);
    if time_wait {
        f.fix.push(format!(
            "Reuse connections in {client} (keep-alive / a connection pool) instead of one connection per request."
        ));
    } else {
        f.fix.push(format!(
            "Close the connections {client} no longer uses, or bound its pool: {open} connections to {dest} are open at once (a connection leak or an unbounded pool)."
        ));
    }
    f.fix.push(format!(
        "Widen net.ipv4.ip_local_port_range (now {}) to \"1024 65535\".",
        i.host.sysctl("net.ipv4.ip_local_port_range").unwrap_or("?")
    ));
    if time_wait && i.host.sysctl_u64("net.ipv4.tcp_tw_reuse") != Some(1) {
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
