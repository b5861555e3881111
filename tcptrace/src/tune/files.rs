//! The two files `tune --apply` leaves: the sysctl.d drop-in (the tuning,
//! applied again at boot) and, next to it, the values it replaced (what
//! `--revert` puts back). Both use the `key = value` format of sysctl.d,
//! and both are replaced atomically, never appended to.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

/// First line of every file tune writes; a drop-in without it belongs to
/// someone else and is never overwritten or removed.
pub const MARKER: &str = "# Written by tcptrace tune.";

/// `90-tcptrace.conf` -> `90-tcptrace.conf.before`: beside the drop-in so
/// one `--file` names the whole tuning, and not `*.conf`, so sysctl
/// --system never loads it.
pub fn state_path(drop_in: &Path) -> PathBuf {
    let mut name = drop_in.as_os_str().to_owned();
    name.push(".before");
    PathBuf::from(name)
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

/// Reads a file that may not exist yet.
pub fn read_optional(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `contents` in one step: a reader (or a reboot)
/// sees the old file or the new one, never a part.
pub fn write_atomically(path: &Path, contents: &str) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let temp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Puts a file back as it was before (or removes it if it did not exist).
pub fn restore(path: &Path, before: Option<&str>) -> io::Result<()> {
    match before {
        Some(text) => write_atomically(path, text),
        None => match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
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
        assert_eq!(
            state_path(path),
            PathBuf::from("/etc/sysctl.d/90-tcptrace.conf.before")
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
    fn atomic_write_replaces_and_restore_undoes() {
        let dir = std::env::temp_dir().join(format!("tcptrace-files-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("90-test.conf");
        write_atomically(&path, "one\n").unwrap();
        write_atomically(&path, "two\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left behind"
        );
        restore(&path, Some("one\n")).unwrap();
        assert_eq!(read_optional(&path).unwrap().as_deref(), Some("one\n"));
        restore(&path, None).unwrap();
        assert_eq!(read_optional(&path).unwrap(), None);
        restore(&path, None).unwrap();
        fs::remove_dir(&dir).unwrap();
    }
}
