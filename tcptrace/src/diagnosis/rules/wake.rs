//! Signatures one cause leaves that other rules read as causes of their
//! own. An accept queue that overflows drops the clients' SYNs and final
//! ACKs (so their first data is retransmitted) and, with
//! `tcp_abort_on_overflow=1`, resets connections the clients already
//! count as established: `retransmission_timeout` sees loss and
//! `linger_zero_abort` sees a peer resetting connections in use. A server
//! closing with unread data resets its clients' connections in use too.
//! With the cause found at high for the same peer, those are its wake,
//! said at low, not a second problem beside it.

use super::*;

/// Lowers to low the findings that are the wake of a high finding on the
/// same peer, saying so in their evidence.
pub(super) fn lower_wakes(findings: &mut [&mut Finding]) {
    for (cause, how) in [
        (
            Cause::AcceptQueueOverflow,
            "the accept queue overflow of {peer} above (dropped handshakes are retransmitted, refused ones reset)",
        ),
        (
            Cause::CloseWithUnreadData,
            "{peer} closing with unread data above (its kernel resets such connections)",
        ),
    ] {
        let peers: Vec<SocketAddr> = findings
            .iter()
            .filter(|f| f.cause == cause && f.confidence == Confidence::High)
            .flat_map(|f| f.affected.iter().filter_map(|a| a.peer))
            .collect();
        let Some(first) = peers.first() else {
            continue;
        };
        let how = how.replace("{peer}", &first.to_string());
        for f in findings.iter_mut() {
            let same_peer = !f.affected.is_empty()
                && f.affected
                    .iter()
                    .all(|a| a.peer.is_some_and(|p| peers.contains(&p)));
            if is_wake(cause, f) && same_peer && f.confidence > Confidence::Low {
                f.confidence = Confidence::Low;
                f.evidence
                    .push(format!("most likely the wake of {how}: low"));
            }
        }
    }
}

/// Whether `f` is what `cause` leaves behind at its clients.
fn is_wake(cause: Cause, f: &Finding) -> bool {
    match (cause, f.cause) {
        // Connections that died retransmitting are not a wake: an
        // overflow delays handshakes, it does not lose established
        // connections.
        (Cause::AcceptQueueOverflow, Cause::RetransmissionTimeout) => {
            f.figures.get("timeout_aborts") == Some(&0.0)
        }
        (Cause::AcceptQueueOverflow | Cause::CloseWithUnreadData, Cause::LingerZeroAbort) => true,
        _ => false,
    }
}
