//! Cause 6: retransmission (or user / keepalive) timeout.

use super::*;

/// Cause 6: loss or a black hole. The connection retransmits, then the
/// kernel gives up (TCP_USER_TIMEOUT, tcp_retries2, keepalive) without
/// any RST from the peer.
pub(super) fn retransmission_timeout(i: &Inputs) -> Outcome {
    let t = &i.agg.total;
    // Sends into flows a middlebox forgot (middlebox_idle_blackhole) are
    // no loss on the path.
    let (idle_retrans, idle_aborts) = blackhole::explained_stalls(i.agg);
    let aborts = t.timeout_aborts.saturating_sub(idle_aborts);
    let keepalive = t.rst_sent_with("TCP_KEEPALIVE_TIMEOUT");
    let counter = i.host.counter("TcpExtTCPAbortOnTimeout");
    let retrans = t.retransmits_total().saturating_sub(idle_retrans);
    let explained = if idle_retrans + idle_aborts > 0 {
        format!(
            " ({idle_retrans} more retransmits and {idle_aborts} more deaths were sends into flows an idle timeout had forgotten)"
        )
    } else {
        String::new()
    };
    let checked = format!(
        "retransmission timeouts: {aborts} connections died retransmitting, {keepalive} keepalive timeouts, {retrans} data retransmits, TcpExtTCPAbortOnTimeout {counter:+}{explained}"
    );
    let hit = processes_with(i.agg, |s| {
        s.timeout_aborts + s.rst_sent_with("TCP_KEEPALIVE_TIMEOUT")
    });
    let unexplained_counter = counter - idle_aborts as i64;
    let confidence = if aborts + keepalive > 0 || (unexplained_counter > 0 && retrans >= 3) {
        Confidence::High
    } else if retrans >= 20 {
        Confidence::Medium
    } else {
        return Outcome {
            checked,
            findings: Vec::new(),
        };
    };
    let hit = if hit.is_empty() {
        processes_with(i.agg, Stats::retransmits_total)
    } else {
        hit
    };
    let (pid, process, _) = match hit.first().copied() {
        Some(h) => h,
        None => {
            return Outcome {
                checked,
                findings: Vec::new(),
            };
        }
    };
    let peer = top_peer(&process.stats).map_or_else(|| "its peer".into(), endpoint);
    let summary = if aborts + keepalive > 0 {
        format!(
            "{} lost {} connections to {peer}: sent without an answer until the kernel gave up",
            who(pid, &process.comm),
            process.stats.timeout_aborts + process.stats.rst_sent_with("TCP_KEEPALIVE_TIMEOUT")
        )
    } else {
        format!(
            "{} retransmitted {} segments to {peer}: packet loss on the path",
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
                "TcpRetransSegs"
            ]
        ),
        i.seconds
    ));
    f.figures
        .insert("timeout_aborts", (aborts + keepalive) as f64);
    f.figures.insert("retransmits", retrans as f64);
    f.fix.push(format!(
        "Find where packets to {peer} are lost: a firewall dropping (iptables/nftables DROP, security groups), a dead route, an MTU black hole (try `ping -M do -s 1472`)."
    ));
    f.fix.push(format!(
        "Fail faster meanwhile: TCP_USER_TIMEOUT in the client, or net.ipv4.tcp_retries2 = 8 (now {}, 15 means ~15 min before giving up); keepalive 60 s / 10 s / 3 for idle connections.",
        i.host.sysctl("net.ipv4.tcp_retries2").unwrap_or("?")
    ));
    f.affected = affected(&hit, "client");
    Outcome {
        checked,
        findings: vec![f],
    }
}
