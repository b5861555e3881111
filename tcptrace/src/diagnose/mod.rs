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
    facts::{HostFacts, ListenerPeaks, SYSCTLS, SocketFacts},
    finding::rank,
    report::Report,
    rules::{Inputs, evaluate},
};
use crate::{
    aggregate::Aggregate,
    cli::DiagnoseArgs,
    event::TcpEvent,
    filter_args::session_options,
    host::{
        cgroups::Cgroups,
        conntrack::ConntrackChange,
        netns,
        owners::socket_owners,
        reading,
        sock_diag::{TcpSocket, dump_tcp_listeners},
    },
    session::{Next, Session, TracerOptions},
    stop::stop_signal,
};

/// How often the --during load is checked for having ended.
const LOAD_CHECK: Duration = Duration::from_millis(100);
/// How often the listeners' accept queues are sampled while watching.
const QUEUE_SAMPLE: Duration = Duration::from_millis(500);

/// Runs `tcptrace diagnose`.
///
/// # Errors
/// What the session refuses, a `--during` that is no stress command or
/// does not start, host facts that cannot be read, and failures to write
/// the report.
pub async fn run(args: DiagnoseArgs) -> anyhow::Result<ExitCode> {
    let (options, netns) = session_options(&args.filter, args.ring_kib)?;
    // The rules work on aggregates, which have no use for the opening
    // transitions.
    let mut options = TracerOptions {
        skip_opening: true,
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
    let mut queue_tick = tokio::time::interval(QUEUE_SAMPLE);
    let mut queue_peaks = ListenerPeaks::default();
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
            _ = queue_tick.tick() => sample_listeners(netns_path, &mut queue_peaks),
        }
    }
    let load_status = load.map(during::Load::stop);
    let seconds = session.elapsed().as_secs_f64();
    let missing = session.missing().to_vec();
    let counts = session
        .finish(&mut batch, |batch| {
            agg.add_batch(batch);
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    agg.finish();
    let after = reading::read(netns_path, &SYSCTLS)?;

    // Which process holds each listener (an accept queue is named by it).
    let owners = socket_owners();
    let socket_facts = |sockets: Option<&[TcpSocket]>| {
        sockets.map(|sockets| {
            let mut facts = SocketFacts::of(sockets);
            facts.name_listeners(sockets, &owners);
            facts
        })
    };
    let host = HostFacts {
        counters: after.counter_delta(&before),
        sysctls: before.sysctls.clone(),
        sockets_start: socket_facts(before.sockets.as_deref()),
        sockets_end: socket_facts(after.sockets.as_deref()),
        conntrack: before
            .conntrack
            .zip(after.conntrack)
            .map(|(start, end)| ConntrackChange::new(start, end)),
        host_global_start: before.host_global,
        host_global_end: after.host_global,
        listeners_peak: queue_peaks.into_listeners(&owners),
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
        counts,
        findings,
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

/// One sample of the listeners' accept queues; a failure costs only the
/// sample (logged).
fn sample_listeners(netns: Option<&std::path::Path>, peaks: &mut ListenerPeaks) {
    match netns::run_in(netns, || {
        dump_tcp_listeners().map_err(|e| anyhow::anyhow!(e))
    }) {
        Ok(sockets) => peaks.sample(&sockets),
        Err(err) => log::debug!("no accept queue sample: {err}"),
    }
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
