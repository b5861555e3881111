//! Cause 13: a load balancer / NAT / firewall that silently forgets
//! flows idle longer than its timeout. Seen from a client: the first
//! send after a long enough gap is retransmitted and never answered,
//! while sends after shorter gaps were. Seen from the node that forgets:
//! segments of established flows it no longer tracks are dropped, its
//! conntrack counts them invalid, and its established-flow timeout is
//! the idle timeout.

use super::{
    idle::{
        Bounded, bound_figures, bound_text, idle_bounded_peers, processes_for_peer, range_text,
        safe_idle,
    },
    *,
};
use crate::{aggregate::MidflowDest, host::conntrack::ConntrackState};

/// `nf_conntrack_tcp_timeout_established` by default (5 days): a node
/// that keeps this has not been tuned to forget idle flows early.
const CONNTRACK_DEFAULT_ESTABLISHED_S: u64 = 432_000;

/// Cause 13, from either side.
pub(super) fn middlebox_idle_blackhole(i: &Inputs) -> Outcome {
    let r = &i.agg.total.reuse_outcomes;
    let silent = r.silent();
    let worked = r.worked();
    let midflow: u64 = i.agg.midflow.by_dest.values().map(|d| d.drops).sum();
    let checked = format!(
        "silent idle timeouts: {} reuses after idle never answered{}, {} answered{}, {} reset; {midflow} mid-flow segments dropped for flows no socket had",
        silent.count,
        if silent.count > 0 {
            format!(" (idle {})", range_text(&silent))
        } else {
            String::new()
        },
        worked.count,
        if worked.count > 0 {
            format!(" (idle {})", range_text(&worked))
        } else {
            String::new()
        },
        r.reset.count + r.reset_after_fin.count,
    );
    let node = forgotten_flows(i);
    let bounded = idle_bounded_peers(i.agg, |r| r.silent());
    let findings = match (bounded.first(), node) {
        (Some(b), node) => vec![client_view(i, b, &bounded, node)],
        (None, Some(node)) => vec![node_view(node)],
        (None, None) => Vec::new(),
    };
    Outcome { checked, findings }
}

/// Retransmits and timeouts that an idle timeout explains (the reuses
/// that stalled on idle-bounded peers): not loss on the path.
/// (retransmits, connections that timed out)
pub(super) fn explained_stalls(agg: &Aggregate) -> (u64, u64) {
    idle_bounded_peers(agg, |r| r.silent())
        .iter()
        .filter(|b| confidence_of(&b.bound) > Confidence::Low)
        .fold((0, 0), |(retrans, aborts), b| {
            let r = &b.stats.reuse_outcomes;
            (retrans + r.stall_retransmits, aborts + r.timed_out.count)
        })
}

/// The peers whose stalls `explained_stalls` counts.
pub(super) fn explained_peers(agg: &Aggregate) -> Vec<SocketAddr> {
    idle_bounded_peers(agg, |r| r.silent())
        .iter()
        .filter(|b| confidence_of(&b.bound) > Confidence::Low)
        .map(|b| b.peer)
        .collect()
}

/// Failed idle gaps all shorter than this, with no reuse that worked,
/// are no idle timeout: a connection that sent every few hundred ms and
/// stopped being answered lost its peer or its path (the timeout rule
/// names it). Middlebox idle timeouts are seconds to minutes.
const SHORTEST_IDLE_TIMEOUT_NS: u64 = 1_000_000_000;

fn confidence_of(b: &crate::aggregate::IdleBound) -> Confidence {
    if b.worked == 0 && b.failed_max_ns < SHORTEST_IDLE_TIMEOUT_NS {
        Confidence::Low
    } else if b.failed >= 2 && b.worked >= 1 {
        Confidence::High
    } else if b.failed >= 2 || b.worked >= 1 {
        Confidence::Medium
    } else {
        Confidence::Low
    }
}

/// The client's view: reuses idle longer than every reuse that worked got
/// no answer at all.
fn client_view(i: &Inputs, b: &Bounded, all: &[Bounded], node: Option<Node>) -> Finding {
    let bound = &b.bound;
    let r = &b.stats.reuse_outcomes;
    let silent = r.silent();
    let worked = r.worked();
    let peer = endpoint(b.peer);
    let hit = processes_for_peer(i.agg, b.peer, |s| s.reuse_outcomes.silent().count);
    let (pid, comm) = hit
        .first()
        .map_or((0, "?"), |(pid, p, _)| (*pid, p.comm.as_str()));
    let mut confidence = confidence_of(bound);
    if node.is_some() {
        confidence = Confidence::High;
    }
    let ended = match (r.timed_out.count, r.stalled.count) {
        (0, _) => "until the application gave up".to_string(),
        (t, 0) => format!("until the kernel gave up ({t} ETIMEDOUT)"),
        (t, s) => format!("until the kernel gave up ({t} ETIMEDOUT) or the application did ({s})"),
    };
    let mut f = Finding::new(
        Cause::MiddleboxIdleBlackhole,
        confidence,
        all.iter().map(|b| b.bound.failed).sum(),
        format!(
            "{}'s sends to {peer} after {} idle got no answer at all ({} reuses, retransmitted {ended}){}: a load balancer / NAT / firewall on the path silently forgets flows idle longer than ~{:.1} s",
            who(pid, comm),
            range_text(&silent),
            silent.count,
            bound.survived_ns.map_or_else(String::new, |low| format!(
                ", while {} reuses after up to {} idle were answered",
                bound.worked,
                duration_ns(low)
            )),
            secs(bound.estimate_ns())
        ),
    );
    f.evidence.push(format!(
        "{} reuses of connections to {peer} after idle gaps of {} were never answered: {}{} retransmits in all, no RST, no FIN from the peer",
        silent.count,
        range_text(&silent),
        r.stall_start.percentiles().map_or_else(String::new, |p| format!(
            "the first retransmit came {} after the send, ",
            duration_ns(p.p50_ns)
        )),
        r.stall_retransmits
    ));
    if worked.count > 0 {
        f.evidence.push(format!(
            "{} reuses after idle gaps of {} were answered: flows survive {} idle but not {}: the idle timeout lies {}",
            worked.count,
            range_text(&worked),
            duration_ns(worked.max_ns),
            duration_ns(bound.failed_ns),
            bound_text(bound)
        ));
    } else {
        f.evidence.push(format!(
            "no reuse after an idle gap worked: the timeout is {} (or the path to {peer} died: compare with new connections)",
            bound_text(bound)
        ));
    }
    if !r.errors.is_empty() {
        let errors: Vec<String> = r.errors.iter().map(|(e, n)| format!("{n} {e}")).collect();
        f.evidence
            .push(format!("the application was handed {}", errors.join(", ")));
    }
    if let Some(node) = &node {
        f.evidence.push(node.evidence_line());
    }
    bound_figures(&mut f, bound);
    f.figures.insert("stalled", silent.count as f64);
    f.figures.insert("retransmits", r.stall_retransmits as f64);
    f.fix.push(format!(
        "Keep pooled connections to {peer} idle no longer than {} (after {} they were dropped): set {comm}'s pool idle timeout / max idle to that, or send TCP keepalives more often (SO_KEEPALIVE, TCP_KEEPIDLE {} s) where the device counts them as activity.",
        safe_idle(bound),
        duration_ns(bound.failed_ns),
        keepidle_s(bound)
    ));
    f.fix.push(match &node {
        Some(node) => node.fix_line(),
        None => "Or raise the idle timeout of the device in between above the pool's idle time (Linux conntrack: net.netfilter.nf_conntrack_tcp_timeout_established; IPVS: `ipvsadm --set TCP TCPFIN UDP`, default 900 s; AWS NLB 350 s, Azure LB 4 min, GCP 10 min).".into(),
    });
    f.fix.push(format!(
        "Fail fast meanwhile: TCP_USER_TIMEOUT on the client's sockets so a send into a forgotten flow errors in seconds instead of after all retransmits{}, and retry idempotent requests on a fresh connection.",
        i.host
            .sysctl("net.ipv4.tcp_retries2")
            .map_or_else(String::new, |r| format!(
                " (net.ipv4.tcp_retries2 = {}: 15 is ~15 min)",
                r.trim()
            ))
    ));
    f.affected = affected(&hit, "client");
    f
}

/// Whole seconds of TCP keepalive idle that stay below the timeout.
fn keepidle_s(b: &crate::aggregate::IdleBound) -> u64 {
    let below = b.survived_ns.unwrap_or(b.failed_ns * 4 / 5);
    (below / 1_000_000_000).max(1)
}

/// The node's own view of flows it forgot.
struct Node<'a> {
    dest: SocketAddr,
    drops: &'a MidflowDest,
    invalid: i64,
    /// `nf_conntrack_tcp_timeout_established`, seconds.
    timeout_s: Option<u64>,
}

impl Node<'_> {
    fn evidence_line(&self) -> String {
        format!(
            "{} segments of {} established flows to {} were dropped here with no flow to take them ({}); conntrack invalid {:+}, nf_conntrack_tcp_loose 0{}",
            self.drops.drops,
            self.drops.flows,
            self.dest,
            reasons(self.drops),
            self.invalid,
            self.timeout_s.map_or_else(String::new, |t| format!(
                ", nf_conntrack_tcp_timeout_established {t} s"
            ))
        )
    }

    fn fix_line(&self) -> String {
        format!(
            "On the node: raise net.netfilter.nf_conntrack_tcp_timeout_established (now {}, default {CONNTRACK_DEFAULT_ESTABLISHED_S}) above the clients' pool idle time. (nf_conntrack_tcp_loose=1 picks a forgotten flow up again instead of dropping it, which revives it only where the service address maps to one backend.)",
            self.timeout_s
                .map_or_else(|| "unknown".into(), |t| format!("{t} s"))
        )
    }
}

fn reasons(d: &MidflowDest) -> String {
    d.reasons
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Mid-flow segments dropped here with no socket, conntrack counting
/// packets it had no flow for, and a tracker that never picks up a
/// mid-stream packet (`tcp_loose` 0): this node forgot those flows.
fn forgotten_flows<'a>(i: &'a Inputs) -> Option<Node<'a>> {
    let change = i.host.conntrack.as_ref()?;
    let state: &ConntrackState = change.end.state().or(change.start.state())?;
    let invalid = change.delta_of("invalid");
    if state.tcp_loose != Some(0) || invalid <= 0 {
        return None;
    }
    let (dest, drops) = i
        .agg
        .midflow
        .ranked()
        .into_iter()
        .find(|(_, d)| d.drops >= 2)?;
    Some(Node {
        dest,
        drops,
        invalid,
        timeout_s: state.tcp_timeout_established,
    })
}

/// The node's view alone (no client here).
fn node_view(node: Node) -> Finding {
    let d = node.drops;
    let tuned = node
        .timeout_s
        .is_some_and(|t| t < CONNTRACK_DEFAULT_ESTABLISHED_S);
    let confidence = if d.flows >= 2 && node.invalid >= d.flows as i64 && tuned {
        Confidence::High
    } else {
        Confidence::Medium
    };
    let clients: Vec<String> = d.clients.iter().map(|c| c.to_string()).collect();
    let timeout_text = node
        .timeout_s
        .map_or_else(|| "its conntrack timeout".into(), |t| format!("{t} s"));
    // A dropped send is retransmitted: more drops than flows. One segment
    // per flow and nothing after it: the client stopped at once, which is
    // what a REJECT rule's RST does (netfilter's own RST passes no TCP
    // tracepoint and no TCP counter of this node).
    let client_outcome = if d.drops > d.flows {
        "the clients' sends are never answered (retransmitted)"
    } else {
        "each flow lost one segment and sent nothing more: the clients got an RST (a REJECT rule, ECONNRESET) or gave up at once"
    };
    let mut f = Finding::new(
        Cause::MiddleboxIdleBlackhole,
        confidence,
        d.drops,
        format!(
            "this node's conntrack forgets flows to {} idle longer than {timeout_text} and drops their next segments: {} segments of {} established flows from {} dropped; {client_outcome}",
            node.dest,
            d.drops,
            d.flows,
            clients.join(", ")
        ),
    );
    f.evidence.push(node.evidence_line());
    f.evidence.push(format!(
        "the dropped segments carry ACK and no SYN: they belong to connections established earlier that conntrack no longer knew (it forgets an established flow after {timeout_text} idle: nf_conntrack_tcp_timeout_established); with nf_conntrack_tcp_loose 0 it does not pick them up again"
    ));
    if !tuned {
        f.evidence.push(
            "the established timeout is the default: the flows were lost another way (a table flush, a failover to a node without them)".into(),
        );
    }
    if let Some(t) = node.timeout_s {
        f.figures.insert("idle_timeout_s", t as f64);
    }
    f.figures.insert("drops", d.drops as f64);
    f.figures.insert("flows", d.flows as f64);
    f.fix.push(node.fix_line());
    f.fix.push(format!(
        "Or keep the clients' pooled connections to {} idle for less than {}: pool idle timeout / max idle below it, or TCP keepalive (TCP_KEEPIDLE) below it.",
        node.dest,
        node.timeout_s
            .map_or_else(|| "the timeout".into(), |t| format!("{t} s"))
    ));
    f.fix.push(
        "Make the clients fail fast meanwhile (TCP_USER_TIMEOUT) and retry idempotent requests on a fresh connection.".into(),
    );
    f.affected = d
        .clients
        .iter()
        .take(5)
        .map(|ip| Affected {
            pid: 0,
            comm: "-".into(),
            peer: Some(SocketAddr::new(*ip, 0)),
            events: 0,
            role: "client",
            cgroup_id: 0,
            cgroup: None,
        })
        .collect();
    f.affected.insert(
        0,
        Affected {
            pid: 0,
            comm: "-".into(),
            peer: Some(node.dest),
            events: d.drops,
            role: "service",
            cgroup_id: 0,
            cgroup: None,
        },
    );
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::IdleBound;

    fn bound(survived_ms: Option<u64>, failed_ms: (u64, u64), failed: u64) -> IdleBound {
        IdleBound {
            survived_ns: survived_ms.map(|ms| ms * 1_000_000),
            failed_ns: failed_ms.0 * 1_000_000,
            failed_max_ns: failed_ms.1 * 1_000_000,
            failed,
            worked: u64::from(survived_ms.is_some()),
        }
    }

    #[test]
    fn sub_second_stalls_with_nothing_working_are_no_idle_timeout() {
        // A stream whose peer died: sends after ~0.5 s of silence stall.
        assert_eq!(confidence_of(&bound(None, (516, 564), 9)), Confidence::Low);
        // Seconds of idle before each stall: a middlebox's timeout.
        assert_eq!(
            confidence_of(&bound(None, (3_000, 3_200), 3)),
            Confidence::Medium
        );
        // Bounded from below by a reuse that worked: sure.
        assert_eq!(
            confidence_of(&bound(Some(300), (600, 700), 3)),
            Confidence::High
        );
    }
}
