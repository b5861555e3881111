//! Host-wide TCP limits and usage, read where they live: the initial
//! network namespace.
//!
//! `net.ipv4.tcp_max_orphans` and `net.ipv4.tcp_mem` have no
//! per-namespace copy: the kernel registers them in the initial namespace
//! only, so inside any other one they do not exist. The TCP `orphan`,
//! `alloc` and `mem` figures of /proc/net/sockstat are host-wide counters
//! too (only `inuse` and `tw` are per namespace). When the reader sits in
//! another namespace (`--netns`), a helper thread enters the initial
//! namespace to read them, so the rest of the process stays where it was.
//! The initial namespace is pid 1's or, where pid 1 is out of reach (an
//! init holding capabilities we lack makes its /proc/1/ns refuse even
//! root), kthreadd's: kernel threads always live in it.

use std::{
    fmt, fs,
    io::{self, ErrorKind},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum GlobalError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot enter the initial network namespace: {0}")]
    Enter(#[source] io::Error),
}

/// Host-wide TCP limits and usage at one moment. A field is `None` when
/// it could not be read (a kernel without it, or a reader that is not
/// root and sits in another namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostGlobal {
    /// Orphaned sockets (closed by their process, still finishing in TCP)
    /// the host keeps before resetting new ones
    /// (`net.ipv4.tcp_max_orphans`; over it: "too many orphaned sockets"
    /// and `TcpExtTCPAbortOnMemory`).
    pub tcp_max_orphans: Option<u64>,
    /// `net.ipv4.tcp_mem` in pages: below `low` no pressure, from
    /// `pressure` on TCP shrinks buffers, at `high` it refuses memory
    /// (and resets orphans).
    pub tcp_mem: Option<TcpMem>,
    /// Orphaned TCP sockets now, host-wide (sockstat `TCP: orphan`).
    pub orphans: Option<u64>,
    /// TCP sockets allocated now, host-wide (sockstat `TCP: alloc`).
    pub sockets_allocated: Option<u64>,
    /// Memory TCP uses now, host-wide, in pages (sockstat `TCP: mem`),
    /// to compare with `tcp_mem`.
    pub tcp_mem_pages: Option<u64>,
}

/// `net.ipv4.tcp_mem`, in pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TcpMem {
    pub low: u64,
    pub pressure: u64,
    pub high: u64,
}

impl HostGlobal {
    /// Reads the initial namespace's values, from whichever namespace the
    /// calling thread is in.
    pub fn read() -> Result<HostGlobal, GlobalError> {
        let here = fs::metadata("/proc/thread-self/ns/net");
        let init = init_netns();
        let elsewhere = match (&here, &init) {
            (Ok(here), Some((_, init))) => here.dev() != init.dev() || here.ino() != init.ino(),
            // Not root: the initial namespace is out of sight, and so is
            // entering it. Read here: sockstat's figures are host-wide in
            // every namespace; the sysctls exist only if here is the
            // initial namespace.
            _ => false,
        };
        let Some((init_path, _)) = init.filter(|_| elsewhere) else {
            return Self::read_here();
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(&init_path)?;
                Self::read_here()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(GlobalError::Enter(io::Error::other(
                    "reading thread panicked",
                )))
            })
        })
    }

    fn read_here() -> Result<HostGlobal, GlobalError> {
        Self::read_from(
            Path::new("/proc/thread-self/net"),
            Path::new("/proc/sys/net/ipv4"),
        )
    }

    /// Reads `sockstat` under a directory shaped like /proc/net and
    /// `tcp_max_orphans`, `tcp_mem` under one shaped like
    /// /proc/sys/net/ipv4.
    pub fn read_from(proc_net: &Path, ipv4: &Path) -> Result<HostGlobal, GlobalError> {
        let tcp = read_optional(&proc_net.join("sockstat"))?
            .map(|text| tcp_sockstat(&text))
            .unwrap_or_default();
        let field = |name: &str| {
            tcp.iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| u64::try_from(*v).ok())
        };
        let tcp_mem = read_optional(&ipv4.join("tcp_mem"))?.and_then(|text| {
            let mut pages = text.split_whitespace().map(|v| v.parse::<u64>().ok());
            Some(TcpMem {
                low: pages.next()??,
                pressure: pages.next()??,
                high: pages.next()??,
            })
        });
        let tcp_max_orphans =
            read_optional(&ipv4.join("tcp_max_orphans"))?.and_then(|text| text.trim().parse().ok());
        Ok(HostGlobal {
            tcp_max_orphans,
            tcp_mem,
            orphans: field("orphan"),
            sockets_allocated: field("alloc"),
            tcp_mem_pages: field("mem"),
        })
    }
}

/// `host-wide: 3 TCP orphans of 131072 allowed; TCP memory 20 pages (pressure at 383866, high 575796)`
impl fmt::Display for HostGlobal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: Option<u64>| v.map_or_else(|| "?".into(), |v| v.to_string());
        write!(
            f,
            "host-wide: {} TCP orphans of {} allowed (tcp_max_orphans), {} TCP sockets allocated; TCP memory {} pages",
            opt(self.orphans),
            opt(self.tcp_max_orphans),
            opt(self.sockets_allocated),
            opt(self.tcp_mem_pages),
        )?;
        match self.tcp_mem {
            Some(m) => write!(
                f,
                " (tcp_mem: pressure from {}, refused at {})",
                m.pressure, m.high
            ),
            None => f.write_str(" (tcp_mem unknown)"),
        }
    }
}

/// The `TCP:` line of sockstat as (name, value) pairs.
fn tcp_sockstat(text: &str) -> Vec<(String, i64)> {
    let Some(rest) = text.lines().find_map(|l| l.strip_prefix("TCP:")) else {
        return Vec::new();
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    words
        .chunks_exact(2)
        .filter_map(|pair| Some((pair[0].to_string(), pair[1].parse().ok()?)))
        .collect()
}

fn read_optional(path: &Path) -> Result<Option<String>, GlobalError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(GlobalError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A path to the initial network namespace and its metadata: pid 1's,
/// else kthreadd's, if we may look.
fn init_netns() -> Option<(PathBuf, fs::Metadata)> {
    let pid1 = Path::new("/proc/1/ns/net");
    if let Ok(meta) = fs::metadata(pid1) {
        return Some((pid1.to_path_buf(), meta));
    }
    let kthreadd = Path::new("/proc/2/ns/net");
    if !is_kthreadd(Path::new("/proc/2/status")) {
        return None;
    }
    let meta = fs::metadata(kthreadd).ok()?;
    Some((kthreadd.to_path_buf(), meta))
}

/// Whether a /proc/PID/status describes kthreadd (in a container's pid
/// namespace, pid 2 is an ordinary process).
fn is_kthreadd(status: &Path) -> bool {
    let Ok(text) = fs::read_to_string(status) else {
        return false;
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    field("PPid:") == Some("0")
        && (field("Kthread:") == Some("1") || field("Name:") == Some("kthreadd"))
}

/// Moves the calling thread (only it) into the network namespace at `path`.
fn enter(path: &Path) -> Result<(), GlobalError> {
    let file = fs::File::open(path).map_err(GlobalError::Enter)?;
    // SAFETY: setns(2) only reads the descriptor, open for the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(GlobalError::Enter(io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_tcp_sockstat_line_and_the_sysctls() {
        let dir = std::env::temp_dir().join(format!("tcptrace-global-{}", std::process::id()));
        let net = dir.join("net");
        let ipv4 = dir.join("ipv4");
        fs::create_dir_all(&net).unwrap();
        fs::create_dir_all(&ipv4).unwrap();
        // Captured on this host (6.18).
        fs::write(
            net.join("sockstat"),
            "sockets: used 0\nTCP: inuse 0 orphan 2 tw 0 alloc 7 mem 20\nUDP: inuse 0 mem 3\n",
        )
        .unwrap();
        fs::write(ipv4.join("tcp_mem"), "287898\t383866\t575796\n").unwrap();
        fs::write(ipv4.join("tcp_max_orphans"), "131072\n").unwrap();
        let global = HostGlobal::read_from(&net, &ipv4).unwrap();
        assert_eq!(
            global,
            HostGlobal {
                tcp_max_orphans: Some(131_072),
                tcp_mem: Some(TcpMem {
                    low: 287_898,
                    pressure: 383_866,
                    high: 575_796
                }),
                orphans: Some(2),
                sockets_allocated: Some(7),
                tcp_mem_pages: Some(20),
            }
        );
        let text = global.to_string();
        assert!(text.contains("2 TCP orphans of 131072 allowed"), "{text}");
        assert!(
            text.contains("TCP memory 20 pages (tcp_mem: pressure from 383866, refused at 575796)"),
            "{text}"
        );

        // Inside a namespace other than the initial one the sysctls do not
        // exist: unknown, not an error.
        fs::remove_file(ipv4.join("tcp_mem")).unwrap();
        fs::remove_file(ipv4.join("tcp_max_orphans")).unwrap();
        let global = HostGlobal::read_from(&net, &ipv4).unwrap();
        assert_eq!((global.tcp_mem, global.tcp_max_orphans), (None, None));
        assert!(global.to_string().contains("tcp_mem unknown"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_the_host() {
        let global = HostGlobal::read().unwrap();
        assert!(global.tcp_mem_pages.is_some(), "{global:?}");
        // The test runs in the initial namespace, or as root: either way
        // the sysctls are found.
        if init_netns().is_some() {
            assert!(
                global.tcp_mem.is_some() && global.tcp_max_orphans.is_some(),
                "{global:?}"
            );
        }
    }

    #[test]
    fn kthreadd_is_recognised() {
        assert!(is_kthreadd(Path::new("/proc/2/status")) || !Path::new("/proc/2").exists());
        assert!(!is_kthreadd(Path::new("/proc/self/status")));
    }
}
