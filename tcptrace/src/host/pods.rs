//! The Kubernetes pod a cgroup belongs to: its UID from the cgroup path
//! (kubelet names the pod's cgroup after it), its namespace and name from
//! the kubelet's log directory `/var/log/pods/<namespace>_<name>_<uid>`.

use std::path::Path;

/// Where the kubelet keeps pod logs, one directory per pod.
pub const POD_LOG_DIR: &str = "/var/log/pods";

/// A pod, as far as the host tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// The pod's UID (`8-4-4-4-12` hex digits).
    pub uid: String,
    /// `namespace/name`, when the kubelet's log directory names it.
    pub name: Option<String>,
}

impl std::fmt::Display for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} (uid {})", self.uid),
            None => write!(f, "uid {}", self.uid),
        }
    }
}

/// The pod of a cgroup path (below /sys/fs/cgroup), if it is one of
/// kubelet's: `.../kubepods-burstable-pod<uid with _>.slice/...`
/// (systemd driver) or `.../kubepods/besteffort/pod<uid>/...` (cgroupfs).
pub fn pod_of(cgroup_path: &str) -> Option<Pod> {
    pod_in(cgroup_path, Path::new(POD_LOG_DIR))
}

fn pod_in(cgroup_path: &str, log_dir: &Path) -> Option<Pod> {
    if !cgroup_path.contains("kubepods") {
        return None;
    }
    let uid = cgroup_path.split('/').find_map(|part| {
        // The last "pod": "kubepods-burstable-pod<uid>" has another
        // before it; a UID (hex digits) cannot contain one.
        let at = part.rfind("pod")?;
        let rest = part[at + 3..].trim_end_matches(".slice");
        let uid = rest.replace('_', "-");
        is_uid(&uid).then_some(uid)
    })?;
    let name = std::fs::read_dir(log_dir).ok().and_then(|dir| {
        dir.flatten().find_map(|entry| {
            let dir_name = entry.file_name().into_string().ok()?;
            let prefix = dir_name.strip_suffix(&format!("_{uid}"))?;
            let (namespace, name) = prefix.split_once('_')?;
            Some(format!("{namespace}/{name}"))
        })
    });
    Some(Pod { uid, name })
}

fn is_uid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, len)| p.len() == len && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b7e8c4e-3d2f-4a56-9f1e-2c3d4e5f6a7b";

    #[test]
    fn both_cgroup_drivers_name_the_pod() {
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-abc.scope",
            UID.replace('-', "_")
        );
        let none = Path::new("/nonexistent");
        assert_eq!(pod_in(&systemd, none).unwrap().uid, UID);
        let cgroupfs = format!("/kubepods/besteffort/pod{UID}/0123456789ab");
        assert_eq!(pod_in(&cgroupfs, none).unwrap().uid, UID);
        assert_eq!(
            pod_in("/user.slice/user-0.slice/session-1.scope", none),
            None
        );
        assert_eq!(pod_in("/kubepods/burstable/podnot-a-uid/x", none), None);
    }

    #[test]
    fn the_kubelet_log_directory_names_it() {
        let logs = std::env::temp_dir().join(format!("tcptrace-pods-{}", std::process::id()));
        std::fs::create_dir_all(logs.join(format!("shop_checkout-7d9f_{UID}"))).unwrap();
        let pod = pod_in(&format!("/kubepods/pod{UID}/c1"), &logs).unwrap();
        assert_eq!(pod.name.as_deref(), Some("shop/checkout-7d9f"));
        assert_eq!(pod.to_string(), format!("shop/checkout-7d9f (uid {UID})"));
        std::fs::remove_dir_all(&logs).unwrap();
    }
}
