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

pub use crate::tracer::{Flight, RawRecords, TcReport, TracerOptions};
use crate::{
    counts::Counts,
    error::Result,
    event::{OpenCount, TcpEvent},
    kernel::{clock::monotonic_ns, names::Names},
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
    started_mono_ns: u64,
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
        release_startup_memory();
        for missing in tracer.missing() {
            eprintln!("tcptrace: warning: not traced on this kernel: {missing}");
        }
        Ok(Session {
            tracer,
            stop: Box::pin(stop),
            stopped: None,
            started: Instant::now(),
            started_mono_ns: monotonic_ns(),
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

    /// With `keep_raw_records`: the records of the events appended to
    /// the batch since the caller last cleared this, in batch order
    /// (clear it with the batch).
    pub fn raw_records(&mut self) -> Option<&mut RawRecords> {
        self.tracer.raw_records()
    }

    /// What this kernel could not trace, one phrase each (already printed).
    pub fn missing(&self) -> &[String] {
        self.tracer.missing()
    }

    /// Where the TC programs watch packets (`None`: not attached).
    pub fn tc_report(&self) -> Option<&TcReport> {
        self.tracer.tc_report()
    }

    /// The packets the flight recorder kept for connection `key`; also
    /// after `finish_in_place`.
    pub fn flight(&self, key: &tcptrace_common::FlowKey) -> Option<Flight> {
        self.tracer.flight(key)
    }

    /// Whether drops are traced and counted (see `Tracer::drops_traced`).
    pub fn drops_traced(&self) -> bool {
        self.tracer.drops_traced()
    }

    /// Time since the tracer was attached.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// When the tracer was attached, on the events' clock
    /// (CLOCK_MONOTONIC ns): where timelines start.
    pub fn started_mono_ns(&self) -> u64 {
        self.started_mono_ns
    }

    /// Counts so far. While tracing, events in flight make `produced`
    /// run ahead of `received + lost`; `finish` returns them exact.
    ///
    /// # Errors
    /// When the kernel's counter maps cannot be read.
    pub fn counts(&self) -> Result<Counts> {
        self.tracer.counts()
    }

    /// The successful opens the kernel counted since the last call, when
    /// the session was started with `TracerOptions::count_opens` (empty
    /// otherwise). Aggregating commands take them each interval; `finish`
    /// hands over the last ones.
    ///
    /// # Errors
    /// When the kernel's count map cannot be read.
    pub fn take_opens(&mut self) -> Result<Vec<OpenCount>> {
        self.tracer.take_opens()
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
    /// For a session that counts opens in the kernel, use
    /// `finish_counting`.
    ///
    /// # Errors
    /// What `consume` returns, or a failure to read the ring buffer or
    /// the counters.
    pub async fn finish<E: From<crate::error::Error>>(
        self,
        batch: &mut Vec<TcpEvent>,
        consume: impl FnMut(&mut Vec<TcpEvent>) -> Result<(), E>,
    ) -> Result<Counts, E> {
        let (counts, opens) = self.finish_counting(batch, consume).await?;
        debug_assert!(opens.is_empty(), "use finish_counting with count_opens");
        Ok(counts)
    }

    /// `finish`, then the opens the kernel counted since the last
    /// `take_opens` (exact: the programs are detached): the last counts
    /// an aggregating command takes.
    ///
    /// # Errors
    /// As `finish`, and a failure to read the kernel's count map.
    pub async fn finish_counting<E: From<crate::error::Error>>(
        self,
        batch: &mut Vec<TcpEvent>,
        mut consume: impl FnMut(&mut Vec<TcpEvent>) -> Result<(), E>,
    ) -> Result<(Counts, Vec<OpenCount>), E> {
        self.finish_counting_raw(batch, |batch, _| consume(batch))
            .await
    }

    /// `finish_counting`, handing `consume` the kept bytes of each
    /// batch's records too (`diagnose --record`; empty without
    /// `keep_raw_records`).
    ///
    /// # Errors
    /// As `finish_counting`.
    pub async fn finish_counting_raw<E: From<crate::error::Error>>(
        mut self,
        batch: &mut Vec<TcpEvent>,
        consume: impl FnMut(&mut Vec<TcpEvent>, &mut RawRecords) -> Result<(), E>,
    ) -> Result<(Counts, Vec<OpenCount>), E> {
        self.drain(batch, consume).await?;
        // Before the counts, which include the opens handed out.
        let opens = self.tracer.take_opens()?;
        Ok((self.tracer.counts()?, opens))
    }

    /// `finish`, keeping the session (detached, drained) for what its
    /// maps still hold: the flight recorder's packets (`flight`). Hands
    /// `consume` the kept bytes of each batch's records too (empty
    /// without `keep_raw_records`).
    ///
    /// # Errors
    /// As `finish`.
    pub async fn finish_in_place<E: From<crate::error::Error>>(
        &mut self,
        batch: &mut Vec<TcpEvent>,
        consume: impl FnMut(&mut Vec<TcpEvent>, &mut RawRecords) -> Result<(), E>,
    ) -> Result<Counts, E> {
        self.drain(batch, consume).await?;
        Ok(self.tracer.counts()?)
    }

    /// Detaches, then hands every event still in the ring to `consume`,
    /// with the kept bytes of its records.
    async fn drain<E: From<crate::error::Error>>(
        &mut self,
        batch: &mut Vec<TcpEvent>,
        mut consume: impl FnMut(&mut Vec<TcpEvent>, &mut RawRecords) -> Result<(), E>,
    ) -> Result<(), E> {
        self.tracer.detach();
        let mut no_raw = RawRecords::default();
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
        Ok(())
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

/// Hands the heap start-up freed back to the kernel. Parsing the
/// kernel's BTF and loading the programs take tens of MiB for a moment;
/// glibc keeps freed memory for reuse, so without this an always-on
/// tracer would hold it for its whole life.
fn release_startup_memory() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
}
