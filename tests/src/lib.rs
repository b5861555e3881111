//! Shared harness for the root integration tests: throw-away network
//! namespaces, veth links and helpers to run code inside them. Everything
//! is undone in `Drop`, so a failed assertion leaves the host as it was.
//!
//! Traffic stays inside namespaces made here: addresses come from the
//! benchmarking range 198.18.0.0/15 and the documentation prefix
//! 2001:db8::/32, which never leave this machine.

pub mod browser;
pub mod delay;
pub mod diagnose;
pub mod exporter;
pub mod haproxy;
pub mod host;
pub mod hostglobal;
pub mod http;
pub mod netns;
pub mod nginx;
pub mod peer;
pub mod server;
pub mod sockets;
pub mod sockopt;
pub mod trace;

pub use netns::{Netns, NetnsPair, Routed};
pub use sockopt::set_linger_zero;
pub use trace::{Records, Trace, owner_pid};

/// Runs a command and panics with its output if it fails.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Path of the built `tcptrace` binary (set by `cargo xtask test`, or
/// found next to the test executable).
pub fn tcptrace_bin() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("TCPTRACE_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("tcptrace");
    assert!(
        bin.exists(),
        "{} missing: run the tests through `cargo xtask test`",
        bin.display()
    );
    bin
}

/// Skips nothing: root tests are meant to run as root; say so clearly.
pub fn require_root() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "root integration tests must run as root (cargo xtask test)"
    );
}

/// Kills a child started with `Netns::command` and everything it forked
/// (its process group), then reaps it: no orphaned nginx workers.
pub fn kill_group(child: &mut std::process::Child) {
    // SAFETY: kill(2) on a process group we created.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.kill();
    let _ = child.wait();
}
