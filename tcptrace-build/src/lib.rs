//! Builds the kernel programs (the `tcptrace-ebpf` crate) into one BPF
//! object, quietly: cargo's progress lines (`Compiling ...`, `Finished
//! ...`) are dropped, real warnings and errors are handed to the caller.
//!
//! Two callers share it so the build is described once:
//! - `tcptrace/build.rs`, when nobody built the object for it (a plain
//!   `cargo build`); it forwards the diagnostics as `cargo:warning=`;
//! - `cargo xtask`, which builds the object once for every profile
//!   (debug tests, release binary) before building tcptrace, prints one
//!   line when it really compiles, and passes the object's path to
//!   build.rs in [`OBJECT_ENV`].
//!
//! aya-build 0.2 does the same build but relays every line the inner
//! cargo prints, `Compiling ...` included, as a build-script warning:
//! some 35 `warning: tcptrace@0.1.0: Compiling ...` lines on a first
//! build. The command line here is the one aya-build runs.

use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The eBPF crate and the name of its one binary (the object).
pub const PACKAGE: &str = "tcptrace-ebpf";
pub const OBJECT_NAME: &str = "tcptrace";
/// A path to an already built object; build.rs embeds it instead of
/// building.
pub const OBJECT_ENV: &str = "TCPTRACE_EBPF_OBJECT";
/// The rustup toolchain that builds the eBPF crate (`nightly`, or
/// `stable` with `RUSTC_BOOTSTRAP=1`); `nightly` when unset.
pub const TOOLCHAIN_ENV: &str = "TCPTRACE_EBPF_TOOLCHAIN";

/// What the build reports while it runs.
pub enum Progress<'a> {
    /// The first crate really compiles (nothing was up to date): say
    /// something, this takes a while.
    Compiling,
    /// A line of a real warning or error (compiler diagnostics, cargo's
    /// own warnings), as cargo printed it.
    Diagnostic(&'a str),
}

/// One build of the eBPF object.
pub struct EbpfBuild<'a> {
    /// The workspace root (holds `tcptrace-ebpf/`).
    pub workspace: &'a Path,
    /// Rustup toolchain name, see [`TOOLCHAIN_ENV`].
    pub toolchain: &'a str,
    /// Cargo target directory of the eBPF build; keep it apart from the
    /// outer build's (cargo would wait on its own lock).
    pub target_dir: &'a Path,
    /// The host's architecture as `target_arch` spells it (`x86_64`): the
    /// programs read `pt_regs` and syscall layouts of that architecture.
    pub arch: &'a str,
    /// Big-endian host (`bpfeb`); little-endian (`bpfel`) otherwise.
    pub big_endian: bool,
    /// Ask cargo for colours (its stderr is a pipe here).
    pub color: bool,
}

impl EbpfBuild<'_> {
    /// Runs `cargo build` of the eBPF crate and returns the object's path
    /// (inside `target_dir`). Fails when cargo fails; the reasons were
    /// given to `progress` as diagnostics.
    pub fn run(&self, mut progress: impl FnMut(Progress<'_>)) -> Result<PathBuf> {
        let target = format!(
            "{}-unknown-none",
            if self.big_endian { "bpfeb" } else { "bpfel" }
        );
        let mut cmd = cargo_of(self.toolchain);
        cmd.current_dir(self.workspace)
            .args(["build", "--package", PACKAGE, "--bins", "--release"])
            .args(["--target", &target])
            // build-std: there is no prebuilt `core` for the BPF targets.
            .args(["-Z", "build-std=core"])
            .arg("--message-format=json-render-diagnostics")
            .arg(format!(
                "--color={}",
                if self.color { "always" } else { "never" }
            ))
            .arg("--target-dir")
            .arg(self.target_dir)
            .env("CARGO_ENCODED_RUSTFLAGS", rustflags(self.arch))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The toolchain rustup picks must be the one named here, not the
        // one of the process that runs this (a build script under stable).
        for key in ["RUSTC", "RUSTC_WORKSPACE_WRAPPER", "RUSTC_WRAPPER"] {
            cmd.env_remove(key);
        }
        if !self.toolchain.starts_with("nightly") {
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start cargo to build {PACKAGE}"))?;
        let stdout = child.stdout.take().context("cargo stdout")?;
        let artifacts = std::thread::spawn(move || executables(BufReader::new(stdout)));
        let stderr = child.stderr.take().context("cargo stderr")?;
        let mut compiling = false;
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading cargo's output")?;
            match classify(&line) {
                CargoLine::Compiling if !compiling => {
                    compiling = true;
                    progress(Progress::Compiling);
                }
                CargoLine::Compiling | CargoLine::Progress => {}
                CargoLine::Other => progress(Progress::Diagnostic(&line)),
            }
        }
        let status = child.wait().context("waiting for cargo")?;
        let artifacts = artifacts
            .join()
            .map_err(|_| anyhow::anyhow!("reading cargo's messages: thread panicked"))??;
        if !status.success() {
            bail!("cargo build of {PACKAGE} failed ({status})");
        }
        artifacts
            .into_iter()
            .find(|(name, _)| name == OBJECT_NAME)
            .map(|(_, path)| path)
            .with_context(|| {
                format!("cargo built {PACKAGE} but reported no `{OBJECT_NAME}` binary")
            })
    }
}

/// `rustup run TOOLCHAIN cargo`, or plain `cargo` on a machine without
/// rustup (its cargo must then be able to build for BPF).
fn cargo_of(toolchain: &str) -> Command {
    let rustup = Command::new("rustup")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if rustup.is_ok_and(|s| s.success()) {
        let mut cmd = Command::new("rustup");
        cmd.args(["run", toolchain, "cargo"]);
        cmd
    } else {
        Command::new("cargo")
    }
}

/// The flags aya-build passes: the architecture the programs are built
/// for, full debug info and BTF (the loader needs both).
fn rustflags(arch: &str) -> OsString {
    [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
    ]
    .join("\x1f")
    .into()
}

/// (target name, path) of every executable cargo reports building.
fn executables(stdout: impl std::io::BufRead) -> Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    for line in stdout.lines() {
        let line = line.context("reading cargo's messages")?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue; // not JSON: a build script's own output
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(name), Some(path)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            found.push((name.to_string(), PathBuf::from(path)));
        }
    }
    Ok(found)
}

/// What a line cargo prints on stderr is.
#[derive(Debug, PartialEq, Eq)]
pub enum CargoLine {
    /// `   Compiling NAME vX`: a crate is being built.
    Compiling,
    /// Other build progress (`Finished`, `Downloaded`, `Updating`, ...),
    /// noise once the build works.
    Progress,
    /// Anything else: a warning or error, or a line worth keeping
    /// (`Running` of a test binary).
    Other,
}

/// Cargo's status lines are a right-aligned verb and its object
/// (`   Compiling core v0.0.0`), possibly coloured.
pub fn classify(line: &str) -> CargoLine {
    const PROGRESS: &[&str] = &[
        "Finished",
        "Checking",
        "Fresh",
        "Downloading",
        "Downloaded",
        "Updating",
        "Locking",
        "Adding",
        "Blocking",
        "Building",
        "Unpacking",
    ];
    let plain = strip_ansi(line);
    if !plain.starts_with(' ') {
        return CargoLine::Other;
    }
    let verb = plain.split_whitespace().next().unwrap_or_default();
    if verb == "Compiling" {
        CargoLine::Compiling
    } else if PROGRESS.contains(&verb) {
        CargoLine::Progress
    } else {
        CargoLine::Other
    }
}

/// The text of a line without its colour escapes (`ESC [ ... m`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_dropped_diagnostics_kept() {
        assert_eq!(
            classify("   Compiling core v0.0.0 (/x)"),
            CargoLine::Compiling
        );
        assert_eq!(
            classify("\x1b[1m\x1b[32m   Compiling\x1b[0m aya-ebpf v0.2.1"),
            CargoLine::Compiling
        );
        assert_eq!(
            classify("    Finished `release` profile [optimized] target(s) in 4m 14s"),
            CargoLine::Progress
        );
        assert_eq!(classify("  Downloaded syn v2.0.1"), CargoLine::Progress);
        assert_eq!(classify(" Downloading crates ..."), CargoLine::Progress);
        for diagnostic in [
            "warning: unused variable: `x`",
            "  --> src/main.rs:3:9",
            "   |",
            "error: could not compile `tcptrace-ebpf` (bin \"tcptrace\") due to 1 previous error",
            "error[E0425]: cannot find value `y` in this scope",
            "",
            "     Running unittests src/lib.rs (target/debug/deps/tcptrace-1)",
        ] {
            assert_eq!(classify(diagnostic), CargoLine::Other, "{diagnostic:?}");
        }
    }

    #[test]
    fn finds_the_object_among_cargos_messages() {
        let stdout = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"core"},"executable":null}"#,
            "\n",
            "not json from a build script\n",
            r#"{"reason":"compiler-artifact","target":{"name":"tcptrace"},"executable":"/t/bpfel-unknown-none/release/tcptrace"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\n",
        );
        let found = executables(stdout.as_bytes()).unwrap();
        assert_eq!(
            found,
            vec![(
                "tcptrace".to_string(),
                PathBuf::from("/t/bpfel-unknown-none/release/tcptrace")
            )]
        );
    }

    #[test]
    fn rustflags_are_unit_separated() {
        let flags = rustflags("x86_64");
        let flags = flags.to_str().unwrap();
        assert_eq!(
            flags.split('\x1f').collect::<Vec<_>>(),
            [
                "--cfg=bpf_target_arch=\"x86_64\"",
                "-Cdebuginfo=2",
                "-Clink-arg=--btf"
            ]
        );
    }

    #[test]
    fn ansi_escapes_are_stripped() {
        assert_eq!(strip_ansi("\x1b[1m\x1b[33mwarning\x1b[0m: x"), "warning: x");
        assert_eq!(strip_ansi("plain"), "plain");
    }
}
