//! Reads the host facts inside the watched network namespace (counters,
//! net.* sysctls and socket tables are all per namespace), with the
//! counters, sysctl and sock_diag modules `snapshot` uses.
//!
//! A thread of our own enters the namespace and reads through
//! /proc/thread-self and a netlink socket it opens there, so the rest of
//! the process stays where it was.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    net::SocketAddr,
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
};

use super::facts::{Listener, SYSCTLS, SocketFacts};
use crate::{
    counters::Counters,
    host::{conntrack::Conntrack, global::HostGlobal, icmp},
    netns,
    snapshot::{TcpSocket, TcpState, dump_tcp},
    sysctl::{ProcSys, SysctlBackend as _},
};

/// One reading of everything that changes or matters over a run.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub counters: Counters,
    pub sysctls: BTreeMap<String, String>,
    /// `None` when sock_diag failed (the reason is logged).
    pub sockets: Option<SocketFacts>,
    /// The namespace's conntrack; `None` when it could not be read (logged).
    pub conntrack: Option<Conntrack>,
    /// Host-wide limits and usage, from the initial namespace; `None` when
    /// they could not be read (logged).
    pub host_global: Option<HostGlobal>,
}

impl Reading {
    /// TCP and ICMP counter changes from `before` to `self`, by nstat
    /// name (the other IP/UDP ones say nothing about TCP and only add
    /// noise; ICMP unreachable / too big and failed fragmentation do).
    pub fn counter_delta(&self, before: &Reading) -> BTreeMap<String, i64> {
        self.counters
            .delta(&before.counters)
            .iter()
            .filter(|(k, _)| k.starts_with("Tcp") || icmp::matters(k))
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
}

/// Reads counters, sysctls and sockets in namespace `netns` (a name under
/// /run/netns, a path, or an inode number), or in our own.
pub fn read(netns: Option<&str>) -> anyhow::Result<Reading> {
    let path = netns.map(netns_path).transpose()?;
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(path) = &path {
                netns::enter(&path.to_string_lossy())?;
            }
            read_here()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("reading host facts: thread panicked"))?
    })
}

fn read_here() -> anyhow::Result<Reading> {
    let counters = Counters::read()?;
    let sysctls = SYSCTLS
        .iter()
        .filter_map(|key| Some((key.to_string(), ProcSys.read(key).ok()?)))
        .collect();
    let sockets = match dump_tcp() {
        Ok(sockets) => Some(summarize(&sockets)),
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
}

/// The path of a namespace given as a name, a path or an inode.
pub fn netns_path(spec: &str) -> anyhow::Result<PathBuf> {
    if let Ok(inode) = spec.parse::<u64>() {
        return find_netns_by_inode(inode).ok_or_else(|| {
            anyhow::anyhow!("--netns {spec}: no process or /run/netns entry has that namespace")
        });
    }
    Ok(netns::path_of(spec))
}

/// A path to the namespace with this inode: a bind mount under
/// /run/netns, else some process living in it.
fn find_netns_by_inode(inode: u64) -> Option<PathBuf> {
    let named = fs::read_dir("/run/netns").into_iter().flatten().flatten();
    let processes = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .map(|e| e.path().join("ns/net"));
    named
        .map(|e| e.path())
        .chain(processes)
        .find(|p| fs::metadata(p).is_ok_and(|m| m.ino() == inode))
}

pub fn summarize(sockets: &[TcpSocket]) -> SocketFacts {
    let mut facts = SocketFacts::default();
    let mut time_wait: HashMap<SocketAddr, u64> = HashMap::new();
    for s in sockets {
        *facts.states.entry(s.state.name().to_string()).or_default() += 1;
        match s.state {
            TcpState::TimeWait => {
                let remote = SocketAddr::new(s.remote.ip().to_canonical(), s.remote.port());
                *time_wait.entry(remote).or_default() += 1;
            }
            TcpState::Listen => facts.listeners.push(Listener {
                local: s.local,
                queued: s.recv_q,
                limit: Some(s.send_q),
            }),
            _ => {}
        }
    }
    let mut by_peer: Vec<_> = time_wait.into_iter().collect();
    by_peer.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    by_peer.truncate(10);
    facts.time_wait_by_peer = by_peer;
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(state: TcpState, local: &str, remote: &str, recv_q: u32, send_q: u32) -> TcpSocket {
        TcpSocket {
            state,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            recv_q,
            send_q,
            inode: 0,
            uid: 0,
            info: None,
        }
    }

    #[test]
    fn socket_tables_reduce_to_what_the_rules_use() {
        let facts = summarize(&[
            socket(TcpState::Listen, "127.0.0.1:8080", "0.0.0.0:0", 3, 1),
            socket(
                TcpState::TimeWait,
                "198.18.0.1:40000",
                "198.18.0.2:8000",
                0,
                0,
            ),
            socket(
                TcpState::TimeWait,
                "[::ffff:198.18.0.1]:40001",
                "[::ffff:198.18.0.2]:8000",
                0,
                0,
            ),
            socket(TcpState::Established, "127.0.0.1:1", "127.0.0.1:2", 0, 0),
        ]);
        assert_eq!(facts.in_state("TIME_WAIT"), 2);
        assert_eq!(
            facts.time_wait_by_peer,
            vec![("198.18.0.2:8000".parse().unwrap(), 2)]
        );
        assert_eq!(
            facts.listeners,
            vec![Listener {
                local: "127.0.0.1:8080".parse().unwrap(),
                queued: 3,
                limit: Some(1)
            }]
        );
    }

    #[test]
    fn reads_our_own_namespace() {
        let r = read(None).unwrap();
        assert!(r.sysctls.contains_key("net.core.somaxconn"));
        assert!(r.counters.get("TcpExtListenOverflows").is_some());
        assert!(read(Some("tcptrace-no-such-netns")).is_err());
    }
}
