//! What userspace learns from the running kernel before the programs
//! attach: where tracefs is, tracepoint layouts and enum names, struct
//! member offsets from BTF, the jiffies rate, and the verifier's verdicts.

pub mod btf;
pub mod clock;
pub mod errno;
pub mod format;
pub mod names;
pub mod proginfo;
pub mod tracefs;
pub mod verifier;
