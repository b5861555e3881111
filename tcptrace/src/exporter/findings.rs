//! Findings as metrics: the diagnosis rules, run every interval over the
//! last `--window` of events and host facts.
//!
//! The live aggregate is cut into one slice per interval
//! (`aggregate::Window`); the host is read at every cut (counters,
//! sysctls, the socket table reduced to what the rules use, conntrack,
//! host-wide limits), so the facts of the window are the readings at its
//! two ends. The rules are `diagnose`'s own, called through their public
//! `evaluate` (see docs/exporter.md for the move of the rules engine
//! below the commands).

use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    aggregate::{Aggregate, Window},
    diagnosis::{
        facts::{HostFacts, KernelDrops, NamespaceFacts, SYSCTLS},
        finding::{Finding, rank},
        rules::{Inputs, evaluate},
        watch::{self, HostReading},
    },
    host::{
        conntrack::ConntrackChange,
        counters::Counters,
        reading::{self, ReadingError, tcp_delta},
        survey::Survey,
    },
    kernel::clock::monotonic_ns,
};

/// One reading of the host at a cut, reduced as `diagnose` reduces its
/// own (`HostReading::of`, `watch::reduced`): the window keeps one per
/// slice for its whole length, so only what the rules read of it, and
/// the counters packed (`Packed`).
struct Boundary {
    /// The watched (or this) namespace, its counters in `counters`.
    reading: HostReading,
    counters: Packed,
    /// Every namespace's counters and conntrack (host-wide mode quotes
    /// counters per namespace that had events), the counters in
    /// `namespace_counters`.
    survey: Survey,
    namespace_counters: Vec<(u32, Packed)>,
}

impl Boundary {
    fn read(
        netns: Option<&std::path::Path>,
        lists: &mut NameLists,
    ) -> Result<Boundary, ReadingError> {
        let mut reading = HostReading::of(reading::read(netns, &SYSCTLS)?);
        let counters = lists.pack(&std::mem::take(&mut reading.counters));
        let mut survey = watch::reduced(Survey::read());
        let namespace_counters = survey
            .namespaces
            .iter_mut()
            .map(|(inode, ns)| (*inode, lists.pack(&std::mem::take(&mut ns.counters))))
            .collect();
        Ok(Boundary {
            reading,
            counters,
            survey,
            namespace_counters,
        })
    }

    /// The reading and the survey as they were read.
    fn unpacked(&self) -> (HostReading, Survey) {
        let mut reading = self.reading.clone();
        reading.counters = self.counters.unpack();
        let mut survey = self.survey.clone();
        for (inode, counters) in &self.namespace_counters {
            if let Some(ns) = survey.namespaces.get_mut(inode) {
                ns.counters = counters.unpack();
            }
        }
        (reading, survey)
    }
}

/// Counters kept for the window's length: the values of one reading,
/// the names shared with every reading that has the same names (every
/// namespace of one kernel has). 8 bytes a counter where a map of names
/// takes about 100: a node's survey reads each of its namespaces at
/// every cut, and the window keeps 20 cuts.
#[derive(Debug, Clone)]
struct Packed {
    names: Arc<[String]>,
    values: Box<[i64]>,
}

impl Packed {
    fn unpack(&self) -> Counters {
        self.names
            .iter()
            .cloned()
            .zip(self.values.iter().copied())
            .collect()
    }
}

/// Different lists of counter names kept for sharing: a kernel has one,
/// a namespace without IPv6 another (no `snmp6`).
const MAX_NAME_LISTS: usize = 4;

/// The lists of counter names the packed counters share.
#[derive(Debug, Default)]
struct NameLists(VecDeque<Arc<[String]>>);

impl NameLists {
    fn pack(&mut self, counters: &Counters) -> Packed {
        let names = || counters.iter().map(|(name, _)| name);
        let names = match self
            .0
            .iter()
            .find(|list| list.iter().map(String::as_str).eq(names()))
        {
            Some(list) => list.clone(),
            None => {
                let list: Arc<[String]> = names().map(str::to_string).collect();
                if self.0.len() >= MAX_NAME_LISTS {
                    self.0.pop_front();
                }
                self.0.push_back(list.clone());
                list
            }
        };
        Packed {
            names,
            values: counters.iter().map(|(_, value)| value).collect(),
        }
    }
}

/// The window, the host readings at its cuts, and the latest findings.
pub struct Findings {
    netns: Option<PathBuf>,
    window: Window,
    /// Readings at the start of each slice kept, then now.
    boundaries: VecDeque<Boundary>,
    last_cut: Instant,
    /// The latest evaluation, ranked.
    pub current: Vec<Finding>,
    /// Evaluations so far.
    pub evaluations: u64,
    warned: bool,
    /// The counter names the readings share.
    names: NameLists,
}

impl Findings {
    /// Starts a window of `length`, reading the host (inside `netns`,
    /// or here) once now.
    ///
    /// # Errors
    /// When the namespace cannot be entered or its counters read.
    pub fn start(netns: Option<PathBuf>, length: Duration) -> Result<Findings, ReadingError> {
        let mut names = NameLists::default();
        let first = Boundary::read(netns.as_deref(), &mut names)?;
        Ok(Findings {
            netns,
            window: Window::new(length),
            boundaries: VecDeque::from([first]),
            last_cut: Instant::now(),
            current: Vec::new(),
            evaluations: 0,
            warned: false,
            names,
        })
    }

    /// How long the window covers now (at most its length).
    pub fn covered(&self) -> Duration {
        self.window.covered()
    }

    /// Cuts the live aggregate's figures into a new slice, reads the
    /// host, and runs every rule over the window.
    pub fn evaluate(&mut self, live: &mut Aggregate) {
        let span = self.last_cut.elapsed();
        self.last_cut = Instant::now();
        live.settle_until(monotonic_ns());
        self.window.push(span, live.take_figures());
        match Boundary::read(self.netns.as_deref(), &mut self.names) {
            Ok(now) => self.boundaries.push_back(now),
            Err(err) => {
                // Keep judging on the last good reading rather than stop.
                if !self.warned {
                    self.warned = true;
                    eprintln!("tcptrace: warning: cannot read the host's counters: {err}");
                }
                return;
            }
        }
        // One reading more than slices: the start of the oldest, then now.
        while self.boundaries.len() > self.window.len() + 1 {
            self.boundaries.pop_front();
        }
        let (Some(start), Some(end), Some(agg)) = (
            self.boundaries.front(),
            self.boundaries.back(),
            self.window.merged(),
        ) else {
            return;
        };
        let ((start, survey_start), (end, survey_end)) = (start.unpacked(), end.unpacked());
        let watched_netns = self
            .netns
            .as_deref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m) as u32);
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
            watched_netns,
        );
        // As diagnose quotes them: the watched namespace's, or summed over
        // the namespaces that had events.
        let delta = tcp_delta(&end.counters, Some(&start.counters));
        let counters = match watched_netns {
            Some(_) => delta,
            None => NamespaceFacts::summed(&namespaces).unwrap_or(delta),
        };
        let host = HostFacts {
            counters,
            sysctls: start.sysctls,
            sockets_start: start.sockets,
            sockets_end: end.sockets,
            conntrack: start
                .conntrack
                .zip(end.conntrack)
                .map(|(a, b)| ConntrackChange::new(a, b)),
            host_global_start: start.host_global,
            host_global_end: end.host_global,
            watched_netns,
            namespaces_truncated: survey_start.truncated || survey_end.truncated,
            namespaces,
            // Per-reason kernel drop counts are the session's (exported as
            // tcptrace_kernel_drops); the rules read the window's events.
            kernel_drops: KernelDrops::default(),
            // No accept-queue sampling between cuts: the rules fall back
            // to the socket tables read at the cuts.
            listeners_peak: Vec::new(),
        };
        let outcomes = evaluate(&Inputs {
            agg: &agg,
            host: &host,
            seconds: self.window.covered().as_secs_f64(),
        });
        let mut findings: Vec<Finding> = outcomes.into_iter().flat_map(|o| o.findings).collect();
        rank(&mut findings);
        self.current = findings;
        self.evaluations += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(text: &str) -> Counters {
        Counters::parse(text, "").unwrap()
    }

    /// Packed counters read back as they were; readings with the same
    /// names share one list, and the lists kept are bounded.
    #[test]
    fn packed_counters_unpack_as_read_and_share_their_names() {
        let mut lists = NameLists::default();
        let a = counters("TcpExt: ListenDrops TCPTimeouts\nTcpExt: 15 -7\n");
        let b = counters("TcpExt: ListenDrops TCPTimeouts\nTcpExt: 16 9\n");
        let (pa, pb) = (lists.pack(&a), lists.pack(&b));
        assert_eq!(pa.unpack(), a);
        assert_eq!(pb.unpack(), b);
        assert!(Arc::ptr_eq(&pa.names, &pb.names));
        let other = counters("TcpExt: ListenDrops\nTcpExt: 1\n");
        let po = lists.pack(&other);
        assert_eq!(po.unpack(), other);
        assert!(!Arc::ptr_eq(&pa.names, &po.names));
        assert_eq!(
            lists.pack(&Counters::default()).unpack(),
            Counters::default()
        );
        for n in 0..10 {
            lists.pack(&counters(&format!("TcpExt: C{n}\nTcpExt: {n}\n")));
        }
        assert_eq!(lists.0.len(), MAX_NAME_LISTS);
    }
}
