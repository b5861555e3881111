//! Command line: every clap struct and value parser lives here, and
//! nothing else. A leaf: it imports nothing of the crate. Each
//! subcommand's work lives in its own module, which takes its own args
//! from here; `app` parses and dispatches.

use std::{
    net::{Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};

/// Linux TCP incident tool: who is hit by resets, what the kernel saw, why.
#[derive(Debug, Parser)]
#[command(name = "tcptrace", version, propagate_version = true)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
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
    /// Serve Prometheus/OpenMetrics metrics and findings, always on.
    Exporter(ExporterArgs),
    /// Print what `trace`, `diagnose` or `top` printed for a file made by its --record.
    Replay(ReplayArgs),
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
    /// [default: all but reuse; diagnose and exporter: all]
    #[arg(long, value_delimiter = ',')]
    pub events: Vec<EventClass>,
    /// With reuse events: the idle gap (no data sent or received) after
    /// which a send is reported.
    #[arg(long, value_parser = parse_duration, default_value = "500ms", value_name = "DURATION")]
    pub reuse_idle: Duration,
    /// The kubelet's pod log directory (<namespace>_<pod>_<uid>/<container>/),
    /// read to name the pods, namespaces and containers that cgroup paths
    /// give by ID. [default: /var/log/pods when it exists]
    #[arg(long, value_name = "DIR")]
    pub pods_dir: Option<PathBuf>,
}

/// `--events`: the event kinds to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventClass {
    /// RSTs sent and received.
    Rst,
    /// Retransmits (data, SYN, SYN-ACK).
    Retrans,
    /// Connect outcomes (succeeded, failed).
    Connect,
    /// Other TCP state changes.
    State,
    /// TCP packets the kernel dropped, with the drop reason.
    Drop,
    /// Errors handed to applications (ECONNRESET, ETIMEDOUT, ...).
    Error,
    /// Sends after an idle gap of at least --reuse-idle.
    Reuse,
    /// Every kind above.
    All,
}

/// Where TC programs watch packets: what tells who really sent a
/// received RST (and what `trace --pcap` records).
#[derive(Debug, Args, Default)]
pub struct IfaceArgs {
    /// Interfaces whose packets are watched (comma separated): received
    /// RSTs are compared with the peer's own segments there, which tells
    /// a reset the peer sent from one forged on the path (`origin`).
    /// [default: every non-loopback interface with an Ethernet header in
    /// the traced namespace (--netns, else this one)]
    #[arg(long, value_delimiter = ',', value_name = "IFACE", value_parser = parse_iface)]
    pub iface: Vec<String>,
    /// Attach no TC program: received RSTs get no origin.
    #[arg(long, conflicts_with = "iface")]
    pub no_tc: bool,
}

/// `tcptrace trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Filters, run in the kernel.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Packet watching (reset origin, --pcap).
    #[command(flatten)]
    pub ifaces: IfaceArgs,
    /// Flight recorder: keep the last 16 packets of every connection and,
    /// when one is reset, times out or fails to connect, write them to
    /// DIR as one pcapng file (created 0700 if missing; files 0600).
    #[arg(long, value_name = "DIR", conflicts_with = "no_tc")]
    pub pcap: Option<PathBuf>,
    /// With --pcap: write at most this many files; the rest are counted.
    #[arg(long, default_value_t = 100, value_name = "FILES", requires = "pcap",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub pcap_max: u32,
    /// With --pcap: payload bytes kept per packet besides the headers
    /// (0 to 256; payload is sensitive: off unless asked for).
    #[arg(long, default_value_t = 0, value_name = "BYTES", requires = "pcap",
          value_parser = clap::value_parser!(u16).range(0..=256))]
    pub pcap_payload: u16,
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
    /// Also write the kernel's raw records, with what is needed to print
    /// them elsewhere, to this file (mode 0600; docs/record.md); read it
    /// with `tcptrace replay`. Alone, nothing else is printed but the
    /// summary; with --json or --output, events are printed too.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
}

/// `tcptrace replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A file written by `trace --record`, `diagnose --record` or
    /// `top --record`.
    pub file: PathBuf,
    /// Print JSON, as the recording command's --json does (NDJSON for
    /// `trace`, one document for `diagnose`, a line per snapshot for `top`).
    #[arg(long)]
    pub json: bool,
    /// Do not print the summary (on stderr) at the end (`trace`).
    #[arg(long)]
    pub no_summary: bool,
}

/// `tcptrace snapshot`.
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
    /// Look inside this network namespace: an inode number, a name under
    /// /run/netns, or a path such as /proc/PID/ns/net.
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

/// `tcptrace tune`.
#[derive(Debug, Args)]
pub struct TuneArgs {
    /// The workload to tune for (default: default; with --lb: proxy).
    #[arg(long, value_enum)]
    pub profile: Option<ProfileArg>,
    /// Use this value instead of the profile's (repeatable), e.g.
    /// --set net.ipv4.tcp_fin_timeout=20.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Write the drop-in file and apply the values (all or nothing); the
    /// values replaced are saved in --state-dir.
    #[arg(long, conflicts_with_all = ["revert", "lb"])]
    pub apply: bool,
    /// Restore the values saved by --apply and remove the drop-in file.
    #[arg(long, conflicts_with_all = ["profile", "set", "lb", "idle_timeout"])]
    pub revert: bool,
    /// The sysctl.d drop-in file --apply writes and --revert removes.
    #[arg(long, default_value = "/etc/sysctl.d/90-tcptrace.conf")]
    pub file: PathBuf,
    /// Where --apply saves the values it replaces and --revert reads them:
    /// a directory only root can write (created with mode 0700).
    #[arg(long, default_value = "/var/lib/tcptrace", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Print a load-balancer config consistent with the profile.
    #[arg(long, value_enum, requires = "idle_timeout", conflicts_with = "set")]
    pub lb: Option<LbArg>,
    /// The idle timeout of the load balancer or middlebox in front
    /// (e.g. 60s): keepalive starts before it; --lb uses it throughout.
    #[arg(long, value_parser = parse_idle_timeout, value_name = "DURATION")]
    pub idle_timeout: Option<Duration>,
}

/// `tune --profile`: the workload to tune for (`tune` owns what each means).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileArg {
    /// General-purpose host: the kernel defaults that cause incidents fixed.
    Default,
    /// A server behind a load balancer: deep accept queues, short keepalive.
    LbBackend,
    /// Many short outbound connections: wide port range, TIME_WAIT reuse.
    HighChurnClient,
    /// The load balancer or proxy itself: both of the above, bigger buffers.
    Proxy,
}

/// `tune --lb`: the load balancer whose configuration to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LbArg {
    /// HAProxy (`timeout client`, `timeout server`, `backlog`).
    Haproxy,
    /// nginx (`keepalive_timeout`, `listen ... backlog=`).
    Nginx,
}

/// `tcptrace stress`.
#[derive(Debug, Args)]
pub struct StressArgs {
    /// The load pattern.
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
    #[arg(value_parser = parse_target)]
    pub target: TargetSpec,
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
    /// An inherited socket to the `diagnose --during` that started this
    /// load: one byte is written to it once the load has started (target
    /// resolved, tracer attached); when it closes (diagnose died), the
    /// load ends at once.
    #[arg(long, hide = true, value_parser = clap::value_parser!(i32).range(3..))]
    pub parent_fd: Option<i32>,
}

/// `tcptrace stress churn`.
#[derive(Debug, Args)]
pub struct ChurnArgs {
    /// Target, duration, report.
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

/// `tcptrace stress hold`.
#[derive(Debug, Args)]
pub struct HoldArgs {
    /// Target, duration, report.
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

/// `tcptrace stress pool`.
#[derive(Debug, Args)]
pub struct PoolArgs {
    /// Target, duration, report.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Pooled connections, each used by one request at a time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,
    /// Stop after this many uses of the pool (a failed connect counts as one).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: u64,
    /// Idle gap between two uses of a connection: a duration (5s) or a
    /// uniform spread (1s..8s); from 1us.
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

/// `tcptrace stress latency`.
#[derive(Debug, Args)]
pub struct LatencyArgs {
    /// Target, duration, report.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Number of connects to time.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub samples: u64,
    /// Time between the starts of two samples (from 1us).
    #[arg(long, value_parser = parse_fine_duration, default_value = "100ms")]
    pub interval: Duration,
}

/// `tcptrace stress serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on: IP:PORT (port 0 picks a free port, printed at start).
    #[arg(value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(0..=65535))]
    pub backlog: u32,
    /// Wait this long before each accept (a slow server; from 1us).
    #[arg(long, value_parser = parse_fine_duration, conflicts_with = "no_accept")]
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

/// A client mode's target as written, `HOST:PORT`; resolved when the load
/// starts (stress/target.rs), so a syntax error is a usage error (exit 2)
/// and a name that does not resolve is a run-time one (exit 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// What the user wrote, for reports.
    pub text: String,
    /// A name or an IP literal (IPv6 without its brackets).
    pub host: String,
    /// Never 0.
    pub port: u16,
}

/// An idle gap: fixed (`min == max`) or drawn uniformly from `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    /// Shortest gap.
    pub min: Duration,
    /// Longest gap.
    pub max: Duration,
}

/// `tcptrace diagnose`.
#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// Filters, run in the kernel.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Packet watching (who sent the resets).
    #[command(flatten)]
    pub ifaces: IfaceArgs,
    /// Watch this long (e.g. 30s, 5m); default: until Ctrl-C, or until the
    /// --during load ends.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Generate load while watching, e.g. 'stress churn 127.0.0.1:8080
    /// --duration 10s' (runs in this network namespace; its report goes
    /// to stderr).
    #[arg(long, value_name = "STRESS", value_parser = parse_during)]
    pub during: Option<String>,
    /// Print the report as one JSON document (schema in docs/diagnose.md).
    #[arg(long)]
    pub json: bool,
    /// Also write the report as one self-contained HTML page with charts
    /// (timeline, idle times, connect latency) to FILE: mode 0600, never
    /// through a symbolic link, an existing FILE must be our own.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Also write the kernel's raw records and the host readings the
    /// report depends on to this file (mode 0600; docs/record.md);
    /// `tcptrace replay FILE` prints the same report anywhere.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Ring buffer size in KiB (a power of two, at least 4).
    #[arg(long, default_value_t = 8192, value_parser = parse_ring_kib)]
    pub ring_kib: u32,
}

/// `tcptrace top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Filters, run in the kernel.
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
    /// Also write the kernel's raw records and what each snapshot took
    /// (counts, opens counted in the kernel, owners' pods) to this file
    /// (mode 0600; docs/record.md); `tcptrace replay FILE [--json]` prints
    /// the same snapshots. No TUI while recording: plain snapshots.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
}

/// `tcptrace exporter`.
#[derive(Debug, Args)]
pub struct ExporterArgs {
    /// Filters, run in the kernel. [default events: all]
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Where to serve /metrics and /healthz: IP:PORT (port 0 picks a free
    /// port, printed at start). Localhost unless told otherwise.
    #[arg(long, default_value = "127.0.0.1:9469", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// How far back the diagnosis rules look (findings as metrics); also
    /// how long a series that does not move is kept.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub window: Duration,
    /// How often the rules run and the top processes and peers are
    /// chosen (a scrape also counts what came since the last interval).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Processes (workloads) with series of their own per interval; the
    /// rest are counted under process="other".
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub top_processes: u16,
    /// Peers with series of their own per interval; the rest are counted
    /// under peer="other".
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub top_peers: u16,
    /// Series at most; beyond it new ones are counted under "other".
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(100..=1_000_000))]
    pub max_series: u32,
    /// Stop after this long; default: until SIGTERM or Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Ring buffer size in KiB (a power of two, at least 4).
    #[arg(long, default_value_t = 8192, value_parser = parse_ring_kib)]
    pub ring_kib: u32,
}

/// Parses durations such as `500ms`, `30s`, `5m`, `1h`, or bare seconds,
/// from 1 ms to a year: every flag that takes it (run lengths, refresh
/// intervals, timeouts) means nothing, or spins, below a millisecond.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    at_least(text, Duration::from_millis(1), "1ms")
}

/// [`parse_duration`] down to 1 us, for gaps and delays where a fraction
/// of a millisecond means something (`--interval 500us`, `--accept-delay`).
pub fn parse_fine_duration(text: &str) -> Result<Duration, String> {
    at_least(text, Duration::from_micros(1), "1us")
}

fn at_least(text: &str, min: Duration, min_text: &str) -> Result<Duration, String> {
    let duration = parse_any_duration(text)?;
    if duration < min {
        return Err(format!(
            "'{}' is too short: at least {min_text}",
            text.trim()
        ));
    }
    Ok(duration)
}

/// Any duration from 0 (exclusive) to a year, as text with a unit.
fn parse_any_duration(text: &str) -> Result<Duration, String> {
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
                "'{text}': unknown unit '{unit}' (use us, ms, s, m or h)"
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

/// `HOST:PORT` with IPv6 literals in brackets; the port is 1 to 65535.
pub fn parse_target(text: &str) -> Result<TargetSpec, String> {
    let syntax = || {
        format!(
            "'{text}' is not a target: give HOST:PORT, e.g. 127.0.0.1:8080, [::1]:80 or lb.internal:443"
        )
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(syntax)?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .filter(|h| h.parse::<Ipv6Addr>().is_ok())
            .ok_or_else(syntax)?,
        // An unbracketed IPv6 literal would make the port ambiguous.
        None if host.contains(':') || host.is_empty() => return Err(syntax()),
        None => host,
    };
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(syntax());
    }
    let port: u16 = port.parse().map_err(|_| syntax())?;
    if port == 0 {
        return Err(format!(
            "'{text}': port 0 cannot be connected to; give the port the server listens on"
        ));
    }
    Ok(TargetSpec {
        text: text.to_string(),
        host: host.to_string(),
        port,
    })
}

/// A `stress` client command line for `diagnose --during`, checked as if
/// typed on its own, so its mistakes are usage errors here too.
fn parse_during(text: &str) -> Result<String, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.first() != Some(&"stress") {
        return Err(
            "expected a stress command, e.g. 'stress churn 127.0.0.1:8080 --duration 10s'".into(),
        );
    }
    match Cli::try_parse_from(std::iter::once("tcptrace").chain(words)) {
        Ok(Cli {
            command:
                Command::Stress(StressArgs {
                    mode: StressMode::Serve(_),
                }),
        }) => Err("a server is not a load: give churn, hold, pool or latency".into()),
        Ok(_) => Ok(text.to_string()),
        Err(err) => Err(usage_error(&err)),
    }
}

/// `IP:PORT` (IPv6 in brackets); port 0 picks a free port.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("'{text}' is not a listen address: give IP:PORT, e.g. 127.0.0.1:8080 or [::]:8080")
    })
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
    let idle = parse_any_duration(text)?;
    if idle < Duration::from_secs(1) {
        return Err(format!("'{text}': an idle timeout is at least 1s"));
    }
    Ok(idle)
}

/// Parses `5s` (a fixed gap) or `1s..8s` (a uniform spread).
pub fn parse_spread(text: &str) -> Result<Spread, String> {
    let (min, max) = match text.split_once("..") {
        Some((min, max)) => (parse_fine_duration(min)?, parse_fine_duration(max)?),
        None => {
            let gap = parse_fine_duration(text)?;
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

fn parse_iface(text: &str) -> Result<String, String> {
    // IFNAMSIZ is 16 with the NUL; the kernel refuses '/', ':' and blanks.
    if text.is_empty()
        || text.len() > 15
        || text.contains(['/', ':'])
        || text.chars().any(char::is_whitespace)
    {
        return Err(format!(
            "'{text}' is no interface name (1 to 15 bytes, no '/', ':' or blanks)"
        ));
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

/// clap's message on one line, without its usage block: the error with
/// what it names (a missing argument, the possible values, a tip). A
/// missing subcommand lists the subcommands instead of printing the help.
/// `app` and `diagnose --during` both report usage errors with it.
pub fn usage_error(err: &clap::Error) -> String {
    let text = err.render().to_string();
    if err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let usage = text
            .lines()
            .find_map(|l| l.strip_prefix("Usage: "))
            .unwrap_or("tcptrace <COMMAND>");
        // Without the program's name (whatever the binary is called):
        // the caller puts `tcptrace: ` first.
        let command = usage.split(" <COMMAND>").next().unwrap_or("");
        let command = command.split_once(' ').map_or("", |(_, sub)| sub.trim());
        let names: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| *name != "help")
            .collect();
        let names = names.join(", ");
        return if command.is_empty() {
            format!("a subcommand is needed: {names}")
        } else {
            format!("{command} needs a subcommand: {names}")
        };
    }
    let line = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join(" ");
    // `--duration -5s`: clap takes `-5s` for flags and names `-5`; the
    // person meant a value, and no value of ours is negative.
    let negative = err
        .get(clap::error::ContextKind::InvalidArg)
        .is_some_and(|arg| {
            let arg = arg.to_string();
            arg.strip_prefix('-')
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        });
    if err.kind() == clap::error::ErrorKind::UnknownArgument && negative {
        return format!("{line}: a value cannot be negative");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1ms").unwrap(), Duration::from_millis(1));
        for bad in [
            "0s",
            "0",
            "0.0000000001s",
            "999us",
            "0.5ms",
            "10 parsecs",
            "",
            "-1s",
            "1e3",
            ".",
            "nan",
            "inf",
            "367d",
            "9999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            parse_duration("0.0000000001s").unwrap_err(),
            "'0.0000000001s' is too short: at least 1ms"
        );
        assert_eq!(
            parse_fine_duration("500us").unwrap(),
            Duration::from_micros(500)
        );
        assert!(parse_fine_duration("0.1us").is_err());
        assert!(parse_idle_timeout("0.0000001s").is_err());
    }

    #[test]
    fn targets_and_listen_addresses() {
        let target = parse_target("127.0.0.1:8080").unwrap();
        assert_eq!((target.host.as_str(), target.port), ("127.0.0.1", 8080));
        assert_eq!(parse_target("[::1]:80").unwrap().host, "::1");
        assert_eq!(parse_target("lb.internal:443").unwrap().host, "lb.internal");
        assert!(parse_target("127.0.0.1:0").unwrap_err().contains("port 0"));
        for bad in [
            "127.0.0.1",
            "::1:80",
            ":80",
            "host:http",
            "host:70000",
            "[::1:80",
            "[nope]:80",
            "",
            "a b:80",
            "host:-1",
        ] {
            let err = parse_target(bad).unwrap_err();
            assert!(err.contains("is not a target"), "{bad}: {err}");
        }
        assert!(parse_listen("[::]:0").is_ok());
        assert!(parse_listen("localhost:80").is_err());
    }

    #[test]
    fn usage_errors_name_what_is_missing_on_one_line() {
        let error = |args: &[&str]| usage_error(&Cli::try_parse_from(args).unwrap_err());
        assert_eq!(
            error(&["tcptrace"]),
            "a subcommand is needed: trace, snapshot, tune, stress, diagnose, top, exporter, replay"
        );
        assert_eq!(
            error(&["tcptrace", "stress"]),
            "stress needs a subcommand: churn, hold, pool, latency, serve"
        );
        assert_eq!(
            error(&["tcptrace", "stress", "churn"]),
            "the following required arguments were not provided: <TARGET>"
        );
        assert_eq!(
            error(&["tcptrace", "trace", "--duration", "-5s"]),
            "unexpected argument '-5' found: a value cannot be negative"
        );
        let profile = error(&["tcptrace", "tune", "--profile", "x"]);
        assert!(profile.contains("[possible values: default,"), "{profile}");
        for args in [
            &["tcptrace", "tune", "--profile", "x"][..],
            &["tcptrace", "trace", "--bogus"],
            &["tcptrace", "top", "--interval", "0.0000000001s"],
            &["tcptrace", "stress", "churn", "nonsense"],
        ] {
            let line = error(args);
            assert!(!line.contains('\n') && !line.is_empty(), "{args:?}: {line}");
        }
    }

    /// No input makes a value parser panic, whatever it is.
    mod no_panics {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn value_parsers(text in ".*") {
                let _ = parse_duration(&text);
                let _ = parse_fine_duration(&text);
                let _ = parse_idle_timeout(&text);
                let _ = parse_spread(&text);
                let _ = parse_target(&text);
                let _ = parse_listen(&text);
                let _ = parse_during(&text);
                let _ = parse_during(&format!("stress {text}"));
                let _ = parse_key_value(&text);
                let _ = parse_http_path(&text);
                let _ = parse_comm(&text);
                let _ = parse_ring_kib(&text);
                let _ = parse_top(&text);
            }

            #[test]
            fn duration_like_text(
                number in "[0-9]{0,30}(\\.[0-9]{0,30})?",
                unit in "(|s|ms|us|m|h|d|µs)",
            ) {
                let text = format!("{number}{unit}");
                for d in [parse_duration(&text), parse_fine_duration(&text)].into_iter().flatten() {
                    prop_assert!(d >= Duration::from_micros(1));
                    prop_assert!(d <= Duration::from_secs(366 * 86400));
                }
                if let Ok(spread) = parse_spread(&format!("{text}..{text}")) {
                    prop_assert!(spread.min == spread.max);
                }
            }

            /// Whole command lines made of real flags and arbitrary values:
            /// an error or a parse, never a panic.
            #[test]
            fn command_lines(
                words in proptest::collection::vec(
                    prop_oneof![
                        Just("trace".to_string()), Just("top".to_string()),
                        Just("diagnose".to_string()), Just("snapshot".to_string()),
                        Just("tune".to_string()), Just("stress".to_string()),
                        Just("churn".to_string()), Just("serve".to_string()),
                        Just("pool".to_string()),
                        Just("--duration".to_string()), Just("--interval".to_string()),
                        Just("--ring-kib".to_string()), Just("--pid".to_string()),
                        Just("--port".to_string()), Just("--idle".to_string()),
                        Just("--watch".to_string()), Just("--set".to_string()),
                        Just("--idle-timeout".to_string()), Just("--events".to_string()),
                        ".{0,12}",
                    ],
                    0..8,
                )
            ) {
                let argv = std::iter::once("tcptrace".to_string()).chain(words);
                if let Err(err) = Cli::try_parse_from(argv) {
                    let _ = usage_error(&err);
                }
            }
        }
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
        assert_eq!(pool.load.target.text, "lb:80");
        assert_eq!(pool.load.target.port, 80);
    }

    #[test]
    fn usage_errors_are_one_line_and_name_what_is_wrong() {
        let error = |args: &[&str]| usage_error(&Cli::try_parse_from(args).unwrap_err());
        let missing = error(&["tcptrace", "stress", "churn"]);
        assert!(missing.contains("<TARGET>"), "{missing}");
        let invalid = error(&["tcptrace", "tune", "--profile", "fast"]);
        assert!(invalid.contains("'fast'"), "{invalid}");
        assert!(invalid.contains("[possible values:"), "{invalid}");
        for message in [missing, invalid] {
            assert!(!message.contains('\n'), "{message}");
            assert!(!message.starts_with("error:"), "{message}");
        }
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
