//! The human form of a snapshot: short aligned tables, one per question.

use std::io::{self, Write};

use super::{Report, StateCounts};
use crate::host::{owners::Owner, sock_diag::TcpState};
use crate::text_table::write_table as table;

pub fn human(out: &mut impl Write, report: &Report) -> io::Result<()> {
    let tables = &report.tables;
    let netns = report
        .netns
        .as_deref()
        .map(|name| format!(" in netns {name}"))
        .unwrap_or_default();
    writeln!(out, "TCP sockets{netns}: {}", tables.total)?;
    let states: Vec<Vec<String>> = TcpState::ALL
        .iter()
        .filter_map(|state| {
            let count = tables.states.get(state).copied().unwrap_or(0);
            let change = report
                .states_delta
                .as_ref()
                .and_then(|delta| delta.get(state))
                .copied()
                .unwrap_or(0);
            (count != 0 || change != 0).then(|| {
                let change = if change == 0 {
                    String::new()
                } else {
                    format!("{change:+}")
                };
                vec![state.name().to_string(), count.to_string(), change]
            })
        })
        .collect();
    let delta_header = if report.states_delta.is_some() {
        "CHANGE"
    } else {
        ""
    };
    table(
        out,
        &["STATE", "COUNT", delta_header],
        &[false, true, true],
        &states,
    )?;

    section(
        out,
        "Listeners (accept queue: queued of limit; over 100% means full, SYNs are dropped)",
    )?;
    let rows: Vec<Vec<String>> = tables
        .listeners
        .iter()
        .map(|l| {
            let fill = l.fill_percent.map_or("-".to_string(), |p| format!("{p}%"));
            let flag = if l.queued > l.limit { "FULL" } else { "" };
            let (pid, comm) = owner_columns(l.owner.as_ref());
            vec![
                l.local.to_string(),
                l.queued.to_string(),
                l.limit.to_string(),
                fill,
                pid,
                comm,
                flag.into(),
            ]
        })
        .collect();
    table(
        out,
        &["LOCAL", "QUEUED", "LIMIT", "FILL", "PID", "COMM", ""],
        &[false, true, true, true, true, false, false],
        &rows,
    )?;

    section(out, "By process")?;
    let mut rows: Vec<Vec<String>> = tables
        .processes
        .iter()
        .map(|p| {
            vec![
                p.pid.to_string(),
                p.comm.clone(),
                p.total.to_string(),
                states_text(&p.states),
            ]
        })
        .collect();
    if !tables.unowned.is_empty() {
        let total: usize = tables.unowned.values().sum();
        rows.push(vec![
            "-".into(),
            "(no process)".into(),
            total.to_string(),
            states_text(&tables.unowned),
        ]);
    }
    table(
        out,
        &["PID", "COMM", "SOCKETS", "STATES"],
        &[true, false, true, false],
        &rows,
    )?;

    section(out, "By local port")?;
    let rows: Vec<Vec<String>> = tables
        .local_ports
        .iter()
        .map(|p| {
            vec![
                p.port.to_string(),
                p.total.to_string(),
                states_text(&p.states),
            ]
        })
        .collect();
    table(
        out,
        &["PORT", "SOCKETS", "STATES"],
        &[true, true, false],
        &rows,
    )?;

    section(out, "By remote endpoint")?;
    let rows: Vec<Vec<String>> = tables
        .remote_endpoints
        .iter()
        .map(|r| {
            vec![
                r.endpoint.to_string(),
                r.total.to_string(),
                states_text(&r.states),
            ]
        })
        .collect();
    table(
        out,
        &["REMOTE", "SOCKETS", "STATES"],
        &[false, true, false],
        &rows,
    )?;

    section(
        out,
        "TIME_WAIT by destination (this host connected and closed first)",
    )?;
    let rows: Vec<Vec<String>> = tables
        .time_wait_by_destination
        .iter()
        .map(|d| vec![d.destination.to_string(), d.count.to_string()])
        .collect();
    table(out, &["DESTINATION", "TIME_WAIT"], &[false, true], &rows)?;

    if !tables.time_wait_by_local_service.is_empty() {
        section(
            out,
            "TIME_WAIT at local services (this host closed first; by service, not client port)",
        )?;
        let rows: Vec<Vec<String>> = tables
            .time_wait_by_local_service
            .iter()
            .map(|d| vec![d.service.to_string(), d.count.to_string()])
            .collect();
        table(out, &["LOCAL SERVICE", "TIME_WAIT"], &[false, true], &rows)?;
    }

    let ephemeral = &tables.ephemeral_ports;
    section(
        out,
        &format!(
            "Ephemeral ports per destination (range {}-{}, {} ports; warning at {}%)",
            ephemeral.range.low, ephemeral.range.high, ephemeral.range_size, ephemeral.warn_percent
        ),
    )?;
    let rows: Vec<Vec<String>> = ephemeral
        .destinations
        .iter()
        .map(|e| {
            let flag = if e.warning {
                "WARNING: near exhaustion (connect() fails with EADDRNOTAVAIL)"
            } else {
                ""
            };
            vec![
                e.source.to_string(),
                e.destination.to_string(),
                e.used.to_string(),
                format!("{:.1}%", e.percent),
                flag.into(),
            ]
        })
        .collect();
    table(
        out,
        &["SOURCE", "DESTINATION", "USED", "OF RANGE", ""],
        &[false, false, true, true, false],
        &rows,
    )?;

    section(out, "Top connections (stalled, retransmitting, slow first)")?;
    let rows: Vec<Vec<String>> = tables
        .top_connections
        .iter()
        .map(|c| {
            let (pid, comm) = owner_columns(c.owner.as_ref());
            vec![
                c.state.name().into(),
                c.local.to_string(),
                c.remote.to_string(),
                pid,
                comm,
                format!("{:.2}", f64::from(c.rtt_us) / 1000.0),
                format!("{}/{}", c.retransmits, c.total_retrans),
                c.lost.to_string(),
                c.last_send_ms.map_or("-".into(), |ms| ms.to_string()),
                c.last_recv_ms.map_or("-".into(), |ms| ms.to_string()),
                format!("{}/{}", c.recv_q, c.send_q),
            ]
        })
        .collect();
    table(
        out,
        &[
            "STATE",
            "LOCAL",
            "REMOTE",
            "PID",
            "COMM",
            "RTT_MS",
            "RETRANS",
            "LOST",
            "SEND_MS",
            "RECV_MS",
            "RECVQ/SENDQ",
        ],
        &[
            false, false, false, true, false, true, true, true, true, true, true,
        ],
        &rows,
    )?;
    writeln!(
        out,
        "  (RETRANS: now/total; SEND_MS, RECV_MS: since the last data sent, received)"
    )?;

    section(out, "sockstat")?;
    for (protocol, fields) in &report.sockstat {
        if protocol.starts_with("TCP") || protocol == "sockets" {
            let fields: Vec<String> = fields
                .iter()
                .map(|(name, value)| format!("{name} {value}"))
                .collect();
            writeln!(out, "  {protocol}: {}", fields.join("  "))?;
        }
    }

    section(out, "Conntrack (this namespace)")?;
    writeln!(out, "  {}", report.conntrack)?;
    section(out, "Host-wide TCP (initial namespace)")?;
    writeln!(out, "  {}", report.host_global)?;

    match report.counters.interval {
        Some(seconds) => section(out, &format!("Kernel counters over the last {seconds:.1}s"))?,
        // A namespace's counters start when it is created, not at boot.
        None if report.netns.is_some() => {
            section(out, "Kernel counters since the namespace was created")?
        }
        None => section(out, "Kernel counters since boot")?,
    }
    let rows: Vec<Vec<String>> = report
        .counters
        .values
        .iter()
        .map(|(name, value)| vec![name.clone(), value.to_string()])
        .collect();
    table(out, &["COUNTER", "VALUE"], &[false, true], &rows)?;
    writeln!(out)
}

fn section(out: &mut impl Write, title: &str) -> io::Result<()> {
    writeln!(out, "\n{title}")
}

fn owner_columns(owner: Option<&Owner>) -> (String, String) {
    owner.map_or(("-".into(), "-".into()), |o| {
        (o.pid.to_string(), o.comm.clone())
    })
}

/// `ESTABLISHED 3, TIME_WAIT 1` in kernel state order.
pub fn states_text(states: &StateCounts) -> String {
    states
        .iter()
        .map(|(state, count)| format!("{} {count}", state.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_in_kernel_order() {
        let states = StateCounts::from([(TcpState::Listen, 1), (TcpState::Established, 3)]);
        assert_eq!(states_text(&states), "ESTABLISHED 3, LISTEN 1");
    }
}
