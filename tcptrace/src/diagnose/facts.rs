//! What the host itself says, besides the events: kernel counter deltas,
//! the relevant sysctls and socket tables at the start and the end. Plain
//! data, so the rules can be tested without a kernel.

use std::{collections::BTreeMap, net::SocketAddr};

use serde::Serialize;

use crate::host::{conntrack::ConntrackChange, global::HostGlobal};

/// Sysctls the rules read and the report shows.
pub const SYSCTLS: [&str; 13] = [
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_abort_on_overflow",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_retries2",
    "net.ipv4.tcp_syn_retries",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_max_tw_buckets",
    "net.netfilter.nf_conntrack_max",
];

#[derive(Debug, Clone, Default, Serialize)]
pub struct HostFacts {
    /// Change of each kernel counter over the run, by nstat name
    /// (`TcpExtListenOverflows`, `TcpEstabResets`, ...).
    pub counters: BTreeMap<String, i64>,
    /// Values at the start, by sysctl key; absent keys are missing.
    pub sysctls: BTreeMap<String, String>,
    pub sockets_start: Option<SocketFacts>,
    pub sockets_end: Option<SocketFacts>,
    /// The namespace's conntrack at the start and the end; `None` when a
    /// reading failed.
    pub conntrack: Option<ConntrackChange>,
    /// Host-wide TCP limits and usage (initial namespace) at the start
    /// and the end.
    pub host_global_start: Option<HostGlobal>,
    pub host_global_end: Option<HostGlobal>,
}

impl HostFacts {
    pub fn counter(&self, name: &str) -> i64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    pub fn sysctl(&self, key: &str) -> Option<&str> {
        self.sysctls.get(key).map(String::as_str)
    }

    pub fn sysctl_u64(&self, key: &str) -> Option<u64> {
        self.sysctl(key)?.trim().parse().ok()
    }

    /// `net.ipv4.ip_local_port_range` as (low, high).
    pub fn port_range(&self) -> Option<(u32, u32)> {
        let text = self.sysctl("net.ipv4.ip_local_port_range")?;
        let mut parts = text.split_whitespace().map(|p| p.parse::<u32>().ok());
        Some((parts.next()??, parts.next()??))
    }

    /// The later socket table, else the earlier one.
    pub fn sockets(&self) -> Option<&SocketFacts> {
        self.sockets_end.as_ref().or(self.sockets_start.as_ref())
    }
}

/// A socket table reduced to what the rules use.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SocketFacts {
    /// Sockets by state name (`ESTABLISHED`, `TIME_WAIT`, ...).
    pub states: BTreeMap<String, u64>,
    /// TIME_WAIT sockets by remote endpoint, most first (top 10).
    pub time_wait_by_peer: Vec<(SocketAddr, u64)>,
    pub listeners: Vec<Listener>,
}

impl SocketFacts {
    pub fn in_state(&self, state: &str) -> u64 {
        self.states.get(state).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    pub local: SocketAddr,
    /// Connections waiting to be accepted.
    pub queued: u32,
    /// The queue limit, min(backlog, somaxconn), when known.
    pub limit: Option<u32>,
}
