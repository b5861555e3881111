//! The files `tune --apply` leaves: the sysctl.d drop-in (the tuning,
//! applied again at boot) and the values it replaced (what `--revert`
//! puts back), kept in a state directory only root can write, because
//! whatever that file lists is written into the kernel as root. Both use
//! the `key = value` format of sysctl.d and are replaced atomically
//! through [`crate::safe_file`], never appended to.

use std::path::{Path, PathBuf};

use super::{TuneError, settings};
use crate::safe_file::{self, SafeFileError};

/// First line of every file tune writes; a drop-in without it belongs to
/// someone else and is never overwritten or removed.
pub const MARKER: &str = "# Written by tcptrace tune.";

/// Where `--apply` keeps the values it replaced unless `--state-dir` says
/// otherwise: root's own, mode 0700, as /var/lib is meant for.
pub const STATE_DIR: &str = "/var/lib/tcptrace";

/// The paths of one tuning: the drop-in named by `--file`, its saved
/// values and the lock every `--apply`/`--revert` holds while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// The sysctl drop-in file (`--file`).
    pub drop_in: PathBuf,
    /// The values it replaced: `STATE_DIR/tune-NAME-HASH.before`.
    pub state: PathBuf,
    /// Held by every `--apply`/`--revert` while it runs.
    pub lock: PathBuf,
}

impl Tuning {
    /// The state file is named after the drop-in's real path
    /// (`tune-90-tcptrace.conf-<FNV-1a of /etc/sysctl.d/90-tcptrace.conf>.before`),
    /// so two drop-ins never share saved values, and `./x.conf` and its
    /// absolute path do. Fails if the drop-in's directory does not exist.
    pub fn locate(drop_in: &Path, state_dir: &Path) -> Result<Tuning, TuneError> {
        let name = drop_in
            .file_name()
            .ok_or_else(|| TuneError::BadFile {
                path: drop_in.to_path_buf(),
                reason: "not a file name".into(),
            })?
            .to_string_lossy()
            .into_owned();
        let parent = drop_in
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let real = std::fs::canonicalize(parent)
            .map_err(|source| {
                TuneError::Unsafe(SafeFileError::Io {
                    action: "find the directory of",
                    path: drop_in.to_path_buf(),
                    source,
                })
            })?
            .join(&name);
        let key = fnv1a(real.as_os_str().as_encoded_bytes());
        Ok(Tuning {
            drop_in: drop_in.to_path_buf(),
            state: state_dir.join(format!("tune-{name}-{key:016x}.before")),
            lock: state_dir.join("tune.lock"),
        })
    }
}

/// 64-bit FNV-1a: stable across versions, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub fn render_drop_in(profile: &str, entries: &[(&str, &str)], drop_in: &Path) -> String {
    let mut text = format!(
        "{MARKER}\n# Profile: {profile}. Undo with: tcptrace tune --revert --file {}\n",
        drop_in.display()
    );
    for (key, value) in entries {
        text.push_str(&format!("{key} = {value}\n"));
    }
    text
}

pub fn render_state(previous: &[(String, String)], drop_in: &Path) -> String {
    let mut text = format!(
        "{MARKER}\n# Values before {} was applied; tcptrace tune --revert restores them.\n",
        drop_in.display()
    );
    for (key, value) in previous {
        text.push_str(&format!("{key} = {value}\n"));
    }
    text
}

pub fn is_ours(text: &str) -> bool {
    text.starts_with(MARKER)
}

/// Parses sysctl.d text: `key = value` lines, `#` and `;` comments.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected 'key = value', got {line:?}", number + 1))?;
        let (key, value) = (key.trim(), crate::host::sysctl::normalize(value));
        crate::host::sysctl::proc_path(key).map_err(|e| format!("line {}: {e}", number + 1))?;
        entries.push((key.to_string(), value));
    }
    Ok(entries)
}

/// Parses saved values: only keys of tune's own catalogue are accepted,
/// so a state file can never make root write `kernel.core_pattern` or
/// anything else tune does not manage.
pub fn parse_state(text: &str) -> Result<Vec<(String, String)>, String> {
    let entries = parse(text)?;
    if let Some((key, _)) = entries
        .iter()
        .find(|(key, _)| settings::find(key).is_none())
    {
        return Err(format!(
            "{key} is not a key tune manages; refusing the whole file"
        ));
    }
    Ok(entries)
}

/// Reads a file tune wrote: `None` if there is none; refused (nothing
/// read) if it is a link, someone else's, or lacks the marker line.
pub fn read_ours(path: &Path) -> Result<Option<String>, TuneError> {
    match safe_file::read_trusted(path)? {
        Some(text) if !is_ours(&text) => Err(TuneError::NotOurs(path.to_path_buf())),
        found => Ok(found),
    }
}

/// Puts a file back as it was before (or removes it if it did not exist).
pub fn restore(path: &Path, before: Option<&str>) -> Result<(), SafeFileError> {
    match before {
        Some(text) => safe_file::write_atomically(path, text.as_bytes()),
        None => safe_file::remove(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_in_round_trips_through_the_parser() {
        let path = Path::new("/etc/sysctl.d/90-tcptrace.conf");
        let text = render_drop_in(
            "proxy",
            &[
                ("net.core.somaxconn", "16384"),
                ("net.ipv4.ip_local_port_range", "10240 65535"),
            ],
            path,
        );
        assert!(is_ours(&text));
        assert!(text.contains("tcptrace tune --revert --file /etc/sysctl.d/90-tcptrace.conf"));
        assert_eq!(
            parse(&text).unwrap(),
            vec![
                ("net.core.somaxconn".to_string(), "16384".to_string()),
                (
                    "net.ipv4.ip_local_port_range".to_string(),
                    "10240 65535".to_string()
                ),
            ]
        );
    }

    #[test]
    fn parser_accepts_sysctl_d_syntax_and_refuses_garbage() {
        let entries =
            parse("; comment\n\n  net.ipv4.tcp_fin_timeout=30\nkernel.x =  a\tb \n").unwrap();
        assert_eq!(entries[0], ("net.ipv4.tcp_fin_timeout".into(), "30".into()));
        assert_eq!(entries[1], ("kernel.x".into(), "a b".into()));
        assert!(parse("just words\n").unwrap_err().starts_with("line 1:"));
        assert!(
            parse("# ok\n../../etc = 1\n")
                .unwrap_err()
                .starts_with("line 2:")
        );
        assert!(!is_ours("net.core.somaxconn = 1\n"));
    }

    #[test]
    fn state_files_hold_only_catalogue_keys() {
        let saved = parse_state(&format!(
            "{MARKER}\nnet.ipv4.tcp_fin_timeout = 60\nnet.core.somaxconn = 4096\n"
        ))
        .unwrap();
        assert_eq!(saved.len(), 2);
        let err = parse_state(&format!(
            "{MARKER}\nnet.ipv4.tcp_fin_timeout = 60\nkernel.core_pattern = |/tmp/x\n"
        ))
        .unwrap_err();
        assert!(
            err.starts_with("kernel.core_pattern is not a key tune manages"),
            "{err}"
        );
    }

    #[test]
    fn state_is_named_after_the_real_drop_in_path() {
        let state = Path::new("/var/lib/tcptrace");
        let by_abs = Tuning::locate(Path::new("/etc/sysctl.d/90-tcptrace.conf"), state).unwrap();
        let by_rel = Tuning::locate(Path::new("/etc/./sysctl.d/90-tcptrace.conf"), state).unwrap();
        assert_eq!(by_abs.state, by_rel.state);
        let name = by_abs.state.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("tune-90-tcptrace.conf-") && name.ends_with(".before"),
            "{name}"
        );
        let other = Tuning::locate(Path::new("/tmp/90-tcptrace.conf"), state).unwrap();
        assert_ne!(other.state, by_abs.state);
        assert_eq!(by_abs.lock, state.join("tune.lock"));
        assert!(Tuning::locate(Path::new("/no/such/dir/x.conf"), state).is_err());
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
