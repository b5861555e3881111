//! Causes 4a and 4b: resets on close (unread data, SO_LINGER 0 and
//! other application aborts).

use super::*;
use crate::aggregate::QUIET_GAP_NS;

fn rst_sent_by<'a>(agg: &'a Aggregate, reasons: &'a [&'a str]) -> Hits<'a> {
    processes_with(agg, |s| reasons.iter().map(|r| s.rst_sent_with(r)).sum())
}

/// Cause 4a: close() with unread received data sends an RST.
pub(super) fn close_with_unread_data(i: &Inputs) -> Outcome {
    let events = i.agg.total.rst_sent_with("TCP_ABORT_ON_CLOSE");
    let counter = i.host.counter("TcpExtTCPAbortOnClose");
    let checked = format!(
        "close with unread data: {events} RSTs with reason TCP_ABORT_ON_CLOSE, TcpExtTCPAbortOnClose {counter:+}"
    );
    let hit = rst_sent_by(i.agg, &["TCP_ABORT_ON_CLOSE"]);
    if events == 0
        && counter == 0
        && let Some(f) = closed_unread_elsewhere(i)
    {
        return Outcome {
            checked,
            findings: vec![f],
        };
    }
    // One stray abort (an unrelated process in host-wide mode) is worth
    // listing, not an alarm.
    let (confidence, score) = match events {
        0 if counter >= 3 => (Confidence::Medium, counter as u64),
        0 if counter > 0 => (Confidence::Low, counter as u64),
        0 => {
            return Outcome {
                checked,
                findings: Vec::new(),
            };
        }
        1 => (Confidence::Low, events),
        2 => (Confidence::Medium, events),
        _ => (Confidence::High, events),
    };
    let culprit = hit.first().map_or_else(
        || "a local process".into(),
        |(pid, p, _)| who(*pid, &p.comm),
    );
    let mut f = Finding::new(
        Cause::CloseWithUnreadData,
        confidence,
        score,
        format!(
            "{culprit} closed {score} connections with unread data; the kernel sent an RST instead of a FIN"
        ),
    );
    for (pid, p, n) in hit.iter().take(3) {
        f.evidence.push(format!(
            "{n} RSTs sent by {} with reason TCP_ABORT_ON_CLOSE{}",
            who(*pid, &p.comm),
            hit.peer(*pid)
                .map_or_else(String::new, |peer| format!(" to {}", endpoint(peer)))
        ));
    }
    f.evidence.push(format!(
        "TcpExtTCPAbortOnClose {counter:+} over {:.1} s",
        i.seconds
    ));
    f.figures.insert("resets", score as f64);
    f.fix.push(format!(
        "In {culprit}: read the request completely (drain the socket) before close(), or shutdown(SHUT_WR) and read until EOF; HTTP servers must consume the request body before replying with an error and closing."
    ));
    f.affected = affected(&hit, "closer");
    Outcome {
        checked,
        findings: vec![f],
    }
}

/// Cause 4a seen from the clients (`--netns` on them) of a server in
/// another namespace of this host: their connections reset while in use,
/// and that namespace counted closes with unread data
/// (`TcpExtTCPAbortOnClose`, the one where it rose most).
fn closed_unread_elsewhere(i: &Inputs) -> Option<Finding> {
    let server_ns = i.host.elsewhere_most("TcpExtTCPAbortOnClose", 3)?;
    let aborts = server_ns.counter("TcpExtTCPAbortOnClose") as u64;
    let hit = processes_with(i.agg, |s| s.rst_while_active);
    let (pid, process, n) = hit.first().copied()?;
    // Resets after complete exchanges, or right after this side's answer,
    // are the peer's abortive close by design (HAProxy's checks read the
    // status line and close with the rest unread): `aborted_by_peer`.
    let s = &process.stats;
    let benign = (s.rst_received_clean + s.rst_received_after_answer).min(n);
    if n < 3 || benign * 10 >= n * 9 {
        return None;
    }
    let peer = hit.peer(pid).map_or_else(|| "its peer".into(), endpoint);
    let me = who(pid, &process.comm);
    let place = server_ns.label();
    let mut f = Finding::new(
        Cause::CloseWithUnreadData,
        Confidence::High,
        n,
        format!(
            "{peer} in {place} closed connections with unread data: {n} connections of {me} were reset while in use"
        ),
    );
    f.evidence.push(format!(
        "{n} RSTs received by {me} in ESTABLISHED with no idle gap, no FIN first ({} cut an exchange short)",
        n - process.stats.rst_received_clean.min(n)
    ));
    f.evidence.push(format!(
        "TcpExtTCPAbortOnClose {aborts:+} in {place} over {:.1} s: its kernel sent an RST instead of a FIN when a close() found received data unread; the namespace of this host where it rose most",
        i.seconds
    ));
    let errors = process.stats.socket_errors_total();
    if errors > 0 {
        f.evidence.push(format!(
            "{me} was handed {errors} socket errors ({})",
            errno_list(&process.stats)
        ));
    }
    f.figures.insert("resets", n as f64);
    f.figures.insert("abort_on_close", aborts as f64);
    f.fix.push(format!(
        "In the server on {peer}: read the request completely (drain the socket) before close(), or shutdown(SHUT_WR) and read until EOF; HTTP servers must consume the request body before replying with an error (413) and closing. `tcptrace diagnose --netns` on {place} names the process."
    ));
    f.affected = affected(&hit, "client");
    Some(f)
}

/// Cause 4b: SO_LINGER 0 (or another application abort) resets
/// connections on close.
pub(super) fn abortive_close(i: &Inputs) -> Outcome {
    const REASONS: [&str; 3] = [
        "TCP_ABORT_ON_LINGER",
        "TCP_STATE",
        "TCP_DISCONNECT_WITH_DATA",
    ];
    // A closing listener's RSTs to its queued connections are
    // `nothing_listening`'s (a restart that did not drain).
    let aborted = |s: &Stats| -> u64 {
        let sent: u64 = REASONS.iter().map(|r| s.rst_sent_with(r)).sum();
        sent.saturating_sub(s.rst_listener_flush)
    };
    let events = aborted(&i.agg.total);
    let checked = format!(
        "abortive closes: {events} RSTs sent with reason {}, {} received on connections in use",
        REASONS.join("/"),
        i.agg.total.rst_while_active
    );
    let hit = processes_with(i.agg, aborted);
    let mut findings = Vec::new();
    // A proxy resetting its own backend connections does it on purpose
    // (HAProxy avoids TIME_WAIT that way): worth knowing, rarely the bug.
    let (apps, proxies): (Vec<_>, Vec<_>) = hit
        .iter()
        .copied()
        .filter(|(pid, ..)| *pid != 0)
        .partition(|(_, p, _)| !is_proxy(&p.comm));
    for (rows, proxy) in [(apps, false), (proxies, true)] {
        let group = processes_with(i.agg, aborted).with_rows(rows);
        let Some((pid, process, n)) = group.first().copied() else {
            continue;
        };
        let total: u64 = group.iter().map(|g| g.2).sum();
        // After a complete exchange (nothing in flight, nothing unread,
        // the last request answered) an abortive close loses nothing.
        let clean = process.stats.rst_sent_clean.min(n);
        // Idle connections it reset that local clients then reused: they
        // got ECONNRESET, so something was lost; `idle_timeouts` names
        // the idle timeout as the cause.
        let idle_resets: u64 = i
            .agg
            .closers
            .iter()
            .filter(|(_, c)| c.pid == pid)
            .map(|(_, c)| c.idle_resets)
            .sum();
        let benign = idle_resets == 0 && (proxy || clean * 10 >= n * 9);
        let confidence = match (benign, n) {
            // Explained by the idle-timeout finding.
            _ if idle_resets > 0 => Confidence::Low,
            // Benign, or a single stray abort.
            (true, _) | (false, 1) => Confidence::Low,
            (false, 2) => Confidence::Medium,
            (false, _) => Confidence::High,
        };
        let reasons: Vec<String> = REASONS
            .iter()
            .filter_map(|r| {
                let c = process.stats.rst_sent_with(r);
                (c > 0).then(|| format!("{r} {c}"))
            })
            .collect();
        let summary = if idle_resets > 0 {
            format!(
                "{} closed {n} connections with an RST (SO_LINGER 0), {idle_resets} of them idle pooled connections its clients received the RST on and then got ECONNRESET reusing: its idle timeout (see the idle-timeout finding)",
                who(pid, &process.comm)
            )
        } else if benign && clean > 0 {
            format!(
                "{} closed {n} connections with an RST (SO_LINGER 0) after complete exchanges: nothing was lost; benign by design",
                who(pid, &process.comm)
            )
        } else {
            format!(
                "{} aborted {n} connections with an RST on close (SO_LINGER 0 or abort)",
                who(pid, &process.comm)
            )
        };
        let mut f = Finding::new(Cause::LingerZeroAbort, confidence, total, summary);
        f.evidence.push(format!(
            "{n} RSTs sent by {} ({}){}",
            who(pid, &process.comm),
            reasons.join(", "),
            group
                .peer(pid)
                .map_or_else(String::new, |p| format!(", mostly to {}", endpoint(p)))
        ));
        if let Some(age) = process.stats.age_at_rst.percentiles() {
            f.evidence
                .push(format!("connections were {} old when reset", spread(&age)));
        }
        f.evidence.push(format!(
            "{clean} of the {n} after a complete exchange (nothing unacknowledged, nothing unread, the last request answered), {} with data lost",
            process.stats.rst_lost_data
        ));
        if proxy {
            f.evidence.push(format!(
                "{} is a proxy: it resets connections on purpose to avoid TIME_WAIT; harmless unless the peers log the resets as errors",
                process.comm
            ));
            f.fix.push(
                "HAProxy: remove `option nolinger` where set; otherwise nothing to fix.".into(),
            );
        } else if idle_resets > 0 {
            f.fix.push(format!(
                "{} resets idle connections its clients still hold in their pools: raise its idle timeout above the clients' pool idle time (or lower theirs below it), and close idle connections with a FIN rather than SO_LINGER 0 so clients see EOF before reuse.",
                who(pid, &process.comm)
            ));
        } else if benign {
            f.fix.push(format!(
                "Nothing is lost: {} resets connections it has finished with (SO_LINGER 0). If the peers log these resets as errors, close normally (FIN) instead, or have them treat ECONNRESET after a complete response as a normal end.",
                who(pid, &process.comm)
            ));
        } else {
            f.fix.push(format!(
                "In {}: do not set SO_LINGER {{on, 0}} before close(); close normally (FIN) and let TIME_WAIT happen, or fix port exhaustion with pooling / tcp_tw_reuse instead.",
                who(pid, &process.comm)
            ));
        }
        f.figures.insert("resets", n as f64);
        f.affected = affected(&group, "closer");
        findings.push(f);
    }
    // Aborts by a peer we do not see: only the receiving side is here.
    let local = events + i.agg.total.rst_sent_with("TCP_ABORT_ON_CLOSE");
    if local == 0 {
        findings.extend(aborted_by_peer(i));
    }
    Outcome { checked, findings }
}

/// RSTs that came from fewer hops away than the peer's own segments: a
/// load balancer, firewall (`REJECT --reject-with tcp-reset`), NAT or
/// IDS on the path sent them, not the server. Needs the TC programs
/// (origin on `rst_received`).
pub(super) fn forged_on_path(i: &Inputs) -> Outcome {
    let origins = &i.agg.total.rst_origin;
    let count = |o: &str| origins.get(o).copied().unwrap_or(0);
    let forged = count("middlebox");
    let checked = format!(
        "resets forged on the path: {forged} received RSTs from a middlebox, {} from the peer, {} of unknown origin",
        count("peer"),
        count("unknown")
    );
    let hit = processes_with(i.agg, |s| s.forged_hops.values().sum());
    let Some((pid, process, n)) = hit.first().copied() else {
        return Outcome {
            checked,
            findings: Vec::new(),
        };
    };
    let stats = &process.stats;
    let peer = hit.peer(pid).map_or_else(|| "the peer".into(), endpoint);
    let hops: Vec<String> = stats
        .forged_hops
        .iter()
        .map(|(h, c)| format!("{c} from {h} hop(s) closer"))
        .collect();
    let nearest = stats.forged_hops.keys().next().copied().unwrap_or(0);
    let confidence = if forged >= 3 {
        Confidence::High
    } else {
        Confidence::Medium
    };
    let mut f = Finding::new(
        Cause::ResetOnPath,
        confidence,
        forged,
        format!(
            "{n} RSTs received by {} were not sent by {peer}: a device on the path ({nearest} hop(s) from the peer towards this host) forged them",
            who(pid, &process.comm)
        ),
    );
    f.evidence.push(format!(
        "{} RSTs with a TTL / hop limit higher than the peer's own segments: {}",
        n,
        hops.join(", ")
    ));
    let peer_sent = stats.rst_origin.get("peer").copied().unwrap_or(0);
    if peer_sent > 0 {
        f.evidence.push(format!(
            "{peer_sent} other RSTs did come from {peer} itself"
        ));
    }
    f.figures.insert("resets", forged as f64);
    f.figures.insert("hops_closer", f64::from(nearest));
    let idle = stats.forged_idle.percentiles();
    match idle {
        Some(p) if p.min_ns >= QUIET_GAP_NS => {
            // After quiet gaps the idle-timeout rules own the cause (and
            // bound the timeout from the reuses that worked); this is the
            // proof that a device on the path, not the server, sent them.
            f.confidence = Confidence::Low;
            f.summary = format!(
                "the {n} RSTs {} received after idle gaps came from a device {nearest} hop(s) in front of {peer}, not from {peer}: the idle timeout is that device's",
                who(pid, &process.comm)
            );
            f.evidence.push(format!(
                "each came after the connection had been idle {}: the device forgot idle flows",
                spread(&p)
            ));
            f.figures.insert("idle_timeout_s", secs(p.p50_ns));
            f.fix.push(format!(
                "The load balancer / NAT / firewall between this host and {peer} drops flows idle ~{:.1} s: raise its idle timeout, or keep {}'s pooled connections idle less than that (pool idle timeout {}, or TCP keepalive below it).",
                secs(p.p50_ns),
                who(pid, &process.comm),
                below(p.p50_ns)
            ));
        }
        _ => {
            if let Some(p) = idle {
                f.evidence.push(format!(
                    "idle before them: {}, not an idle timeout",
                    spread(&p)
                ));
            }
            f.fix.push(format!(
                "Look at the device {nearest} hop(s) in front of {peer} (`traceroute -n` from here names it): a firewall rule rejecting with tcp-reset, a load balancer that lost the flow (restart, failover, connection limit), or an IDS resetting it; its logs, not the server's, tell why."
            ));
        }
    }
    f.fix.push(format!(
        "Do not debug {peer}'s application for these resets: it did not send them."
    ));
    f.affected = affected(&hit, "client");
    Outcome {
        checked,
        findings: vec![f],
    }
}

/// RSTs received on connections in use, from a peer this host does not
/// see: after complete exchanges they are the peer's abortive close by
/// design (low); when they cut exchanges short (data in flight or
/// unread, a request unanswered) the peer aborted them (medium).
fn aborted_by_peer(i: &Inputs) -> Vec<Finding> {
    // RSTs a device on the path forged are `forged_on_path`'s, not the
    // peer's. A client dropping its idle connection to this server is
    // the peer's abortive close too.
    let hit = processes_with(i.agg, |s| {
        s.rst_while_active.saturating_sub(s.forged_while_active) + s.rst_on_idle_accepted
    });
    let Some((pid, process, n)) = hit.first().copied() else {
        return Vec::new();
    };
    let clean = process.stats.rst_received_clean.min(n);
    // Reset right after answering: the client had the answer.
    let answered = process.stats.rst_received_after_answer.min(n - clean);
    let lossy = n - clean - answered;
    let benign = (clean + answered) * 10 >= n * 9;
    if n < 3 && !benign {
        return Vec::new();
    }
    let peer = hit.peer(pid).map_or_else(|| "its peer".into(), endpoint);
    let role = side(&process.stats);
    let me = who(pid, &process.comm);
    let (confidence, summary) = if benign {
        (
            Confidence::Low,
            format!(
                "{peer} closed {n} connections of {me} with an RST after complete exchanges: nothing was lost; benign (an abortive close by design, e.g. HAProxy's SO_LINGER 0 to its servers and its health checks)"
            ),
        )
    } else {
        (
            Confidence::Medium,
            format!("{peer} reset {n} connections of {me} while they were in use"),
        )
    };
    let mut f = Finding::new(
        Cause::LingerZeroAbort,
        confidence,
        hit.iter().map(|h| h.2).sum(),
        summary,
    );
    let idle = process.stats.rst_on_idle_accepted.min(n);
    f.evidence.push(format!(
        "{n} RSTs received by {me} ({role}) in ESTABLISHED, no FIN first{}; no local process sent such RSTs",
        if idle > 0 {
            format!(
                ": {idle} on connections idle both ways (the client dropped an idle connection), {} with no idle gap",
                n - idle
            )
        } else {
            " and no idle gap".to_string()
        }
    ));
    f.evidence.push(format!(
        "{clean} of them after a complete exchange (nothing unacknowledged, nothing unread, the last request answered), {answered} within 200 ms of {me} answering the last request (the answer not yet acknowledged: the client reset once it had it, as HAProxy's HTTP checks do), {lossy} cut an exchange short ({} with data in flight or unread)",
        process.stats.rst_lost_data
    ));
    let errors = process.stats.socket_errors_total();
    if errors > 0 {
        f.evidence.push(format!(
            "{me} was handed {errors} socket errors ({})",
            errno_list(&process.stats)
        ));
    }
    if benign {
        f.fix.push(format!(
            "Nothing to fix on the network: every exchange had completed when {peer} reset it. If {} logs these resets as errors, treat ECONNRESET after a complete response as a normal end; on the peer, a proxy closes server connections with SO_LINGER 0 by design (HAProxy: drop `option nolinger` if set; otherwise works as designed).",
            process.comm
        ));
    } else {
        f.fix.push(format!(
            "On {peer}: look for SO_LINGER 0 or close() with unread data (its TcpExtTCPAbortOnClose / TCPAbortOnLinger counters), or a proxy/firewall in between resetting; run `tcptrace diagnose` there."
        ));
    }
    f.figures.insert("resets", n as f64);
    f.figures.insert("clean_resets", clean as f64);
    f.affected = hit
        .iter()
        .take(5)
        .map(|(pid, p, n)| Affected {
            pid: *pid,
            comm: p.comm.clone(),
            peer: hit.peer(*pid),
            events: *n,
            role: side(&p.stats),
            cgroup_id: p.cgroup_id,
            cgroup: None,
        })
        .collect();
    vec![f]
}

/// Which side of its connections a process is on: accepted connections
/// are keyed by the client's address with port 0.
fn side(stats: &Stats) -> &'static str {
    match top_peer(stats) {
        Some(peer) if peer.port() == 0 => "server",
        _ => "client",
    }
}

/// `ECONNRESET 60, EPIPE 2`
pub(super) fn errno_list(stats: &Stats) -> String {
    stats
        .socket_errors
        .iter()
        .map(|(e, n)| format!("{e} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
