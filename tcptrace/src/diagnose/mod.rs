//! `tcptrace diagnose`: watch for a while, then name the cause and the fix.
//!
//! Reads the host facts (counters, sysctls, sockets), traces until
//! `--duration` or Ctrl-C while aggregating every event, reads the host
//! facts again, and hands all of it to the rules as plain data.

pub mod facts;
pub mod finding;
pub mod host;
pub mod report;
pub mod rules;

use std::{
    io::{self, Write as _},
    process::ExitCode,
    time::Instant,
};

use anyhow::Context as _;

use self::{
    facts::HostFacts,
    finding::rank,
    report::Report,
    rules::{Inputs, evaluate},
};
use crate::{
    aggregate::Aggregate,
    cli::DiagnoseArgs,
    event::TcpEvent,
    trace::{stop_signal, tracer_options},
    tracer::Tracer,
};

pub async fn run(args: DiagnoseArgs) -> anyhow::Result<ExitCode> {
    let options = tracer_options(&args.filter, args.ring_kib)?;
    let netns = args.filter.netns.as_deref();
    let before = host::read(netns).map_err(anyhow::Error::msg)?;

    let mut tracer = Tracer::start(&options)?;
    for missing in tracer.missing() {
        eprintln!("tcptrace: warning: not traced on this kernel: {missing}");
    }
    let started = Instant::now();
    match args.duration {
        Some(d) => eprintln!(
            "tcptrace: diagnosing for {:.1} s; Ctrl-C to stop early",
            d.as_secs_f64()
        ),
        None => eprintln!("tcptrace: diagnosing; Ctrl-C to stop"),
    }
    let mut agg = Aggregate::new(tracer.names().clone());
    let mut batch: Vec<TcpEvent> = Vec::with_capacity(4096);
    let stop = stop_signal(args.duration);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            reason = &mut stop => {
                log::debug!("stopping: {reason}");
                break;
            }
            ready = tracer.next_batch(&mut batch) => {
                ready?;
                for ev in batch.drain(..) {
                    agg.add(&ev);
                }
            }
        }
    }
    tracer.detach();
    loop {
        let more = tracer.drain_final(&mut batch).await?;
        batch.drain(..).for_each(|ev| agg.add(&ev));
        if !more {
            break;
        }
    }
    agg.finish();
    let seconds = started.elapsed().as_secs_f64();
    let kernel = tracer.kernel_counts()?;
    let after = host::read(netns).map_err(anyhow::Error::msg)?;

    let host = HostFacts {
        counters: after.counter_delta(&before),
        sysctls: before.sysctls.clone(),
        sockets_start: before.sockets,
        sockets_end: after.sockets,
    };
    let outcomes = evaluate(&Inputs {
        agg: &agg,
        host: &host,
        seconds,
    });
    let checked = outcomes.iter().map(|o| o.checked.clone()).collect();
    let mut findings: Vec<_> = outcomes.into_iter().flat_map(|o| o.findings).collect();
    rank(&mut findings);
    let report = Report {
        seconds,
        netns: args.filter.netns.clone(),
        events: agg.events,
        events_lost: kernel.total_lost(),
        findings,
        checked,
        host,
        missing: tracer.missing().to_vec(),
    };

    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report.to_json(&agg))
            .map_err(io::Error::from)
            .context("writing the report")?;
        writeln!(out).context("writing the report")?;
    } else {
        report.write_human(&mut out).context("writing the report")?;
    }
    out.flush().context("writing the report")?;
    Ok(ExitCode::SUCCESS)
}
