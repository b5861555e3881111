//! `churn`: open and close connections as fast as possible, or at a rate.
//!
//! `concurrency` workers each run connect -> close in a loop. They take
//! numbered tickets from one counter: the count bound is exact, and with
//! `--rate` ticket `i` starts at `start + i / rate`, which spreads the rate
//! over all workers without a central scheduler.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    cli::ChurnArgs,
    stress::{
        Mode, Run,
        connect::{close_with_reset, connect},
        report::{Live, Tally},
    },
};

pub async fn run(run: Run, args: ChurnArgs) -> anyhow::Result<Tally> {
    let ChurnArgs {
        count,
        concurrency,
        rate,
        rst,
        ..
    } = args;
    let workers = concurrency as usize;
    let live = Live::new(workers);
    let _progress = live.progress(Mode::Churn, run.start);
    let tickets = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let (run, live, tickets) = (run.clone(), Arc::clone(&live), Arc::clone(&tickets));
        tasks.spawn(async move {
            for round in 1u64.. {
                let ticket = tickets.fetch_add(1, Ordering::Relaxed);
                if ticket >= count {
                    break;
                }
                if let Some(rate) = rate {
                    let due = run.start + Duration::from_secs_f64(ticket as f64 / f64::from(rate));
                    if due >= run.deadline {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
                let started = Instant::now();
                if started >= run.deadline {
                    break;
                }
                match connect(run.target.addr, run.connect_timeout).await {
                    Ok(socket) => {
                        live.with(worker, |t| t.connect_ok(started.elapsed()));
                        // Closing at once is the churn: a FIN, or an RST with --rst.
                        if rst {
                            close_with_reset(socket);
                        } else {
                            drop(socket);
                        }
                    }
                    Err(class) => live.with(worker, |t| t.connect_failed(class)),
                }
                // A local connect never waits, so the loop would never
                // yield: let the other workers and the progress line run.
                if round % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done?;
    }
    Ok(live.total())
}
