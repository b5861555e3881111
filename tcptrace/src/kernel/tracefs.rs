//! Finding (and if needed mounting) tracefs.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

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

fn mount() -> Result<()> {
    let target = CString::new(TRACEFS).expect("static path");
    let fstype = CString::new("tracefs").expect("static");
    let source = CString::new("nodev").expect("static");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(Error::Kernel(format!(
            "tracefs is not mounted and mounting it at {TRACEFS} failed ({err}); mount it with `mount -t tracefs nodev {TRACEFS}`"
        )));
    }
    Ok(())
}

/// Path of a tracepoint's format file.
pub fn format_path(root: &Path, category: &str, name: &str) -> PathBuf {
    root.join("events").join(category).join(name).join("format")
}
