//! Causes 1, 7 and 8: idle timeouts (LB / middlebox, server keep-alive)
//! and half-open connections after a peer restart. The silent middlebox
//! (cause 13) is in `blackhole.rs` and bounds its timeout the same way:
//! from reuses that worked next to reuses that failed.

use super::*;
use crate::aggregate::{IdleBound, IdleRange, ReuseOutcomes};

/// No idle-timeout theory from idle gaps shorter than this: a connection
/// the peer closed (or reset) a millisecond after its last exchange was
/// not idle, whatever else went wrong with it.
pub(super) const MIN_IDLE_NS: u64 = 100_000_000;

/// A remote endpoint whose failed reuses idle alone explains.
pub(super) struct Bounded<'a> {
    /// The endpoint (the load balancer's or service's address).
    pub peer: SocketAddr,
    /// Its figures.
    pub stats: &'a Stats,
    /// The timeout's bounds.
    pub bound: IdleBound,
}

/// Remote endpoints whose reuses failed (`failed` picks which failures)
/// exactly when idle longer than every reuse that worked, most failures
/// first.
pub(super) fn idle_bounded_peers(
    agg: &Aggregate,
    failed: impl Fn(&ReuseOutcomes) -> IdleRange,
) -> Vec<Bounded<'_>> {
    let mut all: Vec<_> = agg
        .peers
        .iter()
        .filter_map(|(peer, stats)| {
            let bound = stats
                .reuse_outcomes
                .bound(failed(&stats.reuse_outcomes), MIN_IDLE_NS)?;
            Some(Bounded {
                peer: *peer,
                stats,
                bound,
            })
        })
        .collect();
    all.sort_by(|a, b| {
        b.bound
            .failed
            .cmp(&a.bound.failed)
            .then(a.peer.cmp(&b.peer))
    });
    all
}

/// Processes with a positive `count` that talked to `peer`, heaviest
/// first (all with a positive count if none is known to have).
pub(super) fn processes_for_peer<'a>(
    agg: &'a Aggregate,
    peer: SocketAddr,
    count: impl Fn(&Stats) -> u64 + 'a,
) -> Hits<'a> {
    let all = processes_with(agg, count);
    let related: Vec<_> = all
        .iter()
        .copied()
        .filter(|(_, p, _)| p.stats.related.get(&Related::Peer(peer)).is_some())
        .collect();
    if related.is_empty() {
        all
    } else {
        all.with_rows(related)
    }
}

/// `1.50s-2.10s` or `2.00s` for a single value.
pub(super) fn range_text(r: &IdleRange) -> String {
    if r.count <= 1 || r.min_ns == r.max_ns {
        duration_ns(r.min_ns)
    } else {
        format!("{}-{}", duration_ns(r.min_ns), duration_ns(r.max_ns))
    }
}

/// "between 2.15s and 4.00s" / "at most 4.00s".
pub(super) fn bound_text(b: &IdleBound) -> String {
    match b.survived_ns {
        Some(low) => format!(
            "between {} and {}",
            duration_ns(low),
            duration_ns(b.failed_ns)
        ),
        None => format!("at most {}", duration_ns(b.failed_ns)),
    }
}

/// A pool idle time that worked: the longest surviving gap rounded down
/// to a tenth of a second; without one, 80 % of the failing gap.
pub(super) fn safe_idle(b: &IdleBound) -> String {
    match b.survived_ns {
        Some(low) => format!("{:.1} s", (secs(low) * 10.0).floor() / 10.0),
        None => below(b.failed_ns),
    }
}

/// The figures every idle-bound finding carries.
pub(super) fn bound_figures(f: &mut Finding, b: &IdleBound) {
    f.figures.insert("idle_timeout_s", secs(b.estimate_ns()));
    f.figures.insert("idle_failed_s", secs(b.failed_ns));
    if let Some(low) = b.survived_ns {
        f.figures.insert("idle_survived_s", secs(low));
    }
    f.figures.insert("reuses_failed", b.failed as f64);
    f.figures.insert("reuses_worked", b.worked as f64);
}

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
    if let Some(f) = fin_first_finding(i.agg, &hit) {
        findings.push(f);
    }

    // Seen from the server's side only (its clients elsewhere): it closed
    // idle connections, then data arrived on them and it answered RSTs.
    if findings.is_empty() {
        let mut closers: Vec<_> = i
            .agg
            .closers
            .iter()
            .filter(|(_, c)| {
                c.late_data_resets > 0
                    && c.idle.percentiles().is_none_or(|p| p.p50_ns >= MIN_IDLE_NS)
            })
            .collect();
        closers.sort_by_key(|(ep, c)| (std::cmp::Reverse(c.late_data_resets), **ep));
        if let Some((ep, c)) = closers.first() {
            findings.push(late_data_finding(**ep, c));
        }
    }

    // No FIN, but the RSTs were seen leaving a local process: its own
    // idle timeout, closing with SO_LINGER 0, not a middlebox.
    if let Some(f) = idle_reset_finding(i.agg) {
        findings.push(f);
    }

    // No FIN: something in between forgot the flow. Reuses that worked
    // next to reuses that were reset bound its timeout.
    let mut bounded = idle_bounded_peers(i.agg, |r| r.reset);
    bounded.retain(|b| !reset_by_local_closer(b.stats));
    if let Some(b) = bounded.first() {
        findings.push(reset_on_reuse_finding(i.agg, b, &bounded));
    } else if let Some(f) = clustered_quiet_gap_finding(i.agg) {
        findings.push(f);
    }
    Outcome { checked, findings }
}

/// Most of these quiet-gap RSTs were sent by a traced local process: its
/// own idle close explains them, not a device in between.
/// Unprovoked resets this close together are one event at the peer.
const BURST_NS: u64 = 1_000_000_000;

/// The resets after quiet gaps are (nearly all) unprovoked, at least two,
/// and arrived within `BURST_NS` of each other: the peer reset its idle
/// connections at one moment (a restart or shutdown: a closing listener
/// resets every connection still in its accept queue, a killed process
/// with unread data resets its own), not each connection's idle timer
/// running out, which fires at its own moment after its own last packet.
fn unprovoked_burst(s: &Stats) -> bool {
    s.rst_unprovoked >= 2
        && s.rst_unprovoked * 10 >= s.rst_after_quiet_gap * 9
        && s.rst_unprovoked_span.len_ns() <= BURST_NS
}

pub(super) fn reset_by_local_closer(s: &Stats) -> bool {
    s.rst_after_quiet_gap_from_local > 0
        && s.rst_after_quiet_gap_from_local * 2 >= s.rst_after_quiet_gap
}

/// A local server (or proxy) closes idle connections with an RST
/// (SO_LINGER 0): local clients received those very RSTs after idle gaps
/// and got ECONNRESET when they reused the connections.
fn idle_reset_finding(agg: &Aggregate) -> Option<Finding> {
    let mut closers: Vec<_> = agg
        .closers
        .iter()
        .filter(|(_, c)| {
            c.idle_resets > 0 && c.idle.percentiles().is_none_or(|p| p.p50_ns >= MIN_IDLE_NS)
        })
        .collect();
    closers.sort_by_key(|(ep, c)| (std::cmp::Reverse(c.idle_resets), **ep));
    let (ep, c) = closers.first().copied()?;
    let n = c.idle_resets;
    let idle = c.idle.percentiles();
    let proxy = is_proxy(&c.comm);
    let cause = if proxy {
        Cause::LbIdleTimeout
    } else {
        Cause::ServerKeepaliveTimeout
    };
    let confidence = match idle {
        Some(p) if n >= 2 && p.count >= 2 && p.clustered(CLUSTER) => Confidence::High,
        Some(_) => Confidence::Medium,
        None => Confidence::Low,
    };
    let closer = who(c.pid, &c.comm);
    let idle_text = idle.map_or_else(|| "an unknown idle time".into(), |p| duration_ns(p.p50_ns));
    let clients = processes_with(agg, |s| s.rst_after_quiet_gap_from_local);
    let econnreset: u64 = clients
        .iter()
        .map(|(_, p, _)| {
            p.stats
                .socket_errors
                .get("ECONNRESET")
                .copied()
                .unwrap_or(0)
        })
        .sum();
    let client_text = clients
        .first()
        .map_or_else(|| "its clients".into(), |(pid, p, _)| who(*pid, &p.comm));
    let mut f = Finding::new(
        cause,
        confidence,
        n,
        format!(
            "{closer} on {ep} closes connections idle {idle_text} with an RST (SO_LINGER 0): {client_text} got {n} RSTs on idle pooled connections{}",
            if econnreset > 0 {
                format!(" and ECONNRESET {econnreset} times on reuse")
            } else {
                String::new()
            }
        ),
    );
    f.evidence.push(format!(
        "{n} RSTs sent by {closer} from {ep} were received by local clients on the same connections (4-tuple reversed) after an idle gap: the server closed them, no middlebox"
    ));
    if let Some(p) = idle {
        f.evidence.push(format!(
            "the connections had been idle {}: {closer}'s idle (keep-alive) timeout is ~{:.1} s, the clients' pool keeps connections idle longer",
            spread(&p),
            secs(p.p50_ns)
        ));
        f.figures.insert("idle_timeout_s", secs(p.p50_ns));
    }
    if econnreset > 0 {
        f.evidence.push(format!(
            "the clients were handed ECONNRESET {econnreset} times: requests on those connections failed"
        ));
    }
    f.fix.push(match idle {
        Some(p) => format!(
            "Raise {closer}'s idle (keep-alive) timeout above the clients' pool idle time, or lower the pool's idle time below {:.1} s (e.g. {}).",
            secs(p.p50_ns),
            below(p.p50_ns)
        ),
        None => format!(
            "Raise {closer}'s idle (keep-alive) timeout above the clients' pool idle time, or lower the pool's idle time below it."
        ),
    });
    f.fix.push(format!(
        "{closer} closes idle connections with an RST (SO_LINGER 0): close them with a FIN instead, so a client sees EOF before reusing the connection rather than ECONNRESET after sending on it; clients should retry idempotent requests once on ECONNRESET."
    ));
    f.figures.insert("resets", n as f64);
    f.figures.insert("econnreset", econnreset as f64);
    f.affected.push(Affected {
        pid: c.pid,
        comm: c.comm.clone(),
        peer: None,
        events: n,
        role: "closer",
        cgroup_id: c.cgroup_id,
        cgroup: None,
    });
    f.affected.extend(affected(&clients, "client"));
    Some(f)
}

/// The peer closed (FIN) connections the clients in `hit` then reused:
/// its idle timeout is how long they had been idle when it closed them.
fn fin_first_finding(agg: &Aggregate, hit: &Hits) -> Option<Finding> {
    let (pid, process, resets) = hit.first().copied()?;
    let stats = &process.stats;
    let peer = hit.peer(pid);
    let closer = peer.and_then(|p| agg.closers.get(&p));
    let idle = stats
        .peer_close_idle
        .percentiles()
        .or_else(|| closer.and_then(|c| c.idle.percentiles()));
    if idle.is_some_and(|p| p.p50_ns < MIN_IDLE_NS) {
        // Closed right after its last exchange: no idle timeout.
        return None;
    }
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
    let idle_text = idle.map_or_else(|| "an unknown idle time".into(), |p| duration_ns(p.p50_ns));
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
    f.affected = affected(hit, "client");
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
    Some(f)
}

/// RSTs, no FIN first, on reuses idle longer than every reuse that
/// worked: a load balancer / NAT that forgot the flows and rejects them.
fn reset_on_reuse_finding(agg: &Aggregate, b: &Bounded, all: &[Bounded]) -> Finding {
    let bound = &b.bound;
    let peer = endpoint(b.peer);
    let resets = &b.stats.reuse_outcomes.reset;
    let worked = b.stats.reuse_outcomes.worked();
    let hit = processes_for_peer(agg, b.peer, |s| s.reuse_outcomes.reset.count);
    let (pid, comm) = hit
        .first()
        .map_or((0, "?"), |(pid, p, _)| (*pid, p.comm.as_str()));
    let clustered = resets.max_ns as f64 <= resets.min_ns as f64 * (1.0 + 2.0 * CLUSTER);
    let confidence = if (bound.failed >= 2 && bound.worked >= 1) || (bound.failed >= 3 && clustered)
    {
        Confidence::High
    } else {
        Confidence::Medium
    };
    let mut f = Finding::new(
        Cause::LbIdleTimeout,
        confidence,
        all.iter().map(|b| b.bound.failed).sum(),
        format!(
            "{} got {} RSTs from {peer} on connections reused after {} idle with no FIN first{}: something in between (load balancer / NAT / firewall) forgets flows idle longer than ~{:.1} s",
            who(pid, comm),
            bound.failed,
            range_text(resets),
            bound.survived_ns.map_or_else(String::new, |low| format!(
                ", while {} reuses after up to {} idle worked",
                bound.worked,
                duration_ns(low)
            )),
            secs(bound.estimate_ns())
        ),
    );
    f.evidence.push(format!(
        "{} RSTs received from {peer} in ESTABLISHED right after the first send following an idle gap of {}; the peer never closed (no FIN)",
        bound.failed,
        range_text(resets)
    ));
    if worked.count > 0 {
        f.evidence.push(format!(
            "{} reuses after idle gaps of {} were answered: flows survive {} idle but not {}: the idle timeout lies {}",
            worked.count,
            range_text(&worked),
            duration_ns(worked.max_ns),
            duration_ns(bound.failed_ns),
            bound_text(bound)
        ));
    } else {
        f.evidence.push(format!(
            "no reuse after an idle gap worked: the idle timeout is {}",
            bound_text(bound)
        ));
    }
    bound_figures(&mut f, bound);
    f.figures.insert("resets", bound.failed as f64);
    f.fix.push(format!(
        "Keep pooled connections to {peer} idle no longer than {} (after {} they were reset): set {comm}'s pool idle timeout / max idle to that, or enable TCP keepalive below it (SO_KEEPALIVE, TCP_KEEPIDLE of {} or less) where the device counts keepalives as activity.",
        safe_idle(bound),
        duration_ns(bound.failed_ns),
        safe_idle(bound),
    ));
    f.fix.push("Or raise the middlebox's idle timeout above the pool's idle time (Linux conntrack: net.netfilter.nf_conntrack_tcp_timeout_established; IPVS: `ipvsadm --set`; AWS NLB 350 s, ALB 60 s, Azure LB 4 min, GCP 10 min).".into());
    f.fix
        .push("Retry idempotent requests once on ECONNRESET, on a fresh connection.".into());
    f.affected = affected(&hit, "client");
    f
}

/// Without reuse events (not traced): RSTs after quiet gaps whose idle
/// times cluster around one value.
fn clustered_quiet_gap_finding(agg: &Aggregate) -> Option<Finding> {
    let mut hit = processes_with(agg, |s| s.rst_after_quiet_gap);
    hit.retain(|(_, p, _)| {
        p.stats.reuse_outcomes.reset.count == 0
            && quiet_gaps_cluster(&p.stats)
            && !reset_by_local_closer(&p.stats)
            && !peer_burst(&p.stats)
    });
    let (pid, process, resets) = hit.first().copied()?;
    let idle = process
        .stats
        .quiet_gap_idle
        .percentiles()
        .expect("filtered above");
    let peer = hit.peer(pid).map_or_else(|| "its peer".into(), endpoint);
    let confidence = if resets >= 3 {
        Confidence::High
    } else {
        Confidence::Medium
    };
    let all: u64 = hit.iter().map(|h| h.2).sum();
    if sent_by_peer(&process.stats, resets) {
        return Some(peer_idle_reset_finding(
            (pid, process, resets),
            &idle,
            &peer,
            confidence,
            &hit,
        ));
    }
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
    let when = if process.stats.rst_unprovoked * 2 > resets {
        "while idle both ways (nothing sent since the gap: unprovoked, as a device resetting idle flows sends them)"
    } else {
        "right after the first send following an idle gap"
    };
    f.evidence.push(format!(
        "{resets} RSTs received by {} from {peer} in ESTABLISHED, {when} of {}",
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
    Some(f)
}

fn quiet_gaps_cluster(stats: &Stats) -> bool {
    stats
        .quiet_gap_idle
        .percentiles()
        .is_some_and(|q| q.count >= 2 && q.p50_ns >= MIN_IDLE_NS && q.clustered(CLUSTER))
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
    // Resets an idle timeout explains belong to `idle_timeouts`.
    let explained: Vec<SocketAddr> = idle_bounded_peers(i.agg, |r| r.reset)
        .iter()
        .map(|b| b.peer)
        .collect();
    let mut hit = processes_with(i.agg, |s| s.rst_after_quiet_gap);
    let peer_of = |pid: u32| top_peer_by(i.agg, pid, |s| s.rst_after_quiet_gap);
    hit.retain(|(pid, p, _)| {
        let by_reuse = p.stats.reuse_outcomes.reset.count > 0;
        let idle_explains = if by_reuse {
            peer_of(*pid).is_some_and(|peer| explained.contains(&peer))
                || p.stats
                    .reuse_outcomes
                    .bound(p.stats.reuse_outcomes.reset, MIN_IDLE_NS)
                    .is_some()
        } else {
            quiet_gaps_cluster(&p.stats) && !unprovoked_burst(&p.stats)
        };
        !idle_explains && !reset_by_local_closer(&p.stats) && !forged(&p.stats)
    });
    let mut findings = Vec::new();
    if let Some((pid, process, resets)) = hit.first().copied() {
        if peer_burst(&process.stats) {
            let peer = hit.peer(pid);
            findings.push(restart_burst_finding(pid, process, peer, &hit));
            return Outcome { checked, findings };
        }
        let idle = process.stats.quiet_gap_idle.percentiles();
        let peer = hit.peer(pid).map_or_else(|| "its peer".into(), endpoint);
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
        let r = &process.stats.reuse_outcomes;
        let worked = r.worked();
        if r.reset.count > 0 && worked.count > 0 && worked.max_ns >= r.reset.min_ns {
            f.evidence.push(format!(
                "reuses after up to {} idle worked while one after {} was reset: how long a connection idled does not decide it",
                duration_ns(worked.max_ns),
                duration_ns(r.reset.min_ns)
            ));
        }
        f.fix.push("Enable TCP keepalive on the client's pooled connections (SO_KEEPALIVE; net.ipv4.tcp_keepalive_time=60, tcp_keepalive_intvl=10, tcp_keepalive_probes=3) or application pings, so dead connections are found before use.".into());
        f.fix.push("Make the peer drain connections with a FIN before it exits, and retry idempotent requests once on reset.".into());
        f.affected = affected(&hit, "client");
        findings.push(f);
    }
    Outcome { checked, findings }
}

/// An unprovoked burst the peer itself sent (none forged on the path).
fn peer_burst(s: &Stats) -> bool {
    unprovoked_burst(s) && !forged(s)
}

/// Most received RSTs of `s` whose origin is known came from a middlebox
/// (forged on the path): `reset_on_path` speaks for them.
fn forged(s: &Stats) -> bool {
    let of = |o: &str| s.rst_origin.get(o).copied().unwrap_or(0);
    of("middlebox") > 0 && of("middlebox") >= of("peer")
}

/// A client's idle connections reset by its peer at one moment
/// (`unprovoked_burst`): the peer restarted or shut down without
/// draining them.
fn restart_burst_finding(
    pid: u32,
    process: &Process,
    peer: Option<SocketAddr>,
    hit: &Hits<'_>,
) -> Finding {
    let s = &process.stats;
    let me = who(pid, &process.comm);
    let peer_text = peer.map_or_else(|| "its peer".into(), endpoint);
    let n = s.rst_unprovoked;
    let from_peer = s.rst_origin.get("peer").copied().unwrap_or(0);
    let confidence = if n >= 3 && (s.refused > 0 || from_peer * 2 >= n) {
        Confidence::High
    } else {
        Confidence::Medium
    };
    let mut f = Finding::new(
        Cause::HalfOpenAfterPeerRestart,
        confidence,
        hit.iter().map(|h| h.2).sum(),
        format!(
            "{me} had {n} idle connections to {peer_text} reset at one moment, with nothing sent on them: the peer restarted or shut down without draining its connections"
        ),
    );
    f.evidence.push(format!(
        "{n} RSTs received in ESTABLISHED within {} of each other, on connections idle both ways (nothing sent since the gap, so no send of {me} provoked them); an idle timer would reset each connection at its own moment",
        duration_ns(s.rst_unprovoked_span.len_ns())
    ));
    if from_peer > 0 {
        f.evidence.push(format!(
            "{from_peer} of the received RSTs came from the peer itself (same hop count as its own segments), none forged on the path"
        ));
    }
    if s.refused > 0 {
        f.evidence.push(format!(
            "{} connects by {me} to {peer_text} refused (RST to the SYN) in the same run: nothing listened there for a while",
            s.refused
        ));
    }
    f.evidence.push("a listener that closes resets every connection still in its accept queue (never accepted); a process killed with unread data resets its own: both look like this from the client".into());
    f.title = "Peer restarted: its connections were reset at once";
    f.figures.insert("resets", n as f64);
    f.figures
        .insert("burst_s", secs(s.rst_unprovoked_span.len_ns()));
    f.fix.push(format!(
        "Restart the service on {peer_text} without dropping connections: fail its readiness check and drain it from the load balancer first, accept and finish what is queued, then close (or hand the listening socket over: SO_REUSEPORT, systemd socket activation)."
    ));
    f.fix.push(format!(
        "On {}: retry idempotent requests once on ECONNRESET, and validate pooled connections idle for long before use.",
        process.comm
    ));
    f.affected = affected(hit, "client");
    f
}

/// Most of `resets` came from the peer itself (`rst_origin`: the RST's
/// TTL, IP ID and options as the peer's own segments) and none was
/// forged on the path: no device in between timed the flows out.
fn sent_by_peer(s: &Stats, resets: u64) -> bool {
    let of = |o: &str| s.rst_origin.get(o).copied().unwrap_or(0);
    of("middlebox") == 0 && of("peer") * 2 >= resets && of("peer") > 0
}

/// RSTs after quiet gaps clustering around one idle time, sent by the
/// peer itself: its own timeout, closing abortively. After complete
/// exchanges it is the peer's idle (keep-alive) timeout; with the
/// client's last request unanswered, a request timeout that resets.
fn peer_idle_reset_finding(
    (pid, process, resets): (u32, &Process, u64),
    idle: &Percentiles,
    peer: &str,
    confidence: Confidence,
    hit: &Hits<'_>,
) -> Finding {
    let s = &process.stats;
    let me = who(pid, &process.comm);
    let timeout = secs(idle.p50_ns);
    let clean = s.rst_received_clean.min(resets);
    let awaiting = s.rst_awaiting_answer.min(resets);
    let idle_close = awaiting * 2 < resets;
    let all: u64 = hit.iter().map(|h| h.2).sum();
    let mut f = if idle_close {
        let mut f = Finding::new(
            Cause::ServerKeepaliveTimeout,
            confidence,
            all,
            format!(
                "{peer} itself reset {resets} connections of {me} idle {} (no FIN first): its idle timeout (~{timeout:.1} s) closes them abortively, and {} keeps them longer",
                duration_ns(idle.p50_ns),
                process.comm
            ),
        );
        f.fix.push(format!(
            "Keep {}'s pooled connections to {peer} idle less than {timeout:.1} s (pool idle timeout / max idle {}), or have the peer close idle connections with a FIN (no SO_LINGER 0) so the pool sees them go.",
            process.comm,
            below(idle.p50_ns)
        ));
        f
    } else {
        let mut f = Finding::new(
            Cause::LingerZeroAbort,
            confidence,
            all,
            format!(
                "{peer} itself aborted {resets} connections of {me} after ~{timeout:.1} s of silence, its last request unanswered: a timeout on the peer that closes with an RST"
            ),
        );
        f.fix.push(format!(
            "On {peer}: find the timeout of ~{timeout:.1} s that resets (nginx `client_body_timeout` / `send_timeout` with `reset_timedout_connection on`, a proxy's client/server timeout, an application deadline); raise it above what {} needs, or make {} send its request without pausing.",
            process.comm, process.comm
        ));
        f
    };
    f.evidence.push(format!(
        "{resets} RSTs received by {me} from {peer} in ESTABLISHED after quiet gaps of {}, {} of them unprovoked (nothing sent since the gap)",
        spread(idle),
        s.rst_unprovoked.min(resets)
    ));
    f.evidence.push(format!(
        "{} of the received RSTs came from the peer itself (TTL, IP ID and options as its own segments), none forged on the path: no load balancer or NAT in between timed these flows out",
        s.rst_origin.get("peer").copied().unwrap_or(0)
    ));
    f.evidence.push(format!(
        "{awaiting} of them while {}'s last request had no answer yet (it had sent after the last data it received), {clean} after a complete exchange (answered, nothing unacknowledged or unread)",
        process.comm
    ));
    f.figures.insert("idle_timeout_s", timeout);
    f.figures.insert("resets", resets as f64);
    f.fix
        .push("Retry idempotent requests once on ECONNRESET, on a fresh connection.".into());
    f.affected = affected(hit, "client");
    f
}
