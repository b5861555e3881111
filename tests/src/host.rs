//! Running `tcptrace` for the host-state tests (snapshot, tune, counters)
//! and checking how it ended, plus a scratch directory for its files.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use crate::{Netns, tcptrace_bin};

/// `tcptrace ARGS...` run directly (it may enter a netns itself).
pub fn tcptrace(args: &[&str]) -> Output {
    Command::new(tcptrace_bin())
        .args(args)
        .output()
        .expect("run tcptrace")
}

/// `ip netns exec NS tcptrace ARGS...`
pub fn tcptrace_in(ns: &Netns, args: &[&str]) -> Output {
    ns.command(tcptrace_bin())
        .args(args)
        .output()
        .expect("run tcptrace in netns")
}

/// Stdout of a run that must have succeeded.
pub fn success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "tcptrace failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The error of a run that must have failed: exit 1 and exactly one
/// `tcptrace: ...` line on stderr.
pub fn failure(output: &Output) -> String {
    failure_with(output, 1)
}

/// `failure` with exit status `code` (2: a usage error).
pub fn failure_with(output: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit {code}, stderr: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line of error: {stderr:?}");
    assert!(stderr.starts_with("tcptrace: "), "{stderr:?}");
    stderr.trim_end().to_string()
}

/// The state file `tune --apply` names in its output ("previous values
/// in PATH").
pub fn tune_state_file(apply_output: &str) -> PathBuf {
    let after = apply_output
        .split("previous values in ")
        .nth(1)
        .unwrap_or_else(|| panic!("no state path in: {apply_output}"));
    PathBuf::from(after.split_whitespace().next().unwrap())
}

/// A directory under /tmp removed with everything in it on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("tt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        ScratchDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
