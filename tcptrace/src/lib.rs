//! tcptrace: who is hit by TCP resets, what the kernel saw, and why.
//!
//! Data flows one way: kernel programs -> ring buffer -> `reader` ->
//! `decode` -> `enrich` -> aggregation / sinks. Each subcommand lives in
//! its own module; `cli` only parses and dispatches.

pub mod cli;
pub mod counters;
pub mod error;
pub mod netns;
pub mod snapshot;
pub mod sysctl;
pub mod text_table;
pub mod trace;
pub mod tune;
