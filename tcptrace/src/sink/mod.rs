//! Where events go: human lines or NDJSON, to stdout or a file. Both
//! sinks see the same three things: events, loss records, the summary.

mod human;
pub mod json;

use std::io::{self, Write};

pub use human::HumanSink;
pub use json::JsonSink;

use crate::{
    event::{EventKind, TcpEvent},
    host::cgroups::Cgroups,
    kernel::{clock::WallClock, names::Names},
    summary::Summary,
};

/// What a sink needs besides the event itself.
pub struct Context<'a> {
    pub names: &'a Names,
    pub clock: &'a WallClock,
    pub cgroups: &'a mut Cgroups,
}

pub trait Sink {
    fn event(&mut self, event: &TcpEvent, ctx: &mut Context) -> io::Result<()>;
    /// `lost` events of `kind` were dropped since the last loss record.
    fn loss(&mut self, kind: EventKind, lost: u64, total_lost: u64) -> io::Result<()>;
    fn summary(&mut self, summary: &Summary) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

/// Buffered output shared by the sinks.
pub type Output = io::BufWriter<Box<dyn Write + Send>>;
