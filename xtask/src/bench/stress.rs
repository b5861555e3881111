//! `cargo xtask bench stress`: churn rate of `tcptrace stress churn`
//! against a blocking std connect/close loop with as many threads.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, setup::BuildEnv, target_dir};

/// A namespace of our own for the benchmark, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Result<Netns> {
        let name = format!("tt-bench-{}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns(name);
        run_ok(ns.command("ip").args(["link", "set", "lo", "up"]))?;
        // Churn on one loopback address runs out of ephemeral ports within
        // seconds: use all of them and let TIME_WAIT ports be reused after
        // a second (both are per-namespace sysctls; the host is untouched).
        run_ok(
            ns.command("sysctl")
                .args(["-q", "-w", "net.ipv4.ip_local_port_range=1024 65535"]),
        )?;
        run_ok(
            ns.command("sysctl")
                .args(["-q", "-w", "net.ipv4.tcp_tw_reuse=1"]),
        )?;
        Ok(ns)
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process killed on drop (the server outlives no benchmark).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Copies a freshly built binary out of the target directory, which other
/// worktrees may share and rebuild under our feet.
fn private_copy(built: &Path, dir: &Path) -> Result<PathBuf> {
    let copy = dir.join(built.file_name().context("binary name")?);
    std::fs::copy(built, &copy).with_context(|| format!("cannot copy {}", built.display()))?;
    Ok(copy)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

pub fn stress(env: &BuildEnv, concurrency: u32, seconds: u32, rounds: u32) -> Result<()> {
    cargo(env, &["build", "--release", "--package", "tcptrace"])?;
    cargo(
        env,
        &[
            "build",
            "--release",
            "--package",
            "xtask",
            "--bin",
            "churn-baseline",
        ],
    )?;
    let dir = std::env::temp_dir().join(format!("tt-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tcptrace = private_copy(&target_dir().join("release/tcptrace"), &dir)?;
    let baseline = private_copy(&target_dir().join("release/churn-baseline"), &dir)?;

    let ns = Netns::new()?;
    let addr = "127.0.0.1:7300";
    // Both churners meet the same server, so its cost weighs the same on
    // both sides. tcptrace's own (backlog 4096): a blocking std listener
    // (backlog 128) overflows under a loaded machine, and each dropped SYN
    // stalls a client for a whole second, which measures nothing useful.
    let server = ns
        .command(&tcptrace)
        .args([
            "stress",
            "serve",
            addr,
            "--duration",
            &format!("{}s", seconds * rounds * 4 + 60),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the benchmark server")?;
    let _server = Running(server);
    std::thread::sleep(Duration::from_millis(300));

    let threads = concurrency.to_string();
    let secs = seconds.to_string();
    let duration = format!("{seconds}s");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for tcptrace_first in [round % 2 == 0, round % 2 != 0] {
            if tcptrace_first {
                let out = run_ok(ns.command(&tcptrace).args([
                    "stress",
                    "churn",
                    addr,
                    "--concurrency",
                    &threads,
                    "--duration",
                    &duration,
                    "--count",
                    "1000000000",
                    "--json",
                ]))?;
                let rate = json_number(&out, "connect_rate_per_s")?;
                let failed = json_number(&out, "failed")?;
                eprintln!(
                    "round {}: tcptrace stress churn  {rate:>9.0}/s  ({failed} failed)",
                    round + 1
                );
                ours.push(rate);
            } else {
                let out = run_ok(
                    ns.command(&baseline)
                        .args(["connect", addr, &threads, &secs]),
                )?;
                let field = |key: &str| -> Result<f64> {
                    out.split_whitespace()
                        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                        .and_then(|v| v.parse().ok())
                        .with_context(|| format!("no {key} in baseline output: {out}"))
                };
                let rate = field("connections")? / field("seconds")?;
                eprintln!(
                    "round {}: blocking baseline      {rate:>9.0}/s  ({} failed)",
                    round + 1,
                    field("failures")?
                );
                theirs.push(rate);
            }
        }
    }
    let (ours, theirs) = (median(ours), median(theirs));
    println!(
        "stress churn, loopback in a netns, concurrency {concurrency}, {seconds} s x {rounds} rounds (medians):"
    );
    println!("  tcptrace stress churn   {ours:>9.0} connections/s");
    println!("  blocking baseline       {theirs:>9.0} connections/s");
    println!(
        "  ratio                   {:>9.1}%  (goal: at least 90%)",
        ours / theirs * 100.0
    );
    println!(
        "  command: cargo xtask bench stress --concurrency {concurrency} --seconds {seconds} --rounds {rounds}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A top-level number from a one-line JSON report, without a JSON parser
/// in xtask: the report's keys are fixed and its numbers plain.
fn json_number(json: &str, key: &str) -> Result<f64> {
    let pattern = format!("\"{key}\":");
    let start = json
        .find(&pattern)
        .with_context(|| format!("no {key} in: {json}"))?
        + pattern.len();
    let rest = &json[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(rest.len());
    rest[..end]
        .parse()
        .with_context(|| format!("{key} is not a number in: {json}"))
}
