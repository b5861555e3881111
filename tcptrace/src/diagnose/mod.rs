//! `tcptrace diagnose`: watch for a while, then name the cause and the fix.
//!
//! Reads the host facts (counters, sysctls, sockets), traces until
//! `--duration` or Ctrl-C while aggregating every event, reads the host
//! facts again, and hands all of it to the rules as plain data.

pub mod during;
pub mod facts;
pub mod finding;
pub mod host;
pub mod report;
pub mod rules;

use std::{
    io::{self, Write as _},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use self::{
    facts::HostFacts,
    finding::rank,
    report::Report,
    rules::{Inputs, evaluate},
};
use crate::{
    aggregate::{self, Aggregate},
    cli::DiagnoseArgs,
    enrich::Cgroups,
    event::TcpEvent,
    trace::{stop_signal, tracer_options},
    tracer::{Tracer, TracerOptions},
};

/// How often the --during load is checked for having ended.
const LOAD_CHECK: Duration = Duration::from_millis(100);

pub async fn run(args: DiagnoseArgs) -> anyhow::Result<ExitCode> {
    // The rules work on aggregates, which have no use for the opening
    // transitions.
    let mut options = TracerOptions {
        skip_opening: true,
        ..tracer_options(&args.filter, args.ring_kib)?
    };
    if args.filter.events.is_empty() {
        // The reuses that worked are what bounds an idle timeout.
        options.kinds |= tcptrace_common::kind_mask::REUSE;
    }
    let load_words = args.during.as_deref().map(during::parse).transpose()?;
    let netns = args.filter.netns.as_deref();
    let before = host::read(netns)?;

    let mut tracer = Tracer::start(&options)?;
    for missing in tracer.missing() {
        eprintln!("tcptrace: warning: not traced on this kernel: {missing}");
    }
    let stop = stop_signal(args.duration);
    tokio::pin!(stop);
    let started = Instant::now();
    match args.duration {
        Some(d) => eprintln!(
            "tcptrace: diagnosing for {:.1} s; Ctrl-C to stop early",
            d.as_secs_f64()
        ),
        None if load_words.is_some() => {
            eprintln!("tcptrace: diagnosing while the load runs; Ctrl-C to stop")
        }
        None => eprintln!("tcptrace: diagnosing; Ctrl-C to stop"),
    }
    let mut load = match &load_words {
        Some(words) => {
            let ns = netns.map(host::netns_path).transpose()?;
            Some(during::Load::start(words, ns.as_deref())?)
        }
        None => None,
    };
    let mut load_tick = tokio::time::interval(LOAD_CHECK);
    let mut agg = Aggregate::new(tracer.names().clone());
    let mut batch: Vec<TcpEvent> = Vec::with_capacity(4096);
    loop {
        tokio::select! {
            biased;
            reason = &mut stop => {
                log::debug!("stopping: {reason}");
                break;
            }
            // Before the events: a storm keeps `next_batch` always ready
            // and must not hide the end of the `--during` load.
            _ = load_tick.tick(), if load.is_some() => {
                if let Some(status) = load.as_mut().and_then(during::Load::ended) {
                    log::debug!("the load ended: {status}");
                    if args.duration.is_none() {
                        break;
                    }
                }
            }
            ready = tracer.next_batch(&mut batch) => {
                ready?;
                // By reference: moving each 256-byte event out costs a copy.
                for ev in batch.iter() {
                    agg.add(ev);
                }
                batch.clear();
            }
        }
    }
    let load_status = load.map(during::Load::stop);
    // Detach first so nothing new arrives, then take what is left.
    tracer.detach();
    aggregate::drain(&mut tracer, &mut agg, &mut batch).await?;
    agg.finish();
    let seconds = started.elapsed().as_secs_f64();
    let kernel = tracer.kernel_counts()?;
    let after = host::read(netns)?;

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
    name_cgroups(&mut findings);
    let report = Report {
        seconds,
        netns: args.filter.netns.clone(),
        events: agg.events,
        events_lost: kernel.total_lost(),
        findings,
        checked,
        host,
        missing: tracer.missing().to_vec(),
        load: args.during.clone().map(|command| report::LoadRun {
            command,
            status: load_status.flatten().map(|s| s.to_string()),
        }),
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

/// Who is affected, down to the container: cgroup ids to paths.
fn name_cgroups(findings: &mut [finding::Finding]) {
    let mut cgroups = Cgroups::default();
    for affected in findings.iter_mut().flat_map(|f| f.affected.iter_mut()) {
        affected.cgroup = cgroups
            .lookup(affected.cgroup_id)
            .map(|c| match &c.container {
                Some(id) => format!("{} (container {id})", c.path),
                None => c.path.clone(),
            });
    }
}
