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
    /// `trace --json --netns BENCH --iface lo`: the TC programs of reset
    /// provenance on the churn's own interface (every packet of the
    /// churn crosses them), next to the same trace without them.
    TraceJsonTc,
    /// `trace --json` with every event kind, reuse after idle included:
    /// all the hooks of the new signals attached.
    AllSignals,
    /// `tcptrace exporter` as deploy/ runs it (every event kind, rules
    /// and top-N every 15 s, so none within a short run), scraped every
    /// second: the always-on mode, counting in userspace until issue
    /// 13's in-kernel counters.
    Exporter,
    /// The same with `--interval 1s`: the rules, their host readings
    /// (socket table, counters, conntrack) and top-N every second.
    ExporterRulesEverySecond,
    /// `tcptrace diagnose --json` (aggregation: the rules at the end).
    Diagnose,
    /// bpftrace counting the same tracepoints in maps (per-CPU counts,
    /// no per-event output): the in-kernel floor another tool reaches.
    Bpftrace,
    /// bpftrace with an empty action on every tracepoint tcptrace attaches
    /// by default (`top`, `trace`, hooks only): what attaching programs
    /// there costs the churn before any program does anything, the floor
    /// under the hooks-only row.
    BpftraceEmpty,
    /// The same without the two `syscalls:sys_exit_accept*` tracepoints:
    /// the difference is what putting every syscall of the host on the
    /// slow path costs, on its own.
    BpftraceEmptyNoSyscalls,
    /// `--previous BIN trace --json --output FILE`: another build (the one
    /// before a change) in the same rounds, for a like-for-like ratio.
    PreviousJson,
    /// `--previous BIN top`.
    PreviousAggregate,
    /// `--previous BIN` with a filter no event passes: the other build's
    /// kernel hooks alone.
    PreviousKernelOnly,
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
            Setup::TraceJsonTc => "tcptrace trace --json with TC programs on the churn's lo",
            Setup::AllSignals => "tcptrace trace --json --events all",
            Setup::Exporter => "tcptrace exporter (scraped every 1 s)",
            Setup::Diagnose => "tcptrace diagnose --json (aggregation only)",
            Setup::Bpftrace => "bpftrace counting the same tracepoints in maps",
            Setup::BpftraceEmpty => "bpftrace, empty programs on tcptrace's tracepoints",
            Setup::BpftraceEmptyNoSyscalls => {
                "bpftrace, empty programs on tcptrace's tracepoints but the syscall exits"
            }
            Setup::ExporterRulesEverySecond => {
                "tcptrace exporter --interval 1s (scraped every 1 s)"
            }
            Setup::PreviousJson => "previous build: trace --json --output FILE",
            Setup::PreviousAggregate => "previous build: top (aggregation only)",
            Setup::PreviousKernelOnly => "previous build: hooks only (filter passes nothing)",
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
    /// Successful opens counted in the kernel instead of sent as events.
    pub counted: Option<u64>,
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
        Setup::TraceJsonTc => Some(Tracer::start(
            Command::new(tcptrace)
                .args(["trace", "--json", "--no-summary", "--netns", &ns.name])
                .args(["--iface", "lo", "--output"])
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
        Setup::KernelOnly | Setup::PreviousKernelOnly => Some(Tracer::start(
            Command::new(if setup == Setup::KernelOnly {
                tcptrace
            } else {
                previous()?
            })
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
        // Scraped like a Prometheus at 1 s (by `Scraper`).
        Setup::Exporter | Setup::ExporterRulesEverySecond => {
            let interval = if setup == Setup::Exporter {
                "15s"
            } else {
                "1s"
            };
            Some(Tracer::start(
                Command::new(tcptrace).args([
                    "exporter",
                    "--listen",
                    "127.0.0.1:0",
                    "--interval",
                    interval,
                ]),
                Ready::StderrLine("Ctrl-C to stop"),
                None,
            )?)
        }
        Setup::Diagnose => Some(Tracer::start(
            Command::new(tcptrace).args(["diagnose", "--json"]),
            Ready::StderrLine("Ctrl-C to stop"),
            Some(&output),
        )?),
        // bpftrace says nothing on stderr when attached.
        Setup::Bpftrace => Some(Tracer::start(
            Command::new("bpftrace").args(["-e", BPFTRACE_COUNTING]),
            Ready::After(Duration::from_secs(5)),
            Some(&output),
        )?),
        Setup::BpftraceEmpty | Setup::BpftraceEmptyNoSyscalls => Some(Tracer::start(
            Command::new("bpftrace").args([
                "-e".to_string(),
                bpftrace_empty(setup == Setup::BpftraceEmpty),
            ]),
            Ready::After(Duration::from_secs(5)),
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
    let scraper = match (&tracer, setup) {
        (Some(tracer), Setup::Exporter | Setup::ExporterRulesEverySecond) => {
            Some(Scraper::start(tracer.metrics_addr()?, duration))
        }
        _ => None,
    };
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
    let scrapes = scraper.map(Scraper::join).transpose()?;
    if let Some(stopper) = stopper {
        let (rss, usage, stderr) = stopper.join().expect("stopper thread")?;
        run.max_rss_kib = rss;
        run.cpu_seconds = usage.cpu_seconds;
        run.startup_cpu = usage.startup_cpu;
        run.stop_seconds = usage.stop_seconds;
        if matches!(
            setup,
            Setup::TraceJson
                | Setup::TraceJsonTc
                | Setup::PreviousJson
                | Setup::AllSignals
                | Setup::Record
        ) {
            run.output_bytes = fs::metadata(&output).map_or(0, |m| m.len());
        }
        match setup {
            Setup::TraceJson
            | Setup::Aggregate
            | Setup::KernelOnly
            | Setup::PreviousKernelOnly
            | Setup::TraceJsonTc
            | Setup::AllSignals
            | Setup::PreviousJson
            | Setup::PreviousAggregate
            | Setup::Diagnose => read_tcptrace_counts(&output, &stderr, &mut run)?,
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
            Setup::Exporter | Setup::ExporterRulesEverySecond => {
                read_exporter_counts(&stderr, &mut run)?;
                if scrapes == Some(0) && duration >= Duration::from_secs(2) {
                    bail!("the exporter answered no scrape (stderr: {stderr:?})");
                }
            }
            Setup::Baseline
            | Setup::Bpftrace
            | Setup::BpftraceEmpty
            | Setup::BpftraceEmptyNoSyscalls => {}
        }
    }
    Ok(run)
}

/// What `top` attaches by default (state changes, resets, retransmits,
/// drops), counted in bpftrace maps by the same kind of key: state
/// transitions, reset reasons, drop reasons. bpftrace's `count()` is a
/// per-CPU map update, as tcptrace's in-kernel counts are. `args->` is
/// the syntax of Debian's bpftrace (0.17).
const BPFTRACE_COUNTING: &str = "\
tracepoint:sock:inet_sock_set_state { @state[args->oldstate, args->newstate] = count(); }
tracepoint:tcp:tcp_send_reset { @rst_sent[args->reason] = count(); }
tracepoint:tcp:tcp_receive_reset { @rst_received = count(); }
tracepoint:tcp:tcp_retransmit_skb { @retransmits[args->state] = count(); }
tracepoint:tcp:tcp_retransmit_synack { @synack_retransmits = count(); }
tracepoint:skb:kfree_skb { @drops[args->reason] = count(); }";

/// Every tracepoint tcptrace attaches by default on this kernel (`top`,
/// `trace` and the hooks-only run: all kinds but reuse), each with an
/// empty action: bpftrace 0.17 loads a program that returns at once, so
/// what is left is the tracepoint machinery. Two of tcptrace's hooks are
/// raw tracepoints (`inet_sock_set_state` where BTF is there, and
/// `inet_sk_error_report`); bpftrace 0.17 has no `rawtracepoint:` probe,
/// so those two are the formatted tracepoints here, which build their
/// record first: this floor is, if anything, a little above tcptrace's.
/// The syscall exits put every syscall of the host on the slow path
/// (`syscall_trace_exit`) while attached; `with_syscalls` false leaves
/// them out.
fn bpftrace_empty(with_syscalls: bool) -> String {
    let mut script = BPFTRACE_EMPTY_NO_SYSCALLS.to_string();
    if with_syscalls {
        script.push_str(SYSCALL_EXITS_EMPTY);
    }
    script
}

/// The tracepoints of `bpftrace_empty` but the syscall exits.
const BPFTRACE_EMPTY_NO_SYSCALLS: &str = "\
tracepoint:sock:inet_sock_set_state {}
tracepoint:sock:inet_sk_error_report {}
tracepoint:tcp:tcp_send_reset {}
tracepoint:tcp:tcp_receive_reset {}
tracepoint:tcp:tcp_retransmit_skb {}
tracepoint:tcp:tcp_retransmit_synack {}
tracepoint:skb:kfree_skb {}";

/// The syscall exits the accept programs hang on.
const SYSCALL_EXITS_EMPTY: &str = "
tracepoint:syscalls:sys_exit_accept4 {}
tracepoint:syscalls:sys_exit_accept {}";

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
pub(super) fn read_tcptrace_counts(output: &Path, stderr: &[String], run: &mut Run) -> Result<()> {
    let text = fs::read_to_string(output).unwrap_or_default();
    // diagnose --json writes one pretty-printed document.
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(whole) => whole,
        Err(_) => {
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
            serde_json::from_str(last)?
        }
    };
    let get = |names: &[&str]| {
        names.iter().find_map(|n| {
            value
                .pointer(n)
                .or_else(|| value.pointer(&format!("/counts{n}")))
                .and_then(serde_json::Value::as_u64)
        })
    };
    // trace's summary has all three; top's last snapshot has events and
    // events_lost (produced = received + lost, both exact).
    run.received = get(&["/events_received", "/events"]);
    run.lost = get(&["/events_lost"]);
    run.produced = get(&["/events_produced"]).or_else(|| Some(run.received? + run.lost?));
    run.counted = get(&["/opens_counted_in_kernel"]);
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

/// The exporter's closing line on stderr: `tcptrace exporter: R events
/// received, P produced, L lost[, ...]; N scrapes served`.
pub(super) fn read_exporter_counts(stderr: &[String], run: &mut Run) -> Result<()> {
    let line = stderr
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("tcptrace exporter: "))
        .with_context(|| format!("no closing line from the exporter: {stderr:?}"))?;
    // Parts such as `275180 events received` or `0 lost`: the number
    // first, the label last.
    let figure = |label: &str| -> Option<u64> {
        line.split([',', ';']).find_map(|part| {
            let words: Vec<&str> = part.split_whitespace().collect();
            (words.last() == Some(&label))
                .then(|| words.first()?.parse().ok())
                .flatten()
        })
    };
    run.received = figure("received");
    run.produced = figure("produced");
    run.lost = figure("lost");
    run.counted = Some(
        line.split([',', ';'])
            .find(|part| part.contains("successful opens counted in the kernel"))
            .and_then(|part| part.split_whitespace().next()?.parse().ok())
            .unwrap_or(0),
    );
    if run.received.is_none() || run.produced.is_none() {
        bail!("cannot read the exporter's counts: {line}");
    }
    Ok(())
}

/// Scrapes /metrics once a second, as Prometheus would, for as long as
/// asked (the tracer is stopped after that, so no scrape meets its
/// shutdown).
pub(super) struct Scraper(std::thread::JoinHandle<Result<u64>>);

impl Scraper {
    pub(super) fn start(addr: std::net::SocketAddr, duration: Duration) -> Scraper {
        Scraper(std::thread::spawn(move || {
            let end = Instant::now() + duration;
            let mut scrapes = 0;
            loop {
                std::thread::sleep(Duration::from_secs(1));
                if Instant::now() >= end {
                    return Ok(scrapes);
                }
                scrape(addr)?;
                scrapes += 1;
            }
        }))
    }

    /// Scrapes done.
    pub(super) fn join(self) -> Result<u64> {
        self.0.join().expect("scraper thread")
    }
}

/// One GET /metrics, read to the end; the answer must be a 200.
fn scrape(addr: std::net::SocketAddr) -> Result<()> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("scrape {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .with_context(|| format!("scrape {addr}"))?;
    if !answer.starts_with("HTTP/1.1 200") {
        bail!(
            "scrape {addr}: {}",
            answer.lines().next().unwrap_or("no answer")
        );
    }
    Ok(())
}

pub(super) enum Ready {
    /// A line on stderr containing this text.
    StderrLine(&'static str),
    /// A fixed delay (for tools that say nothing when attached).
    After(Duration),
}

/// A tracer process that a bench stopped by an error (a failed scrape,
/// a tracer that never became ready) must not leave running: killed and
/// reaped on drop, unless `Tracer::stop` reaped it first (and forgets it).
struct KillOnDrop(Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub(super) struct Tracer {
    child: KillOnDrop,
    stderr: mpsc::Receiver<String>,
    startup_cpu: f64,
    /// What it said before it was ready.
    said: Vec<String>,
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

pub(super) struct Usage {
    /// CPU after start-up: the part that scales with events.
    pub(super) cpu_seconds: f64,
    pub(super) startup_cpu: f64,
    pub(super) stop_seconds: f64,
}

impl Tracer {
    pub(super) fn start(
        cmd: &mut Command,
        ready: Ready,
        stdout_to: Option<&PathBuf>,
    ) -> Result<Tracer> {
        let stdout = match stdout_to {
            Some(path) => Stdio::from(fs::File::create(path)?),
            None => Stdio::null(),
        };
        let mut child = KillOnDrop(
            cmd.stdout(stdout)
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("cannot start {cmd:?}"))?,
        );
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
            said: seen,
        })
    }

    /// The exporter's address, from `exporting on http://ADDR/metrics`.
    pub(super) fn metrics_addr(&self) -> Result<std::net::SocketAddr> {
        self.said
            .iter()
            .find_map(|l| {
                l.split("http://")
                    .nth(1)?
                    .split("/metrics")
                    .next()?
                    .parse()
                    .ok()
            })
            .with_context(|| format!("no listening address from the exporter: {:?}", self.said))
    }

    /// Peak resident set since exec (VmHWM). rusage's ru_maxrss would
    /// include the parent's pages shared before exec.
    pub(super) fn peak_rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmHWM:")
    }

    /// Its process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, then wait4 for the CPU time and peak RSS of the process.
    pub(super) fn stop(self) -> Result<(Usage, Vec<String>)> {
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
        // Up to the end of its stderr: the exporter's counts are its last line.
        let mut stderr = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(line) = self
            .stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            stderr.push(line);
        }
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

/// A `kB` line of /proc/PID/status (0 when gone).
pub(super) fn status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
