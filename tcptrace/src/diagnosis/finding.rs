//! What a rule concludes: a known cause, how sure, the figures that show
//! it, who is hit, and the exact fix.

use std::{collections::BTreeMap, net::SocketAddr};

use serde::Serialize;

/// The causes `diagnose` knows (docs/diagnose.md describes each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// A load balancer or middlebox forgets idle pooled connections: RSTs on reuse after a quiet gap.
    LbIdleTimeout,
    /// The server closes idle keep-alive connections before the client pool stops reusing them.
    ServerKeepaliveTimeout,
    /// A listener's accept queue is full: SYNs dropped, connects time out or are reset.
    AcceptQueueOverflow,
    /// Too few ephemeral ports for the connections in TIME_WAIT to one destination.
    PortExhaustion,
    /// An application closes with unread data: the kernel sends RST instead of FIN.
    CloseWithUnreadData,
    /// Abortive closes (SO_LINGER 0 or an application abort).
    LingerZeroAbort,
    /// Packet loss or a black hole: retransmits until the kernel gives up.
    RetransmissionTimeout,
    /// Connects to a port nothing listens on, answered with RST.
    NothingListening,
    /// The peer restarted and answers old connections with RST.
    HalfOpenAfterPeerRestart,
    /// RSTs forged on the path (load balancer, firewall, NAT): they came
    /// from fewer hops away than the peer's own segments.
    ResetOnPath,
    /// A conntrack table (a node's) is full: new connections' SYNs are dropped.
    ConntrackTableFull,
    /// Replies conntrack marked INVALID skipped reverse NAT; the client's
    /// kernel answered them with RSTs that killed the connections.
    ConntrackInvalidNatBypass,
    /// SYNs vanish on the way (firewall, security group): connects time out.
    SynDroppedOnPath,
    /// A load balancer / NAT silently forgets flows idle longer than its
    /// timeout: the next send on such a flow is never answered.
    MiddleboxIdleBlackhole,
    /// A smaller-MTU hop with ICMP filtered: full-size segments never arrive.
    PmtuBlackHole,
    /// Too many orphaned sockets or TCP memory exhausted: the kernel aborts closing connections.
    OrphanOrMemoryAbort,
    /// SYNs reusing a tuple the server holds in TIME_WAIT rejected by PAWS (clients behind NAT).
    PawsRejectedSyn,
    /// The client (or the proxy in front) stops waiting before the server
    /// answers: its read timeout is shorter than the server's response time.
    ClientTimeout,
    /// Failures the run saw that no known cause explains: listed, never silent.
    Unexplained,
}

impl Cause {
    /// The stable identifier in reports and JSON (`lb_idle_timeout`, ...).
    pub fn id(self) -> &'static str {
        match self {
            Cause::LbIdleTimeout => "lb_idle_timeout",
            Cause::ServerKeepaliveTimeout => "server_keepalive_timeout",
            Cause::AcceptQueueOverflow => "accept_queue_overflow",
            Cause::PortExhaustion => "port_exhaustion",
            Cause::CloseWithUnreadData => "close_with_unread_data",
            Cause::LingerZeroAbort => "linger_zero_abort",
            Cause::RetransmissionTimeout => "retransmission_timeout",
            Cause::NothingListening => "nothing_listening",
            Cause::HalfOpenAfterPeerRestart => "half_open_after_peer_restart",
            Cause::ResetOnPath => "reset_on_path",
            Cause::ConntrackTableFull => "conntrack_table_full",
            Cause::ConntrackInvalidNatBypass => "conntrack_invalid_nat_bypass",
            Cause::SynDroppedOnPath => "syn_dropped_on_path",
            Cause::MiddleboxIdleBlackhole => "middlebox_idle_blackhole",
            Cause::PmtuBlackHole => "pmtu_black_hole",
            Cause::OrphanOrMemoryAbort => "orphan_or_memory_abort",
            Cause::PawsRejectedSyn => "paws_rejected_syn",
            Cause::ClientTimeout => "client_timeout",
            Cause::Unexplained => "unexplained",
        }
    }

    /// The headline a report gives the cause.
    pub fn title(self) -> &'static str {
        match self {
            Cause::LbIdleTimeout => {
                "Load balancer / middlebox idle timeout shorter than the client pool's idle time"
            }
            Cause::ServerKeepaliveTimeout => {
                "Server keep-alive timeout shorter than the client pool's idle time"
            }
            Cause::AcceptQueueOverflow => "Accept queue overflow (listen backlog full)",
            Cause::PortExhaustion => "Ephemeral port exhaustion (TIME_WAIT)",
            Cause::CloseWithUnreadData => "Close with unread data (RST instead of FIN)",
            Cause::LingerZeroAbort => "Abortive close (SO_LINGER 0 / application abort)",
            Cause::RetransmissionTimeout => "Retransmission timeout (packet loss or black hole)",
            Cause::NothingListening => "Nothing listening (connections refused)",
            Cause::HalfOpenAfterPeerRestart => "Half-open connections after a peer restart",
            Cause::ResetOnPath => {
                "Resets forged on the path (load balancer, firewall or NAT), not sent by the peer"
            }
            Cause::ConntrackTableFull => "Conntrack table full: new connections dropped",
            Cause::ConntrackInvalidNatBypass => {
                "Replies skipped reverse NAT (conntrack INVALID): the client's kernel reset the connections"
            }
            Cause::SynDroppedOnPath => "SYNs dropped on the path: connects time out",
            Cause::MiddleboxIdleBlackhole => {
                "Load balancer / NAT silently drops flows idle longer than its timeout"
            }
            Cause::PmtuBlackHole => "Path MTU black hole (full-size segments never arrive)",
            Cause::OrphanOrMemoryAbort => {
                "Too many orphaned sockets / TCP memory exhausted (connections aborted on close)"
            }
            Cause::PawsRejectedSyn => {
                "SYNs rejected by PAWS at a TIME_WAIT socket (clients behind NAT)"
            }
            Cause::ClientTimeout => {
                "Client (or proxy) timeout shorter than the server's response time"
            }
            Cause::Unexplained => "Failures no known cause explains",
        }
    }
}

/// How sure a finding is: only medium and high are reported as problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Consistent with the figures, not shown by them.
    Low,
    /// Likely: the figures point at it.
    Medium,
    /// The figures show it.
    High,
}

impl Confidence {
    /// `low`, `medium` or `high`.
    pub fn name(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// A process hit by (or causing) the problem.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Affected {
    /// 0 when the kernel could not attribute the sockets.
    pub pid: u32,
    /// Its command name.
    pub comm: String,
    /// The remote endpoint most involved (port 0: many client ports).
    pub peer: Option<SocketAddr>,
    /// Events of this cause that involve it.
    pub events: u64,
    /// What it does in this finding: "client", "server", "closer", ...
    pub role: &'static str,
    /// cgroup v2 id (0: unknown) and, once resolved, its path with the
    /// container id when it names one.
    pub cgroup_id: u64,
    /// The cgroup path (and container id), once resolved.
    pub cgroup: Option<String>,
}

/// One cause found: how sure, how much it explains, the evidence, who is hit and the fix.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Which cause.
    pub cause: Cause,
    /// The cause's headline.
    pub title: &'static str,
    /// How sure.
    pub confidence: Confidence,
    /// Ranks findings of equal confidence: events explained.
    pub score: u64,
    /// One sentence naming who and how much.
    pub summary: String,
    /// The figures behind it, one fact a line.
    pub evidence: Vec<String>,
    /// The processes hit or causing it, most involved first.
    pub affected: Vec<Affected>,
    /// Exact changes, most direct first.
    pub fix: Vec<String>,
    /// The key figures as numbers for machines (seconds, counts).
    pub figures: BTreeMap<&'static str, f64>,
    /// When the events it rests on happened, from the start of the run;
    /// `None` when no traced event marks it (a finding from counters or
    /// socket tables alone).
    pub moments: Option<Moments>,
}

/// The first and the last event a finding refers to, in seconds from the
/// start of the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Moments {
    /// The first event.
    pub first_s: f64,
    /// The last event.
    pub last_s: f64,
}

impl Finding {
    /// A finding with no evidence, affected or fix yet.
    pub fn new(cause: Cause, confidence: Confidence, score: u64, summary: String) -> Finding {
        Finding {
            cause,
            title: cause.title(),
            confidence,
            score,
            summary,
            evidence: Vec::new(),
            affected: Vec::new(),
            fix: Vec::new(),
            figures: BTreeMap::new(),
            moments: None,
        }
    }
}

/// Findings by confidence, then by events explained.
pub fn rank(findings: &mut [Finding]) {
    findings
        .sort_by(|a, b| (b.confidence, b.score, a.cause).cmp(&(a.confidence, a.score, b.cause)));
}
