//! The diagnosis rules engine: what was seen in, causes with evidence and
//! a fix out, as plain data.
//!
//! `facts` holds what was read from the host (counters, sysctls, sockets,
//! conntrack), `rules` turns facts and an [`Aggregate`] of the traced
//! events into ranked [`Finding`]s (`finding`), and `moments` marks when
//! each finding's evidence happened on the timeline. The rules read
//! nothing themselves: `diagnose` runs them once over a watch (`watch`:
//! the one pipeline from host readings and events to a `report`, whose
//! host readings come from the live host or a record file), the exporter
//! over a sliding window.
//!
//! [`Aggregate`]: crate::aggregate::Aggregate
//! [`Finding`]: finding::Finding

pub mod facts;
pub mod finding;
pub mod moments;
pub mod report;
pub mod rules;
pub mod watch;
