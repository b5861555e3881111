//! `tcptrace trace`: stream every event to a sink until Ctrl-C or
//! `--duration`, then detach, drain, and summarise. Nothing is lost
//! silently: ring buffer losses become loss records and summary lines.

use std::{
    fs::File,
    io::{self, BufWriter, IsTerminal as _, Write},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tcptrace_common::kind_mask;

use crate::{
    cli::{EventClass, FilterArgs, TraceArgs},
    enrich::Cgroups,
    event::TcpEvent,
    kernel::clock::WallClock,
    sink::{Context, HumanSink, JsonSink, Output, Sink},
    summary::Summary,
    tracer::{self, KernelCounts, Tracer, TracerOptions},
};

/// How often losses are checked and reported.
const LOSS_CHECK: Duration = Duration::from_secs(1);
/// How often buffered output is written when it is not a terminal.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

pub async fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let options = tracer_options(&args.filter, args.ring_kib)?;
    let (out, destination) = open_output(args.output.as_deref())?;
    let mut sink: Box<dyn Sink> = if args.json {
        Box::new(JsonSink::new(out))
    } else {
        Box::new(HumanSink::new(out))
    };

    let mut tracer = Tracer::start(&options)?;
    for missing in tracer.missing() {
        eprintln!("tcptrace: warning: not traced on this kernel: {missing}");
    }
    // Tests and scripts wait for this line before making traffic.
    let stop = stop_signal(args.duration);
    eprintln!("tcptrace: tracing; Ctrl-C to stop");
    let started = Instant::now();
    let clock = WallClock::now();
    let mut cgroups = Cgroups::default();
    let mut summary = Summary::default();
    let mut losses = LossTracker::default();
    let mut batch: Vec<TcpEvent> = Vec::with_capacity(4096);
    let mut loss_tick = tokio::time::interval(LOSS_CHECK);
    let names = tracer.names().clone();
    tokio::pin!(stop);

    let write_err =
        |e: io::Error| anyhow::Error::new(e).context(format!("writing events to {destination}"));
    // On a terminal every batch shows at once; into a pipe or a file the
    // output is flushed every FLUSH_EVERY, so a storm costs one write(2)
    // per 256 KiB or 50 ms, not one per handful of events.
    let interactive = args.output.is_none() && io::stdout().is_terminal();
    let mut flush_tick = tokio::time::interval(FLUSH_EVERY);
    flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Biased, ticks before events: a storm keeps `next_batch` always
        // ready and must not starve the flush and loss reporting.
        tokio::select! {
            biased;
            reason = &mut stop => {
                log::debug!("stopping: {reason}");
                break;
            }
            _ = flush_tick.tick() => sink.flush().map_err(write_err)?,
            _ = loss_tick.tick() => {
                if args.output.is_none() && stdout_closed() {
                    // `tcptrace trace | head -1`: the reader is gone; leave quietly.
                    return Ok(ExitCode::SUCCESS);
                }
                losses.report(&tracer.kernel_counts()?, sink.as_mut()).map_err(write_err)?;
                sink.flush().map_err(write_err)?;
            }
            ready = tracer.next_batch(&mut batch) => {
                ready?;
                let mut ctx = Context { names: &names, clock: &clock, cgroups: &mut cgroups };
                write_batch(&mut batch, &mut summary, sink.as_mut(), &mut ctx).map_err(write_err)?;
                if interactive {
                    sink.flush().map_err(write_err)?;
                }
            }
        }
    }

    // Detach first so nothing new arrives, then take what is left.
    tracer.detach();
    let mut ctx = Context {
        names: &names,
        clock: &clock,
        cgroups: &mut cgroups,
    };
    loop {
        let more = tracer.drain_final(&mut batch).await?;
        write_batch(&mut batch, &mut summary, sink.as_mut(), &mut ctx).map_err(write_err)?;
        if !more {
            break;
        }
    }
    let kernel = tracer.kernel_counts()?;
    losses.report(&kernel, sink.as_mut()).map_err(write_err)?;
    summary.finish(started.elapsed().as_secs_f64(), kernel, tracer.missing());
    summary.set_drop_counts(
        &tracer.drop_reason_counts()?,
        &tracer.host_drop_reason_counts()?,
        &names,
    );
    if args.json {
        sink.summary(&summary).map_err(write_err)?;
    }
    sink.flush().map_err(write_err)?;
    if !args.no_summary {
        // stderr keeps the event stream clean for pipes.
        let _ = io::stderr().write_all(summary.to_human().as_bytes());
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

/// Kinds traced without `--events`: everything but reuse after idle,
/// which `diagnose` adds (a send per idle gap: cheap, but only an
/// idle-timeout diagnosis needs it).
pub const DEFAULT_KINDS: u32 = kind_mask::ALL & !kind_mask::REUSE;

/// Turns the CLI filters into tracer options (resolving --netns).
pub fn tracer_options(filter: &FilterArgs, ring_kib: u32) -> anyhow::Result<TracerOptions> {
    let mut kinds = if filter.events.is_empty() {
        DEFAULT_KINDS
    } else {
        0
    };
    for class in &filter.events {
        kinds |= match class {
            EventClass::Rst => kind_mask::RST,
            EventClass::Retrans => kind_mask::RETRANSMIT,
            EventClass::Connect => kind_mask::CONNECT,
            EventClass::State => kind_mask::STATE,
            EventClass::Drop => kind_mask::DROP,
            EventClass::Error => kind_mask::ERROR,
            EventClass::Reuse => kind_mask::REUSE,
            EventClass::All => kind_mask::ALL,
        };
    }
    let netns = filter
        .netns
        .as_deref()
        .map(tracer::resolve_netns)
        .transpose()?;
    Ok(TracerOptions {
        pid: filter.pid,
        comm: filter.comm.clone(),
        port: filter.port,
        netns,
        kinds,
        ring_bytes: ring_kib * 1024,
        batch_wakeups: true,
        skip_opening: false,
        reuse_idle: filter.reuse_idle,
    })
}

fn open_output(path: Option<&std::path::Path>) -> anyhow::Result<(Output, String)> {
    Ok(match path {
        Some(path) => {
            let file =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
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
pub fn stdout_closed() -> bool {
    let mut fds = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    let ready = unsafe { libc::poll(&mut fds, 1, 0) };
    ready > 0 && fds.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// Resolves on Ctrl-C, SIGTERM or when `duration` has passed. The signal
/// handlers are installed by this call, not at the first poll: a Ctrl-C
/// that arrives right after "tracing" is printed must stop the run
/// cleanly, not kill the process.
pub fn stop_signal(duration: Option<Duration>) -> impl Future<Output = &'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    async move {
        let timer = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let interrupted = async {
            match interrupt.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let terminated = async {
            match terminate.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = interrupted => "interrupted",
            _ = terminated => "terminated",
            _ = timer => "duration reached",
        }
    }
}

/// Turns the kernel's cumulative loss counters into loss records.
#[derive(Default)]
struct LossTracker {
    reported: [u64; crate::event::KIND_COUNT],
}

impl LossTracker {
    fn report(&mut self, counts: &KernelCounts, sink: &mut dyn Sink) -> io::Result<()> {
        let total = counts.total_lost();
        for (i, (kind, lost)) in counts.lost_by_kind().enumerate() {
            if lost > self.reported[i] {
                sink.loss(kind, lost - self.reported[i], total)?;
                self.reported[i] = lost;
            }
        }
        Ok(())
    }
}
