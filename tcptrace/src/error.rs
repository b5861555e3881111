//! Library errors: one enum, messages that name the program or map.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "tcptrace needs root (or CAP_BPF and CAP_PERFMON) to load its kernel programs; run it with sudo"
    )]
    NotRoot,
    #[error("{0}")]
    Usage(String),
    /// Something this kernel lacks or refuses.
    #[error("{0}")]
    Kernel(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
