//! Sockets that existed before the tracer attached. The kernel programs
//! learn owners where a process connects, listens or accepts; a server
//! that listened, or a client pool that connected, before tcptrace
//! started would otherwise stay "owner unknown" (and in an incident it
//! always did start first). So once the programs are attached, one
//! sock_diag dump per network namespace plus one /proc fd scan name the
//! owners of what is already open; they go into the kernel's LISTENERS
//! and PREEXISTING maps, where the programs find them (so the in-kernel
//! pid/comm filters see these owners too).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use tcptrace_common::{ConnKey, ListenKey, Owner};

use super::{
    cgroups::cgroup_id_of,
    netns::{self, NetnsError},
    owners::socket_owners,
    sock_diag::{SockDiagError, TcpState, dump_tcp},
};

/// Namespaces scanned at most (one thread each, one after the other).
const MAX_NAMESPACES: usize = 256;

/// Owners of the sockets open before tracing, keyed as the kernel
/// programs look them up.
#[derive(Debug, Default)]
pub struct Preexisting {
    /// Listening sockets: `(netns, port)` -> owner (the `LISTENERS` map).
    pub listeners: Vec<(ListenKey, Owner)>,
    /// Connections, under every key form the programs may build (see
    /// `conn_keys`) -> owner (the `PREEXISTING` map).
    pub connections: Vec<(ConnKey, Owner)>,
}

/// Why one namespace's sockets could not be listed (skipped, logged).
#[derive(Debug, thiserror::Error)]
enum ScanError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    SockDiag(#[from] SockDiagError),
}

impl Preexisting {
    /// Scans `netns` only, or every network namespace a process is in.
    /// Best effort: a namespace or process that vanishes is skipped.
    pub fn scan(netns: Option<u32>) -> Preexisting {
        let owners = socket_owners();
        let mut found = Preexisting::default();
        let mut cgroups = HashMap::new();
        for (inode, path) in namespaces(netns) {
            let sockets = match netns::run_in(Some(&path), || Ok::<_, ScanError>(dump_tcp()?)) {
                Ok(sockets) => sockets,
                Err(err) => {
                    log::debug!("pre-existing sockets in {}: {err}", path.display());
                    continue;
                }
            };
            for socket in sockets {
                let Some(who) = owners.get(&socket.inode) else {
                    continue;
                };
                let cgroup_id = *cgroups
                    .entry(who.pid)
                    .or_insert_with(|| cgroup_id_of(who.pid).unwrap_or(0));
                let mut owner = Owner {
                    tgid: who.pid,
                    pid: who.pid,
                    cgroup_id,
                    comm: [0; 16],
                };
                let comm = who.comm.as_bytes();
                owner.comm[..comm.len().min(15)].copy_from_slice(&comm[..comm.len().min(15)]);
                if socket.state == TcpState::Listen {
                    found
                        .listeners
                        .push((ListenKey::new(inode, socket.local.port()), owner));
                } else {
                    found
                        .connections
                        .extend(conn_keys(inode, socket.local, socket.remote).map(|k| (k, owner)));
                }
            }
        }
        found
    }
}

/// The keys the programs may build for a connection: an IPv4 connection
/// appears as AF_INET (4 address bytes) or, on a dual-stack socket, as
/// v4-mapped IPv6, and sock_diag may report either.
fn conn_keys(netns: u32, local: SocketAddr, remote: SocketAddr) -> impl Iterator<Item = ConnKey> {
    let key = |saddr: [u8; 16], daddr: [u8; 16]| ConnKey {
        netns,
        sport: local.port(),
        dport: remote.port(),
        saddr,
        daddr,
    };
    let v4 = |ip: IpAddr| match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&v4.octets());
            Some(bytes)
        }
        IpAddr::V6(_) => None,
    };
    let v6 = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let plain = v4(local.ip()).zip(v4(remote.ip())).map(|(s, d)| key(s, d));
    [plain, Some(key(v6(local.ip()), v6(remote.ip())))]
        .into_iter()
        .flatten()
}

/// (inode, a path that opens it) of `only`, or of every network
/// namespace in use.
fn namespaces(only: Option<u32>) -> Vec<(u32, PathBuf)> {
    let mut found = netns::in_use(usize::MAX);
    found.retain(|(inode, _)| only.is_none_or(|o| o == *inode));
    found.truncate(MAX_NAMESPACES);
    found
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        net::{TcpListener, TcpStream},
        os::unix::fs::MetadataExt as _,
    };

    use super::*;

    /// Needs no root: our own sockets in our own namespace.
    #[test]
    fn finds_our_own_listener_and_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let here = fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
        let found = Preexisting::scan(Some(here));
        let me = std::process::id();
        let port = listener.local_addr().unwrap().port();
        assert!(
            found
                .listeners
                .iter()
                .any(|(k, o)| k.netns == here && k.port == port && o.tgid == me)
        );
        let mut expected = ConnKey {
            netns: here,
            sport: client.local_addr().unwrap().port(),
            dport: port,
            ..Default::default()
        };
        expected.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        expected.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert!(
            found
                .connections
                .iter()
                .any(|(k, o)| *k == expected && o.tgid == me)
        );
    }

    #[test]
    fn ipv4_connections_get_both_key_forms() {
        let keys: Vec<ConnKey> = conn_keys(
            1,
            "10.0.0.1:5".parse().unwrap(),
            "[::ffff:10.0.0.2]:80".parse().unwrap(),
        )
        .collect();
        assert_eq!(keys.len(), 2);
        assert_eq!(&keys[0].daddr[..4], &[10, 0, 0, 2]);
        assert_eq!(
            keys[1].daddr,
            "::ffff:10.0.0.2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        let v6: Vec<ConnKey> = conn_keys(
            1,
            "[2001:db8::1]:5".parse().unwrap(),
            "[2001:db8::2]:80".parse().unwrap(),
        )
        .collect();
        assert_eq!(v6.len(), 1);
    }
}
