//! Cause 2: accept queue overflow.

use super::*;

/// Cause 2: a listener's accept queue is full; SYNs / final ACKs are
/// dropped, clients retransmit their SYN and connects take 1 s, 3 s...
pub(super) fn accept_queue(i: &Inputs) -> Outcome {
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
