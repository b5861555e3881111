//! `cargo xtask test`: unit tests (no root), then the root integration
//! and scenario tests in `tests/`, one at a time because they share
//! kernel state (attached programs, namespaces, sysctls), then the
//! release binary on older kernels in QEMU (`xtask vm`), so a change that
//! breaks them cannot land. CI runs exactly this (`.ci/run`).

use std::time::Instant;

use anyhow::{Result, bail};

use crate::{cargo, setup::BuildEnv, target_dir, vm};

/// The kernels every full test run checks: Debian bookworm's two series.
pub const VM_KERNELS: &[&str] = &["6.1", "6.12"];

/// Skips the kernel checks, like `--no-vm`.
const NO_VM_ENV: &str = "XTASK_NO_VM";

#[derive(clap::Args)]
pub struct TestArgs {
    /// Only run tests whose name contains this (and no kernel checks).
    filter: Option<String>,
    /// Skip the kernel checks in QEMU (also: XTASK_NO_VM=1), for quick
    /// local runs.
    #[arg(long)]
    no_vm: bool,
}

impl TestArgs {
    /// The kernel checks run on a full run unless asked not to.
    pub fn runs_vm(&self) -> bool {
        self.filter.is_none()
            && !self.no_vm
            && std::env::var_os(NO_VM_ENV).is_none_or(|v| v.is_empty() || v == "0")
    }
}

pub fn run(env: &BuildEnv, args: &TestArgs) -> Result<()> {
    let started = Instant::now();
    let filter: Vec<&str> = args.filter.as_deref().into_iter().collect();
    let mut unit = vec!["test", "--workspace", "--exclude", "tests", "--"];
    unit.extend(&filter);
    cargo(env, "the unit tests", &unit)?;

    if euid() != 0 {
        bail!(
            "the integration tests load eBPF programs and create network namespaces: run `cargo xtask test` as root"
        );
    }
    cargo(env, "tcptrace (debug)", &["build", "--package", "tcptrace"])?;
    let bin = target_dir().join("debug/tcptrace");
    // SAFETY: set before any thread is spawned by this process.
    unsafe {
        std::env::set_var("TCPTRACE_BIN", &bin);
        // The deploy tests' validator (installed by setup).
        std::env::set_var("TCPTRACE_DEPLOY_VENV", crate::setup::validator_venv_dir());
    }
    let mut integration = vec!["test", "--package", "tests", "--", "--test-threads=1"];
    integration.extend(&filter);
    cargo(env, "the root tests", &integration)?;
    eprintln!(
        "xtask: unit and root tests passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    if !args.runs_vm() {
        return Ok(());
    }
    eprintln!(
        "xtask: checking the release binary on kernels {} in QEMU (skip: --no-vm or {NO_VM_ENV}=1)",
        VM_KERNELS.join(" and ")
    );
    for kernel in VM_KERNELS {
        vm::run(env, &vm::VmArgs::for_kernel(kernel))?;
    }
    eprintln!(
        "xtask: all tests and kernel checks passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
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
