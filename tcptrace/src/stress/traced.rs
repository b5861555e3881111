//! `--trace`: run the tracer while the load runs and add to the report
//! what the kernel saw on the target's port (connects and failed
//! connects, retransmits, resets sent by reason and received), so a storm
//! is reproduced and captured in one command.

use std::{collections::BTreeMap, thread};

use hdrhistogram::Histogram;
use serde::Serialize;
use tcptrace_common::kind_mask;
use tokio::sync::oneshot;

use crate::{
    aggregate::{Percentiles, serialize_micros},
    counts::Counts,
    error::{Error, Result},
    event::{EventKind, TcpEvent},
    kernel::names::Names,
    session::{Next, Session, TracerOptions},
    stop::StopReason,
    timefmt::duration_ns,
};

/// What the kernel saw on the target's port during the load (JSON field
/// `kernel` of the report, docs/stress.md).
#[derive(Debug, Clone, Default, Serialize)]
pub struct KernelView {
    /// Connects that succeeded (SYN_SENT -> ESTABLISHED).
    pub connects: u64,
    /// Connects that failed (SYN_SENT -> CLOSE).
    pub connect_failed: u64,
    /// Connect latency measured in the kernel (SYN_SENT -> ESTABLISHED).
    #[serde(serialize_with = "serialize_micros")]
    pub connect_us: Option<Percentiles>,
    /// Data (and SYN) retransmits.
    pub retransmits: u64,
    /// SYN-ACK retransmits.
    pub synack_retransmits: u64,
    /// RSTs sent.
    pub rst_sent: u64,
    /// Sent resets by the kernel's reason name (TCP_ABORT_ON_CLOSE, ...).
    pub rst_sent_by_reason: BTreeMap<String, u64>,
    /// RSTs received.
    pub rst_received: u64,
    /// Events the ring buffer had no room for: the figures above miss them
    /// (the same as `events_lost`, kept for readers of the first schema).
    pub lost: u64,
    /// Events read, all kinds.
    pub events_received: u64,
    /// Events the kernel produced on the port: `events_received +
    /// events_lost`, exactly.
    pub events_produced: u64,
    /// Events the ring buffer had no room for.
    pub events_lost: u64,
    /// Hook runs the kernel skipped (see `KernelCounts::missed_by_kernel`).
    pub missed_by_kernel: u64,
    /// What this kernel could not trace.
    pub missing: Vec<String>,
    /// The exact counts, for the human lines.
    #[serde(skip)]
    counts: Counts,
}

impl KernelView {
    fn add(&mut self, ev: &TcpEvent, names: &Names, connect_us: &mut Histogram<u64>) {
        match ev.kind {
            EventKind::Connect => {
                self.connects += 1;
                if let Some(ns) = ev.connect_ns {
                    connect_us.saturating_record((ns / 1000).max(1));
                }
            }
            EventKind::ConnectFailed => self.connect_failed += 1,
            EventKind::Retransmit => self.retransmits += 1,
            EventKind::SynAckRetransmit => self.synack_retransmits += 1,
            EventKind::RstSent => {
                self.rst_sent += 1;
                let reason = match ev.rst_reason {
                    Some(reason) => names.reason(reason),
                    None => "UNKNOWN".into(),
                };
                // Look up by &str first: no allocation per reset once seen.
                match self.rst_sent_by_reason.get_mut(&*reason) {
                    Some(count) => *count += 1,
                    None => {
                        self.rst_sent_by_reason.insert(reason.into_owned(), 1);
                    }
                }
            }
            EventKind::RstReceived => self.rst_received += 1,
            // Not asked for (see the tracer options below).
            EventKind::State | EventKind::Drop | EventKind::SocketError | EventKind::Reuse => {}
        }
    }

    /// The report's lines for the kernel's view.
    pub fn human(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "kernel saw    {} connects, {} failed connects, {} retransmits, {} SYN-ACK retransmits",
            self.connects, self.connect_failed, self.retransmits, self.synack_retransmits
        )];
        if let Some(connect) = &self.connect_us {
            lines.push(format!(
                "              kernel connect time p50 {}  p99 {}  max {}",
                duration_ns(connect.p50_ns),
                duration_ns(connect.p99_ns),
                duration_ns(connect.max_ns)
            ));
        }
        let mut resets = format!(
            "resets        {} sent, {} received",
            self.rst_sent, self.rst_received
        );
        if !self.rst_sent_by_reason.is_empty() {
            let reasons: Vec<String> = self
                .rst_sent_by_reason
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            resets += &format!("; sent by reason: {}", reasons.join(", "));
        }
        lines.push(resets);
        lines.push(format!("events        {}", self.counts.human()));
        if self.lost > 0 {
            lines.push(format!(
                "LOST          {} events (ring buffer full): the kernel figures are short",
                self.lost
            ));
        }
        for missing in &self.missing {
            lines.push(format!("not traced    {missing}"));
        }
        lines
    }
}

/// The tracer running beside the load, on a thread of its own at the
/// reader's priority (the load's runtime workers stay at the default
/// one), through the same session as every other command.
pub struct Watch {
    stop: oneshot::Sender<()>,
    done: oneshot::Receiver<Result<KernelView>>,
}

impl Watch {
    /// Attaches the tracer, filtered in the kernel to `port` (local or
    /// remote) and to the event kinds the report uses: state changes
    /// would only cost ring buffer space. Returns once it is attached.
    ///
    /// # Errors
    /// What the session refuses (not root, ...), or no thread.
    pub fn start(port: u16) -> Result<Watch> {
        let options = TracerOptions {
            port: Some(port),
            kinds: kind_mask::CONNECT | kind_mask::RETRANSMIT | kind_mask::RST,
            ..TracerOptions::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<Result<()>>();
        let (done_tx, done) = oneshot::channel();
        thread::Builder::new()
            .name("tcptrace-reader".into())
            .spawn(move || {
                let view = watch(&options, stopped, &started_tx);
                // The receiver is gone only if the load failed first.
                let _ = done_tx.send(view);
            })
            .map_err(|e| Error::io("starting the reader thread", e))?;
        match started.recv() {
            Ok(Ok(())) => Ok(Watch { stop, done }),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(Error::Kernel("the reader thread ended at start".into())),
        }
    }

    /// Stops the tracer once the load is over, drains it, and returns
    /// what it saw, with exact counts.
    ///
    /// # Errors
    /// A failure to read the ring buffer or the counters.
    pub async fn finish(self) -> anyhow::Result<KernelView> {
        let _ = self.stop.send(());
        let view = self
            .done
            .await
            .map_err(|_| anyhow::anyhow!("the reader thread ended early"))??;
        Ok(view)
    }
}

/// The reader thread: a session until `stopped`, then its exact view.
/// Says on `started` whether the session could start.
fn watch(
    options: &TracerOptions,
    stopped: oneshot::Receiver<()>,
    started: &std::sync::mpsc::Sender<Result<()>>,
) -> Result<KernelView> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = started.send(Err(Error::io("starting the reader's runtime", err)));
            return Ok(KernelView::default());
        }
    };
    runtime.block_on(async {
        // The load ends it (or a load that failed, dropping the sender).
        let stop = async move {
            let _ = stopped.await;
            StopReason::Requested
        };
        let mut session = match Session::start(options, stop) {
            Ok(session) => {
                let _ = started.send(Ok(()));
                session
            }
            Err(err) => {
                let _ = started.send(Err(err));
                return Ok(KernelView::default());
            }
        };
        let names = session.names().clone();
        let mut view = KernelView::default();
        let mut connect_us =
            Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds");
        let mut batch = Vec::with_capacity(4096);
        while session.next(&mut batch).await? == Next::Events {
            for ev in batch.iter() {
                view.add(ev, &names, &mut connect_us);
            }
            batch.clear();
        }
        view.missing = session.missing().to_vec();
        let counts = session
            .finish(&mut batch, |batch| {
                for ev in batch.iter() {
                    view.add(ev, &names, &mut connect_us);
                }
                Ok::<_, Error>(())
            })
            .await?;
        view.lost = counts.lost();
        view.events_received = counts.received();
        view.events_produced = counts.produced();
        view.events_lost = counts.lost();
        view.missed_by_kernel = counts.missed_by_kernel();
        view.counts = counts;
        view.connect_us = Percentiles::of(&connect_us, 1000);
        Ok(view)
    })
}
