//! What `top` shows about one row after Enter: its resets by reason and
//! state, retransmits, connects, drops by reason, socket errors by errno,
//! how long connections had idled before they were reset, and its last
//! incidents. Plain data, so the TUI only lays it out.

use std::collections::BTreeMap;

use crate::ranking::{Row, RowKey};
use crate::{
    aggregate::{
        Aggregate, Dist, Stats, log_bins,
        recent::{Brief, RecentKey},
    },
    event::EventKind,
    kernel::clock::WallClock,
    timefmt::{duration_ns, local_time_of_day},
};

/// One row's detail.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detail {
    /// Sections: a heading and its lines.
    pub sections: Vec<(String, Vec<String>)>,
    /// What the idle histogram shows, with its percentiles.
    pub idle_title: String,
    /// Idle times before a reset: (bin label, count), shortest first.
    pub idle: Vec<(String, u64)>,
    /// The last incidents, newest last, one line each.
    pub last: Vec<String>,
}

/// `NO_SOCKET 3, TCP_STATE 1`, most first.
fn by_name(counts: &BTreeMap<&'static str, u64>) -> Vec<String> {
    let mut all: Vec<_> = counts.iter().filter(|(_, n)| **n > 0).collect();
    all.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    all.iter().map(|(name, n)| format!("{name} {n}")).collect()
}

/// The distribution the idle histogram shows: idle before an RST
/// received in ESTABLISHED, else idle when the peer closed (the reset
/// then comes in CLOSE_WAIT, on reuse).
fn idle_of(s: &Stats) -> Option<(&'static str, &Dist)> {
    if !s.idle_before_rst.is_empty() {
        Some(("idle before an RST received", &s.idle_before_rst))
    } else if !s.peer_close_idle.is_empty() {
        Some(("idle when the peer closed (FIN)", &s.peer_close_idle))
    } else {
        None
    }
}

fn stats_sections(s: &Stats) -> Vec<(String, Vec<String>)> {
    let mut sections = Vec::new();
    let mut push = |title: &str, lines: Vec<String>| {
        if !lines.is_empty() {
            sections.push((title.to_string(), lines));
        }
    };
    push("RSTs sent, by reason", by_name(&s.rst_sent));
    push("RSTs received, by state", by_name(&s.rst_received));
    let mut retransmits = by_name(&s.retransmits);
    if s.syn_retransmits > 0 {
        retransmits.push(format!("SYN {}", s.syn_retransmits));
    }
    if s.synack_retransmits > 0 {
        retransmits.push(format!("SYN-ACK {}", s.synack_retransmits));
    }
    push("retransmits, by state", retransmits);
    let mut connects = Vec::new();
    if s.connects + s.connect_failed > 0 {
        connects.push(format!(
            "{} succeeded, {} failed ({} refused)",
            s.connects, s.connect_failed, s.refused
        ));
    }
    if let Some(p) = s.connect_latency.percentiles() {
        connects.push(format!(
            "latency p50 {} p99 {} max {}",
            duration_ns(p.p50_ns),
            duration_ns(p.p99_ns),
            duration_ns(p.max_ns)
        ));
    }
    if s.timeout_aborts > 0 {
        connects.push(format!(
            "{} connections the kernel gave up on (timeout)",
            s.timeout_aborts
        ));
    }
    push("connects", connects);
    push("packets dropped, by reason", by_name(&s.drops));
    push("socket errors, by errno", by_name(&s.socket_errors));
    sections
}

fn brief_line(b: &Brief, clock: &WallClock) -> String {
    let time = local_time_of_day(clock.unix_ns(b.mono_ns));
    // Milliseconds are plenty here.
    let time = &time[..time.len().saturating_sub(3)];
    let who = if b.pid == 0 {
        "unowned".to_string()
    } else {
        format!("{} {}", b.pid, b.comm)
    };
    let after = match (b.kind, b.after_ns) {
        (EventKind::ConnectFailed, Some(ns)) => format!(" after {}", duration_ns(ns)),
        (_, Some(ns)) => format!(" idle {}", duration_ns(ns)),
        (_, None) => String::new(),
    };
    let what = if b.what.is_empty() {
        String::new()
    } else {
        format!(" {}", b.what)
    };
    format!(
        "{time} {:<14} {} -> {} {who}{what}{after}",
        b.kind.name(),
        b.local,
        b.remote,
    )
}

/// The detail of `row`, from the aggregate's figures.
pub fn detail(agg: &Aggregate, row: &Row, clock: &WallClock) -> Detail {
    let stats = match row.key {
        RowKey::Host => Some(&agg.total),
        RowKey::Process(pid) => agg.process(pid).map(|p| &p.stats),
        RowKey::Peer(peer) => agg.peers.get(&peer).map(|s| &**s),
        RowKey::Scattered(_) => None,
    };
    let mut d = Detail::default();
    if let RowKey::Scattered(ip) = row.key
        && let Some(s) = agg.scattered.get(ip)
    {
        d.sections.push((
            "unowned RSTs with ephemeral ports".into(),
            vec![
                format!(
                    "{} RSTs sent, {} received, {} segments dropped",
                    s.rst_sent, s.rst_received, s.drops
                ),
                format!("{} ports of {ip}, no process owned them", s.ports),
                "the kernel answering segments for connections it no longer has".into(),
            ],
        ));
    }
    if let Some(s) = stats {
        d.sections.extend(stats_sections(s));
        if let Some((what, dist)) = idle_of(s) {
            let p = dist.percentiles();
            d.idle_title = match p {
                Some(p) => format!(
                    "{what}: p50 {} p90 {} max {} (n={})",
                    duration_ns(p.p50_ns),
                    duration_ns(p.p90_ns),
                    duration_ns(p.max_ns),
                    p.count
                ),
                None => what.to_string(),
            };
            d.idle = log_bins(&dist.values(), 3)
                .into_iter()
                .map(|b| (duration_ns(b.low_ns as u64), b.count))
                .collect();
        }
    }
    if d.idle.is_empty() {
        d.idle_title = "idle before resets: none".into();
    }
    if d.sections.is_empty() {
        d.sections
            .push(("incidents".into(), vec!["none so far".into()]));
    }
    let recent = match row.key {
        RowKey::Process(pid) => Some(RecentKey::Process(pid)),
        RowKey::Peer(peer) => Some(RecentKey::Peer(peer)),
        RowKey::Host | RowKey::Scattered(_) => None,
    };
    if let (Some(key), Some(r)) = (recent, &agg.recent) {
        d.last = r.of(key).iter().map(|b| brief_line(b, clock)).collect();
    }
    d
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        aggregate::testing::{ev, names},
        counts::Counts,
        ranking::Snapshot,
    };

    #[test]
    fn a_process_detail_has_its_reasons_idle_times_and_last_incidents() {
        let mut agg = Aggregate::new(names());
        agg.keep_recent();
        for (t, idle) in [(1_000, 2_000), (2_000, 2_010), (3_000, 2_020)] {
            agg.add(
                &ev(EventKind::RstReceived, t)
                    .sock(t)
                    .owner(42, "curl")
                    .state("ESTABLISHED")
                    .idle_ms(idle, idle)
                    .build(),
            );
        }
        agg.add(
            &ev(EventKind::RstSent, 4_000)
                .owner(42, "curl")
                .reason("TCP_ABORT_ON_CLOSE")
                .build(),
        );
        agg.add(
            &ev(EventKind::Drop, 5_000)
                .owner(42, "curl")
                .dropped(12, 0x02)
                .build(),
        );
        agg.add(
            &ev(EventKind::SocketError, 6_000)
                .owner(42, "curl")
                .socket_errno(104)
                .build(),
        );
        let snap = Snapshot::take(
            &agg,
            &Snapshot::default(),
            Duration::from_secs(1),
            Counts::default(),
        );
        let row = snap.processes.iter().find(|r| r.pid == Some(42)).unwrap();
        let d = detail(&agg, row, &WallClock::now());
        let section = |title: &str| {
            d.sections
                .iter()
                .find(|(t, _)| t == title)
                .unwrap_or_else(|| panic!("no {title}: {d:?}"))
                .1
                .clone()
        };
        assert_eq!(section("RSTs sent, by reason"), ["TCP_ABORT_ON_CLOSE 1"]);
        assert_eq!(section("RSTs received, by state"), ["ESTABLISHED 3"]);
        assert_eq!(section("packets dropped, by reason"), ["NETFILTER_DROP 1"]);
        assert_eq!(section("socket errors, by errno"), ["ECONNRESET 1"]);
        assert!(d.idle_title.contains("p50 2.0"), "{}", d.idle_title);
        assert!(d.idle_title.ends_with("(n=3)"), "{}", d.idle_title);
        assert_eq!(d.idle.iter().map(|b| b.1).sum::<u64>(), 3);
        assert_eq!(d.last.len(), 6);
        assert!(d.last[0].contains("rst_received"), "{:?}", d.last);
        assert!(d.last[0].contains("idle 2s"), "{:?}", d.last);
        assert!(d.last[5].contains("ECONNRESET"), "{:?}", d.last);
    }
}
