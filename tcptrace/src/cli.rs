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
pub struct SnapshotArgs {
    /// Print JSON (with --watch, one object per line).
    #[arg(long)]
    pub json: bool,
    /// Repeat every INTERVAL (e.g. 5s) with changes since the previous
    /// report: socket states and kernel counters. Until Ctrl-C.
    #[arg(long, value_parser = parse_duration, value_name = "INTERVAL")]
    pub watch: Option<Duration>,
    /// With --watch, stop after this many reports.
    #[arg(long, requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Look inside this network namespace: a name under /run/netns or a
    /// path such as /proc/PID/ns/net.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// Rows in each ranked table (processes, ports, peers, connections).
    #[arg(long, default_value_t = 10, value_parser = parse_top)]
    pub top: usize,
    /// Flag a destination once it holds this percentage of the ephemeral
    /// port range (net.ipv4.ip_local_port_range).
    #[arg(long, default_value_t = 50, value_name = "PERCENT",
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub ephemeral_warn: u8,
}

#[derive(Debug, Args)]
pub struct TuneArgs {
    /// The workload to tune for (default: default; with --lb: proxy).
    #[arg(long, value_enum)]
    pub profile: Option<TuneProfile>,
    /// Use this value instead of the profile's (repeatable), e.g.
    /// --set net.ipv4.tcp_fin_timeout=20.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Write the drop-in file and apply the values (all or nothing); the
    /// values replaced are saved next to it as FILE.before.
    #[arg(long, conflicts_with_all = ["revert", "lb"])]
    pub apply: bool,
    /// Restore the values saved by --apply and remove the drop-in file.
    #[arg(long, conflicts_with_all = ["profile", "set", "lb", "idle_timeout"])]
    pub revert: bool,
    /// The sysctl.d drop-in file --apply writes and --revert removes.
    #[arg(long, default_value = "/etc/sysctl.d/90-tcptrace.conf")]
    pub file: PathBuf,
    /// Print a load-balancer config consistent with the profile.
    #[arg(long, value_enum, requires = "idle_timeout", conflicts_with = "set")]
    pub lb: Option<LoadBalancer>,
    /// The idle timeout of the load balancer or middlebox in front
    /// (e.g. 60s): keepalive starts before it; --lb uses it throughout.
    #[arg(long, value_parser = parse_idle_timeout, value_name = "DURATION")]
    pub idle_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TuneProfile {
    /// General-purpose host: the kernel defaults that cause incidents fixed.
    Default,
    /// A server behind a load balancer: deep accept queues, short keepalive.
    LbBackend,
    /// Many short outbound connections: wide port range, TIME_WAIT reuse.
    HighChurnClient,
    /// The load balancer or proxy itself: both of the above, bigger buffers.
    Proxy,
}

impl TuneProfile {
    pub const ALL: [TuneProfile; 4] =
        [TuneProfile::Default, TuneProfile::LbBackend, TuneProfile::HighChurnClient, TuneProfile::Proxy];

    pub fn name(self) -> &'static str {
        match self {
            TuneProfile::Default => "default",
            TuneProfile::LbBackend => "lb-backend",
            TuneProfile::HighChurnClient => "high-churn-client",
            TuneProfile::Proxy => "proxy",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadBalancer {
    Haproxy,
    Nginx,
}

#[derive(Debug, Args)]
pub struct StressArgs {}

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

fn parse_top(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(top @ 1..=10_000) => Ok(top),
        _ => Err(format!("'{text}': give a number of rows from 1 to 10000")),
    }
}

/// `KEY=VALUE`; the key and value are checked by `tune` against the
/// running kernel, with errors that name the key.
fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() && !value.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("'{text}': expected KEY=VALUE, e.g. net.ipv4.tcp_fin_timeout=20")),
    }
}

/// TCP keepalive counts whole seconds, so an idle timeout under 1 s
/// cannot be honoured.
fn parse_idle_timeout(text: &str) -> Result<Duration, String> {
    let idle = parse_duration(text)?;
    if idle < Duration::from_secs(1) {
        return Err(format!("'{text}': an idle timeout is at least 1s"));
    }
    Ok(idle)
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
            Command::Snapshot(args) => crate::snapshot::run(args).await,
            Command::Tune(args) => crate::tune::run(args).await,
            Command::Stress(_) => {
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
    fn key_values_and_idle_timeouts() {
        assert_eq!(
            parse_key_value(" net.core.somaxconn = 8192 ").unwrap(),
            ("net.core.somaxconn".to_string(), "8192".to_string())
        );
        assert_eq!(
            parse_key_value("net.ipv4.ip_local_port_range=1024 65535").unwrap().1,
            "1024 65535"
        );
        assert!(parse_key_value("net.core.somaxconn").is_err());
        assert!(parse_key_value("=5").is_err());
        assert!(parse_key_value("net.core.somaxconn=").is_err());
        assert_eq!(parse_idle_timeout("60s").unwrap(), Duration::from_secs(60));
        assert!(parse_idle_timeout("500ms").is_err());
    }

    #[test]
    fn tune_flags_that_contradict_are_refused() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["tcptrace", "tune"], args].concat());
        assert!(parse(&["--apply", "--revert"]).is_err());
        assert!(parse(&["--lb", "haproxy"]).is_err(), "--lb needs --idle-timeout");
        assert!(parse(&["--lb", "nginx", "--idle-timeout", "50s"]).is_ok());
        assert!(parse(&["--lb", "nginx", "--idle-timeout", "5s", "--set", "a.b=1"]).is_err());
        assert!(parse(&["--revert", "--profile", "proxy"]).is_err());
        assert!(parse(&["--profile", "lb-backend", "--set", "net.core.somaxconn=1", "--apply"]).is_ok());
        assert!(Cli::try_parse_from(["tcptrace", "snapshot", "--count", "2"]).is_err(), "--count needs --watch");
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
