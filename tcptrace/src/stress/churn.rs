//! `churn`: open and close connections as fast as possible, or at a rate.
//!
//! `concurrency` workers each run connect -> close in a loop. They take
//! numbered tickets from one counter: the count bound is exact, and with
//! `--rate` ticket `i` starts at `start + i / rate`, which spreads the rate
//! over all workers without a central scheduler.
//!
//! Ctrl-C, SIGTERM or SIGHUP end the run early (`Run::stopped`, as in
//! every mode): the workers stop, and the report of what was done so far
//! is printed as at the end of a run.

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
        let mut stopped = run.stopped.clone();
        tasks.spawn(async move {
            for round in 1u64.. {
                if *stopped.borrow() {
                    break;
                }
                let ticket = tickets.fetch_add(1, Ordering::Relaxed);
                if ticket >= count {
                    break;
                }
                if let Some(rate) = rate {
                    let due = run.start + Duration::from_secs_f64(ticket as f64 / f64::from(rate));
                    if due >= run.deadline {
                        break;
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(due.into()) => {}
                        _ = stopped.wait_for(|stop| *stop) => break,
                    }
                }
                let started = Instant::now();
                if started >= run.deadline {
                    break;
                }
                let attempt = tokio::select! {
                    attempt = connect(run.target.addr, run.connect_timeout) => attempt,
                    // An attempt cut short is not counted: it has no outcome.
                    _ = stopped.wait_for(|stop| *stop) => break,
                };
                match attempt {
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
