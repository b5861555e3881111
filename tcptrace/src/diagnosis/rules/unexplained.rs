//! Never silent: a run that saw connects fail, errors handed to
//! applications, resets or dropped packets does not end with "No problem
//! found" unless a finding explains them. What no finding explains is
//! listed with its figures and who was hit.
//!
//! Runs after every other rule, on their findings: an incident is
//! explained when a finding's cause accounts for that kind of incident
//! (`explains`). Explained only by low findings (a benign abortive close)
//! it is benign; explained by nothing it is unexplained.

use super::*;

/// One kind of thing that went wrong, as the aggregate counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Incident {
    /// A connect that ended without an answer (timed out, or abandoned
    /// while waiting).
    ConnectTimeout,
    /// A connect answered by an RST.
    Refused,
    /// An error handed to the application, by errno name.
    SocketError(&'static str),
    /// An RST sent, by reason name.
    RstSent(&'static str),
    /// An RST received, by the socket's state name (not in SYN_SENT:
    /// those are `Refused`).
    RstReceived(&'static str),
    /// A packet dropped, by drop reason name.
    Drop(&'static str),
}

impl Incident {
    /// `3 connects failed without an answer`, for the evidence.
    fn describe(self, n: u64) -> String {
        match self {
            Incident::ConnectTimeout => {
                format!("{n} connects failed without an answer (timed out or abandoned)")
            }
            Incident::Refused => format!("{n} connects refused (RST to the SYN)"),
            Incident::SocketError(e) => format!("{n} times {e} handed to the application"),
            Incident::RstSent(r) => format!("{n} RSTs sent with reason {r}"),
            Incident::RstReceived(s) => format!("{n} RSTs received in {s}"),
            Incident::Drop(r) => format!("{n} packets dropped ({r})"),
        }
    }
}

/// Drops of segments the receiver already had: the normal wake of any
/// retransmit (spurious or fast retransmits, duplicate ACKs), judged by
/// `retransmission_timeout` against the segments sent, never failures on
/// their own (`tcp_data_queue`, `tcp_validate_incoming`, `tcp_ack` in
/// net/ipv4/tcp_input.c).
const DUPLICATE_DROPS: [&str; 4] = [
    "TCP_OLD_DATA",
    "TCP_OLD_SEQUENCE",
    "TCP_OLD_ACK",
    "TCP_OFOMERGE",
];

/// A hop's drop of a packet longer than its next link, sent right after
/// its ICMP "fragmentation needed" (`ip_forward`): path MTU discovery at
/// work. When the ICMP never arrives, `pmtu_black_hole` judges it from
/// the sender's retransmits.
const PMTU_DISCOVERY_DROP: &str = "PKT_TOO_BIG";

/// The incidents of one group, with counts.
fn incidents(s: &Stats) -> Vec<(Incident, u64)> {
    let mut out = Vec::new();
    let timeouts = s.connect_failed.saturating_sub(s.refused);
    if timeouts > 0 {
        out.push((Incident::ConnectTimeout, timeouts));
    }
    if s.refused > 0 {
        out.push((Incident::Refused, s.refused));
    }
    out.extend(
        s.socket_errors
            .iter()
            .map(|(e, n)| (Incident::SocketError(e), *n)),
    );
    out.extend(s.rst_sent.iter().map(|(r, n)| (Incident::RstSent(r), *n)));
    out.extend(
        s.rst_received
            .iter()
            .filter(|(state, _)| **state != "SYN_SENT")
            .map(|(st, n)| (Incident::RstReceived(st), *n)),
    );
    out.extend(
        s.drops
            .iter()
            .filter(|(r, _)| !DUPLICATE_DROPS.contains(r) && **r != PMTU_DISCOVERY_DROP)
            .map(|(r, n)| (Incident::Drop(r), *n)),
    );
    out.retain(|(_, n)| *n > 0);
    out
}

/// Whether a finding of `cause` accounts for an incident of this kind.
/// Every cause must say what it explains (a new cause gets an arm here).
fn explains(cause: Cause, incident: Incident) -> bool {
    use Incident as I;
    let reset_error = |e: &str| matches!(e, "ECONNRESET" | "EPIPE");
    // What still arrives for a connection after it was reset finds no
    // socket (NO_SOCKET), or only its listener, which drops a segment
    // with ACK set and answers it with an RST (TCP_FLAGS,
    // `tcp_rcv_state_process`): part of every cause that resets
    // connections.
    let after_reset = |r: &str| matches!(r, "NO_SOCKET" | "TCP_FLAGS");
    match cause {
        Cause::LbIdleTimeout | Cause::ServerKeepaliveTimeout | Cause::HalfOpenAfterPeerRestart => {
            match incident {
                I::RstReceived(_) => true,
                I::RstSent(r) => {
                    matches!(r, "TCP_ABORT_ON_DATA" | "TCP_TIMEWAIT_SOCKET") || after_reset(r)
                }
                I::SocketError(e) => reset_error(e) || e == "ETIMEDOUT",
                I::Drop(r) => after_reset(r),
                _ => false,
            }
        }
        Cause::AcceptQueueOverflow => match incident {
            I::ConnectTimeout | I::RstReceived(_) => true,
            I::RstSent(r) => r == "INVALID_SYN" || after_reset(r),
            I::Drop(r) => r == "TCP_LISTEN_OVERFLOW" || after_reset(r),
            I::SocketError(e) => reset_error(e) || e == "ETIMEDOUT",
            I::Refused => false,
        },
        // With no source port left, connect() fails before any SYN.
        Cause::PortExhaustion => incident == I::ConnectTimeout,
        Cause::CloseWithUnreadData => match incident {
            I::RstReceived(_) => true,
            I::RstSent(r) => r == "TCP_ABORT_ON_CLOSE" || after_reset(r),
            I::SocketError(e) => reset_error(e),
            I::Drop(r) => after_reset(r),
            _ => false,
        },
        Cause::LingerZeroAbort => match incident {
            I::RstReceived(_) => true,
            I::RstSent(r) => {
                matches!(
                    r,
                    "TCP_ABORT_ON_LINGER" | "TCP_STATE" | "TCP_DISCONNECT_WITH_DATA"
                ) || after_reset(r)
            }
            I::SocketError(e) => reset_error(e),
            I::Drop(r) => after_reset(r),
            _ => false,
        },
        Cause::RetransmissionTimeout => match incident {
            I::ConnectTimeout | I::Drop(_) => true,
            I::RstSent(r) => r == "TCP_KEEPALIVE_TIMEOUT",
            I::SocketError(e) => matches!(e, "ETIMEDOUT" | "EHOSTUNREACH"),
            _ => false,
        },
        // The refusal itself, seen from the listening side: the SYN
        // found no socket, was dropped (NO_SOCKET) and answered by an
        // RST with reason NO_SOCKET (`tcp_v4_rcv`, `tcp_v6_rcv`); a
        // closing listener's resets of its queue (TCP_STATE).
        Cause::NothingListening => match incident {
            I::Refused => true,
            I::SocketError(e) => e == "ECONNREFUSED",
            I::RstSent(r) => matches!(r, "NO_SOCKET" | "TCP_STATE"),
            I::Drop(r) => r == "NO_SOCKET",
            _ => false,
        },
        Cause::ConntrackTableFull => match incident {
            I::ConnectTimeout => true,
            I::Drop(r) => r == "NETFILTER_DROP" || after_reset(r),
            I::SocketError(e) => e == "ETIMEDOUT",
            _ => false,
        },
        Cause::ConntrackInvalidNatBypass => match incident {
            I::RstReceived(_) => true,
            I::RstSent(r) => after_reset(r),
            I::Drop(r) => r == "NETFILTER_DROP" || after_reset(r),
            I::SocketError(e) => reset_error(e),
            _ => false,
        },
        Cause::SynDroppedOnPath => match incident {
            I::ConnectTimeout | I::Drop(_) => true,
            I::SocketError(e) => matches!(e, "ETIMEDOUT" | "EHOSTUNREACH"),
            _ => false,
        },
        // Sends into a forgotten flow stall (silent drop) or are reset by
        // the middlebox; the node drops them with no socket or no route.
        Cause::MiddleboxIdleBlackhole => match incident {
            I::RstReceived(_) | I::Drop(_) => true,
            I::RstSent(r) => after_reset(r),
            I::SocketError(e) => reset_error(e) || e == "ETIMEDOUT",
            _ => false,
        },
        // A device on the path forged the RSTs: what the application was
        // told and what arrived after them are its doing.
        Cause::ResetOnPath => match incident {
            I::RstReceived(_) => true,
            I::RstSent(r) => after_reset(r),
            I::Drop(r) => after_reset(r),
            I::SocketError(e) => reset_error(e),
            _ => false,
        },
        Cause::PmtuBlackHole => match incident {
            I::Drop(r) => r == "PKT_TOO_BIG",
            I::SocketError(e) => e == "ETIMEDOUT",
            _ => false,
        },
        Cause::OrphanOrMemoryAbort => match incident {
            I::RstReceived(_) => true,
            I::RstSent(r) => r == "TCP_ABORT_ON_MEMORY" || after_reset(r),
            I::SocketError(e) => reset_error(e),
            I::Drop(r) => after_reset(r),
            _ => false,
        },
        Cause::PawsRejectedSyn => match incident {
            I::ConnectTimeout => true,
            I::RstSent(r) => matches!(r, "TCP_INVALID_ACK_SEQUENCE" | "TCP_RFC7323_PAWS"),
            I::Drop(r) => r.starts_with("TCP_RFC7323_"),
            I::SocketError(e) => e == "ETIMEDOUT",
            _ => false,
        },
        // Late answers met RSTs in CLOSE_WAIT; the application got
        // EPIPE / ECONNRESET writing them.
        Cause::ClientTimeout => match incident {
            I::RstReceived(_) => true,
            I::SocketError(e) => reset_error(e),
            I::Drop(r) => after_reset(r),
            _ => false,
        },
        Cause::Unexplained => false,
    }
}

/// How an incident stands against the findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Standing {
    /// No finding explains it.
    Unexplained,
    /// Only low (benign, informational) findings explain it.
    Benign,
    /// A finding at medium or high explains it.
    Explained,
}

fn standing(incident: Incident, findings: &[Finding]) -> Standing {
    findings
        .iter()
        .filter(|f| explains(f.cause, incident))
        .map(|f| {
            if f.confidence > Confidence::Low {
                Standing::Explained
            } else {
                Standing::Benign
            }
        })
        .max()
        .unwrap_or(Standing::Unexplained)
}

/// Unexplained incidents from this many events on reach medium (when no
/// other finding is medium or high); below, low: one stray RST from some
/// unrelated process is worth listing, not an alarm. Drops do not count
/// towards it: a drop that hurt shows as a failed connect, a reset, an
/// error or a timeout too, while drops alone are loss the retransmits
/// recovered (listed, at low).
const MEDIUM_FROM: u64 = 3;

/// The `unexplained` finding, if the run saw incidents the `findings`
/// do not account for (or account for only as benign).
pub(super) fn unexplained(i: &Inputs, findings: &[Finding]) -> Outcome {
    let serious = findings.iter().any(|f| f.confidence > Confidence::Low);
    let mut unexplained: Vec<(Incident, u64)> = Vec::new();
    let mut benign: Vec<(Incident, u64)> = Vec::new();
    let mut hit: Vec<(u32, &Process, u64)> = Vec::new();
    for (pid, process) in i.agg.ranked_processes() {
        let mut own = 0;
        for (incident, n) in incidents(&process.stats) {
            let list = match standing(incident, findings) {
                Standing::Explained => continue,
                Standing::Benign => &mut benign,
                Standing::Unexplained => {
                    own += n;
                    &mut unexplained
                }
            };
            match list.iter_mut().find(|(k, _)| *k == incident) {
                Some((_, total)) => *total += n,
                None => list.push((incident, n)),
            }
        }
        if own > 0 {
            hit.push((pid, process, own));
        }
    }
    let count = |list: &[(Incident, u64)]| list.iter().map(|(_, n)| n).sum::<u64>();
    let (u, b) = (count(&unexplained), count(&benign));
    let harm: u64 = unexplained
        .iter()
        .filter(|(k, _)| !matches!(k, Incident::Drop(_)))
        .map(|(_, n)| n)
        .sum();
    let checked = format!(
        "unexplained: {u} failure events no finding explains, {b} explained only as benign"
    );
    let none = Outcome {
        checked: checked.clone(),
        findings: Vec::new(),
    };
    let confidence = match (u, serious) {
        (0, true) => return none,
        (0, false) if b == 0 => return none,
        (0, false) => Confidence::Low,
        (_, true) => Confidence::Low,
        (_, false) if harm >= MEDIUM_FROM => Confidence::Medium,
        (_, false) => Confidence::Low,
    };
    hit.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    // Each process is named with the peer of its unexplained events.
    let unexplained_of = |s: &Stats| -> u64 {
        incidents(s)
            .into_iter()
            .filter(|(k, _)| standing(*k, findings) == Standing::Unexplained)
            .map(|(_, n)| n)
            .sum()
    };
    let hit = processes_with(i.agg, unexplained_of).with_rows(hit);
    let summary = if u == 0 {
        format!("{b} failure events were seen, all explained as benign by the findings above")
    } else {
        let whom: Vec<String> = hit
            .iter()
            .take(3)
            .map(|(pid, p, n)| {
                let peer = hit
                    .peer(*pid)
                    .map_or_else(String::new, |peer| format!(" with {}", endpoint(peer)));
                format!("{} {n}{peer}", who(*pid, &p.comm))
            })
            .collect();
        format!(
            "{u} failure events no known cause explains ({}): {}",
            unexplained
                .iter()
                .map(|(k, n)| k.describe(*n))
                .collect::<Vec<_>>()
                .join(", "),
            whom.join("; ")
        )
    };
    let mut f = Finding::new(Cause::Unexplained, confidence, 0, summary);
    for (pid, process, _) in hit.iter().take(5) {
        let parts: Vec<String> = incidents(&process.stats)
            .into_iter()
            .filter(|(k, _)| standing(*k, findings) == Standing::Unexplained)
            .map(|(k, n)| k.describe(n))
            .collect();
        f.evidence.push(format!(
            "{}{}: {}",
            who(*pid, &process.comm),
            hit.peer(*pid)
                .map_or_else(String::new, |peer| format!(" (peer {})", endpoint(peer))),
            parts.join(", ")
        ));
    }
    if b > 0 {
        f.evidence.push(format!(
            "explained as benign by a low finding: {}",
            benign
                .iter()
                .map(|(k, n)| k.describe(*n))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if serious && u > 0 {
        f.evidence
            .push("besides what the findings above explain; may be a second problem".into());
    }
    f.evidence.push(format!(
        "{} over {:.1} s",
        counter_line(
            i.host,
            &[
                "TcpAttemptFails",
                "TcpEstabResets",
                "TcpOutRsts",
                "TcpRetransSegs"
            ]
        ),
        i.seconds
    ));
    f.figures.insert("unexplained_events", u as f64);
    f.figures.insert("benign_events", b as f64);
    if u > 0 {
        f.fix.push(
            "No known cause matches: look at the processes and peers above with `tcptrace trace --json` (each event with its reason, state, owner) and the kernel counters listed."
                .into(),
        );
    } else {
        f.fix
            .push("Nothing to fix beyond what the findings above say.".into());
    }
    f.affected = affected(&hit, "hit");
    Outcome {
        checked,
        findings: vec![f],
    }
}
