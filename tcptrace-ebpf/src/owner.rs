//! Who owns a socket. Captured only where the owner is really running
//! (connect, listen, accept); everywhere else it is looked up.

use core::mem::MaybeUninit;

use aya_ebpf::helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, generated};
use tcptrace_common::{ConnKey, Event, ListenKey, Owner, SockInfo, opened_by};

use crate::maps::{LISTENERS, PREEXISTING, SOCKS};

/// The task running now. Only meaningful in process context.
#[inline(always)]
pub fn current() -> Owner {
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut owner = MaybeUninit::<Owner>::uninit();
    let ptr = owner.as_mut_ptr();
    // SAFETY: every field is written before `assume_init`; the helper
    // fills all 16 comm bytes (NUL-padded, or zeroed on failure), so comm
    // needs no zeroing first (which LLVM makes a byte-loop memset call).
    unsafe {
        (*ptr).tgid = (pid_tgid >> 32) as u32;
        (*ptr).pid = pid_tgid as u32;
        (*ptr).cgroup_id = bpf_get_current_cgroup_id();
        generated::bpf_get_current_comm((*ptr).comm.as_mut_ptr().cast(), 16);
        owner.assume_init()
    }
}

/// The socket's entry, or zeros (owner unknown, times unknown).
#[inline(always)]
pub fn sock_info(sk: u64) -> SockInfo {
    if sk == 0 {
        return SockInfo::default();
    }
    match SOCKS.get_ptr(&sk) {
        // SAFETY: a valid map value pointer from the lookup.
        Some(entry) => unsafe { *entry },
        None => SockInfo::default(),
    }
}

/// The socket's entry; for a socket the programs never saw open, the
/// owner userspace found for its addresses at start-up (copied into
/// SOCKS so the next event finds it directly). `ev` holds the addresses.
#[inline(always)]
pub fn sock_info_or_preexisting(sk: u64, ev: &Event) -> SockInfo {
    let info = sock_info(sk);
    if info.owner.tgid != 0 || sk == 0 {
        return info;
    }
    let key = ConnKey {
        netns: ev.netns,
        sport: ev.sport,
        dport: ev.dport,
        saddr: ev.saddr,
        daddr: ev.daddr,
    };
    match PREEXISTING.get_ptr(&key) {
        Some(owner) => {
            // SAFETY: a valid map value pointer from the lookup.
            let info = SockInfo {
                owner: unsafe { *owner },
                ..info
            };
            remember(sk, &info);
            info
        }
        None => info,
    }
}

/// Marks the idle gap `mark` (never 0) of `sk` as reported and returns
/// the socket's entry; `reuse_mark == 0` in it when the gap already was
/// (the same send running the hook again for its next chunk). A socket
/// the programs never saw gets an entry: its owner from the pre-existing
/// connections, else the task sending now (sendmsg runs in process
/// context, in the owner). A plain value, not an `Option`: see
/// `state.rs` on what the verifier makes of those.
#[inline(always)]
pub fn claim_reuse(sk: u64, ev: &Event, mark: u32) -> SockInfo {
    if let Some(entry) = SOCKS.get_ptr_mut(&sk) {
        // SAFETY: a valid map value pointer from the lookup.
        unsafe {
            if (*entry).reuse_mark == mark {
                return SockInfo::default();
            }
            (*entry).reuse_mark = mark;
            if (*entry).owner.tgid == 0 {
                (*entry).owner = current();
            }
            return *entry;
        }
    }
    let key = ConnKey {
        netns: ev.netns,
        sport: ev.sport,
        dport: ev.dport,
        saddr: ev.saddr,
        daddr: ev.daddr,
    };
    let owner = match PREEXISTING.get_ptr(&key) {
        // SAFETY: a valid map value pointer from the lookup.
        Some(owner) => unsafe { *owner },
        None => current(),
    };
    let info = SockInfo {
        owner,
        syn_sent_ns: 0,
        established_ns: 0,
        reuse_mark: mark,
        last_send_jiffies: 0,
    };
    remember(sk, &info);
    info
}

/// Records a send at `stamp` (never 0) and returns the socket's entry
/// as it was before, its `last_send_jiffies` 0 when no send was seen. A
/// socket the programs never saw gets an entry owned by the task sending
/// now (sendmsg runs in the owner's process context).
#[inline(always)]
pub fn swap_last_send(sk: u64, stamp: u32) -> SockInfo {
    if let Some(entry) = SOCKS.get_ptr_mut(&sk) {
        // SAFETY: a valid map value pointer from the lookup.
        unsafe {
            let mut before = *entry;
            if before.owner.tgid == 0 {
                before.owner = current();
                (*entry).owner = before.owner;
            }
            (*entry).last_send_jiffies = stamp;
            return before;
        }
    }
    let info = SockInfo {
        owner: current(),
        syn_sent_ns: 0,
        established_ns: 0,
        reuse_mark: 0,
        last_send_jiffies: stamp,
    };
    remember(sk, &info);
    SockInfo {
        last_send_jiffies: 0,
        ..info
    }
}

/// Records the ESTABLISHED time in place (no second map update) and
/// returns the socket's entry (zeros if unknown).
#[inline(always)]
pub fn mark_established(sk: u64, now: u64) -> SockInfo {
    match SOCKS.get_ptr_mut(&sk) {
        // SAFETY: a valid map value pointer from the lookup.
        Some(entry) => unsafe {
            (*entry).established_ns = now;
            *entry
        },
        None => SockInfo::default(),
    }
}

/// Makes the running task the owner, in place when the socket is known.
#[inline(always)]
pub fn claim(sk: u64) {
    let me = current();
    match SOCKS.get_ptr_mut(&sk) {
        // SAFETY: a valid map value pointer from the lookup.
        Some(entry) => unsafe { (*entry).owner = me },
        None => remember(
            sk,
            &SockInfo {
                owner: me,
                ..SockInfo::default()
            },
        ),
    }
}

#[inline(always)]
pub fn remember(sk: u64, info: &SockInfo) {
    let _ = SOCKS.insert(&sk, info, 0);
}

#[inline(always)]
pub fn listener(netns: u32, port: u16) -> Owner {
    let key = ListenKey::new(netns, port);
    unsafe { LISTENERS.get(&key).copied() }.unwrap_or_default()
}

#[inline(always)]
pub fn remember_listener(netns: u32, port: u16, owner: &Owner) {
    let key = ListenKey::new(netns, port);
    let _ = LISTENERS.insert(&key, owner, 0);
}

#[inline(always)]
pub fn forget_listener(netns: u32, port: u16) {
    let key = ListenKey::new(netns, port);
    let _ = LISTENERS.remove(&key);
}

/// Puts the owner of `info` (the socket's entry) and how the socket was
/// opened on `ev`.
#[inline(always)]
pub fn attribute(ev: &mut Event, info: &SockInfo) {
    ev.owner = info.owner;
    ev.opened_by = if info.syn_sent_ns != 0 {
        opened_by::CONNECT
    } else if info.established_ns != 0 {
        opened_by::ACCEPT
    } else {
        opened_by::UNKNOWN
    };
}
