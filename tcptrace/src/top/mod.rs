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
    ranking::{Snapshot, plain},
    session::{Next, Session, TracerOptions},
    stop::stop_signal,
};

/// Runs `tcptrace top`.
///
/// # Errors
/// What the session refuses, and failures to write the output.
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
    let interactive = !args.json && !args.plain && std::io::stdout().is_terminal();
    let session = Session::start(&options, stop_signal(args.duration))?;
    let agg = Aggregate::new(session.names().clone());
    if interactive {
        let counts = tui::run(session, agg, &args, &mut cgroups).await?;
        // After the terminal is restored: what the view was made of.
        eprintln!("tcptrace top: {}", counts.human());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("tcptrace: top; Ctrl-C to stop");
        plain_loop(session, agg, &args, &mut cgroups).await
    }
}

async fn plain_loop(
    mut session: Session,
    mut agg: Aggregate,
    args: &TopArgs,
    cgroups: &mut Cgroups,
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
                agg.add_opens(&session.take_opens()?);
                let mut snap = Snapshot::take(&agg, &previous, session.elapsed(), session.counts()?);
                snap.name_pods(cgroups);
                plain::write(&mut out, &snap, args.rows.into(), args.json)?;
                previous = snap;
            }
            next = session.next(&mut batch) => match next? {
                Next::Stopped(_) => break,
                Next::Events => agg.add_batch(&mut batch),
            },
        }
    }
    // Stopped: take what is left, and end with a complete snapshot whose
    // counts are exact.
    let elapsed = session.elapsed();
    let (counts, opens) = session
        .finish_counting(&mut batch, |batch| {
            agg.add_batch(batch);
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    agg.add_opens(&opens);
    let mut snap = Snapshot::take(&agg, &previous, elapsed, counts);
    snap.name_pods(cgroups);
    plain::write(&mut out, &snap, args.rows.into(), args.json)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
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
