//! `tcptrace trace`: stream every event to a sink until the stop signal
//! (Ctrl-C, SIGTERM, SIGHUP, `--duration`), then drain and summarise.
//! Nothing is lost silently: ring buffer losses become loss records and
//! summary lines. `--record FILE` also keeps the raw records for
//! `tcptrace replay`; `--pcap DIR` writes the last packets of each reset
//! connection (the flight recorder).

use std::{
    io::{self, BufWriter, IsTerminal as _, Write},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    cli::TraceArgs,
    event::TcpEvent,
    filter_args::{self, session_options, tc_options},
    kernel::clock::{self, WallClock},
    record::{Header, RecordWriter},
    recorder::{Recorder, RecorderOptions},
    session::{Next, RawRecords, Session, TracerOptions},
    sink::{Context, HumanSink, JsonSink, LossTracker, Output, Sink},
    stop::stop_signal,
    summary::Summary,
};

/// How often losses are checked and reported.
const LOSS_CHECK: Duration = Duration::from_secs(1);
/// How often buffered output is written when it is not a terminal.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Runs `tcptrace trace`: every event to the sink (and with `--record`
/// to the record file) until the stop signal, then the drained rest, the
/// loss records and the summary.
///
/// # Errors
/// What the session refuses, and failures to write the output.
pub async fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let (options, netns) = session_options(&args.filter, args.ring_kib)?;
    let options = TracerOptions {
        tc: tc_options(
            &args.ifaces,
            netns.as_ref(),
            options.kinds,
            args.pcap.is_some(),
        ),
        flight_payload: args.pcap.as_ref().map(|_| args.pcap_payload),
        ..options
    };
    if args.record.is_some() && args.record == args.output {
        anyhow::bail!("--record and --output name the same file");
    }
    // A directory others could write into is refused before tracing.
    let mut flight_recorder = args
        .pcap
        .as_ref()
        .map(|dir| {
            Recorder::new(RecorderOptions {
                dir: dir.clone(),
                max_files: args.pcap_max,
                payload: args.pcap_payload,
            })
        })
        .transpose()
        .context("--pcap")?;
    // Opened before the tracer loads: a refused path fails fast.
    let record_file = match &args.record {
        Some(path) => Some(crate::safe_file::create(path)?),
        None => None,
    };
    // `--record` alone only records; with --json or --output it also prints.
    let prints = args.record.is_none() || args.json || args.output.is_some();
    let mut cgroups = filter_args::cgroups(&args.filter)?;
    let (out, destination) = open_output(args.output.as_deref())?;
    let mut sink: Option<Box<dyn Sink>> = match (prints, args.json) {
        (false, _) => None,
        (true, true) => Some(Box::new(JsonSink::new(out))),
        (true, false) => Some(Box::new(HumanSink::new(out))),
    };

    let mut session = Session::start(&options, stop_signal(args.duration))?;
    let clock = WallClock::now();
    let names = session.names().clone();
    let mut record_writer = match record_file {
        Some(file) => {
            session.keep_raw_records();
            let header = Header::here(
                session.decoder().hz(),
                clock.boot_unix_ns(),
                names.clone(),
                session.missing().to_vec(),
            );
            Some(RecordWriter::new(file, &header).map_err(record_err(&args))?)
        }
        None => None,
    };
    // Tests and scripts wait for this line before making traffic.
    eprintln!("tcptrace: tracing; Ctrl-C to stop");
    let mut summary = Summary::default();
    let mut losses = LossTracker::default();
    let mut batch: Vec<TcpEvent> = Vec::with_capacity(4096);
    let mut no_raw = RawRecords::default();
    let mut loss_tick = tokio::time::interval(LOSS_CHECK);

    let write_err =
        |e: io::Error| anyhow::Error::new(e).context(format!("writing events to {destination}"));
    let flush = |sink: &mut Option<Box<dyn Sink>>, record_writer: &mut Option<RecordWriter>| {
        if let Some(sink) = sink {
            sink.flush().map_err(write_err)?;
        }
        if let Some(record_writer) = record_writer {
            record_writer.flush().map_err(record_err(&args))?;
        }
        anyhow::Ok(())
    };
    // On a terminal every batch shows at once; into a pipe or a file the
    // output is flushed every FLUSH_EVERY, so a storm costs one write(2)
    // per 256 KiB or 50 ms, not one per handful of events.
    let interactive = prints && args.output.is_none() && io::stdout().is_terminal();
    let mut flush_tick = tokio::time::interval(FLUSH_EVERY);
    flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A write that fails (a full disk, a file system gone read-only) ends
    // the run, not the accounting: the events still in the ring are
    // counted, the summary says what was seen, and the error is the last
    // line.
    let mut failed: Option<anyhow::Error> = None;
    loop {
        // Biased, ticks before events: a storm keeps the ring always
        // ready and must not starve the flush and loss reporting.
        tokio::select! {
            biased;
            _ = flush_tick.tick() => {
                if let Err(e) = flush(&mut sink, &mut record_writer) {
                    failed = Some(e);
                    break;
                }
                if let Some(flight_recorder) = flight_recorder.as_mut() {
                    let mut ctx = Context { names: &names, clock: &clock, cgroups: &mut cgroups };
                    flight_recorder.write_due(clock::monotonic_ns(), &session, &mut ctx);
                }
            }
            _ = loss_tick.tick() => {
                if prints && args.output.is_none() && stdout_closed() {
                    // `tcptrace trace | head -1`: the reader is gone; leave quietly.
                    return Ok(ExitCode::SUCCESS);
                }
                let counts = session.counts()?;
                let reported = (|| {
                    if let Some(sink) = &mut sink {
                        losses.report(&counts, sink.as_mut()).map_err(write_err)?;
                    }
                    if let Some(record_writer) = &mut record_writer {
                        record_writer.losses(&counts).map_err(record_err(&args))?;
                    }
                    flush(&mut sink, &mut record_writer)
                })();
                if let Err(e) = reported {
                    failed = Some(e);
                    break;
                }
            }
            next = session.next(&mut batch) => match next? {
                Next::Stopped(_) => break,
                Next::Events => {
                    if let Some(flight_recorder) = flight_recorder.as_mut() {
                        batch.iter().for_each(|ev| flight_recorder.note(ev));
                    }
                    let mut ctx = Context { names: &names, clock: &clock, cgroups: &mut cgroups };
                    let raw = session.raw_records().unwrap_or(&mut no_raw);
                    let mut out = Outputs { sink: sink.as_deref_mut(), record: record_writer.as_mut() };
                    let written = write_batch(&mut batch, raw, &mut summary, &mut out, &mut ctx)
                        .map_err(|e| out_err(e, &destination, &args))
                        .and_then(|()| match interactive {
                            true => flush(&mut sink, &mut record_writer),
                            false => Ok(()),
                        });
                    if let Err(e) = written {
                        failed = Some(e);
                        break;
                    }
                }
            },
        }
    }

    if failed.is_some() {
        // Nothing more is written; what is left is only counted.
        sink = None;
        record_writer = None;
    }
    let seconds = session.elapsed().as_secs_f64();
    let missing = session.missing().to_vec();
    let mut ctx = Context {
        names: &names,
        clock: &clock,
        cgroups: &mut cgroups,
    };
    let counts = session
        .finish_in_place(&mut batch, |batch, raw| {
            if let Some(flight_recorder) = flight_recorder.as_mut() {
                batch.iter().for_each(|ev| flight_recorder.note(ev));
            }
            let mut out = Outputs {
                sink: sink.as_deref_mut(),
                record: record_writer.as_mut(),
            };
            write_batch(batch, raw, &mut summary, &mut out, &mut ctx)
                .map_err(|e| out_err(e, &destination, &args))
        })
        .await?;
    // The programs are detached; their maps still hold the packets.
    if let Some(flight_recorder) = flight_recorder.as_mut() {
        flight_recorder.write_due(u64::MAX, &session, &mut ctx);
    }
    let tc_report = session.tc_report().cloned();
    let pcap_report = flight_recorder.as_ref().map(|r| r.report().clone());
    drop(session);
    if let Some(record_writer) = record_writer.take() {
        let finished = record_writer
            .finish(seconds, &counts, tc_report.as_ref(), pcap_report.as_ref())
            .and_then(|file| {
                // A regular file is synced (a device such as /dev/null cannot be).
                match file.metadata().is_ok_and(|m| m.is_file()) {
                    true => file.sync_all(),
                    false => Ok(()),
                }
            });
        if let Err(e) = finished {
            failed.get_or_insert(record_err(&args)(e));
        }
    }
    let pcap_failed = pcap_report.as_ref().is_some_and(|r| r.failed > 0);
    let losses_written = match &mut sink {
        Some(sink) => losses.report(&counts, sink.as_mut()),
        None => Ok(()),
    };
    summary.finish(seconds, counts, &missing, &names);
    summary.set_packets(tc_report, pcap_report);
    let ended = losses_written.and_then(|()| match &mut sink {
        Some(sink) if args.json => sink.summary(&summary).and_then(|()| sink.flush()),
        Some(sink) => sink.flush(),
        None => Ok(()),
    });
    if let Err(e) = ended {
        failed.get_or_insert(write_err(e));
    }
    if !args.no_summary {
        // stderr keeps the event stream clean for pipes.
        let _ = io::stderr().write_all(summary.to_human().as_bytes());
    }
    if let Some(failed) = failed {
        return Err(failed);
    }
    // Captures that could not be written (a full disk) fail the run, as
    // a failed --output write does, once everything else is out.
    if pcap_failed {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a batch goes: the printed stream, the record file, or both.
struct Outputs<'a> {
    sink: Option<&'a mut (dyn Sink + 'static)>,
    record: Option<&'a mut RecordWriter>,
}

/// Which of the outputs failed.
enum OutError {
    Sink(io::Error),
    Record(io::Error),
}

fn out_err(e: OutError, destination: &str, args: &TraceArgs) -> anyhow::Error {
    match e {
        OutError::Sink(e) => {
            anyhow::Error::new(e).context(format!("writing events to {destination}"))
        }
        OutError::Record(e) => record_err(args)(e),
    }
}

fn record_err(args: &TraceArgs) -> impl Fn(io::Error) -> anyhow::Error + '_ {
    move |e| {
        let path = args.record.as_deref().unwrap_or(std::path::Path::new("?"));
        anyhow::Error::new(e).context(format!("writing the record to {}", path.display()))
    }
}

/// Every event into the summary, the record file and the sink, one at a
/// time. The record file looks the owner's cgroup up first, so what it
/// keeps is what the sink then prints, and its replay prints the same.
fn write_batch(
    batch: &mut Vec<TcpEvent>,
    raw: &mut RawRecords,
    summary: &mut Summary,
    out: &mut Outputs,
    ctx: &mut Context,
) -> Result<(), OutError> {
    let mut records = raw.iter();
    // By reference: moving each 256-byte event out costs a copy.
    for ev in batch.iter() {
        summary.add(ev);
        let record = records.next().unwrap_or_default();
        if let Some(record_writer) = out.record.as_deref_mut() {
            record_writer
                .event(ev, record, ctx.cgroups)
                .map_err(OutError::Record)?;
        }
        if let Some(sink) = out.sink.as_deref_mut() {
            sink.event(ev, ctx).map_err(OutError::Sink)?;
        }
    }
    drop(records);
    batch.clear();
    raw.clear();
    Ok(())
}

fn open_output(path: Option<&std::path::Path>) -> anyhow::Result<(Output, String)> {
    Ok(match path {
        Some(path) => {
            // Root writes it, often into /tmp: no links, no one else's
            // file, mode 0600 (it names processes and peers).
            let file = crate::safe_file::create(path)?;
            (
                BufWriter::with_capacity(1 << 16, Box::new(file)),
                path.display().to_string(),
            )
        }
        None => (
            BufWriter::with_capacity(1 << 16, Box::new(io::stdout())),
            "stdout".to_string(),
        ),
    })
}

/// True when stdout is a pipe whose reader has gone away, noticed even
/// when no event has been written since.
fn stdout_closed() -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let stdout = io::stdout();
    let mut fds = [PollFd::new(&stdout, PollFlags::empty())];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
        && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
}
