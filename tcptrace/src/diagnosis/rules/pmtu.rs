//! Cause 10: path MTU black hole.

use super::*;

/// Share of sized retransmits that must be full-size (90 %).
const FULL_SIZE_SHARE: f64 = 0.9;
/// PKT_TOO_BIG drops still going on this long after the first: the
/// sender never learnt the smaller MTU (path MTU discovery settles within
/// a round trip of the hop's ICMP).
const NEVER_LEARNS_NS: u64 = 1_000_000_000;
/// Sized retransmits needed at all.
const MIN_RETRANSMITS: u64 = 3;

/// The black hole's shape: at least `MIN_RETRANSMITS` sized data
/// retransmits, nearly all full-size, retransmitted on timeout. Only
/// timeouts retransmit into a black hole: no segment arrives, so no
/// duplicate ACK or SACK triggers a fast retransmit; random loss on a
/// busy path is mostly repaired by fast retransmits.
pub(super) fn signature(i: &Inputs) -> bool {
    let t = &i.agg.total;
    let timeouts = i.host.counter("TcpExtTCPTimeouts");
    let full_size = t.sized_retransmits >= MIN_RETRANSMITS
        && t.full_size_retransmits as f64 >= t.sized_retransmits as f64 * FULL_SIZE_SHARE;
    let on_timeout =
        t.timeout_aborts > 0 || (timeouts > 0 && timeouts as u64 * 2 >= t.retransmits_total());
    full_size && on_timeout
}

/// Cause 10: a hop with a smaller MTU drops full-size segments and the
/// ICMP "fragmentation needed" / "packet too big" that would tell the
/// sender is filtered. Small exchanges pass; every full-size segment is
/// retransmitted on timeout (nothing arrives, so no duplicate ACK ever
/// triggers a fast retransmit) until the connection gives up.
pub(super) fn pmtu_black_hole(i: &Inputs) -> Outcome {
    let t = &i.agg.total;
    let (full, sized) = (t.full_size_retransmits, t.sized_retransmits);
    let timeouts = i.host.counter("TcpExtTCPTimeouts");
    let retransmits = t.retransmits_total();
    let icmp_v4 = i.host.counter("IcmpMsgInType3");
    let icmp_v6 = i.host.counter("Icmp6InPktTooBigs");
    let too_big_drops: u64 = t.drops.get("PKT_TOO_BIG").copied().unwrap_or(0);
    let checked = format!(
        "path MTU: {full} of {sized} sized data retransmits full-size, TcpExtTCPTimeouts {timeouts:+}, ICMP unreachable received {icmp_v4:+} (IPv4) / packet too big {icmp_v6:+} (IPv6), {too_big_drops} PKT_TOO_BIG drops"
    );
    let none = || Outcome {
        checked: checked.clone(),
        findings: Vec::new(),
    };
    let black_hole = signature(i);
    if !black_hole && too_big_drops == 0 {
        return none();
    }
    let icmp_seen = icmp_v4 + icmp_v6 > 0;
    // A hop drops a packet as PKT_TOO_BIG right after sending its ICMP
    // "fragmentation needed" (`ip_forward`, `ip6_forward`): that is path
    // MTU discovery at work, a burst of drops until the sender lowers its
    // segment size for that destination. Drops that go on for seconds are
    // a sender that never learns: its ICMP does not reach it (what the
    // receiver's side sees of a black hole).
    let too_big_for_ns = i
        .agg
        .drops
        .with_reason("PKT_TOO_BIG")
        .iter()
        .map(|(_, g)| g.span_ns())
        .max()
        .unwrap_or(0);
    let never_learns = too_big_drops >= MIN_RETRANSMITS && too_big_for_ns >= NEVER_LEARNS_NS;
    if !black_hole && !never_learns && icmp_seen {
        return none();
    }
    let confidence = if black_hole && (!icmp_seen || too_big_drops > 0) {
        Confidence::High
    } else if black_hole || never_learns {
        Confidence::Medium
    } else {
        // A burst of drops at a hop, the sender not watched: worth listing.
        Confidence::Low
    };
    let hit = processes_with(i.agg, |s| s.full_size_retransmits);
    let culprit = hit.first().copied();
    let peer = culprit
        .and_then(|(pid, _, _)| hit.peer(pid))
        .map_or_else(|| "its peer".into(), endpoint);
    let sender = culprit.map_or_else(|| "a local process".into(), |(pid, p, _)| who(pid, &p.comm));
    let mss = t.retransmit_mss;
    let summary = if black_hole {
        format!(
            "full-size segments from {sender} to {peer} never arrive: {full} of {sized} retransmits were full-size (MSS {mss}), small ones got through; a smaller-MTU hop drops them and its ICMP is filtered"
        )
    } else {
        // The receiver's side (or the hop's): whose packets were dropped.
        let dropped = i.agg.drops.with_reason("PKT_TOO_BIG");
        let flow = dropped
            .first()
            .and_then(|(_, g)| g.top_flows().first().copied());
        let owner = dropped.first().and_then(|(_, g)| {
            g.top_owners()
                .first()
                .filter(|(pid, _)| *pid != 0)
                .map(|(pid, o)| who(*pid, &o.comm.to_string()))
        });
        let (to, from) = flow.map_or_else(
            || ("this host".to_string(), "their sender".to_string()),
            |((local, remote), _)| {
                let to = owner.map_or_else(|| local.to_string(), |o| format!("{o} on {local}"));
                (to, endpoint(remote))
            },
        );
        format!(
            "full-size packets from {from} to {to} are dropped at a hop with a smaller MTU ({too_big_drops} in {}): the sender never learns, its ICMP \"fragmentation needed\" is filtered on the way back",
            duration_ns(too_big_for_ns)
        )
    };
    let mut f = Finding::new(
        Cause::PmtuBlackHole,
        confidence,
        full + too_big_drops,
        summary,
    );
    f.evidence.push(format!(
        "{full} of {sized} retransmitted segments were full-size (length = segments x MSS {mss}); {} were smaller",
        sized - full
    ));
    f.evidence.push(format!(
        "retransmitted on timeout: TcpExtTCPTimeouts {timeouts:+} for {retransmits} data retransmits{}, over {:.1} s",
        if t.timeout_aborts > 0 {
            format!(", {} connections died retransmitting", t.timeout_aborts)
        } else {
            String::new()
        },
        i.seconds
    ));
    if t.retransmit_pmtu > 0 {
        f.evidence.push(format!(
            "the sender's path MTU stayed {} on the retransmits: it never learnt of the smaller hop",
            t.retransmit_pmtu
        ));
    }
    if icmp_seen {
        f.evidence.push(format!(
            "ICMP destination unreachable received {icmp_v4:+}, packet too big {icmp_v6:+}: some ICMP arrives, maybe not the fragmentation-needed ones"
        ));
    } else {
        f.evidence.push(
            "no ICMP destination unreachable / packet too big received (IcmpMsgInType3 +0, Icmp6InPktTooBigs +0): the hop's fragmentation-needed messages are filtered"
                .into(),
        );
    }
    if too_big_drops > 0 {
        f.evidence.push(format!(
            "{too_big_drops} packets dropped as PKT_TOO_BIG (longer than the next hop's MTU) over {}{}",
            duration_ns(too_big_for_ns),
            if never_learns {
                ": they go on, so the sender never learns the smaller MTU"
            } else {
                ""
            }
        ));
    }
    f.figures.insert("full_size_retransmits", full as f64);
    f.figures.insert("retransmits", sized as f64);
    f.figures.insert("mss", f64::from(mss));
    if t.retransmit_pmtu > 0 {
        f.figures.insert("pmtu", f64::from(t.retransmit_pmtu));
    }
    f.fix.push(format!(
        "Clamp the MSS on the path to {peer} to the smaller hop: `iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu` on the router, or a lower MTU on this host's route (`ip route change ... mtu 1400`)."
    ));
    f.fix.push(
        "Let ICMP \"fragmentation needed\" (IPv4 type 3 code 4) and \"packet too big\" (ICMPv6 type 2) through the firewalls and security groups on the path."
            .into(),
    );
    f.fix.push(
        "Meanwhile: net.ipv4.tcp_mtu_probing=1 makes TCP find a working segment size by itself after a black-hole timeout."
            .into(),
    );
    f.affected = affected(&hit, "sender");
    Outcome {
        checked,
        findings: vec![f],
    }
}
