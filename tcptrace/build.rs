//! Builds the kernel programs (tcptrace-ebpf) with aya-build so the
//! userspace binary embeds them. `AYA_BUILD_SKIP=1` skips it for
//! `cargo check`/`clippy`.
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let ebpf_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tcptrace-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non UTF-8 workspace path"))?;
    // xtask picks the toolchain (nightly, or stable with RUSTC_BOOTSTRAP=1
    // where no nightly is installed).
    println!("cargo:rerun-if-env-changed=TCPTRACE_EBPF_TOOLCHAIN");
    let toolchain = std::env::var("TCPTRACE_EBPF_TOOLCHAIN").unwrap_or_else(|_| "nightly".into());
    // With AYA_BUILD_SKIP=1 (cargo check/clippy) nothing is built; leave an
    // empty object so `include_bytes_aligned!` compiles. Such a binary
    // refuses to trace with a clear message.
    if std::env::var_os("AYA_BUILD_SKIP")
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    {
        let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
        std::fs::write(out.join("tcptrace"), [])?;
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tcptrace-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
