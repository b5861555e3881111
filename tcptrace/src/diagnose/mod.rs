//! `tcptrace diagnose`: watch for a while, then name the cause and the fix.
//!
//! Reads the host facts (counters, sysctls, sockets), traces until
//! `--duration` or Ctrl-C while aggregating every event, reads the host
//! facts again, and hands all of it to the rules as plain data.

pub mod during;
pub mod report;

use std::{
    collections::BTreeMap,
    io::{self, Write as _},
    path::Path,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use clap::ValueEnum as _;
use tcptrace_common::kind_mask;

use self::report::Report;
use crate::{
    aggregate::Aggregate,
    cli::{DiagnoseArgs, FilterArgs},
    diagnosis::{
        self,
        facts::{HostFacts, KernelDrops, ListenerPeaks, NamespaceFacts, SYSCTLS, SocketFacts},
        finding::{Finding, rank},
        rules::{Inputs, evaluate},
    },
    event::TcpEvent,
    filter_args::{self, session_options, tc_options},
    host::{
        cgroups::Cgroups,
        conntrack::ConntrackChange,
        netns,
        owners::socket_owners,
        reading,
        sock_diag::{TcpSocket, dump_tcp_listeners},
        survey::Survey,
    },
    html_report,
    kernel::{clock::WallClock, names::Names},
    safe_file,
    session::{Next, Session, TracerOptions},
    stop::stop_signal,
    timefmt::rfc3339,
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
    let mut cgroups = filter_args::cgroups(&args.filter)?;
    // The rules work on aggregates, which have no use for the opening
    // transitions. Successful opens still come one by one, not counted in
    // the kernel (`count_opens`, as `top` does): the flow index follows
    // each connection from its open, so that an answer "no socket" on a
    // port a connection holds is told as a NAT bypass (from either end)
    // and a drop without an owner is filed under the connection of its
    // flow. `finish_counting` and `add_opens` take them if that changes.
    let mut options = TracerOptions {
        skip_opening: true,
        count_opens: false,
        ..options
    };
    if args.filter.events.is_empty() {
        // The reuses that worked are what bounds an idle timeout.
        options.kinds |= kind_mask::REUSE;
    }
    // Who sent the resets: the peer, or a device on the path.
    options.tc = tc_options(&args.ifaces, netns.as_ref(), options.kinds, false);
    let load_words = args.during.as_deref().map(during::parse).transpose()?;
    if let Some(path) = &args.report {
        // Refused now, not after the whole watch.
        check_report_dir(path)?;
    }
    let netns_path = netns.as_ref().map(|ns| ns.path.as_path());
    let before = reading::read(netns_path, &SYSCTLS)?;
    let survey_before = Survey::read();

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
    let names = session.names().clone();
    let mut agg = Aggregate::new(names.clone());
    agg.timeline.set_origin(session.started_mono_ns());
    let started_at = rfc3339(WallClock::now().unix_ns(session.started_mono_ns()));
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
    let drops_traced = session.drops_traced();
    let (counts, opens) = session
        .finish_counting(&mut batch, |batch| {
            agg.add_batch(batch);
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    agg.add_opens(&opens);
    agg.finish();
    let after = reading::read(netns_path, &SYSCTLS)?;
    let survey_after = Survey::read();

    let watched_netns = netns.as_ref().map(|ns| ns.inode);
    let events_by_netns = agg
        .namespaces
        .iter()
        .filter(|(inode, _)| **inode != 0)
        .map(|(inode, ns)| (*inode, ns.events))
        .collect();
    let namespaces = NamespaceFacts::from_surveys(
        &survey_before,
        &survey_after,
        &events_by_netns,
        watched_netns,
    );
    // Counters are quoted from the namespace the events came from: the
    // watched one, or on the whole host every namespace that had events.
    let counters = match watched_netns {
        Some(_) => after.counter_delta(&before),
        None => NamespaceFacts::summed(&namespaces).unwrap_or_else(|| after.counter_delta(&before)),
    };
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
        counters,
        sysctls: before.sysctls.clone(),
        sockets_start: socket_facts(before.sockets.as_deref()),
        sockets_end: socket_facts(after.sockets.as_deref()),
        conntrack: before
            .conntrack
            .zip(after.conntrack)
            .map(|(start, end)| ConntrackChange::new(start, end)),
        host_global_start: before.host_global,
        host_global_end: after.host_global,
        watched_netns,
        namespaces,
        namespaces_truncated: survey_before.truncated || survey_after.truncated,
        kernel_drops: KernelDrops {
            traced: drops_traced,
            in_scope: named_drops(&counts.drops.in_scope, &names),
            host: named_drops(&counts.drops.host, &names),
        },
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
    let workloads = name_cgroups(&mut findings, &mut cgroups);
    diagnosis::moments::mark(&mut findings, &agg);
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
        started_at: Some(started_at),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|r| r.trim().to_string()),
        filters: filters_json(&args.filter),
    };

    let json = report.to_json(&agg);
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &json)
            .map_err(io::Error::from)
            .context("writing the report")?;
        writeln!(out).context("writing the report")?;
    } else {
        report.write_human(&mut out).context("writing the report")?;
    }
    out.flush().context("writing the report")?;
    if let Some(path) = &args.report {
        // Rendered from the JSON document alone, as `replay` will.
        let page = html_report::render_json(&json)
            .with_context(|| format!("rendering the HTML report {}", path.display()))?;
        safe_file::write_atomically(path, page.as_bytes()).context("writing the HTML report")?;
        eprintln!("tcptrace: HTML report written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Per-reason drop counts by this kernel's reason names.
fn named_drops(counts: &BTreeMap<u32, u64>, names: &Names) -> BTreeMap<String, u64> {
    let mut named = BTreeMap::new();
    for (reason, n) in counts {
        *named
            .entry(names.drop_reason(*reason).into_owned())
            .or_default() += n;
    }
    named
}

/// The directory `--report` writes into must exist, and the file be
/// one we may replace (as the write at the end will check again).
fn check_report_dir(path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        anyhow::bail!(
            "cannot write the HTML report {}: {} is not a directory",
            path.display(),
            dir.display()
        );
    }
    if path.file_name().is_none() || path.is_dir() {
        anyhow::bail!(
            "cannot write the HTML report {}: not a file name",
            path.display()
        );
    }
    // A link or someone else's file is refused now, not after the watch.
    safe_file::check_replaceable(path).context("cannot write the HTML report")?;
    Ok(())
}

/// The filters the events were taken with, for the report's "how the
/// data was taken".
fn filters_json(filter: &FilterArgs) -> serde_json::Value {
    let events: Vec<String> = if filter.events.is_empty() {
        vec!["all".into()]
    } else {
        filter
            .events
            .iter()
            .filter_map(|e| e.to_possible_value())
            .map(|v| v.get_name().to_string())
            .collect()
    };
    serde_json::json!({
        "pid": filter.pid,
        "comm": filter.comm,
        "port": filter.port,
        "netns": filter.netns,
        "events": events,
        "reuse_idle_ms": filter.reuse_idle.as_millis() as u64,
    })
}

/// One sample of the listeners' accept queues; a failure costs only the
/// sample (logged).
fn sample_listeners(netns: Option<&Path>, peaks: &mut ListenerPeaks) {
    match netns::run_in(netns, || {
        dump_tcp_listeners().map_err(|e| anyhow::anyhow!(e))
    }) {
        Ok(sockets) => peaks.sample(&sockets),
        Err(err) => log::debug!("no accept queue sample: {err}"),
    }
}

/// Who is affected, down to the container and the pod: the cgroup path
/// (or, on a Kubernetes node, the pod) in each affected's text, and the
/// names by (pid, cgroup id) for the JSON report.
fn name_cgroups(findings: &mut [Finding], cgroups: &mut Cgroups) -> report::Workloads {
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
