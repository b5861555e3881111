//! `cargo xtask vm --kernel 6.1`: boots one of Debian's kernels under
//! QEMU (software emulation: no KVM needed) with a tiny initramfs that
//! runs the release `tcptrace trace --json --events all` against loopback
//! traffic inside the VM (refused connects, an established connection, an
//! active reset, a send after an idle second, a SYN dropped by a full
//! accept queue), then prints the events, the tracer's warnings and the
//! kernel's tracepoint format files. Fails if the tracer could not attach
//! something on that kernel (other than the limits docs/kernels.md names
//! for it, which must then be said), or the events are missing or decoded
//! wrong: connects, resets, SYN retransmits with their segment figures,
//! drops (`NO_SOCKET` for the refused connects), socket errors
//! (`ECONNREFUSED`, `ECONNRESET`) and reuse after idle where the kernel
//! has a hook for it (6.12: the `sock_send_length` fallback; 6.1: none,
//! said by name).
//!
//! No network is involved: the VM has no NIC, only its own loopback.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::{cargo, setup::BuildEnv, target_dir};

#[derive(clap::Args)]
pub struct VmArgs {
    /// Debian kernel series to boot (bookworm has 6.1 and 6.12).
    #[arg(long, default_value = "6.1")]
    kernel: String,
    /// Kernel flavour: `cloud` (26 MB download) or `amd64` (generic, 70 MB).
    #[arg(long, default_value = "cloud")]
    flavor: String,
    /// Stop the VM after this many seconds, whatever it is doing.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Also write the kernel's format files here, named like the parser's
    /// fixtures (`<tracepoint>-<series>.format`).
    #[arg(long)]
    save_formats: Option<PathBuf>,
}

impl VmArgs {
    /// The defaults, for one kernel series (what `cargo xtask test` runs).
    pub fn for_kernel(kernel: &str) -> VmArgs {
        VmArgs {
            kernel: kernel.to_string(),
            flavor: "cloud".into(),
            timeout: 300,
            save_formats: None,
        }
    }
}

/// Tracepoints whose format files the VM prints (an empty section: the
/// kernel has no such tracepoint).
const FORMATS: &[&str] = &[
    "sock/inet_sock_set_state",
    "tcp/tcp_send_reset",
    "tcp/tcp_receive_reset",
    "tcp/tcp_retransmit_skb",
    "tcp/tcp_retransmit_synack",
    "skb/kfree_skb",
    "sock/inet_sk_error_report",
    "tcp/tcp_sendmsg_locked",
    "sock/sock_send_length",
];

const MARK: &str = "=== tcptrace-vm:";

/// `--reuse-idle` in the VM, and the idle gap its client makes between
/// two sends on one connection (the `sleep 1` in `INIT`).
const REUSE_IDLE_MS: u64 = 300;
const REUSE_GAP_MS: u64 = 1000;

pub fn run(env: &BuildEnv, args: &VmArgs) -> Result<()> {
    let started = Instant::now();
    cargo(
        env,
        "tcptrace (release)",
        &["build", "--release", "--package", "tcptrace"],
    )?;
    cargo(
        env,
        "the VM's test peer (release)",
        &["build", "--release", "--package", "tests", "--bin", "peer"],
    )?;
    let release = target_dir().join("release");
    let work = target_dir().join("vm");
    fs::create_dir_all(&work)?;

    let kernel = fetch_kernel(&work, &args.kernel, &args.flavor)?;
    let initramfs = work.join(format!("initramfs-{}.cpio", args.kernel));
    build_initramfs(
        &initramfs,
        &release.join("tcptrace"),
        &release.join("peer"),
        &kernel.config,
    )?;
    eprintln!(
        "xtask: booting {} under QEMU (TCG, at most {} s)",
        kernel.package, args.timeout
    );
    let console_path = work.join(format!("console-{}.log", args.kernel));
    let boot_started = Instant::now();
    let console = boot(
        &kernel.vmlinuz,
        &initramfs,
        &console_path,
        Duration::from_secs(args.timeout),
    )?;
    let boot_secs = boot_started.elapsed().as_secs_f64();
    let outcome = check(&console, args);
    eprintln!(
        "xtask: vm {}: VM ran {boot_secs:.0} s, {:.0} s in all; console in {}",
        args.kernel,
        started.elapsed().as_secs_f64(),
        console_path.display()
    );
    outcome
}

struct Kernel {
    package: String,
    vmlinuz: PathBuf,
    config: PathBuf,
}

/// Newest `linux-image-<series>...-<flavor>` package Debian has; kept
/// under target/vm so a second run downloads nothing.
fn fetch_kernel(work: &Path, series: &str, flavor: &str) -> Result<Kernel> {
    let mut candidates = kernel_packages(series, flavor)?;
    if candidates.is_empty() {
        eprintln!("xtask: no {series} kernel in the package lists; running apt-get update");
        status(
            Command::new("apt-get").args(["update", "-qq"]),
            "apt-get update",
        )?;
        candidates = kernel_packages(series, flavor)?;
    }
    let Some(package) = candidates.pop() else {
        bail!("Debian's package lists have no linux-image {series} ({flavor}) package");
    };
    let dir = work.join(&package);
    let boot = dir.join("boot");
    if find_prefixed(&boot, "vmlinuz-").is_none() {
        eprintln!("xtask: downloading {package} (apt): the kernel to boot");
        let download = work.join("download");
        let deb = download_deb(&package, &download).map_err(|err| {
            anyhow::anyhow!(
                "could not download {package} from the package mirror, tried twice ({err:#}): \
                 a download problem, not a failure of kernel {series}"
            )
        })?;
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        // Only /boot: vmlinuz and its config (the modules are not needed).
        status(
            Command::new("sh").arg("-c").arg(format!(
                "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' ./boot",
                deb.display(),
                dir.display()
            )),
            "unpacking the kernel package",
        )?;
        let _ = fs::remove_dir_all(&download);
    }
    Ok(Kernel {
        vmlinuz: find_prefixed(&boot, "vmlinuz-")
            .with_context(|| format!("{package} has no /boot/vmlinuz-*"))?,
        config: find_prefixed(&boot, "config-")
            .with_context(|| format!("{package} has no /boot/config-*"))?,
        package,
    })
}

/// `apt-get download` of one package into an empty `dir`; on failure
/// the package lists are refreshed and it is tried once more (a mirror
/// that rotated the file away, a dropped connection).
fn download_deb(package: &str, dir: &Path) -> Result<PathBuf> {
    let attempt = || -> Result<PathBuf> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir)?;
        let out = Command::new("apt-get")
            .args(["download", "-qq", "-o", "APT::Sandbox::User=root", package])
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .context("cannot run apt-get download")?;
        if !out.status.success() {
            // apt's own reason, e.g. `E: Failed to fetch URL  Could not connect ...`.
            let stderr = String::from_utf8_lossy(&out.stderr);
            let reason = stderr
                .lines()
                .find(|l| l.starts_with("E:"))
                .unwrap_or(stderr.trim());
            bail!("apt-get download: {reason}");
        }
        find_prefixed(dir, package)
            .with_context(|| format!("apt-get download left no {package} .deb"))
    };
    attempt().or_else(|err| {
        eprintln!(
            "xtask: downloading {package} failed ({err:#}); refreshing the package lists and trying once more"
        );
        let _ = output(Command::new("apt-get").args(["update", "-qq"]));
        attempt()
    })
}

/// Matching package names, oldest first.
fn kernel_packages(series: &str, flavor: &str) -> Result<Vec<String>> {
    let escaped = series.replace('.', "\\.");
    let out = output(Command::new("apt-cache").args([
        "search",
        "--names-only",
        &format!("^linux-image-{escaped}[.-]"),
    ]))?;
    let mut names: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| is_flavor(name, series, flavor))
        .map(str::to_string)
        .collect();
    names.sort_by_key(|n| natural_key(n));
    names.dedup();
    Ok(names)
}

/// `linux-image-6.1.0-56-cloud-amd64`, `linux-image-6.12.113+deb12-amd64-unsigned`, ...
fn is_flavor(name: &str, series: &str, flavor: &str) -> bool {
    let Some(rest) = name.strip_prefix("linux-image-") else {
        return false;
    };
    let rest = rest.strip_suffix("-unsigned").unwrap_or(rest);
    let abi = match flavor {
        "amd64" => rest
            .strip_suffix("-amd64")
            .filter(|abi| !abi.ends_with("-cloud") && !abi.ends_with("-rt")),
        other => rest.strip_suffix(&format!("-{other}-amd64")),
    };
    abi.is_some_and(|abi| {
        abi.strip_prefix(series)
            .and_then(|v| v.strip_prefix('.'))
            .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// Sorts `6.1.0-9` before `6.1.0-56`.
fn natural_key(name: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut chars = name.chars().peekable();
    while chars.peek().is_some() {
        let mut digits = String::new();
        while let Some(c) = chars.next_if(char::is_ascii_digit) {
            digits.push(c);
        }
        let mut text = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_ascii_digit()) {
            text.push(c);
        }
        key.push((digits.parse().unwrap_or(0), text));
    }
    key
}

fn find_prefixed(dir: &Path, prefix: &str) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
}

/// The VM's init: mounts what the tracer needs (but not tracefs: the
/// tracer mounts it itself when missing, as on a fresh host), traces
/// loopback traffic, prints everything between markers, powers off.
const INIT: &str = r#"#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
ip link set lo up
mark() { echo "=== tcptrace-vm: $*"; }
mark "uname $(uname -r)"
tcptrace trace --json --events all --iface lo --reuse-idle REUSE_IDLE_MSms --duration 60s >/tmp/events.json 2>/tmp/trace.err &
TRACER=$!
i=0
while ! grep -q 'tracing; Ctrl-C to stop' /tmp/trace.err; do
  i=$((i + 1))
  if [ $i -gt 1200 ] || ! kill -0 $TRACER 2>/dev/null; then break; fi
  usleep 100000
done
mark "begin traffic"
timeout 10 nc 127.0.0.1 1 </dev/null; echo "refused connect 127.0.0.1:1: nc exit $?"
timeout 10 nc ::1 1 </dev/null; echo "refused connect [::1]:1: nc exit $?"
peer reset-after 127.0.0.1:0 300 >/tmp/peer.out 2>&1 &
PEER=$!
i=0
while ! grep -q '^port ' /tmp/peer.out && [ $i -lt 100 ]; do i=$((i + 1)); usleep 100000; done
PORT=$(sed -n 's/^port //p' /tmp/peer.out)
echo "vm-port reset-after $PORT"
echo hello | timeout 10 nc 127.0.0.1 "$PORT"; echo "client of peer port $PORT: nc exit $?"
wait $PEER; rc=$?; echo "peer: $(tr '\n' ' ' </tmp/peer.out)exit $rc"
peer hold 127.0.0.1:0 >/tmp/hold.out 2>&1 &
HOLD=$!
i=0
while ! grep -q '^port ' /tmp/hold.out && [ $i -lt 100 ]; do i=$((i + 1)); usleep 100000; done
HPORT=$(sed -n 's/^port //p' /tmp/hold.out)
echo "vm-port hold $HPORT"
(echo first; sleep 1; echo again) | timeout 10 nc 127.0.0.1 "$HPORT"; echo "client sending again after 1 s idle (port $HPORT): nc exit $?"
wait $HOLD; rc=$?; echo "peer: $(tr '\n' ' ' </tmp/hold.out)exit $rc"
peer no-accept 127.0.0.1:0 4000 >/tmp/full.out 2>&1 &
FULL=$!
i=0
while ! grep -q '^port ' /tmp/full.out && [ $i -lt 100 ]; do i=$((i + 1)); usleep 100000; done
FPORT=$(sed -n 's/^port //p' /tmp/full.out)
timeout 5 nc 127.0.0.1 "$FPORT" </dev/null >/dev/null 2>&1 &
usleep 300000
timeout 3 nc 127.0.0.1 "$FPORT" </dev/null; echo "connect to a full accept queue (port $FPORT): nc exit $?"
wait $FULL
mark "end traffic"
usleep 500000
kill -TERM $TRACER
wait $TRACER
mark "tracer exit $?"
mark "begin stderr"; cat /tmp/trace.err; mark "end stderr"
mark "begin events"; cat /tmp/events.json; mark "end events"
for f in FORMATS; do
  mark "begin format $f"; cat /sys/kernel/tracing/events/$f/format 2>/dev/null; mark "end format $f"
done
mark "done"
poweroff -f
"#;

fn build_initramfs(out: &Path, tcptrace: &Path, peer: &Path, config: &Path) -> Result<()> {
    let busybox = Path::new("/bin/busybox");
    ensure!(
        fs::read(busybox).is_ok_and(|b| !is_dynamic(&b)),
        "{} is not the static busybox (busybox-static)",
        busybox.display()
    );
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "tmp", "boot", "lib", "lib64"] {
        cpio.dir(dir);
    }
    cpio.node("dev/console", 0o020_600, (5, 1));
    let init = INIT
        .replace("FORMATS", &FORMATS.join(" "))
        .replace("REUSE_IDLE_MS", &REUSE_IDLE_MS.to_string());
    debug_assert!(INIT.contains(&format!("sleep {}", REUSE_GAP_MS / 1000)));
    cpio.file("init", 0o755, init.as_bytes());
    cpio.file("bin/busybox", 0o755, &fs::read(busybox)?);
    cpio.file("bin/sh", 0o755, &fs::read(busybox)?);
    for (name, path) in [("tcptrace", tcptrace), ("peer", peer)] {
        let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        cpio.file(&format!("bin/{name}"), 0o755, &bytes);
    }
    // The shared libraries the two binaries need, at the paths ldd names.
    let mut libs = std::collections::BTreeSet::new();
    for bin in [tcptrace, peer] {
        libs.extend(shared_libraries(bin)?);
    }
    for lib in libs {
        let rel = lib.strip_prefix("/").unwrap_or(&lib);
        for parent in rel.ancestors().skip(1) {
            if !parent.as_os_str().is_empty() {
                cpio.dir(&parent.to_string_lossy());
            }
        }
        let bytes = fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
        cpio.file(&rel.to_string_lossy(), 0o755, &bytes);
    }
    // A Debian host has its kernel's config in /boot (the tracer reads HZ there).
    let config_name = config.file_name().context("config file name")?;
    cpio.file(
        &format!("boot/{}", config_name.to_string_lossy()),
        0o644,
        &fs::read(config)?,
    );
    fs::write(out, cpio.finish()).with_context(|| format!("writing {}", out.display()))
}

/// True if an ELF64 file has a PT_INTERP program header (needs a loader).
fn is_dynamic(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    if !elf.starts_with(b"\x7fELF") {
        return true;
    }
    let (phoff, phentsize, phnum) = (
        u64_at(0x20) as usize,
        usize::from(u16_at(0x36)),
        usize::from(u16_at(0x38)),
    );
    (0..phnum).any(|i| u32_at(phoff + i * phentsize) == PT_INTERP)
}

fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = output(Command::new("ldd").arg(bin))?;
    Ok(out
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, right)) => right.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// A `newc` cpio archive, as the kernel unpacks into its initramfs.
#[derive(Default)]
struct Cpio {
    data: Vec<u8>,
    inode: u32,
    dirs: std::collections::BTreeSet<String>,
}

impl Cpio {
    fn dir(&mut self, path: &str) {
        if self.dirs.insert(path.to_string()) {
            self.entry(path, 0o040_755, (0, 0), &[]);
        }
    }
    fn file(&mut self, path: &str, perm: u32, bytes: &[u8]) {
        self.entry(path, 0o100_000 | perm, (0, 0), bytes);
    }
    fn node(&mut self, path: &str, mode: u32, rdev: (u32, u32)) {
        self.entry(path, mode, rdev, &[]);
    }
    fn entry(&mut self, path: &str, mode: u32, rdev: (u32, u32), bytes: &[u8]) {
        self.inode += 1;
        let nlink = if mode & 0o040_000 != 0 { 2 } else { 1 };
        let fields = [
            self.inode,
            mode,
            0,
            0,
            nlink,
            0,
            bytes.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            path.len() as u32 + 1,
            0,
        ];
        self.data.extend_from_slice(b"070701");
        for f in fields {
            self.data.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.data.extend_from_slice(path.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(bytes);
        self.pad();
    }
    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.data
    }
}

/// Runs QEMU until the VM powers off or `timeout` passes; returns the
/// serial console, also written to `log`.
fn boot(vmlinuz: &Path, initramfs: &Path, log: &Path, timeout: Duration) -> Result<String> {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1"])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .args(["-nic", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args([
            "-append",
            "console=ttyS0 panic=-1 loglevel=3 rdinit=/init mitigations=off",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut console = String::new();
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                // Progress a reader can follow; the section markers are
                // for `check` only.
                let mark = line.strip_prefix(MARK).map(str::trim);
                if let Some(mark) =
                    mark.filter(|m| !m.starts_with("begin ") && !m.starts_with("end "))
                {
                    eprintln!("xtask: vm: {mark}");
                }
                writeln!(file, "{line}")?;
                console.push_str(&line);
                console.push('\n');
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break;
        }
    }
    let status = child.wait()?;
    let _ = reader.join();
    if timed_out {
        bail!(
            "the VM did not power off within {} s (killed); console in {}",
            timeout.as_secs(),
            log.display()
        );
    }
    if !status.success() {
        bail!("qemu failed ({status}); console in {}", log.display());
    }
    Ok(console)
}

/// Lines between `begin NAME` and `end NAME` markers.
fn section<'a>(console: &'a str, name: &str) -> Option<Vec<&'a str>> {
    let begin = format!("{MARK} begin {name}");
    let end = format!("{MARK} end {name}");
    let mut lines = console.lines().skip_while(|l| *l != begin);
    lines.next()?;
    let body: Vec<&str> = lines.take_while(|l| *l != end).collect();
    Some(body)
}

fn check(console: &str, args: &VmArgs) -> Result<()> {
    ensure!(
        console.contains(&format!("{MARK} done")),
        "the VM's script did not finish (see the console log)"
    );
    let release = console
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{MARK} uname ")))
        .unwrap_or("?")
        .to_string();
    let stderr = section(console, "stderr").unwrap_or_default();
    println!("--- kernel {release}: tcptrace's stderr");
    for line in &stderr {
        println!("{line}");
    }
    let facts = Facts::of(console);
    let mut problems = Vec::new();
    if let Some(documented) = Facts::documented(&args.kernel)
        && documented != facts
    {
        problems.push(format!(
            "docs/kernels.md says {} has {documented:?}, this kernel has {facts:?}",
            args.kernel
        ));
    }
    // Limits this kernel has are said by name, not failures; anything
    // else not traced is.
    let tcx = has_tcx(&release);
    let mut limits = facts.limits();
    if !tcx {
        // tcptrace's `CLSACT_FALLBACK`; then clsact itself is missing:
        // sch_ingress is a module of Debian's kernels and the initramfs
        // carries no modules. The ingress program has passed the
        // verifier by then (a refusal names BPF_PROG_LOAD instead).
        limits.push("TCX links (kernels before 6.6)");
        limits.push("TC programs on lo (netlink error: [\"Specified qdisc kind is unknown\"])");
    }
    let (expected, warnings): (Vec<&str>, Vec<&str>) = stderr
        .iter()
        .copied()
        .filter(|l| l.starts_with("tcptrace: warning: not traced on this kernel"))
        .partition(|l| limits.iter().any(|e| l.contains(e)));
    for limit in &limits {
        if !expected.iter().any(|l| l.contains(limit)) {
            problems.push(format!("no warning naming this kernel's limit {limit:?}"));
        }
    }

    let mut events = Vec::new();
    let mut bad = 0;
    for line in section(console, "events").unwrap_or_default() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => events.push(v),
            Err(_) => bad += 1,
        }
    }
    println!("--- kernel {release}: events (first of each kind)");
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for ev in events.iter().filter(|e| e["type"] == "event") {
        let kind = ev["kind"].as_str().unwrap_or("?").to_string();
        let n = by_kind.entry(kind).or_default();
        if *n == 0 {
            println!("{ev}");
        }
        *n += 1;
    }
    println!("--- kernel {release}: events by kind: {by_kind:?}");
    if bad > 0 {
        println!("({bad} event lines were garbled on the serial console)");
    }

    if let Some(dir) = &args.save_formats {
        fs::create_dir_all(dir)?;
        for f in FORMATS {
            let body = section(console, &format!("format {f}")).unwrap_or_default();
            if body.is_empty() {
                continue;
            }
            let name = f.rsplit('/').next().unwrap_or(f);
            let mut text = body.join("\n");
            text.push('\n');
            fs::write(dir.join(format!("{name}-{}.format", args.kernel)), text)?;
        }
        println!("--- format files written to {}", dir.display());
    }

    for line in &expected {
        println!("--- kernel {release}: expected on this kernel: {line}");
    }
    if !warnings.is_empty() {
        problems.push(format!("could not trace: {warnings:?}"));
    }
    let mut required = vec![
        "connect",
        "connect_failed",
        "rst_sent",
        "rst_received",
        "retransmit",
        "drop",
        "socket_error",
    ];
    if facts.reuse_hook() {
        required.push("reuse");
    }
    for kind in required {
        if !by_kind.contains_key(kind) {
            problems.push(format!("no {kind} event"));
        }
    }
    problems.extend(check_events(console, &events, &facts));
    problems.extend(check_tc(console, &events, tcx));
    if !problems.is_empty() {
        bail!("on kernel {release}: {}", problems.join("; "));
    }
    println!(
        "--- kernel {release}: every program attached; connect, reset, retransmit, drop, socket error{} events decoded",
        if facts.reuse_hook() {
            " and reuse"
        } else {
            " (no reuse hook: said by name)"
        }
    );
    Ok(())
}

/// What a kernel offers the tracer, as the format files the VM printed
/// show (an empty section: no such tracepoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Facts {
    /// `tcp:tcp_send_reset` has `reason` (6.10+).
    send_reset_reason: bool,
    /// `skb:kfree_skb` has `reason` (5.17+).
    drop_reason: bool,
    /// `skb:kfree_skb` has `rx_sk` (6.11+).
    rx_sk: bool,
    /// `sock:inet_sk_error_report` exists (5.13+).
    error_report: bool,
    /// `tcp:tcp_sendmsg_locked` exists (after 6.12).
    sendmsg_locked: bool,
    /// `sock:sock_send_length` exists (6.2+).
    send_length: bool,
}

impl Facts {
    fn of(console: &str) -> Facts {
        let format = |tp: &str| section(console, &format!("format {tp}")).unwrap_or_default();
        let exists = |tp: &str| format(tp).iter().any(|l| l.starts_with("format:"));
        let has = |tp: &str, field: &str| {
            let field = format!(" {field};");
            format(tp).iter().any(|l| l.contains(&field))
        };
        Facts {
            send_reset_reason: has("tcp/tcp_send_reset", "reason"),
            drop_reason: has("skb/kfree_skb", "reason"),
            rx_sk: has("skb/kfree_skb", "rx_sk"),
            error_report: exists("sock/inet_sk_error_report"),
            sendmsg_locked: exists("tcp/tcp_sendmsg_locked"),
            send_length: exists("sock/sock_send_length"),
        }
    }

    /// What docs/kernels.md says a Debian series has; `None` for one it
    /// does not list.
    fn documented(series: &str) -> Option<Facts> {
        let common = Facts {
            send_reset_reason: true,
            drop_reason: true,
            rx_sk: true,
            error_report: true,
            sendmsg_locked: false,
            send_length: true,
        };
        match series {
            "6.1" => Some(Facts {
                send_reset_reason: false,
                rx_sk: false,
                send_length: false,
                ..common
            }),
            "6.12" => Some(common),
            _ => None,
        }
    }

    /// Some hook gives reuse events.
    fn reuse_hook(&self) -> bool {
        self.sendmsg_locked || self.send_length
    }

    /// Parts of the warnings the tracer must print on such a kernel
    /// (tcptrace's `SEND_RESET_BEFORE_6_10`, `KFREE_SKB_WITHOUT_*`,
    /// `NO_ERROR_REPORT`, `REUSE_FROM_SEND_LENGTH`, `NO_REUSE`).
    fn limits(&self) -> Vec<&'static str> {
        let mut limits = Vec::new();
        if !self.send_reset_reason {
            limits.push("kernels before 6.10 report only resets sent by a full socket");
        }
        if !self.drop_reason {
            limits.push("skb:kfree_skb without a drop reason");
        }
        if !self.rx_sk {
            limits.push("skb:kfree_skb without rx_sk");
        }
        if !self.error_report {
            limits.push("no socket_error events");
        }
        if !self.sendmsg_locked {
            limits.push(if self.send_length {
                "reuse after idle comes from sock:sock_send_length instead"
            } else {
                "no reuse events (reuse after idle)"
            });
        }
        limits
    }
}

/// TCX links exist from 6.6 on (`uname -r` such as `6.1.0-37-cloud-amd64`).
fn has_tcx(release: &str) -> bool {
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 6)
}

/// From 6.6 on, the TC programs loaded and hung on `lo` as TCX links, and
/// the RST `peer` sent has origin `peer`. Before 6.6 the VM has no
/// clsact (a module), so only the verifier's verdict is checked there.
fn check_tc(console: &str, events: &[Value], tcx: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if !tcx {
        // No clsact in the VM (see `check`): nothing attached to look at.
        return problems;
    }
    let mode = if tcx { "tcx" } else { "clsact" };
    match events.iter().find(|e| e["type"] == "summary") {
        Some(summary)
            if summary["tc"]["mode"] == mode && summary["tc"]["interfaces"][0] == "lo" => {}
        Some(summary) => problems.push(format!(
            "TC programs should hang on lo via {mode}: {}",
            summary["tc"]
        )),
        None => problems.push("no summary record".into()),
    }
    let port = console_port(console, "reset-after");
    let received = events
        .iter()
        .find(|e| e["kind"] == "rst_received" && e["remote_port"].as_u64() == port);
    match received {
        Some(ev) if ev["origin"] == "peer" => {}
        other => problems.push(format!(
            "the client's rst_received should have origin peer: {other:?}"
        )),
    }
    problems
}

/// The port the VM's script printed as `vm-port NAME N`.
fn console_port(console: &str, name: &str) -> Option<u64> {
    let prefix = format!("vm-port {name} ");
    console
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

/// What the traffic in the VM must have produced, decoded right.
fn check_events(console: &str, events: &[Value], facts: &Facts) -> Vec<String> {
    let mut problems = Vec::new();
    let of_kind = |kind: &'static str| events.iter().filter(move |e| e["kind"] == kind);
    for ev in of_kind("rst_sent") {
        if ev["reason"].is_null() == facts.send_reset_reason {
            problems.push(format!(
                "rst_sent reason should be {} on this kernel: {ev}",
                if facts.send_reset_reason {
                    "named"
                } else {
                    "absent"
                }
            ));
        }
    }
    // peer answered once, waited 300 ms, then closed with SO_LINGER 0.
    let peer_reset = of_kind("rst_sent").find(|e| e["owner"]["comm"] == "peer");
    match peer_reset {
        None => problems.push("no rst_sent attributed to peer".into()),
        Some(ev) => {
            let idle_ms = ev["idle_ns"].as_u64().map(|ns| ns / 1_000_000);
            if !idle_ms.is_some_and(|ms| (250..2_000).contains(&ms)) || ev["age_ns"].is_null() {
                problems.push(format!(
                    "peer's reset should be ~300 ms idle with an age: {ev}"
                ));
            }
            if ev["local_addr"] != "127.0.0.1" || ev["remote_addr"] != "127.0.0.1" {
                problems.push(format!("peer's reset has wrong addresses: {ev}"));
            }
        }
    }
    for family in ["ipv4", "ipv6"] {
        let refused = of_kind("connect_failed")
            .any(|e| e["family"] == family && e["remote_port"] == 1 && e["owner"]["comm"] == "nc");
        if !refused {
            problems.push(format!("no {family} connect_failed to port 1 owned by nc"));
        }
    }
    // The SYN to the full accept queue is dropped and sent again: a bare
    // SYN (no payload, one segment) on a path whose MSS and MTU are known.
    let syn_again: Vec<&Value> = of_kind("retransmit")
        .filter(|e| e["state"] == "SYN_SENT" && e["owner"]["comm"] == "nc" && e["family"] == "ipv4")
        .collect();
    if syn_again.is_empty() {
        problems.push("no SYN retransmit owned by nc".into());
    }
    for ev in syn_again {
        if ev["seg_len"] != 0 || ev["segs"] != 1 || !ev["mss"].is_u64() || !ev["pmtu"].is_u64() {
            problems.push(format!(
                "a SYN retransmit is 0 bytes in 1 segment with mss and pmtu: {ev}"
            ));
        }
    }
    for ev in of_kind("rst_received").filter(|e| e["state"] == "SYN_SENT") {
        if !ev["idle_ns"].is_null() {
            problems.push(format!("a connecting socket has no idle time: {ev}"));
        }
    }
    problems.extend(check_drops_and_errors(console, events, facts));
    problems.extend(check_reuse(console, events, facts));
    problems
}

/// The refused connects' SYNs are dropped on the way in for want of a
/// socket (`NO_SOCKET`, no owner); their clients are told ECONNREFUSED,
/// and the client the peer reset is told ECONNRESET.
fn check_drops_and_errors(console: &str, events: &[Value], facts: &Facts) -> Vec<String> {
    let mut problems = Vec::new();
    let of_kind = |kind: &'static str| events.iter().filter(move |e| e["kind"] == kind);
    let refused_syn = of_kind("drop").find(|e| {
        e["family"] == "ipv4"
            && e["local_port"] == 1
            && e["direction"] == "in"
            && e["tcp_flags"] == "SYN"
    });
    match refused_syn {
        None => problems.push("no drop of the SYN to 127.0.0.1:1".into()),
        Some(ev) => {
            let reason_ok = if facts.drop_reason {
                ev["reason"] == "NO_SOCKET"
            } else {
                ev["reason"].is_null()
            };
            if !reason_ok || !ev["owner"].is_null() || ev["remote_addr"] != "127.0.0.1" {
                problems.push(format!(
                    "the SYN to 127.0.0.1:1 is dropped as NO_SOCKET, unowned: {ev}"
                ));
            }
        }
    }
    if !facts.error_report {
        if of_kind("socket_error").next().is_some() {
            problems.push("socket_error events without inet_sk_error_report".into());
        }
        return problems;
    }
    let refused = of_kind("socket_error").any(|e| {
        e["error"] == "ECONNREFUSED"
            && e["errno"] == 111
            && e["family"] == "ipv4"
            && e["remote_port"] == 1
            && e["owner"]["comm"] == "nc"
    });
    if !refused {
        problems.push("no socket_error ECONNREFUSED for nc's connect to 127.0.0.1:1".into());
    }
    let reset_port = console_port(console, "reset-after");
    let reset = of_kind("socket_error").any(|e| {
        e["error"] == "ECONNRESET"
            && e["owner"]["comm"] == "nc"
            && e["remote_port"].as_u64() == reset_port
    });
    if !reset {
        problems.push(format!(
            "no socket_error ECONNRESET for nc, reset by peer on port {reset_port:?}"
        ));
    }
    problems
}

/// One send after `REUSE_GAP_MS` idle: one `reuse` event, owned by the
/// client, with that idle time; none where the kernel has no hook.
fn check_reuse(console: &str, events: &[Value], facts: &Facts) -> Vec<String> {
    let reuses: Vec<&Value> = events.iter().filter(|e| e["kind"] == "reuse").collect();
    if !facts.reuse_hook() {
        return match reuses.first() {
            Some(ev) => vec![format!("a reuse event without a hook for it: {ev}")],
            None => Vec::new(),
        };
    }
    let port = console_port(console, "hold");
    let [ev] = reuses.as_slice() else {
        return vec![format!(
            "one reuse event expected (the send after {REUSE_GAP_MS} ms idle), got {}: {reuses:?}",
            reuses.len()
        )];
    };
    let idle_ms = ev["idle_ns"].as_u64().map(|ns| ns / 1_000_000);
    // The gap is `sleep 1`, timed in jiffies (4 ms at HZ=250) under TCG.
    let idle_ok =
        idle_ms.is_some_and(|ms| (REUSE_GAP_MS - 100..REUSE_GAP_MS + 1_500).contains(&ms));
    if !idle_ok
        || ev["owner"]["comm"] != "nc"
        || ev["remote_port"].as_u64() != port
        || ev["state"] != "ESTABLISHED"
    {
        return vec![format!(
            "the reuse should be nc's send to port {port:?} after ~{REUSE_GAP_MS} ms idle: {ev}"
        )];
    }
    Vec::new()
}

fn status(cmd: &mut Command, what: &str) -> Result<()> {
    let st = cmd
        .status()
        .with_context(|| format!("cannot start {what}"))?;
    ensure!(st.success(), "{what} failed ({st})");
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_flavours_and_series() {
        assert!(is_flavor(
            "linux-image-6.1.0-56-cloud-amd64",
            "6.1",
            "cloud"
        ));
        assert!(is_flavor(
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
            "6.1",
            "cloud"
        ));
        assert!(!is_flavor(
            "linux-image-6.1.0-56-cloud-amd64-dbg",
            "6.1",
            "cloud"
        ));
        assert!(!is_flavor("linux-image-6.1.0-56-amd64", "6.1", "cloud"));
        assert!(is_flavor("linux-image-6.1.0-56-amd64", "6.1", "amd64"));
        assert!(!is_flavor(
            "linux-image-6.1.0-56-cloud-amd64",
            "6.1",
            "amd64"
        ));
        assert!(!is_flavor("linux-image-6.1.0-56-rt-amd64", "6.1", "amd64"));
        assert!(!is_flavor(
            "linux-image-6.12.113+deb12-cloud-amd64-unsigned",
            "6.1",
            "cloud"
        ));
        assert!(is_flavor(
            "linux-image-6.12.113+deb12-cloud-amd64-unsigned",
            "6.12",
            "cloud"
        ));
        assert!(!is_flavor(
            "linux-image-6.12-amd64-signed-template",
            "6.12",
            "amd64"
        ));
    }

    #[test]
    fn newest_sorts_last() {
        let mut names = [
            "linux-image-6.1.0-56-cloud-amd64",
            "linux-image-6.1.0-9-cloud-amd64",
            "linux-image-6.1.0-47-cloud-amd64",
        ];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(names[2], "linux-image-6.1.0-56-cloud-amd64");
    }

    #[test]
    fn cpio_entries_are_aligned() {
        let mut cpio = Cpio::default();
        cpio.dir("bin");
        cpio.file("bin/x", 0o755, b"abc");
        let data = cpio.finish();
        assert!(data.len().is_multiple_of(4));
        assert!(data.starts_with(b"070701"));
        assert!(data.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn tcx_from_6_6_on() {
        assert!(!has_tcx("6.1.0-37-cloud-amd64"));
        assert!(has_tcx("6.12.41+deb13-cloud-amd64"));
        assert!(has_tcx("6.6.0"));
        assert!(!has_tcx("?"));
    }

    #[test]
    fn kernel_facts_from_format_files() {
        let console = format!(
            "{MARK} begin format skb/kfree_skb\nname: kfree_skb\nformat:\n\tfield:void * skbaddr;\toffset:8;\n\tfield:enum skb_drop_reason reason;\toffset:32;\n{MARK} end format skb/kfree_skb\n\
             {MARK} begin format sock/inet_sk_error_report\nformat:\n{MARK} end format sock/inet_sk_error_report\n\
             {MARK} begin format tcp/tcp_sendmsg_locked\n{MARK} end format tcp/tcp_sendmsg_locked\n\
             {MARK} begin format sock/sock_send_length\n{MARK} end format sock/sock_send_length\n\
             vm-port hold 4242\n"
        );
        let facts = Facts::of(&console);
        assert_eq!(facts, Facts::documented("6.1").unwrap());
        assert!(!facts.reuse_hook());
        assert_eq!(
            facts.limits(),
            [
                "kernels before 6.10 report only resets sent by a full socket",
                "skb:kfree_skb without rx_sk",
                "no reuse events (reuse after idle)"
            ]
        );
        let on_6_12 = Facts::documented("6.12").unwrap();
        assert!(on_6_12.reuse_hook());
        assert_eq!(
            on_6_12.limits(),
            ["reuse after idle comes from sock:sock_send_length instead"]
        );
        assert_eq!(console_port(&console, "hold"), Some(4242));
        assert_eq!(console_port(&console, "reset-after"), None);
    }

    #[test]
    fn sections_between_markers() {
        let console = format!("noise\n{MARK} begin x\na\nb\n{MARK} end x\n");
        assert_eq!(section(&console, "x").unwrap(), vec!["a", "b"]);
        assert!(section(&console, "y").is_none());
    }
}
