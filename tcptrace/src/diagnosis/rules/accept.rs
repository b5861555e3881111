//! Cause 2: accept queue overflow.

use super::*;
use crate::{
    aggregate::HandshakeTrouble,
    diagnosis::facts::{Listener, listener_for},
};

/// A client gets this RST reason when `tcp_abort_on_overflow=1` refuses
/// its completed handshake (`tcp_check_req`, embryonic reset).
const OVERFLOW_RESET: &str = "INVALID_SYN";

/// The listener whose queue overflowed, as far as the run can tell.
struct Culprit<'a> {
    local: SocketAddr,
    /// What sock_diag and /proc say about it (backlog, holder).
    socket: Option<&'a Listener>,
    /// What the events say about its handshakes.
    trouble: Option<&'a HandshakeTrouble>,
    /// How it was found, for the evidence.
    how: &'static str,
}

impl Culprit<'_> {
    fn holder(&self) -> Option<(u32, String)> {
        if let Some(owner) = self.socket.and_then(|l| l.owner.as_ref()) {
            return Some((owner.pid, owner.comm.clone()));
        }
        self.trouble
            .filter(|t| t.pid != 0)
            .map(|t| (t.pid, t.comm.clone()))
    }

    fn text(&self) -> String {
        match self.holder() {
            Some((pid, comm)) => format!("{} (pid {pid}, {comm})", self.local),
            None => self.local.to_string(),
        }
    }
}

/// Finds the listener: the one the events point at, else one whose queue
/// was seen full, else the listener the clients' SYNs went to, else the
/// namespace's only listener.
fn culprit<'a>(i: &'a Inputs, clients: &Hits) -> Option<Culprit<'a>> {
    let sockets = i.host.sockets();
    let socket_for = |local: SocketAddr| {
        listener_for(&i.host.listeners_peak, local)
            .or_else(|| sockets.and_then(|s| s.listener_for(local)))
    };
    if let Some((local, trouble)) = i.agg.handshakes.ranked().into_iter().next() {
        return Some(Culprit {
            local,
            socket: socket_for(local),
            trouble: Some(trouble),
            how: "the listener the handshake resets, SYN-ACK retransmits and drops were about",
        });
    }
    if let Some(full) = all_listeners(i).find(|l| at_limit(l)) {
        return Some(Culprit {
            local: full.local,
            socket: Some(full),
            trouble: None,
            how: "a listener seen with its accept queue full",
        });
    }
    if let Some(peer) = clients.first().and_then(|(pid, _, _)| clients.peer(*pid)) {
        return Some(Culprit {
            local: peer,
            socket: socket_for(peer),
            trouble: None,
            how: "the listener the clients' SYN retransmits went to",
        });
    }
    match sockets.map(|s| s.listeners.as_slice()) {
        Some([only]) => Some(Culprit {
            local: only.local,
            socket: Some(only),
            trouble: None,
            how: "the only listener in the namespace",
        }),
        _ => None,
    }
}

fn at_limit(l: &Listener) -> bool {
    l.limit.is_some_and(|limit| limit > 0 && l.queued >= limit)
}

/// Every listener seen: the peaks sampled during the run first (they
/// name their holders), then the start and end tables.
fn all_listeners<'a>(i: &'a Inputs) -> impl Iterator<Item = &'a Listener> {
    let tables = [i.host.sockets_end.as_ref(), i.host.sockets_start.as_ref()];
    i.host.listeners_peak.iter().chain(
        tables
            .into_iter()
            .flatten()
            .flat_map(|t| t.listeners.iter()),
    )
}

/// Cause 2: a listener's accept queue is full; SYNs / final ACKs are
/// dropped, clients retransmit their SYN and connects take 1 s, 3 s...;
/// with `tcp_abort_on_overflow=1` the clients get an RST instead.
pub(super) fn accept_queue(i: &Inputs) -> Outcome {
    let overflows = i.host.counter("TcpExtListenOverflows");
    let drops = i.host.counter("TcpExtListenDrops");
    let syn = i.agg.total.syn_retransmits;
    let synack = i.agg.total.synack_retransmits;
    let abort_on_overflow = i.host.sysctl_u64("net.ipv4.tcp_abort_on_overflow") == Some(1);
    let mut full: Vec<&Listener> = Vec::new();
    for l in all_listeners(i).filter(|l| at_limit(l)) {
        if !full.iter().any(|f| f.local == l.local) {
            full.push(l);
        }
    }
    let trouble_at_listener = i
        .agg
        .handshakes
        .ranked()
        .first()
        .map_or(0, |(_, t)| t.total());
    let checked = format!(
        "accept queues: {}, SYN retransmits {syn}, SYN-ACK retransmits {synack}, {} listener(s) seen full, tcp_abort_on_overflow {}",
        counter_line(i.host, &["TcpExtListenOverflows", "TcpExtListenDrops"]),
        full.len(),
        i.host
            .sysctl("net.ipv4.tcp_abort_on_overflow")
            .unwrap_or("?")
    );
    let confidence = if overflows > 0
        && (syn > 0 || synack > 0 || !full.is_empty() || trouble_at_listener > 0)
    {
        Confidence::High
    } else if overflows > 0 || drops > 0 || (syn >= 3 && !full.is_empty()) {
        Confidence::Medium
    } else {
        return Outcome {
            checked,
            findings: Vec::new(),
        };
    };
    let clients = processes_with(i.agg, |s| s.syn_retransmits);
    let culprit = culprit(i, &clients);
    let listener_text = culprit
        .as_ref()
        .map_or_else(|| "a local listener".into(), Culprit::text);
    let resets = culprit
        .as_ref()
        .and_then(|c| c.trouble)
        .map_or(0, |t| t.resets.get(OVERFLOW_RESET).copied().unwrap_or(0));
    let limit = culprit
        .as_ref()
        .and_then(|c| c.socket)
        .and_then(|l| l.limit);
    let somaxconn = i.host.sysctl_u64("net.core.somaxconn");

    let mut summary = format!("the accept queue of {listener_text}");
    if let Some(limit) = limit {
        summary.push_str(&format!(" (limit {limit})"));
    }
    summary.push_str(&format!(" overflowed {overflows} times"));
    if abort_on_overflow {
        summary.push_str(&format!(
            "; tcp_abort_on_overflow=1 turned the overflows into RSTs to the clients ({resets} seen)"
        ));
    } else if syn > 0 {
        summary.push_str(&format!("; clients retransmitted {syn} SYNs"));
    } else if synack > 0 {
        summary.push_str(&format!(
            "; the server retransmitted {synack} SYN-ACKs for handshakes whose final ACK was dropped"
        ));
    }
    let mut f = Finding::new(
        Cause::AcceptQueueOverflow,
        confidence,
        overflows.max(0) as u64 + syn + synack + resets,
        summary,
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
    if let Some(c) = &culprit {
        let mut line = format!("listener {}", c.text());
        if let Some(limit) = limit {
            line.push_str(&format!(
                ": accept queue limit {limit} = min(listen() backlog, net.core.somaxconn {})",
                somaxconn.map_or_else(|| "?".into(), |v| v.to_string())
            ));
            if somaxconn.is_some_and(|m| u64::from(limit) < m) {
                line.push_str(&format!(
                    ", so the application asked for a backlog of {limit}"
                ));
            }
        }
        line.push_str(&format!(" (found as {})", c.how));
        f.evidence.push(line);
    }
    if abort_on_overflow {
        f.evidence.push(format!(
            "net.ipv4.tcp_abort_on_overflow=1: a client whose handshake completes while the queue is full gets an RST instead of a retried handshake ({resets} RSTs with reason {OVERFLOW_RESET} from the listener, TcpExtEmbryonicRsts {:+}); clients see \"connection reset by peer\" right after connecting",
            i.host.counter("TcpExtEmbryonicRsts")
        ));
    } else if synack > 0 {
        f.evidence.push(format!(
            "{synack} SYN-ACK retransmits: clients' final ACKs were dropped while the queue was full, so the server repeats the handshake (clients think they are connected; their first request waits)"
        ));
    }
    if syn > 0 {
        f.evidence.push(format!(
            "{syn} SYN retransmits by clients on this host: their SYNs were dropped"
        ));
    }
    if let Some(p) = i.agg.total.connect_latency.percentiles() {
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
            "listener {} was seen with {} connections queued, at its limit {}",
            l.local,
            l.queued,
            l.limit.unwrap_or(0)
        ));
    }
    f.figures.insert("listen_overflows", overflows as f64);
    f.figures.insert("syn_retransmits", syn as f64);
    f.figures.insert("synack_retransmits", synack as f64);
    f.figures.insert("overflow_resets", resets as f64);
    if let Some(limit) = limit {
        f.figures.insert("backlog", f64::from(limit));
    }
    if let Some(m) = somaxconn {
        f.figures.insert("somaxconn", m as f64);
    }
    let server = culprit
        .as_ref()
        .and_then(Culprit::holder)
        .map_or_else(|| "the server".to_string(), |(pid, comm)| who(pid, &comm));
    f.fix.push(format!(
        "Raise the listen backlog of {server} on {}{} (its listen() argument: nginx `listen ... backlog=`, Java/Tomcat acceptCount, Python socket.listen(n), default often 50-511) to at least 4096{}: the queue is min(backlog, somaxconn).",
        culprit
            .as_ref()
            .map_or_else(|| "the listener".to_string(), |c| c.local.to_string()),
        limit.map_or_else(String::new, |l| format!(", now {l}")),
        match somaxconn {
            Some(m) if m < 4096 => format!(", and net.core.somaxconn (now {m}) with it"),
            Some(m) => format!(" (net.core.somaxconn is {m}: enough)"),
            None => ", and net.core.somaxconn with it".into(),
        }
    ));
    f.fix.push(format!(
        "Accept faster in {server}: more accept threads / workers, no blocking work (a full worker pool, a lock) between accept() calls."
    ));
    if abort_on_overflow {
        f.fix.push(
            "Set net.ipv4.tcp_abort_on_overflow=0 (now 1) unless clients must fail fast: an overflow then delays the handshake (the client's ACK is retried) instead of resetting the connection."
                .into(),
        );
    }
    if let Some(v) = i.host.sysctl_u64("net.ipv4.tcp_max_syn_backlog")
        && v < 4096
    {
        f.fix.push(format!(
            "Raise net.ipv4.tcp_max_syn_backlog (now {v}) to 4096."
        ));
    }
    if let Some((pid, comm)) = culprit.as_ref().and_then(Culprit::holder) {
        f.affected.push(Affected {
            pid,
            comm,
            peer: culprit.as_ref().map(|c| c.local),
            events: overflows.max(0) as u64,
            role: "server",
            cgroup_id: i.agg.process(pid).map_or(0, |p| p.cgroup_id),
            cgroup: None,
        });
    }
    f.affected.extend(affected(&clients, "client"));
    Outcome {
        checked,
        findings: vec![f],
    }
}
