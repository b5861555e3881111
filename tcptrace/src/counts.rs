//! How many events the kernel produced, how many the reader received,
//! how many the ring buffer had no room for, and how many hook runs the
//! kernel skipped: the figures every command reports, so that nothing is
//! lost silently. Also the kernel's exact per-reason drop counts.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::event::{EventKind, KINDS};

/// Per-kind totals kept by the kernel programs (the per-CPU `PRODUCED`
/// and `LOST` arrays, summed over CPUs), and the hook runs the kernel
/// skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounts {
    /// Successful opens counted in the kernel's `OPENS` map and handed
    /// out as counts (not events): with `TracerOptions::count_opens`.
    pub counted: u64,
    /// Opens that found `OPENS` full and were sent as events instead
    /// (so among `produced`): nothing lost, but the map is too small.
    pub count_map_full: u64,
    /// Events that passed the in-kernel filters (what userspace should
    /// see), by `EventKind::index`.
    pub produced: [u64; KINDS],
    /// Events the ring buffer had no room for, by `EventKind::index`.
    pub lost: [u64; KINDS],
    /// Hook invocations the kernel skipped because the same program was
    /// already running on that CPU: `__bpf_trace_run` in
    /// kernel/trace/bpf_trace.c counts them with
    /// `bpf_prog_inc_misses_counter`, read back as `bpf_prog_info`'s
    /// `recursion_misses` (kernels >= 5.12), summed over the attached
    /// programs. Events that were never produced.
    pub missed_by_kernel: u64,
}

impl KernelCounts {
    /// Events produced, all kinds.
    pub fn total_produced(&self) -> u64 {
        self.produced.iter().sum()
    }

    /// Events lost, all kinds.
    pub fn total_lost(&self) -> u64 {
        self.lost.iter().sum()
    }

    /// `(kind, lost)` for every kind, in kind order.
    pub fn lost_by_kind(&self) -> impl Iterator<Item = (EventKind, u64)> + '_ {
        EventKind::ALL.into_iter().zip(self.lost.iter().copied())
    }
}

/// TCP packets the kernel dropped, by `enum skb_drop_reason` value
/// (non-zero counts only), as the kernel programs counted them (the
/// per-CPU `DROP_REASONS` and `HOST_DROP_REASONS` arrays, summed over
/// CPUs): exact whether or not their events reached userspace, reasons
/// sent as no event (`QUEUE_PURGE`) included. Reasons of
/// `tcptrace_common::DROP_REASON_SLOTS - 1` and above share that last
/// number. Name them with `kernel::names::Names::drop_reason`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Drops the session's filters (pid, comm, port, netns) kept.
    pub in_scope: BTreeMap<u32, u64>,
    /// Every TCP drop on the host, before any filter.
    pub host: BTreeMap<u32, u64>,
}

/// A session's accounting: the kernel's counts and what the reader
/// received. Once the session has finished (detached and drained) it is
/// exact: for every kind, `received + lost = produced` (less any record
/// that failed to decode, which would be a bug and is counted apart).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events decoded and handed out, by `EventKind::index`.
    pub received: [u64; KINDS],
    /// The kernel's side.
    pub kernel: KernelCounts,
    /// Ring buffer records that did not decode (never expected).
    pub decode_errors: u64,
    /// Drops by reason (empty when drops are not traced).
    pub drops: DropCounts,
}

impl Counts {
    /// Events received, all kinds.
    pub fn received(&self) -> u64 {
        self.received.iter().sum()
    }

    /// Events the kernel produced, all kinds.
    pub fn produced(&self) -> u64 {
        self.kernel.total_produced()
    }

    /// Events the ring buffer had no room for, all kinds.
    pub fn lost(&self) -> u64 {
        self.kernel.total_lost()
    }

    /// Hook runs the kernel skipped (see `KernelCounts::missed_by_kernel`).
    pub fn missed_by_kernel(&self) -> u64 {
        self.kernel.missed_by_kernel
    }

    /// `(kind, received)` for every kind, in kind order.
    pub fn received_by_kind(&self) -> impl Iterator<Item = (EventKind, u64)> + '_ {
        EventKind::ALL
            .into_iter()
            .zip(self.received.iter().copied())
    }

    /// The loss phrase every command prints: `12 events received, 14
    /// produced, 2 lost`, then `, 5 hook runs skipped by the kernel` when
    /// there were any.
    pub fn human(&self) -> String {
        let mut text = format!(
            "{} events received, {} produced, {} lost",
            self.received(),
            self.produced(),
            self.lost()
        );
        if self.missed_by_kernel() > 0 {
            text += &format!(
                ", {} hook runs skipped by the kernel",
                self.missed_by_kernel()
            );
        }
        if self.kernel.counted > 0 {
            text += &format!(
                ", {} successful opens counted in the kernel",
                self.kernel.counted
            );
        }
        if self.kernel.count_map_full > 0 {
            text += &format!(
                ", {} opens sent as events because the kernel's count map was full",
                self.kernel.count_map_full
            );
        }
        text
    }

    /// The same figures as the JSON fields every report carries:
    /// `events_received`, `events_produced`, `events_lost`,
    /// `missed_by_kernel` (numbers).
    pub fn json_fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("events_received".into(), json!(self.received()));
        fields.insert("events_produced".into(), json!(self.produced()));
        fields.insert("events_lost".into(), json!(self.lost()));
        fields.insert("missed_by_kernel".into(), json!(self.missed_by_kernel()));
        fields.insert("opens_counted_in_kernel".into(), json!(self.kernel.counted));
        fields.insert("count_map_full".into(), json!(self.kernel.count_map_full));
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_phrases() {
        let mut counts = Counts::default();
        counts.received[EventKind::Connect.index()] = 10;
        counts.received[EventKind::RstSent.index()] = 2;
        counts.kernel.produced[EventKind::Connect.index()] = 13;
        counts.kernel.produced[EventKind::RstSent.index()] = 2;
        counts.kernel.lost[EventKind::Connect.index()] = 3;
        assert_eq!(
            (counts.received(), counts.produced(), counts.lost()),
            (12, 15, 3)
        );
        assert_eq!(counts.human(), "12 events received, 15 produced, 3 lost");
        counts.kernel.missed_by_kernel = 5;
        assert_eq!(
            counts.human(),
            "12 events received, 15 produced, 3 lost, 5 hook runs skipped by the kernel"
        );
        let json = Value::Object(counts.json_fields());
        assert_eq!(json["events_received"], 12);
        assert_eq!(json["events_produced"], 15);
        assert_eq!(json["events_lost"], 3);
        assert_eq!(json["missed_by_kernel"], 5);
        assert_eq!(
            counts.kernel.lost_by_kind().find(|(_, n)| *n > 0),
            Some((EventKind::Connect, 3))
        );
    }
}
