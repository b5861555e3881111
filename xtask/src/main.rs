//! Developer tasks: `cargo xtask setup|build|run|test|bench|vm`.
//! Every task first installs what is missing (see `setup`), so a fresh
//! machine needs nothing done by hand.

mod bench;
mod setup;
mod test;
mod vm;

use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchain pieces and test peers that are missing.
    Setup,
    /// Build the tcptrace binary (release) with its embedded eBPF object.
    Build,
    /// Build, then run tcptrace with these arguments (as root).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Unit tests, then the root integration and scenario tests.
    Test {
        /// Only run tests whose name contains this.
        filter: Option<String>,
    },
    /// Benchmarks (as root): tcptrace against a baseline in the same run;
    /// figures for BENCHMARKS.md.
    Bench {
        #[command(subcommand)]
        what: bench::Bench,
    },
    /// Boot one of Debian's kernels under QEMU (software emulation) and
    /// check that the release binary attaches and decodes events there.
    Vm(vm::VmArgs),
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.task {
        Task::Setup => setup::ensure(setup::Need::Tests).map(drop),
        Task::Build => {
            let env = setup::ensure(setup::Need::Build)?;
            build_release(&env)
        }
        Task::Run { args } => {
            let env = setup::ensure(setup::Need::Build)?;
            build_release(&env)?;
            let status = Command::new(target_dir().join("release/tcptrace"))
                .args(&args)
                .status()
                .context("cannot start target/release/tcptrace")?;
            if !status.success() {
                std::process::exit(status.code().unwrap_or(1));
            }
            Ok(())
        }
        Task::Test { filter } => {
            let env = setup::ensure(setup::Need::Tests)?;
            test::run(&env, filter.as_deref())
        }
        Task::Bench { what } => {
            let env = setup::ensure(setup::Need::Bench)?;
            bench::run(&env, what)
        }
        Task::Vm(args) => {
            let env = setup::ensure(setup::Need::Vm)?;
            vm::run(&env, &args)
        }
    }
}

fn build_release(env: &setup::BuildEnv) -> Result<()> {
    cargo(env, &["build", "--release", "--package", "tcptrace"])
}

/// Runs cargo with the build environment set up; fails on non-zero exit.
pub fn cargo(env: &setup::BuildEnv, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args).current_dir(workspace_root());
    env.apply(&mut cmd);
    let status = cmd
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Cargo's target directory (honours CARGO_TARGET_DIR).
pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), Into::into)
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}
