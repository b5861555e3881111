//! Cause 2: accept queue overflow.

use super::*;
use crate::{
    aggregate::HandshakeTrouble,
    diagnosis::facts::{Listener, NamespaceFacts, listener_for},
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

/// Where the overflow counters come from: the watched namespace (or the
/// host), or, when `--netns` watches the clients, the namespace of this
/// host where their server listens.
#[derive(Clone, Copy)]
enum Counted<'a> {
    Watched(&'a HostFacts),
    ServerNamespace(&'a NamespaceFacts),
}

impl Counted<'_> {
    fn counter(self, name: &str) -> i64 {
        match self {
            Counted::Watched(host) => host.counter(name),
            Counted::ServerNamespace(ns) => ns.counter(name),
        }
    }

    /// `TcpExtListenOverflows +315, TcpExtListenDrops +315`, with where
    /// they were counted when that is not the watched namespace.
    fn line(self, names: &[&str]) -> String {
        let figures = names
            .iter()
            .map(|n| format!("{n} {:+}", self.counter(n)))
            .collect::<Vec<_>>()
            .join(", ");
        match self {
            Counted::Watched(_) => figures,
            Counted::ServerNamespace(ns) => format!("{figures} in {}", ns.label()),
        }
    }
}

/// When `--netns` watches clients whose connects suffer (SYN retransmits,
/// RSTs on connections just established) and no listener of theirs
/// overflowed, the server they call may listen in another namespace of
/// this host, whose counters the survey read: the one whose listeners
/// overflowed most during the run.
fn server_namespace<'a>(i: &'a Inputs) -> Option<&'a NamespaceFacts> {
    let clients_hurt =
        i.agg.total.syn_retransmits > 0 || i.agg.total.rst_received.contains_key("ESTABLISHED");
    if !clients_hurt
        || i.host.counter("TcpExtListenOverflows") > 0
        || i.host.counter("TcpExtListenDrops") > 0
    {
        return None;
    }
    i.host.elsewhere_most("TcpExtListenOverflows", 1)
}

/// Cause 2: a listener's accept queue is full; SYNs / final ACKs are
/// dropped, clients retransmit their SYN and connects take 1 s, 3 s...;
/// with `tcp_abort_on_overflow=1` the clients get an RST instead.
pub(super) fn accept_queue(i: &Inputs) -> Outcome {
    let server_ns = server_namespace(i);
    let counted = server_ns.map_or(Counted::Watched(i.host), Counted::ServerNamespace);
    let overflows = counted.counter("TcpExtListenOverflows");
    let drops = counted.counter("TcpExtListenDrops");
    let syn = i.agg.total.syn_retransmits;
    let synack = i.agg.total.synack_retransmits;
    // The sysctl is the namespace's own: for a server elsewhere, its
    // embryonic resets say it is on (`tcp_check_req`).
    let abort_on_overflow = match server_ns {
        Some(ns) => ns.counter("TcpExtEmbryonicRsts") > 0,
        None => i.host.sysctl_u64("net.ipv4.tcp_abort_on_overflow") == Some(1),
    };
    let resets_in_use = i
        .agg
        .total
        .rst_received
        .get("ESTABLISHED")
        .copied()
        .unwrap_or(0);
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
        counted.line(&["TcpExtListenOverflows", "TcpExtListenDrops"]),
        full.len(),
        i.host
            .sysctl("net.ipv4.tcp_abort_on_overflow")
            .unwrap_or("?")
    );
    let confidence = if overflows > 0
        && (syn > 0 || synack > 0 || !full.is_empty() || trouble_at_listener > 0)
    {
        Confidence::High
    } else if overflows > 0 && server_ns.is_some() {
        // Clients hurt here, overflows where their server listens.
        Confidence::High
    } else if overflows > 0 || drops > 0 || (syn >= 3 && !full.is_empty()) {
        Confidence::Medium
    } else {
        return Outcome {
            checked,
            findings: Vec::new(),
        };
    };
    // Clients of a server elsewhere also count the RSTs an overflow
    // turned into (their handshake done, the server's refused).
    let clients = processes_with(i.agg, |s| {
        let refused_in_use = server_ns.map_or(0, |_| {
            s.rst_received.get("ESTABLISHED").copied().unwrap_or(0)
        });
        s.syn_retransmits + refused_in_use
    });
    let culprit = culprit(i, &clients);
    let listener_text = culprit
        .as_ref()
        .map_or_else(|| "a local listener".into(), Culprit::text);
    let resets = match server_ns {
        // What the clients received; the server's side is not traced.
        Some(_) if abort_on_overflow => resets_in_use,
        Some(_) => 0,
        None => culprit
            .as_ref()
            .and_then(|c| c.trouble)
            .map_or(0, |t| t.resets.get(OVERFLOW_RESET).copied().unwrap_or(0)),
    };
    let limit = culprit
        .as_ref()
        .and_then(|c| c.socket)
        .and_then(|l| l.limit);
    // Per-namespace sysctls: the watched namespace's say nothing of a
    // server listening in another one.
    let sysctl = |key: &str| {
        if server_ns.is_some() {
            None
        } else {
            i.host.sysctl_u64(key)
        }
    };
    let somaxconn = sysctl("net.core.somaxconn");

    let mut summary = format!("the accept queue of {listener_text}");
    if let Some(ns) = server_ns {
        summary.push_str(&format!(" in {}", ns.label()));
    }
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
        counted.line(&[
            "TcpExtListenOverflows",
            "TcpExtListenDrops",
            "TcpExtTCPReqQFullDrop"
        ]),
        i.seconds
    ));
    if let Some(ns) = server_ns {
        f.evidence.push(format!(
            "the watched namespace's own listeners did not overflow; its clients' SYN retransmits ({syn}) and RSTs on connections just established ({resets_in_use}) match the overflows of {}, the namespace of this host whose listeners overflowed most",
            ns.label()
        ));
    }
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
            "net.ipv4.tcp_abort_on_overflow=1: a client whose handshake completes while the queue is full gets an RST instead of a retried handshake ({resets} RSTs {}, TcpExtEmbryonicRsts {:+}); clients see \"connection reset by peer\" right after connecting",
            if server_ns.is_some() {
                "received by the clients on connections just established".to_string()
            } else {
                format!("with reason {OVERFLOW_RESET} from the listener")
            },
            counted.counter("TcpExtEmbryonicRsts")
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
        f.fix.push(format!(
            "Set net.ipv4.tcp_abort_on_overflow=0 ({}) unless clients must fail fast: an overflow then delays the handshake (the client's ACK is retried) instead of resetting the connection.",
            server_ns.map_or_else(|| "now 1".to_string(), |ns| format!("on in {}", ns.label()))
        ));
    }
    if let Some(v) = sysctl("net.ipv4.tcp_max_syn_backlog")
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
