//! Userspace enrichment that is too costly or impossible in the kernel:
//! cgroup id -> cgroup path and container id. Cached; the cgroup tree is
//! rescanned at most once a second, and only on a miss.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// A cgroup as a report names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupInfo {
    /// Path below the cgroup v2 root, e.g. `/system.slice/nginx.service`.
    pub path: String,
    /// Short container id when the path names one (docker, containerd,
    /// cri-o, podman, kubepods).
    pub container: Option<String>,
}

/// cgroup id -> path and container id, cached.
pub struct Cgroups {
    root: PathBuf,
    /// FxHash: looked up for every event written.
    by_id: FxHashMap<u64, CgroupInfo>,
    last_scan: Option<Instant>,
    /// Set by `fixed`: only what was inserted, never a scan.
    fixed: bool,
}

impl Default for Cgroups {
    fn default() -> Self {
        Cgroups::new(CGROUP_ROOT)
    }
}

impl Cgroups {
    /// Looks up cgroups under `root` (normally /sys/fs/cgroup).
    pub fn new(root: impl Into<PathBuf>) -> Cgroups {
        Cgroups {
            root: root.into(),
            by_id: FxHashMap::default(),
            last_scan: None,
            fixed: false,
        }
    }

    /// A table that never looks at this host: only what `insert` puts in
    /// (replay, which knows the cgroups of the host that recorded).
    pub fn fixed() -> Cgroups {
        Cgroups {
            fixed: true,
            ..Cgroups::new(CGROUP_ROOT)
        }
    }

    /// Adds what another host's table resolved `cgroup_id` to.
    pub fn insert(&mut self, cgroup_id: u64, info: CgroupInfo) {
        self.by_id.insert(cgroup_id, info);
    }

    /// On cgroup v2 a cgroup's id is the inode of its directory.
    pub fn lookup(&mut self, cgroup_id: u64) -> Option<&CgroupInfo> {
        if cgroup_id == 0 {
            return None;
        }
        if !self.fixed
            && !self.by_id.contains_key(&cgroup_id)
            && self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY)
        {
            self.scan();
        }
        self.by_id.get(&cgroup_id)
    }

    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        let mut stack = vec![self.root.clone()];
        // Bounded: a host has thousands of cgroups at most; stop at 100k.
        let mut budget = 100_000;
        while let Some(dir) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            let rel = dir.strip_prefix(&self.root).unwrap_or(Path::new(""));
            let path = format!("/{}", rel.display());
            self.by_id.entry(meta.ino()).or_insert_with(|| CgroupInfo {
                container: container_id(&path),
                path,
            });
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    budget -= 1;
                    if budget == 0 {
                        return;
                    }
                    stack.push(entry.path());
                }
            }
        }
    }
}

/// cgroup v2 id of process `pid`: the inode of its cgroup directory (the
/// `0::` line of /proc/PID/cgroup, under /sys/fs/cgroup). `None` when the
/// process is gone or is not in a v2 hierarchy.
pub fn cgroup_id_of(pid: u32) -> Option<u64> {
    let process = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let v2 = process
        .cgroups()
        .ok()?
        .into_iter()
        .find(|cgroup| cgroup.hierarchy == 0)?;
    let dir = Path::new(CGROUP_ROOT).join(v2.pathname.trim_start_matches('/'));
    fs::metadata(dir).ok().map(|meta| meta.ino())
}

/// The container id in a cgroup path, shortened to 12 characters.
pub fn container_id(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|part| {
        let part = part.strip_suffix(".scope").unwrap_or(part);
        let id = part.rsplit(['-', ':']).next().unwrap_or(part);
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id[..12].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            container_id(&format!("/system.slice/docker-{id}.scope")).as_deref(),
            Some("0123456789ab")
        );
        assert_eq!(
            container_id(&format!(
                "/kubepods.slice/kubepods-burstable.slice/cri-containerd-{id}.scope"
            ))
            .as_deref(),
            Some("0123456789ab")
        );
        assert_eq!(
            container_id(&format!("/kubepods/besteffort/pod1234/{id}")).as_deref(),
            Some("0123456789ab")
        );
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-1.scope"),
            None
        );
    }

    #[test]
    fn our_own_cgroup_id_is_found() {
        if let Some(id) = cgroup_id_of(std::process::id()) {
            assert!(Cgroups::default().lookup(id).is_some());
        }
        assert_eq!(cgroup_id_of(u32::MAX), None);
    }

    #[test]
    fn finds_a_cgroup_by_inode() {
        let dir = std::env::temp_dir().join(format!("tcptrace-cgroups-{}", std::process::id()));
        let leaf = dir.join("system.slice/app.service");
        fs::create_dir_all(&leaf).unwrap();
        let inode = fs::metadata(&leaf).unwrap().ino();
        let mut cgroups = Cgroups::new(&dir);
        assert_eq!(
            cgroups.lookup(inode).map(|c| c.path.as_str()),
            Some("/system.slice/app.service")
        );
        assert_eq!(cgroups.lookup(0), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
