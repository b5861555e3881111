//! Cause 5: connection tracking. A full table drops new connections'
//! SYNs (connects time out); a reply conntrack marks INVALID skips
//! reverse NAT and the client's kernel resets the connection.
//!
//! Conntrack lives per namespace, and the one that matters is usually
//! not the watched one: a node namespace forwards (and tracks, and NATs)
//! for the pods. Its figures come from the survey of every namespace on
//! the host (`HostFacts::namespaces`) and are always quoted with the
//! namespace they belong to; `nf_conntrack_max` is the one host-wide
//! limit every table is held to.

use std::collections::BTreeMap;

use super::*;
use crate::{
    aggregate::{DropGroup, StrayHolder, TopN},
    diagnosis::facts::NamespaceFacts,
    host::conntrack::ConntrackState,
};

/// A conntrack table and what it did over the run.
struct Table<'a> {
    ns: &'a NamespaceFacts,
    end: &'a ConntrackState,
    start: Option<&'a ConntrackState>,
    /// New entries refused: `drop` (could not allocate: table full) and
    /// `early_drop` (an unreplied entry evicted to make room).
    refused: i64,
    early_drop: i64,
    invalid: i64,
    insert_failed: i64,
}

impl Table<'_> {
    /// The count reached the limit at either reading.
    fn full(&self) -> bool {
        let at_max =
            |s: &ConntrackState| matches!((s.count, s.max), (Some(c), Some(m)) if m > 0 && c >= m);
        at_max(self.end) || self.start.is_some_and(at_max)
    }

    fn count_text(&self) -> String {
        let of = |v: Option<u64>| v.map_or_else(|| "?".into(), |v| v.to_string());
        let mut text = format!(
            "{} entries of nf_conntrack_max {} (a host-wide limit) at the end",
            of(self.end.count),
            of(self.end.max)
        );
        if let Some(start) = self.start {
            text += &format!(", {} at the start", of(start.count));
        }
        text
    }
}

/// Every readable conntrack table, with its changes.
fn tables(host: &HostFacts) -> Vec<Table<'_>> {
    host.namespaces
        .iter()
        .filter_map(|ns| {
            let ct = ns.conntrack.as_ref()?;
            let end = ct.end.state()?;
            Some(Table {
                ns,
                end,
                start: ct.start.state(),
                refused: ct.delta_of("drop").max(0),
                early_drop: ct.delta_of("early_drop").max(0),
                invalid: ct.delta_of("invalid").max(0),
                insert_failed: ct.delta_of("insert_failed").max(0),
            })
        })
        .collect()
}

/// Where a namespace inode is, in words.
fn place(host: &HostFacts, netns: u32) -> String {
    match host.namespace(netns) {
        Some(ns) => ns.label(),
        None if netns == 0 => "an unknown namespace".into(),
        None => format!("netns {netns}"),
    }
}

/// Connects that got no answer at all (failed, not refused).
fn unanswered(s: &Stats) -> u64 {
    s.connect_failed.saturating_sub(s.refused)
}

/// `2.0s (1.9s-2.0s, n=7)` of the failed connects, when timed.
fn failed_after(s: &Stats) -> String {
    s.connect_failed_after
        .percentiles()
        .map_or_else(String::new, |p| format!(" after {}", spread(&p)))
}

/// Cause 5a: the conntrack table is full; new flows are dropped.
pub(super) fn conntrack_table_full(i: &Inputs) -> Outcome {
    let tables = tables(i.host);
    let syn = i.agg.total.syn_retransmits;
    let failed = unanswered(&i.agg.total);
    let host_nf_drops = i.host.kernel_drops.host("NETFILTER_DROP");
    let worst = tables
        .iter()
        .filter(|t| t.refused + t.early_drop > 0 || t.full())
        .max_by_key(|t| (t.refused + t.early_drop, t.full(), t.ns.events));
    let checked = format!(
        "conntrack tables: {} read, {}; SYN retransmits {syn}, {failed} connects unanswered, NETFILTER_DROP {host_nf_drops} host-wide",
        tables.len(),
        worst.map_or_else(
            || "none full or refusing new entries".into(),
            |t| format!(
                "{}: {}, drop {:+}, early_drop {:+}",
                t.ns.label(),
                t.count_text(),
                t.refused,
                t.early_drop
            )
        )
    );
    let Some(table) = worst else {
        return Outcome {
            checked,
            findings: Vec::new(),
        };
    };
    // SYNs this table's namespace threw away (netfilter), and whose.
    let nf_groups: Vec<_> = i
        .agg
        .drops
        .with_reason("NETFILTER_DROP")
        .into_iter()
        .filter(|(k, _)| k.netns == table.ns.inode)
        .collect();
    let dropped_syns: u64 = nf_groups.iter().map(|(_, g)| g.syns).sum();
    let dropped: u64 = nf_groups.iter().map(|(_, g)| g.count).sum();
    let refusing = table.refused + table.early_drop > 0;
    let symptoms = u64::from(syn >= 2) + u64::from(failed >= 1) + u64::from(dropped_syns >= 2);
    let watched_elsewhere = i.host.watched_netns.is_some() && !table.ns.watched;
    let confidence = if refusing && (table.full() || table.early_drop > 0) && symptoms >= 2 {
        Confidence::High
    } else if (refusing
        && (symptoms >= 1 || (i.host.watched_netns.is_none() && table.refused >= 3)))
        || (table.full() && symptoms >= 2)
    {
        Confidence::Medium
    } else {
        Confidence::Low
    };

    // Who: the clients whose SYNs were dropped there, else those whose
    // connects went unanswered.
    let mut hit = processes_with(i.agg, |s| s.syn_retransmits + unanswered(s));
    let from_drops = syn_owners(&nf_groups);
    hit.truncate(5);
    let (client, peer) = match (hit.first(), from_drops.first()) {
        (Some((pid, p, _)), _) => (
            who(*pid, &p.comm),
            hit.peer(*pid)
                .map_or_else(|| "their peers".into(), endpoint),
        ),
        (None, Some((pid, comm, _))) => (who(*pid, comm), "their peers".into()),
        (None, None) => ("new connections".into(), "their peers".into()),
    };
    let new_flows = table.refused + table.early_drop;
    let mut f = Finding::new(
        Cause::ConntrackTableFull,
        confidence,
        new_flows.max(0) as u64 + syn + failed + dropped,
        format!(
            "the conntrack table of {} is full ({}): it refused {new_flows} new entries (SYNs of new connections); {client} had {failed} connects to {peer} go unanswered after {syn} SYN retransmits",
            table.ns.label(),
            table.count_text(),
        ),
    );
    f.evidence.push(format!(
        "{}: conntrack {}; drop {:+}, early_drop {:+}, insert_failed {:+} over {:.1} s (drop: no room for a new entry, the packet is dropped)",
        table.ns.label(),
        table.count_text(),
        table.refused,
        table.early_drop,
        table.insert_failed,
        i.seconds
    ));
    if dropped > 0 {
        let whose = from_drops
            .iter()
            .take(3)
            .map(|(pid, comm, n)| format!("{n} of {}", who(*pid, comm)))
            .collect::<Vec<_>>()
            .join(", ");
        let flow = nf_groups
            .iter()
            .flat_map(|(_, g)| g.top_flows())
            .next()
            .map_or_else(String::new, |((a, b), _)| {
                format!(", e.g. between {a} and {b}")
            });
        f.evidence.push(format!(
            "{dropped} packets ({dropped_syns} of them SYNs) dropped in {} with reason NETFILTER_DROP{}{flow}",
            table.ns.label(),
            if whose.is_empty() {
                String::new()
            } else {
                format!(" ({whose})")
            }
        ));
    }
    if host_nf_drops > 0 {
        f.evidence.push(format!(
            "NETFILTER_DROP {host_nf_drops} on the whole host over the run (the kernel's per-reason count, before any filter)"
        ));
    }
    for (pid, p, _) in hit.iter().take(3) {
        let s = &p.stats;
        let latency = s
            .connect_latency
            .percentiles()
            .map_or_else(String::new, |l| {
                format!(
                    "; connects that succeeded took p50 {} p99 {}",
                    duration_ns(l.p50_ns),
                    duration_ns(l.p99_ns)
                )
            });
        f.evidence.push(format!(
            "{}: {} SYN retransmits, {} connects unanswered{}, {} succeeded{latency}",
            who(*pid, &p.comm),
            s.syn_retransmits,
            unanswered(s),
            failed_after(s),
            s.connects
        ));
    }
    if let Some(est) = i
        .host
        .sockets()
        .map(|s| s.in_state("ESTABLISHED"))
        .filter(|n| *n > 0 && watched_elsewhere)
    {
        f.evidence.push(format!(
            "the watched namespace holds {est} ESTABLISHED connections; each through {} is an entry in its table",
            table.ns.label()
        ));
    }
    if confidence == Confidence::Low {
        f.evidence.push(format!(
            "no connection in scope was seen failing for it{}",
            if watched_elsewhere {
                " (the table is another namespace's)"
            } else {
                ""
            }
        ));
    }
    let max = table.end.max.unwrap_or(0);
    let peak = table
        .end
        .count
        .max(table.start.and_then(|s| s.count))
        .unwrap_or(max);
    let suggested = (peak.max(max) * 2).max(65_536).next_power_of_two();
    f.fix.push(format!(
        "Raise net.netfilter.nf_conntrack_max (host-wide: set it in the initial namespace; now {max}) well above the peak, e.g. `sysctl -w net.netfilter.nf_conntrack_max={suggested}`, and the hash table with it (`echo {} > /sys/module/nf_conntrack/parameters/hashsize`); Kubernetes: kube-proxy `conntrack.maxPerCore` / `conntrack.min`.",
        suggested / 4
    ));
    f.fix.push(format!(
        "Free entries sooner: nf_conntrack_tcp_timeout_established (now {} s) down to e.g. 86400, nf_conntrack_tcp_timeout_time_wait (now {} s); find who holds the entries with `conntrack -L` in {} (long-lived or leaked connections).",
        table
            .end
            .tcp_timeout_established
            .map_or_else(|| "?".into(), |v| v.to_string()),
        table
            .end
            .tcp_timeout_time_wait
            .map_or_else(|| "?".into(), |v| v.to_string()),
        table.ns.label()
    ));
    f.fix.push(
        "Do not track flows that need no state or NAT: `iptables -t raw -A PREROUTING ... -j NOTRACK` (and OUTPUT) for them.".into(),
    );
    f.figures
        .insert("conntrack_count", table.end.count.unwrap_or(0) as f64);
    f.figures.insert("conntrack_max", max as f64);
    f.figures
        .insert("conntrack_drops", (table.refused + table.early_drop) as f64);
    f.figures.insert("syn_retransmits", syn as f64);
    f.figures.insert("connects_unanswered", failed as f64);
    f.figures.insert("dropped_syns", dropped_syns as f64);
    f.affected = affected(&hit, "client");
    if f.affected.is_empty() {
        f.affected = from_drops
            .iter()
            .take(5)
            .map(|(pid, comm, n)| Affected {
                pid: *pid,
                comm: comm.clone(),
                peer: None,
                events: *n,
                role: "client",
                cgroup_id: 0,
                cgroup: None,
            })
            .collect();
    }
    Outcome {
        checked,
        findings: vec![f],
    }
}

/// Owners of dropped SYNs over some drop groups, most first:
/// (pid, comm, SYNs... counted as drops of their connections).
fn syn_owners(groups: &[(crate::aggregate::DropKey, &DropGroup)]) -> Vec<(u32, String, u64)> {
    let mut by_pid: BTreeMap<u32, (String, u64)> = BTreeMap::new();
    for (_, g) in groups {
        for (pid, owner) in g.top_owners() {
            let e = by_pid
                .entry(pid)
                .or_insert_with(|| (owner.comm.to_string(), 0));
            e.1 += owner.drops;
        }
    }
    let mut all: Vec<_> = by_pid
        .into_iter()
        .filter(|(pid, _)| *pid != 0)
        .map(|(pid, (comm, n))| (pid, comm, n))
        .collect();
    all.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    all
}

/// Cause 5b: replies that skipped reverse NAT hit the client's ports
/// under the backend's own address; the client's kernel answered "no
/// socket" with RSTs that killed the connections.
pub(super) fn conntrack_invalid_nat_bypass(i: &Inputs) -> Outcome {
    let s = &i.agg.flows.strays;
    let packets = s.packets();
    let unheld = s.unheld();
    let tables = tables(i.host);
    let invalid = tables
        .iter()
        .filter(|t| t.invalid > 0)
        .max_by_key(|t| (t.invalid, t.ns.events));
    let resets_after: u64 = holders(s).iter().map(|h| h.1.resets_after).sum();
    let checked = format!(
        "NAT bypass: {packets} packets answered \"no socket\" on a port held by a connection to another address, {unheld} on live connections seen from their far end, {} connections reset after them, conntrack invalid {}",
        s.peer_resets.max(resets_after),
        invalid.map_or_else(
            || "+0 in every table read".into(),
            |t| format!("{:+} in {}", t.invalid, t.ns.label())
        )
    );
    let finding = if packets > 0 {
        Some(client_view(i, invalid))
    } else if unheld > 0 {
        backend_view(i, invalid)
    } else {
        None
    };
    let Some(mut f) = finding else {
        return Outcome {
            checked,
            findings: Vec::new(),
        };
    };
    let node = invalid.map_or_else(
        || "the namespace or host that does the NAT".into(),
        |t| t.ns.label(),
    );
    f.fix.push(format!(
        "In {node}: drop what conntrack marks INVALID instead of forwarding it un-NATed: `iptables -I FORWARD -m conntrack --ctstate INVALID -j DROP` (kube-proxy adds this rule since Kubernetes 1.15; check it is there)."
    ));
    f.fix.push(
        "Or let conntrack accept out-of-window packets there: `sysctl -w net.netfilter.nf_conntrack_tcp_be_liberal=1` (kube-proxy `conntrack.tcpBeLiberal: true`).".into(),
    );
    f.fix.push(
        "Retry idempotent requests on ECONNRESET meanwhile; the resets come in bursts under heavy parallel transfers.".into(),
    );
    Outcome {
        checked,
        findings: vec![f],
    }
}

/// `netns k8i-node (4026532595): conntrack invalid +106 over 20.0 s,
/// nf_conntrack_tcp_be_liberal 0`
fn invalid_line(t: &Table, seconds: f64) -> String {
    format!(
        "{}: conntrack invalid {:+} over {seconds:.1} s, nf_conntrack_tcp_be_liberal {}",
        t.ns.label(),
        t.invalid,
        t.end
            .tcp_be_liberal
            .map_or_else(|| "?".into(), |v| v.to_string())
    )
}

/// The client is in sight: its ports got replies from the backend's own
/// address while its connections talk to the service address.
fn client_view(i: &Inputs, invalid: Option<&Table>) -> Finding {
    let s = &i.agg.flows.strays;
    let packets = s.packets();
    let holders = holders(s);
    let resets_after: u64 = holders.iter().map(|h| h.1.resets_after).sum();
    let killed = s.peer_resets;
    // Each reset connection shows once on each side that is in sight.
    let connections = resets_after.max(killed);
    let confidence = if packets >= 3 && (invalid.is_some() || connections >= 2) {
        Confidence::High
    } else if packets >= 3 || invalid.is_some() || connections >= 1 {
        Confidence::Medium
    } else {
        Confidence::Low
    };
    let pair = s
        .pairs
        .ranked()
        .first()
        .map(|(p, _)| **p)
        .expect("strays have a pair");
    let (service, backend) = (pair.service, pair.backend);
    let (holder_pid, holder) = holders[0];
    let client = who(holder_pid, &holder.comm);
    let where_ = s.netns.ranked().first().map_or_else(
        || "the client's namespace".into(),
        |(n, _)| place(i.host, **n),
    );
    let mut f = Finding::new(
        Cause::ConntrackInvalidNatBypass,
        confidence,
        packets + connections,
        format!(
            "replies from {backend} reached {client} without reverse NAT (it talks to {service}): its kernel answered {packets} of them with RSTs (no socket), resetting {connections} connections"
        ),
    );
    f.evidence.push(format!(
        "{packets} packets from {backend} reached ports of {client} in {where_} that its connections to {service} hold; the kernel had no socket for ({backend}) and answered with an RST (reason NO_SOCKET): {} RSTs sent, {} drops NO_SOCKET",
        s.resets, s.drops
    ));
    f.evidence.push(format!(
        "{backend} is the address behind {service} (DNAT): these replies skipped the reverse translation, which happens when conntrack marks a reply INVALID (e.g. outside the TCP window under load) or does not track it"
    ));
    if let Some(t) = invalid {
        f.evidence.push(invalid_line(t, i.seconds));
    }
    if killed > 0 {
        f.evidence.push(format!(
            "{killed} connections on the backend's side received those RSTs in use and died ({}): the application there sees \"connection reset by peer\"",
            peers_text(&s.reset_peers)
        ));
    }
    if resets_after > 0 {
        f.evidence.push(format!(
            "{client} then received {resets_after} RSTs from {service} on those connections (ECONNRESET: the backend had lost them)"
        ));
    }
    f.figures.insert("strays", packets as f64);
    f.figures.insert("resets", connections as f64);
    f.figures
        .insert("conntrack_invalid", invalid.map_or(0, |t| t.invalid) as f64);
    f.affected = holders
        .iter()
        .take(3)
        .map(|(pid, h)| Affected {
            pid: *pid,
            comm: h.comm.to_string(),
            peer: Some(service),
            events: h.strays + h.resets_after,
            role: "client",
            cgroup_id: h.cgroup_id,
            cgroup: None,
        })
        .chain(stray_affected(&s.reset_peers, None, "backend"))
        .collect();
    f
}

/// Only the backend is in sight: the client's kernel, in another
/// namespace of this host, answers "no socket" to the backend's live
/// connections, and a namespace in between marks packets INVALID. A
/// client that forgot its connections (restarted) answers the same, but
/// its RSTs match the tracked connection: nothing turns INVALID. So no
/// finding above low without INVALID packets in some table.
fn backend_view(i: &Inputs, invalid: Option<&Table>) -> Option<Finding> {
    let s = &i.agg.flows.strays;
    let unheld = s.unheld();
    let killed = s.peer_resets;
    let confidence = match invalid {
        Some(t) if unheld >= 3 && killed >= 3 && t.invalid as u64 * 2 >= unheld => Confidence::High,
        Some(_) if unheld >= 2 => Confidence::Medium,
        _ => Confidence::Low,
    };
    let mut peers: Vec<_> = s.unheld_peers.iter().map(|(p, h)| (*p, h)).collect();
    peers.sort_by(|a, b| (b.1.strays, a.0).cmp(&(a.1.strays, b.0)));
    let (pid, backend) = peers.first().copied()?;
    let server = who(pid, &backend.comm);
    let where_ = s.netns.ranked().first().map_or_else(
        || "the client's namespace".into(),
        |(n, _)| place(i.host, **n),
    );
    let mut f = Finding::new(
        Cause::ConntrackInvalidNatBypass,
        confidence,
        unheld + killed,
        format!(
            "the clients' kernel in {where_} answered {unheld} packets of live connections of {server} with RSTs (no socket), killing {killed} of them: it knows those connections under another (NATed) address"
        ),
    );
    f.evidence.push(format!(
        "{unheld} packets of connections {server} had open were answered in {where_} with an RST (reason NO_SOCKET) by a kernel where no connection holds the port ({} RSTs, {} drops NO_SOCKET)",
        s.unheld_resets, s.unheld_drops
    ));
    if killed > 0 {
        f.evidence.push(format!(
            "{killed} connections of {server} received those RSTs in use and died: its application sees \"connection reset by peer\""
        ));
    }
    match invalid {
        Some(t) => {
            f.evidence.push(invalid_line(t, i.seconds));
            f.evidence.push(
                "a reply that skipped reverse NAT reaches the client under the backend's address and is answered \"no socket\"; that RST is INVALID to the NAT's conntrack too".into(),
            );
        }
        None => f.evidence.push(
            "no conntrack table read marked packets INVALID: the clients may instead have lost their connections (restart), see half-open resets".into(),
        ),
    }
    f.figures.insert("strays", unheld as f64);
    f.figures.insert("resets", killed as f64);
    f.figures
        .insert("conntrack_invalid", invalid.map_or(0, |t| t.invalid) as f64);
    f.affected = stray_affected(&s.unheld_peers, None, "backend")
        .chain(stray_affected(&s.reset_peers, None, "backend"))
        .take(3)
        .collect();
    Some(f)
}

/// `pid 9 (file-server) 12, ...`
fn peers_text(peers: &TopN<u32, StrayHolder>) -> String {
    let mut all: Vec<_> = peers.iter().collect();
    all.sort_by(|a, b| (b.1.resets_after, a.0).cmp(&(a.1.resets_after, b.0)));
    all.iter()
        .take(3)
        .map(|(pid, h)| format!("{} {}", who(**pid, &h.comm), h.resets_after))
        .collect::<Vec<_>>()
        .join(", ")
}

fn stray_affected<'a>(
    peers: &'a TopN<u32, StrayHolder>,
    peer: Option<SocketAddr>,
    role: &'static str,
) -> impl Iterator<Item = Affected> + 'a {
    let mut all: Vec<_> = peers.iter().collect();
    all.sort_by(|a, b| {
        (b.1.strays + b.1.resets_after, a.0).cmp(&(a.1.strays + a.1.resets_after, b.0))
    });
    all.into_iter().take(2).map(move |(pid, h)| Affected {
        pid: *pid,
        comm: h.comm.to_string(),
        peer,
        events: h.strays + h.resets_after,
        role,
        cgroup_id: h.cgroup_id,
        cgroup: None,
    })
}

/// The processes whose ports strays hit, most first.
fn holders(s: &crate::aggregate::Strays) -> Vec<(u32, &StrayHolder)> {
    let mut all: Vec<_> = s.holders.iter().map(|(pid, h)| (*pid, h)).collect();
    all.sort_by(|a, b| {
        (b.1.strays + b.1.resets_after, a.0).cmp(&(a.1.strays + a.1.resets_after, b.0))
    });
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::{Aggregate, testing::*},
        event::{EventKind as K, TcpEvent},
        host::conntrack::{Conntrack, ConntrackChange, parse_stat},
    };

    /// The router's namespace, where the SYNs are dropped.
    const ROUTER: u32 = 4026532777;

    /// Four clients' connects to 10.0.2.2:8080: each SYN dropped in the
    /// router's namespace (NETFILTER_DROP) three times, then the connect
    /// times out.
    fn syns_dropped_at_the_router() -> Vec<TcpEvent> {
        let mut events = Vec::new();
        for n in 0..4u64 {
            let sock = 500 + n;
            let local = format!("10.0.0.1:{}", 40_000 + sock);
            events.extend(connect(sock, 10, 42, "checkout", "10.0.2.2:8080"));
            for (i, at) in [10, 1_010, 3_010].into_iter().enumerate() {
                if i > 0 {
                    events.push(
                        ev(K::Retransmit, at)
                            .sock(sock)
                            .owner(42, "checkout")
                            .local(&local)
                            .remote("10.0.2.2:8080")
                            .state("SYN_SENT")
                            .build(),
                    );
                }
                let mut drop = ev(K::Drop, at + 1)
                    .local(&local)
                    .remote("10.0.2.2:8080")
                    .dropped(12, 0x02)
                    .build();
                drop.netns = Some(ROUTER);
                events.push(drop);
            }
            events.push(
                ev(K::ConnectFailed, 4_000)
                    .sock(sock)
                    .owner(42, "checkout")
                    .local(&local)
                    .remote("10.0.2.2:8080")
                    .transition("SYN_SENT", "CLOSE")
                    .connect_ms(3_990.0)
                    .build(),
            );
        }
        events
    }

    /// A conntrack reading with `count` entries of `max` and `drop`
    /// refusals so far.
    fn table(count: u64, max: u64, drop: u64) -> Conntrack {
        let text = format!(
            "entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
             {count:08x}  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 {drop:08x} 00000000 00000000  00000000 00000000 00000000 00000000\n"
        );
        let (_, stats) = parse_stat(&text).unwrap();
        Conntrack::Loaded(ConntrackState {
            stats,
            count: Some(count),
            max: Some(max),
            tcp_be_liberal: Some(0),
            ..ConntrackState::default()
        })
    }

    fn run(events: &[TcpEvent], host: &HostFacts) -> Vec<Finding> {
        let mut agg = Aggregate::new(names());
        for e in events {
            agg.add(e);
        }
        agg.finish();
        let i = Inputs {
            agg: &agg,
            host,
            seconds: 10.0,
        };
        [
            conntrack_table_full(&i),
            conntrack_invalid_nat_bypass(&i),
            path::syn_dropped_on_path(&i),
        ]
        .into_iter()
        .flat_map(|o| o.findings)
        .filter(|f| f.confidence != Confidence::Low)
        .collect()
    }

    fn router(conntrack: Conntrack, start: Conntrack) -> HostFacts {
        let mut host = HostFacts {
            watched_netns: Some(4026531840),
            ..HostFacts::default()
        };
        host.namespaces.push(NamespaceFacts {
            inode: ROUTER,
            name: "node".into(),
            conntrack: Some(ConntrackChange::new(start, conntrack)),
            ..NamespaceFacts::default()
        });
        host
    }

    #[test]
    fn syns_a_full_table_refused_are_conntrack_table_full() {
        let host = router(table(160, 160, 12), table(150, 160, 0));
        let found = run(&syns_dropped_at_the_router(), &host);
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(f.cause, Cause::ConntrackTableFull);
        assert_eq!(f.confidence, Confidence::High);
        assert_eq!(f.affected[0].pid, 42);
        assert_eq!(f.figures["conntrack_max"], 160.0);
        assert!(f.summary.contains("netns node"), "{}", f.summary);
        assert!(f.fix[0].contains("nf_conntrack_max"), "{}", f.fix[0]);
    }

    #[test]
    fn syns_a_firewall_dropped_are_dropped_on_the_path() {
        // The same drops with a table far from full: a firewall rule.
        let host = router(table(10, 262_144, 0), table(8, 262_144, 0));
        let found = run(&syns_dropped_at_the_router(), &host);
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(f.cause, Cause::SynDroppedOnPath);
        assert_eq!(f.confidence, Confidence::High);
        assert_eq!(f.affected[0].pid, 42);
        assert!(f.summary.contains("10.0.2.2:8080"), "{}", f.summary);
        assert_eq!(f.figures["connects_unanswered"], 4.0);
    }
}
