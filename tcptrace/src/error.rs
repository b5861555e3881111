//! Library errors: one enum, messages that name the program, map or
//! file, the underlying error kept as the source (never flattened into
//! a string), so `app` can print the whole chain on one line.

use std::io;

use crate::host::netns::NetnsError;

/// What can go wrong starting or running the tracer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither root nor CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN).
    #[error(
        "loading the kernel programs needs root (or CAP_BPF and CAP_PERFMON); run it with sudo"
    )]
    NotRoot,
    /// A flag's value the tracer cannot use.
    #[error("{0}")]
    Usage(String),
    /// Something this kernel lacks or refuses, said in a sentence.
    #[error("{0}")]
    Kernel(String),
    /// `--netns` could not be resolved.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The embedded eBPF object did not load (maps created, BTF relocated).
    #[error("loading the eBPF object failed")]
    Load(#[source] Box<aya::EbpfError>),
    /// The ring buffer could not be created or mapped: the address-space
    /// or locked-memory limits are too small for its size.
    #[error("cannot {step} the {kib} KiB ring buffer; try a smaller --ring-kib")]
    RingBuffer {
        /// `create` (the map) or `map` (into our memory).
        step: &'static str,
        /// The size asked for (`--ring-kib`).
        kib: u32,
        /// What the kernel said (the errno).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The eBPF object lacks a map this binary expects (a build mismatch).
    #[error("map {0} missing from the eBPF object")]
    MissingMap(&'static str),
    /// Reading or writing one of the programs' maps failed.
    #[error("map {name}")]
    Map {
        /// The map, as named in `tcptrace_common::map`.
        name: &'static str,
        /// What aya reported.
        #[source]
        source: aya::maps::MapError,
    },
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. `watching the ring buffer`.
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// `Result` with the library's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
