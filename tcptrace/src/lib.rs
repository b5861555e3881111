//! tcptrace: who is hit by TCP resets, what the kernel saw, and why.
//!
//! Data flows one way: kernel programs -> ring buffer -> `tracer`
//! (`decode`) -> `session` -> aggregation (`aggregate`, `summary`) /
//! `sink`s. Layers import downwards only:
//!
//! - `app` (entry, dispatch) and `cli` (clap types, a leaf);
//! - commands, one module each, never importing one another: `trace`,
//!   `top`, `diagnose`, `snapshot`, `stress`, `tune` (+ `filter_args`,
//!   their shared tracing flags);
//! - the pipeline: `session` (the one lifecycle), `stop` (the one stop
//!   signal), `tracer`, `decode`, `aggregate`, `summary`, `sink`;
//! - facts: `host` (what is read from the host), `kernel` (what is
//!   learnt from the running kernel), `event` and `counts` (plain data),
//!   `timefmt`, `text_table`, `error`, `safe_file` (every file we write).

#![warn(missing_docs)]

pub mod aggregate;
pub mod app;
pub mod cli;
pub mod counts;
pub mod decode;
pub mod diagnose;
pub mod error;
pub mod event;
pub mod filter_args;
pub mod host;
pub mod kernel;
pub mod record;
pub mod replay;
pub mod safe_file;
pub mod session;
pub mod sink;
pub mod snapshot;
pub mod stop;
pub mod stress;
pub mod summary;
pub mod text_table;
pub mod timefmt;
pub mod top;
pub mod trace;
pub mod tracer;
pub mod tune;
