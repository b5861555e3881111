//! Cause 15: the client (or the proxy in front) stops waiting before the
//! server answers.

use super::{idle::MIN_IDLE_NS, resets::errno_list, *};

/// Late answers from this many connections make it sure (high) when the
/// clients' waits cluster; fewer, or scattered waits, medium.
const SURE_FROM: u64 = 3;

/// Cause 15, seen from the server: clients closed connections (FIN) after
/// this server had sent nothing for a while, then reset them (RST in
/// CLOSE_WAIT: with the close, as HAProxy does, or when the server's late
/// answer reached the closed socket), and the server's writes failed
/// (that late answer, or EPIPE / ECONNRESET). How long the server had
/// been silent when each FIN came is the client's read timeout: HAProxy
/// `timeout server`, nginx `proxy_read_timeout`, a client deadline. A
/// client that closes idle connections the server owes nothing gives no
/// failed write, and no finding.
pub(super) fn client_timeout(i: &Inputs) -> Outcome {
    let checked = format!(
        "client timeouts: {} connections reset after the client closed on a silent server ({} right after a late answer), clients waited {}",
        i.agg.total.client_gave_up,
        i.agg.total.late_answers,
        i.agg
            .total
            .client_waited
            .percentiles()
            .map_or_else(|| "n/a".into(), |p| spread(&p))
    );
    // The server wanted to write after the client left: a late answer,
    // or write errors for about as many connections.
    let hit = processes_with(i.agg, |s| {
        let failed_writes = s.socket_errors.get("EPIPE").copied().unwrap_or(0)
            + s.socket_errors.get("ECONNRESET").copied().unwrap_or(0);
        if s.late_answers + s.requests_reset > 0 || failed_writes * 2 >= s.client_gave_up {
            s.client_gave_up
        } else {
            0
        }
    });
    let Some((pid, process, n)) = hit.first().copied() else {
        return Outcome {
            checked,
            findings: Vec::new(),
        };
    };
    let Some(waited) = process
        .stats
        .client_waited
        .percentiles()
        .filter(|w| w.p50_ns >= MIN_IDLE_NS)
    else {
        return Outcome {
            checked,
            findings: Vec::new(),
        };
    };
    let clustered = waited.count >= 2 && waited.clustered(CLUSTER);
    let confidence = if n >= SURE_FROM && clustered {
        Confidence::High
    } else if n >= 2 {
        Confidence::Medium
    } else {
        Confidence::Low
    };
    let me = who(pid, &process.comm);
    let peer = hit.peer(pid).map_or_else(|| "its clients".into(), endpoint);
    let timeout = secs(waited.p50_ns);
    let mut f = Finding::new(
        Cause::ClientTimeout,
        confidence,
        hit.iter().map(|h| h.2).sum(),
        format!(
            "{peer} stopped waiting for {me} after ~{timeout:.1} s: it gave up on {n} connections while {me} had not answered yet"
        ),
    );
    let stats = &process.stats;
    let reset = stats.requests_reset.min(n);
    let closed = n - reset;
    f.evidence.push(format!(
        "the client gave up after {}{}: how long {me} had sent nothing since the request",
        spread(&waited),
        if clustered { ", one timeout" } else { "" }
    ));
    if closed > 0 {
        f.evidence.push(format!(
            "{closed} connections accepted by {me} closed by the client (FIN) while {me} was silent, then reset in CLOSE_WAIT ({} right after {me}'s late answer reached the closed socket): {me}'s work was wasted",
            stats.late_answers.min(closed)
        ));
    }
    if reset > 0 {
        f.evidence.push(format!(
            "{reset} connections reset by the client (RST in ESTABLISHED) while {me} still owed the answer to the request it had received"
        ));
    }
    let errors = process.stats.socket_errors_total();
    if errors > 0 {
        f.evidence.push(format!(
            "{me} was handed {errors} socket errors ({})",
            errno_list(&process.stats)
        ));
    }
    f.figures.insert("client_timeout_s", timeout);
    f.figures.insert("connections", n as f64);
    f.fix.push(format!(
        "Make the client's (or proxy's) read timeout longer than {}'s slowest answer, e.g. above {} (HAProxy `timeout server`, nginx `proxy_read_timeout`, the client library's read deadline), or make {} answer (or send keep-alive data on a stream) within {timeout:.1} s.",
        process.comm,
        above(waited.p50_ns),
        process.comm
    ));
    f.fix.push(format!(
        "Find why {} takes over {timeout:.1} s (a slow dependency, a full worker pool): the client gives up and retries, which adds load.",
        process.comm
    ));
    f.affected = affected(&hit, "server");
    Outcome {
        checked,
        findings: vec![f],
    }
}

/// A round timeout comfortably above `ns`: twice it, in whole seconds.
fn above(ns: u64) -> String {
    format!("{:.0} s", (secs(ns) * 2.0).ceil().max(1.0))
}
