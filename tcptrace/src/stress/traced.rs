//! `--trace`: run the tracer while the load runs and add to the report
//! what the kernel saw on the target's port (connects and failed
//! connects, retransmits, resets sent by reason and received), so a storm
//! is reproduced and captured in one command.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;
use tcptrace_common::kind_mask;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{
    event::{EventKind, TcpEvent},
    stress::report::{Percentiles, format_micros},
    tracer::{Names, Tracer, TracerOptions},
};

/// What the kernel saw during the load.
#[derive(Debug, Clone, Serialize)]
pub struct KernelView {
    pub connects: u64,
    pub connect_failed: u64,
    /// Connect latency measured in the kernel (SYN_SENT -> ESTABLISHED).
    pub connect_us: Option<Percentiles>,
    pub retransmits: u64,
    pub synack_retransmits: u64,
    pub rst_sent: u64,
    /// Sent resets by the kernel's reason name (TCP_ABORT_ON_CLOSE, ...).
    pub rst_sent_by_reason: BTreeMap<String, u64>,
    pub rst_received: u64,
    /// Events the ring buffer had no room for: the figures above miss them.
    pub lost: u64,
    /// What this kernel could not trace.
    pub missing: Vec<String>,
}

impl KernelView {
    fn new() -> KernelView {
        KernelView {
            connects: 0,
            connect_failed: 0,
            connect_us: None,
            retransmits: 0,
            synack_retransmits: 0,
            rst_sent: 0,
            rst_sent_by_reason: BTreeMap::new(),
            rst_received: 0,
            lost: 0,
            missing: Vec::new(),
        }
    }

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
                format_micros(connect.p50),
                format_micros(connect.p99),
                format_micros(connect.max)
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

/// The tracer running beside the load.
pub struct Watch {
    stop: oneshot::Sender<()>,
    task: JoinHandle<crate::error::Result<KernelView>>,
}

impl Watch {
    /// Attaches the tracer, filtered in the kernel to `port` (local or
    /// remote) and to the event kinds the report uses: state changes
    /// would only cost ring buffer space.
    pub fn start(port: u16) -> crate::error::Result<Watch> {
        let options = TracerOptions {
            port: Some(port),
            kinds: kind_mask::CONNECT | kind_mask::RETRANSMIT | kind_mask::RST,
            ..TracerOptions::default()
        };
        let mut tracer = Tracer::start(&options)?;
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut view = KernelView::new();
            let mut connect_us =
                Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds");
            let mut batch = Vec::with_capacity(4096);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stopped => break,
                    ready = tracer.next_batch(&mut batch) => ready?,
                }
                let names = tracer.names();
                for ev in batch.drain(..) {
                    view.add(&ev, names, &mut connect_us);
                }
            }
            // Detach first so nothing new arrives, then take what is left.
            tracer.detach();
            tracer.drain(&mut batch);
            for ev in batch.drain(..) {
                view.add(&ev, tracer.names(), &mut connect_us);
            }
            view.lost = tracer.kernel_counts()?.total_lost();
            view.missing = tracer.missing().to_vec();
            view.connect_us = Percentiles::of(&connect_us);
            Ok(view)
        });
        Ok(Watch { stop, task })
    }

    /// Stops the tracer once the load is over and returns what it saw.
    pub async fn finish(self) -> anyhow::Result<KernelView> {
        // The task may have ended on its own with an error: join tells.
        let _ = self.stop.send(());
        Ok(self.task.await??)
    }
}
