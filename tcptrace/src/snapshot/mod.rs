//! `tcptrace snapshot`: the host's TCP state at a glance. Sockets by state,
//! process, port and peer; TIME_WAIT and ephemeral port use per
//! destination; listen queues; the worst connections' tcp_info; sockstat;
//! kernel counters. `--watch` repeats it with deltas.

mod render;
mod tables;

use std::{
    io::{self, Write as _},
    path::Path,
    process::ExitCode,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use serde::Serialize;

pub use self::tables::{Options, PortRange, StateCounts, Tables};
use crate::{
    cli::SnapshotArgs,
    host::{
        conntrack::Conntrack,
        counters::{Counters, KEY_COUNTERS},
        global::HostGlobal,
        netns,
        owners::socket_owners,
        sock_diag::{TcpState, dump_tcp},
        sockstat::{self, Sockstat},
        sysctl::{ProcSys, SysctlBackend as _},
    },
    stop::stop_signal,
};

/// Everything one snapshot shows; also its JSON form.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Seconds since the Unix epoch when it was taken.
    pub time: f64,
    /// The namespace given with --netns; `None` for the caller's own.
    pub netns: Option<String>,
    /// Sockets by state, process, port and peer; listeners; ephemeral ports; the worst connections.
    #[serde(flatten)]
    pub tables: Tables,
    /// With --watch, the change of each state's count since the previous report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub states_delta: Option<StateDelta>,
    /// /proc/net/sockstat.
    pub sockstat: Sockstat,
    /// Kernel counters.
    pub counters: CounterView,
    /// The namespace's conntrack (`{"loaded": false}` without the module).
    pub conntrack: Conntrack,
    /// Host-wide TCP limits and usage, read in the initial namespace.
    pub host_global: HostGlobal,
}

/// Per-state change of the socket count (negative: fewer).
pub type StateDelta = std::collections::BTreeMap<TcpState, i64>;

/// Kernel counters: totals since boot for a single snapshot, the change
/// over the interval with --watch.
#[derive(Debug, Serialize)]
pub struct CounterView {
    /// `None`: totals since boot; otherwise the seconds the delta covers.
    pub interval: Option<f64>,
    /// Key counters always (zeros too), any other counter only if non-zero;
    /// a JSON object whose keys keep this order.
    #[serde(serialize_with = "as_map")]
    pub values: Vec<(String, i64)>,
}

fn as_map<S: serde::Serializer>(
    values: &[(String, i64)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(values.iter().map(|(name, value)| (name, value)))
}

/// Raw readings kept between two reports of --watch.
struct Reading {
    at: Instant,
    counters: Counters,
    states: StateCounts,
}

/// Runs `tcptrace snapshot`.
pub async fn run(args: SnapshotArgs) -> anyhow::Result<ExitCode> {
    if let Some(spec) = &args.netns {
        // This thread (the one the command runs on, it spawns no task)
        // moves into the namespace; sockets it opens and the /proc files it
        // reads through thread-self follow it.
        netns::enter(&netns::resolve(spec)?.path)?;
    }
    if !rustix::process::geteuid().is_root() {
        // Said once, also with --watch; everything else still shows.
        eprintln!("tcptrace: warning: {NOT_ROOT}");
    }
    let options = Options {
        top: args.top,
        ephemeral_warn_percent: args.ephemeral_warn,
    };
    // A steady cadence: a slow report delays the next one, not all after it.
    let mut ticks = args.watch.map(|interval| {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    let mut previous: Option<Reading> = None;
    let mut taken = 0u64;
    // Ctrl-C, SIGTERM or SIGHUP end --watch after the last full report.
    let stopped = stop_signal(None);
    tokio::pin!(stopped);
    loop {
        if let Some(ticks) = ticks.as_mut() {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = &mut stopped => break,
            }
        }
        let (report, reading) = take(&args, options, previous.as_ref())?;
        let mut out = io::stdout().lock();
        if args.json {
            serde_json::to_writer(&mut out, &report).map_err(io::Error::from)?;
            writeln!(out)?;
        } else {
            render::human(&mut out, &report)?;
        }
        out.flush()?;
        taken += 1;
        if args.watch.is_none() || args.count.is_some_and(|count| taken >= count) {
            break;
        }
        previous = Some(reading);
    }
    Ok(ExitCode::SUCCESS)
}

/// Said when `snapshot` runs without root: /proc/PID/fd of other users'
/// processes cannot be read, so their sockets show no owner.
pub const NOT_ROOT: &str = "not root: only your own processes are named as socket owners (the others need root: run it with sudo)";

/// The socket tables of the calling thread's network namespace now
/// (also what `diagnose` looks at).
pub fn read_tables(options: Options) -> anyhow::Result<Tables> {
    let sockets = dump_tcp().context("cannot list TCP sockets")?;
    let owners = socket_owners();
    let range_text = ProcSys.read("net.ipv4.ip_local_port_range")?;
    let port_range = PortRange::parse(&range_text).with_context(|| {
        format!("net.ipv4.ip_local_port_range reads {range_text:?}, not two ports")
    })?;
    Ok(tables::build(&sockets, &owners, port_range, options))
}

fn take(
    args: &SnapshotArgs,
    options: Options,
    previous: Option<&Reading>,
) -> anyhow::Result<(Report, Reading)> {
    let proc_net = Path::new("/proc/thread-self/net");
    let counters = Counters::read().context("cannot read the kernel counters")?;
    let at = Instant::now();
    let tables = read_tables(options)?;
    let sockstat = sockstat::read_from(proc_net).context("cannot read /proc/net/sockstat")?;
    let conntrack = Conntrack::read().context("cannot read conntrack")?;
    let host_global = HostGlobal::read().context("cannot read the host-wide TCP figures")?;

    let counter_view = match previous {
        Some(before) => view(
            Some(at.duration_since(before.at)),
            counters
                .delta(&before.counters)
                .iter()
                .map(|(name, value)| (name.to_string(), value)),
        ),
        None => view(
            None,
            counters
                .iter()
                .map(|(name, value)| (name.to_string(), value)),
        ),
    };
    let states_delta = previous.map(|before| state_delta(&before.states, &tables.states));
    let time = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let reading = Reading {
        at,
        counters,
        states: tables.states.clone(),
    };
    let report = Report {
        time,
        netns: args.netns.clone(),
        tables,
        states_delta,
        sockstat,
        counters: counter_view,
        conntrack,
        host_global,
    };
    Ok((report, reading))
}

/// Key counters first and always; since boot nothing else (there would be
/// hundreds), over an interval every other counter that moved.
fn view(interval: Option<Duration>, values: impl Iterator<Item = (String, i64)>) -> CounterView {
    let all: std::collections::BTreeMap<String, i64> = values.collect();
    let key = KEY_COUNTERS
        .iter()
        .filter_map(|name| all.get(*name).map(|v| (name.to_string(), *v)));
    let rest = all
        .iter()
        .filter(|(name, value)| {
            interval.is_some() && **value != 0 && !KEY_COUNTERS.contains(&name.as_str())
        })
        .map(|(name, value)| (name.clone(), *value));
    CounterView {
        interval: interval.map(|d| d.as_secs_f64()),
        values: key.chain(rest).collect(),
    }
}

/// Per-state change; a state that vanished shows as a negative count.
fn state_delta(before: &StateCounts, now: &StateCounts) -> StateDelta {
    let signed = |count: usize| i64::try_from(count).unwrap_or(i64::MAX);
    let mut delta = StateDelta::new();
    for state in before.keys().chain(now.keys()) {
        let change = signed(now.get(state).copied().unwrap_or(0))
            - signed(before.get(state).copied().unwrap_or(0));
        delta.insert(*state, change);
    }
    delta.retain(|_, change| *change != 0);
    delta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_delta_shows_appeared_and_vanished_states() {
        let before = StateCounts::from([
            (TcpState::Established, 5),
            (TcpState::SynSent, 2),
            (TcpState::Listen, 1),
        ]);
        let now = StateCounts::from([
            (TcpState::Established, 7),
            (TcpState::TimeWait, 3),
            (TcpState::Listen, 1),
        ]);
        let delta = state_delta(&before, &now);
        assert_eq!(
            delta,
            StateDelta::from([
                (TcpState::Established, 2),
                (TcpState::SynSent, -2),
                (TcpState::TimeWait, 3)
            ])
        );
    }

    #[test]
    fn counter_view_since_boot_keeps_only_key_counters() {
        let values = [
            ("TcpExtListenOverflows", 4),
            ("TcpActiveOpens", 9),
            ("TcpRetransSegs", 0),
        ]
        .map(|(n, v)| (n.to_string(), v));
        let boot = view(None, values.clone().into_iter());
        assert_eq!(
            boot.values,
            vec![
                ("TcpExtListenOverflows".into(), 4),
                ("TcpRetransSegs".into(), 0)
            ]
        );
        let delta = view(Some(Duration::from_secs(2)), values.into_iter());
        assert_eq!(
            delta.values,
            vec![
                ("TcpExtListenOverflows".into(), 4),
                ("TcpRetransSegs".into(), 0),
                ("TcpActiveOpens".into(), 9)
            ]
        );
        assert_eq!(delta.interval, Some(2.0));
    }
}
