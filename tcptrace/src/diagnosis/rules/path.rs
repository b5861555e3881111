//! SYNs that vanish on the way: a firewall or security group dropping
//! them, a full table on some box in between. The client retransmits its
//! SYN (1 s, 3 s, 7 s...) and the connect times out; nothing on the
//! server side overflowed.

use super::*;
use crate::aggregate::{DropGroup, DropKey};

/// Drop reasons that name another cause (accept queue, PAWS, nothing
/// listening or a reply that skipped reverse NAT) or no loss at all:
/// SYNs lost to them are not "on the path". `TCP_INVALID_SYN` is a SYN
/// or SYN-ACK reaching a socket already synchronized (tcp_validate_incoming
/// answers it with a challenge ACK): the duplicate answer to a retransmitted
/// SYN, after the first answer arrived late; the retransmit itself still
/// counts.
const OTHER_CAUSES: [&str; 6] = [
    "NO_SOCKET",
    "TCP_LISTEN_OVERFLOW",
    "TCP_RFC7323_PAWS",
    "TCP_RFC7323_TW_PAWS",
    "TCP_REQQFULLDROP",
    "TCP_INVALID_SYN",
];

/// SYNs to one local address dropped by a firewall rule in the watched
/// namespace that make its clients' failure sure when they are not
/// watched: each connect retries its SYN (1 s, 3 s...), so this is one
/// or two clients giving up.
const SERVER_SIDE_SURE: u64 = 4;

/// Connects that got no answer at all (failed, not refused).
fn unanswered(s: &Stats) -> u64 {
    s.connect_failed.saturating_sub(s.refused)
}

/// Handshake retransmits: SYNs of a client, SYN-ACKs of a server.
fn handshake_retransmits(s: &Stats) -> u64 {
    s.syn_retransmits + s.synack_retransmits
}

/// Cause: SYNs (or their SYN-ACKs) dropped between client and server.
pub(super) fn syn_dropped_on_path(i: &Inputs) -> Outcome {
    let syn = handshake_retransmits(&i.agg.total);
    let failed = unanswered(&i.agg.total);
    // Handshake packets dropped on this host for a reason of the path.
    let groups: Vec<(DropKey, &DropGroup)> = i
        .agg
        .drops
        .ranked()
        .into_iter()
        .filter(|(k, g)| g.syns + g.synacks > 0 && !OTHER_CAUSES.contains(&k.reason))
        .collect();
    let dropped: u64 = groups.iter().map(|(_, g)| g.syns + g.synacks).sum();
    let overflows: i64 = ["TcpExtListenOverflows", "TcpExtListenDrops"]
        .iter()
        .map(|c| {
            // The top-level figure is the watched namespace's or the sum
            // over those with events; the others add what they saw.
            let each: i64 = i
                .host
                .namespaces
                .iter()
                .map(|ns| ns.counter(c).max(0))
                .sum();
            each.max(i.host.counter(c).max(0))
        })
        .sum();
    // A conntrack table refusing entries explains dropped SYNs better.
    let conntrack_full = i.host.namespaces.iter().any(|ns| {
        ns.conntrack
            .as_ref()
            .is_some_and(|ct| ct.delta_of("drop") + ct.delta_of("early_drop") > 0)
    });
    let checked = format!(
        "SYNs dropped on the path: {syn} SYN/SYN-ACK retransmits, {failed} connects unanswered, {dropped} handshake packets dropped on this host for a path reason, listen overflows {overflows:+} in the namespaces read{}",
        if conntrack_full {
            ", a conntrack table refusing entries"
        } else {
            ""
        }
    );
    let nothing = |checked| Outcome {
        checked,
        findings: Vec::new(),
    };
    if (syn == 0 && dropped == 0) || overflows > 0 || conntrack_full {
        return nothing(checked);
    }
    let hit = processes_with(i.agg, |s| handshake_retransmits(s) + unanswered(s));
    // Seen from the server, its clients elsewhere: the SYNs to one local
    // address dropped here, again and again (each retry drops too).
    // A firewall rule's drops only: a listener being torn down drops the
    // SYNs in flight to it too (NOT_SPECIFIED), a restart that
    // `nothing_listening` names.
    let dropped_here = groups
        .iter()
        .filter(|(k, _)| {
            k.reason == "NETFILTER_DROP" && i.host.watched_netns.is_none_or(|w| w == k.netns)
        })
        .flat_map(|(_, g)| g.syn_targets.iter().map(|(t, n)| (*t, *n)))
        .max_by_key(|(t, n)| (*n, std::cmp::Reverse(*t)))
        .filter(|(_, n)| *n >= SERVER_SIDE_SURE);
    let confidence = if dropped >= 2 && syn >= 2 && (failed >= 1 || syn >= 4) {
        Confidence::High
    } else if syn >= 3 && (failed >= 1 || dropped >= 1) {
        Confidence::Medium
    } else if dropped_here.is_some() {
        Confidence::High
    } else {
        Confidence::Low
    };
    let (pid, comm, peer) = match hit.first() {
        Some((pid, p, _)) => (*pid, p.comm.clone(), hit.peer(*pid)),
        None => (0, String::new(), None),
    };
    let peer = peer.or(dropped_here.map(|(target, _)| target));
    let peer_text = peer.map_or_else(|| "their peers".into(), endpoint);
    let client = if pid == 0 && comm.is_empty() {
        "clients".to_string()
    } else {
        who(pid, &comm)
    };
    // A server in sight retransmits SYN-ACKs: its answers are the ones
    // lost, and its peers are the clients.
    let server_side = i.agg.total.synack_retransmits > i.agg.total.syn_retransmits;
    let what = if server_side {
        format!("the SYN-ACKs {client} sends to {peer_text}")
    } else {
        format!("SYNs from {client} to {peer_text}")
    };
    let summary = match dropped_here {
        Some((target, n)) if syn + failed == 0 => format!(
            "SYNs to {target} are dropped on this host before they reach it: {n} connection attempts (retries included) from clients elsewhere"
        ),
        _ => format!(
            "{what} are dropped on the way: {syn} handshake retransmits, {failed} connects unanswered"
        ),
    };
    let mut f = Finding::new(
        Cause::SynDroppedOnPath,
        confidence,
        syn + failed + dropped,
        summary,
    );
    for (pid, p, _) in hit.iter().take(3) {
        let s = &p.stats;
        f.evidence.push(format!(
            "{}: {} SYN retransmits, {} SYN-ACK retransmits, {} connects unanswered{}, {} succeeded{}",
            who(*pid, &p.comm),
            s.syn_retransmits,
            s.synack_retransmits,
            unanswered(s),
            s.connect_failed_after
                .percentiles()
                .map_or_else(String::new, |d| format!(" (gave up after {})", spread(&d))),
            s.connects,
            s.connect_latency
                .percentiles()
                .map_or_else(String::new, |l| format!(
                    " (connect p50 {} p99 {}: steps of 1 s, 3 s are SYNs lost)",
                    duration_ns(l.p50_ns),
                    duration_ns(l.p99_ns)
                ))
        ));
    }
    for (key, g) in groups.iter().take(3) {
        let place = match i.host.namespace(key.netns) {
            Some(ns) if ns.watched => format!("{} (the watched one)", ns.label()),
            Some(ns) => ns.label(),
            None => format!("netns {}", key.netns),
        };
        let flow = g
            .top_flows()
            .first()
            .map_or_else(String::new, |((a, b), _)| {
                format!(", e.g. between {a} and {b}")
            });
        let firewall = if key.reason == "NETFILTER_DROP" {
            ": a firewall rule (iptables/nftables DROP)"
        } else {
            ""
        };
        f.evidence.push(format!(
            "{} SYNs and {} SYN-ACKs dropped in {place} with reason {}{firewall}{flow}",
            g.syns, g.synacks, key.reason
        ));
    }
    if dropped == 0 {
        let nf = i.host.kernel_drops.host("NETFILTER_DROP");
        if nf > 0 {
            f.evidence.push(format!(
                "NETFILTER_DROP {nf} on this host over the run (outside the traced scope): a local firewall may be dropping them"
            ));
        } else if i.host.kernel_drops.traced && i.host.kernel_drops.host.is_empty() {
            f.evidence.push(
                "the kernel counted no TCP drop anywhere on this host: the SYNs (or their answers) are lost beyond it"
                    .into(),
            );
        }
    }
    f.evidence.push(format!(
        "no listen queue overflowed (TcpExtListenOverflows/ListenDrops {overflows:+} in the namespaces read) and no conntrack table here refused entries"
    ));
    f.figures.insert("syn_retransmits", syn as f64);
    f.figures.insert("connects_unanswered", failed as f64);
    f.figures.insert("dropped_syns", dropped as f64);
    match groups.first() {
        Some((key, _)) if key.reason == "NETFILTER_DROP" => {
            let place = i.host.namespace_label(key.netns);
            f.fix.push(format!(
                "In {place}: find the rule that drops them (`iptables -L -v -n` / `nft list ruleset`: the DROP counters that rise) and allow TCP SYNs to {peer_text}."
            ));
        }
        Some((key, _)) => f.fix.push(format!(
            "The host drops them with reason {}: fix that (route, neighbour, qdisc) for {peer_text}.",
            key.reason
        )),
        None => f.fix.push(format!(
            "Find what drops SYNs to {peer_text} beyond this host: security groups / network ACLs, a firewall, a full conntrack or NAT table on a router, the server's SYN backlog; `tcpdump 'tcp[tcpflags] & tcp-syn != 0'` on both ends shows where they stop."
        )),
    }
    f.fix.push(format!(
        "Fail faster meanwhile: a connect timeout in the client, net.ipv4.tcp_syn_retries (now {}) lower.",
        i.host.sysctl("net.ipv4.tcp_syn_retries").unwrap_or("?")
    ));
    f.affected = affected(&hit, if server_side { "server" } else { "client" });
    Outcome {
        checked,
        findings: vec![f],
    }
}
