//! `cargo xtask bench WHAT`: benchmarks, not tests. Each compares
//! tcptrace with a baseline run side by side in the same command and
//! writes its table into BENCHMARKS.md.

mod churn;
mod overhead;
mod soak;
mod stress;

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, Result, bail};

use crate::{setup::BuildEnv, target_dir, workspace_root};

#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Churn throughput, loss, CPU and RSS with and without tracers.
    Overhead(OverheadArgs),
    /// Churn rate of `tcptrace stress churn` against a blocking std
    /// connect/close loop with as many threads, on loopback in a netns.
    Stress(StressArgs),
    /// Resident set of top, diagnose and the exporter over a long storm.
    Soak(SoakArgs),
}

#[derive(Debug, Clone, Copy, clap::Args)]
pub struct SoakArgs {
    /// Length of the storm, in minutes (the exporter's window fills in
    /// its first 5).
    #[arg(long, default_value_t = 10)]
    pub minutes: u64,
    /// Churn threads (default: 2 per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Do not rewrite BENCHMARKS.md.
    #[arg(long)]
    pub no_write: bool,
}

#[derive(Debug, Clone, Copy, clap::Args)]
pub struct StressArgs {
    /// Connections in flight: tcptrace's --concurrency and the
    /// baseline's thread count.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u32,
    /// Length of each run, in seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// A/B rounds (the order alternates); the medians are reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Do not rewrite BENCHMARKS.md.
    #[arg(long)]
    pub no_write: bool,
}

#[derive(Debug, clap::Args)]
pub struct OverheadArgs {
    /// Seconds of churn per run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// A/B rounds (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Churn threads (default: 2 per core, to keep every core busy).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Another tcptrace binary (e.g. the build before a change), whose
    /// JSON, aggregation and hooks-only runs join the same rounds.
    #[arg(long, value_name = "BIN")]
    pub previous: Option<std::path::PathBuf>,
    /// Leave out the runs that compare with another tool or every hook
    /// (tcpstates, bpftrace counting, `--events all`): tcptrace's own
    /// modes, and the floor (bpftrace's empty programs on the same
    /// tracepoints) when bpftrace is there.
    #[arg(long)]
    pub quick: bool,
    /// Only the rows that bound the kernel hooks: no tracer, bpftrace's
    /// empty programs on tcptrace's tracepoints (with and without the
    /// syscall exits), bpftrace counting, tcptrace hooks only. Short
    /// rounds, so that many fit: the floor of issue 13's hooks goal.
    #[arg(long, conflicts_with_all = ["quick", "previous"])]
    pub floor: bool,
    /// Do not rewrite BENCHMARKS.md.
    #[arg(long)]
    pub no_write: bool,
}

pub fn run(env: &BuildEnv, what: Bench) -> Result<()> {
    if crate::test::euid() != 0 {
        bail!("benchmarks load eBPF programs and create network namespaces: run as root");
    }
    match what {
        Bench::Overhead(args) => {
            crate::cargo(
                env,
                "tcptrace (release)",
                &["build", "--release", "--package", "tcptrace"],
            )?;
            overhead(&target_dir().join("release/tcptrace"), &args)
        }
        Bench::Stress(args) => stress::stress(env, &args),
        Bench::Soak(args) => {
            crate::cargo(
                env,
                "tcptrace (release)",
                &["build", "--release", "--package", "tcptrace"],
            )?;
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let threads = args.threads.unwrap_or(2 * cores);
            let table = soak::soak(
                &target_dir().join("release/tcptrace"),
                args.minutes,
                threads,
            )?;
            println!("{table}");
            if !args.no_write {
                let command = format!(
                    "sudo cargo xtask bench soak --minutes {} (threads: {threads}, cores: {cores})",
                    args.minutes
                );
                write_section("soak", &format!("Command: `{command}`\n\n{table}"))?;
            }
            Ok(())
        }
    }
}

fn overhead(tcptrace: &Path, args: &OverheadArgs) -> Result<()> {
    use overhead::Setup;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = args.threads.unwrap_or(2 * cores);
    if args.floor {
        let has_bpftrace = std::process::Command::new("bpftrace")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !has_bpftrace {
            bail!("--floor needs Debian's bpftrace");
        }
        let setups = vec![
            Setup::Baseline,
            Setup::BpftraceEmpty,
            Setup::BpftraceEmptyNoSyscalls,
            Setup::Bpftrace,
            Setup::KernelOnly,
        ];
        return overhead_table(tcptrace, args, setups, cores, threads);
    }
    let mut setups = vec![Setup::Baseline, Setup::TraceJson];
    let has_top = std::process::Command::new(tcptrace)
        .args(["top", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_top {
        setups.push(Setup::Aggregate);
        setups.push(Setup::Diagnose);
    } else {
        eprintln!("xtask bench: `tcptrace top` is not built yet; skipping the aggregation run");
    }
    if args.quick {
        // --quick: no comparison with another tool.
    } else if std::process::Command::new("tcpstates")
        .arg("--help")
        .output()
        .is_ok()
    {
        setups.push(Setup::Tcpstates);
    } else {
        eprintln!("xtask bench: no tcpstates (Debian's libbpf-tools); skipping its run");
    }
    let has_bpftrace = std::process::Command::new("bpftrace")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_bpftrace {
        eprintln!("xtask bench: no bpftrace (Debian's bpftrace); skipping its runs");
    } else {
        if !args.quick {
            setups.push(Setup::Bpftrace);
        }
        // The floor under the hooks-only row (empty programs on the same
        // tracepoints), in --quick too: the one figure that bounds it.
        setups.push(Setup::BpftraceEmpty);
        setups.push(Setup::BpftraceEmptyNoSyscalls);
    }
    setups.push(Setup::Record);
    setups.push(Setup::KernelOnly);
    setups.push(Setup::TraceJsonTc);
    if !args.quick {
        setups.push(Setup::AllSignals);
    }
    setups.push(Setup::Exporter);
    setups.push(Setup::ExporterRulesEverySecond);
    if let Some(previous) = &args.previous {
        if !previous.is_file() {
            bail!("--previous {}: no such file", previous.display());
        }
        setups.push(Setup::PreviousJson);
        setups.push(Setup::PreviousAggregate);
        setups.push(Setup::PreviousKernelOnly);
    }
    overhead_table(tcptrace, args, setups, cores, threads)
}

/// Runs `setups` in alternating rounds and prints (and unless
/// `--no-write`, writes) their table.
fn overhead_table(
    tcptrace: &Path,
    args: &OverheadArgs,
    setups: Vec<overhead::Setup>,
    cores: usize,
    threads: usize,
) -> Result<()> {
    use overhead::Setup;
    let options = overhead::Options {
        seconds: args.seconds,
        rounds: args.rounds,
        threads,
        setups,
        previous: args.previous.clone(),
    };
    let results = overhead::run(tcptrace, &options)?;

    // Each setup against the baseline of its own round: this VM's rate
    // drifts by several percent between rounds, which a ratio of medians
    // taken across rounds would fold into the tracer's cost.
    let baseline_rates: Vec<f64> = results[0].1.iter().map(|r| r.rate).collect();
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| setup | churn conn/s (median) | vs baseline: median of per-round ratios (range) | events received / produced | opens counted in the kernel | lost | \
         tracer CPU s per 1M events | bytes per event written | tracer start-up CPU s | tracer peak RSS | Ctrl-C to exit, mid-storm (max) |"
    );
    let _ = writeln!(
        table,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (setup, runs) in &results {
        let mut rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
        let rate = overhead::median(&mut rates);
        let mut ratios: Vec<f64> = runs
            .iter()
            .zip(&baseline_rates)
            .map(|(run, base)| 100.0 * run.rate / base)
            .collect();
        let (low, high) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(*r), h.max(*r)));
        let ratio = overhead::median(&mut ratios);
        let sum =
            |f: fn(&overhead::Run) -> Option<u64>| -> Option<u64> { runs.iter().map(f).sum() };
        let received = sum(|r| r.received);
        let produced = sum(|r| r.produced);
        let lost = sum(|r| r.lost);
        let counted = sum(|r| r.counted);
        // CPU that scales with events: start-up (BTF, verifier, socket
        // scan) is shown in its own column.
        let cpu: f64 = runs.iter().map(|r| r.cpu_seconds).sum();
        let startup = runs.iter().map(|r| r.startup_cpu).sum::<f64>() / runs.len().max(1) as f64;
        let rss = runs.iter().map(|r| r.max_rss_kib).max().unwrap_or(0);
        let stop = runs.iter().map(|r| r.stop_seconds).fold(0.0, f64::max);
        let dash = || "-".to_string();
        let events = match (received, produced) {
            (Some(r), Some(p)) => format!("{r} / {p} ({:.1}%)", 100.0 * r as f64 / p.max(1) as f64),
            _ => dash(),
        };
        // Per event the kernel saw: those counted there cost the reader
        // a share of a map read instead of a record.
        let cpu_per_million = match received.map(|r| r + counted.unwrap_or(0)) {
            Some(r) if r > 0 => format!("{:.2}", cpu / r as f64 * 1e6),
            _ => dash(),
        };
        let bytes: u64 = runs.iter().map(|r| r.output_bytes).sum();
        let bytes_per_event = match received {
            Some(r) if r > 0 && bytes > 0 => format!("{:.0}", bytes as f64 / r as f64),
            _ => dash(),
        };
        let is_tracer = *setup != Setup::Baseline;
        let _ = writeln!(
            table,
            "| {} | {rate:.0} | {ratio:.1}% ({low:.0}-{high:.0}%) | {events} | {} | {} | {cpu_per_million} | {bytes_per_event} | {} | {} | {} |",
            setup.name(),
            counted.map_or_else(dash, |c| c.to_string()),
            lost.map_or_else(dash, |l| l.to_string()),
            if is_tracer {
                format!("{startup:.2}")
            } else {
                dash()
            },
            if rss > 0 {
                format!("{:.1} MiB", rss as f64 / 1024.0)
            } else {
                dash()
            },
            if stop > 0.0 {
                format!("{stop:.2} s")
            } else {
                dash()
            },
        );
    }
    println!("{table}");
    if !args.no_write {
        let previous = args
            .previous
            .as_ref()
            .map(|p| format!(" --previous {}", p.display()))
            .unwrap_or_default();
        let command = format!(
            "sudo cargo xtask bench overhead --seconds {} --rounds {}{}{previous}{}{} (threads: {threads}, cores: {cores})",
            args.seconds,
            args.rounds,
            args.threads
                .map(|t| format!(" --threads {t}"))
                .unwrap_or_default(),
            if args.quick { " --quick" } else { "" },
            if args.floor { " --floor" } else { "" }
        );
        // The default load has its own section; other thread counts
        // (how cost grows with load) get one each, and so does --floor.
        let section = match args.threads {
            _ if args.floor => "overhead-floor".to_string(),
            Some(t) if t != 2 * cores => format!("overhead-{t}-threads"),
            _ => "overhead".to_string(),
        };
        write_section(&section, &format!("Command: `{command}`\n\n{table}"))?;
    }
    Ok(())
}

/// Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->`
/// in BENCHMARKS.md (appending the section if it is new).
pub fn write_section(name: &str, body: &str) -> Result<()> {
    let path = workspace_root().join("BENCHMARKS.md");
    let text = fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let (begin, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let block = format!("{begin}\n{body}\n{end}");
    let new = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{block}{}", &text[..b], &text[e + end.len()..]),
        _ => format!("{}\n{block}\n", text.trim_end()),
    };
    fs::write(&path, new).with_context(|| format!("writing {}", path.display()))
}
