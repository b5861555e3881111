//! Cause 15: the client (or the proxy in front) stops waiting before the
//! server answers.

use super::{idle::MIN_IDLE_NS, resets::errno_list, *};

/// Late answers from this many connections make it sure (high) when the
/// clients' waits cluster; fewer, or scattered waits, medium.
const SURE_FROM: u64 = 3;

/// Cause 15, seen from the server: clients closed connections (FIN) after
/// this server had sent nothing for a while, and its answers, sent after
/// they closed, met an RST (RST in CLOSE_WAIT right after a send; EPIPE /
/// ECONNRESET for the application). How long the server had been silent
/// when each FIN came is the client's read timeout: HAProxy `timeout
/// server`, nginx `proxy_read_timeout`, a client deadline. (The client's
/// side of it is an abort or a close the client chose; the server's
/// figures say which timeout it was.)
pub(super) fn client_timeout(i: &Inputs) -> Outcome {
    let checked = format!(
        "client timeouts: {} answers sent after the client had closed, clients waited {}",
        i.agg.total.late_answers,
        i.agg
            .total
            .client_waited
            .percentiles()
            .map_or_else(|| "n/a".into(), |p| spread(&p))
    );
    let hit = processes_with(i.agg, |s| s.late_answers);
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
            "{peer} stopped waiting for {me} after ~{timeout:.1} s: it closed {n} connections while {me} was still working, and the late answers met an RST"
        ),
    );
    f.evidence.push(format!(
        "{n} connections accepted by {me} were closed by the client (FIN) after {me} had sent nothing for {}{}",
        spread(&waited),
        if clustered {
            ": one timeout"
        } else {
            ""
        }
    ));
    f.evidence.push(format!(
        "{me} then sent its answer on each and got an RST in CLOSE_WAIT (the client's socket was gone): the request failed for the client, and {me}'s work was wasted"
    ));
    let errors = process.stats.socket_errors_total();
    if errors > 0 {
        f.evidence.push(format!(
            "{me} was handed {errors} socket errors ({})",
            errno_list(&process.stats)
        ));
    }
    f.figures.insert("client_timeout_s", timeout);
    f.figures.insert("late_answers", n as f64);
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
