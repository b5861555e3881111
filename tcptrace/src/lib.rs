//! tcptrace: who is hit by TCP resets, what the kernel saw, and why.
//!
//! Data flows one way: kernel programs -> ring buffer -> `reader` ->
//! `decode` -> `enrich` -> aggregation / sinks. Each subcommand lives in
//! its own module; `cli` only parses and dispatches.

pub mod cli;
pub mod error;
pub mod stress;
pub mod trace;
