//! Cause 9: nothing listening.

use super::*;

/// Cause 9: connects answered by an RST (ECONNREFUSED).
pub(super) fn nothing_listening(i: &Inputs) -> Outcome {
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
