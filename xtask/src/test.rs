//! `cargo xtask test`: unit tests (no root), then the root integration
//! and scenario tests in `tests/`, one at a time because they share
//! kernel state (attached programs, namespaces, sysctls).

use anyhow::{Result, bail};

use crate::{cargo, setup::BuildEnv, target_dir};

pub fn run(env: &BuildEnv, filter: Option<&str>) -> Result<()> {
    let filter: Vec<&str> = filter.into_iter().collect();
    let mut unit = vec!["test", "--workspace", "--exclude", "tests", "--"];
    unit.extend(&filter);
    cargo(env, &unit)?;

    if euid() != 0 {
        bail!(
            "the integration tests load eBPF programs and create network namespaces: run `cargo xtask test` as root"
        );
    }
    cargo(env, &["build", "--package", "tcptrace"])?;
    let bin = target_dir().join("debug/tcptrace");
    // SAFETY: set before any thread is spawned by this process.
    unsafe { std::env::set_var("TCPTRACE_BIN", &bin) };
    let mut integration = vec!["test", "--package", "tests", "--", "--test-threads=1"];
    integration.extend(&filter);
    cargo(env, &integration)
}

pub fn euid() -> u32 {
    // Avoids a libc dependency for one call: /proc tells the effective uid.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).and_then(|u| u.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}
