//! Events -> per-process and per-peer statistics, bounded in memory.
//!
//! `top` shows these live and `diagnose` hands them to its rules. Each
//! group keeps RSTs sent by reason and received by state, retransmits by
//! state (SYN apart), connects and failures, and distributions of connect
//! latency, idle-before-reset, age-at-reset and lifetimes. Groups live in
//! `TopN` maps and per-connection memory in a two-generation table, so a
//! day-long run or a port scan cannot grow either without limit.

mod conns;
mod dist;
mod drops;
mod flows;
mod generations;
mod hashing;
mod listeners;
mod midflow;
pub mod recent;
mod reuse;
pub mod scattered;
pub mod timeline;
mod topn;
mod window;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use serde::Serialize;
use tcptrace_common::tcp_state;

use rustc_hash::FxHashMap;

use self::{
    conns::{ConnTable, PendingClose, PendingCloses},
    hashing::MixHashMap,
    recent::{Brief, Recent},
    reuse::{ReuseTracker, Settled},
    scattered::ScatteredResets,
    timeline::Timeline,
};
pub use self::{
    dist::{Dist, Micros, Percentiles, Span, log_bins, serialize_micros},
    drops::{DropGroup, DropKey, DropOwner, Drops},
    flows::{Flows, Holder, StrayHolder, StrayPair, Strays},
    listeners::{HandshakeTrouble, Handshakes},
    midflow::{MidflowDest, MidflowDrops},
    reuse::{IdleBound, IdleRange, Outcome as ReuseOutcome, ReuseOutcomes},
    topn::{TopN, Weight},
    window::Window,
};
use crate::{
    event::{Comm, EventKind, OpenCount, TcpEvent},
    kernel::names::Names,
    origin::{Origin, Provenance},
};

/// Processes kept (the heaviest by incidents, then activity).
pub const MAX_PROCESSES: usize = 128;
/// Remote endpoints kept.
pub const MAX_PEERS: usize = 256;
/// Remote endpoints remembered per process, processes per endpoint.
const MAX_RELATED: usize = 8;
/// Connections whose closes by idle time are kept, by local endpoint.
const MAX_CLOSERS: usize = 64;
/// RSTs sent by local processes kept for pairing with their receipt.
const MAX_LOCAL_RSTS: usize = 4096;

/// Who sent an RST from a local socket.
#[derive(Debug, Clone)]
struct LocalRst {
    pid: u32,
    comm: Comm,
    cgroup_id: u64,
}

/// Who received an RST after a quiet gap, keyed as its figures are.
#[derive(Debug, Clone)]
struct RstReceiver {
    pid: u32,
    peer: SocketAddr,
    netns: u32,
    idle_ns: Option<u64>,
}

/// One half of an RST seen on both ends, waiting for the other half.
#[derive(Debug, Clone)]
enum PairedRst {
    Sent(LocalRst),
    Received(RstReceiver),
}
/// Network namespaces kept (the busiest).
pub const MAX_NAMESPACES: usize = 64;
/// A received RST after this long without receiving anything counts as a
/// reset on reuse after an idle gap (a middlebox forgot the flow).
pub const QUIET_GAP_NS: u64 = 1_000_000_000;
/// An abortive close is silent (a timeout) unless an RST for the same
/// socket shows up within this window (linger-0 sends it just after).
const CLOSE_SETTLE_NS: u64 = 100_000_000;

/// Connect outcomes, resets, retransmits and timing of one group.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Connects that succeeded.
    pub connects: u64,
    /// Connects that failed (refused, timed out, reset).
    pub connect_failed: u64,
    /// Failed connects answered by an RST (nothing listening).
    pub refused: u64,
    /// SYN_SENT -> ESTABLISHED time of the successful connects.
    pub connect_latency: Dist,
    /// By reason name (`UNKNOWN` on kernels without reasons).
    pub rst_sent: BTreeMap<&'static str, u64>,
    /// By the socket's state when the RST arrived.
    pub rst_received: BTreeMap<&'static str, u64>,
    /// Data retransmits by state; SYNs are counted apart.
    pub retransmits: BTreeMap<&'static str, u64>,
    /// SYN retransmits (a connect waiting for an answer).
    pub syn_retransmits: u64,
    /// SYN-ACK retransmits (a handshake this side answered, unacknowledged).
    pub synack_retransmits: u64,
    /// Time without receiving anything before an RST arrived: the
    /// connection's idle gap (the send that provoked the RST is ~0).
    pub idle_before_rst: Dist,
    /// The same for the resets after a quiet gap (>= `QUIET_GAP_NS`).
    pub quiet_gap_idle: Dist,
    /// Age of the connection (since ESTABLISHED) when an RST was sent or received.
    pub age_at_rst: Dist,
    /// RSTs received in ESTABLISHED after a quiet gap: reuse of a flow
    /// something in between had forgotten, no FIN seen.
    pub rst_after_quiet_gap: u64,
    /// Of those, RSTs a traced local process sent (seen leaving it with
    /// the 4-tuple reversed): its own idle close, not a middlebox.
    pub rst_after_quiet_gap_from_local: u64,
    /// RSTs received in ESTABLISHED on a connection in use (no quiet
    /// gap): the peer (or something in between) aborted it.
    pub rst_while_active: u64,
    /// RSTs received on an accepted connection idle both ways for a
    /// quiet gap (this server sent nothing either): the client dropped
    /// its idle connection abortively (pool eviction with SO_LINGER 0, a
    /// proxy purging idle server connections); not counted in
    /// `rst_after_quiet_gap`.
    pub rst_on_idle_accepted: u64,
    /// RSTs received by a client in ESTABLISHED on a connection idle
    /// both ways for a quiet gap: nothing it sent provoked them (the
    /// peer closing abortively, a restarting server resetting its accept
    /// queue, a middlebox resetting idle flows). Also counted in
    /// `rst_after_quiet_gap`.
    pub rst_unprovoked: u64,
    /// When the first and last of those arrived: all within a moment is
    /// one event at the peer, not each connection's own idle timer.
    pub rst_unprovoked_span: Span,
    /// RSTs received by a client in ESTABLISHED after a quiet gap while
    /// its last request had no answer (it had sent strictly after the
    /// last data it received, in jiffies): the peer gave up on a request
    /// rather than on an idle connection.
    pub rst_awaiting_answer: u64,
    /// RSTs a server received in CLOSE_WAIT on an accepted connection
    /// the client had closed (FIN) while the server was silent: the
    /// client stopped waiting (and reset as it closed, or when the
    /// server's late answer reached its closed socket).
    pub client_gave_up: u64,
    /// Of those, RSTs right after the server sent: its answer came after
    /// the client had closed.
    pub late_answers: u64,
    /// Also in `client_gave_up`: RSTs a server received in ESTABLISHED
    /// while it owed the client an answer (`request_pending`): the client
    /// (or proxy) abandoned the request abortively.
    pub requests_reset: u64,
    /// For `client_gave_up`: how long the server had sent nothing when
    /// the client's FIN came, i.e. how long the client waited (its read
    /// timeout).
    pub client_waited: Dist,
    /// RSTs (reason TCP_STATE) a listener sent as it closed, one to each
    /// connection still in its accept queue, never accepted: a restart
    /// or shutdown that did not drain (also among `rst_sent`).
    pub rst_listener_flush: u64,
    /// RSTs received in CLOSE_WAIT: the peer had closed (FIN), the
    /// application still sent on the connection.
    pub rst_after_peer_close: u64,
    /// Time from the peer's FIN to that RST: how long the pool kept
    /// using a connection the peer had already closed.
    pub reuse_after_peer_close: Dist,
    /// How long connections had been idle when the peer closed them
    /// (ESTABLISHED -> CLOSE_WAIT): the peer's idle/keep-alive timeout.
    pub peer_close_idle: Dist,
    /// Same when this side closed first (ESTABLISHED -> FIN_WAIT1).
    pub local_close_idle: Dist,
    /// Active closes: each leaves a TIME_WAIT on this side.
    pub active_closes: u64,
    /// Connections the kernel closed with no RST either way: the
    /// retransmission (or user) timeout gave up.
    pub timeout_aborts: u64,
    /// First retransmit to abort, for those.
    pub retransmitting_for: Dist,
    /// Lifetimes of the connections that closed (ESTABLISHED to close).
    pub lifetimes: Dist,
    /// TCP packets the kernel dropped, by drop reason name.
    pub drops: BTreeMap<&'static str, u64>,
    /// Errors handed to applications, by errno name (`ECONNRESET`, ...).
    pub socket_errors: BTreeMap<&'static str, u64>,
    /// Sends after an idle gap of at least `--reuse-idle`: the reuses
    /// that worked bound a middlebox's idle timeout from below.
    pub reuses: u64,
    /// The idle gaps those sends ended (ms resolution).
    pub reuse_idle: Dist,
    /// Data retransmits whose segments were all as big as the MSS
    /// allows (what a PMTU black hole retransmits).
    pub full_size_retransmits: u64,
    /// Data retransmits whose size was known at all (the denominator of
    /// `full_size_retransmits`).
    pub sized_retransmits: u64,
    /// Received RSTs by origin (`peer`, `middlebox`, `unknown`), where
    /// TC programs compared them with the peer's own segments.
    pub rst_origin: BTreeMap<&'static str, u64>,
    /// Middlebox RSTs by how many hops closer than the peer they came
    /// from (TTL / hop limit difference).
    pub forged_hops: BTreeMap<u8, u64>,
    /// Of the middlebox RSTs, those on connections in use (no quiet
    /// gap): not the peer aborting, a device on the path.
    pub forged_while_active: u64,
    /// Idle gap before the middlebox RSTs received in ESTABLISHED.
    pub forged_idle: Dist,

    // --- reuse after idle, followed to its outcome (aggregate/reuse.rs) ---
    /// Each reuse's idle gap by what became of it on its connection
    /// (answered, stalled, timed out, reset): what bounds an idle timeout.
    pub reuse_outcomes: ReuseOutcomes,
    // --- Resets judged by what the connection still held (`Queues`).
    /// RSTs sent that lost nothing: the peer had acknowledged everything
    /// written, everything received had been read, and the last exchange
    /// was complete (see `complete_exchange`). An abortive close after a
    /// finished request, as HAProxy does to its servers.
    pub rst_sent_clean: u64,
    /// RSTs received on such a connection: the peer aborted it after a
    /// complete exchange, nothing was lost on this side.
    pub rst_received_clean: u64,
    /// RSTs a server received in ESTABLISHED within `ANSWER_ACK_NS` of
    /// answering (its answer still unacknowledged, nothing unread): the
    /// client had the answer in its kernel and reset before its delayed
    /// ACK went out, as HAProxy's HTTP health checks do. Also among
    /// `rst_lost_data` (the answer was never acknowledged).
    pub rst_received_after_answer: u64,
    /// RSTs (either way) that lost data: bytes unacknowledged or unread.
    pub rst_lost_data: u64,
    /// The MSS of the last data retransmit that carried one (0: none).
    pub retransmit_mss: u32,
    /// Its path MTU (0: none): what a PMTU black hole's sender believes.
    pub retransmit_pmtu: u32,
    /// Remote endpoints (for a process) or processes (for an endpoint)
    /// involved in incidents and connects.
    pub related: TopN<Related, u64>,
    /// How long the failed connects (refused or not) took to fail: a
    /// client's own timeout, or the kernel's after its SYN retries.
    pub connect_failed_after: Dist,
}

/// The other side of a group, for "who is affected".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum Related {
    /// A remote endpoint (port 0: many client ports of one address).
    Peer(SocketAddr),
    /// A process id.
    Process(u32),
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            connects: 0,
            connect_failed: 0,
            refused: 0,
            connect_latency: Dist::new(Dist::MICROS),
            rst_sent: BTreeMap::new(),
            rst_received: BTreeMap::new(),
            retransmits: BTreeMap::new(),
            syn_retransmits: 0,
            synack_retransmits: 0,
            idle_before_rst: Dist::new(Dist::MILLIS),
            quiet_gap_idle: Dist::new(Dist::MILLIS),
            age_at_rst: Dist::new(Dist::MILLIS),
            rst_after_quiet_gap: 0,
            rst_after_quiet_gap_from_local: 0,
            rst_while_active: 0,
            rst_on_idle_accepted: 0,
            rst_unprovoked: 0,
            rst_unprovoked_span: Span::default(),
            rst_awaiting_answer: 0,
            client_gave_up: 0,
            late_answers: 0,
            requests_reset: 0,
            client_waited: Dist::new(Dist::MILLIS),
            rst_listener_flush: 0,
            rst_after_peer_close: 0,
            reuse_after_peer_close: Dist::new(Dist::MILLIS),
            peer_close_idle: Dist::new(Dist::MILLIS),
            local_close_idle: Dist::new(Dist::MILLIS),
            active_closes: 0,
            timeout_aborts: 0,
            retransmitting_for: Dist::new(Dist::MILLIS),
            lifetimes: Dist::new(Dist::MILLIS),
            drops: BTreeMap::new(),
            socket_errors: BTreeMap::new(),
            reuses: 0,
            reuse_idle: Dist::new(Dist::MILLIS),
            full_size_retransmits: 0,
            sized_retransmits: 0,
            rst_origin: BTreeMap::new(),
            forged_hops: BTreeMap::new(),
            forged_while_active: 0,
            forged_idle: Dist::new(Dist::MILLIS),
            reuse_outcomes: ReuseOutcomes::default(),
            rst_sent_clean: 0,
            rst_received_clean: 0,
            rst_received_after_answer: 0,
            rst_lost_data: 0,
            retransmit_mss: 0,
            retransmit_pmtu: 0,
            related: TopN::new(MAX_RELATED),
            connect_failed_after: Dist::new(Dist::MILLIS),
        }
    }
}

impl Stats {
    /// Seals every distribution (`Dist::seal`): a slice of figures that
    /// will only be read and merged from now on.
    pub fn seal(&mut self) {
        for dist in [
            &mut self.connect_latency,
            &mut self.idle_before_rst,
            &mut self.quiet_gap_idle,
            &mut self.age_at_rst,
            &mut self.reuse_after_peer_close,
            &mut self.peer_close_idle,
            &mut self.local_close_idle,
            &mut self.retransmitting_for,
            &mut self.lifetimes,
            &mut self.reuse_idle,
            &mut self.forged_idle,
            &mut self.client_waited,
            &mut self.connect_failed_after,
            &mut self.reuse_outcomes.stall_start,
        ] {
            dist.seal();
        }
    }

    /// RSTs sent, all reasons.
    pub fn rst_sent_total(&self) -> u64 {
        self.rst_sent.values().sum()
    }
    /// RSTs received, all states.
    pub fn rst_received_total(&self) -> u64 {
        self.rst_received.values().sum()
    }
    /// Data retransmits, all states (SYNs apart).
    pub fn retransmits_total(&self) -> u64 {
        self.retransmits.values().sum()
    }
    /// RSTs sent with this reason name.
    pub fn rst_sent_with(&self, reason: &str) -> u64 {
        self.rst_sent.get(reason).copied().unwrap_or(0)
    }
    /// RSTs received in this state (`ESTABLISHED`, `SYN_SENT`, ...).
    pub fn rst_received_in(&self, state: &str) -> u64 {
        self.rst_received.get(state).copied().unwrap_or(0)
    }
    /// TCP drops, all reasons.
    pub fn drops_total(&self) -> u64 {
        self.drops.values().sum()
    }
    /// Socket errors, all errnos.
    pub fn socket_errors_total(&self) -> u64 {
        self.socket_errors.values().sum()
    }

    /// Things that went wrong: what ranks groups in `top` and reports.
    pub fn incidents(&self) -> u64 {
        self.rst_sent_total()
            + self.rst_received_total()
            + self.retransmits_total()
            + self.syn_retransmits
            + self.synack_retransmits
            + self.connect_failed
            + self.timeout_aborts
            + self.drops_total()
            + self.socket_errors_total()
    }
}

impl Weight for Stats {
    fn weight(&self) -> u64 {
        // Incidents dominate; activity breaks ties so a busy healthy
        // process outlives a one-off.
        self.incidents() * 64 + self.connects + self.active_closes
    }
}

impl Weight for u64 {
    fn weight(&self) -> u64 {
        *self
    }
}

/// A process as the kernel attributed its sockets. pid 0: no owner known
/// (the kernel answered for no socket, or the socket predates the trace).
#[derive(Debug, Clone, Default)]
pub struct Process {
    /// Its command name, as last seen.
    pub comm: String,
    /// Its cgroup v2 id (0 when unknown).
    pub cgroup_id: u64,
    /// What happened to its connections.
    pub stats: Stats,
}

impl Weight for Process {
    fn weight(&self) -> u64 {
        self.stats.weight()
    }
}

/// Connections a local process closed after they had been idle, by the
/// local endpoint they were accepted on: who closes idle connections.
#[derive(Debug, Clone)]
pub struct Closer {
    /// The process that closed them.
    pub pid: u32,
    /// Its command name.
    pub comm: String,
    /// Its cgroup v2 id.
    pub cgroup_id: u64,
    /// How long the connections had been idle when it closed them.
    pub idle: Dist,
    /// RSTs this endpoint sent because data arrived after it had closed
    /// (reasons `TCP_ABORT_ON_DATA`, `TCP_TIMEWAIT_SOCKET`): clients
    /// reusing connections it had closed for idleness.
    pub late_data_resets: u64,
    /// Idle connections this endpoint closed with an RST (SO_LINGER 0 or
    /// another abort) that a traced local client received after a quiet
    /// gap: the same RST seen leaving this process and arriving at the
    /// client (4-tuple reversed), so no middlebox is involved. `idle`
    /// holds how long those connections had been idle.
    pub idle_resets: u64,
}

impl Weight for Closer {
    fn weight(&self) -> u64 {
        self.idle.count()
    }
}

/// The events of one network namespace.
#[derive(Debug, Clone, Default)]
pub struct Namespace {
    /// Events that came from it.
    pub events: u64,
    /// What they amount to.
    pub stats: Stats,
}

impl Weight for Namespace {
    fn weight(&self) -> u64 {
        self.stats.weight().saturating_add(self.events)
    }
}

/// Everything `top` and `diagnose` know from the events: totals, per process, per peer and per idle-closing endpoint, bounded in memory.
pub struct Aggregate {
    names: Interned,
    /// All events together.
    pub total: Stats,
    /// By process id (pid 0: no owner known), the `MAX_PROCESSES` heaviest.
    /// Groups are boxed: a `Stats` is about 1 KiB, a hash table has up to
    /// twice as many slots as entries, and the exporter keeps these maps
    /// in each of its window's slices (one-off peers fill `peers` in each:
    /// 0.5 MiB a slice unboxed, under churn).
    pub processes: TopN<u32, Box<Process>>,
    /// By remote endpoint (port 0 for the clients of a local server), the `MAX_PEERS` heaviest.
    pub peers: TopN<SocketAddr, Box<Stats>>,
    /// By local endpoint: who closes connections after they idled.
    pub closers: TopN<SocketAddr, Closer>,
    /// Segments of established flows dropped with no socket (a node that
    /// forgot the flows), by destination.
    pub midflow: MidflowDrops,
    /// Incidents per second and when each group's began and ended.
    pub timeline: Timeline,
    /// Unowned RSTs with ephemeral ports, by remote address.
    pub scattered: ScatteredResets,
    /// The last incidents per process and peer, once `keep_recent` was
    /// called.
    pub recent: Option<Recent>,
    /// By listening endpoint: handshakes reset, retried or dropped.
    pub handshakes: Handshakes,
    conns: ConnTable,
    pending: PendingCloses,
    /// RSTs owned local sockets sent, by (local, remote) endpoint, until a
    /// local client receives them: an RST received on the reversed
    /// 4-tuple came from that process, not from a middlebox.
    local_rsts: MixHashMap<(SocketAddr, SocketAddr), PairedRst>,
    /// Listeners that closed lately: (namespace, port, when).
    closed_listeners: std::collections::VecDeque<(u32, u16, u64)>,
    reuses: ReuseTracker,
    /// Reuses whose outcome was just decided (kept to reuse the allocation).
    settled: Vec<Settled>,
    /// The newest event time seen: when the run's last reuses are settled.
    last_ns: u64,
    /// Events added.
    pub events: u64,
    // --- where packets were dropped, which connection holds which ends,
    // per namespace (conntrack and drop rules) ---
    /// Drops by namespace and reason, with whose connections they hit.
    pub drops: Drops,
    /// Which connection holds which ends; replies that skipped reverse NAT.
    pub flows: Flows,
    /// By network namespace inode (0: unknown), the `MAX_NAMESPACES` busiest.
    pub namespaces: TopN<u32, Box<Namespace>>,
}

impl Aggregate {
    /// An empty aggregate that names states and reasons with `names`.
    pub fn new(names: Names) -> Aggregate {
        Aggregate {
            names: Interned::new(names),
            total: Stats::default(),
            processes: TopN::new(MAX_PROCESSES),
            peers: TopN::new(MAX_PEERS),
            closers: TopN::new(MAX_CLOSERS),
            midflow: MidflowDrops::default(),
            timeline: Timeline::default(),
            scattered: ScatteredResets::default(),
            recent: None,
            handshakes: Handshakes::default(),
            conns: ConnTable::default(),
            pending: PendingCloses::default(),
            local_rsts: MixHashMap::default(),
            closed_listeners: std::collections::VecDeque::new(),
            reuses: ReuseTracker::default(),
            settled: Vec::new(),
            last_ns: 0,
            events: 0,
            drops: Drops::default(),
            flows: Flows::default(),
            namespaces: TopN::new(MAX_NAMESPACES),
        }
    }

    /// Also keeps the last incidents of each process and peer (`top`'s
    /// detail view).
    pub fn keep_recent(&mut self) {
        self.recent.get_or_insert_with(Recent::default);
    }

    /// The figures of process `pid`, if it is among those kept.
    pub fn process(&self, pid: u32) -> Option<&Process> {
        self.processes.get(&pid).map(|p| &**p)
    }

    /// Processes by incidents, heaviest first; ties by pid.
    pub fn ranked_processes(&self) -> Vec<(u32, &Process)> {
        let mut all: Vec<_> = self.processes.iter().map(|(p, v)| (*p, &**v)).collect();
        all.sort_by(|a, b| {
            (b.1.stats.incidents(), b.1.stats.weight(), a.0).cmp(&(
                a.1.stats.incidents(),
                a.1.stats.weight(),
                b.0,
            ))
        });
        all
    }

    /// Takes every event of `batch` (in order) and empties it. By
    /// reference: moving each 256-byte event out of the batch costs a copy.
    pub fn add_batch(&mut self, batch: &mut Vec<TcpEvent>) {
        for ev in batch.iter() {
            self.add(ev);
        }
        batch.clear();
    }

    /// Whether this side accepted `ev`'s connection (`None`: unknown).
    fn accepted_of(&self, ev: &TcpEvent) -> Option<bool> {
        // The kernel's word when the open was counted there, not sent.
        let accepted = self.conns.accepted(ev.sock).or(ev.accepted);
        if accepted.is_none() && ev.kind == EventKind::SocketError {
            // Reported after the CLOSE that removed the connection.
            return self.conns.recently_accepted(ev.sock);
        }
        accepted
    }

    /// Takes one event into every figure it changes.
    pub fn add(&mut self, ev: &TcpEvent) {
        self.events += 1;
        self.settle(ev.mono_ns, false);

        let pid = ev.owner.as_ref().map_or(0, |o| o.pid);
        let accepted = self.accepted_of(ev);
        let peer = peer_key(ev, accepted);
        // `peer_key` keys the clients of a local server by address alone:
        // port 0 means this side accepted the connection (the server side).
        let passive = peer.port() == 0;
        let errno = ev.socket_errno().map(|e| self.names.errno(e));
        self.follow_reuses(ev, peer, errno);
        let mut update = Update::from_event(
            ev,
            peer,
            passive,
            errno,
            &mut self.names,
            &mut self.conns,
            &mut self.pending,
        );
        let netns = ev.netns.unwrap_or(0);
        update.listener_flush = self.listener_flush(ev, netns, &update);
        // One lookup for the namespace's count and figures.
        let ns = self.namespaces.entry(&netns, Box::default);
        ns.events += 1;
        if !update.is_empty() {
            update.apply(&mut ns.stats);
        }
        self.flows
            .observe(ev, accepted, update.rst_sent_reason, update.drop_reason);
        if let Some(reason) = update.drop_reason {
            self.drops.add(ev, reason, &self.flows);
        }
        if update.is_empty() {
            return;
        }
        if let Some(reason) = update.drop_reason {
            self.midflow.add(ev, reason);
        }
        self.timeline.record(ev.kind, ev.mono_ns, pid, peer);
        if update.incident {
            self.scattered
                .record(ev, peer, self.peers.get(&peer).is_none());
            if let Some(recent) = &mut self.recent {
                recent.push(pid, peer, update.brief(ev, pid));
            }
        }
        if let Some(what) = update.handshake_event(ev) {
            self.handshakes.add(ev, what);
        }
        // Who closes idle connections is a server's keep-alive: only
        // accepted connections count.
        if let (Some(owner), Some(idle), true) = (&ev.owner, update.local_close_idle_ns, passive) {
            let closer = self.closers.entry(&ev.local, || Closer {
                pid: owner.pid,
                comm: owner.comm.to_string(),
                cgroup_id: owner.cgroup_id,
                idle: Dist::new(Dist::MILLIS),
                late_data_resets: 0,
                idle_resets: 0,
            });
            closer.idle.record(idle);
        }
        if update.late_data_reset
            && let Some(closer) = self.closers.get_mut(&ev.local)
        {
            closer.late_data_resets += 1;
        }
        update.apply(&mut self.total);
        let process = self.processes.entry(&pid, Box::default);
        if let Some(owner) = &ev.owner {
            if process.comm != *owner.comm {
                process.comm = owner.comm.to_string();
            }
            process.cgroup_id = owner.cgroup_id;
        } else if process.comm.is_empty() {
            process.comm = "?".into();
        }
        update.apply(&mut process.stats);
        if update.incident || update.connect_ns.is_some() {
            *process.stats.related.entry(&Related::Peer(peer), || 0) += 1;
        }
        let peer_stats = self.peers.entry(&peer, Box::default);
        update.apply(peer_stats);
        if update.incident || update.connect_ns.is_some() {
            *peer_stats.related.entry(&Related::Process(pid), || 0) += 1;
        }
        self.match_local_rst(ev, pid, peer, update.quiet_gap_rst);
    }

    /// Whether `ev` is an RST a closing listener sent to a connection
    /// still in its accept queue: `inet_csk_listen_stop` disconnects
    /// each queued child (`tcp_disconnect`, reason TCP_STATE) right after
    /// the listener's LISTEN -> CLOSE. Remembers the listener closes.
    fn listener_flush(&mut self, ev: &TcpEvent, netns: u32, update: &Update) -> bool {
        const WITHIN_NS: u64 = 100_000_000;
        const KEPT: usize = 16;
        let listen = tcp_state::LISTEN as u8;
        let close = tcp_state::CLOSE as u8;
        if ev.kind == EventKind::State && ev.transition == Some((listen, close)) {
            if self.closed_listeners.len() >= KEPT {
                self.closed_listeners.pop_front();
            }
            self.closed_listeners
                .push_back((netns, ev.local.port(), ev.mono_ns));
            return false;
        }
        update.rst_sent_reason == Some("TCP_STATE")
            && self.closed_listeners.iter().any(|&(ns, port, at)| {
                ns == netns && port == ev.local.port() && ev.mono_ns.saturating_sub(at) <= WITHIN_NS
            })
    }

    /// Pairs an RST a local process sent with the same RST arriving at a
    /// local client (loopback, or namespaces on one host), in either
    /// order: the receiver's tracepoint fires before the sender's. A pair
    /// after an idle gap is the sender closing idle connections with an
    /// RST (its keep-alive timeout with SO_LINGER 0): it is counted for
    /// the sender in `closers` and for the receiver as
    /// `rst_after_quiet_gap_from_local`, so no rule blames a middlebox.
    fn match_local_rst(&mut self, ev: &TcpEvent, pid: u32, peer: SocketAddr, quiet_gap: bool) {
        if self.local_rsts.len() >= MAX_LOCAL_RSTS {
            // Unpaired ones are RSTs to or from other hosts: forget them.
            self.local_rsts.clear();
        }
        match ev.kind {
            EventKind::RstSent => {
                let Some(owner) = &ev.owner else { return };
                let sender = LocalRst {
                    pid: owner.pid,
                    comm: owner.comm,
                    cgroup_id: owner.cgroup_id,
                };
                match self.local_rsts.remove(&(ev.remote, ev.local)) {
                    Some(PairedRst::Received(receiver)) => {
                        self.credit_idle_reset(ev.local, &sender, &receiver);
                    }
                    _ => {
                        self.local_rsts
                            .insert((ev.local, ev.remote), PairedRst::Sent(sender));
                    }
                }
            }
            EventKind::RstReceived if quiet_gap => {
                let receiver = RstReceiver {
                    pid,
                    peer,
                    netns: ev.netns.unwrap_or(0),
                    idle_ns: ev.idle_recv_ns,
                };
                match self.local_rsts.remove(&(ev.remote, ev.local)) {
                    Some(PairedRst::Sent(sender)) => {
                        self.credit_idle_reset(ev.remote, &sender, &receiver);
                    }
                    _ => {
                        self.local_rsts
                            .insert((ev.local, ev.remote), PairedRst::Received(receiver));
                    }
                }
            }
            _ => {}
        }
    }

    fn credit_idle_reset(
        &mut self,
        closer_ep: SocketAddr,
        sender: &LocalRst,
        receiver: &RstReceiver,
    ) {
        let closer = self.closers.entry(&closer_ep, || Closer {
            pid: sender.pid,
            comm: sender.comm.to_string(),
            cgroup_id: sender.cgroup_id,
            idle: Dist::new(Dist::MILLIS),
            late_data_resets: 0,
            idle_resets: 0,
        });
        if let Some(idle) = receiver.idle_ns {
            closer.idle.record(idle);
        }
        closer.idle_resets += 1;
        self.total.rst_after_quiet_gap_from_local += 1;
        if let Some(p) = self.processes.get_mut(&receiver.pid) {
            p.stats.rst_after_quiet_gap_from_local += 1;
        }
        if let Some(s) = self.peers.get_mut(&receiver.peer) {
            s.rst_after_quiet_gap_from_local += 1;
        }
        if let Some(ns) = self.namespaces.get_mut(&receiver.netns) {
            ns.stats.rst_after_quiet_gap_from_local += 1;
        }
    }

    /// Takes the successful opens the kernel counted (instead of sending
    /// their events): what a `Connect` event of each would have added
    /// (connects, connect latency at its bucket's middle, the related
    /// peer and process, its namespace's events and figures), filed
    /// under the same process and peer. An accepted connection adds only
    /// its namespace's events, as its event would; the lifetime its event
    /// would have started comes with its close (`TcpEvent::age_ns`).
    pub fn add_opens(&mut self, opens: &[OpenCount]) {
        for open in opens {
            let apply = |s: &mut Stats| {
                s.connects += open.n;
                if let Some(b) = open.latency_bucket {
                    s.connect_latency
                        .record_n(crate::tally::LogHistogram::middle(b), open.n);
                }
            };
            let ns = self
                .namespaces
                .entry(&open.netns.unwrap_or(0), Box::default);
            ns.events += open.n;
            if open.passive {
                continue;
            }
            apply(&mut ns.stats);
            let pid = open.owner.as_ref().map_or(0, |o| o.pid);
            apply(&mut self.total);
            let process = self.processes.entry(&pid, Box::default);
            if let Some(owner) = &open.owner {
                if process.comm != *owner.comm {
                    process.comm = owner.comm.to_string();
                }
                process.cgroup_id = owner.cgroup_id;
            } else if process.comm.is_empty() {
                process.comm = "?".into();
            }
            apply(&mut process.stats);
            *process.stats.related.entry(&Related::Peer(open.peer), || 0) += open.n;
            let peer = self.peers.entry(&open.peer, Box::default);
            apply(peer);
            *peer.related.entry(&Related::Process(pid), || 0) += open.n;
        }
    }

    /// Decides the abortive closes still waiting for a possible RST and
    /// the reuses whose outcome is still open; call once the run is over.
    pub fn finish(&mut self) {
        self.settle(u64::MAX, true);
        let mut settled = std::mem::take(&mut self.settled);
        self.reuses.finish(self.last_ns, &mut settled);
        self.apply_reuses(&mut settled);
        self.settled = settled;
    }

    /// Follows reuses to their outcome on their connection and records
    /// the outcomes decided by `ev` (or by the time it carries).
    fn follow_reuses(&mut self, ev: &TcpEvent, peer: SocketAddr, errno: Option<&'static str>) {
        self.last_ns = self.last_ns.max(ev.mono_ns);
        let mut settled = std::mem::take(&mut self.settled);
        self.reuses.settle(ev.mono_ns, &mut settled);
        self.reuses.observe(ev, peer, errno, &mut settled);
        self.apply_reuses(&mut settled);
        self.total.reuse_outcomes.untracked += self.reuses.take_untracked();
        self.settled = settled;
    }

    fn apply_reuses(&mut self, settled: &mut Vec<Settled>) {
        for s in settled.drain(..) {
            self.total.reuse_outcomes.apply(&s);
            let process = self.processes.entry(&s.pid, Box::default);
            if process.comm.is_empty() {
                process.comm = s.comm.to_string();
                process.cgroup_id = s.cgroup_id;
            }
            process.stats.reuse_outcomes.apply(&s);
            self.peers
                .entry(&s.peer, Box::default)
                .reuse_outcomes
                .apply(&s);
        }
    }

    /// Abortive closes with no RST within the window are timeouts.
    fn settle(&mut self, now_ns: u64, all: bool) {
        let now_ns = if all { u64::MAX } else { now_ns };
        // Once per event: the usual answer is "nothing due yet".
        if !self.pending.any_due(now_ns, CLOSE_SETTLE_NS) {
            return;
        }
        let due = self.pending.due(now_ns, CLOSE_SETTLE_NS);
        for close in due {
            // Only the kernel's write/user timeout ends an established
            // connection with no RST either way. Retransmits may be
            // missing: one that fails locally (a local firewall DROP) is
            // not traced.
            let apply = |s: &mut Stats| {
                s.timeout_aborts += 1;
                if close.retransmits > 0 {
                    s.retransmitting_for
                        .record(close.closed_ns.saturating_sub(close.first_retransmit_ns));
                }
            };
            apply(&mut self.total);
            let process = self.processes.entry(&close.pid, Box::default);
            if process.comm.is_empty() {
                process.comm = close.comm.to_string();
            }
            apply(&mut process.stats);
            *process
                .stats
                .related
                .entry(&Related::Peer(close.peer), || 0) += 1;
            let peer = self.peers.entry(&close.peer, Box::default);
            apply(peer);
            *peer.related.entry(&Related::Process(close.pid), || 0) += 1;
            if let Some(ns) = self.namespaces.get_mut(&close.netns) {
                apply(&mut ns.stats);
            }
        }
    }
}

/// What one event changes, computed once and applied to the total, the
/// process and the peer alike.
#[derive(Debug, Default)]
struct Update {
    connect_ns: Option<u64>,
    connect_failed: bool,
    refused: bool,
    rst_sent_reason: Option<&'static str>,
    rst_received_state: Option<&'static str>,
    retransmit_state: Option<&'static str>,
    syn_retransmit: bool,
    synack_retransmit: bool,
    idle_before_rst_ns: Option<u64>,
    age_at_rst_ns: Option<u64>,
    quiet_gap_rst: bool,
    idle_dropped_rst: bool,
    /// A client's quiet-gap RST with nothing sent since either: its
    /// arrival time.
    unprovoked_rst_at: Option<u64>,
    /// See `Stats::rst_awaiting_answer`.
    awaiting_answer_rst: bool,
    /// See `Stats::client_gave_up`: the client's wait, and how.
    client_gave_up: Option<(u64, GaveUp)>,
    /// An RST a closing listener sent to a queued connection.
    listener_flush: bool,
    active_rst: bool,
    /// A received RST's origin, and the hops closer of a middlebox's.
    rst_origin: Option<(&'static str, Option<u8>)>,
    late_data_reset: bool,
    peer_close_rst_after_ns: Option<u64>,
    peer_close_rst: bool,
    peer_close_idle_ns: Option<u64>,
    local_close_idle_ns: Option<u64>,
    active_close: bool,
    lifetime_ns: Option<u64>,
    drop_reason: Option<&'static str>,
    socket_error: Option<&'static str>,
    reuse_idle_ns: Option<Option<u64>>,
    connect_failed_ns: Option<u64>,
    /// Some(full size?) for a data retransmit of known size.
    retransmit_full_size: Option<bool>,
    /// A reset that lost nothing (`complete_exchange`), or lost data.
    rst_clean: bool,
    rst_lost_data: bool,
    /// See `Stats::rst_received_after_answer`.
    rst_after_answer: bool,
    /// A data retransmit's (MSS, path MTU), when known.
    retransmit_path: Option<(Option<u32>, Option<u32>)>,
    incident: bool,
    changed: bool,
}

impl Update {
    fn from_event(
        ev: &TcpEvent,
        peer: SocketAddr,
        passive: bool,
        errno: Option<&'static str>,
        names: &mut Interned,
        conns: &mut ConnTable,
        pending: &mut PendingCloses,
    ) -> Update {
        let mut u = Update {
            changed: true,
            ..Update::default()
        };
        match ev.kind {
            EventKind::Connect => {
                u.connect_ns = Some(ev.connect_ns.unwrap_or(0));
                let conn = conns.get_or_insert(ev.sock);
                conn.established_ns = ev.mono_ns;
                conn.accepted = Some(false);
            }
            EventKind::ConnectFailed => {
                u.connect_failed = true;
                u.connect_failed_ns = ev.connect_ns.filter(|ns| *ns > 0);
                u.incident = true;
                conns.remove(ev.sock);
            }
            EventKind::Retransmit => {
                u.incident = true;
                let st = ev.state.unwrap_or(0);
                if i32::from(st) == tcp_state::SYN_SENT {
                    u.syn_retransmit = true;
                } else {
                    u.retransmit_state = Some(names.state(st));
                    u.retransmit_full_size = ev.segment().and_then(|s| s.is_full_size());
                    u.retransmit_path = ev.segment().map(|s| (s.mss, s.pmtu));
                    let conn = conns.get_or_insert(ev.sock);
                    if conn.retransmits == 0 {
                        conn.first_retransmit_ns = ev.mono_ns;
                    }
                    conn.retransmits += 1;
                }
            }
            EventKind::SynAckRetransmit => {
                u.incident = true;
                u.synack_retransmit = true;
            }
            EventKind::RstSent => {
                u.incident = true;
                let reason = ev.rst_reason.map_or("UNKNOWN", |r| names.reason(r));
                u.rst_sent_reason = Some(reason);
                u.late_data_reset = matches!(reason, "TCP_ABORT_ON_DATA" | "TCP_TIMEWAIT_SOCKET");
                u.age_at_rst_ns = ev.age_ns;
                (u.rst_clean, u.rst_lost_data) = judge_reset(ev, peer);
                // The RST explains an abortive close just before it.
                pending.cancel(ev.sock);
                if ev.sock != 0 {
                    conns.get_or_insert(ev.sock).reset = true;
                }
            }
            EventKind::RstReceived => {
                u.incident = true;
                let st = ev.state.unwrap_or(0);
                u.rst_received_state = Some(names.state(st));
                u.age_at_rst_ns = ev.age_ns;
                (u.rst_clean, u.rst_lost_data) = judge_reset(ev, peer);
                let conn = conns.get_or_insert(ev.sock);
                conn.reset = true;
                match i32::from(st) {
                    tcp_state::SYN_SENT => u.refused = true,
                    tcp_state::ESTABLISHED => {
                        // Only here is "idle" the connection's idle gap;
                        // in SYN_SENT nothing was ever received.
                        u.idle_before_rst_ns = ev.idle_recv_ns;
                        let quiet = ev.idle_recv_ns.is_some_and(|n| n >= QUIET_GAP_NS);
                        // A server's accepted connection idle both ways
                        // (it sent nothing either): no send of ours met a
                        // forgotten flow; the client dropped its idle
                        // connection with an RST (a pool evicting with
                        // SO_LINGER 0, a proxy purging idle server
                        // connections).
                        u.idle_dropped_rst =
                            quiet && passive && ev.idle_send_ns.is_some_and(|n| n >= QUIET_GAP_NS);
                        u.quiet_gap_rst = quiet && !u.idle_dropped_rst;
                        u.rst_after_answer = passive && reset_right_after_answer(ev);
                        // A client resetting while this server still owed
                        // an answer: it gave up on the request.
                        if passive && request_pending(ev) {
                            u.client_gave_up = ev
                                .queues()
                                .and_then(|q| q.idle_data_recv_ns)
                                .filter(|&n| n > 0)
                                .map(|waited| (waited, GaveUp::Reset));
                        }
                        let sent_nothing = ev.idle_send_ns.is_some_and(|n| n >= QUIET_GAP_NS);
                        u.unprovoked_rst_at =
                            (u.quiet_gap_rst && sent_nothing).then_some(ev.mono_ns);
                        // Sent strictly later than it last received:
                        // same jiffy may be request and answer.
                        u.awaiting_answer_rst =
                            u.quiet_gap_rst && !passive && ev.sent_since_data() == Some(true);
                        u.active_rst = !quiet;
                    }
                    // A client reusing a connection its server had closed;
                    // on the server's own (accepted) side an RST in
                    // CLOSE_WAIT is the client going away, no reuse.
                    tcp_state::CLOSE_WAIT if !passive => {
                        u.peer_close_rst = true;
                        u.peer_close_rst_after_ns = conn
                            .peer_closed_ns
                            .map(|fin| ev.mono_ns.saturating_sub(fin));
                    }
                    // The client closed while this server was silent:
                    // it gave up waiting. Its RST came with its close
                    // (a proxy's abortive close) or answered this
                    // server's late answer (a send just now, after the
                    // FIN, nothing in between).
                    tcp_state::CLOSE_WAIT => {
                        if let Some(fin) = conn.peer_closed_ns {
                            let waited = u64::from(conn.silent_at_fin_ms) * 1_000_000;
                            let late = ev.idle_send_ns.is_some_and(|n| n <= LATE_SEND_NS)
                                && ev.mono_ns.saturating_sub(fin) >= LATE_SEND_NS;
                            let how = if late {
                                GaveUp::LateAnswer
                            } else {
                                GaveUp::Closed
                            };
                            u.client_gave_up = (waited > 0).then_some((waited, how));
                        }
                    }
                    _ => {}
                }
                u.rst_origin = ev.provenance().map(|p| {
                    let hops = (p.origin == Origin::Middlebox).then_some(p.hops_closer);
                    (p.origin.name(), hops)
                });
            }
            EventKind::Drop => {
                let reason = ev
                    .dropped()
                    .and_then(|d| d.reason)
                    .map_or("UNKNOWN", |r| names.drop_reason(r));
                if ev.dropped().is_some_and(|d| closing_fin(reason, d)) {
                    return Update::default();
                }
                u.incident = true;
                u.drop_reason = Some(reason);
            }
            EventKind::SocketError => {
                u.incident = true;
                u.socket_error = Some(errno.unwrap_or("UNKNOWN"));
            }
            EventKind::Reuse => u.reuse_idle_ns = Some(ev.idle_ns()),
            EventKind::State => {
                let Some((old, new)) = ev.transition else {
                    return Update::default();
                };
                let (old, new) = (i32::from(old), i32::from(new));
                match (old, new) {
                    (tcp_state::SYN_RECV, tcp_state::ESTABLISHED) => {
                        let conn = conns.get_or_insert(ev.sock);
                        conn.established_ns = ev.mono_ns;
                        conn.accepted = Some(true);
                    }
                    (tcp_state::ESTABLISHED, tcp_state::CLOSE_WAIT) => {
                        // Our last send is when the connection went idle
                        // (the peer's FIN just updated the receive side).
                        // The server closing a client's connection is its
                        // keep-alive; a client closing is no timeout.
                        u.peer_close_idle_ns = ev.idle_send_ns.filter(|_| !passive);
                        let conn = conns.get_or_insert(ev.sock);
                        conn.peer_closed_ns = Some(ev.mono_ns);
                        conn.silent_at_fin_ms = ev
                            .idle_send_ns
                            .map_or(0, |n| u32::try_from(n / 1_000_000).unwrap_or(u32::MAX));
                    }
                    (tcp_state::ESTABLISHED, tcp_state::FIN_WAIT1) => {
                        u.active_close = true;
                        u.local_close_idle_ns = ev.idle_ns();
                    }
                    (_, tcp_state::CLOSE) => {
                        let conn = conns.remove(ev.sock);
                        u.lifetime_ns = match &conn {
                            Some(conn) if conn.established_ns != 0 => {
                                Some(ev.mono_ns.saturating_sub(conn.established_ns))
                            }
                            // The open was counted in the kernel, which
                            // sends the age with the close instead.
                            _ => ev.age_ns,
                        };
                        let abortive = matches!(
                            old,
                            tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT | tcp_state::FIN_WAIT1
                        );
                        let conn = conn.unwrap_or_default();
                        if abortive && !conn.reset {
                            let owner = ev.owner.as_ref();
                            pending.push(PendingClose {
                                sock: ev.sock,
                                netns: ev.netns.unwrap_or(0),
                                closed_ns: ev.mono_ns,
                                pid: owner.map_or(0, |o| o.pid),
                                comm: owner.map_or_else(|| Comm::new(b"?"), |o| o.comm),
                                peer,
                                retransmits: conn.retransmits,
                                first_retransmit_ns: conn.first_retransmit_ns,
                            });
                        }
                    }
                    _ => {}
                }
                if u.lifetime_ns.is_none() && !u.active_close && u.peer_close_idle_ns.is_none() {
                    u.changed = false;
                }
            }
        }
        u
    }

    fn is_empty(&self) -> bool {
        !self.changed
    }

    /// The event as the detail view lists it.
    fn brief(&self, ev: &TcpEvent, pid: u32) -> Brief {
        let what = self
            .rst_sent_reason
            .or(self.rst_received_state)
            .or(self.retransmit_state)
            .or(self.drop_reason)
            .or(self.socket_error)
            .unwrap_or(if self.syn_retransmit { "SYN" } else { "" });
        Brief {
            mono_ns: ev.mono_ns,
            kind: ev.kind,
            local: ev.local,
            remote: ev.remote,
            pid,
            comm: ev
                .owner
                .as_ref()
                .map_or_else(|| Comm::new(b"?"), |o| o.comm),
            what,
            after_ns: self.idle_before_rst_ns.or(if self.connect_failed {
                ev.connect_ns
            } else {
                None
            }),
        }
    }

    fn apply(&self, s: &mut Stats) {
        if let Some(ns) = self.connect_ns {
            s.connects += 1;
            if ns > 0 {
                s.connect_latency.record(ns);
            }
        }
        if self.connect_failed {
            s.connect_failed += 1;
        }
        if let Some(ns) = self.connect_failed_ns {
            s.connect_failed_after.record(ns);
        }
        if self.refused {
            s.refused += 1;
        }
        if let Some(reason) = self.rst_sent_reason {
            *s.rst_sent.entry(reason).or_default() += 1;
        }
        if let Some(state) = self.rst_received_state {
            *s.rst_received.entry(state).or_default() += 1;
        }
        if let Some(state) = self.retransmit_state {
            *s.retransmits.entry(state).or_default() += 1;
        }
        s.syn_retransmits += u64::from(self.syn_retransmit);
        s.synack_retransmits += u64::from(self.synack_retransmit);
        if let Some(ns) = self.idle_before_rst_ns {
            s.idle_before_rst.record(ns);
            if self.quiet_gap_rst {
                s.quiet_gap_idle.record(ns);
            }
        }
        if let Some(ns) = self.age_at_rst_ns {
            s.age_at_rst.record(ns);
        }
        s.rst_after_quiet_gap += u64::from(self.quiet_gap_rst);
        s.rst_while_active += u64::from(self.active_rst);
        s.rst_on_idle_accepted += u64::from(self.idle_dropped_rst);
        s.rst_awaiting_answer += u64::from(self.awaiting_answer_rst);
        if let Some((waited_ns, how)) = self.client_gave_up {
            s.client_gave_up += 1;
            s.late_answers += u64::from(how == GaveUp::LateAnswer);
            s.requests_reset += u64::from(how == GaveUp::Reset);
            s.client_waited.record(waited_ns);
        }
        if let Some(ns) = self.unprovoked_rst_at {
            s.rst_unprovoked += 1;
            s.rst_unprovoked_span.record(ns);
        }
        s.rst_listener_flush += u64::from(self.listener_flush);
        if let Some((origin, hops)) = self.rst_origin {
            *s.rst_origin.entry(origin).or_default() += 1;
            if let Some(hops) = hops {
                *s.forged_hops.entry(hops).or_default() += 1;
                s.forged_while_active += u64::from(self.active_rst);
                if let Some(ns) = self.idle_before_rst_ns {
                    s.forged_idle.record(ns);
                }
            }
        }
        s.rst_after_peer_close += u64::from(self.peer_close_rst);
        if let Some(ns) = self.peer_close_rst_after_ns {
            s.reuse_after_peer_close.record(ns);
        }
        if let Some(ns) = self.peer_close_idle_ns {
            s.peer_close_idle.record(ns);
        }
        if let Some(ns) = self.local_close_idle_ns {
            s.local_close_idle.record(ns);
        }
        s.active_closes += u64::from(self.active_close);
        if let Some(ns) = self.lifetime_ns {
            s.lifetimes.record(ns);
        }
        if let Some(reason) = self.drop_reason {
            *s.drops.entry(reason).or_default() += 1;
        }
        if let Some(error) = self.socket_error {
            *s.socket_errors.entry(error).or_default() += 1;
        }
        if let Some(idle) = self.reuse_idle_ns {
            s.reuses += 1;
            if let Some(ns) = idle {
                s.reuse_idle.record(ns);
            }
        }
        if let Some(full) = self.retransmit_full_size {
            s.sized_retransmits += 1;
            s.full_size_retransmits += u64::from(full);
        }
        if self.rst_clean {
            if self.rst_sent_reason.is_some() {
                s.rst_sent_clean += 1;
            } else {
                s.rst_received_clean += 1;
            }
        }
        s.rst_lost_data += u64::from(self.rst_lost_data);
        s.rst_received_after_answer += u64::from(self.rst_after_answer);
        if let Some((mss, pmtu)) = self.retransmit_path {
            s.retransmit_mss = mss.unwrap_or(s.retransmit_mss);
            s.retransmit_pmtu = pmtu.unwrap_or(s.retransmit_pmtu);
        }
    }

    /// What the event says about a listener's handshakes, if anything.
    fn handshake_event(&self, ev: &TcpEvent) -> Option<listeners::HandshakeEvent> {
        use listeners::HandshakeEvent as H;
        match ev.kind {
            EventKind::RstSent => self.rst_sent_reason.map(H::Reset),
            EventKind::SynAckRetransmit => Some(H::SynAckRetransmit),
            EventKind::Drop => self.drop_reason.map(H::Drop),
            _ => None,
        }
    }
}

/// Judges a reset by what its connection still held: (clean, lost data).
/// Clean is a complete exchange: nothing unacknowledged, nothing unread,
/// and the last request answered. Which way "answered" goes depends on
/// the side: a server (accepted connection, `peer` keyed with port 0)
/// sent after the last data it received (and sent a data segment at
/// all, when `Queues::data_segs_out` is known); a client received after
/// its last send. Unknown figures judge neither way.
/// An incoming FIN (no SYN, no RST) freed without a reason: the peer's
/// FIN reaching a connection this side had closed first, which a
/// TIME_WAIT socket answers with an ACK before the segment is freed at
/// `discard_it` with no reason (`tcp_v4_rcv`, `TCP_TW_ACK`). The normal
/// end of a connection, once per close: not a drop the tables count.
fn closing_fin(reason: &str, d: &crate::event::Dropped) -> bool {
    const FIN: u8 = 0x01;
    const SYN_OR_RST: u8 = 0x02 | 0x04;
    reason == "NOT_SPECIFIED"
        && d.incoming
        && d.tcp_flags & FIN != 0
        && d.tcp_flags & SYN_OR_RST == 0
}

fn judge_reset(ev: &TcpEvent, peer: SocketAddr) -> (bool, bool) {
    let Some(q) = ev.queues() else {
        return (false, false);
    };
    match q.drained() {
        Some(false) => (false, true),
        Some(true) => (complete_exchange(ev, peer.port() == 0), false),
        None => (false, false),
    }
}

/// How a client gave up on a server (`Stats::client_gave_up`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GaveUp {
    /// It closed (FIN) and reset with or soon after its close.
    Closed,
    /// It closed; the server's late answer met its closed socket.
    LateAnswer,
    /// It reset the connection with the request unanswered.
    Reset,
}

/// A server's connection, at an RST, still owed the client an answer:
/// it had sent data before, and nothing since the last data it received
/// (strictly: in the same jiffy it may have answered). A connection that
/// never sent a data segment (`data_segs_out` 0) may as well never have
/// received a request (a pool's unused connection, a TCP health check):
/// without the segments received, it is left out.
fn request_pending(ev: &TcpEvent) -> bool {
    ev.sent_since_data() == Some(false) && ev.queues().and_then(|q| q.data_segs_out) != Some(0)
}

/// A send this recent at an RST is what the RST answered (a jiffy is
/// 1-10 ms; anything older was not the send that met a closed socket).
const LATE_SEND_NS: u64 = 20_000_000;

/// The longest a receiver holds back an ACK (Linux `TCP_DELACK_MAX`,
/// 200 ms, include/net/tcp.h): an answer still unacknowledged this soon
/// after it went out may well have arrived.
const ANSWER_ACK_NS: u64 = 200_000_000;

/// A server's RST received just after it answered the last request: the
/// answer unacknowledged but sent within `ANSWER_ACK_NS`, nothing
/// unread. The client reset after reading what it needed. An RST sent
/// without the connection's state (`Provenance::stateless`: a kernel
/// that no longer knew it, as behind a NAT bypass) is no such close.
/// There must have been an answer: a data segment sent, when known.
fn reset_right_after_answer(ev: &TcpEvent) -> bool {
    let Some(q) = ev.queues() else {
        return false;
    };
    !ev.provenance().is_some_and(Provenance::stateless)
        && q.unread == Some(0)
        && q.unacked.is_some_and(|n| n > 0)
        && q.data_segs_out.is_none_or(|n| n > 0)
        && ev.idle_send_ns.is_some_and(|n| n <= ANSWER_ACK_NS)
        && complete_exchange(ev, true)
}

fn complete_exchange(ev: &TcpEvent, server: bool) -> bool {
    let Some(q) = ev.queues() else {
        return false;
    };
    let (Some(sent), Some(received)) = (ev.idle_send_ns, q.idle_data_recv_ns) else {
        return false;
    };
    // Jiffies: a server answering within the jiffy its request came in
    // answered it; a client whose last send and last receive share a
    // jiffy may have had no answer at all (the handshake counts as
    // received), so only a strictly later receive proves one.
    if server {
        // A passive child's `lsndtime` and `lrcvtime` both start at the
        // jiffy it was created in (tcp_create_openreq_child): a request
        // in that jiffy and no answer at all compare equal. A server
        // that sent no data segment answered nothing. Unknown (old
        // kernel or recording): the jiffies alone.
        sent <= received && q.data_segs_out != Some(0)
    } else {
        received < sent
    }
}

/// State and reason names, made once per distinct value and kept for the
/// life of the process, so counting by name costs no allocation per event.
struct Interned {
    names: Names,
    states: FxHashMap<u8, &'static str>,
    reasons: FxHashMap<u32, &'static str>,
    drop_reasons: FxHashMap<u32, &'static str>,
    errnos: FxHashMap<i32, &'static str>,
}

/// Distinct reason values named; beyond this (only a corrupt value could
/// get here) they share one name, so a bad stream cannot leak memory.
const MAX_REASONS: usize = 256;

impl Interned {
    fn new(names: Names) -> Interned {
        Interned {
            names,
            states: FxHashMap::default(),
            reasons: FxHashMap::default(),
            drop_reasons: FxHashMap::default(),
            errnos: FxHashMap::default(),
        }
    }

    fn state(&mut self, state: u8) -> &'static str {
        let names = &self.names;
        self.states
            .entry(state)
            .or_insert_with(|| Box::leak(Box::from(names.state(state))))
    }

    fn reason(&mut self, reason: u32) -> &'static str {
        if self.reasons.len() >= MAX_REASONS && !self.reasons.contains_key(&reason) {
            return "REASON_OTHER";
        }
        let names = &self.names;
        self.reasons
            .entry(reason)
            .or_insert_with(|| Box::leak(Box::from(names.reason(reason).as_ref())))
    }

    fn drop_reason(&mut self, reason: u32) -> &'static str {
        if self.drop_reasons.len() >= MAX_REASONS && !self.drop_reasons.contains_key(&reason) {
            return "DROP_REASON_OTHER";
        }
        let names = &self.names;
        self.drop_reasons
            .entry(reason)
            .or_insert_with(|| Box::leak(Box::from(names.drop_reason(reason).as_ref())))
    }

    fn errno(&mut self, errno: i32) -> &'static str {
        if self.errnos.len() >= MAX_REASONS && !self.errnos.contains_key(&errno) {
            return "ERRNO_OTHER";
        }
        self.errnos
            .entry(errno)
            .or_insert_with(|| Box::leak(Box::from(crate::kernel::errno::label(errno))))
    }
}

/// The remote endpoint a group is keyed by. For a connection accepted
/// from a client, the client's ephemeral port would make every
/// connection its own endpoint: key those by address alone (port 0).
/// `accepted` is what the connection's own handshake showed (SYN_RECV or
/// SYN_SENT before ESTABLISHED); without it, guess from the ports (a
/// wide `ip_local_port_range` can defeat the guess).
pub fn peer_key(ev: &TcpEvent, accepted: Option<bool>) -> SocketAddr {
    let remote = SocketAddr::new(ev.remote_ip(), ev.remote.port());
    let passive = match (accepted, ev.kind, ev.transition) {
        (Some(known), _, _) => known,
        (None, EventKind::Connect | EventKind::ConnectFailed, _) => false,
        // Still connecting: this side is the client whatever its ports.
        (None, _, _)
            if ev
                .state
                .is_some_and(|s| i32::from(s) == tcp_state::SYN_SENT) =>
        {
            false
        }
        (None, _, Some((old, _))) if i32::from(old) == tcp_state::SYN_RECV => true,
        (None, _, _) => ev.local.port() < 32_768 && remote.port() >= 32_768,
    };
    if passive {
        SocketAddr::new(remote.ip(), 0)
    } else {
        remote
    }
}

/// Is `ip` the same host in both notations (v4-mapped v6 or not)?
pub fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
pub mod testing;

#[cfg(test)]
mod tests;
