//! Successful opens counted in the kernel (`Config::count_opens`): a
//! connect churn then costs a map update per connection, not a ring
//! buffer record, for the readers that only aggregate.

use tcptrace_common::{Config, Event, NO_LATENCY, OpenKey, Owner, kind, log_bucket, tcp_state};

use crate::{
    emit,
    maps::{OPENS, OPENS_FULL},
};

/// Is `ev` a successful open: a connect (SYN_SENT -> ESTABLISHED) or an
/// accepted connection (SYN_RECV -> ESTABLISHED)?
#[inline(always)]
pub fn is_open(ev: &Event) -> bool {
    ev.kind == kind::CONNECT
        || (ev.kind == kind::STATE
            && i32::from(ev.old_state) == tcp_state::SYN_RECV
            && i32::from(ev.new_state) == tcp_state::ESTABLISHED)
}

/// Counts the open `ev` (which the filters kept) in `OPENS`. False when
/// the map is full: the caller sends the event instead (counted in
/// `OPENS_FULL`), so every open is either counted here or sent.
#[inline(always)]
pub fn count(ev: &Event) -> bool {
    let passive = ev.kind != kind::CONNECT;
    let key = OpenKey {
        owner: Owner {
            tgid: ev.owner.tgid,
            pid: 0,
            cgroup_id: ev.owner.cgroup_id,
            comm: ev.owner.comm,
        },
        netns: ev.netns,
        peer_port: if passive { 0 } else { ev.dport },
        latency_bucket: if passive || ev.duration_ns == 0 {
            NO_LATENCY
        } else {
            log_bucket(ev.duration_ns)
        },
        passive: u8::from(passive),
        family: ev.family,
        _pad: [0; 6],
        peer_addr: ev.daddr,
    };
    if bump(&key) {
        return true;
    }
    // BPF_NOEXIST: another CPU may have made the key in between; then
    // this CPU's slot exists too (per-CPU values come zeroed).
    if OPENS
        .insert(&key, &1, u64::from(aya_ebpf::bindings::BPF_NOEXIST))
        .is_ok()
        || bump(&key)
    {
        return true;
    }
    emit::bump(&OPENS_FULL, 0);
    false
}

#[inline(always)]
fn bump(key: &OpenKey) -> bool {
    match OPENS.get_ptr_mut(key) {
        Some(count) => {
            // SAFETY: this CPU's value; one program at a time per CPU.
            unsafe { *count += 1 };
            true
        }
        None => false,
    }
}

/// Whether `ev` should be counted here rather than sent.
#[inline(always)]
pub fn wanted(cfg: &Config, ev: &Event) -> bool {
    cfg.count_opens != 0 && is_open(ev) && emit::selected(cfg, ev.kind) && emit::in_scope(cfg, ev)
}
