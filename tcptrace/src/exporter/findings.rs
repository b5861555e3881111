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
        reading::{self, ReadingError, tcp_delta},
        survey::Survey,
    },
    kernel::clock::monotonic_ns,
};

/// One reading of the host at a cut, reduced as `diagnose` reduces its
/// own (`HostReading::of`, `watch::reduced`): the window keeps one per
/// slice for its whole length, so only what the rules read of it.
struct Boundary {
    reading: HostReading,
    /// Every namespace's counters and conntrack (host-wide mode quotes
    /// counters per namespace that had events).
    survey: Survey,
}

impl Boundary {
    fn read(netns: Option<&std::path::Path>) -> Result<Boundary, ReadingError> {
        Ok(Boundary {
            reading: HostReading::of(reading::read(netns, &SYSCTLS)?),
            survey: watch::reduced(Survey::read()),
        })
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
}

impl Findings {
    /// Starts a window of `length`, reading the host (inside `netns`,
    /// or here) once now.
    ///
    /// # Errors
    /// When the namespace cannot be entered or its counters read.
    pub fn start(netns: Option<PathBuf>, length: Duration) -> Result<Findings, ReadingError> {
        let first = Boundary::read(netns.as_deref())?;
        Ok(Findings {
            netns,
            window: Window::new(length),
            boundaries: VecDeque::from([first]),
            last_cut: Instant::now(),
            current: Vec::new(),
            evaluations: 0,
            warned: false,
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
        match Boundary::read(self.netns.as_deref()) {
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
            &start.survey,
            &end.survey,
            &events_by_netns,
            watched_netns,
        );
        // As diagnose quotes them: the watched namespace's, or summed over
        // the namespaces that had events.
        let delta = tcp_delta(&end.reading.counters, Some(&start.reading.counters));
        let counters = match watched_netns {
            Some(_) => delta,
            None => NamespaceFacts::summed(&namespaces).unwrap_or(delta),
        };
        let host = HostFacts {
            counters,
            sysctls: start.reading.sysctls.clone(),
            sockets_start: start.reading.sockets.clone(),
            sockets_end: end.reading.sockets.clone(),
            conntrack: start
                .reading
                .conntrack
                .clone()
                .zip(end.reading.conntrack.clone())
                .map(|(a, b)| ConntrackChange::new(a, b)),
            host_global_start: start.reading.host_global.clone(),
            host_global_end: end.reading.host_global.clone(),
            watched_netns,
            namespaces_truncated: start.survey.truncated || end.survey.truncated,
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
