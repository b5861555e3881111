//! Cause 12: PAWS rejecting SYNs behind NAT.

use super::*;

/// A SYN whose timestamp is older than what the TIME_WAIT socket of the
/// same 4-tuple last saw (`tcp_timewait_state_process`).
const TW_PAWS_DROP: &str = "TCP_RFC7323_TW_PAWS";
/// A segment of an established connection with an old timestamp.
const PAWS_DROP: &str = "TCP_RFC7323_PAWS";
/// The client's answer to the server's ACK for the old connection: that
/// ACK acknowledges nothing the SYN_SENT socket sent.
const CLIENT_RESET: &str = "TCP_INVALID_ACK_SEQUENCE";

/// Cause 12: clients behind one NAT address have unrelated TCP timestamp
/// clocks; a new SYN that reuses a 4-tuple the server still holds in
/// TIME_WAIT, with an older timestamp than the previous connection's, is
/// dropped by PAWS. The server answers with an ACK for the old
/// connection, the client resets it and retries its SYN a second later.
pub(super) fn paws_rejected_syn(i: &Inputs) -> Outcome {
    let t = &i.agg.total;
    let tw_drops = t.drops.get(TW_PAWS_DROP).copied().unwrap_or(0);
    let estab_drops = t.drops.get(PAWS_DROP).copied().unwrap_or(0);
    let tw_counter = i.host.counter("TcpExtPAWSTimewait");
    let estab_counter = i.host.counter("TcpExtPAWSEstab");
    let client_resets = t.rst_sent_with(CLIENT_RESET);
    let syn = t.syn_retransmits;
    let checked = format!(
        "PAWS: {tw_drops} SYNs dropped at TIME_WAIT ({TW_PAWS_DROP}), {estab_drops} {PAWS_DROP} drops, TcpExtPAWSTimewait {tw_counter:+}, TcpExtPAWSEstab {estab_counter:+}, {client_resets} client RSTs {CLIENT_RESET}"
    );
    // The server's side: its kernel says it rejected SYNs by PAWS.
    let server_side = tw_drops.max(tw_counter.max(0) as u64);
    let confidence = if server_side >= 2 || (client_resets >= 2 && syn >= 2) {
        Confidence::High
    } else if server_side + client_resets >= 2 {
        Confidence::Medium
    } else if server_side + client_resets == 1 || estab_drops + estab_counter.max(0) as u64 >= 3 {
        // One stray rejection, or PAWS on established connections
        // (worth knowing, not this cause's signature).
        Confidence::Low
    } else {
        return Outcome {
            checked,
            findings: Vec::new(),
        };
    };
    // On the server the drops carry the listener's process and the
    // client address; on the client the resets carry the client process.
    let servers = processes_with(i.agg, |s| s.drops.get(TW_PAWS_DROP).copied().unwrap_or(0));
    let clients = processes_with(i.agg, |s| s.rst_sent_with(CLIENT_RESET));
    let tw_peers: Vec<(SocketAddr, u64)> = {
        let mut peers: Vec<_> = i
            .agg
            .peers
            .iter()
            .map(|(peer, s)| (*peer, s.drops.get(TW_PAWS_DROP).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        peers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        peers
    };
    let nat = tw_peers.first().map(|(peer, _)| peer.ip().to_canonical());
    let summary = match (servers.first(), clients.first()) {
        (Some((pid, p, n)), _) => format!(
            "{n} SYNs to {} were dropped by PAWS at TIME_WAIT sockets{}: the clients share an address (NAT) and reuse ports the server still holds in TIME_WAIT with older timestamps",
            who(*pid, &p.comm),
            nat.map_or_else(String::new, |ip| format!(" from {ip}"))
        ),
        (None, Some((pid, p, n))) => format!(
            "{} had {n} connects rejected by PAWS at {}: its SYN hit a TIME_WAIT socket of the server with a newer timestamp; it reset the server's stray ACK and retried the SYN",
            who(*pid, &p.comm),
            clients
                .peer(*pid)
                .map_or_else(|| "its peer".into(), endpoint)
        ),
        (None, None) => format!(
            "the kernel rejected {} segments by PAWS (TcpExtPAWSTimewait {tw_counter:+}, TcpExtPAWSEstab {estab_counter:+})",
            server_side + estab_drops + estab_counter.max(0) as u64
        ),
    };
    let mut f = Finding::new(
        Cause::PawsRejectedSyn,
        confidence,
        server_side + client_resets,
        summary,
    );
    if tw_drops + tw_counter.max(0) as u64 > 0 {
        f.evidence.push(format!(
            "{tw_drops} SYNs dropped with reason {TW_PAWS_DROP}, TcpExtPAWSTimewait {tw_counter:+} over {:.1} s: each SYN carried an older timestamp than the previous connection on the same 4-tuple",
            i.seconds
        ));
    }
    for (peer, n) in tw_peers.iter().take(3) {
        f.evidence.push(format!(
            "{n} of them from {}: one address with many clients behind it",
            endpoint(*peer)
        ));
    }
    if let Some(tw) = i.host.sockets().map(|s| s.in_state("TIME_WAIT"))
        && tw > 0
        && server_side > 0
    {
        f.evidence.push(format!(
            "{tw} sockets in TIME_WAIT here: the server closes first, so it holds the TIME_WAIT"
        ));
    }
    if client_resets > 0 {
        f.evidence.push(format!(
            "{client_resets} RSTs with reason {CLIENT_RESET} sent by clients in SYN_SENT (the server's ACK was for the old connection), {syn} SYN retransmits"
        ));
    }
    if let Some(p) = t.connect_latency.percentiles() {
        f.evidence.push(format!(
            "connect latency p50 {} p90 {} max {} (a rejected SYN is retried at once after the client's RST, or after 1 s, 3 s... when the server's ACK does not come back)",
            duration_ns(p.p50_ns),
            duration_ns(p.p90_ns),
            duration_ns(p.max_ns)
        ));
        f.figures.insert("connect_p90_s", secs(p.p90_ns));
    }
    if estab_drops + estab_counter.max(0) as u64 > 0 {
        f.evidence.push(format!(
            "{estab_drops} segments of established connections dropped with reason {PAWS_DROP} (TcpExtPAWSEstab {estab_counter:+})"
        ));
    }
    f.figures.insert("paws_rejected", server_side as f64);
    f.figures.insert("client_resets", client_resets as f64);
    f.figures.insert("syn_retransmits", syn as f64);
    f.fix.push(
        "Let the clients close first (HTTP keep-alive with client-side close, or a server idle timeout longer than the clients'): the TIME_WAIT then stays on the client, behind its own NAT mapping."
            .into(),
    );
    f.fix.push(format!(
        "On the NAT{}: more source addresses or a wider port range, so a port is not reused within the server's TIME_WAIT (60 s); keep TCP timestamps on (net.ipv4.tcp_timestamps=1) and never use the removed tcp_tw_recycle.",
        nat.map_or_else(String::new, |ip| format!(" ({ip})"))
    ));
    let mut who_hit = affected(&servers, "server");
    who_hit.extend(affected(&clients, "client"));
    if let (Some(first), Some((peer, _))) = (who_hit.first_mut(), tw_peers.first())
        && first.role == "server"
    {
        first.peer = Some(*peer);
    }
    f.affected = who_hit;
    Outcome {
        checked,
        findings: vec![f],
    }
}
