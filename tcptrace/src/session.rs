//! One tracing session: the lifecycle every tracing command shares
//! (`trace`, `top`, `diagnose`, `stress --trace`), written once.
//!
//! `Session::start` loads and attaches the tracer, says once on stderr
//! what this kernel cannot trace, and raises the reader's priority.
//! `next` hands out events until the stop signal fires. `finish`
//! detaches, drains the ring buffer until every event the kernel
//! produced was read or counted lost, and returns the exact counts:
//! received + lost = produced, plus the hook runs the kernel skipped.
//! Commands are thin consumers: they decide what to do with events and
//! when to report, never how to stop or drain.

use std::{
    pin::Pin,
    time::{Duration, Instant},
};

pub use crate::tracer::TracerOptions;
use crate::{
    counts::Counts,
    error::Result,
    event::TcpEvent,
    kernel::names::Names,
    stop::StopReason,
    tracer::{MAX_BATCH, Tracer},
};

/// Nice value of the thread that reads the ring buffer.
pub const READER_NICE: i32 = -10;

/// What `Session::next` brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Events were appended to the batch.
    Events,
    /// The stop signal fired (now or before): call `finish`.
    Stopped(StopReason),
}

/// A running tracer with its stop signal.
pub struct Session {
    tracer: Tracer,
    stop: Pin<Box<dyn Future<Output = StopReason>>>,
    stopped: Option<StopReason>,
    started: Instant,
}

impl Session {
    /// Starts tracing with `options` until `stop` resolves: usually
    /// `stop::stop_signal(duration)`; `stress --trace` passes the end of
    /// its load. Raises the calling thread's priority first (the reader
    /// runs on it, and threads it starts later inherit it), then prints
    /// each "not traced on this kernel" warning once.
    ///
    /// # Errors
    /// What `Tracer::start` refuses: not root, no tracefs, `--netns`
    /// without BTF, nothing attachable.
    pub fn start(
        options: &TracerOptions,
        stop: impl Future<Output = StopReason> + 'static,
    ) -> Result<Session> {
        raise_reader_priority();
        let tracer = Tracer::start(options)?;
        for missing in tracer.missing() {
            eprintln!("tcptrace: warning: not traced on this kernel: {missing}");
        }
        Ok(Session {
            tracer,
            stop: Box::pin(stop),
            stopped: None,
            started: Instant::now(),
        })
    }

    /// This kernel's names for TCP states and reset reasons.
    pub fn names(&self) -> &Names {
        self.tracer.names()
    }

    /// How records are decoded (the kernel's HZ).
    pub fn decoder(&self) -> &crate::decode::Decoder {
        self.tracer.decoder()
    }

    /// From now on, also keeps the bytes of every record handed out, for
    /// `raw_records` (`trace --record`).
    pub fn keep_raw_records(&mut self) {
        self.tracer.keep_raw();
    }

    /// With `keep_raw_records`: the bytes of the events appended to the
    /// batch since the caller last cleared this, `EVENT_SIZE` each, in
    /// batch order (clear it with the batch).
    pub fn raw_records(&mut self) -> Option<&mut Vec<u8>> {
        self.tracer.raw_records()
    }

    /// What this kernel could not trace, one phrase each (already printed).
    pub fn missing(&self) -> &[String] {
        self.tracer.missing()
    }

    /// Time since the tracer was attached.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counts so far. While tracing, events in flight make `produced`
    /// run ahead of `received + lost`; `finish` returns them exact.
    ///
    /// # Errors
    /// When the kernel's counter maps cannot be read.
    pub fn counts(&self) -> Result<Counts> {
        self.tracer.counts()
    }

    /// Waits for events (appending up to `MAX_BATCH` to `batch`) or for
    /// the stop signal, whichever comes first. Cancel-safe: use it as one
    /// arm of a command's `select!`, after the arms that must not starve
    /// (ticks, a load's end).
    ///
    /// # Errors
    /// When waiting on the ring buffer fails.
    pub async fn next(&mut self, batch: &mut Vec<TcpEvent>) -> Result<Next> {
        if let Some(reason) = self.stopped {
            return Ok(Next::Stopped(reason));
        }
        tokio::select! {
            biased;
            reason = &mut self.stop => {
                log::debug!("stopping: {reason}");
                self.stopped = Some(reason);
                Ok(Next::Stopped(reason))
            }
            ready = self.tracer.next_batch(batch) => ready.map(|()| Next::Events),
        }
    }

    /// Ends the session (whether or not the stop signal fired): detaches
    /// every program so nothing new arrives, then hands what is left in
    /// the ring buffer to `consume`, batch by batch, until every event
    /// the kernel produced was read or counted lost (waiting at most 1 s
    /// for records still being committed). Returns the exact counts.
    ///
    /// # Errors
    /// What `consume` returns, or a failure to read the ring buffer or
    /// the counters.
    pub async fn finish<E: From<crate::error::Error>>(
        self,
        batch: &mut Vec<TcpEvent>,
        mut consume: impl FnMut(&mut Vec<TcpEvent>) -> Result<(), E>,
    ) -> Result<Counts, E> {
        self.finish_raw(batch, |batch, _| consume(batch)).await
    }

    /// `finish`, handing `consume` the kept bytes of each batch's records
    /// too (empty without `keep_raw_records`).
    ///
    /// # Errors
    /// As `finish`.
    pub async fn finish_raw<E: From<crate::error::Error>>(
        mut self,
        batch: &mut Vec<TcpEvent>,
        mut consume: impl FnMut(&mut Vec<TcpEvent>, &mut Vec<u8>) -> Result<(), E>,
    ) -> Result<Counts, E> {
        self.tracer.detach();
        let mut no_raw = Vec::new();
        // Whatever the caller had not consumed yet goes first.
        if !batch.is_empty() {
            consume(batch, self.tracer.raw_records().unwrap_or(&mut no_raw))?;
        }
        loop {
            let more = self.tracer.drain_final(batch).await?;
            debug_assert!(batch.len() <= MAX_BATCH);
            let raw = self.tracer.raw_records().unwrap_or(&mut no_raw);
            consume(batch, raw)?;
            batch.clear();
            raw.clear();
            if !more {
                break;
            }
        }
        Ok(self.tracer.counts()?)
    }
}

/// The reader must not be starved by the storm it records: with every
/// core busy, a reader at the default priority gets one share among the
/// storm's many threads, falls behind and the ring overflows. It runs
/// only while events wait, so the higher priority costs the host no more
/// CPU than reading them does (the benchmark's CPU per event), it just
/// gets it in time. Per-thread on Linux (setpriority(2) with who = 0
/// names the calling thread): threads made later inherit it.
fn raise_reader_priority() {
    if let Err(err) = rustix::process::setpriority_process(None, READER_NICE) {
        log::debug!("could not raise the reader's priority: {err}");
    }
}
