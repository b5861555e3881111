//! Entering another network namespace by name, as `ip netns exec` does.

use std::{fs::File, os::fd::AsRawFd as _, path::PathBuf};

use crate::error::{Error, Result};

/// `NAME` means /run/netns/NAME (what `ip netns add` creates); anything
/// with a slash is a path such as /proc/PID/ns/net.
pub fn path_of(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        PathBuf::from("/run/netns").join(name)
    }
}

/// Moves the calling thread into the namespace. Only this thread moves:
/// read per-namespace /proc files through /proc/thread-self afterwards.
pub fn enter(name: &str) -> Result<()> {
    let path = path_of(name);
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::Usage(format!(
            "'{name}' is not a network namespace name"
        )));
    }
    let file = File::open(&path).map_err(|e| {
        Error::io(
            format!("cannot open network namespace {}", path.display()),
            e,
        )
    })?;
    // SAFETY: setns only reads the fd, which stays open for the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::io(
            format!("cannot enter network namespace {}", path.display()),
            e,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(path_of("blue"), PathBuf::from("/run/netns/blue"));
        assert_eq!(path_of("/proc/1/ns/net"), PathBuf::from("/proc/1/ns/net"));
        assert!(enter("..").is_err());
        let err = enter("tcptrace-no-such-netns").unwrap_err().to_string();
        assert!(err.contains("/run/netns/tcptrace-no-such-netns"), "{err}");
    }
}
