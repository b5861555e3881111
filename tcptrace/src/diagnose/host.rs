//! Reads the host facts from /proc, inside the watched network namespace
//! (counters, net.* sysctls and socket tables are all per namespace).
//!
//! A thread of our own enters the namespace and reads through
//! /proc/thread-self, so the rest of the process stays where it was.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use super::facts::{Listener, SYSCTLS, SocketFacts};

/// One reading of everything that changes or matters over a run.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub counters: BTreeMap<String, i64>,
    pub sysctls: BTreeMap<String, String>,
    pub sockets: Option<SocketFacts>,
}

impl Reading {
    /// Counter changes from `before` to `self`.
    pub fn counter_delta(&self, before: &Reading) -> BTreeMap<String, i64> {
        self.counters
            .iter()
            .map(|(k, v)| {
                let was = before.counters.get(k).copied().unwrap_or(*v);
                (k.clone(), v.wrapping_sub(was))
            })
            .collect()
    }
}

/// Reads counters, sysctls and sockets in namespace `netns` (a name under
/// /run/netns, a path, or an inode number), or in our own.
pub fn read(netns: Option<&str>) -> Result<Reading, String> {
    let path = netns.map(netns_path).transpose()?;
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(path) = &path {
                enter(path)?;
            }
            Ok(read_here())
        })
        .join()
        .map_err(|_| "reading host facts: thread panicked".to_string())?
    })
}

fn read_here() -> Reading {
    let proc_net = Path::new("/proc/thread-self/net");
    let netstat = fs::read_to_string(proc_net.join("netstat")).unwrap_or_default();
    let snmp = fs::read_to_string(proc_net.join("snmp")).unwrap_or_default();
    let mut counters = parse_counters(&netstat, "TcpExt");
    counters.extend(parse_counters(&snmp, "Tcp"));
    let sysctls = SYSCTLS
        .iter()
        .filter_map(|key| {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            let value = fs::read_to_string(path).ok()?;
            Some((key.to_string(), value.trim().to_string()))
        })
        .collect();
    let mut sockets = Vec::new();
    let mut any = false;
    for file in ["tcp", "tcp6"] {
        if let Ok(text) = fs::read_to_string(proc_net.join(file)) {
            any = true;
            sockets.extend(parse_proc_tcp(&text));
        }
    }
    Reading {
        counters,
        sysctls,
        sockets: any.then(|| summarize(&sockets)),
    }
}

fn netns_path(spec: &str) -> Result<PathBuf, String> {
    if let Ok(inode) = spec.parse::<u64>() {
        return find_netns_by_inode(inode).ok_or_else(|| {
            format!("--netns {spec}: no process or /run/netns entry has that namespace")
        });
    }
    Ok(if spec.contains('/') {
        PathBuf::from(spec)
    } else {
        Path::new("/run/netns").join(spec)
    })
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

fn enter(path: &Path) -> Result<(), String> {
    let file = fs::File::open(path)
        .map_err(|e| format!("cannot open network namespace {}: {e}", path.display()))?;
    // SAFETY: setns reads the fd, which stays open for the call; only
    // this thread changes namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "cannot enter network namespace {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// `Prefix: name name ...` / `Prefix: value value ...` line pairs.
pub fn parse_counters(text: &str, prefix: &str) -> BTreeMap<String, i64> {
    let tag = format!("{prefix}:");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&tag)).collect();
    let mut out = BTreeMap::new();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        for (name, value) in names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
        {
            if let Ok(v) = value.parse::<i64>() {
                out.insert(name.to_string(), v);
            }
        }
    }
    out
}

/// One row of /proc/net/tcp{,6}.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSocket {
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub rx_queue: u32,
}

pub fn parse_proc_tcp(text: &str) -> Vec<ProcSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace().skip(1);
            let local = parse_addr(f.next()?)?;
            let remote = parse_addr(f.next()?)?;
            let state = u8::from_str_radix(f.next()?, 16).ok()?;
            let (_, rx) = f.next()?.split_once(':')?;
            Some(ProcSocket {
                state,
                local,
                remote,
                rx_queue: u32::from_str_radix(rx, 16).ok()?,
            })
        })
        .collect()
}

/// `0100007F:1F90` (v4) or 32 hex digits (v6), each 32-bit word in host
/// (little-endian) order, port in big-endian hex.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_le_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip.to_canonical(), port))
}

const STATE_NAMES: [&str; 13] = [
    "UNKNOWN",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];

pub fn summarize(sockets: &[ProcSocket]) -> SocketFacts {
    let mut facts = SocketFacts::default();
    let mut time_wait: HashMap<SocketAddr, u64> = HashMap::new();
    for s in sockets {
        let name = STATE_NAMES.get(usize::from(s.state)).unwrap_or(&"UNKNOWN");
        *facts.states.entry(name.to_string()).or_default() += 1;
        match s.state {
            6 => *time_wait.entry(s.remote).or_default() += 1,
            // /proc/net/tcp shows a listener's queue length but not its
            // limit; sock_diag (the snapshot module) has both.
            10 => facts.listeners.push(Listener {
                local: s.local,
                queued: s.rx_queue,
                limit: None,
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

    #[test]
    fn counters_from_netstat_and_snmp() {
        let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 12 13\nIpExt: InNoRoutes\nIpExt: 4\n";
        let c = parse_counters(netstat, "TcpExt");
        assert_eq!(c["ListenOverflows"], 12);
        assert_eq!(c["ListenDrops"], 13);
        assert!(!c.contains_key("InNoRoutes"));
        let snmp = "Tcp: RtoAlgorithm MaxConn EstabResets\nTcp: 1 -1 7\n";
        let c = parse_counters(snmp, "Tcp");
        assert_eq!((c["MaxConn"], c["EstabResets"]), (-1, 7));
    }

    #[test]
    fn proc_net_tcp_rows() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 0100007F:9C40 020012C6:1F40 06 00000000:00000000 03:00001234 00000000     0        0 0 3 0\n   2: 0100007F:9C41 020012C6:1F40 06 00000000:00000000 03:00001234 00000000     0        0 0 3 0\n";
        let rows = parse_proc_tcp(v4);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(rows[0].rx_queue, 3);
        assert_eq!(rows[1].remote, "198.18.0.2:8000".parse().unwrap());
        let facts = summarize(&rows);
        assert_eq!(facts.in_state("TIME_WAIT"), 2);
        assert_eq!(
            facts.time_wait_by_peer,
            vec![("198.18.0.2:8000".parse().unwrap(), 2)]
        );
        assert_eq!(facts.listeners[0].queued, 3);
        let v6 = "header\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1\n";
        let rows = parse_proc_tcp(v6);
        assert_eq!(rows[0].local, "[::1]:8080".parse().unwrap());
        assert_eq!(rows[1].remote, "127.0.0.1:50000".parse().unwrap());
    }

    #[test]
    fn reads_our_own_namespace() {
        let r = read(None).unwrap();
        assert!(r.sysctls.contains_key("net.core.somaxconn"));
        assert!(r.counters.contains_key("ListenOverflows"));
        assert!(read(Some("tcptrace-no-such-netns")).is_err());
    }
}
