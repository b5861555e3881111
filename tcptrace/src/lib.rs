//! tcptrace: who is hit by TCP resets, what the kernel saw, and why.
//!
//! Data flows one way: kernel programs -> ring buffer -> `reader` ->
//! `decode` -> `enrich` -> aggregation / sinks. Each subcommand lives in
//! its own module; `cli` only parses and dispatches.

pub mod aggregate;
pub mod cli;
pub mod counters;
pub mod decode;
pub mod diagnose;
pub mod enrich;
pub mod error;
pub mod event;
pub mod host;
pub mod kernel;
pub mod netns;
pub mod preexisting;
pub mod sink;
pub mod snapshot;
pub mod stress;
pub mod summary;
pub mod sysctl;
pub mod text_table;
pub mod timefmt;
pub mod top;
pub mod trace;
pub mod tracer;
pub mod tune;
