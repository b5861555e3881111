//! `tcptrace top`: processes and peers ranked by resets, retransmits and
//! failed connects, refreshed every interval. A TUI on a terminal,
//! periodic plain or JSON snapshots otherwise; both end, on the stop
//! signal, with the session's exact counts.

mod detail;
mod plain;
mod tui;
mod view;

use std::{
    io::{IsTerminal as _, Write as _},
    process::ExitCode,
};

pub use self::view::{Row, RowKey, Snapshot, SortKey};
use crate::{
    aggregate::Aggregate,
    cli::TopArgs,
    event::TcpEvent,
    filter_args::{self, session_options},
    host::cgroups::Cgroups,
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
