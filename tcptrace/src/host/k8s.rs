//! Kubernetes names without an API server: a container's pod UID and
//! container ID from its cgroup path, and the pod's namespace, name and
//! container names from the kubelet's log directory layout.
//!
//! cgroup paths (below the cgroup root, v1 or v2) name the pod and the
//! container in one of a few shapes, set by the kubelet's cgroup driver
//! and the container runtime:
//!
//! | driver | runtime | container's cgroup |
//! | --- | --- | --- |
//! | cgroupfs | containerd, docker | `/kubepods/burstable/pod<uid>/<id>` |
//! | cgroupfs | CRI-O | `/kubepods/besteffort/pod<uid>/crio-<id>` |
//! | systemd | containerd | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope` |
//! | systemd | CRI-O | `.../kubepods-besteffort-pod<uid_>.slice/crio-<id>.scope` (the sandbox without `.scope`, conmon as `crio-conmon-<id>.scope`) |
//! | systemd | docker | `.../kubepods-pod<uid_>.slice/docker-<id>.scope` |
//!
//! Guaranteed pods have no QoS level (`/kubepods/pod<uid>`,
//! `kubepods-pod<uid_>.slice`); a kubelet with a cgroup root of its own
//! nests the tree (`/kubelet.slice/kubelet-kubepods.slice/...`, kind);
//! the systemd driver writes the UID with `_` for `-`. `<id>` is the
//! 64-hex container ID. The unit tests below hold a real path of each
//! shape (from falcosecurity/libs' container tests, an OpenShift CRI-O
//! node, kind, Ubuntu with dockershim, cgroup v1 `/proc/PID/cgroup`).
//!
//! The kubelet writes container logs to
//! `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restarts>.log`
//! (`BuildPodLogsDirectory` in kuberuntime) and links them from
//! `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`;
//! namespaces, pod and container names are DNS labels, so `_` never
//! occurs inside them. Both directories are only listed, never opened
//! for writing and no link is followed.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;

/// The kubelet's pod log root.
pub const DEFAULT_PODS_DIR: &str = "/var/log/pods";

/// The pod and container a cgroup path names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupIds {
    /// The pod's UID with dashes (`ac04f3f2-1f2c-11e9-b015-1ebee232acfa`),
    /// when the path is below a kubelet's `kubepods` tree.
    pub pod_uid: Option<String>,
    /// The full 64-hex container ID.
    pub container_id: Option<String>,
    /// The runtime the path's naming shows, when it shows one.
    pub runtime: Option<Runtime>,
}

/// A container runtime, as its cgroup naming shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `cri-containerd-<id>.scope`.
    Containerd,
    /// `crio-<id>`, `crio-conmon-<id>`.
    Crio,
    /// `docker-<id>.scope`, `/docker/<id>`.
    Docker,
    /// `libpod-<id>.scope`.
    Podman,
}

impl CgroupIds {
    /// The first 12 characters of the container ID, as `docker ps` and
    /// `crictl ps` show it.
    pub fn short_container_id(&self) -> Option<&str> {
        self.container_id.as_deref().map(|id| &id[..12])
    }
}

/// The pod and container a cgroup path (below the cgroup root, v1 or v2)
/// names; `None` when it names neither.
pub fn parse_cgroup_path(path: &str) -> Option<CgroupIds> {
    let mut ids = CgroupIds::default();
    let in_kubepods = path.contains("kubepods");
    for segment in path.split('/') {
        // runc's systemd notation `<slice>:<prefix>:<id>` in one segment.
        let parts: Vec<&str> = segment.split(':').collect();
        let (pod_part, container_part) = match parts.as_slice() {
            [slice, prefix, id] => (Some(*slice), Some(format!("{prefix}-{id}"))),
            _ => (Some(segment), Some(segment.to_string())),
        };
        if in_kubepods && let Some(uid) = pod_part.and_then(pod_uid) {
            ids.pod_uid = Some(uid);
        }
        if let Some((id, runtime)) = container_part.as_deref().and_then(container) {
            ids.container_id = Some(id);
            ids.runtime = runtime.or(ids.runtime);
        }
    }
    (ids.pod_uid.is_some() || ids.container_id.is_some()).then_some(ids)
}

/// The pod and container in a `/proc/PID/cgroup` file: the first line
/// (hierarchy, v1 or v2) whose path names a pod, else one that names a
/// container.
pub fn parse_proc_cgroup(text: &str) -> Option<CgroupIds> {
    let parsed: Vec<CgroupIds> = text
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .filter_map(parse_cgroup_path)
        .collect();
    parsed
        .iter()
        .find(|ids| ids.pod_uid.is_some())
        .or_else(|| parsed.first())
        .cloned()
}

/// `pod<uid>` (cgroupfs) or `...-pod<uid_>.slice` (systemd) -> the UID
/// with dashes.
fn pod_uid(segment: &str) -> Option<String> {
    let raw = if let Some(slice) = segment.strip_suffix(".slice") {
        slice.rsplit_once("-pod")?.1
    } else {
        segment.strip_prefix("pod")?
    };
    let uid = raw.replace('_', "-");
    is_uid(&uid).then_some(uid)
}

/// A pod UID: RFC 4122 text (8-4-4-4-12 hex), or the 32-hex hash a
/// static (mirror) pod gets.
fn is_uid(text: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let groups: Vec<&str> = text.split('-').collect();
    match groups.as_slice() {
        [a, b, c, d, e] => {
            [a.len(), b.len(), c.len(), d.len(), e.len()] == [8, 4, 4, 4, 12]
                && groups.iter().all(|g| hex(g))
        }
        [one] => one.len() == 32 && hex(one),
        _ => false,
    }
}

/// A container's cgroup name -> its full ID and the runtime the name shows.
fn container(segment: &str) -> Option<(String, Option<Runtime>)> {
    const PREFIXES: [(&str, Runtime); 6] = [
        ("cri-containerd-", Runtime::Containerd),
        ("containerd-", Runtime::Containerd),
        ("crio-conmon-", Runtime::Crio),
        ("crio-", Runtime::Crio),
        ("docker-", Runtime::Docker),
        ("libpod-", Runtime::Podman),
    ];
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    let (id, runtime) = PREFIXES
        .iter()
        .find_map(|(prefix, runtime)| Some((name.strip_prefix(prefix)?, Some(*runtime))))
        .unwrap_or((name, None));
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (id.to_ascii_lowercase(), runtime))
}

/// A pod as the kubelet's log directory names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDir {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// Its containers' names (the subdirectories), sorted.
    pub containers: Vec<String>,
}

/// Names of a pod and a container, resolved for a cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodNames {
    /// The pod's namespace; `None` when the log layout did not name it.
    pub namespace: Option<String>,
    /// The pod's name, or its UID when the layout did not name it.
    pub pod: String,
    /// The container's name, or its short ID (12 hex) when unknown.
    pub container: Option<String>,
}

/// How often the directories are listed again at most, when a UID or a
/// container ID not seen before asks for it.
const RESCAN_EVERY: Duration = Duration::from_secs(1);
/// Pods and container links read at most per listing: a node runs
/// hundreds of pods, not a hundred thousand.
const MAX_ENTRIES: usize = 100_000;

/// The kubelet's log directories, listed on demand: `<root>` (pods) and
/// its sibling `containers` (links named with container IDs). Read-only.
#[derive(Debug)]
pub struct PodLogs {
    root: PathBuf,
    containers_dir: PathBuf,
    pods: FxHashMap<String, PodDir>,
    /// Full container ID -> container name.
    container_names: FxHashMap<String, String>,
    last_scan: Option<Instant>,
    /// Bumped by every listing: names looked up before it may have appeared.
    generation: u64,
    warned: bool,
}

/// Why a pod log directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the pod log directory {}: {source}", path.display())]
pub struct PodsDirError {
    /// The directory.
    pub path: PathBuf,
    /// What listing it returned.
    pub source: io::Error,
}

impl PodLogs {
    /// Opens the pod log root `root` (normally /var/log/pods) after
    /// checking it can be listed.
    ///
    /// # Errors
    /// When it cannot be listed (missing, not a directory, no permission).
    pub fn open(root: impl Into<PathBuf>) -> Result<PodLogs, PodsDirError> {
        let root = root.into();
        fs::read_dir(&root).map_err(|source| PodsDirError {
            path: root.clone(),
            source,
        })?;
        let containers_dir = root
            .parent()
            .map_or_else(|| PathBuf::from("containers"), |p| p.join("containers"));
        let mut logs = PodLogs {
            root,
            containers_dir,
            pods: FxHashMap::default(),
            container_names: FxHashMap::default(),
            last_scan: None,
            generation: 0,
            warned: false,
        };
        logs.scan();
        Ok(logs)
    }

    /// The root it lists.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Listings so far: a name missing at one generation may be there at
    /// the next.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The names of the pod `uid` and of its container `container_id`
    /// (full or short ID). Lists the directories again (at most once a
    /// second) when the UID or the container is new. Where the layout
    /// does not name them, the IDs are kept: the UID as the pod, the
    /// short ID as the container.
    pub fn names(&mut self, uid: &str, container_id: Option<&str>) -> PodNames {
        let known = self.pods.contains_key(uid)
            && container_id.is_none_or(|id| self.container_names.contains_key(id));
        if !known && self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY) {
            self.scan();
        }
        let short = container_id.map(|id| id[..id.len().min(12)].to_string());
        let Some(pod) = self.pods.get(uid) else {
            return PodNames {
                namespace: None,
                pod: uid.to_string(),
                container: short,
            };
        };
        let container = container_id
            .and_then(|id| self.container_names.get(id).cloned())
            // A pod of one container needs no ID to tell which.
            .or_else(|| match pod.containers.as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            })
            .or(short);
        PodNames {
            namespace: Some(pod.namespace.clone()),
            pod: pod.name.clone(),
            container,
        }
    }

    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        self.generation += 1;
        match list_pods(&self.root) {
            Ok(pods) => self.pods = pods,
            Err(err) => {
                // It could be listed when opened: say once that it no
                // longer can, and keep the names already known.
                if !self.warned {
                    self.warned = true;
                    log::warn!("cannot list {}: {err}", self.root.display());
                }
            }
        }
        // Optional: without it, pods of one container are still named.
        if let Ok(names) = list_container_links(&self.containers_dir) {
            self.container_names = names;
        }
    }
}

/// `<root>/<namespace>_<pod>_<uid>/<container>/` -> UID -> names.
fn list_pods(root: &Path) -> io::Result<FxHashMap<String, PodDir>> {
    let mut pods = FxHashMap::default();
    for entry in fs::read_dir(root)?.flatten().take(MAX_ENTRIES) {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Some((namespace, pod, uid)) = split_pod_dir(&name) else {
            continue;
        };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let mut containers: Vec<String> = fs::read_dir(entry.path())
            .map(|dir| {
                dir.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .take(1000)
                    .collect()
            })
            .unwrap_or_default();
        containers.sort();
        pods.insert(
            uid.to_string(),
            PodDir {
                namespace: namespace.to_string(),
                name: pod.to_string(),
                containers,
            },
        );
    }
    Ok(pods)
}

/// `<namespace>_<pod>_<uid>` -> its three parts.
pub fn split_pod_dir(name: &str) -> Option<(&str, &str, &str)> {
    let mut parts = name.split('_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = parts.next().is_none() && !namespace.is_empty() && !pod.is_empty() && is_uid(uid);
    ok.then_some((namespace, pod, uid))
}

/// `<containers>/<pod>_<namespace>_<container>-<id>.log` -> ID -> container.
fn list_container_links(dir: &Path) -> io::Result<FxHashMap<String, String>> {
    let mut names = FxHashMap::default();
    for entry in fs::read_dir(dir)?.flatten().take(MAX_ENTRIES) {
        if let Some((id, container)) = entry.file_name().to_str().and_then(split_container_link) {
            names.insert(id.to_string(), container.to_string());
        }
    }
    Ok(names)
}

/// `<pod>_<namespace>_<container>-<64 hex>.log` -> (ID, container).
pub fn split_container_link(name: &str) -> Option<(&str, &str)> {
    let stem = name.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    let container = rest.splitn(3, '_').nth(2)?;
    let ok = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !container.is_empty();
    ok.then_some((id, container))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "605439acbd4fb18c145069289094b17f17e0cfa938f78012d4960bc797305f22";

    fn ids(pod: Option<&str>, container: Option<&str>, runtime: Option<Runtime>) -> CgroupIds {
        CgroupIds {
            pod_uid: pod.map(str::to_string),
            container_id: container.map(str::to_string),
            runtime,
        }
    }

    /// Real paths of every runtime and driver, v1 and v2 (the v1 ones
    /// are a hierarchy's path as /proc/PID/cgroup shows it).
    #[test]
    fn cgroup_paths_of_every_runtime_and_driver() {
        let cases = [
            // containerd, cgroupfs driver (falcosecurity/libs
            // container_cgroup test; GKE/COS, k3s).
            (
                "/kubepods/besteffort/podac04f3f2-1f2c-11e9-b015-1ebee232acfa/605439acbd4fb18c145069289094b17f17e0cfa938f78012d4960bc797305f22",
                ids(
                    Some("ac04f3f2-1f2c-11e9-b015-1ebee232acfa"),
                    Some(CID),
                    None,
                ),
            ),
            // CRI-O, cgroupfs driver (falcosecurity/libs).
            (
                "/kubepods/besteffort/pod63b3ebfc-2890-11e9-8154-16bf8ef8d9dc/crio-73bfe475650de66df8e2affdc98d440dcbe84f8df83b6f75a68a82eb7026136a",
                ids(
                    Some("63b3ebfc-2890-11e9-8154-16bf8ef8d9dc"),
                    Some("73bfe475650de66df8e2affdc98d440dcbe84f8df83b6f75a68a82eb7026136a"),
                    Some(Runtime::Crio),
                ),
            ),
            // CRI-O, systemd driver (falcosecurity/libs).
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod63b3ebfc_2890_11e9_8154_16bf8ef8d9dc.slice/crio-17d8c9eacc629f9945f304d89e9708c0c619649a484a215b240628319548a09f.scope",
                ids(
                    Some("63b3ebfc-2890-11e9-8154-16bf8ef8d9dc"),
                    Some("17d8c9eacc629f9945f304d89e9708c0c619649a484a215b240628319548a09f"),
                    Some(Runtime::Crio),
                ),
            ),
            // CRI-O, systemd, cgroup v2: an OpenShift pod sandbox (no .scope).
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod35550f44_f691_427e_b57d_ab6127d2cb65.slice/crio-468f848e2ebec7203ed55748d08337851af589ac42eb551c572446a5c68fe631",
                ids(
                    Some("35550f44-f691-427e-b57d-ab6127d2cb65"),
                    Some("468f848e2ebec7203ed55748d08337851af589ac42eb551c572446a5c68fe631"),
                    Some(Runtime::Crio),
                ),
            ),
            // CRI-O's conmon and its nested `container` cgroup.
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod63b3ebfc_2890_11e9_8154_16bf8ef8d9dc.slice/crio-conmon-17d8c9eacc629f9945f304d89e9708c0c619649a484a215b240628319548a09f.scope",
                ids(
                    Some("63b3ebfc-2890-11e9-8154-16bf8ef8d9dc"),
                    Some("17d8c9eacc629f9945f304d89e9708c0c619649a484a215b240628319548a09f"),
                    Some(Runtime::Crio),
                ),
            ),
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod63b3ebfc_2890_11e9_8154_16bf8ef8d9dc.slice/crio-17d8c9eacc629f9945f304d89e9708c0c619649a484a215b240628319548a09f.scope/container",
                ids(
                    Some("63b3ebfc-2890-11e9-8154-16bf8ef8d9dc"),
                    Some("17d8c9eacc629f9945f304d89e9708c0c619649a484a215b240628319548a09f"),
                    Some(Runtime::Crio),
                ),
            ),
            // docker (dockershim), systemd driver, Ubuntu 20.04.
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poddc380811_8168_4a9e_9b4a_56ded1b6fe9c.slice/docker-fa7f0ec4fbcbb70c69565a5b2d269926e04ec5601dff59235199d6e60198e95c.scope",
                ids(
                    Some("dc380811-8168-4a9e-9b4a-56ded1b6fe9c"),
                    Some("fa7f0ec4fbcbb70c69565a5b2d269926e04ec5601dff59235199d6e60198e95c"),
                    Some(Runtime::Docker),
                ),
            ),
            // containerd, systemd, a kubelet with its own cgroup root (kind).
            (
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod26a1a59b_8013_459b_9a20_a611facb1888.slice/cri-containerd-1207db63eaeb133a85d2b614d12d95d4dff3f29af60d7a7b3c7d39abdf4bd119.scope",
                ids(
                    Some("26a1a59b-8013-459b-9a20-a611facb1888"),
                    Some("1207db63eaeb133a85d2b614d12d95d4dff3f29af60d7a7b3c7d39abdf4bd119"),
                    Some(Runtime::Containerd),
                ),
            ),
            // runc's systemd cgroupsPath notation, as containerd records it.
            (
                "kubelet-kubepods-besteffort-pod26a1a59b_8013_459b_9a20_a611facb1888.slice:cri-containerd:1207db63eaeb133a85d2b614d12d95d4dff3f29af60d7a7b3c7d39abdf4bd119",
                ids(
                    Some("26a1a59b-8013-459b-9a20-a611facb1888"),
                    Some("1207db63eaeb133a85d2b614d12d95d4dff3f29af60d7a7b3c7d39abdf4bd119"),
                    Some(Runtime::Containerd),
                ),
            ),
            // Guaranteed QoS: no QoS level, both drivers.
            (
                "/kubepods.slice/kubepods-poddc380811_8168_4a9e_9b4a_56ded1b6fe9c.slice/docker-fa7f0ec4fbcbb70c69565a5b2d269926e04ec5601dff59235199d6e60198e95c.scope",
                ids(
                    Some("dc380811-8168-4a9e-9b4a-56ded1b6fe9c"),
                    Some("fa7f0ec4fbcbb70c69565a5b2d269926e04ec5601dff59235199d6e60198e95c"),
                    Some(Runtime::Docker),
                ),
            ),
            (
                "/kubepods/podac04f3f2-1f2c-11e9-b015-1ebee232acfa/605439acbd4fb18c145069289094b17f17e0cfa938f78012d4960bc797305f22",
                ids(
                    Some("ac04f3f2-1f2c-11e9-b015-1ebee232acfa"),
                    Some(CID),
                    None,
                ),
            ),
            // A static pod: its UID is a 32-hex hash of its manifest.
            (
                "/kubepods/burstable/pod6a3d9c3b4c2e8f7a1b2c3d4e5f6a7b8c/605439acbd4fb18c145069289094b17f17e0cfa938f78012d4960bc797305f22",
                ids(Some("6a3d9c3b4c2e8f7a1b2c3d4e5f6a7b8c"), Some(CID), None),
            ),
            // The pod's own cgroup (no container yet).
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod35550f44_f691_427e_b57d_ab6127d2cb65.slice",
                ids(Some("35550f44-f691-427e-b57d-ab6127d2cb65"), None, None),
            ),
            // Docker outside Kubernetes: a container, no pod (falcosecurity/libs, neuvector).
            (
                "/docker/7951fb549ab99e0722a949b6c121634e1f3a36b5bacbe5392991e3b12251e6b8",
                ids(
                    None,
                    Some("7951fb549ab99e0722a949b6c121634e1f3a36b5bacbe5392991e3b12251e6b8"),
                    None,
                ),
            ),
            (
                "/system.slice/docker-9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d.scope",
                ids(
                    None,
                    Some("9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d"),
                    Some(Runtime::Docker),
                ),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse_cgroup_path(path), Some(want), "{path}");
        }
        for nothing in [
            "/",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/nginx.service",
            "/process_api/be4a9b222880a7eb1ea1b5825da259a5",
            // A pod-looking name outside a kubelet's tree is no pod.
            "/system.slice/podman-pod12345678-1234-1234-1234-123456789abc.slice",
            "/kubepods/burstable/podnot-a-uid",
            "/kubepods.slice/kubepods-burstable.slice",
        ] {
            assert_eq!(parse_cgroup_path(nothing), None, "{nothing}");
        }
        let cgroupfs = parse_cgroup_path(
            "/kubepods/besteffort/podac04f3f2-1f2c-11e9-b015-1ebee232acfa/605439acbd4fb18c145069289094b17f17e0cfa938f78012d4960bc797305f22",
        )
        .unwrap();
        assert_eq!(cgroupfs.short_container_id(), Some("605439acbd4f"));
    }

    /// `/proc/PID/cgroup` of a container on a cgroup v1 node (cgroupfs
    /// driver) and on a v2 node (systemd driver).
    #[test]
    fn proc_cgroup_files_v1_and_v2() {
        let v1 = "\
12:pids:/kubepods/besteffort/pod74c13223-5a00-11e9-b385-42010a80018d/34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376
11:devices:/kubepods/besteffort/pod74c13223-5a00-11e9-b385-42010a80018d/34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376
4:memory:/kubepods/besteffort/pod74c13223-5a00-11e9-b385-42010a80018d/34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376
1:name=systemd:/kubepods/besteffort/pod74c13223-5a00-11e9-b385-42010a80018d/34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376
0::/system.slice/containerd.service
";
        assert_eq!(
            parse_proc_cgroup(v1),
            Some(ids(
                Some("74c13223-5a00-11e9-b385-42010a80018d"),
                Some("34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376"),
                None
            ))
        );
        let v2 = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod35550f44_f691_427e_b57d_ab6127d2cb65.slice/cri-containerd-468f848e2ebec7203ed55748d08337851af589ac42eb551c572446a5c68fe631.scope\n";
        assert_eq!(
            parse_proc_cgroup(v2).and_then(|i| i.pod_uid),
            Some("35550f44-f691-427e-b57d-ab6127d2cb65".into())
        );
        assert_eq!(parse_proc_cgroup("0::/\n"), None);
        assert_eq!(parse_proc_cgroup("garbage"), None);
    }

    #[test]
    fn log_directory_names() {
        assert_eq!(
            split_pod_dir("shop_checkout-7d9f8b6c5-x2x4z_35550f44-f691-427e-b57d-ab6127d2cb65"),
            Some((
                "shop",
                "checkout-7d9f8b6c5-x2x4z",
                "35550f44-f691-427e-b57d-ab6127d2cb65"
            ))
        );
        assert_eq!(split_pod_dir("35550f44-f691-427e-b57d-ab6127d2cb65"), None);
        assert_eq!(split_pod_dir("a_b_notauid"), None);
        assert_eq!(
            split_pod_dir("a_b_c_35550f44-f691-427e-b57d-ab6127d2cb65"),
            None
        );
        assert_eq!(
            split_container_link(&format!(
                "checkout-7d9f8b6c5-x2x4z_shop_app-server-{CID}.log"
            )),
            Some((CID, "app-server"))
        );
        assert_eq!(split_container_link("checkout_shop_app-123.log"), None);
        assert_eq!(split_container_link(&format!("x-{CID}.log")), None);
    }

    #[test]
    fn names_from_a_log_tree_and_ids_where_it_is_silent() {
        let dir = std::env::temp_dir().join(format!("tcptrace-k8s-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let uid = "35550f44-f691-427e-b57d-ab6127d2cb65";
        let two = "26a1a59b-8013-459b-9a20-a611facb1888";
        fs::create_dir_all(dir.join(format!("pods/shop_checkout-1_{uid}/app"))).unwrap();
        fs::create_dir_all(dir.join(format!("pods/pay_payments-2_{two}/api"))).unwrap();
        fs::create_dir_all(dir.join(format!("pods/pay_payments-2_{two}/envoy"))).unwrap();
        fs::create_dir_all(dir.join("containers")).unwrap();
        fs::write(
            dir.join(format!("containers/payments-2_pay_envoy-{CID}.log")),
            "",
        )
        .unwrap();

        let mut logs = PodLogs::open(dir.join("pods")).unwrap();
        let one = logs.names(
            uid,
            Some("1207db63eaeb133a85d2b614d12d95d4dff3f29af60d7a7b3c7d39abdf4bd119"),
        );
        assert_eq!(
            one,
            PodNames {
                namespace: Some("shop".into()),
                pod: "checkout-1".into(),
                container: Some("app".into()),
            },
            "a pod of one container"
        );
        let envoy = logs.names(two, Some(CID));
        assert_eq!(envoy.container.as_deref(), Some("envoy"));
        let unknown = logs.names(
            two,
            Some("1207db63eaeb133a85d2b614d12d95d4dff3f29af60d7a7b3c7d39abdf4bd119"),
        );
        assert_eq!(unknown.pod, "payments-2");
        assert_eq!(
            unknown.container.as_deref(),
            Some("1207db63eaeb"),
            "two containers: the ID"
        );
        // A pod that appears later is found once a second has passed.
        let later = "74c13223-5a00-11e9-b385-42010a80018d";
        assert_eq!(logs.names(later, None).pod, later, "not there: the UID");
        fs::create_dir_all(dir.join(format!("pods/web_front-3_{later}/nginx"))).unwrap();
        std::thread::sleep(RESCAN_EVERY);
        let generation = logs.generation();
        assert_eq!(logs.names(later, None).pod, "front-3");
        assert!(logs.generation() > generation);

        assert!(PodLogs::open(dir.join("nope")).is_err());
        let file = dir.join("file");
        fs::write(&file, "").unwrap();
        let err = PodLogs::open(&file).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot read the pod log directory"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
