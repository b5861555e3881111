//! A snapshot without a terminal (`top --plain`/`--json`, and `replay`
//! of a `top --record` file): tables, or one JSON line.

use std::io::{self, Write};

use super::{Row, Snapshot};
use crate::timefmt::duration_ns;

/// Writes one snapshot: two tables cut to `rows` rows, or one JSON line.
pub fn write(out: &mut impl Write, snap: &Snapshot, rows: usize, json: bool) -> io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, &Limited { snap, rows }).map_err(io::Error::from)?;
        writeln!(out)?;
        return out.flush();
    }
    writeln!(
        out,
        "--- {:.0} s: {} ---",
        snap.elapsed_s,
        snap.counts.human()
    )?;
    table(out, "PROCESS", &snap.processes, rows)?;
    table(out, "PEER", &snap.peers, rows)?;
    writeln!(out)?;
    out.flush()
}

/// The snapshot with each table cut to `rows`.
struct Limited<'a> {
    snap: &'a Snapshot,
    rows: usize,
}

impl serde::Serialize for Limited<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let counts = &self.snap.counts;
        let mut st = s.serialize_struct("Snapshot", 13)?;
        st.serialize_field("v", &crate::event::SCHEMA_VERSION)?;
        st.serialize_field("type", "top")?;
        st.serialize_field("elapsed_s", &self.snap.elapsed_s)?;
        st.serialize_field("events", &self.snap.events)?;
        st.serialize_field("events_received", &counts.received())?;
        st.serialize_field("events_produced", &counts.produced())?;
        st.serialize_field("events_lost", &counts.lost())?;
        st.serialize_field("missed_by_kernel", &counts.missed_by_kernel())?;
        st.serialize_field("opens_counted_in_kernel", &counts.kernel.counted)?;
        st.serialize_field("count_map_full", &counts.kernel.count_map_full)?;
        let cut = |rows: &'_ [Row]| rows[..rows.len().min(self.rows)].to_vec();
        st.serialize_field("processes", &cut(&self.snap.processes))?;
        st.serialize_field("peers", &cut(&self.snap.peers))?;
        st.serialize_field("host", &self.snap.host)?;
        st.end()
    }
}

/// Column titles of both tables, after the NAME column.
pub const HEADER: [&str; 11] = [
    "INC/s", "RST/s", "RST_TX", "RST_RX", "RETRANS", "CONN", "FAILED", "DROPS", "ERRORS", "P50",
    "P99",
];

/// The numeric cells of a row, in `HEADER` order.
pub fn cells(r: &Row) -> [String; 11] {
    let us = |v: Option<u64>| v.map_or_else(|| "-".into(), |us| duration_ns(us * 1000));
    [
        format!("{:.1}", r.incidents_per_s),
        format!("{:.1}", r.resets_per_s),
        r.rst_sent.to_string(),
        r.rst_received.to_string(),
        r.retransmits.to_string(),
        r.connects.to_string(),
        r.connect_failed.to_string(),
        r.drops.to_string(),
        r.socket_errors.to_string(),
        us(r.connect_p50_us),
        us(r.connect_p99_us),
    ]
}

/// The NAME column is at most this wide; longer names are cut.
pub const MAX_NAME: usize = 40;

/// Column widths that fit `rows`: the NAME column, then one per `HEADER`.
pub fn widths(title: &str, rows: &[Row]) -> (usize, [usize; 11]) {
    let name = rows
        .iter()
        .map(|r| r.name().chars().count())
        .chain([title.len()])
        .max()
        .unwrap_or(0)
        .min(MAX_NAME);
    let mut columns = HEADER.map(str::len);
    for r in rows {
        for (w, c) in columns.iter_mut().zip(cells(r)) {
            *w = (*w).max(c.chars().count());
        }
    }
    (name, columns)
}

fn table(out: &mut impl Write, title: &str, rows: &[Row], limit: usize) -> io::Result<()> {
    let rows = &rows[..rows.len().min(limit)];
    let (name, columns) = widths(title, rows);
    write!(out, "{title:<name$}")?;
    for (h, w) in HEADER.iter().zip(columns) {
        write!(out, " {h:>w$}")?;
    }
    writeln!(out)?;
    for r in rows {
        let label: String = r.name().chars().take(name).collect();
        write!(out, "{label:<name$}")?;
        for (c, w) in cells(r).iter().zip(columns) {
            write!(out, " {c:>w$}")?;
        }
        writeln!(out)?;
        if let Some(line) = breakdown(r) {
            writeln!(out, "{:<name$} {line}", "")?;
        }
    }
    Ok(())
}

/// `drops: NETFILTER_DROP 3  errors: ECONNRESET 1`, when there are any.
pub fn breakdown(r: &Row) -> Option<String> {
    let list = |counts: &std::collections::BTreeMap<&str, u64>| {
        counts
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if !r.drops_by_reason.is_empty() {
        parts.push(format!("drops: {}", list(&r.drops_by_reason)));
    }
    if !r.socket_errors_by_errno.is_empty() {
        parts.push(format!("errors: {}", list(&r.socket_errors_by_errno)));
    }
    (!parts.is_empty()).then(|| parts.join("  "))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::counts::Counts;

    #[test]
    fn plain_and_json_snapshots() {
        let snap = Snapshot {
            elapsed_s: 2.0,
            events: 5,
            events_lost: 0,
            processes: vec![
                Row {
                    label: "42 curl".into(),
                    rst_received: 3,
                    connect_p99_us: Some(1500),
                    drops: 2,
                    drops_by_reason: [("NETFILTER_DROP", 2)].into(),
                    socket_errors: 1,
                    socket_errors_by_errno: [("ETIMEDOUT", 1)].into(),
                    ..Row::default()
                },
                Row {
                    label: "43 wget".into(),
                    ..Row::default()
                },
            ],
            peers: vec![],
            host: Row::default(),
            counts: Counts::default(),
        };
        let mut text = Vec::new();
        write(&mut text, &snap, 1, false).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("42 curl"), "{text}");
        assert!(text.contains("1.5ms"), "{text}");
        assert!(!text.contains("43 wget"), "limited to 1 row: {text}");
        assert!(
            text.contains("drops: NETFILTER_DROP 2  errors: ETIMEDOUT 1"),
            "{text}"
        );
        let mut line = Vec::new();
        write(&mut line, &snap, 10, true).unwrap();
        let j: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(j["type"], "top");
        for field in [
            "events_received",
            "events_produced",
            "events_lost",
            "missed_by_kernel",
        ] {
            assert_eq!(j[field], 0, "{field}");
        }
        assert_eq!(j["processes"][0]["rst_received"], 3);
        assert_eq!(j["processes"][0]["drops_by_reason"]["NETFILTER_DROP"], 2);
        assert_eq!(j["processes"][0]["socket_errors_by_errno"]["ETIMEDOUT"], 1);
        assert_eq!(j["processes"].as_array().unwrap().len(), 2);
    }
}
