//! Which process holds each socket: sock_diag reports an inode, and
//! `/proc/PID/fd/*` links read `socket:[INODE]`.
//!
//! Processes are those of our pid namespace, whatever network namespace
//! the sockets live in. A process that exits or closes its fds while we
//! scan is simply skipped.

use std::collections::HashMap;

use procfs::process::{FDTarget, all_processes};
use serde::{Deserialize, Serialize};

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Command name (`/proc/PID/stat`).
    pub comm: String,
}

/// Socket inode -> owner. A socket shared by several processes (inherited
/// across fork) goes to the lowest pid, normally the parent.
pub fn socket_owners() -> HashMap<u64, Owner> {
    let mut owners: HashMap<u64, Owner> = HashMap::new();
    let Ok(processes) = all_processes() else {
        return owners;
    };
    for process in processes.flatten() {
        let Ok(fds) = process.fd() else { continue };
        let mut comm = None;
        for fd in fds.flatten() {
            let FDTarget::Socket(inode) = fd.target else {
                continue;
            };
            let Ok(pid) = u32::try_from(process.pid()) else {
                continue;
            };
            let comm = comm
                .get_or_insert_with(|| process.stat().map(|stat| stat.comm).unwrap_or_default());
            owners
                .entry(inode)
                .and_modify(|owner| {
                    if pid < owner.pid {
                        *owner = Owner {
                            pid,
                            comm: comm.clone(),
                        };
                    }
                })
                .or_insert_with(|| Owner {
                    pid,
                    comm: comm.clone(),
                });
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn finds_our_own_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino();
        let owner = socket_owners()
            .remove(&inode)
            .expect("our socket has an owner");
        assert_eq!(owner.pid, std::process::id());
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(owner.comm, comm.trim_end());
    }
}
