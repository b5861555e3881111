//! tcptrace: who is hit by TCP resets, what the kernel saw, and why.
//!
//! Data flows one way: kernel programs -> ring buffer -> `tracer`
//! (`decode`) -> `session` -> aggregation (`aggregate`, `summary`) /
//! `sink`s. Layers import downwards only:
//!
//! - `app` (entry, dispatch) and `cli` (clap types, a leaf);
//! - commands, one module each, never importing one another: `trace`,
//!   `top`, `diagnose`, `snapshot`, `stress`, `tune`, `exporter` (+ `filter_args`,
//!   their shared tracing flags);
//! - the pipeline: `session` (the one lifecycle), `stop` (the one stop
//!   signal), `tracer` (with `tc`, its TC programs' attachment),
//!   `decode`, `aggregate`, `summary`, `tally` (counts per owner, peer
//!   and signal for the exporter), `sink`, `recorder` (pcapng),
//!   `html_report` (the report as a page, from plain data),
//!   `ranking` (what `top` shows and prints, from an aggregate),
//!   `diagnosis` (the rules: host facts and an aggregate in, findings
//!   out; `diagnose` and the exporter both run them);
//! - facts: `host` (what is read from the host), `kernel` (what is
//!   learnt from the running kernel), `event` and `counts` (plain data),
//!   `origin` (who sent a received RST, from its packets),
//!   `timefmt`, `text_table`, `error`, `safe_file` (every file we write).

#![warn(missing_docs)]

pub mod aggregate;
pub mod app;
pub mod cli;
pub mod counts;
pub mod decode;
pub mod diagnose;
pub mod diagnosis;
pub mod error;
pub mod event;
pub mod exporter;
pub mod filter_args;
pub mod host;
pub mod html_report;
pub mod kernel;
pub mod origin;
pub mod ranking;
pub mod record;
pub mod recorder;
pub mod replay;
pub mod safe_file;
pub mod session;
pub mod sink;
pub mod snapshot;
pub mod stop;
pub mod stress;
pub mod summary;
pub mod tally;
pub mod tc;
pub mod text_table;
pub mod timefmt;
pub mod top;
pub mod trace;
pub mod tracer;
pub mod tune;
