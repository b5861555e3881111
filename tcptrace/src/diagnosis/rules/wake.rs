//! Signatures one cause leaves that other rules read as causes of their
//! own. An accept queue that overflows drops the clients' SYNs and final
//! ACKs (so their first data is retransmitted) and, with
//! `tcp_abort_on_overflow=1`, resets connections the clients already
//! count as established: `retransmission_timeout` sees loss and
//! `linger_zero_abort` sees a peer resetting connections in use. With the
//! overflow found at high for the same peer, those are its wake, said at
//! low, not a second problem beside it.

use super::*;

/// Lowers to low the findings that are the wake of a high finding on the
/// same peer, saying so in their evidence.
pub(super) fn lower_wakes(findings: &mut [&mut Finding]) {
    let listeners: Vec<SocketAddr> = findings
        .iter()
        .filter(|f| f.cause == Cause::AcceptQueueOverflow && f.confidence == Confidence::High)
        .flat_map(|f| f.affected.iter().filter_map(|a| a.peer))
        .collect();
    if listeners.is_empty() {
        return;
    }
    for f in findings.iter_mut() {
        let wake = match f.cause {
            // Connections that died retransmitting are not a wake: the
            // overflow delays handshakes, it does not lose established
            // connections.
            Cause::RetransmissionTimeout => f.figures.get("timeout_aborts") == Some(&0.0),
            Cause::LingerZeroAbort => true,
            _ => false,
        };
        let same_peer = !f.affected.is_empty()
            && f.affected
                .iter()
                .all(|a| a.peer.is_some_and(|p| listeners.contains(&p)));
        if wake && same_peer && f.confidence > Confidence::Low {
            f.confidence = Confidence::Low;
            f.evidence.push(format!(
                "most likely the wake of the accept queue overflow of {} above (dropped handshakes are retransmitted, refused ones reset): low",
                listeners[0]
            ));
        }
    }
}
