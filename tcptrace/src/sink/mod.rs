//! Where events go: human lines or NDJSON, to stdout or a file. Both
//! sinks see the same three things: events, loss records, the summary.

mod human;
pub mod json;

use std::io::{self, Write};

pub use human::HumanSink;
pub use json::JsonSink;

use crate::{
    counts::Counts,
    event::{EventKind, KINDS, TcpEvent},
    host::cgroups::Cgroups,
    kernel::{clock::WallClock, names::Names},
    summary::Summary,
};

/// What a sink needs besides the event itself.
pub struct Context<'a> {
    /// State and reset-reason names.
    pub names: &'a Names,
    /// Turns event timestamps into wall time.
    pub clock: &'a WallClock,
    /// cgroup ids to paths and container ids.
    pub cgroups: &'a mut Cgroups,
}

/// Where `trace` writes: events, loss records and the summary, in order.
pub trait Sink {
    /// Writes one event.
    fn event(&mut self, event: &TcpEvent, ctx: &mut Context) -> io::Result<()>;
    /// `lost` events of `kind` were dropped since the last loss record.
    fn loss(&mut self, kind: EventKind, lost: u64, total_lost: u64) -> io::Result<()>;
    /// Writes the end-of-run summary.
    fn summary(&mut self, summary: &Summary) -> io::Result<()>;
    /// Writes what is buffered.
    fn flush(&mut self) -> io::Result<()>;
}

/// Buffered output shared by the sinks.
pub type Output = io::BufWriter<Box<dyn Write + Send>>;

/// Turns the kernel's cumulative loss counters into loss records.
/// (`trace` live, and `replay` from a record file's loss checks.)
#[derive(Default)]
pub struct LossTracker {
    reported: [u64; KINDS],
}

impl LossTracker {
    /// Writes a loss record for every kind whose counter moved since
    /// the last report.
    ///
    /// # Errors
    /// Failures to write.
    pub fn report(&mut self, counts: &Counts, sink: &mut dyn Sink) -> io::Result<()> {
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
