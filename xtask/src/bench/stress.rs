//! `cargo xtask bench stress`: churn rate of `tcptrace stress churn`
//! against a blocking std connect/close loop with as many threads.

use std::{
    fmt::Write as _,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::StressArgs;

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

/// Runs a churner to completion; returns its stdout and the CPU time
/// (user + system) it used, from wait4: the rate depends on what else
/// the machine runs, CPU per connection much less.
fn run_measured(cmd: &mut Command) -> Result<(String, f64)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)?;
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)?;
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 reaps our own child, which
    // `ip netns exec` became by exec (same pid), so its usage is the churner's.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        bail!("wait4 {cmd:?}: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} failed ({status:#x}): {}", stderr.trim());
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((stdout, secs(usage.ru_utime) + secs(usage.ru_stime)))
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

pub fn stress(env: &BuildEnv, args: &StressArgs) -> Result<()> {
    let StressArgs {
        concurrency,
        seconds,
        rounds,
        no_write,
    } = *args;
    cargo(
        env,
        "tcptrace (release)",
        &["build", "--release", "--package", "tcptrace"],
    )?;
    cargo(
        env,
        "the churn baseline (release)",
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
    let (mut ours_cpu, mut theirs_cpu) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate who goes first, so neither always meets a warmer system.
        for ours_now in [round % 2 == 0, round % 2 != 0] {
            let (name, rate, connections, cpu) = if ours_now {
                let (out, cpu) = run_measured(ns.command(&tcptrace).args([
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
                let report: serde_json::Value = serde_json::from_str(&out)
                    .with_context(|| format!("tcptrace's report is not JSON: {out}"))?;
                let number = |key: &str| report[key].as_f64().unwrap_or(0.0);
                if number("failed") > 0.0 {
                    bail!("tcptrace churn had failures: {out}");
                }
                let (rate, connections) = (number("connect_rate_per_s"), number("connected"));
                ours.push(rate);
                ours_cpu.push(cpu / connections * 1e6);
                ("tcptrace stress churn", rate, connections, cpu)
            } else {
                let (out, cpu) = run_measured(
                    ns.command(&baseline)
                        .args(["connect", addr, &threads, &secs]),
                )?;
                let field = |key: &str| -> Result<f64> {
                    out.split_whitespace()
                        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                        .and_then(|v| v.parse().ok())
                        .with_context(|| format!("no {key} in baseline output: {out}"))
                };
                if field("failures")? > 0.0 {
                    bail!("the baseline had failures: {out}");
                }
                let connections = field("connections")?;
                let rate = connections / field("seconds")?;
                theirs.push(rate);
                theirs_cpu.push(cpu / connections * 1e6);
                ("blocking baseline", rate, connections, cpu)
            };
            eprintln!(
                "round {}: {name:<22} {rate:>9.0}/s  {:>5.1} µs CPU per connection",
                round + 1,
                cpu / connections * 1e6
            );
        }
    }
    let (ours_median, theirs_median) = (median(ours.clone()), median(theirs.clone()));
    let ratio = ours_median / theirs_median * 100.0;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?");
    let per_round = |rates: &[f64]| {
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| churner | connections/s (median) | CPU µs per connection (median) | connections/s by round |"
    );
    let _ = writeln!(table, "| --- | ---: | ---: | --- |");
    let _ = writeln!(
        table,
        "| `tcptrace stress churn --concurrency {concurrency}` (tokio, release) | {ours_median:.0} | {:.1} | {} |",
        median(ours_cpu),
        per_round(&ours)
    );
    let _ = writeln!(
        table,
        "| blocking std connect/close loop (threads: {concurrency}) | {theirs_median:.0} | {:.1} | {} |",
        median(theirs_cpu),
        per_round(&theirs)
    );
    let _ = writeln!(
        table,
        "\ntcptrace / baseline: **{ratio:.1}%** (goal: at least 90%)."
    );
    println!("{table}");
    if !no_write {
        let command = format!(
            "sudo cargo xtask bench stress --concurrency {concurrency} --seconds {seconds} --rounds {rounds}"
        );
        let body = format!(
            "Command: `{command}` ({cores} cores, load average {load} at the end; \
             loopback in a fresh netns with ip_local_port_range 1024-65535 and tcp_tw_reuse=1; \
             both churners against `tcptrace stress serve`). Client and server share the \
             cores, and rates move with whatever else the machine runs: CPU per connection \
             (user + system, from wait4) is the steadier figure.\n\n{table}"
        );
        super::write_section("stress", &body)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
