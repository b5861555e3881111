//! `latency`: time `--samples` connects, one at a time, `--interval` apart
//! (start to start), and report p50/p90/p99/max. One at a time so each
//! sample measures the path, not the queueing of our own connects.

use std::time::Instant;

use crate::{
    cli::LatencyArgs,
    stress::{
        Mode, Run,
        connect::connect,
        report::{Live, Tally},
    },
};

pub async fn run(run: Run, args: LatencyArgs) -> anyhow::Result<Tally> {
    let live = Live::new(1);
    let _progress = live.progress(Mode::Latency, run.start);
    for sample in 0..args.samples {
        let due = run.start + args.interval * u32::try_from(sample).unwrap_or(u32::MAX);
        if due >= run.deadline {
            break;
        }
        if !run.sleep_until(due).await {
            break;
        }
        let started = Instant::now();
        let attempt = tokio::select! {
            attempt = connect(run.target.addr, run.connect_timeout) => attempt,
            // A sample cut short has no outcome: not counted.
            () = run.stop() => break,
        };
        match attempt {
            Ok(socket) => {
                let elapsed = started.elapsed();
                drop(socket);
                live.with(0, |t| t.connect_ok(elapsed));
            }
            Err(class) => live.with(0, |t| t.connect_failed(class)),
        }
    }
    Ok(live.total())
}
