//! `tcptrace top`: processes and peers ranked by resets, retransmits and
//! failed connects, refreshed every interval. A TUI on a terminal,
//! periodic plain or JSON snapshots otherwise.

mod plain;
mod tui;
mod view;

use std::{io::IsTerminal as _, process::ExitCode, time::Instant};

pub use self::view::{Row, Snapshot, SortKey};
use crate::{
    aggregate::Aggregate,
    cli::TopArgs,
    event::TcpEvent,
    trace::{stop_signal, tracer_options},
    tracer::{Tracer, TracerOptions},
};

pub async fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    // Aggregation has no use for the opening transitions: not sending
    // them saves a quarter of the ring buffer traffic in a churn.
    let options = TracerOptions {
        skip_opening: true,
        ..tracer_options(&args.filter, args.ring_kib)?
    };
    let interactive = !args.json && !args.plain && std::io::stdout().is_terminal();
    let mut tracer = Tracer::start(&options)?;
    for missing in tracer.missing() {
        eprintln!("tcptrace: warning: not traced on this kernel: {missing}");
    }
    let agg = Aggregate::new(tracer.names().clone());
    let stop = stop_signal(args.duration);
    if interactive {
        tui::run(&mut tracer, agg, &args, stop).await
    } else {
        eprintln!("tcptrace: top; Ctrl-C to stop");
        plain_loop(&mut tracer, agg, &args, stop).await
    }
}

async fn plain_loop(
    tracer: &mut Tracer,
    mut agg: Aggregate,
    args: &TopArgs,
    stop: impl Future<Output = &'static str>,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut previous = Snapshot::default();
    let mut batch: Vec<TcpEvent> = Vec::with_capacity(4096);
    let mut tick = tokio::time::interval(args.interval);
    tick.tick().await;
    tokio::pin!(stop);
    let mut out = std::io::stdout().lock();
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            ready = tracer.next_batch(&mut batch) => {
                ready?;
                // By reference: moving each 256-byte event out costs a copy.
                for ev in batch.iter() {
                    agg.add(ev);
                }
                batch.clear();
            }
            _ = tick.tick() => {
                let snap = Snapshot::take(&agg, &previous, started.elapsed(), tracer.kernel_counts()?.total_lost());
                plain::write(&mut out, &snap, args.rows.into(), args.json)?;
                previous = snap;
            }
        }
    }
    // Ctrl-C: detach, take what is left, and end with a complete snapshot.
    tracer.detach();
    crate::aggregate::drain(tracer, &mut agg, &mut batch).await?;
    let snap = Snapshot::take(
        &agg,
        &previous,
        started.elapsed(),
        tracer.kernel_counts()?.total_lost(),
    );
    plain::write(&mut out, &snap, args.rows.into(), args.json)?;
    Ok(ExitCode::SUCCESS)
}
