//! One diagnosis, written once: the host readings before the watch, the
//! events and accept-queue samples during it, the readings after it, and
//! the rules over all of that, to a [`Report`].
//!
//! Every host reading comes through one seam, [`HostSource`]: the live
//! host ([`LiveHost`], which `diagnose` uses, and `diagnose --record`
//! wraps to write each reading into the record file) or a record file
//! (`replay`, which hands back what the recording host read, in the same
//! order). Whatever the source, the same code turns the same inputs into
//! the same report, byte for byte.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use super::{
    facts::{
        HostFacts, KernelDrops, Listener, ListenerPeaks, NamespaceFacts, SYSCTLS, SocketFacts,
    },
    finding::{Finding, rank},
    moments,
    report::{self, LoadRun, Report},
    rules::{Inputs, evaluate},
};
use crate::{
    aggregate::Aggregate,
    counts::Counts,
    event::{OpenCount, TcpEvent},
    host::{
        cgroups::{CgroupInfo, Cgroups},
        conntrack::{Conntrack, ConntrackChange},
        counters::Counters,
        global::HostGlobal,
        netns::{self, Netns},
        owners::{Owner, socket_owners},
        reading::{self, ReadingError, is_tcp_counter, tcp_delta},
        sock_diag::dump_tcp_listeners,
        survey::{Held, Survey},
    },
    kernel::names::Names,
};

/// When a reading is taken: before the watch or after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Moment {
    /// Before the first event.
    Start,
    /// After the last one.
    End,
}

impl Moment {
    /// `start` or `end`.
    pub fn name(self) -> &'static str {
        match self {
            Moment::Start => "start",
            Moment::End => "end",
        }
    }
}

/// One reading of the watched namespace, reduced to what a diagnosis
/// uses: the counters `tcp_delta` quotes, and the socket table as
/// `SocketFacts` (counts by state, TIME_WAIT by peer, listeners), not
/// every socket. What a record file keeps, so the reduction bounds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostReading {
    /// The TCP and ICMP counters of /proc/net/netstat, snmp and snmp6
    /// (`reading::is_tcp_counter`).
    pub counters: Counters,
    /// `SYSCTLS` by key; keys this kernel lacks are absent.
    pub sysctls: BTreeMap<String, String>,
    /// The socket table, reduced; `None` when sock_diag failed.
    pub sockets: Option<SocketFacts>,
    /// The namespace's conntrack; `None` when unreadable.
    pub conntrack: Option<Conntrack>,
    /// Host-wide TCP limits and usage; `None` when unreadable.
    pub host_global: Option<HostGlobal>,
}

impl HostReading {
    /// A full reading reduced (the socket table to `SocketFacts`).
    pub fn of(mut reading: reading::Reading) -> HostReading {
        reading.counters.retain(is_tcp_counter);
        HostReading {
            counters: reading.counters,
            sysctls: reading.sysctls,
            sockets: reading.sockets.as_deref().map(SocketFacts::of),
            conntrack: reading.conntrack,
            host_global: reading.host_global,
        }
    }
}

/// A survey reduced to what a diagnosis uses: each namespace's counters
/// that `NamespaceFacts::from_surveys` quotes (`reading::is_tcp_counter`),
/// a third of them.
pub fn reduced(mut survey: Survey) -> Survey {
    for ns in survey.namespaces.values_mut() {
        ns.counters.retain(is_tcp_counter);
    }
    survey
}

/// Why a host reading could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The live host refused it (namespace, counters).
    #[error(transparent)]
    Reading(#[from] ReadingError),
    /// Writing it into the record file failed.
    #[error("writing the record: {0}")]
    Record(#[from] std::io::Error),
    /// The record file does not hold it (a file this build did not write).
    #[error("{0}")]
    NotRecorded(String),
}

/// Where a diagnosis takes its host readings from, in the order it takes
/// them: `reading` and `survey` at the start, `listeners` while watching,
/// then `reading`, `survey`, `socket_owners` and `cgroup` at the end.
pub trait HostSource {
    /// Counters, sysctls, sockets, conntrack and host-wide figures of the
    /// watched namespace.
    ///
    /// # Errors
    /// The namespace cannot be entered, or the counters cannot be read.
    fn reading(&mut self, at: Moment) -> Result<HostReading, SourceError>;

    /// Every namespace's counters and conntrack (empty without root).
    ///
    /// # Errors
    /// Only a recording that fails.
    fn survey(&mut self, at: Moment) -> Result<Survey, SourceError>;

    /// One sample of the listening sockets' accept queues; `None` when
    /// none was taken (live: sock_diag failed, logged; recorded: no more
    /// samples).
    ///
    /// # Errors
    /// Only a recording that fails.
    fn listeners(&mut self) -> Result<Option<Vec<Listener>>, SourceError>;

    /// The processes holding the sockets with these inodes, where /proc
    /// names one.
    ///
    /// # Errors
    /// Only a recording that fails.
    fn socket_owners(&mut self, inodes: &BTreeSet<u64>)
    -> Result<HashMap<u64, Owner>, SourceError>;

    /// The cgroup (container, pod) of a socket owner, when known.
    ///
    /// # Errors
    /// Only a recording that fails.
    fn cgroup(&mut self, pid: u32, cgroup_id: u64) -> Result<Option<CgroupInfo>, SourceError>;
}

/// The running host, seen from the watched namespace (`--netns`) or ours.
pub struct LiveHost {
    /// The watched namespace, opened through `held`: `None` for ours.
    netns: Option<PathBuf>,
    /// The watched namespace and, from the start survey on, every
    /// namespace surveyed: held until the end reading (`survey::Held`).
    held: Held,
    cgroups: Cgroups,
}

impl LiveHost {
    /// Reads inside `netns` (or ours), held from now on; owners' cgroups
    /// are named by `cgroups`.
    ///
    /// # Errors
    /// `netns` cannot be opened (deleted since it was resolved).
    pub fn new(netns: Option<&Netns>, cgroups: Cgroups) -> std::io::Result<LiveHost> {
        let mut held = Held::default();
        let netns = match netns {
            Some(ns) => {
                held.hold(ns.inode, &ns.path)?;
                held.path_of(ns.inode)
            }
            None => None,
        };
        Ok(LiveHost {
            netns,
            held,
            cgroups,
        })
    }
}

impl HostSource for LiveHost {
    fn reading(&mut self, _at: Moment) -> Result<HostReading, SourceError> {
        Ok(HostReading::of(reading::read(
            self.netns.as_deref(),
            &SYSCTLS,
        )?))
    }

    fn survey(&mut self, at: Moment) -> Result<Survey, SourceError> {
        if at == Moment::Start {
            self.held.hold_in_use();
        }
        Ok(reduced(Survey::read_with(&self.held)))
    }

    fn listeners(&mut self) -> Result<Option<Vec<Listener>>, SourceError> {
        // A failure costs only the sample.
        match netns::run_in(self.netns.as_deref(), || {
            dump_tcp_listeners().map_err(|e| anyhow::anyhow!(e))
        }) {
            Ok(sockets) => Ok(Some(Listener::of_table(&sockets))),
            Err(err) => {
                log::debug!("no accept queue sample: {err}");
                Ok(None)
            }
        }
    }

    fn socket_owners(
        &mut self,
        inodes: &BTreeSet<u64>,
    ) -> Result<HashMap<u64, Owner>, SourceError> {
        let mut owners = socket_owners();
        owners.retain(|inode, _| inodes.contains(inode));
        Ok(owners)
    }

    fn cgroup(&mut self, pid: u32, cgroup_id: u64) -> Result<Option<CgroupInfo>, SourceError> {
        Ok(self.cgroups.lookup_owner(pid, cgroup_id).cloned())
    }
}

/// What shapes a diagnosis besides the events and the host readings:
/// the options it ran with and what the session said at its start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFacts {
    /// `--netns` as given.
    pub netns: Option<String>,
    /// The watched namespace's inode (`None`: the whole host).
    pub watched_netns: Option<u32>,
    /// The filters the events were taken with (the report's `filters`).
    pub filters: serde_json::Value,
    /// The `--during` stress command line.
    pub during: Option<String>,
    /// When tracing started (RFC 3339, UTC).
    pub started_at: String,
    /// The same on the events' clock (CLOCK_MONOTONIC ns): where the
    /// timeline starts.
    pub started_mono_ns: u64,
    /// The kernel's release (`uname -r`).
    pub kernel: Option<String>,
    /// Whether `skb:kfree_skb` was traced (drop counts are complete).
    pub drops_traced: bool,
    /// What the kernel could not trace, one phrase each.
    pub missing: Vec<String>,
}

/// How the watch ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEnd {
    /// Seconds from attach to stop.
    pub seconds: f64,
    /// The session's exact counts.
    pub counts: Counts,
    /// The opens the kernel counted instead of sending them.
    pub opens: Vec<OpenCount>,
    /// How the `--during` load ended (`None`: stopped, or no load).
    pub load_status: Option<String>,
}

/// The readings taken before the tracer is attached.
#[derive(Debug, Clone)]
pub struct StartReadings {
    reading: HostReading,
    survey: Survey,
}

impl StartReadings {
    /// Takes them from `host`.
    ///
    /// # Errors
    /// What `host` refuses.
    pub fn take(host: &mut impl HostSource) -> Result<StartReadings, SourceError> {
        Ok(StartReadings {
            reading: host.reading(Moment::Start)?,
            survey: host.survey(Moment::Start)?,
        })
    }
}

/// A diagnosis in progress: the start readings, the aggregate of the
/// events so far and the accept-queue peaks.
pub struct Watch {
    run: RunFacts,
    names: Names,
    agg: Aggregate,
    start: HostReading,
    survey_start: Survey,
    peaks: ListenerPeaks,
}

impl Watch {
    /// Starts aggregating, the timeline from `run.started_mono_ns`, with
    /// this kernel's `names`.
    pub fn begin(run: RunFacts, names: Names, start: StartReadings) -> Watch {
        let mut agg = Aggregate::new(names.clone());
        agg.timeline.set_origin(run.started_mono_ns);
        Watch {
            run,
            names,
            agg,
            start: start.reading,
            survey_start: start.survey,
            peaks: ListenerPeaks::default(),
        }
    }

    /// Takes every event of `batch`, in order, and empties it.
    pub fn add_batch(&mut self, batch: &mut Vec<TcpEvent>) {
        self.agg.add_batch(batch);
    }

    /// Takes one sample of the accept queues from `host`; false if none
    /// was taken.
    ///
    /// # Errors
    /// What `host` refuses.
    pub fn sample_listeners(&mut self, host: &mut impl HostSource) -> Result<bool, SourceError> {
        let Some(listeners) = host.listeners()? else {
            return Ok(false);
        };
        self.peaks.sample(&listeners);
        Ok(true)
    }

    /// Takes the end readings from `host` and runs the rules: the report,
    /// and the aggregate its figures come from.
    ///
    /// # Errors
    /// What `host` refuses.
    pub fn conclude(
        self,
        end: RunEnd,
        host: &mut impl HostSource,
    ) -> Result<(Report, Aggregate), SourceError> {
        let Watch {
            run,
            names,
            mut agg,
            start,
            survey_start,
            peaks,
        } = self;
        agg.add_opens(&end.opens);
        agg.finish();
        let after = host.reading(Moment::End)?;
        let survey_end = host.survey(Moment::End)?;

        let events_by_netns = agg
            .namespaces
            .iter()
            .filter(|(inode, _)| **inode != 0)
            .map(|(inode, ns)| (*inode, ns.events))
            .collect();
        let namespaces = NamespaceFacts::from_surveys(
            &survey_start,
            &survey_end,
            &events_by_netns,
            run.watched_netns,
        );
        // Counters are quoted from the namespace the events came from: the
        // watched one, or on the whole host every namespace that had events.
        let delta = || tcp_delta(&after.counters, Some(&start.counters));
        let counters = match run.watched_netns {
            Some(_) => delta(),
            None => NamespaceFacts::summed(&namespaces).unwrap_or_else(delta),
        };
        // Which process holds each listener (an accept queue is named by it).
        let inodes: BTreeSet<u64> = [&start.sockets, &after.sockets]
            .into_iter()
            .flatten()
            .flat_map(SocketFacts::listener_inodes)
            .chain(peaks.inodes())
            .filter(|inode| *inode != 0)
            .collect();
        let owners = host.socket_owners(&inodes)?;
        let named = |sockets: &Option<SocketFacts>| {
            sockets.clone().map(|mut facts| {
                facts.name_listeners(&owners);
                facts
            })
        };
        let facts = HostFacts {
            counters,
            sysctls: start.sysctls,
            sockets_start: named(&start.sockets),
            sockets_end: named(&after.sockets),
            conntrack: start
                .conntrack
                .zip(after.conntrack)
                .map(|(start, end)| ConntrackChange::new(start, end)),
            host_global_start: start.host_global,
            host_global_end: after.host_global,
            watched_netns: run.watched_netns,
            namespaces,
            namespaces_truncated: survey_start.truncated || survey_end.truncated,
            kernel_drops: KernelDrops {
                traced: run.drops_traced,
                in_scope: named_drops(&end.counts.drops.in_scope, &names),
                host: named_drops(&end.counts.drops.host, &names),
            },
            listeners_peak: peaks.into_listeners(&owners),
        };
        let outcomes = evaluate(&Inputs {
            agg: &agg,
            host: &facts,
            seconds: end.seconds,
        });
        let checked = outcomes.iter().map(|o| o.checked.clone()).collect();
        let mut findings: Vec<_> = outcomes.into_iter().flat_map(|o| o.findings).collect();
        rank(&mut findings);
        let workloads = name_cgroups(&mut findings, host)?;
        moments::mark(&mut findings, &agg);
        let report = Report {
            seconds: end.seconds,
            netns: run.netns,
            events: agg.events,
            counts: end.counts,
            findings,
            workloads,
            checked,
            host: facts,
            missing: run.missing,
            load: run.during.map(|command| LoadRun {
                command,
                status: end.load_status,
            }),
            started_at: Some(run.started_at),
            kernel: run.kernel,
            filters: run.filters,
        };
        Ok((report, agg))
    }
}

/// Per-reason drop counts by this kernel's reason names.
fn named_drops(counts: &BTreeMap<u32, u64>, names: &Names) -> BTreeMap<String, u64> {
    let mut named = BTreeMap::new();
    for (reason, n) in counts {
        *named
            .entry(names.drop_reason(*reason).into_owned())
            .or_default() += n;
    }
    named
}

/// Who is affected, down to the container and the pod: the cgroup path
/// (or, on a Kubernetes node, the pod) in each affected's text, and the
/// names by (pid, cgroup id) for the JSON report.
fn name_cgroups(
    findings: &mut [Finding],
    host: &mut impl HostSource,
) -> Result<report::Workloads, SourceError> {
    let mut workloads = report::Workloads::new();
    for affected in findings.iter_mut().flat_map(|f| f.affected.iter_mut()) {
        let Some(c) = host.cgroup(affected.pid, affected.cgroup_id)? else {
            continue;
        };
        affected.cgroup = Some(match (c.namespace(), c.pod_name(), &c.container) {
            (Some(ns), Some(pod), _) => format!(
                "pod {ns}/{pod} (container {})",
                c.container_name().unwrap_or("?")
            ),
            (None, Some(pod), _) => format!("pod {pod}"),
            (_, _, Some(id)) => format!("{} (container {id})", c.path),
            _ => c.path.clone(),
        });
        if c.pod_name().is_some() || c.container.is_some() {
            workloads.insert(
                (affected.pid, affected.cgroup_id),
                report::Workload {
                    namespace: c.namespace().map(str::to_string),
                    pod: c.pod_name().map(str::to_string),
                    container: c.container_name().map(str::to_string),
                },
            );
        }
    }
    Ok(workloads)
}
