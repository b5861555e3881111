//! One reading of what a network namespace's host side says, for a
//! before/after comparison (`diagnose`): the kernel counters, chosen
//! sysctls and the TCP socket table. Counters, `net.*` sysctls and
//! sockets are all per namespace, so they are read by a thread inside it
//! (see `netns::run_in`).

use std::{collections::BTreeMap, path::Path};

use super::{
    conntrack::Conntrack,
    counters::{CounterError, Counters},
    global::HostGlobal,
    icmp,
    netns::{self, NetnsError},
    sock_diag::{TcpSocket, dump_tcp},
    sysctl::{ProcSys, SysctlBackend as _},
};

/// One reading of everything that changes or matters over a run.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// Every counter of /proc/net/netstat and /proc/net/snmp.
    pub counters: Counters,
    /// The sysctls asked for, by key; keys this kernel lacks are absent.
    pub sysctls: BTreeMap<String, String>,
    /// Every TCP socket; `None` when sock_diag failed (the reason is logged).
    pub sockets: Option<Vec<TcpSocket>>,
    /// The namespace's conntrack; `None` when it could not be read (logged).
    pub conntrack: Option<Conntrack>,
    /// Host-wide limits and usage, from the initial namespace; `None` when
    /// they could not be read (logged).
    pub host_global: Option<HostGlobal>,
}

/// Why a reading failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadingError {
    /// The namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The counters could not be read.
    #[error(transparent)]
    Counters(#[from] CounterError),
}

/// /proc/net/snmp fields that are settings, not counters.
const CONSTANTS: [&str; 4] = ["TcpRtoAlgorithm", "TcpRtoMin", "TcpRtoMax", "TcpMaxConn"];

/// Whether `tcp_delta` keeps the counter with this nstat name: the TCP
/// ones, and the ICMP ones that say something about TCP.
pub fn is_tcp_counter(name: &str) -> bool {
    name.starts_with("Tcp") || icmp::matters(name)
}

/// TCP and ICMP counter changes from `before` to `after`, by nstat name
/// (the ones `diagnose` reads). Without `before` (a namespace created
/// during the run, whose counters started at zero) the values themselves.
pub fn tcp_delta(after: &Counters, before: Option<&Counters>) -> BTreeMap<String, i64> {
    let matters = is_tcp_counter;
    match before {
        Some(before) => after
            .delta(before)
            .iter()
            .filter(|(k, _)| matters(k))
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        // Settings shown as counters (`TcpRtoMin` 200...) did not change.
        None => after
            .iter()
            .filter(|(k, _)| matters(k) && !CONSTANTS.contains(k))
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
}

/// Reads counters, the `sysctls` and the sockets inside the namespace at
/// `netns`, or in our own.
///
/// # Errors
/// When the namespace cannot be entered or the counters cannot be read.
pub fn read(netns: Option<&Path>, sysctls: &[&str]) -> Result<Reading, ReadingError> {
    netns::run_in(netns, || {
        let counters = Counters::read()?;
        let sysctls = sysctls
            .iter()
            .filter_map(|key| Some((key.to_string(), ProcSys.read(key).ok()?)))
            .collect();
        let sockets = match dump_tcp() {
            Ok(sockets) => Some(sockets),
            Err(err) => {
                log::warn!("no socket table: {err}");
                None
            }
        };
        let conntrack = Conntrack::read()
            .inspect_err(|err| log::warn!("no conntrack figures: {err}"))
            .ok();
        let host_global = HostGlobal::read()
            .inspect_err(|err| log::warn!("no host-wide TCP figures: {err}"))
            .ok();
        Ok(Reading {
            counters,
            sysctls,
            sockets,
            conntrack,
            host_global,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_namespace() {
        let r = read(None, &["net.core.somaxconn"]).unwrap();
        assert!(r.sysctls.contains_key("net.core.somaxconn"));
        assert!(r.counters.get("TcpExtListenOverflows").is_some());
        assert!(read(Some(Path::new("/run/netns/tcptrace-no-such-netns")), &[]).is_err());
    }
}
