//! Developer tasks: `cargo xtask setup|build|run|test|bench|vm`.
//! Every task first installs what is missing (see `setup`), so a fresh
//! machine needs nothing done by hand.

mod bench;
mod setup;
mod test;
mod vm;

use std::{
    io::{BufRead as _, BufReader, IsTerminal as _},
    process::{Command, ExitCode, Stdio},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use tcptrace_build::{CargoLine, classify};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchain pieces, test peers and QEMU that are missing.
    Setup,
    /// Build the tcptrace binary (release) with its embedded eBPF object.
    Build,
    /// Build, then run tcptrace with these arguments (as root).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Unit tests, then the root integration and scenario tests, then
    /// (without a filter) the release binary on Debian's 6.1 and 6.12
    /// kernels in QEMU, as `xtask vm` does.
    Test(test::TestArgs),
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
        Task::Setup => setup::ensure(setup::Need::TestsAndVm).map(drop),
        Task::Build => {
            let env = setup::ensure(setup::Need::Build)?.with_ebpf()?;
            build_release(&env)
        }
        Task::Run { args } => {
            let env = setup::ensure(setup::Need::Build)?.with_ebpf()?;
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
        Task::Test(args) => {
            let need = if args.runs_vm() {
                setup::Need::TestsAndVm
            } else {
                setup::Need::Tests
            };
            let env = setup::ensure(need)?.with_ebpf()?;
            test::run(&env, &args)
        }
        Task::Bench { what } => {
            let env = setup::ensure(setup::Need::Bench)?.with_ebpf()?;
            bench::run(&env, what)
        }
        Task::Vm(args) => {
            let env = setup::ensure(setup::Need::Vm)?.with_ebpf()?;
            vm::run(&env, &args)
        }
    }
}

fn build_release(env: &setup::BuildEnv) -> Result<()> {
    cargo(
        env,
        "tcptrace (release)",
        &["build", "--release", "--package", "tcptrace"],
    )
}

/// Runs cargo with the build environment set up; fails on non-zero exit.
///
/// Quiet: cargo's progress lines (`Compiling ...`, `Finished ...`) are
/// replaced by one `xtask: building WHAT ...` line when something really
/// compiles; warnings, errors and test output pass through.
pub fn cargo(env: &setup::BuildEnv, what: &str, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    let (subcommand, rest) = args.split_first().context("cargo without a subcommand")?;
    cmd.arg(subcommand);
    // Cargo only colours a terminal; its stderr is a pipe to us.
    if std::io::stderr().is_terminal() {
        cmd.arg("--color=always");
    }
    cmd.args(rest)
        .current_dir(workspace_root())
        .stderr(Stdio::piped());
    env.apply(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    let stderr = child.stderr.take().context("cargo stderr")?;
    let mut announced = false;
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading cargo's output")?;
        match classify(&line) {
            CargoLine::Compiling if !announced => {
                announced = true;
                eprintln!("xtask: building {what} ...");
            }
            CargoLine::Compiling | CargoLine::Progress => {}
            CargoLine::Other => eprintln!("{line}"),
        }
    }
    let status = child.wait().context("waiting for cargo")?;
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
