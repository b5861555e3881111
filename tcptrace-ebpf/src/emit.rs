//! The in-kernel filters and the one way out: the ring buffer, with every
//! failed write counted.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use tcptrace_common::{Config, Event};

use crate::maps::{EVENTS, LOST, PRODUCED};

#[inline(always)]
fn wanted(cfg: &Config, ev: &Event) -> bool {
    if cfg.kind_mask & (1u32 << ev.kind) == 0 {
        return false;
    }
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
fn bump(counters: &aya_ebpf::maps::PerCpuArray<u64>, kind: u8) {
    if let Some(count) = counters.get_ptr_mut(kind as u32) {
        unsafe { *count += 1 };
    }
}

/// Sends `ev` if the filters keep it. Kept events are counted in
/// `PRODUCED`; those the ring buffer had no room for in `LOST`.
#[inline(always)]
pub fn submit(cfg: &Config, ev: &Event) {
    if !wanted(cfg, ev) {
        return;
    }
    bump(&PRODUCED, ev.kind);
    let flags = if cfg.wakeup_bytes == 0 {
        0
    } else if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= u64::from(cfg.wakeup_bytes) {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    };
    if EVENTS.output::<Event>(ev, flags).is_err() {
        bump(&LOST, ev.kind);
    }
}
