//! Userspace additions: `aya::Pod` so the records can live in maps.

use crate::{Config, ConnKey, Event, ListenKey, OpenKey, Owner, SockInfo};

// SAFETY: all are #[repr(C)], contain only integers and arrays of
// integers, and have explicit padding, so every bit pattern is valid.
unsafe impl aya::Pod for Config {}
unsafe impl aya::Pod for Event {}
unsafe impl aya::Pod for ListenKey {}
unsafe impl aya::Pod for Owner {}
unsafe impl aya::Pod for SockInfo {}
unsafe impl aya::Pod for ConnKey {}
unsafe impl aya::Pod for OpenKey {}
