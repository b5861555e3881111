//! Command line: every clap struct lives here; each subcommand's work
//! lives in its own module. `main` parses, dispatches, and turns any error
//! into one line on stderr and a non-zero exit.

use std::{io, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};

/// Linux TCP incident tool: who is hit by resets, what the kernel saw, why.
#[derive(Debug, Parser)]
#[command(name = "tcptrace", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream TCP events (state changes, connects, retransmits, resets).
    Trace(TraceArgs),
    /// Sockets by state, process, port and peer; listen queues; counters.
    Snapshot(SnapshotArgs),
    /// Show recommended TCP sysctls; apply or revert them safely.
    Tune(TuneArgs),
    /// Generate load on purpose to reproduce a storm.
    Stress(StressArgs),
    /// Watch for a while, then name the cause of resets/timeouts and the fix.
    Diagnose(DiagnoseArgs),
    /// Live per-process / per-peer view of resets, retransmits, connects.
    Top(TopArgs),
}

/// Filters shared by every command that traces.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Only sockets owned by this process id (tgid).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
    /// Only sockets owned by a process with this command name (max 15 bytes).
    #[arg(long, value_parser = parse_comm)]
    pub comm: Option<String>,
    /// Only connections with this local or remote port.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Only this network namespace: an inode number, a name under
    /// /run/netns, or a path such as /proc/PID/ns/net.
    #[arg(long)]
    pub netns: Option<String>,
    /// Event kinds to keep, comma separated: rst, retrans, connect, state.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "rst,retrans,connect,state"
    )]
    pub events: Vec<EventClass>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventClass {
    Rst,
    Retrans,
    Connect,
    State,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Print NDJSON (one object per line, schema in docs/events.md).
    #[arg(long)]
    pub json: bool,
    /// Write events to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Stop after this long (e.g. 30s, 5m); default: until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Ring buffer size in KiB (a power of two, at least 4).
    #[arg(long, default_value_t = 8192, value_parser = parse_ring_kib)]
    pub ring_kib: u32,
    /// Do not print the summary at the end.
    #[arg(long)]
    pub no_summary: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {}

#[derive(Debug, Args)]
pub struct TuneArgs {}

#[derive(Debug, Args)]
pub struct StressArgs {}

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Watch this long (e.g. 30s, 5m); default: until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print the report as one JSON document (schema in docs/diagnose.md).
    #[arg(long)]
    pub json: bool,
    /// Ring buffer size in KiB (a power of two, at least 4).
    #[arg(long, default_value_t = 8192, value_parser = parse_ring_kib)]
    pub ring_kib: u32,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Refresh interval (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Stop after this long; default: until q / Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Rows per table.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub rows: u16,
    /// Without a terminal: print each snapshot as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Print periodic plain snapshots even on a terminal (no TUI).
    #[arg(long)]
    pub plain: bool,
    /// Ring buffer size in KiB (a power of two, at least 4).
    #[arg(long, default_value_t = 8192, value_parser = parse_ring_kib)]
    pub ring_kib: u32,
}

/// Parses durations such as `500ms`, `30s`, `5m`, `1h`, or bare seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (try 500ms, 30s, 5m, 1h)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "'{text}': unknown unit '{unit}' (use ms, s, m or h)"
            ));
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 366.0 * 86400.0 {
        return Err(format!(
            "'{text}' is out of range (more than 0, at most a year)"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_comm(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 15 {
        return Err("a command name is 1 to 15 bytes (the kernel's TASK_COMM_LEN)".into());
    }
    Ok(text.to_string())
}

fn parse_ring_kib(text: &str) -> Result<u32, String> {
    let kib: u32 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of KiB"))?;
    if kib < 4 || !kib.is_power_of_two() || kib > 1 << 20 {
        return Err(format!(
            "{kib} KiB: the ring buffer size must be a power of two from 4 KiB to 1 GiB"
        ));
    }
    Ok(kib)
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("tcptrace: {} (see --help)", usage_error(&err));
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tcptrace: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        match cli.command {
            Command::Trace(args) => crate::trace::run(args).await,
            Command::Diagnose(args) => crate::diagnose::run(args).await,
            Command::Top(args) => crate::top::run(args).await,
            Command::Snapshot(_) | Command::Tune(_) | Command::Stress(_) => {
                anyhow::bail!("this command is not built yet")
            }
        }
    })
}

/// clap's message without its usage block: the first line, minus "error: ".
fn usage_error(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("[possible values"))
    {
        Some(values) => format!("{first} {values}"),
        None => first.to_string(),
    }
}

/// The error and its causes on one line, without repeating a cause that
/// the outer message already quotes.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// A closed stdout (`tcptrace trace | head`) ends the run quietly.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn ring_sizes() {
        assert!(parse_ring_kib("4").is_ok());
        assert!(parse_ring_kib("3").is_err());
        assert!(parse_ring_kib("1000").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
