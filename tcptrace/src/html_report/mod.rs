//! The incident report as one self-contained HTML page: findings, a
//! timeline of incidents with the findings' moments marked, idle times
//! around the inferred timeout, connect latency, the processes and peers
//! involved, the host's facts, and how the data was taken.
//!
//! It renders from plain data only: the `diagnose --json` document
//! (`render_json`), so a recorded capture replayed later gives the same
//! page. Self-contained: inline CSS and SVG, no script, no URL; a Content
//! Security Policy forbids loading anything. Light and dark follow the
//! reader's `prefers-color-scheme`, print has its own sheet, and nothing
//! is said by colour alone (words, border styles, labelled panels and
//! dashed marks).

mod charts;
pub mod doc;

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize as _;
use serde_json::Value;

use self::{
    charts::{Counts, Mark, Values},
    doc::{Doc, Finding, Group, Sockets},
};
use crate::timefmt::duration_ns;

const STYLE: &str = include_str!("style.css");
/// Nothing may be loaded or run: styles are inline, charts are inline SVG.
const POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

/// The page for a `diagnose --json` document.
///
/// # Errors
/// When `report` is not shaped like that document (a field of the wrong
/// type).
pub fn render_json(report: &Value) -> Result<String, serde_json::Error> {
    Ok(render(&Doc::deserialize(report)?))
}

/// The page for a report.
pub fn render(doc: &Doc) -> String {
    let title = match doc.findings.first().filter(|_| doc.has_problem()) {
        Some(f) => format!("tcptrace: {}", f.title),
        None => "tcptrace: no problem found".to_string(),
    };
    let sections: [(&str, &str); 8] = [
        ("findings", "Findings"),
        ("timeline", "Timeline"),
        ("idle", "Idle time before resets"),
        ("latency", "Connect latency"),
        ("processes", "Processes"),
        ("peers", "Peers"),
        ("host", "Host"),
        ("method", "How the data was taken"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content=(POLICY);
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "TCP incident report" }
                    (verdict(doc))
                    p.muted { (watched(doc)) }
                    nav aria-label="sections" {
                        ol {
                            @for (n, (id, name)) in sections.iter().enumerate() {
                                li { a href=(format!("#{id}")) { (n + 1) ". " (name) } }
                            }
                        }
                    }
                }
                main {
                    section #findings { h2 { "1. Findings" } (findings(doc)) }
                    section #timeline { h2 { "2. Timeline" } (timeline(doc)) }
                    section #idle { h2 { "3. Idle time before resets" } (idle(doc)) }
                    section #latency { h2 { "4. Connect latency" } (latency(doc)) }
                    section #processes { h2 { "5. Processes" } (processes(doc)) }
                    section #peers { h2 { "6. Peers" } (peers(doc)) }
                    section #host { h2 { "7. Host" } (host(doc)) }
                    section #method { h2 { "8. How the data was taken" } (method(doc)) }
                }
                footer {
                    "tcptrace " (env!("CARGO_PKG_VERSION"))
                    " · one self-contained page: no script, nothing loaded from elsewhere"
                }
            }
        }
    }
    .into_string()
}

/// A duration given in seconds, as every report writes durations.
fn secs(s: f64) -> String {
    duration_ns((s.max(0.0) * 1e9).round() as u64)
}

fn ns(ns: u64) -> String {
    duration_ns(ns)
}

/// Text with `code` spans where the rules quote a setting in backticks.
fn rich(text: &str) -> Markup {
    html! {
        @for (i, part) in text.split('`').enumerate() {
            @if i % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}

/// `NO_SOCKET 3, TCP_STATE 1`
fn by_name(counts: &BTreeMap<String, u64>) -> String {
    let mut sorted: Vec<_> = counts.iter().filter(|(_, n)| **n > 0).collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    sorted
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn verdict(doc: &Doc) -> Markup {
    let top = doc.findings.first().filter(|_| doc.has_problem());
    html! {
        @match top {
            Some(f) => p.verdict.problem {
                "Problem found: " (f.title) " (" (f.confidence) " confidence)"
            },
            None => p.verdict.ok { "No problem found (nothing at medium or high confidence)" },
        }
    }
}

fn watched(doc: &Doc) -> String {
    let mut parts = vec![format!("Watched {:.1} s", doc.seconds)];
    if let Some(ns) = &doc.netns {
        parts.push(format!("in network namespace {ns}"));
    }
    if let Some(at) = &doc.started_at {
        parts.push(format!("from {at}"));
    }
    if let Some(k) = &doc.kernel {
        parts.push(format!("on Linux {k}"));
    }
    format!(
        "{}; {} events received, {} lost.",
        parts.join(" "),
        doc.events_received,
        doc.events_lost
    )
}

/// `at 3.61s` or `3.61s–3.70s`.
fn span(from_s: f64, to_s: f64) -> String {
    if (to_s - from_s).abs() < 0.001 {
        format!("at {}", secs(from_s))
    } else {
        format!("{}–{}", secs(from_s), secs(to_s))
    }
}

/// `F1`, `F2`: how charts name the findings.
fn tag(index: usize) -> String {
    format!("F{}", index + 1)
}

fn findings(doc: &Doc) -> Markup {
    html! {
        @if doc.findings.is_empty() {
            p { "No finding: every rule's check is listed below." }
        }
        @for (i, f) in doc.findings.iter().enumerate() {
            (finding(i, f))
        }
        h3 { "What was checked" }
        ul {
            @for line in &doc.checked { li { (line) } }
        }
    }
}

fn finding(index: usize, f: &Finding) -> Markup {
    let class = match f.confidence.as_str() {
        "high" | "medium" | "low" => f.confidence.as_str(),
        _ => "low",
    };
    html! {
        article class=(format!("finding {class}")) {
            h3 {
                span.badge { (f.confidence.to_uppercase()) }
                (index + 1) ". " (f.title) " "
                code { (f.cause) }
            }
            p.summary { (f.summary) }
            div.cols {
                div {
                    @if !f.evidence.is_empty() {
                        h4 { "Evidence" }
                        ul { @for e in &f.evidence { li { (rich(e)) } } }
                    }
                }
                div {
                    @if !f.figures.is_empty() {
                        h4 { "Key figures" }
                        table {
                            @for (key, value) in &f.figures {
                                tr { th { code { (key) } } td.num { (figure(key, *value)) } }
                            }
                        }
                    }
                    @if let Some(m) = f.moments {
                        h4 { "When" }
                        p {
                            @if (m.last_s - m.first_s).abs() < 0.001 {
                                "At " (secs(m.first_s))
                            } @else {
                                "From " (secs(m.first_s)) " to " (secs(m.last_s))
                            }
                            " after tracing started; marked " strong { (tag(index)) } " on the timeline."
                        }
                    }
                }
            }
            @if !f.affected.is_empty() {
                h4 { "Who" }
                div.scroll {
                    table {
                        tr { th { "process" } th { "role" } th { "peer" } th.num { "events" } th { "cgroup" } }
                        @for a in &f.affected {
                            tr {
                                td {
                                    @if a.pid == 0 { "unattributed" } @else { "pid " (a.pid) " (" (a.comm) ")" }
                                }
                                td { (a.role) }
                                td { (a.peer.as_deref().unwrap_or("-")) }
                                td.num { (a.events) }
                                td { (a.cgroup.as_deref().unwrap_or("-")) }
                            }
                        }
                    }
                }
            }
            @if !f.fix.is_empty() {
                h4 { "Fix" }
                ol.fix { @for fix in &f.fix { li { (rich(fix)) } } }
            }
        }
    }
}

/// A key figure with its unit: `_s` keys are durations.
fn figure(key: &str, value: f64) -> String {
    if key.ends_with("_s") {
        secs(value)
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

/// The series of the timeline: JSON key, what a panel says.
const SERIES: [(&str, &str); 6] = [
    ("rst_sent", "RSTs sent"),
    ("rst_received", "RSTs received"),
    ("retransmits", "retransmits"),
    ("connect_failed", "failed connects"),
    ("drops", "packets dropped"),
    ("socket_errors", "socket errors"),
];

fn timeline(doc: &Doc) -> Markup {
    let Some(t) = doc.timeline.as_ref().filter(|t| t.bucket_s > 0.0) else {
        return html! { p.note { "This report has no timeline." } };
    };
    let mut panels = Vec::new();
    let mut quiet = Vec::new();
    for (colour, (key, label)) in SERIES.iter().enumerate() {
        match t.series.get(*key).filter(|c| c.iter().any(|n| *n > 0)) {
            Some(counts) => panels.push(Counts {
                label: label.to_string(),
                counts,
                colour,
            }),
            None => quiet.push(*label),
        }
    }
    let marks: Vec<Mark> = doc
        .findings
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let m = f.moments?;
            Some(Mark {
                label: tag(i),
                from_s: m.first_s,
                to_s: m.last_s,
            })
        })
        .collect();
    let described =
        "Incidents per second: one panel per kind, findings' moments as labelled dashed bands";
    html! {
        @if panels.is_empty() {
            p { "No RST, retransmit, failed connect, drop or socket error during the run." }
        } @else {
            figure {
                (chart(charts::timeline(&panels, t.bucket_s, doc.seconds, &marks), described))
                figcaption {
                    "Incidents per " (if t.bucket_s == 1.0 { "second".to_string() } else { secs(t.bucket_s) })
                    " since tracing started, one panel per kind. "
                    @if !marks.is_empty() {
                        "Dashed bands mark the first to the last event each finding rests on ("
                        @for (i, m) in marks.iter().enumerate() {
                            @if i > 0 { ", " }
                            (m.label) ": " (span(m.from_s, m.to_s))
                        }
                        "). "
                    }
                    @if !quiet.is_empty() { "None during the run: " (quiet.join(", ")) "." }
                }
            }
        }
    }
}

/// `idle_timeout*_s` figures of the findings, as marks.
fn timeouts(doc: &Doc) -> Vec<Mark> {
    doc.findings
        .iter()
        .enumerate()
        .flat_map(|(i, f)| {
            f.figures
                .iter()
                .filter(|(k, v)| k.starts_with("idle_timeout") && k.ends_with("_s") && **v > 0.0)
                .map(move |(k, v)| Mark {
                    label: if k == "idle_timeout_s" {
                        format!("idle timeout ≈ {} ({})", secs(*v), tag(i))
                    } else {
                        format!("{} {} ({})", k.trim_end_matches("_s"), secs(*v), tag(i))
                    },
                    from_s: *v,
                    to_s: *v,
                })
        })
        .collect()
}

fn idle(doc: &Doc) -> Markup {
    let d = &doc.distributions;
    let panels = [
        Values {
            label: "RSTs received after the connection idled".into(),
            values: &d.idle_before_rst,
            colour: 1,
        },
        Values {
            label: "connections the peer closed (FIN) after idling".into(),
            values: &d.peer_close_idle,
            colour: 3,
        },
        Values {
            label: "connections this host closed after idling".into(),
            values: &d.local_close_idle,
            colour: 4,
        },
        Values {
            label: "sends after an idle gap (reuse)".into(),
            values: &d.reuse_idle,
            colour: 2,
        },
    ];
    let marks = timeouts(doc);
    let described =
        "Idle times on a log scale, one panel per kind, inferred idle timeouts as dashed lines";
    html! {
        @match charts::durations(&panels, &marks, "idle time (log scale)", 30) {
            Ok(None) => p { "No connection was reset, closed or reused after an idle gap during the run." },
            result => figure {
                (chart(result.map(Option::unwrap_or_default), described))
                figcaption {
                    "How long connections had been idle when they were reset, closed, or used again (log scale). "
                    @if marks.is_empty() {
                        "No finding inferred an idle timeout."
                    } @else {
                        "The dashed line is the idle timeout a finding inferred: "
                        @for (i, m) in marks.iter().enumerate() {
                            @if i > 0 { "; " }
                            (m.label)
                        }
                        ". Values clustering just past it are connections the timeout killed."
                    }
                }
            }
        }
    }
}

fn latency(doc: &Doc) -> Markup {
    let values = &doc.distributions.connect_latency;
    let q = |q: f64| charts::quantile_ns(values, q);
    let marks: Vec<Mark> = [("p50", q(0.5)), ("p99", q(0.99))]
        .into_iter()
        .filter_map(|(name, v)| {
            let s = v? as f64 / 1e9;
            Some(Mark {
                label: format!("{name} {}", ns(v?)),
                from_s: s,
                to_s: s,
            })
        })
        .collect();
    let panels = [Values {
        label: "successful connects".into(),
        values,
        colour: 5,
    }];
    let described = "Connect latency on a log scale, p50 and p99 as dashed lines";
    html! {
        @match charts::durations(&panels, &marks, "connect latency, SYN sent to established (log scale)", 12) {
            Ok(None) => p { "No connect from this host completed during the run." },
            result => figure {
                (chart(result.map(Option::unwrap_or_default), described))
                figcaption {
                    "Time from SYN sent to ESTABLISHED for every connect that succeeded (log scale)"
                    @if let (Some(p50), Some(p90), Some(p99), Some(max)) = (q(0.5), q(0.9), q(0.99), q(1.0)) {
                        ": p50 " (ns(p50)) ", p90 " (ns(p90)) ", p99 " (ns(p99)) ", max " (ns(max))
                    }
                    ". Steps near 1 s and 3 s are SYNs retransmitted after a drop (a full accept queue, loss on the path)."
                }
            }
        }
    }
}

/// An SVG chart inline, or a line saying why it is missing.
fn chart(svg: Result<String, Box<dyn std::error::Error>>, described: &str) -> Markup {
    match svg {
        Ok(svg) => {
            // Inline SVG in HTML needs no namespace; keeping it would put
            // the page's only URL in it.
            let svg = svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1);
            let label = html! { (described) }.into_string();
            let svg = svg.replacen(
                "<svg ",
                &format!("<svg class=\"chart\" role=\"img\" aria-label=\"{label}\" "),
                1,
            );
            html! { (PreEscaped(svg)) }
        }
        Err(e) => html! { p.note { "The chart could not be drawn: " (e.to_string()) } },
    }
}

fn latency_cell(g: &Group) -> String {
    g.connect_latency.map_or_else(
        || "-".into(),
        |p| format!("{} / {}", ns(p.p50_ns), ns(p.p99_ns)),
    )
}

/// `RST received in: CLOSE_WAIT 3 · errors: ECONNRESET 3`
fn breakdown(g: &Group) -> String {
    [
        ("RST sent", by_name(&g.rst_sent)),
        ("RST received in", by_name(&g.rst_received)),
        ("retransmits in", by_name(&g.retransmits)),
        ("drops", by_name(&g.drops)),
        ("socket errors", by_name(&g.socket_errors)),
    ]
    .into_iter()
    .filter(|(_, text)| !text.is_empty())
    .map(|(name, text)| format!("{name}: {text}"))
    .collect::<Vec<_>>()
    .join(" · ")
}

type Cell = fn(&Group) -> String;

/// The figures of the processes and peers tables: header, cell.
const COLUMNS: [(&str, Cell); 10] = [
    ("connects", |g| g.connects.to_string()),
    ("failed connects", |g| {
        if g.refused > 0 {
            format!("{} ({} refused)", g.connect_failed, g.refused)
        } else {
            g.connect_failed.to_string()
        }
    }),
    ("RST sent", |g| g.rst_sent.values().sum::<u64>().to_string()),
    ("RST received", |g| {
        g.rst_received.values().sum::<u64>().to_string()
    }),
    ("retransmits", |g| g.retransmits_total().to_string()),
    ("timeouts", |g| g.timeout_aborts.to_string()),
    ("drops", |g| g.drops.values().sum::<u64>().to_string()),
    ("socket errors", |g| {
        g.socket_errors.values().sum::<u64>().to_string()
    }),
    ("connect p50 / p99", latency_cell),
    ("idle before RST p50", |g| {
        g.idle_before_rst
            .map_or_else(|| "-".into(), |p| ns(p.p50_ns))
    }),
];

/// A table of groups, `name` giving the first column; columns no row
/// has a figure for are left out (and said so), each row's counts by
/// reason follow it on a line of their own.
fn group_table(rows: &[Group], first: &str, name: impl Fn(&Group) -> String) -> Markup {
    let empty = |v: &str| v == "0" || v == "-";
    let (shown, left_out): (Vec<_>, Vec<_>) = COLUMNS
        .iter()
        .partition(|(_, cell)| rows.iter().any(|g| !empty(&cell(g))));
    html! {
        div.scroll {
            table {
                tr {
                    th { (first) }
                    @for (header, _) in &shown { th.num { (header) } }
                }
                @for g in rows {
                    tr {
                        td { (name(g)) }
                        @for (_, cell) in &shown { td.num { (cell(g)) } }
                    }
                    @let why = breakdown(g);
                    @if !why.is_empty() {
                        tr.sub { td {} td colspan=(shown.len()) { (why) } }
                    }
                }
            }
        }
        @if !left_out.is_empty() {
            p.note {
                "None for any of them: "
                (left_out.iter().map(|(h, _)| *h).collect::<Vec<_>>().join(", ")) "."
            }
        }
    }
}

fn processes(doc: &Doc) -> Markup {
    let name = |g: &Group| match g.pid {
        Some(0) | None => "unattributed".to_string(),
        Some(pid) => format!("pid {pid} ({})", g.comm.as_deref().unwrap_or("?")),
    };
    html! {
        @if doc.processes.is_empty() {
            p { "No process had a traced event." }
        } @else {
            p.muted { "The processes with the most incidents (unattributed: sockets no process was known to own)." }
            (group_table(&doc.processes, "process", name))
        }
    }
}

fn peers(doc: &Doc) -> Markup {
    let name = |g: &Group| {
        let peer = g.peer.as_deref().unwrap_or("?");
        let peer = match peer.strip_suffix(":0") {
            Some(ip) => format!("{ip} (clients, many ports)"),
            None => peer.to_string(),
        };
        let pids: Vec<String> = g
            .processes
            .iter()
            .map(|p| {
                if *p == 0 {
                    "unattributed".to_string()
                } else {
                    format!("pid {p}")
                }
            })
            .collect();
        if pids.is_empty() {
            peer
        } else {
            format!("{peer} ({})", pids.join(", "))
        }
    };
    html! {
        @if doc.peers.is_empty() {
            p { "No remote endpoint had a traced event." }
        } @else {
            p.muted { "The remote endpoints with the most incidents, with the processes involved; a server's clients are grouped by address." }
            (group_table(&doc.peers, "peer", name))
        }
        @if !doc.scattered_resets.is_empty() {
            h3 { "Unowned RSTs with ephemeral ports" }
            p.muted {
                "RSTs for connections no process owned, exchanged with the random client ports of one address "
                "(the kernel answering stray segments): one line per address instead of one per port."
            }
            table {
                tr { th { "address" } th.num { "ports" } th.num { "RST sent" } th.num { "RST received" } th.num { "dropped" } }
                @for s in &doc.scattered_resets {
                    tr {
                        td { (s.address) } td.num { (s.ports) } td.num { (s.rst_sent) }
                        td.num { (s.rst_received) } td.num { (s.drops) }
                    }
                }
            }
        }
    }
}

/// `a.b.c` -> value of every leaf of a JSON object.
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(fields) => {
            for (k, v) in fields {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

fn show(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// A start/end table of a JSON object with `start` and `end`, with the
/// change of numeric fields.
fn start_end(value: &Value) -> Markup {
    let (mut start, mut end) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &value["start"], &mut start);
    flatten("", &value["end"], &mut end);
    let mut keys: Vec<&String> = start.keys().chain(end.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.retain(|k| *k != "loaded");
    html! {
        table {
            tr { th { "figure" } th.num { "start" } th.num { "end" } th.num { "change" } }
            @for key in keys {
                @let (a, b) = (start.get(key), end.get(key));
                tr {
                    td { code { (key) } }
                    td.num { (show(a)) }
                    td.num { (show(b)) }
                    td.num {
                        @match (a.and_then(Value::as_i64), b.and_then(Value::as_i64)) {
                            (Some(a), Some(b)) if a != b => { (format!("{:+}", b - a)) },
                            _ => "",
                        }
                    }
                }
            }
        }
    }
}

fn sockets(start: Option<&Sockets>, end: Option<&Sockets>) -> Markup {
    let mut states: Vec<&String> = start
        .iter()
        .chain(end.iter())
        .flat_map(|s| s.states.keys())
        .collect();
    states.sort();
    states.dedup();
    let count = |s: Option<&Sockets>, k: &str| {
        s.map_or_else(
            || "-".into(),
            |s| s.states.get(k).copied().unwrap_or(0).to_string(),
        )
    };
    let last = end.or(start);
    html! {
        @if !states.is_empty() {
            table {
                tr { th { "state" } th.num { "start" } th.num { "end" } }
                @for st in states {
                    tr { td { (st) } td.num { (count(start, st)) } td.num { (count(end, st)) } }
                }
            }
        }
        @if let Some(s) = last.filter(|s| !s.listeners.is_empty()) {
            h4 { "Listeners (accept queue at the end)" }
            table {
                tr { th { "address" } th.num { "queued" } th.num { "limit" } }
                @for l in &s.listeners {
                    tr {
                        td { (l.local) }
                        td.num { (l.queued) }
                        td.num { (l.limit.map_or_else(|| "-".into(), |n| n.to_string())) }
                    }
                }
            }
        }
        @if let Some(s) = last.filter(|s| !s.time_wait_by_peer.is_empty()) {
            h4 { "TIME_WAIT by destination (at the end)" }
            table {
                tr { th { "destination" } th.num { "sockets" } }
                @for (peer, n) in &s.time_wait_by_peer { tr { td { (peer) } td.num { (n) } } }
            }
        }
    }
}

fn host(doc: &Doc) -> Markup {
    let mut counters: Vec<(&String, &i64)> =
        doc.counters.iter().filter(|(_, v)| **v != 0).collect();
    counters.sort_by(|a, b| b.1.abs().cmp(&a.1.abs()).then(a.0.cmp(b.0)));
    html! {
        div.cols {
            div {
                h3 { "Sysctls that matter" }
                @if doc.sysctls.is_empty() { p { "None read." } } @else {
                    table {
                        @for (k, v) in &doc.sysctls { tr { td { code { (k) } } td { (v) } } }
                    }
                }
            }
            div {
                h3 { "Kernel counters that changed" }
                @if counters.is_empty() { p { "None of the TCP and ICMP counters changed." } } @else {
                    table {
                        tr { th { "counter" } th.num { "change" } }
                        @for (k, v) in counters { tr { td { code { (k) } } td.num { (format!("{v:+}")) } } }
                    }
                }
            }
        }
        h3 { "Conntrack" }
        @match &doc.conntrack {
            None => p { "Could not be read." },
            Some(c) if c["loaded"] == Value::Bool(false) => p { "Not loaded (no nf_conntrack): nothing is tracked." },
            Some(c) => (start_end(c)),
        }
        h3 { "Host-wide TCP limits and usage" }
        @if doc.host_global.is_object() { (start_end(&doc.host_global)) } @else { p { "Not read." } }
        h3 { "Sockets" }
        (sockets(doc.sockets_start.as_ref(), doc.sockets_end.as_ref()))
    }
}

fn filters(doc: &Doc) -> String {
    let Some(fields) = doc.filters.as_object() else {
        return "not recorded".into();
    };
    let set: Vec<String> = fields
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            Value::Array(items) => format!(
                "{k} {}",
                items
                    .iter()
                    .map(|i| show(Some(i)))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            v => format!("{k} {}", show(Some(v))),
        })
        .collect();
    set.join("; ")
}

fn method(doc: &Doc) -> Markup {
    html! {
        dl.facts {
            dt { "Started" } dd { (doc.started_at.as_deref().unwrap_or("not recorded")) }
            dt { "Watched" } dd { (format!("{:.1} s", doc.seconds)) }
            dt { "Network namespace" } dd { (doc.netns.as_deref().unwrap_or("all (host-wide)")) }
            dt { "Filters" } dd { (filters(doc)) }
            dt { "Kernel" } dd { (doc.kernel.as_deref().unwrap_or("not recorded")) }
            dt { "Events" } dd {
                (doc.events_received) " received, " (doc.events_produced) " produced by the kernel programs, "
                (doc.events_lost) " lost (ring buffer full)"
                @if doc.events_lost > 0 { strong { ": every count is a lower bound" } }
            }
            dt { "Hook runs skipped" } dd {
                (doc.missed_by_kernel) " (the kernel skipped a program already running on that CPU: those events were never produced)"
            }
            @if !doc.missing.is_empty() {
                dt { "Not traced on this kernel" } dd { (doc.missing.join("; ")) }
            }
            @if let Some(load) = &doc.load {
                dt { "Load" } dd { code { (load.command) } " (" (load.status.as_deref().unwrap_or("stopped with the watch")) ")" }
            }
        }
        p.muted {
            "Events come from kernel tracepoints (no kprobes), attributed to the process that owned the socket. "
            "Counters, sysctls, sockets and conntrack were read at the start and the end, in the watched namespace; "
            "host-wide TCP limits in the initial one."
        }
    }
}

#[cfg(test)]
mod tests;
