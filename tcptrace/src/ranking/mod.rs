//! What `top` shows, as plain data: one row per process and per peer,
//! with totals, per-second rates since the previous snapshot, and
//! connect latency percentiles. `top`'s two front ends render a
//! `Snapshot`, and `replay` the snapshots of a `top --record` file
//! (`plain`: as plain tables or JSON lines).

pub mod plain;

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde::Serialize;

use crate::{
    aggregate::{Aggregate, Stats, scattered::Scattered},
    counts::Counts,
    host::cgroups::Cgroups,
};

/// What a row stands for, to find its figures again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RowKey {
    /// The whole host.
    #[default]
    Host,
    /// A process (pid 0: no owner known).
    Process(u32),
    /// A remote endpoint (port 0: the clients of a local server).
    Peer(SocketAddr),
    /// Unowned RSTs with the ephemeral ports of one address.
    Scattered(IpAddr),
}

/// One row of a `top` table: a process or a peer, its totals, rates and connect latency.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    /// `42 curl`, `10.0.0.7:443`, `10.0.0.7 (clients)`, or
    /// `10.0.0.7:* (unowned RSTs)` for the folded one-off ports of an
    /// address.
    pub label: String,
    /// What the row stands for.
    #[serde(skip)]
    pub key: RowKey,
    /// Process rows: the pid (0: no owner known).
    pub pid: Option<u32>,
    /// Process rows: the command name.
    pub comm: Option<String>,
    /// Peer rows: the remote endpoint.
    pub peer: Option<String>,
    /// Process rows on a Kubernetes node: the pod's namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod's name (its UID when the kubelet's log directory does
    /// not name it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The container's name (or short ID), also outside Kubernetes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Process rows: the cgroup v2 id the names come from.
    #[serde(skip)]
    pub cgroup_id: u64,
    /// RSTs sent.
    pub rst_sent: u64,
    /// RSTs received.
    pub rst_received: u64,
    /// Data, SYN and SYN-ACK retransmits.
    pub retransmits: u64,
    /// Connects that succeeded.
    pub connects: u64,
    /// Connects that failed.
    pub connect_failed: u64,
    /// Connections the kernel gave up on (retransmission timeout, no RST).
    pub timeout_aborts: u64,
    /// TCP packets the kernel dropped (`drop` events).
    pub drops: u64,
    /// The same by drop reason name (`NETFILTER_DROP`, ...).
    pub drops_by_reason: BTreeMap<&'static str, u64>,
    /// Errors handed to applications (`socket_error` events).
    pub socket_errors: u64,
    /// The same by errno name (`ECONNRESET`, ...).
    pub socket_errors_by_errno: BTreeMap<&'static str, u64>,
    /// Incidents (see `incidents`) per second since the previous
    /// snapshot.
    pub incidents_per_s: f64,
    /// RSTs (both ways) per second since the previous snapshot.
    pub resets_per_s: f64,
    /// Retransmits per second since the previous snapshot.
    pub retransmits_per_s: f64,
    /// Failed connects and timeouts per second since the previous
    /// snapshot.
    pub failures_per_s: f64,
    /// Folded rows: how many ephemeral ports (one-off "peers") the row
    /// stands for.
    pub grouped_ports: Option<u64>,
    /// Median connect latency, µs.
    pub connect_p50_us: Option<u64>,
    /// 99th percentile connect latency, µs.
    pub connect_p99_us: Option<u64>,
}

impl Row {
    fn from_stats(label: String, s: &Stats) -> Row {
        let latency = s.connect_latency.percentiles();
        Row {
            label,
            rst_sent: s.rst_sent_total(),
            rst_received: s.rst_received_total(),
            retransmits: s.retransmits_total() + s.syn_retransmits + s.synack_retransmits,
            connects: s.connects,
            connect_failed: s.connect_failed,
            timeout_aborts: s.timeout_aborts,
            drops: s.drops_total(),
            drops_by_reason: s.drops.clone(),
            socket_errors: s.socket_errors_total(),
            socket_errors_by_errno: s.socket_errors.clone(),
            connect_p50_us: latency.map(|p| p.p50_ns / 1000),
            connect_p99_us: latency.map(|p| p.p99_ns / 1000),
            ..Row::default()
        }
    }

    /// RSTs sent and received.
    pub fn resets(&self) -> u64 {
        self.rst_sent + self.rst_received
    }

    /// Failed connects and connections the kernel gave up on.
    pub fn failures(&self) -> u64 {
        self.connect_failed + self.timeout_aborts
    }

    /// The row for the one-off ports of `ip`.
    fn scattered(ip: IpAddr, s: &Scattered) -> Row {
        Row {
            label: format!("{ip}:* (unowned RSTs)"),
            key: RowKey::Scattered(ip),
            peer: Some(ip.to_string()),
            rst_sent: s.rst_sent,
            rst_received: s.rst_received,
            drops: s.drops,
            grouped_ports: Some(s.ports),
            ..Row::default()
        }
    }

    /// The label with what a folded row stands for.
    pub fn name(&self) -> String {
        match self.grouped_ports {
            Some(ports) => format!("{} x{ports} ports", self.label),
            None => self.display_name(),
        }
    }

    /// Resets, retransmits, failed connects, timeouts, drops and socket
    /// errors together.
    pub fn incidents(&self) -> u64 {
        self.resets()
            + self.retransmits
            + self.connect_failed
            + self.timeout_aborts
            + self.drops
            + self.socket_errors
    }
}

/// What the TUI sorts its tables by (`s` cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    /// Incidents per second (the default).
    #[default]
    Incidents,
    /// RSTs, both ways.
    Resets,
    /// Retransmits.
    Retransmits,
    /// Failed connects.
    Failed,
    /// Successful connects.
    Connects,
    /// 99th percentile connect latency.
    Latency,
}

impl SortKey {
    /// Every key, in the order `s` cycles through.
    pub const ALL: [SortKey; 6] = [
        SortKey::Incidents,
        SortKey::Resets,
        SortKey::Retransmits,
        SortKey::Failed,
        SortKey::Connects,
        SortKey::Latency,
    ];

    /// How the header names it.
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Incidents => "incidents/s",
            SortKey::Resets => "resets",
            SortKey::Retransmits => "retransmits",
            SortKey::Failed => "failed connects",
            SortKey::Connects => "connects",
            SortKey::Latency => "connect p99",
        }
    }

    /// The key after this one (wrapping).
    pub fn next(self) -> SortKey {
        let i = SortKey::ALL.iter().position(|k| *k == self).unwrap_or(0);
        SortKey::ALL[(i + 1) % SortKey::ALL.len()]
    }

    /// Sorts `rows` by this key, heaviest first, then by label.
    pub fn sort(self, rows: &mut [Row]) {
        rows.sort_by(|a, b| {
            let order = match self {
                SortKey::Incidents => b
                    .incidents_per_s
                    .total_cmp(&a.incidents_per_s)
                    .then(b.incidents().cmp(&a.incidents())),
                SortKey::Resets => b.resets().cmp(&a.resets()),
                SortKey::Retransmits => b.retransmits.cmp(&a.retransmits),
                SortKey::Failed => b.connect_failed.cmp(&a.connect_failed),
                SortKey::Connects => b.connects.cmp(&a.connects),
                SortKey::Latency => b.connect_p99_us.cmp(&a.connect_p99_us),
            };
            order.then_with(|| a.label.cmp(&b.label))
        });
    }
}

/// One refresh of `top`: both tables, ranked by incidents per second,
/// with the session's counts at that moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Seconds since tracing started.
    pub elapsed_s: f64,
    /// Events aggregated so far.
    pub events: u64,
    /// Events the ring buffer had no room for, so far.
    pub events_lost: u64,
    /// One row per process (pid 0: no owner known).
    pub processes: Vec<Row>,
    /// One row per remote endpoint; the one-off unowned ports of an
    /// address folded into one row.
    pub peers: Vec<Row>,
    /// The whole host.
    pub host: Row,
    /// Received, produced, lost, hook runs skipped: exact in the last
    /// snapshot, taken after the session drained.
    #[serde(skip)]
    pub counts: Counts,
}

impl Snapshot {
    /// Rows from the aggregate, rates against `previous`.
    pub fn take(
        agg: &Aggregate,
        previous: &Snapshot,
        elapsed: Duration,
        counts: Counts,
    ) -> Snapshot {
        let elapsed_s = elapsed.as_secs_f64();
        let dt = (elapsed_s - previous.elapsed_s).max(1e-3);
        let mut processes: Vec<Row> = agg
            .processes
            .iter()
            .map(|(pid, p)| {
                let label = if *pid == 0 {
                    "(no owner)".to_string()
                } else {
                    format!("{pid} {}", p.comm)
                };
                Row {
                    pid: Some(*pid),
                    comm: Some(p.comm.clone()),
                    key: RowKey::Process(*pid),
                    cgroup_id: p.cgroup_id,
                    ..Row::from_stats(label, &p.stats)
                }
            })
            .collect();
        let mut peers: Vec<Row> = agg
            .peers
            .iter()
            .filter(|(addr, s)| !agg.scattered.folds(**addr, s))
            .map(|(addr, s)| {
                let label = if addr.port() == 0 {
                    format!("{} (clients)", addr.ip())
                } else {
                    addr.to_string()
                };
                Row {
                    peer: Some(addr.to_string()),
                    key: RowKey::Peer(*addr),
                    ..Row::from_stats(label, s)
                }
            })
            .chain(
                agg.scattered
                    .ranked()
                    .into_iter()
                    .map(|(ip, s)| Row::scattered(ip, &s)),
            )
            .collect();
        let mut host = Row::from_stats("host".into(), &agg.total);
        rates(&mut processes, &previous.processes, dt);
        rates(&mut peers, &previous.peers, dt);
        rates(
            std::slice::from_mut(&mut host),
            std::slice::from_ref(&previous.host),
            dt,
        );
        SortKey::Incidents.sort(&mut processes);
        SortKey::Incidents.sort(&mut peers);
        Snapshot {
            elapsed_s,
            events: agg.events,
            events_lost: counts.lost(),
            processes,
            peers,
            host,
            counts,
        }
    }
}

impl Snapshot {
    /// Names each process's pod and container (Kubernetes, containers).
    pub fn name_pods(&mut self, cgroups: &mut Cgroups) {
        for row in &mut self.processes {
            let Some(pid) = row.pid.filter(|p| *p != 0) else {
                continue;
            };
            let Some(cgroup) = cgroups.lookup_owner(pid, row.cgroup_id) else {
                continue;
            };
            row.namespace = cgroup.namespace().map(str::to_string);
            row.pod = cgroup.pod_name().map(str::to_string);
            row.container = cgroup.container_name().map(str::to_string);
        }
    }
}

impl Row {
    /// What the tables show: the label, with the pod (`ns/pod`) or the
    /// container when known.
    pub fn display_name(&self) -> String {
        match (&self.namespace, &self.pod, &self.container) {
            (Some(ns), Some(pod), _) => format!("{} {ns}/{pod}", self.label),
            (None, Some(pod), _) => format!("{} pod {pod}", self.label),
            (None, None, Some(container)) => format!("{} [{container}]", self.label),
            _ => self.label.clone(),
        }
    }
}

fn rates(rows: &mut [Row], previous: &[Row], dt: f64) {
    let before: HashMap<&str, &Row> = previous.iter().map(|r| (r.label.as_str(), r)).collect();
    let zero = Row::default();
    for row in rows {
        let p = before.get(row.label.as_str()).copied().unwrap_or(&zero);
        let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / dt;
        row.incidents_per_s = rate(row.incidents(), p.incidents());
        row.resets_per_s = rate(row.resets(), p.resets());
        row.retransmits_per_s = rate(row.retransmits, p.retransmits);
        row.failures_per_s = rate(row.failures(), p.failures());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{aggregate::testing::*, event::EventKind as K};

    #[test]
    fn rates_are_per_second_since_the_previous_snapshot() {
        let mut agg = Aggregate::new(names());
        let rst = |t: u64, pid: u32| {
            ev(K::RstReceived, t)
                .sock(t)
                .owner(pid, "app")
                .state("ESTABLISHED")
                .build()
        };
        for t in 1..=4 {
            agg.add(&rst(t, 1));
        }
        let first = Snapshot::take(
            &agg,
            &Snapshot::default(),
            Duration::from_secs(1),
            Counts::default(),
        );
        assert_eq!(first.processes[0].pid, Some(1));
        assert_eq!(first.processes[0].resets_per_s, 4.0);
        for t in 5..=6 {
            agg.add(&rst(t, 1));
        }
        for t in 7..=16 {
            agg.add(&rst(t, 2));
        }
        let second = Snapshot::take(&agg, &first, Duration::from_secs(3), Counts::default());
        // pid 2 had 10 in 2 s, pid 1 had 2 in 2 s.
        assert_eq!(second.processes[0].pid, Some(2));
        assert_eq!(second.processes[0].incidents_per_s, 5.0);
        assert_eq!(second.processes[1].incidents_per_s, 1.0);
        let mut rows = second.processes.clone();
        SortKey::Resets.sort(&mut rows);
        assert_eq!(rows[0].pid, Some(2));
        assert_eq!(SortKey::Latency.next(), SortKey::Incidents);
        assert_eq!(second.host.resets(), 16);
        assert_eq!(second.host.resets_per_s, 6.0);
    }

    #[test]
    fn one_off_unowned_ports_fold_into_one_row_per_address() {
        let mut agg = Aggregate::new(names());
        // More one-off ports than the peer table keeps.
        for port in 40_000..40_300u16 {
            agg.add(
                &ev(K::RstSent, 1)
                    .sock(0)
                    .local("198.18.0.1:40000")
                    .remote(&format!("198.18.0.2:{port}"))
                    .reason("NO_SOCKET")
                    .build(),
            );
        }
        agg.add(
            &ev(K::Connect, 2)
                .sock(5)
                .owner(7, "app")
                .remote("198.18.0.3:80")
                .connect_ms(1.0)
                .build(),
        );
        let snap = Snapshot::take(
            &agg,
            &Snapshot::default(),
            Duration::from_secs(1),
            Counts::default(),
        );
        let labels: Vec<&str> = snap.peers.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["198.18.0.2:* (unowned RSTs)", "198.18.0.3:80"]);
        let folded = &snap.peers[0];
        assert_eq!((folded.rst_sent, folded.grouped_ports), (300, Some(300)));
        assert_eq!(folded.key, RowKey::Scattered("198.18.0.2".parse().unwrap()));
        assert_eq!(folded.name(), "198.18.0.2:* (unowned RSTs) x300 ports");
        assert_eq!(snap.host.rst_sent, 300);
    }
}
