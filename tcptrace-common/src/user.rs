//! Userspace additions: `aya::Pod` so the records can live in maps.

use crate::{
    Config, ConnKey, Event, FlightPayload, FlightRing, FlowKey, ListenKey, OpenKey, Owner,
    PeerProfile, SockInfo, WatchedFlowKey,
};

// SAFETY: all are #[repr(C)], contain only integers and arrays of
// integers, and have explicit padding, so every bit pattern is valid.
unsafe impl aya::Pod for Config {}
unsafe impl aya::Pod for Event {}
unsafe impl aya::Pod for ListenKey {}
unsafe impl aya::Pod for Owner {}
unsafe impl aya::Pod for SockInfo {}
unsafe impl aya::Pod for ConnKey {}
unsafe impl aya::Pod for FlowKey {}
unsafe impl aya::Pod for WatchedFlowKey {}
unsafe impl aya::Pod for PeerProfile {}
unsafe impl aya::Pod for FlightRing {}
unsafe impl aya::Pod for FlightPayload {}
unsafe impl aya::Pod for OpenKey {}
