//! `tcptrace stress`: make load on purpose to reproduce a storm (connect
//! churn, held connections, a keep-alive pool with idle gaps, a connect
//! latency probe) and a built-in server that misbehaves on demand.
//!
//! Every client mode is bounded twice, by a count and by a duration, and
//! stops by itself; at most `--concurrency` connections are in flight.

mod churn;
pub mod classify;
mod connect;
mod hold;
mod latency;
mod parent;
mod pool;
pub mod report;
mod server;
pub mod target;
mod traced;
mod wire;

use std::{
    io::{self, Write as _},
    process::ExitCode,
    time::{Duration, Instant},
};

use crate::{
    cli::{LoadArgs, StressArgs, StressMode},
    stress::report::Report,
};

/// The client modes, as named in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Open and close connections as fast as possible.
    Churn,
    /// Open connections and keep them.
    Hold,
    /// A keep-alive pool with idle gaps.
    Pool,
    /// A connect-time probe.
    Latency,
}

impl Mode {
    /// The mode's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Churn => "churn",
            Mode::Hold => "hold",
            Mode::Pool => "pool",
            Mode::Latency => "latency",
        }
    }

    /// How long a run lasts when `--duration` is not given.
    fn default_duration(self) -> Duration {
        Duration::from_secs(match self {
            Mode::Churn => 10,
            Mode::Hold => 30,
            Mode::Pool | Mode::Latency => 60,
        })
    }
}

/// Runs `tcptrace stress`.
pub async fn run(args: StressArgs) -> anyhow::Result<ExitCode> {
    raise_fd_limit();
    match args.mode {
        StressMode::Churn(args) => {
            client(Mode::Churn, &args.load.clone(), |run| churn::run(run, args)).await
        }
        StressMode::Hold(args) => {
            client(Mode::Hold, &args.load.clone(), |run| hold::run(run, args)).await
        }
        StressMode::Pool(args) => {
            client(Mode::Pool, &args.load.clone(), |run| pool::run(run, args)).await
        }
        StressMode::Latency(args) => {
            client(Mode::Latency, &args.load.clone(), |run| {
                latency::run(run, args)
            })
            .await
        }
        StressMode::Serve(args) => server::run(args).await,
    }
}

/// What every client mode runs with.
#[derive(Debug, Clone)]
pub struct Run {
    /// Where to connect.
    pub target: target::Target,
    /// When the run started.
    pub start: Instant,
    /// When it must stop (`--duration`).
    pub deadline: Instant,
    /// How long a connect may take before it counts as ETIMEDOUT.
    pub connect_timeout: Duration,
    /// Becomes true on Ctrl-C, SIGTERM or SIGHUP: every mode then stops
    /// starting work, and the report covers what was done so far.
    pub stopped: tokio::sync::watch::Receiver<bool>,
}

impl Run {
    /// Whether a stop signal arrived.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Resolves when a stop signal arrives (never otherwise).
    pub async fn stop(&self) {
        let mut stopped = self.stopped.clone();
        if stopped.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Sleeps until `when`; false if a stop signal came first.
    pub async fn sleep_until(&self, when: Instant) -> bool {
        tokio::select! {
            () = tokio::time::sleep_until(when.into()) => true,
            () = self.stop() => false,
        }
    }
}

/// Resolves the target, runs a client mode with live progress, prints the
/// final report. A run where not a single connect succeeded ends with a
/// non-zero exit, after the report says why.
async fn client<F, Fut>(mode: Mode, load: &LoadArgs, work: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Run) -> Fut,
    Fut: Future<Output = anyhow::Result<report::Tally>>,
{
    let parent = load.parent_fd.and_then(parent::adopt);
    let target = target::resolve(&load.target).await?;
    // Attached before the first connect, so the kernel view misses none.
    let port = target.addr.port();
    let watch = load.trace.then(|| traced::Watch::start(port)).transpose()?;
    if let Some(parent) = &parent {
        parent::say_started(parent);
    }
    // Installed before the first connect: a signal right after the start
    // stops the run cleanly instead of killing it without a report.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signals = tokio::spawn(stop_on(stop_signals(), stop));
    let start = Instant::now();
    let run = Run {
        deadline: start + load.duration.unwrap_or(mode.default_duration()),
        target: target.clone(),
        start,
        connect_timeout: load.connect_timeout,
        stopped,
    };
    let tally = work(run).await?;
    signals.abort();
    let elapsed = start.elapsed();
    let address = target.addr.to_string();
    let mut report = Report::new(mode, &target.text, &address, elapsed, &tally);
    if let Some(watch) = watch {
        report.kernel = Some(watch.finish().await?);
    }
    let mut out = io::stdout().lock();
    report.write(load.json, &mut out)?;
    out.flush()?;
    if tally.connected == 0 {
        anyhow::bail!(
            "no connection to {} succeeded ({} attempts: {})",
            target.addr,
            tally.attempts,
            report::classes(&tally.connect_errors)
        );
    }
    Ok(ExitCode::SUCCESS)
}

type Signals = Vec<(tokio::signal::unix::Signal, &'static str)>;

/// Handlers for Ctrl-C, SIGTERM and SIGHUP, installed by this call (not
/// at the first poll).
fn stop_signals() -> Signals {
    use tokio::signal::unix::{SignalKind, signal};
    let kinds = [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
    ];
    let mut streams = Vec::new();
    for (kind, name) in kinds {
        match signal(kind) {
            Ok(stream) => streams.push((stream, name)),
            Err(e) => log::debug!("cannot handle {name}: {e}"),
        }
    }
    streams
}

/// Waits for the first of `signals`, then tells the mode to stop.
async fn stop_on(mut signals: Signals, stop: tokio::sync::watch::Sender<bool>) {
    let received = std::future::poll_fn(|cx| {
        for (stream, name) in signals.iter_mut() {
            if stream.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready(*name);
            }
        }
        std::task::Poll::Pending
    })
    .await;
    // Named as stress: under `diagnose --during` it shares diagnose's stderr.
    eprintln!("tcptrace stress: {received}: stopping; the report covers the attempts so far");
    let _ = stop.send(true);
}

/// Held connections and fast churn need many descriptors: use the hard
/// limit, as servers do. If that fails, EMFILE in the report says so.
fn raise_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            log::debug!("could not raise RLIMIT_NOFILE: {err}");
        }
    }
}
