//! `cargo xtask bench overhead`: what tracing costs the traced host.
//! The same connection churn runs with no tracer, then under each
//! tracer, alternating A/B for several rounds; medians are reported as
//! ratios of the untraced rate measured in the same command.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::churn::{BenchNetns, churn};

/// One way of running the churn.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Setup {
    /// No tracer attached.
    Baseline,
    /// `tcptrace trace --json --output FILE`: every event serialised.
    TraceJson,
    /// `tcptrace top` in plain (non-TTY) mode: aggregation only.
    Aggregate,
    /// libbpf-tools `tcpstates` writing text to a file.
    Tcpstates,
    /// tcptrace with a filter no event passes (`--port 1`): the kernel
    /// hooks and socket bookkeeping alone, the floor of any mode.
    KernelOnly,
    /// `trace --json` with every event kind, reuse after idle included:
    /// all the hooks of the new signals attached.
    AllSignals,
    /// `--previous BIN trace --json --output FILE`: another build (the one
    /// before a change) in the same rounds, for a like-for-like ratio.
    PreviousJson,
    /// `--previous BIN top`.
    PreviousAggregate,
    /// `tcptrace trace --record FILE`: raw records to a file, no formatting.
    Record,
}

impl Setup {
    pub fn name(self) -> &'static str {
        match self {
            Setup::Baseline => "no tracer (baseline)",
            Setup::TraceJson => "tcptrace trace --json --output FILE",
            Setup::Aggregate => "tcptrace top (aggregation only)",
            Setup::Tcpstates => "libbpf-tools tcpstates > FILE",
            Setup::KernelOnly => "tcptrace hooks only (filter passes nothing)",
            Setup::AllSignals => "tcptrace trace --json --events all",
            Setup::PreviousJson => "previous build: trace --json --output FILE",
            Setup::PreviousAggregate => "previous build: top (aggregation only)",
            Setup::Record => "tcptrace trace --record FILE",
        }
    }
}

/// Figures of one run.
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub rate: f64,
    pub received: Option<u64>,
    pub produced: Option<u64>,
    pub lost: Option<u64>,
    pub cpu_seconds: f64,
    pub startup_cpu: f64,
    pub max_rss_kib: u64,
    /// From SIGINT to exit, while the storm is still on.
    pub stop_seconds: f64,
    /// Size of the event file written (JSON stream or record), 0 if none.
    pub output_bytes: u64,
}

pub struct Options {
    pub seconds: u64,
    pub rounds: usize,
    pub threads: usize,
    pub setups: Vec<Setup>,
    /// The binary of the `Previous*` setups.
    pub previous: Option<PathBuf>,
}

pub fn run(tcptrace: &Path, options: &Options) -> Result<Vec<(Setup, Vec<Run>)>> {
    let ns = BenchNetns::new()?;
    let tmp = std::env::temp_dir().join(format!("tcptrace-bench-{}", std::process::id()));
    fs::create_dir_all(&tmp)?;
    let mut results: Vec<(Setup, Vec<Run>)> =
        options.setups.iter().map(|s| (*s, Vec::new())).collect();
    for round in 0..options.rounds {
        for (setup, runs) in results.iter_mut() {
            let run = measure(*setup, tcptrace, &ns, &tmp, options)
                .with_context(|| format!("round {}: {}", round + 1, setup.name()))?;
            eprintln!(
                "xtask bench: round {} {:<40} {:>9.0} conn/s{}",
                round + 1,
                setup.name(),
                run.rate,
                run.lost.map(|l| format!(", lost {l}")).unwrap_or_default()
            );
            runs.push(run);
        }
    }
    let _ = fs::remove_dir_all(&tmp);
    Ok(results)
}

fn measure(
    setup: Setup,
    tcptrace: &Path,
    ns: &BenchNetns,
    tmp: &Path,
    options: &Options,
) -> Result<Run> {
    let duration = Duration::from_secs(options.seconds);
    let output = tmp.join("events.out");
    let _ = fs::remove_file(&output);
    let previous = || {
        options
            .previous
            .as_deref()
            .context("a previous-build setup without --previous")
    };
    let mut tracer = match setup {
        Setup::Baseline => None,
        Setup::TraceJson => Some(Tracer::start(
            Command::new(tcptrace)
                .args(["trace", "--json", "--no-summary", "--output"])
                .arg(&output),
            Ready::StderrLine("Ctrl-C to stop"),
            None,
        )?),
        Setup::AllSignals => Some(Tracer::start(
            Command::new(tcptrace)
                .args([
                    "trace",
                    "--json",
                    "--events",
                    "all",
                    "--no-summary",
                    "--output",
                ])
                .arg(&output),
            Ready::StderrLine("Ctrl-C to stop"),
            None,
        )?),
        Setup::PreviousJson => Some(Tracer::start(
            Command::new(previous()?)
                .args(["trace", "--json", "--no-summary", "--output"])
                .arg(&output),
            Ready::StderrLine("Ctrl-C to stop"),
            None,
        )?),
        Setup::PreviousAggregate => Some(Tracer::start(
            Command::new(previous()?).args(["top", "--json", "--interval", "1s"]),
            Ready::StderrLine("Ctrl-C to stop"),
            Some(&output),
        )?),
        Setup::Record => Some(Tracer::start(
            Command::new(tcptrace)
                .args(["trace", "--record"])
                .arg(&output),
            Ready::StderrLine("Ctrl-C to stop"),
            None,
        )?),
        Setup::KernelOnly => Some(Tracer::start(
            Command::new(tcptrace)
                .args(["trace", "--json", "--port", "1", "--output"])
                .arg(&output),
            Ready::StderrLine("Ctrl-C to stop"),
            None,
        )?),
        Setup::Aggregate => Some(Tracer::start(
            Command::new(tcptrace).args(["top", "--json", "--interval", "1s"]),
            Ready::StderrLine("Ctrl-C to stop"),
            Some(&output),
        )?),
        // tcpstates block-buffers its output to a file: give it time to attach.
        Setup::Tcpstates => Some(Tracer::start(
            &mut Command::new("tcpstates"),
            Ready::After(Duration::from_secs(3)),
            Some(&output),
        )?),
    };
    // The tracer is stopped while the storm still runs (the churn goes on
    // 400 ms longer): Ctrl-C must work when things are worst.
    let stopper = tracer.take().map(|tracer| {
        std::thread::spawn(move || {
            std::thread::sleep(duration + Duration::from_millis(200));
            let rss = tracer.peak_rss_kib();
            tracer.stop().map(|(usage, stderr)| (rss, usage, stderr))
        })
    });
    let (rate, connections) = churn(ns, options.threads, duration + Duration::from_millis(400))?;
    let mut run = Run {
        rate,
        ..Run::default()
    };
    if let Some(stopper) = stopper {
        let (rss, usage, stderr) = stopper.join().expect("stopper thread")?;
        run.max_rss_kib = rss;
        run.cpu_seconds = usage.cpu_seconds;
        run.startup_cpu = usage.startup_cpu;
        run.stop_seconds = usage.stop_seconds;
        if matches!(
            setup,
            Setup::TraceJson | Setup::PreviousJson | Setup::AllSignals | Setup::Record
        ) {
            run.output_bytes = fs::metadata(&output).map_or(0, |m| m.len());
        }
        match setup {
            Setup::TraceJson
            | Setup::Aggregate
            | Setup::KernelOnly
            | Setup::AllSignals
            | Setup::PreviousJson
            | Setup::PreviousAggregate => read_tcptrace_counts(&output, &stderr, &mut run)?,
            Setup::Record => read_summary_line(&stderr, &mut run)?,
            Setup::Tcpstates => {
                // One line per state change, after a header line.
                let lines = BufReader::new(fs::File::open(&output)?).lines().count() as u64;
                run.received = Some(lines.saturating_sub(1));
                // Client and server: CLOSE->SYN_SENT, SYN_SENT->ESTABLISHED,
                // LISTEN->SYN_RECV, SYN_RECV->ESTABLISHED, 2x ESTABLISHED->CLOSE.
                run.produced = Some(connections * 6);
                run.lost = Some(
                    stderr
                        .iter()
                        .filter_map(|l| {
                            l.strip_prefix("lost ")
                                .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
                        })
                        .sum(),
                );
            }
            Setup::Baseline => {}
        }
    }
    Ok(run)
}

/// `trace --record` prints only its human summary, on stderr:
/// `--- tcptrace: 4.2 s, R events received, P produced, L lost ---`.
fn read_summary_line(stderr: &[String], run: &mut Run) -> Result<()> {
    let line = stderr
        .iter()
        .find(|l| l.starts_with("--- tcptrace:") && l.contains("events received"))
        .with_context(|| format!("no tcptrace summary on stderr: {stderr:?}"))?;
    let number_before = |word: &str| {
        let at = line.find(word)?;
        line[..at].split_whitespace().last()?.parse::<u64>().ok()
    };
    run.received = number_before(" events received");
    run.produced = number_before(" produced");
    run.lost = number_before(" lost");
    Ok(())
}

/// tcptrace prints its JSON summary as the last record of the stream
/// (trace) or its counters in the last snapshot (top).
fn read_tcptrace_counts(output: &Path, stderr: &[String], run: &mut Run) -> Result<()> {
    let text = fs::read_to_string(output).unwrap_or_default();
    let last = text
        .lines()
        .rev()
        .find(|l| l.contains("\"events_produced\"") || l.contains("\"type\":\"top\""));
    let Some(last) = last else {
        bail!(
            "no tcptrace summary in {} (stderr: {stderr:?})",
            output.display()
        );
    };
    let value: serde_json::Value = serde_json::from_str(last)?;
    let get = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| value.pointer(n).and_then(serde_json::Value::as_u64))
    };
    // trace's summary has all three; top's last snapshot has events and
    // events_lost (produced = received + lost, both exact).
    run.received = get(&["/events_received", "/events"]);
    run.lost = get(&["/events_lost"]);
    run.produced = get(&["/events_produced"]).or_else(|| Some(run.received? + run.lost?));
    if run.received.is_none() {
        // `trace` ran with --no-summary: count the event lines.
        run.received = Some(
            text.lines()
                .filter(|l| l.contains("\"type\":\"event\""))
                .count() as u64,
        );
    }
    Ok(())
}

enum Ready {
    /// A line on stderr containing this text.
    StderrLine(&'static str),
    /// A fixed delay (for tools that say nothing when attached).
    After(Duration),
}

struct Tracer {
    child: Child,
    stderr: mpsc::Receiver<String>,
    startup_cpu: f64,
}

/// utime + stime of a live process, from /proc/PID/stat.
fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / hz)
}

struct Usage {
    /// CPU after start-up: the part that scales with events.
    cpu_seconds: f64,
    startup_cpu: f64,
    stop_seconds: f64,
}

impl Tracer {
    fn start(cmd: &mut Command, ready: Ready, stdout_to: Option<&PathBuf>) -> Result<Tracer> {
        let stdout = match stdout_to {
            Some(path) => Stdio::from(fs::File::create(path)?),
            None => Stdio::null(),
        };
        let mut child = cmd
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            if Instant::now() > deadline {
                bail!("tracer did not become ready: {seen:?}");
            }
            match ready {
                Ready::StderrLine(text) => {
                    if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                        let done = line.contains(text);
                        seen.push(line);
                        if done {
                            break;
                        }
                    }
                }
                Ready::After(delay) => {
                    std::thread::sleep(delay);
                    if child.try_wait()?.is_none() {
                        break;
                    }
                }
            }
            if let Some(status) = child.try_wait()? {
                bail!("tracer exited early ({status}): {seen:?}");
            }
        }
        // CPU spent starting up (BTF, verifier, the socket scan) is
        // reported apart from the CPU per event.
        let startup_cpu = process_cpu_seconds(child.id()).unwrap_or(0.0);
        Ok(Tracer {
            child,
            stderr: rx,
            startup_cpu,
        })
    }

    /// Peak resident set since exec (VmHWM). rusage's ru_maxrss would
    /// include the parent's pages shared before exec.
    fn peak_rss_kib(&self) -> u64 {
        fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// SIGINT, then wait4 for the CPU time and peak RSS of the process.
    fn stop(self) -> Result<(Usage, Vec<String>)> {
        let pid = self.child.id() as i32;
        let asked = Instant::now();
        // SAFETY: signalling and reaping our own child.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let mut status = 0;
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc != pid {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        std::mem::forget(self.child);
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let stderr: Vec<String> = self.stderr.try_iter().collect();
        Ok((
            Usage {
                cpu_seconds: (secs(usage.ru_utime) + secs(usage.ru_stime) - self.startup_cpu)
                    .max(0.0),
                startup_cpu: self.startup_cpu,
                stop_seconds: asked.elapsed().as_secs_f64(),
            },
            stderr,
        ))
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
