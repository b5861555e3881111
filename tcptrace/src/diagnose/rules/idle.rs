//! Causes 1, 7 and 8: idle timeouts (LB / middlebox, server keep-alive)
//! and half-open connections after a peer restart.

use super::*;

/// Causes 1 and 7: the peer (or something in between) drops idle
/// connections before the client's pool does; the pool's next use of
/// such a connection gets an RST.
pub(super) fn idle_timeouts(i: &Inputs) -> Outcome {
    let total = &i.agg.total;
    let checked = format!(
        "idle timeouts: {} RSTs on reuse after the peer closed, {} after a quiet gap of >= 1 s",
        total.rst_after_peer_close, total.rst_after_quiet_gap
    );
    let mut findings = Vec::new();

    // The peer closed with a FIN first; the client still sent.
    let hit = processes_with(i.agg, |s| s.rst_after_peer_close);
    if let Some((pid, process, resets)) = hit.first().copied() {
        let stats = &process.stats;
        let peer = top_peer(stats);
        let closer = peer.and_then(|p| i.agg.closers.get(&p));
        let idle = stats
            .peer_close_idle
            .percentiles()
            .or_else(|| closer.and_then(|c| c.idle.percentiles()));
        let via_proxy = closer.is_some_and(|c| is_proxy(&c.comm));
        let cause = if via_proxy {
            Cause::LbIdleTimeout
        } else {
            Cause::ServerKeepaliveTimeout
        };
        let confidence = match idle {
            Some(p) if resets >= 2 && p.count >= 2 && p.clustered(CLUSTER) => Confidence::High,
            Some(_) => Confidence::Medium,
            None => Confidence::Low,
        };
        let peer_text = peer.map_or_else(|| "its peer".into(), endpoint);
        let closer_text = match closer {
            Some(c) => format!("{} ", who(c.pid, &c.comm)),
            None => "the peer ".into(),
        };
        let idle_text =
            idle.map_or_else(|| "an unknown idle time".into(), |p| duration_ns(p.p50_ns));
        let all_resets: u64 = hit.iter().map(|h| h.2).sum();
        let mut f = Finding::new(
            cause,
            confidence,
            all_resets,
            format!(
                "{} got {resets} RSTs reusing connections to {peer_text} that {closer_text}had closed after {idle_text} idle",
                who(pid, &process.comm)
            ),
        );
        let reuse = stats.reuse_after_peer_close.percentiles();
        f.evidence.push(format!(
            "{resets} RSTs received by {} from {peer_text} in CLOSE_WAIT: the peer had closed the connection (FIN) and the client sent on it anyway{}",
            who(pid, &process.comm),
            reuse.map_or_else(String::new, |r| format!(", {} after the FIN", spread(&r)))
        ));
        if let Some(p) = idle {
            f.evidence.push(format!(
                "the peer closed connections idle {}: its idle timeout is ~{:.1} s, the pool keeps connections idle longer",
                spread(&p),
                secs(p.p50_ns)
            ));
            f.figures.insert("idle_timeout_s", secs(p.p50_ns));
            f.fix.push(format!(
                "Set the idle timeout of {}'s connection pool below {:.1} s (e.g. {}), or validate pooled connections before reuse (a read returning EOF means the peer closed).",
                process.comm,
                secs(p.p50_ns),
                below(p.p50_ns)
            ));
        }
        match closer {
            Some(c) if via_proxy => f.evidence.push(format!(
                "the closing side is {} on {peer_text}, a proxy/load balancer",
                who(c.pid, &c.comm)
            )),
            Some(c) => f.evidence.push(format!(
                "the closing side is {} on {peer_text}",
                who(c.pid, &c.comm)
            )),
            None => f.evidence.push(
                "the closing side is not on this host (or not watched): a server keep-alive timeout, or a load balancer that closes idle connections with a FIN"
                    .into(),
            ),
        }
        if let Some(r) = reuse {
            f.figures.insert("reuse_after_close_s", secs(r.p50_ns));
        }
        f.figures.insert("resets", resets as f64);
        let idle_s = idle.map(|p| secs(p.p50_ns));
        f.fix.push(match (cause, idle_s) {
            (Cause::LbIdleTimeout, Some(t)) => format!(
                "Or raise the load balancer's idle timeout above the pool's idle time (now ~{t:.1} s; HAProxy: `timeout client` and `timeout http-keep-alive`; AWS ALB: idle_timeout.timeout_seconds)."
            ),
            (Cause::LbIdleTimeout, None) => "Or raise the load balancer's idle timeout above the pool's idle time (HAProxy: `timeout client` and `timeout http-keep-alive`).".into(),
            _ => "Or raise the server's keep-alive timeout above the pool's idle time (nginx keepalive_timeout, Node server.keepAliveTimeout; behind an AWS ALB keep it above 60 s).".into(),
        });
        f.fix
            .push("Retry idempotent requests once on ECONNRESET / EPIPE.".into());
        f.affected = affected(&hit, "client");
        if let Some(c) = closer {
            f.affected.push(Affected {
                pid: c.pid,
                comm: c.comm.clone(),
                peer,
                events: c.idle.count(),
                role: "closer",
                cgroup_id: c.cgroup_id,
                cgroup: None,
            });
        }
        findings.push(f);
    }

    // Seen from the server's side only (its clients elsewhere): it closed
    // idle connections, then data arrived on them and it answered RSTs.
    if findings.is_empty() {
        let mut closers: Vec<_> = i
            .agg
            .closers
            .iter()
            .filter(|(_, c)| c.late_data_resets > 0)
            .collect();
        closers.sort_by_key(|(ep, c)| (std::cmp::Reverse(c.late_data_resets), **ep));
        if let Some((ep, c)) = closers.first() {
            findings.push(late_data_finding(**ep, c));
        }
    }

    // No FIN: a middlebox forgot the flow; its idle times cluster.
    let hit: Vec<_> = processes_with(i.agg, |s| s.rst_after_quiet_gap)
        .into_iter()
        .filter(|(_, p, _)| {
            p.stats
                .quiet_gap_idle
                .percentiles()
                .is_some_and(|q| q.count >= 2 && q.clustered(CLUSTER))
        })
        .collect();
    if let Some((pid, process, resets)) = hit.first().copied() {
        let idle = process
            .stats
            .quiet_gap_idle
            .percentiles()
            .expect("filtered above");
        let peer = top_peer(&process.stats).map_or_else(|| "its peer".into(), endpoint);
        let confidence = if resets >= 3 {
            Confidence::High
        } else {
            Confidence::Medium
        };
        let all: u64 = hit.iter().map(|h| h.2).sum();
        let mut f = Finding::new(
            Cause::LbIdleTimeout,
            confidence,
            all,
            format!(
                "{} got {resets} RSTs from {peer} on connections idle {} with no FIN first: something in between drops idle flows at ~{:.1} s",
                who(pid, &process.comm),
                duration_ns(idle.p50_ns),
                secs(idle.p50_ns)
            ),
        );
        f.evidence.push(format!(
            "{resets} RSTs received by {} from {peer} in ESTABLISHED, right after the first send following an idle gap of {}",
            who(pid, &process.comm),
            spread(&idle)
        ));
        f.evidence.push(
            "the idle times cluster around one value and the peer never closed (no FIN): a load balancer / NAT / firewall idle timeout".into(),
        );
        f.figures.insert("idle_timeout_s", secs(idle.p50_ns));
        f.figures.insert("resets", resets as f64);
        f.fix.push(format!(
            "Set the idle timeout of {}'s connection pool below {:.1} s (e.g. {}), or enable TCP keepalive below it (SO_KEEPALIVE with TCP_KEEPIDLE < {:.0} s) where the middlebox counts keepalives as activity.",
            process.comm,
            secs(idle.p50_ns),
            below(idle.p50_ns),
            secs(idle.p50_ns).max(1.0)
        ));
        f.fix.push("Typical middlebox idle timeouts: AWS ALB 60 s, NLB 350 s, Azure LB 4 min, GCP 10 min; retry idempotent requests once on reset.".into());
        f.affected = affected(&hit, "client");
        findings.push(f);
    }
    Outcome { checked, findings }
}

/// The server-side view of an idle timeout: `closer` on `ep` closed idle
/// connections and later got data on some of them.
fn late_data_finding(ep: SocketAddr, c: &Closer) -> Finding {
    let idle = c.idle.percentiles();
    let proxy = is_proxy(&c.comm);
    let cause = if proxy {
        Cause::LbIdleTimeout
    } else {
        Cause::ServerKeepaliveTimeout
    };
    let n = c.late_data_resets;
    let confidence = match idle {
        Some(p) if n >= 2 && p.count >= 2 && p.clustered(CLUSTER) => Confidence::High,
        Some(_) => Confidence::Medium,
        None => Confidence::Low,
    };
    let idle_text = idle.map_or_else(|| "an unknown idle time".into(), |p| duration_ns(p.p50_ns));
    let mut f = Finding::new(
        cause,
        confidence,
        n,
        format!(
            "{} on {ep} closed idle connections after {idle_text}; clients then sent on {n} of them and got RSTs",
            who(c.pid, &c.comm)
        ),
    );
    f.evidence.push(format!(
        "{n} RSTs sent from {ep} with reason TCP_ABORT_ON_DATA / TCP_TIMEWAIT_SOCKET: data arrived on connections it had already closed"
    ));
    if let Some(p) = idle {
        f.evidence.push(format!(
            "it closed connections idle {}: its idle timeout is ~{:.1} s; the clients keep them idle longer",
            spread(&p),
            secs(p.p50_ns)
        ));
        f.figures.insert("idle_timeout_s", secs(p.p50_ns));
        f.fix.push(format!(
            "Set the clients' pool idle timeout below {:.1} s (e.g. {}), or make them validate pooled connections before reuse.",
            secs(p.p50_ns),
            below(p.p50_ns)
        ));
    }
    f.fix.push(if proxy {
        format!("Or raise {}'s idle timeout above the clients' pool idle time (HAProxy: `timeout client` and `timeout http-keep-alive`).", c.comm)
    } else {
        format!("Or raise {}'s keep-alive timeout above the clients' pool idle time (nginx keepalive_timeout, Node server.keepAliveTimeout).", c.comm)
    });
    f.fix
        .push("Clients should retry idempotent requests once on ECONNRESET.".into());
    f.figures.insert("resets", n as f64);
    f.affected.push(Affected {
        pid: c.pid,
        comm: c.comm.clone(),
        peer: None,
        events: n,
        role: "closer",
        cgroup_id: c.cgroup_id,
        cgroup: None,
    });
    f
}

/// Cause 8: the peer lost its state (restart, failover): RSTs after idle
/// gaps of no particular length, no FIN first.
pub(super) fn half_open(i: &Inputs) -> Outcome {
    let checked = format!(
        "half-open connections: {} RSTs after quiet gaps, idle times {}",
        i.agg.total.rst_after_quiet_gap,
        i.agg
            .total
            .quiet_gap_idle
            .percentiles()
            .map_or_else(|| "n/a".into(), |p| spread(&p))
    );
    let hit: Vec<_> = processes_with(i.agg, |s| s.rst_after_quiet_gap)
        .into_iter()
        .filter(|(_, p, _)| {
            !p.stats
                .quiet_gap_idle
                .percentiles()
                .is_some_and(|q| q.count >= 2 && q.clustered(CLUSTER))
        })
        .collect();
    let mut findings = Vec::new();
    if let Some((pid, process, resets)) = hit.first().copied() {
        let idle = process.stats.quiet_gap_idle.percentiles();
        let peer = top_peer(&process.stats).map_or_else(|| "its peer".into(), endpoint);
        let confidence = if resets >= 2 {
            Confidence::Medium
        } else {
            Confidence::Low
        };
        let mut f = Finding::new(
            Cause::HalfOpenAfterPeerRestart,
            confidence,
            hit.iter().map(|h| h.2).sum(),
            format!(
                "{} got {resets} RSTs from {peer} on long-idle connections the peer no longer knew (no FIN first)",
                who(pid, &process.comm)
            ),
        );
        if let Some(p) = idle {
            f.evidence.push(format!(
                "{resets} RSTs received in ESTABLISHED after idle gaps of {}: no single timeout explains them",
                spread(&p)
            ));
        }
        f.fix.push("Enable TCP keepalive on the client's pooled connections (SO_KEEPALIVE; net.ipv4.tcp_keepalive_time=60, tcp_keepalive_intvl=10, tcp_keepalive_probes=3) or application pings, so dead connections are found before use.".into());
        f.fix.push("Make the peer drain connections with a FIN before it exits, and retry idempotent requests once on reset.".into());
        f.affected = affected(&hit, "client");
        findings.push(f);
    }
    Outcome { checked, findings }
}
