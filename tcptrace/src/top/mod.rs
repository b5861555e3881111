//! `tcptrace top`: processes and peers ranked by resets, retransmits and
//! failed connects, refreshed every interval. A TUI on a terminal,
//! periodic plain or JSON snapshots otherwise; both end, on the stop
//! signal, with the session's exact counts.

mod detail;
mod tui;

use std::{
    io::{IsTerminal as _, Write as _},
    process::ExitCode,
    time::Duration,
};

use crate::{
    aggregate::Aggregate,
    cli::TopArgs,
    event::TcpEvent,
    filter_args::{self, session_options},
    host::cgroups::Cgroups,
    kernel::clock::WallClock,
    ranking::{Snapshot, plain},
    record::{Header, RecordWriter, Recorded},
    safe_file,
    session::{Next, Session, TracerOptions},
    stop::stop_signal,
};

/// Runs `tcptrace top`.
///
/// # Errors
/// What the session refuses, and failures to write the output or the
/// record file.
pub async fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    let (options, _netns) = session_options(&args.filter, args.ring_kib)?;
    // Aggregation has no use for the opening transitions: not sending
    // them saves a quarter of the ring buffer traffic in a churn.
    // Successful opens are counted in the kernel: a connect churn costs
    // map updates, not ring buffer records.
    let options = TracerOptions {
        skip_opening: true,
        count_opens: true,
        ..options
    };
    let mut cgroups = filter_args::cgroups(&args.filter)?;
    // Opened before the tracer loads: a refused path fails fast.
    let record_file = match &args.record {
        Some(path) => Some(safe_file::create(path)?),
        None => None,
    };
    let interactive =
        !args.json && !args.plain && record_file.is_none() && std::io::stdout().is_terminal();
    let mut session = Session::start(&options, stop_signal(args.duration))?;
    let agg = Aggregate::new(session.names().clone());
    if interactive {
        let counts = tui::run(session, agg, &args, &mut cgroups).await?;
        // After the terminal is restored: what the view was made of.
        eprintln!("tcptrace top: {}", counts.human());
        return Ok(ExitCode::SUCCESS);
    }
    let record = match record_file {
        Some(file) => {
            session.keep_raw_records();
            let header = Header {
                command: Recorded::Top,
                rows: Some(args.rows),
                ..Header::here(
                    session.decoder().hz(),
                    WallClock::now().boot_unix_ns(),
                    session.names().clone(),
                    session.missing().to_vec(),
                )
            };
            Some(RecordWriter::new(file, &header).map_err(record_err(&args))?)
        }
        None => None,
    };
    eprintln!("tcptrace: top; Ctrl-C to stop");
    plain_loop(session, agg, &args, &mut cgroups, record).await
}

async fn plain_loop(
    mut session: Session,
    mut agg: Aggregate,
    args: &TopArgs,
    cgroups: &mut Cgroups,
    mut record: Option<RecordWriter>,
) -> anyhow::Result<ExitCode> {
    let mut previous = Snapshot::default();
    let mut batch: Vec<TcpEvent> = Vec::with_capacity(4096);
    let mut tick = tokio::time::interval(args.interval);
    tick.tick().await;
    let mut out = std::io::stdout().lock();
    loop {
        tokio::select! {
            biased;
            _ = tick.tick() => {
                if ends_soon(session.elapsed(), args.duration, args.interval) {
                    // The final snapshot (exact counts) stands for this
                    // interval: no second one with the same time.
                    continue;
                }
                let opens = session.take_opens()?;
                let snapshot = Moment { elapsed: session.elapsed(), counts: session.counts()?, opens };
                previous = snapshot.print(&mut agg, &previous, cgroups, record.as_mut(), &mut out, args)?;
            }
            next = session.next(&mut batch) => match next? {
                Next::Stopped(_) => break,
                Next::Events => {
                    agg.add_batch(&mut batch);
                    if let (Some(record), Some(raw)) = (record.as_mut(), session.raw_records()) {
                        record.raw_events(raw).map_err(record_err(args))?;
                    }
                }
            },
        }
    }
    // Stopped: take what is left, and end with a complete snapshot whose
    // counts are exact.
    let elapsed = session.elapsed();
    let (counts, opens) = session
        .finish_counting_raw(&mut batch, |batch, raw| {
            agg.add_batch(batch);
            if let Some(record) = record.as_mut() {
                record.raw_events(raw).map_err(record_err(args))?;
            }
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    let last = Moment {
        elapsed,
        counts,
        opens,
    };
    last.print(
        &mut agg,
        &previous,
        cgroups,
        record.as_mut(),
        &mut out,
        args,
    )?;
    out.flush()?;
    if let Some(record) = record {
        let file = record
            .finish(elapsed.as_secs_f64(), &last.counts, None, None)
            .map_err(record_err(args))?;
        file.sync_all().map_err(record_err(args))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What a snapshot takes besides the events: when, the session's counts,
/// and the opens the kernel counted since the previous one.
struct Moment {
    elapsed: Duration,
    counts: crate::counts::Counts,
    opens: Vec<crate::event::OpenCount>,
}

impl Moment {
    /// Adds the opens, takes the snapshot, names its pods, prints it (and
    /// records it, with the cgroups of its processes, in `record`);
    /// returns it, the next one's previous.
    fn print(
        &self,
        agg: &mut Aggregate,
        previous: &Snapshot,
        cgroups: &mut Cgroups,
        record: Option<&mut RecordWriter>,
        out: &mut impl std::io::Write,
        args: &TopArgs,
    ) -> anyhow::Result<Snapshot> {
        agg.add_opens(&self.opens);
        let mut snap = Snapshot::take(agg, previous, self.elapsed, self.counts.clone());
        if let Some(record) = record {
            // What `name_pods` will look up, recorded first: replay's
            // lookups answer from these frames.
            for row in &snap.processes {
                if let Some(pid) = row.pid.filter(|p| *p != 0) {
                    record
                        .owner_cgroup(pid, row.cgroup_id, cgroups)
                        .map_err(record_err(args))?;
                }
            }
            record
                .tick(self.elapsed, &self.counts, &self.opens)
                .map_err(record_err(args))?;
        }
        snap.name_pods(cgroups);
        plain::write(out, &snap, args.rows.into(), args.json)?;
        Ok(snap)
    }
}

fn record_err(args: &TopArgs) -> impl Fn(std::io::Error) -> anyhow::Error + '_ {
    move |e| {
        let path = args.record.as_deref().unwrap_or(std::path::Path::new("?"));
        anyhow::Error::new(e).context(format!("writing the record to {}", path.display()))
    }
}

/// Whether `--duration` ends less than half an `interval` after
/// `elapsed`: a periodic snapshot then would be followed at once by the
/// final one, printing the same moment twice.
fn ends_soon(elapsed: Duration, duration: Option<Duration>, interval: Duration) -> bool {
    duration.is_some_and(|d| elapsed + interval / 2 > d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_at_the_end_of_the_duration_leaves_it_to_the_final_snapshot() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // --duration 3s --interval 1s: ticks at 1 s and 2 s print, the one
        // at 3 s (a little early or late) is the final snapshot's.
        assert!(!ends_soon(s(1), Some(s(3)), s(1)));
        assert!(!ends_soon(ms(2010), Some(s(3)), s(1)));
        assert!(ends_soon(ms(2990), Some(s(3)), s(1)));
        assert!(ends_soon(ms(3005), Some(s(3)), s(1)));
        assert!(!ends_soon(s(3600), None, s(1)), "no --duration");
    }
}
