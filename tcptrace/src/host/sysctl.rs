//! Reading and writing sysctls through /proc/sys, behind a trait so the
//! all-or-nothing logic of `tune` can be tested without root.
//!
//! `net.*` keys resolve in the network namespace of the calling thread,
//! which is what `ip netns exec` and `snapshot --netns` rely on.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
};

/// Why a sysctl could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// Not a sysctl name.
    #[error("'{0}' is not a sysctl name (letters, digits, '_' and '-' separated by dots)")]
    BadKey(String),
    /// No such key on this kernel (or in this network namespace).
    #[error("{0} does not exist on this kernel (or in this network namespace)")]
    Absent(String),
    /// The value could not be read.
    #[error("cannot read {key}: {source}")]
    Read {
        /// The key.
        key: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the value.
    #[error("the kernel refused {key} = {value}: {source}")]
    Write {
        /// The key.
        key: String,
        /// The value refused.
        value: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Whether a key can be changed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No such key here.
    Absent,
    /// Visible, not writable (e.g. a host-wide key inside a namespace).
    ReadOnly,
    /// Can be changed.
    ReadWrite,
}

/// Where sysctl values live. The real one is [`ProcSys`].
pub trait SysctlBackend {
    /// Whether `key` exists and can be written.
    fn access(&self, key: &str) -> Result<Access, SysctlError>;
    /// The value, whitespace normalised (see [`normalize`]).
    fn read(&self, key: &str) -> Result<String, SysctlError>;
    /// Writes `value` to `key`.
    fn write(&mut self, key: &str, value: &str) -> Result<(), SysctlError>;
}

/// The running kernel, through /proc/sys.
#[derive(Debug, Default)]
pub struct ProcSys;

impl SysctlBackend for ProcSys {
    fn access(&self, key: &str) -> Result<Access, SysctlError> {
        match fs::metadata(proc_path(key)?) {
            Ok(meta) if meta.permissions().mode() & 0o222 == 0 => Ok(Access::ReadOnly),
            Ok(_) => Ok(Access::ReadWrite),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Access::Absent),
            Err(source) => Err(SysctlError::Read {
                key: key.to_string(),
                source,
            }),
        }
    }

    fn read(&self, key: &str) -> Result<String, SysctlError> {
        match fs::read_to_string(proc_path(key)?) {
            Ok(text) => Ok(normalize(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(SysctlError::Absent(key.to_string()))
            }
            Err(source) => Err(SysctlError::Read {
                key: key.to_string(),
                source,
            }),
        }
    }

    fn write(&mut self, key: &str, value: &str) -> Result<(), SysctlError> {
        let error = |source| SysctlError::Write {
            key: key.to_string(),
            value: value.to_string(),
            source,
        };
        // One write() call: /proc/sys parses each write on its own.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(proc_path(key)?)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    SysctlError::Absent(key.to_string())
                } else {
                    error(e)
                }
            })?;
        file.write_all(format!("{value}\n").as_bytes())
            .map_err(error)
    }
}

/// `net.ipv4.tcp_fin_timeout` -> `/proc/sys/net/ipv4/tcp_fin_timeout`.
/// Only plain names are accepted, so a key can never leave /proc/sys.
pub fn proc_path(key: &str) -> Result<PathBuf, SysctlError> {
    let valid = !key.is_empty()
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !valid {
        return Err(SysctlError::BadKey(key.to_string()));
    }
    Ok(PathBuf::from("/proc/sys").join(key.replace('.', "/")))
}

/// Collapses runs of whitespace (/proc/sys separates fields with tabs,
/// sysctl.d files with spaces) so values compare as text.
pub fn normalize(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_into_proc_sys_only() {
        assert_eq!(
            proc_path("net.ipv4.tcp_fin_timeout").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/tcp_fin_timeout")
        );
        assert_eq!(
            proc_path("net.ipv4.conf.veth-0.rp_filter").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/veth-0/rp_filter")
        );
        for bad in [
            "",
            "net..ipv4",
            "net/ipv4",
            "../etc/passwd",
            "net.ipv4.x y",
            ".net",
        ] {
            assert!(
                matches!(proc_path(bad), Err(SysctlError::BadKey(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn values_compare_after_normalising() {
        assert_eq!(normalize("32768\t60999\n"), "32768 60999");
        assert_eq!(normalize("  4096   131072 6291456 "), "4096 131072 6291456");
    }

    #[test]
    fn reads_a_real_key() {
        let value = ProcSys.read("net.ipv4.ip_local_port_range").unwrap();
        assert_eq!(value.split(' ').count(), 2, "{value}");
        assert_eq!(
            ProcSys.access("net.ipv4.no_such_key").unwrap(),
            Access::Absent
        );
        assert!(matches!(
            ProcSys.read("net.ipv4.no_such_key"),
            Err(SysctlError::Absent(_))
        ));
    }
}
