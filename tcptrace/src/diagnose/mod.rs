//! `tcptrace diagnose`: watch for a while, then name the cause and the fix.
//!
//! Reads the host facts (counters, sysctls, sockets), traces until
//! `--duration` or Ctrl-C while aggregating every event, reads the host
//! facts again, and hands all of it to the rules as plain data: the
//! pipeline is `diagnosis::watch`, fed from the live host. With
//! `--record FILE` every event and host reading is also written to FILE,
//! from which `tcptrace replay` prints the same report.

pub mod during;

use std::{io, path::Path, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::ValueEnum as _;
use tcptrace_common::kind_mask;

use crate::{
    cli::{DiagnoseArgs, FilterArgs},
    diagnosis::watch::{LiveHost, RunEnd, RunFacts, SourceError, StartReadings, Watch},
    event::TcpEvent,
    filter_args::{self, session_options, tc_options},
    html_report,
    kernel::clock::WallClock,
    record::{Header, RecordWriter, Recorded, RecordingHost},
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
/// the report or the record file.
pub async fn run(args: DiagnoseArgs) -> anyhow::Result<ExitCode> {
    let (options, netns) = session_options(&args.filter, args.ring_kib)?;
    let cgroups = filter_args::cgroups(&args.filter)?;
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
    if args.record.is_some() && args.record == args.report {
        anyhow::bail!("--record and --report name the same file");
    }
    // Opened before the tracer loads: a refused path fails fast.
    let record_file = match &args.record {
        Some(path) => Some(safe_file::create(path)?),
        None => None,
    };
    let netns_path = netns.as_ref().map(|ns| ns.path.clone());
    let live = LiveHost::new(netns.as_ref(), cgroups).with_context(|| {
        let path = netns_path.as_deref().unwrap_or(Path::new("?"));
        format!("cannot open network namespace {}", path.display())
    })?;
    // Until the file has its header (which names what the session
    // learns), what is recorded waits in memory.
    let mut host = RecordingHost::new(live, record_file.is_some());
    let start = StartReadings::take(&mut host).map_err(source_err(&args))?;

    let mut session = Session::start(&options, stop_signal(args.duration))?;
    let names = session.names().clone();
    let clock = WallClock::now();
    let run = RunFacts {
        netns: args.filter.netns.clone(),
        watched_netns: netns.as_ref().map(|ns| ns.inode),
        filters: filters_json(&args.filter),
        during: args.during.clone(),
        started_at: rfc3339(clock.unix_ns(session.started_mono_ns())),
        started_mono_ns: session.started_mono_ns(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|r| r.trim().to_string()),
        drops_traced: session.drops_traced(),
        missing: session.missing().to_vec(),
    };
    if let Some(file) = record_file {
        session.keep_raw_records();
        let header = Header {
            command: Recorded::Diagnose,
            ..Header::here(
                session.decoder().hz(),
                clock.boot_unix_ns(),
                names.clone(),
                run.missing.clone(),
            )
        };
        let writer = RecordWriter::new(file, &header).map_err(record_err(&args))?;
        host.start_file(writer).map_err(record_err(&args))?;
    }
    host.run(&run).map_err(record_err(&args))?;
    let mut watch = Watch::begin(run, names, start);
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
        Some(words) => Some(during::Load::start(words, netns_path.as_deref())?),
        None => None,
    };
    let mut load_tick = tokio::time::interval(LOAD_CHECK);
    let mut queue_tick = tokio::time::interval(QUEUE_SAMPLE);
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
                Next::Events => {
                    host.events(session.raw_records()).map_err(record_err(&args))?;
                    watch.add_batch(&mut batch);
                }
            },
            _ = queue_tick.tick() => {
                watch.sample_listeners(&mut host).map_err(source_err(&args))?;
            }
        }
    }
    // Asked now, reaped once the tracer is done: its report is printed
    // while the last events drain.
    if let Some(load) = load.as_mut() {
        load.ask_to_stop();
    }
    let seconds = session.elapsed().as_secs_f64();
    let tc = session.tc_report().cloned();
    let (counts, opens) = session
        .finish_counting_raw(&mut batch, |batch, raw| {
            host.events(Some(raw)).map_err(record_err(&args))?;
            watch.add_batch(batch);
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    let load_status = load.map(during::Load::stop);
    let end = RunEnd {
        seconds,
        counts: counts.clone(),
        opens,
        load_status: load_status.flatten().map(|s| s.to_string()),
    };
    host.run_end(&end).map_err(record_err(&args))?;
    let (report, agg) = watch.conclude(end, &mut host).map_err(source_err(&args))?;
    if let Some(file) = host
        .finish(seconds, &counts, tc.as_ref())
        .map_err(record_err(&args))?
    {
        // A regular file is synced (a device such as /dev/null cannot be).
        if file.metadata().is_ok_and(|m| m.is_file()) {
            file.sync_all().map_err(record_err(&args))?;
        }
    }

    let json = report.to_json(&agg);
    report
        .print(&json, args.json, &mut io::stdout().lock())
        .context("writing the report")?;
    if let Some(path) = &args.report {
        // Rendered from the JSON document alone, as `replay` will.
        let page = html_report::render_json(&json)
            .with_context(|| format!("rendering the HTML report {}", path.display()))?;
        safe_file::write_atomically(path, page.as_bytes()).context("writing the HTML report")?;
        eprintln!("tcptrace: HTML report written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn record_err(args: &DiagnoseArgs) -> impl Fn(io::Error) -> anyhow::Error + '_ {
    move |e| {
        let path = args.record.as_deref().unwrap_or(Path::new("?"));
        anyhow::Error::new(e).context(format!("writing the record to {}", path.display()))
    }
}

/// A host reading that failed, or (with `--record`) could not be written.
fn source_err(args: &DiagnoseArgs) -> impl Fn(SourceError) -> anyhow::Error + '_ {
    move |e| match e {
        SourceError::Record(e) => record_err(args)(e),
        other => anyhow::Error::new(other),
    }
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
