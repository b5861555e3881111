//! The diagnosis rules engine: what was seen in, causes with evidence and
//! a fix out, as plain data.
//!
//! `facts` holds what was read from the host (counters, sysctls, sockets,
//! conntrack), `rules` turns facts and an [`Aggregate`] of the traced
//! events into ranked [`Finding`]s (`finding`), and `moments` marks when
//! each finding's evidence happened on the timeline. It reads nothing
//! itself and prints nothing: `diagnose` runs it once over a watch, the
//! exporter over a sliding window.
//!
//! [`Aggregate`]: crate::aggregate::Aggregate
//! [`Finding`]: finding::Finding

pub mod facts;
pub mod finding;
pub mod moments;
pub mod rules;
