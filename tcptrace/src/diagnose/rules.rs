//! The diagnosis rules: plain data in (event aggregates, counter deltas,
//! sysctls, socket tables), findings out. Each rule also says what it
//! checked, so a run without a problem can show its work.
//!
//! Signatures and fixes follow shared/diagnosis.md; thresholds are chosen
//! so that one stray event never reaches high confidence.

use std::net::SocketAddr;

use super::{
    facts::HostFacts,
    finding::{Affected, Cause, Confidence, Finding},
};
use crate::{
    aggregate::{Aggregate, Closer, Percentiles, Process, Related, Stats},
    timefmt::duration_ns,
};

/// Everything a rule may look at.
pub struct Inputs<'a> {
    pub agg: &'a Aggregate,
    pub host: &'a HostFacts,
    /// Length of the observation.
    pub seconds: f64,
}

/// One rule's result: what it looked at, and what it concluded.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub checked: String,
    pub findings: Vec<Finding>,
}

type Rule = fn(&Inputs) -> Outcome;

/// Every rule, in the order the "checked" list shows them.
pub const RULES: [Rule; 8] = [
    idle_timeouts,
    half_open,
    accept_queue,
    port_exhaustion,
    close_with_unread_data,
    abortive_close,
    retransmission_timeout,
    nothing_listening,
];

/// Runs every rule.
pub fn evaluate(inputs: &Inputs) -> Vec<Outcome> {
    RULES
        .iter()
        .map(|rule| {
            let mut outcome = rule(inputs);
            outcome.checked = singular(&outcome.checked);
            for f in &mut outcome.findings {
                f.summary = singular(&f.summary);
                f.evidence = f.evidence.iter().map(|e| singular(e)).collect();
            }
            outcome
        })
        .collect()
}

/// "1 RSTs" -> "1 RST": the rules format counts with plural nouns.
fn singular(text: &str) -> String {
    const NOUNS: [(&str, &str); 7] = [
        ("RSTs", "RST"),
        ("connections", "connection"),
        ("SYNs", "SYN"),
        ("retransmits", "retransmit"),
        ("connects", "connect"),
        ("times", "time"),
        ("segments", "segment"),
    ];
    let words: Vec<&str> = text.split(' ').collect();
    let mut out = Vec::with_capacity(words.len());
    for (i, word) in words.iter().enumerate() {
        let after_one = i > 0 && words[i - 1] == "1";
        let fixed = NOUNS.iter().find_map(|(plural, one)| {
            let rest = word.strip_prefix(plural)?;
            (after_one && rest.chars().all(|c| c.is_ascii_punctuation()))
                .then(|| format!("{one}{rest}"))
        });
        out.push(fixed.unwrap_or_else(|| word.to_string()));
    }
    out.join(" ")
}

/// Idle times within ±15 % of their median come from one timeout.
const CLUSTER: f64 = 0.15;

/// Processes whose name says they are a proxy / load balancer.
const PROXIES: [&str; 6] = [
    "haproxy",
    "envoy",
    "traefik",
    "linkerd2-proxy",
    "pgbouncer",
    "varnishd",
];

fn is_proxy(comm: &str) -> bool {
    PROXIES.iter().any(|p| comm.starts_with(p))
}

fn who(pid: u32, comm: &str) -> String {
    if pid == 0 {
        "unattributed sockets".into()
    } else {
        format!("pid {pid} ({comm})")
    }
}

fn endpoint(peer: SocketAddr) -> String {
    if peer.port() == 0 {
        format!("{} (many ports)", peer.ip())
    } else {
        peer.to_string()
    }
}

/// `2.00s (1.99s-2.01s, n=3)`
fn spread(p: &Percentiles) -> String {
    if p.count == 1 {
        return duration_ns(p.p50_ns);
    }
    format!(
        "{} ({}-{}, n={})",
        duration_ns(p.p50_ns),
        duration_ns(p.min_ns),
        duration_ns(p.max_ns),
        p.count
    )
}

/// A pool idle time safely below a timeout: 80 %, rounded down to a
/// tenth of a second (whole seconds from 10 s, multiples of 5 from 20 s).
fn below(timeout_ns: u64) -> String {
    let s = timeout_ns as f64 / 1e9 * 0.8;
    if s >= 20.0 {
        format!("{} s", (s / 5.0).floor() * 5.0)
    } else if s >= 10.0 {
        format!("{} s", s.floor())
    } else {
        format!("{:.1} s", (s * 10.0).floor() / 10.0)
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The remote endpoint most involved in a process's incidents.
fn top_peer(stats: &Stats) -> Option<SocketAddr> {
    stats
        .related
        .ranked()
        .into_iter()
        .find_map(|(r, _)| match r {
            Related::Peer(peer) => Some(*peer),
            Related::Process(_) => None,
        })
}

/// Processes with a positive count, heaviest first.
fn processes_with(agg: &Aggregate, count: impl Fn(&Stats) -> u64) -> Vec<(u32, &Process, u64)> {
    let mut hit: Vec<_> = agg
        .ranked_processes()
        .into_iter()
        .map(|(pid, p)| (pid, p, count(&p.stats)))
        .filter(|(_, _, n)| *n > 0)
        .collect();
    hit.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    hit
}

fn affected(hit: &[(u32, &Process, u64)], role: &'static str) -> Vec<Affected> {
    hit.iter()
        .take(5)
        .map(|(pid, p, n)| Affected {
            pid: *pid,
            comm: p.comm.clone(),
            peer: top_peer(&p.stats),
            events: *n,
            role,
            cgroup_id: p.cgroup_id,
            cgroup: None,
        })
        .collect()
}

fn counter_line(host: &HostFacts, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n} {:+}", host.counter(n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Causes 1 and 7: the peer (or something in between) drops idle
/// connections before the client's pool does; the pool's next use of
/// such a connection gets an RST.
fn idle_timeouts(i: &Inputs) -> Outcome {
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
fn half_open(i: &Inputs) -> Outcome {
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

/// Cause 2: a listener's accept queue is full; SYNs / final ACKs are
/// dropped, clients retransmit their SYN and connects take 1 s, 3 s...
fn accept_queue(i: &Inputs) -> Outcome {
    let overflows = i.host.counter("TcpExtListenOverflows");
    let drops = i.host.counter("TcpExtListenDrops");
    let syn = i.agg.total.syn_retransmits;
    let synack = i.agg.total.synack_retransmits;
    let full: Vec<_> = i
        .host
        .sockets()
        .map(|s| {
            s.listeners
                .iter()
                .filter(|l| l.limit.is_some_and(|limit| l.queued >= limit && limit > 0))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let checked = format!(
        "accept queues: {}, SYN retransmits {syn}, SYN-ACK retransmits {synack}, {} listener(s) full",
        counter_line(i.host, &["TcpExtListenOverflows", "TcpExtListenDrops"]),
        full.len()
    );
    let confidence = if overflows > 0 && (syn > 0 || synack > 0 || !full.is_empty()) {
        Confidence::High
    } else if overflows > 0 || drops > 0 || (syn >= 3 && !full.is_empty()) {
        Confidence::Medium
    } else {
        return Outcome {
            checked,
            findings: Vec::new(),
        };
    };
    let hit = processes_with(i.agg, |s| s.syn_retransmits);
    let latency = i.agg.total.connect_latency.percentiles();
    let listener = full
        .first()
        .map(|l| l.local)
        .or_else(|| hit.first().and_then(|(_, p, _)| top_peer(&p.stats)));
    let listener_text = listener.map_or_else(|| "a local listener".into(), |l| l.to_string());
    let mut f = Finding::new(
        Cause::AcceptQueueOverflow,
        confidence,
        overflows.max(0) as u64 + syn + synack,
        format!(
            "the accept queue of {listener_text} overflowed {overflows} times; clients retransmitted {syn} SYNs"
        ),
    );
    f.evidence.push(format!(
        "{} over {:.1} s",
        counter_line(
            i.host,
            &[
                "TcpExtListenOverflows",
                "TcpExtListenDrops",
                "TcpExtTCPReqQFullDrop"
            ]
        ),
        i.seconds
    ));
    if syn + synack > 0 {
        f.evidence.push(format!(
            "{syn} SYN retransmits by clients, {synack} SYN-ACK retransmits by the server"
        ));
    }
    if let Some(p) = latency {
        f.evidence.push(format!(
            "connect latency p50 {} p99 {} max {} (steps of 1 s, 3 s are dropped SYNs)",
            duration_ns(p.p50_ns),
            duration_ns(p.p99_ns),
            duration_ns(p.max_ns)
        ));
        f.figures.insert("connect_p99_s", secs(p.p99_ns));
    }
    for l in &full {
        f.evidence.push(format!(
            "listener {} has {} connections queued, at its limit {}",
            l.local,
            l.queued,
            l.limit.unwrap_or(0)
        ));
    }
    f.figures.insert("listen_overflows", overflows as f64);
    f.figures.insert("syn_retransmits", syn as f64);
    let somaxconn = i.host.sysctl_u64("net.core.somaxconn");
    let limit = full.first().and_then(|l| l.limit);
    f.fix.push(format!(
        "Raise the listen backlog of the server on {listener_text}{} (its listen() argument: nginx `listen ... backlog=`, Java/Tomcat acceptCount, default often 50-511) and net.core.somaxconn (now {}) to at least 4096: the queue is min(backlog, somaxconn).",
        limit.map_or_else(String::new, |l| format!(", now {l}")),
        somaxconn.map_or_else(|| "unknown".into(), |v| v.to_string())
    ));
    f.fix.push(
        "Accept faster: more accept threads / workers, no blocking work before accept().".into(),
    );
    if let Some(v) = i.host.sysctl_u64("net.ipv4.tcp_max_syn_backlog")
        && v < 4096
    {
        f.fix.push(format!(
            "Raise net.ipv4.tcp_max_syn_backlog (now {v}) to 4096."
        ));
    }
    f.affected = affected(&hit, "client");
    Outcome {
        checked,
        findings: vec![f],
    }
}

/// Cause 3: each closed connection holds its port in TIME_WAIT for 60 s;
/// churn to one destination runs out of ephemeral ports and connect()
/// fails with EADDRNOTAVAIL (no TCP event at all).
fn port_exhaustion(i: &Inputs) -> Outcome {
    let range = i.host.port_range();
    let size = range.map(|(lo, hi)| u64::from(hi.saturating_sub(lo)) + 1);
    let sockets = i.host.sockets();
    let tw_total = sockets.map_or(0, |s| s.in_state("TIME_WAIT"));
    let top = sockets.and_then(|s| s.time_wait_by_peer.first().copied());
    let checked = format!(
        "ephemeral ports: {} TIME_WAIT{}, port range {}",
        tw_total,
        top.map_or_else(String::new, |(p, n)| format!(" ({n} to {p})")),
        range.map_or_else(
            || "unknown".into(),
            |(lo, hi)| format!("{lo}-{hi} ({} ports)", hi - lo + 1)
        )
    );
    let (Some(size), Some((dest, tw))) = (size, top) else {
        return Outcome {
            checked,
            findings: Vec::new(),
        };
    };
    let used = tw as f64 / size as f64;
    let confidence = if used >= 0.8 {
        Confidence::High
    } else if used >= 0.5 {
        Confidence::Medium
    } else {
        return Outcome {
            checked,
            findings: Vec::new(),
        };
    };
    // The process that opened and closed the most connections to it.
    let mut hit: Vec<_> = i
        .agg
        .ranked_processes()
        .into_iter()
        .filter(|(_, p, ..)| p.stats.related.get(&Related::Peer(dest)).is_some())
        .map(|(pid, p)| (pid, p, p.stats.connects))
        .filter(|h| h.2 > 0)
        .collect();
    hit.sort_by_key(|h| std::cmp::Reverse(h.2));
    let client = hit
        .first()
        .map_or_else(|| "clients".into(), |(pid, p, _)| who(*pid, &p.comm));
    let mut f = Finding::new(
        Cause::PortExhaustion,
        confidence,
        tw,
        format!(
            "{tw} connections to {dest} sit in TIME_WAIT, {:.0} % of the {size} ephemeral ports: {client} runs out of source ports",
            used * 100.0
        ),
    );
    f.evidence.push(format!(
        "{tw} TIME_WAIT sockets to {dest} ({tw_total} in all); net.ipv4.ip_local_port_range {} = {size} ports",
        i.host.sysctl("net.ipv4.ip_local_port_range").unwrap_or("?")
    ));
    if let Some((pid, p, connects)) = hit.first() {
        f.evidence.push(format!(
            "{} opened {connects} connections to {dest} in {:.1} s and closed {} of them itself (each close holds the port 60 s)",
            who(*pid, &p.comm),
            i.seconds,
            p.stats.active_closes
        ));
    }
    f.evidence
        .push("connect() then fails with EADDRNOTAVAIL, which no TCP tracepoint sees".into());
    f.figures.insert("time_wait", tw as f64);
    f.figures.insert("port_range_size", size as f64);
    f.fix.push(format!(
        "Reuse connections in {client} (keep-alive / a connection pool) instead of one connection per request."
    ));
    f.fix.push(format!(
        "Widen net.ipv4.ip_local_port_range (now {}) to \"1024 65535\".",
        i.host.sysctl("net.ipv4.ip_local_port_range").unwrap_or("?")
    ));
    if i.host.sysctl_u64("net.ipv4.tcp_tw_reuse") != Some(1) {
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

fn rst_sent_by<'a>(agg: &'a Aggregate, reasons: &[&str]) -> Vec<(u32, &'a Process, u64)> {
    processes_with(agg, |s| reasons.iter().map(|r| s.rst_sent_with(r)).sum())
}

/// Cause 4a: close() with unread received data sends an RST.
fn close_with_unread_data(i: &Inputs) -> Outcome {
    let events = i.agg.total.rst_sent_with("TCP_ABORT_ON_CLOSE");
    let counter = i.host.counter("TcpExtTCPAbortOnClose");
    let checked = format!(
        "close with unread data: {events} RSTs with reason TCP_ABORT_ON_CLOSE, TcpExtTCPAbortOnClose {counter:+}"
    );
    let hit = rst_sent_by(i.agg, &["TCP_ABORT_ON_CLOSE"]);
    let (confidence, score) = match events {
        0 if counter > 0 => (Confidence::Medium, counter as u64),
        0 => {
            return Outcome {
                checked,
                findings: Vec::new(),
            };
        }
        1..=2 => (Confidence::Medium, events),
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
            top_peer(&p.stats).map_or_else(String::new, |peer| format!(" to {}", endpoint(peer)))
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

/// Cause 4b: SO_LINGER 0 (or another application abort) resets
/// connections on close.
fn abortive_close(i: &Inputs) -> Outcome {
    const REASONS: [&str; 3] = [
        "TCP_ABORT_ON_LINGER",
        "TCP_STATE",
        "TCP_DISCONNECT_WITH_DATA",
    ];
    let events: u64 = REASONS.iter().map(|r| i.agg.total.rst_sent_with(r)).sum();
    let checked = format!(
        "abortive closes: {events} RSTs sent with reason {}, {} received on connections in use",
        REASONS.join("/"),
        i.agg.total.rst_while_active
    );
    let hit = rst_sent_by(i.agg, &REASONS);
    let mut findings = Vec::new();
    // A proxy resetting its own backend connections does it on purpose
    // (HAProxy avoids TIME_WAIT that way): worth knowing, rarely the bug.
    let (apps, proxies): (Vec<_>, Vec<_>) = hit
        .into_iter()
        .filter(|(pid, ..)| *pid != 0)
        .partition(|(_, p, _)| !is_proxy(&p.comm));
    for (group, proxy) in [(apps, false), (proxies, true)] {
        let Some((pid, process, n)) = group.first().copied() else {
            continue;
        };
        let total: u64 = group.iter().map(|g| g.2).sum();
        let confidence = match (proxy, n) {
            (true, _) => Confidence::Low,
            (false, 1..=2) => Confidence::Medium,
            (false, _) => Confidence::High,
        };
        let reasons: Vec<String> = REASONS
            .iter()
            .filter_map(|r| {
                let c = process.stats.rst_sent_with(r);
                (c > 0).then(|| format!("{r} {c}"))
            })
            .collect();
        let mut f = Finding::new(
            Cause::LingerZeroAbort,
            confidence,
            total,
            format!(
                "{} aborted {n} connections with an RST on close (SO_LINGER 0 or abort)",
                who(pid, &process.comm)
            ),
        );
        f.evidence.push(format!(
            "{n} RSTs sent by {} ({}){}",
            who(pid, &process.comm),
            reasons.join(", "),
            top_peer(&process.stats)
                .map_or_else(String::new, |p| format!(", mostly to {}", endpoint(p)))
        ));
        if let Some(age) = process.stats.age_at_rst.percentiles() {
            f.evidence
                .push(format!("connections were {} old when reset", spread(&age)));
        }
        if proxy {
            f.evidence.push(format!(
                "{} is a proxy: it resets connections on purpose to avoid TIME_WAIT; harmless unless the peers log the resets as errors",
                process.comm
            ));
            f.fix.push(
                "HAProxy: remove `option nolinger` where set; otherwise nothing to fix.".into(),
            );
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
    let hit = processes_with(i.agg, |s| s.rst_while_active);
    if local == 0
        && let Some((pid, process, n)) = hit.first().copied()
        && n >= 3
    {
        let peer = top_peer(&process.stats).map_or_else(|| "its peer".into(), endpoint);
        let mut f = Finding::new(
            Cause::LingerZeroAbort,
            Confidence::Medium,
            hit.iter().map(|h| h.2).sum(),
            format!(
                "{peer} reset {n} connections of {} while they were in use",
                who(pid, &process.comm)
            ),
        );
        f.evidence.push(format!(
            "{n} RSTs received by {} in ESTABLISHED with no idle gap, no FIN first; no local process sent such RSTs",
            who(pid, &process.comm)
        ));
        f.fix.push(format!(
            "On {peer}: look for SO_LINGER 0 or close() with unread data (its TcpExtTCPAbortOnClose / TCPAbortOnLinger counters), or a proxy/firewall in between resetting; run `tcptrace diagnose` there."
        ));
        f.figures.insert("resets", n as f64);
        f.affected = affected(&hit, "client");
        findings.push(f);
    }
    Outcome { checked, findings }
}

/// Cause 6: loss or a black hole. The connection retransmits, then the
/// kernel gives up (TCP_USER_TIMEOUT, tcp_retries2, keepalive) without
/// any RST from the peer.
fn retransmission_timeout(i: &Inputs) -> Outcome {
    let t = &i.agg.total;
    let aborts = t.timeout_aborts;
    let keepalive = t.rst_sent_with("TCP_KEEPALIVE_TIMEOUT");
    let counter = i.host.counter("TcpExtTCPAbortOnTimeout");
    let retrans = t.retransmits_total();
    let checked = format!(
        "retransmission timeouts: {aborts} connections died retransmitting, {keepalive} keepalive timeouts, {retrans} data retransmits, TcpExtTCPAbortOnTimeout {counter:+}"
    );
    let hit = processes_with(i.agg, |s| {
        s.timeout_aborts + s.rst_sent_with("TCP_KEEPALIVE_TIMEOUT")
    });
    let confidence = if aborts + keepalive > 0 || (counter > 0 && retrans >= 3) {
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

/// Cause 9: connects answered by an RST (ECONNREFUSED).
fn nothing_listening(i: &Inputs) -> Outcome {
    let refused = i.agg.total.refused;
    let failed = i.agg.total.connect_failed;
    let checked = format!(
        "refused connects: {refused} of {} attempts ({failed} failed in all)",
        i.agg.total.connects + failed
    );
    let hit = processes_with(i.agg, |s| s.refused);
    let Some((pid, process, n)) = hit.first().copied() else {
        return Outcome {
            checked,
            findings: Vec::new(),
        };
    };
    let confidence = if n >= 3 {
        Confidence::High
    } else {
        Confidence::Medium
    };
    let peer = top_peer(&process.stats);
    let peer_text = peer.map_or_else(|| "its peer".into(), endpoint);
    let mut f = Finding::new(
        Cause::NothingListening,
        confidence,
        refused,
        format!(
            "{} had {n} connects to {peer_text} refused: nothing listens there",
            who(pid, &process.comm)
        ),
    );
    f.evidence.push(format!(
        "{n} connects by {} to {peer_text} answered by an RST to the SYN (ECONNREFUSED); {} connects succeeded",
        who(pid, &process.comm),
        process.stats.connects
    ));
    f.figures.insert("refused", refused as f64);
    f.fix.push(format!(
        "Start (or restart) the service on {peer_text}, or fix the address/port the client uses; check that the listener is up before traffic is sent to it (readiness checks)."
    ));
    f.fix
        .push("Clients should back off between retries rather than reconnect in a loop.".into());
    f.affected = affected(&hit, "client");
    Outcome {
        checked,
        findings: vec![f],
    }
}

#[cfg(test)]
mod recorded;
#[cfg(test)]
mod tests;
