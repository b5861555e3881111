//! Installs what building and testing need, only when it is missing, with
//! one line each saying what and why (the installers' own output is kept
//! for when they fail). A second run installs nothing. Then builds the
//! eBPF object once for every cargo build that follows.

use std::{
    io::IsTerminal as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use tcptrace_build::{EbpfBuild, OBJECT_ENV, Progress, TOOLCHAIN_ENV};

/// What the caller is about to do.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Build the binary (toolchain only).
    Build,
    /// Build and run the test suites (plus the real peers they drive).
    Tests,
    /// The test suites, then the kernel checks in QEMU.
    TestsAndVm,
    /// Benchmarks: the test peers plus the reference tracers.
    Bench,
    /// `xtask vm`: build, plus QEMU and a static busybox for the VM.
    Vm,
}

/// Environment the builds must run with.
pub struct BuildEnv {
    ebpf_toolchain: &'static str,
    /// The eBPF object built by [`BuildEnv::with_ebpf`], embedded by
    /// every tcptrace build (debug, release) instead of each building it.
    ebpf_object: Option<PathBuf>,
}

impl BuildEnv {
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env(TOOLCHAIN_ENV, self.ebpf_toolchain);
        if self.ebpf_toolchain != "nightly" {
            // Stable can build the eBPF crate (build-std) when told to.
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        if let Some(object) = &self.ebpf_object {
            cmd.env(OBJECT_ENV, object);
        }
    }

    /// Builds the eBPF object (one line when it really compiles, real
    /// warnings and errors only) for the builds that follow.
    pub fn with_ebpf(mut self) -> Result<BuildEnv> {
        let workspace = crate::workspace_root();
        let target_dir = crate::target_dir().join("ebpf");
        let object = EbpfBuild {
            workspace: &workspace,
            toolchain: self.ebpf_toolchain,
            target_dir: &target_dir,
            arch: std::env::consts::ARCH,
            big_endian: cfg!(target_endian = "big"),
            color: std::io::stderr().is_terminal(),
        }
        .run(|progress| match progress {
            Progress::Compiling => eprintln!("xtask: building the eBPF programs ..."),
            Progress::Diagnostic(line) => eprintln!("{line}"),
        })?;
        self.ebpf_object = Some(object);
        Ok(self)
    }
}

const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages: (package, why).
const BUILD_PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "bpf-linker links eBPF objects with LLVM 22"),
    ("libpolly-22-dev", "bpf-linker's LLVM 22 link needs Polly"),
];
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "tests build network namespaces and veth links"),
    (
        "iptables",
        "tests drop or queue packets to make loss and delay",
    ),
    ("procps", "tests read and write sysctls"),
    (
        "haproxy",
        "scenario tests put a real load balancer in front of backends",
    ),
    ("nginx-light", "scenario tests use a real HTTP server"),
    (
        "tshark",
        "tests read the --pcap files back with Wireshark's reader",
    ),
    (
        "chromium",
        "the report test renders diagnose's HTML page headless to a PNG",
    ),
    (
        "tmux",
        "the top test types keys into the TUI and reads its screen",
    ),
    (
        "prometheus",
        "exporter tests scrape tcptrace with a real Prometheus (promtool checks the alert rules)",
    ),
    (
        "python3-venv",
        "deploy tests validate the Kubernetes manifests with kubernetes-validate in a venv",
    ),
];

/// The manifest validator (PyPI), pinned: installed into a venv under
/// target/ for the deploy tests.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

const BENCH_PACKAGES: &[(&str, &str)] = &[
    (
        "libbpf-tools",
        "the overhead benchmark compares with libbpf-tools tcpstates",
    ),
    (
        "bpftrace",
        "the overhead benchmark compares with bpftrace counting the same tracepoints in maps",
    ),
];

const VM_PACKAGES: &[(&str, &str)] = &[
    (
        "qemu-system-x86",
        "`xtask vm` boots other kernels in QEMU (software emulation)",
    ),
    (
        "busybox-static",
        "`xtask vm` puts a static shell and nc in the VM's initramfs",
    ),
];

pub fn ensure(need: Need) -> Result<BuildEnv> {
    let mut packages: Vec<(&str, &str)> = BUILD_PACKAGES.to_vec();
    if matches!(need, Need::Tests | Need::TestsAndVm | Need::Bench) {
        packages.extend_from_slice(TEST_PACKAGES);
    }
    if matches!(need, Need::Vm | Need::TestsAndVm) {
        packages.extend_from_slice(VM_PACKAGES);
    }
    if need == Need::Bench {
        packages.extend_from_slice(BENCH_PACKAGES);
    }
    apt_install(&packages)?;
    if matches!(need, Need::Tests | Need::TestsAndVm) {
        validator_venv()?;
    }
    let ebpf_toolchain = rust_src()?;
    bpf_linker()?;
    Ok(BuildEnv {
        ebpf_toolchain,
        ebpf_object: None,
    })
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

fn apt_install(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&(&str, &str)> = packages.iter().filter(|(p, _)| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (package, why) in &missing {
        eprintln!("xtask: installing {package} (apt): {why}");
    }
    run(
        Command::new("apt-get").arg("update").arg("-qq"),
        "apt-get update",
    )?;
    let mut cmd = Command::new("apt-get");
    cmd.args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(missing.iter().map(|(p, _)| *p))
        .env("DEBIAN_FRONTEND", "noninteractive");
    // dpkg's "Unpacking ... / Setting up ..." ignore apt's -qq.
    run(&mut cmd, "apt-get install")
}

/// The venv under target/ that holds kubernetes-validate.
pub fn validator_venv_dir() -> PathBuf {
    crate::target_dir().join("deploy-venv")
}

/// kubernetes-validate (and PyYAML, which it brings) in a venv of
/// Debian's python3 under target/, made once.
fn validator_venv() -> Result<()> {
    let venv = validator_venv_dir();
    if venv.join("bin/kubernetes-validate").exists() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing {KUBERNETES_VALIDATE} (pip, into {}): the deploy/ manifests are checked against Kubernetes' schemas",
        venv.display()
    );
    run(
        Command::new("/usr/bin/python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            KUBERNETES_VALIDATE,
        ]),
        "pip install kubernetes-validate",
    )
}

/// The eBPF crate is built with `-Z build-std=core`, which needs rust-src.
/// Prefer the machine's nightly; fall back to stable + RUSTC_BOOTSTRAP.
fn rust_src() -> Result<&'static str> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    let toolchain = if toolchains.lines().any(|l| l.starts_with("nightly")) {
        "nightly"
    } else {
        "stable"
    };
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        toolchain,
    ]))?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!(
            "xtask: installing rust-src for the {toolchain} toolchain (rustup): the eBPF crate builds core from source"
        );
        run(
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", toolchain]),
            "rustup component add",
        )?;
    }
    Ok(toolchain)
}

fn bpf_linker() -> Result<()> {
    let current = Command::new("bpf-linker").arg("--version").output();
    if current.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    eprintln!(
        "xtask: installing bpf-linker {BPF_LINKER_VERSION} (cargo, ~1 min): links the eBPF object, built against Debian's LLVM 22"
    );
    let mut cmd = Command::new("cargo");
    cmd.args([
        "install",
        "--quiet",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--no-default-features",
        "--features",
        "llvm-22",
    ])
    .env("LLVM_PREFIX", "/usr/lib/llvm-22");
    run(&mut cmd, "cargo install bpf-linker")
}

/// Runs an installer with its output kept aside: shown only if it fails.
fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {what}"))?;
    if !out.status.success() {
        eprint!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        bail!("{what} failed ({}); its output is above", out.status);
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
