//! Puts the kernel programs (tcptrace-ebpf) into `OUT_DIR/tcptrace`, which
//! the binary embeds with `include_bytes_aligned!`:
//! - `TCPTRACE_EBPF_OBJECT=PATH` (set by `cargo xtask`, which builds the
//!   object once for every profile): copy that object;
//! - `AYA_BUILD_SKIP=1` (`cargo check`/`clippy`): an empty object; such a
//!   binary refuses to trace with a clear message;
//! - otherwise (a plain `cargo build`): build it here, quietly; only real
//!   warnings are relayed, and errors fail the build.
use std::{
    env, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use tcptrace_build::{EbpfBuild, OBJECT_ENV, OBJECT_NAME, Progress, TOOLCHAIN_ENV};

fn main() {
    // Not `main() -> Result`: that prints a backtrace under RUST_BACKTRACE,
    // burying the compiler's message in the build script's stderr.
    if let Err(err) = run() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    for var in [
        OBJECT_ENV,
        TOOLCHAIN_ENV,
        "AYA_BUILD_SKIP",
        "RUSTC_BOOTSTRAP",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let object = out_dir.join(OBJECT_NAME);

    if let Some(prebuilt) = env::var_os(OBJECT_ENV) {
        let prebuilt = PathBuf::from(prebuilt);
        println!("cargo:rerun-if-changed={}", prebuilt.display());
        fs::copy(&prebuilt, &object).with_context(|| {
            format!(
                "{OBJECT_ENV}={}: cannot copy the eBPF object",
                prebuilt.display()
            )
        })?;
        return Ok(());
    }
    if env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        fs::write(&object, [])?;
        return Ok(());
    }

    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    // The object depends on the eBPF crate and the record layouts it
    // shares with userspace.
    for dir in ["tcptrace-ebpf", "tcptrace-common"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    let toolchain = env::var(TOOLCHAIN_ENV).unwrap_or_else(|_| "nightly".into());
    let target_dir = out_dir.join("ebpf-target");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?;
    let big_endian = env::var("CARGO_CFG_TARGET_ENDIAN").is_ok_and(|e| e == "big");
    let mut diagnostics = Vec::new();
    let built = EbpfBuild {
        workspace,
        toolchain: &toolchain,
        target_dir: &target_dir,
        arch: &arch,
        big_endian,
        color: false,
    }
    .run(|progress| {
        if let Progress::Diagnostic(line) = progress {
            diagnostics.push(line.to_string());
        }
    });
    match built {
        Ok(path) => {
            // Only real warnings reach here; cargo shows them.
            for line in &diagnostics {
                println!("cargo:warning={line}");
            }
            fs::copy(&path, &object).with_context(|| format!("cannot copy {}", path.display()))?;
            Ok(())
        }
        Err(err) => {
            // Cargo prints a failed build script's stderr.
            for line in &diagnostics {
                eprintln!("{line}");
            }
            bail!("{err:#}")
        }
    }
}
