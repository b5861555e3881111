//! Host-global sysctls (no per-namespace copy, such as
//! `net.ipv4.tcp_max_orphans`) changed for the length of a test: under an
//! exclusive lock shared with every other test or script that changes
//! one, and restored in `Drop` however the test ends.
//!
//! The lock file is `$TCPTRACE_HOSTGLOBAL_LOCK`, else
//! `/run/lock/tcptrace-hostglobal.lock`: point the variable at the lock
//! other tools on the machine use to serialise with them.

use std::{fs::File, os::fd::AsRawFd, path::PathBuf};

/// The lock file that serialises host-global changes.
pub fn lock_path() -> PathBuf {
    std::env::var_os("TCPTRACE_HOSTGLOBAL_LOCK").map_or_else(
        || "/run/lock/tcptrace-hostglobal.lock".into(),
        PathBuf::from,
    )
}

/// A host-global sysctl set to a test value, restored on drop; holds the
/// lock until then.
pub struct HostSysctl {
    path: PathBuf,
    old: String,
    _lock: File,
}

impl HostSysctl {
    /// Takes the lock (waiting for whoever holds it), then writes `value`
    /// to `/proc/sys/KEY` (dots as slashes).
    pub fn set(key: &str, value: &str) -> HostSysctl {
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_path())
            .unwrap_or_else(|e| panic!("open {}: {e}", lock_path().display()));
        // SAFETY: flock(2) on a file we opened.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        let old = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .to_string();
        std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("HOST-GLOBAL {key} = {value} (was {old}) until this test ends");
        HostSysctl {
            path,
            old,
            _lock: lock,
        }
    }
}

impl Drop for HostSysctl {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.old) {
            eprintln!("could not restore {}: {e}", self.path.display());
        }
    }
}
