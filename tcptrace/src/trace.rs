//! `tcptrace trace`: stream every event to a sink until the stop signal
//! (Ctrl-C, SIGTERM, SIGHUP, `--duration`), then drain and summarise.
//! Nothing is lost silently: ring buffer losses become loss records and
//! summary lines.

use std::{
    io::{self, BufWriter, IsTerminal as _, Write},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    cli::TraceArgs,
    counts::Counts,
    event::{KINDS, TcpEvent},
    filter_args::{self, session_options, tc_options},
    kernel::clock::{self, WallClock},
    recorder::{Recorder, RecorderOptions},
    session::{Next, Session, TracerOptions},
    sink::{Context, HumanSink, JsonSink, Output, Sink},
    stop::stop_signal,
    summary::Summary,
};

/// How often losses are checked and reported.
const LOSS_CHECK: Duration = Duration::from_secs(1);
/// How often buffered output is written when it is not a terminal.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Runs `tcptrace trace`: every event to the sink until the stop signal,
/// then the drained rest, the loss records and the summary.
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
    // A directory others could write into is refused before tracing.
    let mut recorder = args
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
    let mut cgroups = filter_args::cgroups(&args.filter)?;
    let (out, destination) = open_output(args.output.as_deref())?;
    let mut sink: Box<dyn Sink> = if args.json {
        Box::new(JsonSink::new(out))
    } else {
        Box::new(HumanSink::new(out))
    };

    let mut session = Session::start(&options, stop_signal(args.duration))?;
    // Tests and scripts wait for this line before making traffic.
    eprintln!("tcptrace: tracing; Ctrl-C to stop");
    let clock = WallClock::now();
    let mut summary = Summary::default();
    let mut losses = LossTracker::default();
    let mut batch: Vec<TcpEvent> = Vec::with_capacity(4096);
    let mut loss_tick = tokio::time::interval(LOSS_CHECK);
    let names = session.names().clone();

    let write_err =
        |e: io::Error| anyhow::Error::new(e).context(format!("writing events to {destination}"));
    // On a terminal every batch shows at once; into a pipe or a file the
    // output is flushed every FLUSH_EVERY, so a storm costs one write(2)
    // per 256 KiB or 50 ms, not one per handful of events.
    let interactive = args.output.is_none() && io::stdout().is_terminal();
    let mut flush_tick = tokio::time::interval(FLUSH_EVERY);
    flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Biased, ticks before events: a storm keeps the ring always
        // ready and must not starve the flush and loss reporting.
        tokio::select! {
            biased;
            _ = flush_tick.tick() => {
                sink.flush().map_err(write_err)?;
                if let Some(recorder) = recorder.as_mut() {
                    let mut ctx = Context { names: &names, clock: &clock, cgroups: &mut cgroups };
                    recorder.write_due(clock::monotonic_ns(), &session, &mut ctx);
                }
            }
            _ = loss_tick.tick() => {
                if args.output.is_none() && stdout_closed() {
                    // `tcptrace trace | head -1`: the reader is gone; leave quietly.
                    return Ok(ExitCode::SUCCESS);
                }
                losses.report(&session.counts()?, sink.as_mut()).map_err(write_err)?;
                sink.flush().map_err(write_err)?;
            }
            next = session.next(&mut batch) => match next? {
                Next::Stopped(_) => break,
                Next::Events => {
                    if let Some(recorder) = recorder.as_mut() {
                        batch.iter().for_each(|ev| recorder.note(ev));
                    }
                    let mut ctx = Context { names: &names, clock: &clock, cgroups: &mut cgroups };
                    write_batch(&mut batch, &mut summary, sink.as_mut(), &mut ctx).map_err(write_err)?;
                    if interactive {
                        sink.flush().map_err(write_err)?;
                    }
                }
            },
        }
    }

    let seconds = session.elapsed().as_secs_f64();
    let missing = session.missing().to_vec();
    let mut ctx = Context {
        names: &names,
        clock: &clock,
        cgroups: &mut cgroups,
    };
    let counts = session
        .finish_in_place(&mut batch, |batch| {
            if let Some(recorder) = recorder.as_mut() {
                batch.iter().for_each(|ev| recorder.note(ev));
            }
            write_batch(batch, &mut summary, sink.as_mut(), &mut ctx).map_err(write_err)
        })
        .await?;
    // The programs are detached; their maps still hold the packets.
    if let Some(recorder) = recorder.as_mut() {
        recorder.write_due(u64::MAX, &session, &mut ctx);
    }
    losses.report(&counts, sink.as_mut()).map_err(write_err)?;
    summary.finish(seconds, counts, &missing, &names);
    summary.set_packets(
        session.tc_report().cloned(),
        recorder.as_ref().map(|r| r.report().clone()),
    );
    drop(session);
    if args.json {
        sink.summary(&summary).map_err(write_err)?;
    }
    sink.flush().map_err(write_err)?;
    if !args.no_summary {
        // stderr keeps the event stream clean for pipes.
        let _ = io::stderr().write_all(summary.to_human().as_bytes());
    }
    // Captures that could not be written (a full disk) fail the run, as
    // a failed --output write does, once everything else is out.
    if recorder.is_some_and(|r| r.report().failed > 0) {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn write_batch(
    batch: &mut Vec<TcpEvent>,
    summary: &mut Summary,
    sink: &mut dyn Sink,
    ctx: &mut Context,
) -> io::Result<()> {
    // By reference: moving each 256-byte event out costs a copy.
    for ev in batch.iter() {
        summary.add(ev);
        sink.event(ev, ctx)?;
    }
    batch.clear();
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

/// Turns the kernel's cumulative loss counters into loss records.
#[derive(Default)]
struct LossTracker {
    reported: [u64; KINDS],
}

impl LossTracker {
    fn report(&mut self, counts: &Counts, sink: &mut dyn Sink) -> io::Result<()> {
        let total = counts.lost();
        for (kind, lost) in counts.kernel.lost_by_kind() {
            let reported = &mut self.reported[kind.index()];
            if lost > *reported {
                sink.loss(kind, lost - *reported, total)?;
                *reported = lost;
            }
        }
        Ok(())
    }
}
