//! Cause 6: retransmission (or user / keepalive) timeout, and loss.

use super::*;

/// Data retransmits needed before loss is worth a finding at all.
const MIN_RETRANSMITS: u64 = 20;
/// Retransmitted share of the segments sent from which loss is a
/// problem (medium): 1 % costs a busy transfer much of its throughput.
const LOSS_MEDIUM: f64 = 0.01;
/// From here it is worth mentioning (low).
const LOSS_LOW: f64 = 0.001;

/// Segments retransmitted per segment sent over the run, from the
/// namespace's counters (`TcpRetransSegs` / `TcpOutSegs`); `None` when
/// nothing was sent or the counters are missing.
fn loss_rate(host: &HostFacts) -> Option<(i64, i64, f64)> {
    let out = host.counter("TcpOutSegs");
    let retrans = host.counter("TcpRetransSegs");
    (out > 0).then(|| (retrans, out, retrans as f64 / out as f64))
}

/// Cause 6: loss or a black hole. The connection retransmits, then the
/// kernel gives up (TCP_USER_TIMEOUT, tcp_retries2, keepalive) without
/// any RST from the peer. Retransmits alone are judged against the
/// segments sent: a busy healthy transfer retransmits a few.
pub(super) fn retransmission_timeout(i: &Inputs) -> Outcome {
    let t = &i.agg.total;
    // Sends into flows a middlebox forgot (middlebox_idle_blackhole) are
    // no loss on the path.
    let (idle_retrans, idle_aborts) = blackhole::explained_stalls(i.agg);
    let aborts = t.timeout_aborts.saturating_sub(idle_aborts);
    let keepalive = t.rst_sent_with("TCP_KEEPALIVE_TIMEOUT");
    // Connections stuck retransmitting when the run ended: not dead yet
    // (tcp_retries2 15 gives ~15 min), already lost to their application.
    let forgotten = blackhole::explained_peers(i.agg);
    let stuck: Vec<(SocketAddr, u64)> = i
        .host
        .sockets_end
        .as_ref()
        .map(|s| {
            s.stuck_by_peer
                .iter()
                .filter(|(peer, _)| !forgotten.contains(peer))
                .copied()
                .collect()
        })
        .unwrap_or_default();
    let stuck_total: u64 = stuck.iter().map(|(_, n)| n).sum();
    let counter = i.host.counter("TcpExtTCPAbortOnTimeout");
    let retrans = t.retransmits_total().saturating_sub(idle_retrans);
    let explained = if idle_retrans + idle_aborts > 0 {
        format!(
            " ({idle_retrans} more retransmits and {idle_aborts} more deaths were sends into flows an idle timeout had forgotten)"
        )
    } else {
        String::new()
    };
    let rate = loss_rate(i.host);
    let rate_text = rate.map_or_else(
        || "segments sent unknown".into(),
        |(r, o, x)| {
            format!(
                "{r} of {o} segments sent retransmitted ({:.3} %)",
                x * 100.0
            )
        },
    );
    let checked = format!(
        "retransmission timeouts: {aborts} connections died retransmitting, {stuck_total} stuck retransmitting at the end, {keepalive} keepalive timeouts, {retrans} data retransmits, {rate_text}, TcpExtTCPAbortOnTimeout {counter:+}{explained}"
    );
    let none = || Outcome {
        checked: checked.clone(),
        findings: Vec::new(),
    };
    let hit = processes_with(i.agg, |s| {
        s.timeout_aborts + s.rst_sent_with("TCP_KEEPALIVE_TIMEOUT")
    });
    let unexplained_counter = counter - idle_aborts as i64;
    let died = aborts + keepalive + stuck_total > 0 || (unexplained_counter > 0 && retrans >= 3);
    let mut confidence = if died {
        Confidence::High
    } else if retrans >= MIN_RETRANSMITS {
        match rate {
            Some((_, _, x)) if x >= LOSS_MEDIUM => Confidence::Medium,
            Some((_, _, x)) if x >= LOSS_LOW => Confidence::Low,
            Some(_) => return none(),
            // Unknown denominator: loss counted, not judged.
            None => Confidence::Low,
        }
    } else {
        return none();
    };
    // What the loss looks like: only full-size segments, on timeout, is a
    // path MTU black hole, which its own rule names.
    let full_size_only = pmtu::signature(i);
    if full_size_only && confidence > Confidence::Low {
        confidence = Confidence::Low;
    }
    let hit = if hit.is_empty() {
        processes_with(i.agg, Stats::retransmits_total)
    } else {
        hit
    };
    let Some((pid, process, _)) = hit.first().copied() else {
        return none();
    };
    let peer = hit
        .peer(pid)
        .or(stuck.first().map(|(p, _)| *p))
        .map_or_else(|| "its peer".into(), endpoint);
    let summary = if aborts + keepalive == 0 && stuck_total > 0 {
        format!(
            "{} has {stuck_total} connections to {peer} stuck retransmitting: nothing acknowledged for {} timeouts in a row when the run ended, the peer or the path is gone",
            who(pid, &process.comm),
            crate::diagnosis::facts::STUCK_RTOS
        )
    } else if aborts + keepalive > 0 {
        format!(
            "{} lost {} connections to {peer}: sent without an answer until the kernel gave up",
            who(pid, &process.comm),
            process.stats.timeout_aborts + process.stats.rst_sent_with("TCP_KEEPALIVE_TIMEOUT")
        )
    } else {
        format!(
            "{} retransmitted {} segments to {peer}: packet loss on the path ({rate_text})",
            who(pid, &process.comm),
            process.stats.retransmits_total()
        )
    };
    let mut f = Finding::new(
        Cause::RetransmissionTimeout,
        confidence,
        aborts + keepalive + retrans,
        summary,
    );
    let by_state: Vec<String> = process
        .stats
        .retransmits
        .iter()
        .map(|(s, n)| format!("{n} in {s}"))
        .collect();
    f.evidence.push(format!(
        "{} retransmits by {} ({}), {} SYN retransmits",
        process.stats.retransmits_total(),
        who(pid, &process.comm),
        by_state.join(", "),
        process.stats.syn_retransmits
    ));
    if let Some(p) = process.stats.retransmitting_for.percentiles() {
        f.evidence.push(format!(
            "{} connections closed by the kernel after retransmitting for {} with no RST either way",
            p.count,
            spread(&p)
        ));
        f.figures.insert("retransmitting_for_s", secs(p.p50_ns));
    }
    if stuck_total > 0 {
        let to: Vec<String> = stuck
            .iter()
            .take(3)
            .map(|(p, n)| format!("{n} to {}", endpoint(*p)))
            .collect();
        f.evidence.push(format!(
            "{stuck_total} connections stuck when the run ended ({}): their current segment retransmitted on timeout >= {} times in a row with no ACK for >= 1 s (tcp_info tcpi_retransmits); the application waits until tcp_retries2 (now {}) gives up",
            to.join(", "),
            crate::diagnosis::facts::STUCK_RTOS,
            i.host.sysctl("net.ipv4.tcp_retries2").unwrap_or("?")
        ));
        f.figures.insert("stuck_connections", stuck_total as f64);
    }
    f.evidence.push(shape(i));
    if full_size_only {
        f.evidence.push(
            "only full-size segments were lost, on timeout: the pmtu_black_hole finding names the cause"
                .into(),
        );
    }
    let local_fail = i.host.counter("TcpExtTCPRetransFail");
    if local_fail > 0 {
        f.evidence.push(format!(
            "TcpExtTCPRetransFail {local_fail:+}: retransmits failed on this host before leaving it (a local firewall or qdisc drops them)"
        ));
    }
    if keepalive > 0 {
        f.evidence.push(format!(
            "{keepalive} keepalive timeouts (RST reason TCP_KEEPALIVE_TIMEOUT)"
        ));
    }
    f.evidence.push(format!(
        "{} over {:.1} s",
        counter_line(
            i.host,
            &[
                "TcpExtTCPAbortOnTimeout",
                "TcpExtTCPTimeouts",
                "TcpRetransSegs",
                "TcpOutSegs"
            ]
        ),
        i.seconds
    ));
    f.figures
        .insert("timeout_aborts", (aborts + keepalive) as f64);
    f.figures.insert("retransmits", retrans as f64);
    if let Some((_, _, x)) = rate {
        f.figures.insert("retransmit_rate", x);
    }
    // A netfilter rule on this host that dropped the watched connections'
    // packets is where to look first, not the path beyond.
    let netfilter = i.agg.drops.with_reason("NETFILTER_DROP");
    match netfilter.first() {
        Some((key, g)) => {
            let place = i.host.namespace_label(key.netns);
            let all: u64 = netfilter.iter().map(|(_, g)| g.count).sum();
            f.evidence.push(format!(
                "{all} of the watched connections' packets dropped on this host with reason NETFILTER_DROP, {} of them in {place}: a firewall rule here",
                g.count
            ));
            f.figures.insert("netfilter_drops", all as f64);
            f.fix.push(format!(
                "In {place}: find the rule that drops packets to or from {peer} (`iptables -L -v -n` / `nft list ruleset`: the DROP counters that rise) and allow the connection's traffic."
            ));
        }
        None => f.fix.push(format!(
            "Find where packets to {peer} are lost: a firewall dropping (iptables/nftables DROP, security groups), a dead route, an MTU black hole (try `ping -M do -s 1472`)."
        )),
    }
    f.fix.push(format!(
        "Fail faster meanwhile: TCP_USER_TIMEOUT in the client, or net.ipv4.tcp_retries2 = 8 (now {}, 15 means ~15 min before giving up); keepalive 60 s / 10 s / 3 for idle connections.",
        i.host.sysctl("net.ipv4.tcp_retries2").unwrap_or("?")
    ));
    let role = match hit.peer(pid) {
        Some(p) if p.port() == 0 => "server",
        _ => "client",
    };
    f.affected = affected(&hit, role);
    Outcome {
        checked,
        findings: vec![f],
    }
}

/// What the loss looks like: full-size segments or small ones, repaired
/// fast (duplicate ACKs, SACK) or only after timeouts.
fn shape(i: &Inputs) -> String {
    let t = &i.agg.total;
    let size = if t.sized_retransmits > 0 {
        format!(
            "{} of {} sized retransmits were full-size segments",
            t.full_size_retransmits, t.sized_retransmits
        )
    } else {
        "retransmit sizes unknown".into()
    };
    format!(
        "{size}; {} retransmission timeouts (TcpExtTCPTimeouts) against {} fast retransmits (TcpExtTCPFastRetrans), {} tail loss probes",
        i.host.counter("TcpExtTCPTimeouts"),
        i.host.counter("TcpExtTCPFastRetrans"),
        i.host.counter("TcpExtTCPLossProbes")
    )
}
