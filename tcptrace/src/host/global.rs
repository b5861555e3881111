//! Host-wide TCP limits and usage, read where they live: the initial
//! network namespace.
//!
//! `net.ipv4.tcp_max_orphans` and `net.ipv4.tcp_mem` have no
//! per-namespace copy: the kernel registers them in the initial namespace
//! only, so inside any other one they do not exist. The TCP `orphan`,
//! `alloc` and `mem` figures of /proc/net/sockstat are host-wide counters
//! too (only `inuse` and `tw` are per namespace). When the reader sits in
//! another namespace (`--netns`), a helper thread enters the initial
//! namespace (`netns::initial`) to read them, through `netns::run_in`, so
//! the rest of the process stays where it was.

use std::{
    fmt, fs,
    io::{self, ErrorKind},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{
    netns::{self, NetnsError},
    sockstat,
};

/// Why the host-wide figures could not be read. Files this kernel or
/// namespace lacks are no error (the figure is `None`).
#[derive(Debug, thiserror::Error)]
pub enum GlobalError {
    /// A file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it returned.
        #[source]
        source: io::Error,
    },
    /// The initial network namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// Host-wide TCP limits and usage at one moment. A field is `None` when
/// it could not be read (a kernel without it, or a reader that is not
/// root and sits in another namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpMem {
    /// Below this, no memory pressure.
    pub low: u64,
    /// From this on, TCP is under pressure and shrinks buffers.
    pub pressure: u64,
    /// At this, TCP refuses memory (and resets orphans).
    pub high: u64,
}

impl HostGlobal {
    /// Reads the initial namespace's values, from whichever namespace the
    /// calling thread is in (a thread of its own enters the initial one
    /// when this one is another, see `netns::run_in`).
    ///
    /// # Errors
    /// A file that exists but cannot be read, or the initial namespace
    /// refusing setns(2).
    pub fn read() -> Result<HostGlobal, GlobalError> {
        // Not root: the initial namespace is out of sight, and so is
        // entering it. Read here: sockstat's figures are host-wide in
        // every namespace; the sysctls exist only if here is the initial
        // namespace.
        let elsewhere = netns::initial().filter(|init| !is_here(init));
        netns::run_in(elsewhere.as_deref(), Self::read_here)
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
    ///
    /// # Errors
    /// A file that exists but cannot be read.
    pub fn read_from(proc_net: &Path, ipv4: &Path) -> Result<HostGlobal, GlobalError> {
        let stats = read_optional(&proc_net.join("sockstat"))?
            .map(|text| sockstat::parse(&text))
            .unwrap_or_default();
        let tcp = stats.get("TCP");
        let field = |name: &str| {
            tcp.and_then(|fields| fields.get(name))
                .and_then(|v| u64::try_from(*v).ok())
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

/// Whether the namespace at `path` is the calling thread's.
fn is_here(path: &Path) -> bool {
    match (fs::metadata("/proc/thread-self/ns/net"), fs::metadata(path)) {
        (Ok(here), Ok(there)) => here.dev() == there.dev() && here.ino() == there.ino(),
        _ => false,
    }
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
        if netns::initial().is_some() {
            assert!(
                global.tcp_mem.is_some() && global.tcp_max_orphans.is_some(),
                "{global:?}"
            );
        }
    }
}
