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
    /// Event kinds to keep, comma separated: rst, retrans, connect, state,
    /// drop (packets the kernel dropped), error (errors handed to
    /// applications), reuse (sends after an idle gap), all.
    /// [default: all but reuse; diagnose: all]
    #[arg(long, value_delimiter = ',')]
    pub events: Vec<EventClass>,
    /// With reuse events: the idle gap (no data sent or received) after
    /// which a send is reported.
    #[arg(long, value_parser = parse_duration, default_value = "500ms", value_name = "DURATION")]
    pub reuse_idle: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventClass {
    Rst,
    Retrans,
    Connect,
    State,
    Drop,
    Error,
    Reuse,
    All,
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
    pub const ALL: [TuneProfile; 4] = [
        TuneProfile::Default,
        TuneProfile::LbBackend,
        TuneProfile::HighChurnClient,
        TuneProfile::Proxy,
    ];

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
pub struct StressArgs {
    #[command(subcommand)]
    pub mode: StressMode,
}

/// Load patterns; every client mode stops by itself (count and duration).
#[derive(Debug, Subcommand)]
pub enum StressMode {
    /// Open and close connections as fast as possible (or at --rate).
    Churn(ChurnArgs),
    /// Open connections and keep them open; report how many succeeded and
    /// why the others failed.
    Hold(HoldArgs),
    /// Keep-alive client pool with idle gaps between uses: the pattern that
    /// runs into load-balancer and server idle timeouts.
    Pool(PoolArgs),
    /// Connect-time probe: N samples at an interval, p50/p90/p99/max.
    Latency(LatencyArgs),
    /// Built-in sink server that can misbehave on purpose.
    Serve(ServeArgs),
}

/// What every client mode needs: where, how long, how to report.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Where to connect: HOST:PORT, e.g. 127.0.0.1:8080, [::1]:80, lb.internal:443.
    pub target: String,
    /// Stop after this long [default: churn 10s, hold 30s, pool 60s, latency 60s].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Give up on a connect after this long (counted as ETIMEDOUT).
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub connect_timeout: Duration,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Trace the kernel during the load (needs root) and add what it saw on
    /// the target's port to the report: connects, retransmits, resets by reason.
    #[arg(long)]
    pub trace: bool,
}

#[derive(Debug, Args)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Stop after this many connection attempts.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Connections in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Attempts per second, in total (default: as fast as possible).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: Option<u32>,
    /// Close with SO_LINGER 0, so every close sends an RST.
    #[arg(long)]
    pub rst: bool,
}

#[derive(Debug, Args)]
pub struct HoldArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Connections to open and keep.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub count: u64,
    /// Connects in flight at once while opening.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Keep the connections this long after the last connect (default: until --duration).
    #[arg(long, value_parser = parse_duration)]
    pub hold: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct PoolArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Pooled connections, each used by one request at a time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,
    /// Stop after this many uses of the pool (a failed connect counts as one).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: u64,
    /// Idle gap between two uses of a connection: a duration (5s) or a
    /// uniform spread (1s..8s).
    #[arg(long, default_value = "1s", value_parser = parse_spread)]
    pub idle: Spread,
    /// Send HTTP/1.1 keep-alive `GET PATH` (for nginx, HAProxy...) instead of
    /// the built-in server's one-line request.
    #[arg(long, value_name = "PATH", value_parser = parse_http_path)]
    pub http: Option<String>,
    /// Host header for --http (default: the target's host).
    #[arg(long, requires = "http")]
    pub host: Option<String>,
    /// Give up waiting for a reply after this long (counted as ETIMEDOUT).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub reply_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Number of connects to time.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub samples: u64,
    /// Time between the starts of two samples.
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    pub interval: Duration,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on: IP:PORT (port 0 picks a free port, printed at start).
    pub listen: String,
    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(0..=65535))]
    pub backlog: u32,
    /// Wait this long before each accept (a slow server).
    #[arg(long, value_parser = parse_duration, conflicts_with = "no_accept")]
    pub accept_delay: Option<Duration>,
    /// Never accept: connections pile up in the accept queue, then SYNs are dropped.
    #[arg(long)]
    pub no_accept: bool,
    /// Close a connection as soon as data arrives, without reading it (the
    /// kernel answers with an RST).
    #[arg(long)]
    pub close_unread: bool,
    /// Close a connection that has been idle this long.
    #[arg(long, value_parser = parse_duration)]
    pub idle_close: Option<Duration>,
    /// Close a connection after answering this many requests.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub close_after: Option<u64>,
    /// Make the server's own closes abortive (SO_LINGER 0: RST, no FIN).
    #[arg(long)]
    pub linger0: bool,
    /// Stop after this long (also stops on Ctrl-C or SIGTERM).
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub duration: Duration,
    /// Open connections at most; beyond it the server stops accepting for a while.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_conns: u32,
    /// Print the final report (printed on exit) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// An idle gap: fixed (`min == max`) or drawn uniformly from `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    pub min: Duration,
    pub max: Duration,
}

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Watch this long (e.g. 30s, 5m); default: until Ctrl-C, or until the
    /// --during load ends.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Generate load while watching, e.g. 'stress churn 127.0.0.1:8080
    /// --duration 10s' (runs in this network namespace; its report goes
    /// to stderr).
    #[arg(long, value_name = "STRESS")]
    pub during: Option<String>,
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
        _ => Err(format!(
            "'{text}': expected KEY=VALUE, e.g. net.ipv4.tcp_fin_timeout=20"
        )),
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

/// Parses `5s` (a fixed gap) or `1s..8s` (a uniform spread).
pub fn parse_spread(text: &str) -> Result<Spread, String> {
    let (min, max) = match text.split_once("..") {
        Some((min, max)) => (parse_duration(min)?, parse_duration(max)?),
        None => {
            let gap = parse_duration(text)?;
            (gap, gap)
        }
    };
    if min > max {
        return Err(format!("'{text}': the spread must go from short to long"));
    }
    Ok(Spread { min, max })
}

fn parse_http_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/')
        || text
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
    {
        return Err(format!(
            "'{text}': an HTTP path starts with / and has no spaces"
        ));
    }
    Ok(text.to_string())
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
    // One thread is plenty to read events; a load generator must use every
    // core to keep up with a blocking connect loop on as many threads.
    let mut builder = match &cli.command {
        Command::Stress(args) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            // A local connect completes inside the syscall, so churn is
            // CPU-bound in the kernel: as many workers as connections in
            // flight (within 1 to 4 per core) get the same share of the
            // CPU as a blocking loop with that many threads.
            if let StressMode::Churn(churn) = &args.mode {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                builder.worker_threads((churn.concurrency as usize).clamp(cores, 4 * cores));
            }
            builder
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        match cli.command {
            Command::Trace(args) => crate::trace::run(args).await,
            Command::Snapshot(args) => crate::snapshot::run(args).await,
            Command::Tune(args) => crate::tune::run(args).await,
            Command::Stress(args) => crate::stress::run(args).await,
            Command::Diagnose(args) => crate::diagnose::run(args).await,
            Command::Top(args) => crate::top::run(args).await,
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
            parse_key_value("net.ipv4.ip_local_port_range=1024 65535")
                .unwrap()
                .1,
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
        assert!(
            parse(&["--lb", "haproxy"]).is_err(),
            "--lb needs --idle-timeout"
        );
        assert!(parse(&["--lb", "nginx", "--idle-timeout", "50s"]).is_ok());
        assert!(parse(&["--lb", "nginx", "--idle-timeout", "5s", "--set", "a.b=1"]).is_err());
        assert!(parse(&["--revert", "--profile", "proxy"]).is_err());
        assert!(
            parse(&[
                "--profile",
                "lb-backend",
                "--set",
                "net.core.somaxconn=1",
                "--apply"
            ])
            .is_ok()
        );
        assert!(
            Cli::try_parse_from(["tcptrace", "snapshot", "--count", "2"]).is_err(),
            "--count needs --watch"
        );
    }

    #[test]
    fn ring_sizes() {
        assert!(parse_ring_kib("4").is_ok());
        assert!(parse_ring_kib("3").is_err());
        assert!(parse_ring_kib("1000").is_err());
    }

    #[test]
    fn spreads() {
        let fixed = parse_spread("5s").unwrap();
        assert_eq!(
            (fixed.min, fixed.max),
            (Duration::from_secs(5), Duration::from_secs(5))
        );
        let spread = parse_spread("1s..8s").unwrap();
        assert_eq!(
            (spread.min, spread.max),
            (Duration::from_secs(1), Duration::from_secs(8))
        );
        assert_eq!(
            parse_spread("500ms..2").unwrap().max,
            Duration::from_secs(2)
        );
        assert!(parse_spread("8s..1s").is_err());
        assert!(parse_spread("1s..").is_err());
        assert!(parse_spread("..1s").is_err());
        assert!(parse_spread("soon").is_err());
    }

    #[test]
    fn http_paths() {
        assert!(parse_http_path("/").is_ok());
        assert!(parse_http_path("/health?x=1").is_ok());
        assert!(parse_http_path("health").is_err());
        assert!(parse_http_path("/a b").is_err());
    }

    #[test]
    fn stress_arguments() {
        let parse = |args: &[&str]| Cli::try_parse_from(["tcptrace", "stress"].iter().chain(args));
        assert!(parse(&["churn"]).is_err(), "the target is required");
        assert!(parse(&["churn", "127.0.0.1:80", "--concurrency", "0"]).is_err());
        assert!(parse(&["churn", "127.0.0.1:80", "--count", "0"]).is_err());
        assert!(
            parse(&["pool", "127.0.0.1:80", "--host", "x"]).is_err(),
            "--host needs --http"
        );
        assert!(
            parse(&[
                "serve",
                "127.0.0.1:0",
                "--no-accept",
                "--accept-delay",
                "1s"
            ])
            .is_err()
        );
        let Command::Stress(StressArgs {
            mode: StressMode::Pool(pool),
        }) = parse(&["pool", "lb:80", "--idle", "1s..8s", "--http", "/"])
            .unwrap()
            .command
        else {
            panic!("pool arguments parse into pool mode");
        };
        assert_eq!(pool.idle.max, Duration::from_secs(8));
        assert_eq!(pool.load.target, "lb:80");
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
