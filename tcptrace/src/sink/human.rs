//! Aligned columns, one event a line, as ss/tcpdump users expect.

use std::io::{self, Write};

use super::{Context, Output, Sink};
use crate::{
    event::{Detail, EventKind, TcpEvent, tcp_flag_names},
    kernel::errno,
    origin::Origin,
    summary::Summary,
    timefmt,
};

/// Aligned columns, one event a line (`trace` without `--json`).
pub struct HumanSink {
    out: Output,
    header_done: bool,
}

impl HumanSink {
    /// Writes to `out`.
    pub fn new(out: Output) -> HumanSink {
        HumanSink {
            out,
            header_done: false,
        }
    }
}

impl Sink for HumanSink {
    fn event(&mut self, ev: &TcpEvent, ctx: &mut Context) -> io::Result<()> {
        if !self.header_done {
            self.header_done = true;
            writeln!(
                self.out,
                "{:<15} {:<17} {:>7} {:<15} {:<28} {:<28} DETAIL",
                "TIME", "EVENT", "PID", "COMM", "LOCAL", "REMOTE"
            )?;
        }
        let (pid, comm) = match &ev.owner {
            Some(o) => (o.pid.to_string(), o.comm.as_str()),
            None => ("-".to_string(), "?"),
        };
        writeln!(
            self.out,
            "{:<15} {:<17} {:>7} {:<15} {:<28} {:<28} {}",
            timefmt::local_time_of_day(ctx.clock.unix_ns(ev.mono_ns)),
            ev.kind.name(),
            pid,
            comm,
            ev.local.to_string(),
            ev.remote.to_string(),
            detail(ev, ctx)
        )
    }

    fn loss(&mut self, kind: EventKind, lost: u64, total_lost: u64) -> io::Result<()> {
        writeln!(
            self.out,
            "!! LOST {lost} {} events (ring buffer full; {total_lost} lost in all)",
            kind.name()
        )
    }

    fn summary(&mut self, summary: &Summary) -> io::Result<()> {
        write!(self.out, "{}", summary.to_human())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn detail(ev: &TcpEvent, ctx: &Context) -> String {
    let mut parts = Vec::new();
    if let Some((old, new)) = ev.transition {
        parts.push(format!(
            "{} -> {}",
            ctx.names.state(old),
            ctx.names.state(new)
        ));
    }
    if let Some(state) = ev.state {
        parts.push(format!("state={}", ctx.names.state(state)));
    }
    if let Some(reason) = ev.rst_reason {
        parts.push(format!("reason={}", ctx.names.reason(reason)));
    }
    if let Some(ns) = ev.connect_ns {
        let label = if ev.kind == EventKind::Connect {
            "latency"
        } else {
            "after"
        };
        parts.push(format!("{label}={}", timefmt::duration_ns(ns)));
    }
    if let Some(ns) = ev.age_ns {
        parts.push(format!("age={}", timefmt::duration_ns(ns)));
    }
    if let Some(ns) = ev.idle_ns() {
        parts.push(format!("idle={}", timefmt::duration_ns(ns)));
    }
    if let Some(err) = ev.err {
        parts.push(format!("err={err}"));
    }
    match &ev.detail {
        Detail::None => {}
        Detail::Drop(drop) => {
            if let Some(reason) = drop.reason {
                parts.push(format!("reason={}", ctx.names.drop_reason(reason)));
            }
            parts.push(format!(
                "{} {}",
                if drop.incoming { "in" } else { "out" },
                tcp_flag_names(drop.tcp_flags)
            ));
        }
        Detail::SocketError { errno } => parts.push(match errno::name(*errno) {
            Some(name) => format!("error={name}"),
            None => format!("errno={errno}"),
        }),
        Detail::Segment(seg) => {
            if let (Some(len), Some(segs)) = (seg.len, seg.segs) {
                parts.push(format!("len={len} segs={segs}"));
            }
            if let Some(mss) = seg.mss {
                parts.push(format!("mss={mss}"));
            }
            if let Some(pmtu) = seg.pmtu {
                parts.push(format!("pmtu={pmtu}"));
            }
        }
        Detail::Reset(q, origin) => {
            if let Some(unacked) = q.unacked {
                parts.push(format!("unacked={unacked}"));
            }
            if let Some(unread) = q.unread {
                parts.push(format!("unread={unread}"));
            }
            if let Some(p) = origin {
                parts.push(match p.origin {
                    Origin::Middlebox => format!(
                        "origin=middlebox({} {} closer: {})",
                        p.hops_closer,
                        if p.hops_closer == 1 { "hop" } else { "hops" },
                        p.why()
                    ),
                    other => format!("origin={} ({})", other.name(), p.why()),
                });
            }
        }
    }
    if ev.owner.is_none() {
        parts.push("owner=unknown".into());
    }
    parts.join(" ")
}
