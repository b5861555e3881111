//! Cause 9: nothing listening.

use super::*;

/// Connects refused this many times make it sure (high); fewer, medium.
const SURE_FROM: u64 = 3;

/// Cause 9: connects answered by an RST (ECONNREFUSED). Seen from the
/// clients (their connects refused), or, when they are not watched, from
/// the host that should serve them: SYNs dropped for want of a socket.
/// A listener that closed with connections in its queue reset each of
/// them first (a restart that did not drain).
pub(super) fn nothing_listening(i: &Inputs) -> Outcome {
    let mut outcome = refusals(i);
    let flushed = processes_with(i.agg, |s| s.rst_listener_flush);
    let Some((pid, process, n)) = flushed.first().copied() else {
        return outcome;
    };
    let me = who(pid, &process.comm);
    let line = format!(
        "{me} closed its listener with {n} connections still in its accept queue: the kernel reset each (RST reason TCP_STATE, never accepted)"
    );
    let fix = format!(
        "Restart {} without dropping connections: stop accepting new ones first (fail the readiness check, drain from the load balancer), accept and finish what is queued, then close; or hand the listening socket to the new process (SO_REUSEPORT with both running, systemd socket activation).",
        process.comm
    );
    outcome.checked.push_str(&format!(
        "; {n} queued connections reset by a closing listener"
    ));
    match outcome.findings.first_mut() {
        Some(f) => {
            f.evidence.push(line);
            f.fix.insert(0, fix);
            f.score += n;
        }
        None => {
            let mut f = Finding::new(
                Cause::NothingListening,
                if n >= SURE_FROM {
                    Confidence::High
                } else {
                    Confidence::Medium
                },
                n,
                line.clone(),
            );
            f.evidence.push(format!(
                "{n} RSTs sent by {me} with reason TCP_STATE within 100 ms of its listener's LISTEN -> CLOSE, to connections it had not accepted"
            ));
            f.title =
                "Listener closed with connections still queued (a restart that did not drain)";
            f.figures.insert("queued_resets", n as f64);
            f.fix.push(fix);
            f.affected = affected(&flushed, "server");
            outcome.findings.push(f);
        }
    }
    outcome
}

/// Connects refused, from either end.
fn refusals(i: &Inputs) -> Outcome {
    let refused = i.agg.total.refused;
    let failed = i.agg.total.connect_failed;
    let here = refused_here(i);
    let mut checked = format!(
        "refused connects: {refused} of {} attempts ({failed} failed in all)",
        i.agg.total.connects + failed
    );
    if let Some(r) = &here {
        checked.push_str(&format!(
            "; {} SYNs to {} found no socket",
            r.syns, r.target
        ));
    }
    let hit = processes_with(i.agg, |s| s.refused);
    let Some((pid, process, n)) = hit.first().copied() else {
        return Outcome {
            checked,
            findings: here.map(|r| r.finding(i)).into_iter().collect(),
        };
    };
    let confidence = if n >= SURE_FROM {
        Confidence::High
    } else {
        Confidence::Medium
    };
    let peer = hit.peer(pid);
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

/// Refusals as the host that should serve them sees them.
struct RefusedHere {
    /// The local address and port the SYNs were for.
    target: SocketAddr,
    /// SYNs to it dropped for want of a socket.
    syns: u64,
    /// The namespace that dropped them.
    netns: u32,
    /// The client that sent most of them.
    client: Option<SocketAddr>,
}

/// The local address most SYNs were dropped for with no socket
/// (`NO_SOCKET`: no listener on it, `tcp_v4_rcv` / `tcp_v6_rcv`
/// `no_tcp_socket`, each answered by an RST), in the watched namespace (or
/// anywhere host-wide); `None` under `SURE_FROM` SYNs.
fn refused_here(i: &Inputs) -> Option<RefusedHere> {
    i.agg
        .drops
        .with_reason("NO_SOCKET")
        .into_iter()
        .filter(|(key, _)| i.host.watched_netns.is_none_or(|w| w == key.netns))
        .flat_map(|(key, group)| {
            group.syn_targets.iter().map(move |(target, syns)| {
                let client = group
                    .top_flows()
                    .into_iter()
                    .find(|((local, _), _)| local == target)
                    .map(|((_, remote), _)| SocketAddr::new(remote.ip(), 0));
                RefusedHere {
                    target: *target,
                    syns: *syns,
                    netns: key.netns,
                    client,
                }
            })
        })
        .filter(|r| r.syns >= SURE_FROM)
        .max_by_key(|r| (r.syns, std::cmp::Reverse(r.target)))
}

impl RefusedHere {
    fn finding(&self, i: &Inputs) -> Finding {
        let target = self.target;
        let place = i.host.namespace_label(self.netns);
        let from = self
            .client
            .map_or_else(String::new, |c| format!(" from {}", c.ip()));
        let mut f = Finding::new(
            Cause::NothingListening,
            Confidence::High,
            self.syns,
            format!(
                "nothing listens on {target} in {place}: {} connection attempts{from} were refused",
                self.syns
            ),
        );
        f.evidence.push(format!(
            "{} SYNs to {target}{from} dropped for want of a socket (drop reason NO_SOCKET) and answered by an RST: the clients get ECONNREFUSED",
            self.syns
        ));
        f.evidence.push(format!(
            "{} over {:.1} s",
            counter_line(i.host, &["TcpOutRsts", "TcpAttemptFails"]),
            i.seconds
        ));
        f.figures.insert("refused", self.syns as f64);
        f.fix.push(format!(
            "Start (or restart) the service that should listen on port {} ({target}), or point the clients at the right address/port; `ss -ltnp` shows what listens.",
            target.port()
        ));
        f.fix.push(
            "Take the address out of the load balancer's pool (or fail its readiness check) while the service is down."
                .into(),
        );
        f
    }
}
