//! Userspace enrichment that is too costly or impossible in the kernel:
//! cgroup id -> cgroup path, container id and, on a Kubernetes node, the
//! pod (see `k8s`). Cached; the cgroup tree is rescanned at most once a
//! second, and only on a miss.
//!
//! The kernel's cgroup id (`bpf_get_current_cgroup_id`) is the inode of
//! the task's directory in the cgroup v2 hierarchy, wherever that is
//! mounted: /sys/fs/cgroup on a v2 host, /sys/fs/cgroup/unified on a
//! hybrid (v1 + v2) one. On v1 and hybrid hosts the kubelet's tree may
//! exist only in the v1 hierarchies, so a socket owner whose v2 cgroup
//! names no pod is also looked up by pid in /proc/PID/cgroup.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;

use super::k8s::{self, CgroupIds, PodLogs, PodNames};

/// Where the cgroup hierarchy usually is.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const RESCAN_EVERY: Duration = Duration::from_secs(1);
/// How long a pid's /proc/PID/cgroup reading is trusted (pids are reused).
const PID_TTL: Duration = Duration::from_secs(10);
/// Pids remembered at most for the v1 lookup.
const MAX_PIDS: usize = 8192;

/// A cgroup as a report names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupInfo {
    /// Path below the cgroup root, e.g. `/system.slice/nginx.service`.
    pub path: String,
    /// Short container id (12 hex) when the path names one (docker,
    /// containerd, cri-o, podman, kubepods).
    pub container: Option<String>,
    /// The pod and full container ID the path names (see `k8s`).
    pub ids: Option<CgroupIds>,
    /// The pod's names, on a Kubernetes node: from the kubelet's log
    /// directory when given and it names them, else the IDs.
    pub pod: Option<PodNames>,
    /// When the pod's names were last looked up (they may appear later).
    named_at: Option<Instant>,
}

impl CgroupInfo {
    /// A cgroup as another host named it (a record file's): its path,
    /// short container ID and pod names; no IDs to look anything up by.
    pub fn recorded(path: String, container: Option<String>, pod: Option<PodNames>) -> CgroupInfo {
        CgroupInfo {
            path,
            container,
            ids: None,
            pod,
            named_at: None,
        }
    }

    fn new(path: String, ids: Option<CgroupIds>) -> CgroupInfo {
        CgroupInfo {
            container: ids
                .as_ref()
                .and_then(|i| i.short_container_id())
                .map(str::to_string),
            path,
            ids,
            pod: None,
            named_at: None,
        }
    }

    /// The pod's namespace, when known.
    pub fn namespace(&self) -> Option<&str> {
        self.pod.as_ref()?.namespace.as_deref()
    }

    /// The pod's name (its UID when the name is unknown).
    pub fn pod_name(&self) -> Option<&str> {
        self.pod.as_ref().map(|p| p.pod.as_str())
    }

    /// The container's name within its pod (its short ID when unknown),
    /// or the short ID of a container outside Kubernetes.
    pub fn container_name(&self) -> Option<&str> {
        self.pod
            .as_ref()
            .and_then(|p| p.container.as_deref())
            .or(self.container.as_deref())
    }

    /// True once the pod is fully named (namespace and name), or when the
    /// cgroup is no pod's.
    fn named(&self) -> bool {
        match (&self.ids, &self.pod) {
            (
                Some(CgroupIds {
                    pod_uid: Some(_), ..
                }),
                Some(pod),
            ) => pod.namespace.is_some(),
            (
                Some(CgroupIds {
                    pod_uid: Some(_), ..
                }),
                None,
            ) => false,
            _ => true,
        }
    }
}

/// cgroup id -> path, container id and pod, cached.
pub struct Cgroups {
    root: PathBuf,
    /// FxHash: looked up for every event written.
    by_id: FxHashMap<u64, CgroupInfo>,
    last_scan: Option<Instant>,
    pods: Option<PodLogs>,
    /// v1 hierarchies are mounted: look owners up by pid too.
    v1: bool,
    by_pid: FxHashMap<u32, (Instant, Option<CgroupInfo>)>,
    /// Set by `fixed`: the answers another host's table gave, by
    /// `owner_key`; this host is never looked at.
    recorded: Option<FxHashMap<(u32, u64), Option<CgroupInfo>>>,
}

impl Default for Cgroups {
    fn default() -> Self {
        let mut cgroups = Cgroups::new(cgroup2_root());
        cgroups.v1 = v1_mounted();
        cgroups
    }
}

impl Cgroups {
    /// Looks up cgroups under `root` (a cgroup v2 mount), by id only.
    pub fn new(root: impl Into<PathBuf>) -> Cgroups {
        Cgroups {
            root: root.into(),
            by_id: FxHashMap::default(),
            last_scan: None,
            pods: None,
            v1: false,
            by_pid: FxHashMap::default(),
            recorded: None,
        }
    }

    /// A table that never looks at this host: it answers only what
    /// `insert` put in (replay, with what the recording host resolved).
    pub fn fixed() -> Cgroups {
        Cgroups {
            recorded: Some(FxHashMap::default()),
            ..Cgroups::new(CGROUP_ROOT)
        }
    }

    /// For a `fixed` table: from now on, `lookup_owner` answers `info`
    /// for the owners of `key` (see `owner_key`).
    pub fn insert(&mut self, key: (u32, u64), info: Option<CgroupInfo>) {
        if let Some(recorded) = &mut self.recorded {
            recorded.insert(key, info);
        }
    }

    /// What `lookup_owner(pid, cgroup_id)`'s answer depends on: the pid
    /// only where v1 hierarchies make it look owners up by pid.
    pub fn owner_key(&self, pid: u32, cgroup_id: u64) -> (u32, u64) {
        (if self.v1 { pid } else { 0 }, cgroup_id)
    }

    /// Names pods from this kubelet log directory (see `k8s::PodLogs`).
    pub fn with_pods(mut self, pods: PodLogs) -> Cgroups {
        self.pods = Some(pods);
        self
    }

    /// The cgroup with this id. On cgroup v2 a cgroup's id is the inode
    /// of its directory.
    pub fn lookup(&mut self, cgroup_id: u64) -> Option<&CgroupInfo> {
        if self.recorded.is_some() {
            return self.recorded_answer(0, cgroup_id);
        }
        if cgroup_id == 0 {
            return None;
        }
        if !self.by_id.contains_key(&cgroup_id)
            && self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY)
        {
            self.scan();
        }
        let info = self.by_id.get_mut(&cgroup_id)?;
        name_pod(info, self.pods.as_mut());
        Some(info)
    }

    /// The cgroup of a socket owner: by its v2 cgroup id, or, on a host
    /// with v1 hierarchies where that names no pod, by the pid's
    /// /proc/PID/cgroup (read at most every 10 s per pid).
    pub fn lookup_owner(&mut self, pid: u32, cgroup_id: u64) -> Option<&CgroupInfo> {
        if self.recorded.is_some() {
            return self.recorded_answer(pid, cgroup_id);
        }
        let has_pod = |info: Option<&CgroupInfo>| {
            info.and_then(|i| i.ids.as_ref())
                .is_some_and(|ids| ids.pod_uid.is_some())
        };
        if !self.v1 || pid == 0 || has_pod(self.lookup(cgroup_id)) {
            return self.lookup(cgroup_id);
        }
        let fresh = self
            .by_pid
            .get(&pid)
            .is_some_and(|(at, _)| at.elapsed() < PID_TTL);
        if !fresh {
            if self.by_pid.len() >= MAX_PIDS {
                self.by_pid.clear();
            }
            let info = fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .ok()
                .and_then(|text| v1_info(&text));
            self.by_pid.insert(pid, (Instant::now(), info));
        }
        if !has_pod(self.by_pid.get(&pid).and_then(|(_, i)| i.as_ref())) {
            return self.lookup(cgroup_id);
        }
        let info = self.by_pid.get_mut(&pid)?.1.as_mut()?;
        name_pod(info, self.pods.as_mut());
        Some(info)
    }

    /// A `fixed` table's answer for an owner: for its pid if one was
    /// recorded, else for any pid.
    fn recorded_answer(&self, pid: u32, cgroup_id: u64) -> Option<&CgroupInfo> {
        let recorded = self.recorded.as_ref()?;
        recorded
            .get(&(pid, cgroup_id))
            .or_else(|| recorded.get(&(0, cgroup_id)))?
            .as_ref()
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
            self.by_id
                .entry(meta.ino())
                .or_insert_with(|| CgroupInfo::new(path.clone(), k8s::parse_cgroup_path(&path)));
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

/// Fills in the pod's names: from the log directory when there is one
/// (asked again each second while it does not name the pod yet), else
/// the IDs.
fn name_pod(info: &mut CgroupInfo, pods: Option<&mut PodLogs>) {
    if info.named() {
        return;
    }
    let Some(ids) = &info.ids else {
        return;
    };
    let Some(uid) = ids.pod_uid.as_deref() else {
        return;
    };
    let asked_recently = info
        .named_at
        .is_some_and(|t| pods.is_none() || t.elapsed() < RESCAN_EVERY);
    if asked_recently {
        return;
    }
    info.named_at = Some(Instant::now());
    info.pod = Some(match pods {
        Some(pods) => pods.names(uid, ids.container_id.as_deref()),
        None => PodNames {
            namespace: None,
            pod: uid.to_string(),
            container: ids.short_container_id().map(str::to_string),
        },
    });
}

/// A v1 host's /proc/PID/cgroup -> the hierarchy path that names a pod.
fn v1_info(text: &str) -> Option<CgroupInfo> {
    let path = text
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .find(|path| k8s::parse_cgroup_path(path).is_some_and(|ids| ids.pod_uid.is_some()))?;
    Some(CgroupInfo::new(
        path.to_string(),
        k8s::parse_proc_cgroup(text),
    ))
}

/// The cgroup v2 mount point: /sys/fs/cgroup on a v2 host,
/// /sys/fs/cgroup/unified on a hybrid one (from /proc/self/mountinfo;
/// /sys/fs/cgroup when it says nothing).
pub fn cgroup2_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let mounts: Vec<PathBuf> = procfs::process::Process::myself()
            .and_then(|me| me.mountinfo())
            .map(|infos| {
                infos
                    .into_iter()
                    .filter(|m| m.fs_type == "cgroup2")
                    .map(|m| m.mount_point)
                    .collect()
            })
            .unwrap_or_default();
        [CGROUP_ROOT, "/sys/fs/cgroup/unified"]
            .iter()
            .map(PathBuf::from)
            .find(|p| mounts.contains(p))
            .or_else(|| mounts.into_iter().next())
            .unwrap_or_else(|| PathBuf::from(CGROUP_ROOT))
    })
    .clone()
}

/// True when cgroup v1 hierarchies are mounted (a v1 or hybrid host).
fn v1_mounted() -> bool {
    procfs::process::Process::myself()
        .and_then(|me| me.mountinfo())
        .is_ok_and(|infos| infos.into_iter().any(|m| m.fs_type == "cgroup"))
}

/// cgroup v2 id of process `pid`: the inode of its cgroup directory (the
/// `0::` line of /proc/PID/cgroup, under the v2 mount). `None` when the
/// process is gone or is not in a v2 hierarchy.
pub fn cgroup_id_of(pid: u32) -> Option<u64> {
    let process = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let v2 = process
        .cgroups()
        .ok()?
        .into_iter()
        .find(|cgroup| cgroup.hierarchy == 0)?;
    let dir = cgroup2_root().join(v2.pathname.trim_start_matches('/'));
    fs::metadata(dir).ok().map(|meta| meta.ino())
}

/// The short container id (12 hex) in a cgroup path.
pub fn container_id(path: &str) -> Option<String> {
    k8s::parse_cgroup_path(path)?
        .short_container_id()
        .map(str::to_string)
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
        assert!(cgroup2_root().is_absolute());
    }

    #[test]
    fn finds_a_cgroup_by_inode_and_names_its_pod() {
        let dir = std::env::temp_dir().join(format!("tcptrace-cgroups-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let leaf = dir.join("system.slice/app.service");
        fs::create_dir_all(&leaf).unwrap();
        let uid = "35550f44-f691-427e-b57d-ab6127d2cb65";
        let cid = "468f848e2ebec7203ed55748d08337851af589ac42eb551c572446a5c68fe631";
        let pod = dir.join(format!(
            "cg/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{cid}.scope",
            uid.replace('-', "_")
        ));
        fs::create_dir_all(&pod).unwrap();
        fs::create_dir_all(dir.join(format!("logs/pods/shop_checkout-1_{uid}/app"))).unwrap();
        let inode = fs::metadata(&leaf).unwrap().ino();
        let mut cgroups = Cgroups::new(&dir);
        let info = cgroups.lookup(inode).unwrap();
        assert_eq!(info.path, "/system.slice/app.service");
        assert_eq!((info.pod_name(), info.container_name()), (None, None));
        assert_eq!(cgroups.lookup(0), None);

        // Without a log directory: the IDs.
        let pod_inode = fs::metadata(&pod).unwrap().ino();
        let info = cgroups.lookup(pod_inode).unwrap();
        assert_eq!(info.pod_name(), Some(uid));
        assert_eq!(info.namespace(), None);
        assert_eq!(info.container_name(), Some("468f848e2ebe"));
        // With one: the names.
        let logs = PodLogs::open(dir.join("logs/pods")).unwrap();
        let mut cgroups = Cgroups::new(&dir).with_pods(logs);
        let info = cgroups.lookup_owner(1, pod_inode).unwrap();
        assert_eq!(
            (info.namespace(), info.pod_name(), info.container_name()),
            (Some("shop"), Some("checkout-1"), Some("app"))
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn v1_files_name_the_hierarchy_with_the_pod() {
        let text = "\
12:pids:/kubepods/besteffort/pod74c13223-5a00-11e9-b385-42010a80018d/34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376
0::/system.slice/containerd.service
";
        let info = v1_info(text).unwrap();
        assert!(info.path.starts_with("/kubepods/besteffort/pod74c13223"));
        assert_eq!(info.container.as_deref(), Some("34dc0b5e626f"));
        assert_eq!(v1_info("0::/\n1:name=systemd:/user.slice\n"), None);
    }
}
