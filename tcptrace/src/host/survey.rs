//! Every network namespace of the host, read lightly: its kernel counters
//! and its conntrack, by namespace inode (what events carry as `netns`).
//!
//! A connection's packets cross several namespaces on one host: a pod's
//! own, the node's that forwards, NATs and tracks them. Each namespace
//! has its own counters (`/proc/net/netstat`, `snmp`) and its own
//! conntrack table (`nf_conntrack_max` is the one host-wide limit every
//! table is held to), so a diagnosis quotes each figure from the
//! namespace it belongs to: the one the events came from, and the one
//! that dropped or reset the watched connections' packets. One reading
//! before the watch and one after give each namespace's changes.
//!
//! The readings run on one helper thread that enters each namespace in
//! turn (`netns::enter`): `/proc/thread-self/net` and
//! `/proc/sys/net/netfilter` then follow it. A namespace that vanishes
//! meanwhile is left out (logged at debug level): the host is live. Pods
//! come and go, and a new namespace may take over a deleted one's inode:
//! each reading keeps the namespace's cookie so the two are told apart.
//!
//! `diagnose` holds the namespaces it found at the start (`Held`): a pod
//! that died mid-incident is often the evidence, and the kernel keeps a
//! namespace, counters and conntrack included, while a file refers to it.
//! So the end reading still finds those deleted meanwhile, through the
//! hold, and marks them `deleted`.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{
    conntrack::Conntrack,
    counters::Counters,
    netns::{self, RUN_NETNS},
};

/// Namespaces read at most: a node with more pods than this is read in
/// part, and says so (`Survey::truncated`).
pub const MAX_NAMESPACES: usize = 256;

/// One namespace's counters and conntrack at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceReading {
    /// How a person finds it: the `ip netns` name, `host` for the initial
    /// namespace, else `pid N (comm)` of a process inside it.
    pub name: String,
    /// Every counter of its /proc/net/netstat, snmp and snmp6.
    pub counters: Counters,
    /// Its conntrack; `None` when it could not be read (logged).
    pub conntrack: Option<Conntrack>,
    /// Its cookie ([`netns::cookie`]): tells a namespace from a newer one
    /// that took over its inode between two readings. `None` before 5.14.
    pub cookie: Option<u64>,
    /// No process or /run/netns name used it any more: it was read
    /// through a [`Held`] file, so it was deleted after the hold began.
    #[serde(default)]
    pub deleted: bool,
}

/// Network namespaces held open by this process, with the names they had
/// then. While held, a namespace outlives `ip netns del` and the exit of
/// its last process (its sockets close as usual; the namespace and its
/// counters stay), and its inode is not reused. Dropping the hold frees
/// them. Best effort: one that vanishes before it is opened is skipped.
#[derive(Debug, Default)]
pub struct Held {
    /// (inode, name when held, the open namespace file).
    open: Vec<(u32, String, File)>,
}

impl Held {
    /// Holds every namespace in use now (at most `MAX_NAMESPACES`), on top
    /// of those already held.
    pub fn hold_in_use(&mut self) {
        for (inode, path) in netns::in_use(MAX_NAMESPACES) {
            if let Err(err) = self.hold(inode, &path) {
                log::debug!("namespace {inode} not held: {err}");
            }
        }
    }

    /// Holds the namespace at `path`, whose inode is `inode`.
    ///
    /// # Errors
    /// It cannot be opened, or is no longer that inode.
    pub fn hold(&mut self, inode: u32, path: &Path) -> std::io::Result<()> {
        if self.path_of(inode).is_some() {
            return Ok(());
        }
        let file = File::open(path)?;
        if file.metadata()?.ino() != u64::from(inode) {
            return Err(std::io::Error::other("replaced by another namespace"));
        }
        let name = name_of(path);
        self.open.push((inode, name, file));
        Ok(())
    }

    /// A path that opens the held namespace with this inode as its
    /// original path did, also once that is gone: /proc/self/fd/N.
    pub fn path_of(&self, inode: u32) -> Option<PathBuf> {
        self.open
            .iter()
            .find(|(held, _, _)| *held == inode)
            .map(|(_, _, file)| fd_path(file))
    }
}

/// /proc/self/fd/N of an open file: opening it opens the same file.
fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Every namespace in use, read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Survey {
    /// By namespace inode.
    pub namespaces: BTreeMap<u32, NamespaceReading>,
    /// More namespaces were in use than `MAX_NAMESPACES`: some were not
    /// read, so one missing from a first reading may have existed then.
    pub truncated: bool,
}

impl Survey {
    /// Reads every namespace in use (at most `MAX_NAMESPACES`). Needs
    /// root (entering a namespace); without it, or if the helper thread
    /// fails, the survey is empty and the reason is logged.
    pub fn read() -> Survey {
        Survey::read_with(&Held::default())
    }

    /// [`Survey::read`], plus every namespace `held` keeps that nothing
    /// else uses any more, read through the hold and marked `deleted`.
    pub fn read_with(held: &Held) -> Survey {
        let found = netns::in_use(MAX_NAMESPACES + 1);
        let truncated = found.len() > MAX_NAMESPACES;
        let initial = netns::initial()
            .and_then(|p| fs::metadata(p).ok())
            .map(|m| m.ino());
        let mut found: Vec<(u32, PathBuf, Option<String>)> = found
            .into_iter()
            .take(MAX_NAMESPACES)
            .map(|(inode, path)| (inode, path, None))
            .collect();
        for (inode, name, file) in &held.open {
            if !found.iter().any(|(seen, _, _)| seen == inode) {
                found.push((*inode, fd_path(file), Some(name.clone())));
            }
        }
        let namespaces = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut read = BTreeMap::new();
                    for (inode, path, held_name) in &found {
                        if let Err(err) = netns::enter(path) {
                            log::debug!("namespace {inode} not read: {err}");
                            continue;
                        }
                        let counters = match Counters::read() {
                            Ok(c) => c,
                            Err(err) => {
                                log::debug!("namespace {inode}: no counters: {err}");
                                continue;
                            }
                        };
                        let conntrack = Conntrack::read()
                            .inspect_err(|err| log::debug!("namespace {inode}: {err}"))
                            .ok();
                        let name = match held_name {
                            Some(name) => name.clone(),
                            None if Some(u64::from(*inode)) == initial => "host".to_string(),
                            None => name_of(path),
                        };
                        read.insert(
                            *inode,
                            NamespaceReading {
                                name,
                                counters,
                                conntrack,
                                cookie: netns::cookie(),
                                deleted: held_name.is_some(),
                            },
                        );
                    }
                    read
                })
                .join()
                .unwrap_or_else(|_| {
                    log::warn!("the namespace survey failed");
                    BTreeMap::new()
                })
        });
        Survey {
            namespaces,
            truncated,
        }
    }
}

/// `ctf-node` for /run/netns/ctf-node, `pid 812 (nginx)` for
/// /proc/812/ns/net.
pub fn name_of(path: &Path) -> String {
    if let Ok(name) = path.strip_prefix(RUN_NETNS) {
        return name.display().to_string();
    }
    let pid = path
        .strip_prefix("/proc")
        .ok()
        .and_then(|rest| rest.components().next())
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    match pid {
        Some(pid) => {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            match comm.trim() {
                "" => format!("pid {pid}"),
                comm => format!("pid {pid} ({comm})"),
            }
        }
        None => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_how_to_find_the_namespace() {
        assert_eq!(name_of(Path::new("/run/netns/ctf-node")), "ctf-node");
        let me = std::process::id();
        let comm = fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(
            name_of(Path::new(&format!("/proc/{me}/ns/net"))),
            format!("pid {me} ({})", comm.trim())
        );
        assert_eq!(name_of(Path::new("/somewhere/else")), "/somewhere/else");
    }

    #[test]
    fn our_own_namespace_is_surveyed() {
        // Entering a namespace needs root; unit tests may run without it,
        // and then the survey is empty rather than an error.
        let survey = Survey::read();
        let inode = fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
        if rustix::process::geteuid().is_root() {
            let ours = &survey.namespaces[&inode];
            assert!(ours.counters.get("TcpRetransSegs").is_some());
        }
    }
}
