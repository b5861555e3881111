//! Finding (and if needed mounting) tracefs.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The tracefs root, mounting it at /sys/kernel/tracing when no tracefs
/// is mounted (fresh machines often have none). Says so on stderr.
pub fn root() -> Result<PathBuf> {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    mount()?;
    eprintln!("tcptrace: mounted tracefs at {TRACEFS} (it was not mounted)");
    Ok(PathBuf::from(TRACEFS))
}

/// `mount -t tracefs nodev /sys/kernel/tracing`.
fn mount() -> Result<()> {
    use rustix::mount::{MountFlags, mount};
    mount("nodev", TRACEFS, "tracefs", MountFlags::empty(), None).map_err(|err| {
        Error::Kernel(format!(
            "tracefs is not mounted and mounting it at {TRACEFS} failed ({err}); mount it with `mount -t tracefs nodev {TRACEFS}`"
        ))
    })
}

/// Path of a tracepoint's format file.
pub fn format_path(root: &Path, category: &str, name: &str) -> PathBuf {
    root.join("events").join(category).join(name).join("format")
}
