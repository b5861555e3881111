//! Aggregates over a sliding window, for a command that runs for weeks
//! (the exporter) and judges only the last minutes: the figures are cut
//! into slices (`Aggregate::take_figures`) while the per-connection
//! memory carries on, and the slices of the window are merged back into
//! one `Aggregate` (`Window::merged`) that the rules read as if it had
//! watched just that long.

use std::{collections::VecDeque, mem, net::SocketAddr, time::Duration};

use super::{
    Aggregate, Closer, Interned, MAX_CLOSERS, MAX_NAMESPACES, MAX_PEERS, MAX_PROCESSES,
    ScatteredResets, Stats, Timeline, TopN, peer_key,
};
use crate::event::TcpEvent;

impl Aggregate {
    /// The remote endpoint `add` files this event under: the peer's
    /// address and port, or its address alone (port 0) for the clients
    /// of a local server.
    pub fn peer_of(&self, ev: &TcpEvent) -> SocketAddr {
        peer_key(ev, self.accepted_of(ev))
    }

    /// Decides the abortive closes older than the settle window at
    /// `now_ns` (CLOCK_MONOTONIC): when no event follows them, only time
    /// tells they were timeouts.
    pub fn settle_until(&mut self, now_ns: u64) {
        self.settle(now_ns, false);
    }

    /// Moves the figures gathered so far (totals, processes, peers,
    /// closers, events) into a new aggregate and starts them again from
    /// zero. The per-connection memory stays here: a connection opened
    /// in one slice and reset in the next is still understood.
    pub fn take_figures(&mut self) -> Aggregate {
        Aggregate {
            names: Interned::new(self.names.names.clone()),
            total: mem::take(&mut self.total),
            processes: mem::replace(&mut self.processes, TopN::new(MAX_PROCESSES)),
            peers: mem::replace(&mut self.peers, TopN::new(MAX_PEERS)),
            closers: mem::replace(&mut self.closers, TopN::new(MAX_CLOSERS)),
            midflow: mem::take(&mut self.midflow),
            // Moments, scattered unowned ports and recent incidents serve
            // a report or a screen, not a window's rules: slices keep none.
            timeline: Timeline::default(),
            scattered: ScatteredResets::default(),
            recent: None,
            handshakes: mem::take(&mut self.handshakes),
            conns: Default::default(),
            pending: Default::default(),
            local_rsts: Default::default(),
            closed_listeners: Default::default(),
            reuses: Default::default(),
            settled: Vec::new(),
            last_ns: self.last_ns,
            events: mem::take(&mut self.events),
            drops: mem::take(&mut self.drops),
            flows: self.flows.take_figures(),
            namespaces: mem::replace(&mut self.namespaces, TopN::new(MAX_NAMESPACES)),
        }
    }

    /// Seals every distribution of this aggregate's figures (`Dist::seal`)
    /// and drops what only counting needs (`MidflowDrops::seal`): a window
    /// keeps its slices for minutes, only to merge them.
    pub fn seal_distributions(&mut self) {
        self.midflow.seal();
        self.total.seal();
        self.processes.values_mut().for_each(|p| p.stats.seal());
        self.peers.values_mut().for_each(|s| s.seal());
        self.namespaces.values_mut().for_each(|n| n.stats.seal());
        self.closers.values_mut().for_each(|c| c.idle.seal());
    }

    /// Adds the figures of `other` (a slice from `take_figures`) to this
    /// aggregate's: counts add up, distributions merge, the heaviest
    /// processes, peers and closers stay.
    pub fn merge(&mut self, other: &Aggregate) {
        self.total.merge(&other.total);
        self.processes
            .merge_from(&other.processes, Box::default, |ours, theirs| {
                if !theirs.comm.is_empty() {
                    ours.comm.clone_from(&theirs.comm);
                }
                if theirs.cgroup_id != 0 {
                    ours.cgroup_id = theirs.cgroup_id;
                }
                ours.stats.merge(&theirs.stats);
            });
        self.peers
            .merge_from(&other.peers, Box::default, |ours, theirs| {
                ours.merge(theirs)
            });
        self.closers.merge_from(
            &other.closers,
            || Closer {
                pid: 0,
                comm: String::new(),
                cgroup_id: 0,
                idle: super::Dist::new(super::Dist::MILLIS),
                late_data_resets: 0,
                idle_resets: 0,
            },
            |ours, theirs| {
                ours.pid = theirs.pid;
                ours.comm.clone_from(&theirs.comm);
                ours.cgroup_id = theirs.cgroup_id;
                ours.idle.merge(&theirs.idle);
                ours.late_data_resets += theirs.late_data_resets;
                ours.idle_resets += theirs.idle_resets;
            },
        );
        self.midflow.merge(&other.midflow);
        self.handshakes.merge(&other.handshakes);
        self.drops.merge(&other.drops);
        self.flows.strays.merge(&other.flows.strays);
        self.namespaces
            .merge_from(&other.namespaces, Box::default, |ours, theirs| {
                ours.events += theirs.events;
                ours.stats.merge(&theirs.stats);
            });
        self.last_ns = self.last_ns.max(other.last_ns);
        self.events += other.events;
    }
}

impl Stats {
    /// Adds every figure of `other`. Written field by field with no `..`:
    /// a figure added to `Stats` does not compile until it merges too.
    pub fn merge(&mut self, other: &Stats) {
        let Stats {
            connects,
            connect_failed,
            refused,
            connect_latency,
            rst_sent,
            rst_received,
            retransmits,
            syn_retransmits,
            synack_retransmits,
            idle_before_rst,
            quiet_gap_idle,
            age_at_rst,
            rst_after_quiet_gap,
            rst_after_quiet_gap_from_local,
            rst_while_active,
            rst_on_idle_accepted,
            rst_unprovoked,
            rst_unprovoked_span,
            rst_awaiting_answer,
            client_gave_up,
            late_answers,
            requests_reset,
            client_waited,
            rst_listener_flush,
            rst_after_peer_close,
            reuse_after_peer_close,
            peer_close_idle,
            local_close_idle,
            active_closes,
            timeout_aborts,
            retransmitting_for,
            lifetimes,
            drops,
            socket_errors,
            reuses,
            reuse_idle,
            full_size_retransmits,
            sized_retransmits,
            reuse_outcomes,
            rst_sent_clean,
            rst_received_clean,
            rst_received_after_answer,
            rst_lost_data,
            retransmit_mss,
            retransmit_pmtu,
            related,
            connect_failed_after,
            rst_origin,
            forged_hops,
            forged_while_active,
            forged_idle,
        } = other;
        self.connects += connects;
        self.connect_failed += connect_failed;
        self.refused += refused;
        self.connect_latency.merge(connect_latency);
        for (ours, theirs) in [
            (&mut self.rst_sent, rst_sent),
            (&mut self.rst_received, rst_received),
            (&mut self.retransmits, retransmits),
            (&mut self.drops, drops),
            (&mut self.socket_errors, socket_errors),
        ] {
            for (name, n) in theirs {
                *ours.entry(name).or_default() += n;
            }
        }
        self.syn_retransmits += syn_retransmits;
        self.synack_retransmits += synack_retransmits;
        self.idle_before_rst.merge(idle_before_rst);
        self.quiet_gap_idle.merge(quiet_gap_idle);
        self.age_at_rst.merge(age_at_rst);
        self.rst_after_quiet_gap += rst_after_quiet_gap;
        self.rst_after_quiet_gap_from_local += rst_after_quiet_gap_from_local;
        self.rst_while_active += rst_while_active;
        self.rst_on_idle_accepted += rst_on_idle_accepted;
        self.rst_unprovoked += rst_unprovoked;
        self.rst_unprovoked_span.merge(rst_unprovoked_span);
        self.rst_awaiting_answer += rst_awaiting_answer;
        self.client_gave_up += client_gave_up;
        self.late_answers += late_answers;
        self.requests_reset += requests_reset;
        self.client_waited.merge(client_waited);
        self.rst_listener_flush += rst_listener_flush;
        self.rst_after_peer_close += rst_after_peer_close;
        self.reuse_after_peer_close.merge(reuse_after_peer_close);
        self.peer_close_idle.merge(peer_close_idle);
        self.local_close_idle.merge(local_close_idle);
        self.active_closes += active_closes;
        self.timeout_aborts += timeout_aborts;
        self.retransmitting_for.merge(retransmitting_for);
        self.lifetimes.merge(lifetimes);
        self.reuses += reuses;
        self.reuse_idle.merge(reuse_idle);
        self.full_size_retransmits += full_size_retransmits;
        self.sized_retransmits += sized_retransmits;
        self.reuse_outcomes.merge(reuse_outcomes);
        self.rst_sent_clean += rst_sent_clean;
        self.rst_received_clean += rst_received_clean;
        self.rst_received_after_answer += rst_received_after_answer;
        self.rst_lost_data += rst_lost_data;
        // The last data retransmit's MSS and path MTU: the newer slice's.
        if *retransmit_mss != 0 {
            self.retransmit_mss = *retransmit_mss;
            self.retransmit_pmtu = *retransmit_pmtu;
        }
        self.connect_failed_after.merge(connect_failed_after);
        for (origin, n) in rst_origin {
            *self.rst_origin.entry(origin).or_default() += n;
        }
        for (hops, n) in forged_hops {
            *self.forged_hops.entry(*hops).or_default() += n;
        }
        self.forged_while_active += forged_while_active;
        self.forged_idle.merge(forged_idle);
        self.related
            .merge_from(related, || 0, |ours, theirs| *ours += theirs);
    }
}

/// The last `length` of figures, in slices: `push` a slice each
/// interval, `merged` gives the window as one aggregate.
pub struct Window {
    length: Duration,
    /// (slice length, figures), oldest first.
    slices: VecDeque<(Duration, Aggregate)>,
}

impl Window {
    /// A window of `length`.
    pub fn new(length: Duration) -> Window {
        Window {
            length,
            slices: VecDeque::new(),
        }
    }

    /// Adds the figures of the last `span` and forgets the slices that
    /// fell out of the window.
    pub fn push(&mut self, span: Duration, mut slice: Aggregate) {
        slice.seal_distributions();
        self.slices.push_back((span, slice));
        while self.covered() > self.length && self.slices.len() > 1 {
            self.slices.pop_front();
        }
    }

    /// How long the slices kept cover (at most the window once full).
    pub fn covered(&self) -> Duration {
        self.slices.iter().map(|(span, _)| *span).sum()
    }

    /// Slices kept.
    pub fn len(&self) -> usize {
        self.slices.len()
    }

    /// True before the first slice.
    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }

    /// Every slice kept, merged into one aggregate; `None` before the
    /// first slice.
    pub fn merged(&self) -> Option<Aggregate> {
        let (_, first) = self.slices.front()?;
        let mut merged = Aggregate::new(first.names.names.clone());
        for (_, slice) in &self.slices {
            merged.merge(slice);
        }
        Some(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{aggregate::testing::*, event::EventKind as K};

    fn rst(t: u64, pid: u32, idle_ms: u64) -> TcpEvent {
        ev(K::RstReceived, t)
            .sock(t)
            .owner(pid, "app")
            .remote("10.0.0.2:80")
            .state("ESTABLISHED")
            .idle_ms(idle_ms, idle_ms)
            .build()
    }

    /// Slices merged give the figures of one aggregate that saw every
    /// event, and a connection that spans two slices is still understood.
    #[test]
    fn merged_slices_equal_one_aggregate() {
        let events: Vec<TcpEvent> = (1..=30)
            .map(|t| rst(t * 1000, 1 + (t as u32 % 3), 1000 + t * 10))
            .collect();
        let mut whole = Aggregate::new(names());
        let mut sliced = Aggregate::new(names());
        let mut window = Window::new(Duration::from_secs(60));
        for (i, e) in events.iter().enumerate() {
            whole.add(e);
            sliced.add(e);
            if i % 7 == 6 {
                window.push(Duration::from_secs(5), sliced.take_figures());
            }
        }
        window.push(Duration::from_secs(5), sliced.take_figures());
        let merged = window.merged().unwrap();
        assert_eq!(merged.events, whole.events);
        assert_eq!(merged.total.rst_received_total(), 30);
        assert_eq!(
            merged.total.rst_after_quiet_gap,
            whole.total.rst_after_quiet_gap
        );
        assert_eq!(
            merged.total.idle_before_rst.percentiles(),
            whole.total.idle_before_rst.percentiles()
        );
        for pid in 1..=3 {
            let (m, w) = (merged.process(pid).unwrap(), whole.process(pid).unwrap());
            assert_eq!(m.stats.rst_received, w.stats.rst_received, "pid {pid}");
            assert_eq!(m.comm, "app");
        }
        let peer: SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert_eq!(
            merged.peers.get(&peer).unwrap().rst_received_total(),
            whole.peers.get(&peer).unwrap().rst_received_total()
        );
        assert!(sliced.events == 0 && sliced.total.rst_received.is_empty());
    }

    /// Mid-flow drops cut into sealed slices merge into the figures of
    /// one aggregate: the distinct flows a slice remembered while counting
    /// are dropped at the seal, its counts kept.
    #[test]
    fn sealed_midflow_drops_merge_as_counted() {
        let drop = |t: u64, client: u16| {
            ev(K::Drop, t)
                .sock(0)
                .local("10.0.0.1:80")
                .remote(&format!("10.0.0.{}:{}", 2 + client % 3, 40_000 + client))
                .dropped_incoming(2, 0x10)
                .build()
        };
        let mut whole = Aggregate::new(names());
        let mut sliced = Aggregate::new(names());
        let mut window = Window::new(Duration::from_secs(60));
        for t in 0..40u64 {
            let e = drop(t, (t % 12) as u16);
            whole.add(&e);
            sliced.add(&e);
            if t % 10 == 9 {
                window.push(Duration::from_secs(5), sliced.take_figures());
            }
        }
        assert!(
            window
                .slices
                .iter()
                .all(|(_, s)| s.midflow.flows.is_empty())
        );
        let merged = window.merged().unwrap();
        let dest: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let (m, w) = (
            &merged.midflow.by_dest[&dest],
            &whole.midflow.by_dest[&dest],
        );
        assert_eq!((m.drops, m.reasons.clone()), (w.drops, w.reasons.clone()));
        assert_eq!(m.clients.len(), w.clients.len());
        assert_eq!(m.drops, 40);
    }

    #[test]
    fn old_slices_leave_the_window() {
        let mut window = Window::new(Duration::from_secs(10));
        assert!(window.merged().is_none());
        for t in 1..=5 {
            let mut slice = Aggregate::new(names());
            slice.add(&rst(t, 1, 1500));
            window.push(Duration::from_secs(4), slice);
        }
        assert_eq!(window.len(), 2, "8 s of 4 s slices fit in 10 s");
        assert_eq!(window.covered(), Duration::from_secs(8));
        assert_eq!(window.merged().unwrap().events, 2);
    }

    /// A connection's start in one slice and its reset in the next: the
    /// per-connection memory stays with the live aggregate.
    #[test]
    fn peer_keys_survive_a_cut() {
        let mut agg = Aggregate::new(names());
        let accepted = ev(K::State, 1)
            .sock(9)
            .local("10.0.0.1:80")
            .remote("10.0.0.2:40000")
            .transition("SYN_RECV", "ESTABLISHED")
            .build();
        agg.add(&accepted);
        let _ = agg.take_figures();
        let reset = ev(K::RstReceived, 2)
            .sock(9)
            .local("10.0.0.1:80")
            .remote("10.0.0.2:40000")
            .state("ESTABLISHED")
            .build();
        assert_eq!(agg.peer_of(&reset), "10.0.0.2:0".parse().unwrap());
    }
}
