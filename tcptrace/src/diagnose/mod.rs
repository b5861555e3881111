//! `tcptrace diagnose`: watch for a while, then name the cause and the fix.
//!
//! Reads the host facts (counters, sysctls, sockets), traces until
//! `--duration` or Ctrl-C while aggregating every event, reads the host
//! facts again, and hands all of it to the rules as plain data.

pub mod during;
pub mod facts;
pub mod finding;
pub mod report;
pub mod rules;

use std::{
    io::{self, Write as _},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use tcptrace_common::kind_mask;

use self::{
    facts::{HostFacts, SYSCTLS, SocketFacts},
    finding::rank,
    report::Report,
    rules::{Inputs, evaluate},
};
use crate::{
    aggregate::Aggregate,
    cli::DiagnoseArgs,
    event::TcpEvent,
    filter_args::{self, session_options},
    host::{cgroups::Cgroups, conntrack::ConntrackChange, reading},
    session::{Next, Session, TracerOptions},
    stop::stop_signal,
};

/// How often the --during load is checked for having ended.
const LOAD_CHECK: Duration = Duration::from_millis(100);

/// Runs `tcptrace diagnose`.
///
/// # Errors
/// What the session refuses, a `--during` that is no stress command or
/// does not start, host facts that cannot be read, and failures to write
/// the report.
pub async fn run(args: DiagnoseArgs) -> anyhow::Result<ExitCode> {
    let (options, netns) = session_options(&args.filter, args.ring_kib)?;
    let mut cgroups = filter_args::cgroups(&args.filter)?;
    // The rules work on aggregates, which have no use for the opening
    // transitions.
    let mut options = TracerOptions {
        skip_opening: true,
        count_opens: true,
        ..options
    };
    if args.filter.events.is_empty() {
        // The reuses that worked are what bounds an idle timeout.
        options.kinds |= kind_mask::REUSE;
    }
    let load_words = args.during.as_deref().map(during::parse).transpose()?;
    let netns_path = netns.as_ref().map(|ns| ns.path.as_path());
    let before = reading::read(netns_path, &SYSCTLS)?;

    let mut session = Session::start(&options, stop_signal(args.duration))?;
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
        Some(words) => Some(during::Load::start(words, netns_path)?),
        None => None,
    };
    let mut load_tick = tokio::time::interval(LOAD_CHECK);
    let mut agg = Aggregate::new(session.names().clone());
    let mut batch: Vec<TcpEvent> = Vec::with_capacity(4096);
    loop {
        tokio::select! {
            biased;
            // Before the events: a storm keeps the ring always ready and
            // must not hide the end of the `--during` load.
            _ = load_tick.tick(), if load.is_some() => {
                if let Some(status) = load.as_mut().map(during::Load::ended).transpose()?.flatten() {
                    log::debug!("the load ended: {status}");
                    if args.duration.is_none() {
                        break;
                    }
                }
            }
            next = session.next(&mut batch) => match next? {
                Next::Stopped(_) => break,
                Next::Events => agg.add_batch(&mut batch),
            },
        }
    }
    let load_status = load.map(during::Load::stop);
    let seconds = session.elapsed().as_secs_f64();
    let missing = session.missing().to_vec();
    let (counts, opens) = session
        .finish_counting(&mut batch, |batch| {
            agg.add_batch(batch);
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    agg.add_opens(&opens);
    agg.finish();
    let after = reading::read(netns_path, &SYSCTLS)?;

    let host = HostFacts {
        counters: after.counter_delta(&before),
        sysctls: before.sysctls.clone(),
        sockets_start: before.sockets.as_deref().map(SocketFacts::of),
        sockets_end: after.sockets.as_deref().map(SocketFacts::of),
        conntrack: before
            .conntrack
            .zip(after.conntrack)
            .map(|(start, end)| ConntrackChange::new(start, end)),
        host_global_start: before.host_global,
        host_global_end: after.host_global,
    };
    let outcomes = evaluate(&Inputs {
        agg: &agg,
        host: &host,
        seconds,
    });
    let checked = outcomes.iter().map(|o| o.checked.clone()).collect();
    let mut findings: Vec<_> = outcomes.into_iter().flat_map(|o| o.findings).collect();
    rank(&mut findings);
    let workloads = name_cgroups(&mut findings, &mut cgroups);
    let report = Report {
        seconds,
        netns: args.filter.netns.clone(),
        events: agg.events,
        counts,
        findings,
        workloads,
        checked,
        host,
        missing,
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

/// Who is affected, down to the container and the pod: the cgroup path
/// (or, on a Kubernetes node, the pod) in each affected's text, and the
/// names by (pid, cgroup id) for the JSON report.
fn name_cgroups(findings: &mut [finding::Finding], cgroups: &mut Cgroups) -> report::Workloads {
    let mut workloads = report::Workloads::new();
    for affected in findings.iter_mut().flat_map(|f| f.affected.iter_mut()) {
        let Some(c) = cgroups.lookup_owner(affected.pid, affected.cgroup_id) else {
            continue;
        };
        affected.cgroup = Some(match (c.namespace(), c.pod_name(), &c.container) {
            (Some(ns), Some(pod), _) => format!(
                "pod {ns}/{pod} (container {})",
                c.container_name().unwrap_or("?")
            ),
            (None, Some(pod), _) => format!("pod {pod}"),
            (_, _, Some(id)) => format!("{} (container {id})", c.path),
            _ => c.path.clone(),
        });
        if c.pod_name().is_some() || c.container.is_some() {
            workloads.insert(
                (affected.pid, affected.cgroup_id),
                report::Workload {
                    namespace: c.namespace().map(str::to_string),
                    pod: c.pod_name().map(str::to_string),
                    container: c.container_name().map(str::to_string),
                },
            );
        }
    }
    workloads
}
