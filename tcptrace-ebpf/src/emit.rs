//! The in-kernel filters and the one way out: the ring buffer, with every
//! failed write counted.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use tcptrace_common::{
    Config, EVENT_SIZE, Event, EventWithPeer, PEER_PROFILE_SIZE, PeerProfile, UNKNOWN_U32,
};

/// An event's footprint in the ring buffer: record plus 8-byte header.
const EVENT_RECORD_BYTES: u64 = EVENT_SIZE as u64 + 8;

use crate::{
    maps::{EVENT, EVENTS, LOST, PRODUCED},
    related,
};

/// Which of the CPU's `EVENT` buffers a program builds its event in.
/// Tracepoint programs never overlap on one CPU (the kernel skips a
/// nested run and counts it), but a raw tracepoint program is only kept
/// from nesting with itself: `inet_sk_error_report` runs in softirq too,
/// where it can interrupt, on the same CPU, a program half-way through
/// building an event in process context. So each kind builds in a buffer
/// of its own.
pub mod buffer {
    /// The tracepoint programs (state changes, resets, retransmits, drops).
    pub const TRACEPOINT: u32 = 0;
    /// `inet_sk_error_report` (raw tracepoint; process context or softirq).
    pub const SOCKET_ERROR: u32 = 1;
    /// The reuse-after-idle programs (raw tracepoints, process context).
    pub const REUSE: u32 = 2;
    /// `inet_sock_set_state` as a raw tracepoint (process context or
    /// softirq): the kernel keeps a formatted tracepoint's program from
    /// running inside another's, not a raw one's, so it may interrupt a
    /// reset or drop program half-way through its event.
    pub const STATE: u32 = 3;
    /// Buffers per CPU (of events, records and tcp_sock spans alike).
    pub const COUNT: u32 = 4;
}

/// The CPU's event under construction in `buffer` (see `buffer`), all
/// zero but the idle times (unknown). Built in a map rather than on the
/// 512-byte stack, and zeroed with word stores: LLVM would turn a plain
/// `Event::default()` into a call to aya-ebpf's byte-at-a-time `memset`.
#[inline(always)]
pub fn blank(buffer: u32) -> Option<&'static mut Event> {
    // The event is the first member of the map value.
    let ev = EVENT.get_ptr_mut(buffer)?.cast::<Event>();
    let words = ev.cast::<u64>();
    for i in 0..EVENT_SIZE / 8 {
        // SAFETY: within the EVENT_SIZE-byte map value; volatile so the
        // stores stay stores.
        unsafe { words.add(i).write_volatile(0) };
    }
    // SAFETY: a valid, exclusive (one program at a time per CPU) value.
    let ev = unsafe { &mut *ev };
    ev.idle_send_jiffies = UNKNOWN_U32;
    ev.idle_recv_jiffies = UNKNOWN_U32;
    ev.idle_data_recv_jiffies = UNKNOWN_U32;
    ev.unacked = UNKNOWN_U32;
    ev.unread = UNKNOWN_U32;
    Some(ev)
}

/// The user's scope filters (process, namespace, port), without the
/// event-kind selection.
#[inline(always)]
pub fn in_scope(cfg: &Config, ev: &Event) -> bool {
    if cfg.filter_tgid != 0 && ev.owner.tgid != cfg.filter_tgid {
        return false;
    }
    if cfg.filter_netns != 0 && ev.netns != cfg.filter_netns {
        return false;
    }
    if cfg.filter_port != 0 && ev.sport != cfg.filter_port && ev.dport != cfg.filter_port {
        return false;
    }
    if cfg.filter_comm[0] != 0 && ev.owner.comm != cfg.filter_comm {
        return false;
    }
    true
}

#[inline(always)]
pub fn selected(cfg: &Config, kind: u8) -> bool {
    cfg.kind_mask & (1u32 << kind) != 0
}

/// Adds one to `counters[index]` (a per-CPU array: no atomics needed).
#[inline(always)]
pub fn bump(counters: &aya_ebpf::maps::PerCpuArray<u64>, index: u32) {
    if let Some(count) = counters.get_ptr_mut(index) {
        unsafe { *count += 1 };
    }
}

/// Sends `ev` if the filters keep it. Kept events are counted in
/// `PRODUCED`; those the ring buffer had no room for in `LOST`. A kept
/// connection leaves its flow for `related` (whether or not its kind is
/// selected: `--events drop` still follows the watched connections).
#[inline(always)]
pub fn submit(cfg: &Config, ev: &Event) {
    if !in_scope(cfg, ev) {
        return;
    }
    related::remember(cfg, ev);
    if selected(cfg, ev.kind) {
        send(cfg, ev);
    }
}

/// Copies `peer` (or zeros, when the connection has no profile) behind
/// the CPU's event under construction, for `submit_with_peer`. Word by
/// word: LLVM would make a call to a byte-at-a-time memcpy otherwise.
#[inline(always)]
pub fn attach_peer(peer: Option<&PeerProfile>) -> Option<()> {
    // Only tracepoint programs (the received-RST one) attach a profile.
    let record = EVENT.get_ptr_mut(buffer::TRACEPOINT)?;
    // SAFETY: a field of the CPU's own map value.
    let dst = unsafe { core::ptr::addr_of_mut!((*record).peer) }.cast::<u64>();
    let src = peer.map(|p| (p as *const PeerProfile).cast::<u64>());
    for i in 0..PEER_PROFILE_SIZE / 8 {
        // SAFETY: both are PEER_PROFILE_SIZE-byte, 8-aligned values.
        unsafe {
            let word = match src {
                Some(src) => src.add(i).read_volatile(),
                None => 0,
            };
            dst.add(i).write_volatile(word);
        }
    }
    Some(())
}

/// Sends the CPU's event under construction (`ev`, from `blank`) with
/// the profile `attach_peer` put behind it, if the filters keep it.
#[inline(always)]
pub fn submit_with_peer(cfg: &Config, ev: &Event) {
    if !(selected(cfg, ev.kind) && in_scope(cfg, ev)) {
        return;
    }
    bump(&PRODUCED, u32::from(ev.kind));
    let Some(record) = EVENT.get_ptr(buffer::TRACEPOINT) else {
        bump(&LOST, u32::from(ev.kind));
        return;
    };
    // SAFETY: the CPU's own map value, fully written (event and peer).
    let record = unsafe { &*record };
    if EVENTS
        .output::<EventWithPeer>(record, wakeup_flags(cfg))
        .is_err()
    {
        bump(&LOST, u32::from(ev.kind));
    }
}

/// Sends `ev`, which the filters already kept.
#[inline(always)]
pub fn send(cfg: &Config, ev: &Event) {
    bump(&PRODUCED, u32::from(ev.kind));
    if EVENTS.output::<Event>(ev, wakeup_flags(cfg)).is_err() {
        bump(&LOST, u32::from(ev.kind));
    }
}

/// Batched wakeups: wake the reader only on the record that takes the
/// backlog across the threshold. Forcing a wakeup on every record above
/// it (while the reader is busy with a batch) costs an irq_work per
/// event for nothing; a crossing missed between two producers is picked
/// up by the reader's 20 ms poll.
#[inline(always)]
fn wakeup_flags(cfg: &Config) -> u64 {
    if cfg.wakeup_bytes == 0 {
        return 0;
    }
    let backlog = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let threshold = u64::from(cfg.wakeup_bytes);
    if backlog >= threshold && backlog < threshold + 4 * EVENT_RECORD_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}
