//! Who owns a socket. Captured only where the owner is really running
//! (connect, listen, accept); everywhere else it is looked up.

use core::mem::MaybeUninit;

use aya_ebpf::helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, generated};
use tcptrace_common::{
    ABSENT_OFFSET, ConnKey, Event, ListenKey, Owner, SockInfo, SockLayout, opened_by,
};

use crate::{
    maps::{LISTENERS, PREEXISTING, SOCKS},
    read,
};

/// The task running now, named after its process (the main thread's
/// comm). Only meaningful in process context.
#[inline(always)]
pub fn current() -> Owner {
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut owner = MaybeUninit::<Owner>::uninit();
    let ptr = owner.as_mut_ptr();
    // SAFETY: every field is written before `assume_init`; the probe read
    // and the helper each fill all 16 comm bytes (NUL-padded, or zeroed on
    // failure), so comm needs no zeroing first (which LLVM makes a
    // byte-loop memset call).
    unsafe {
        (*ptr).tgid = (pid_tgid >> 32) as u32;
        (*ptr).pid = pid_tgid as u32;
        (*ptr).cgroup_id = bpf_get_current_cgroup_id();
        let comm = (*ptr).comm.as_mut_ptr();
        if !process_comm(comm) {
            generated::bpf_get_current_comm(comm.cast(), 16);
        }
        owner.assume_init()
    }
}

/// Copies the running process's name (`current->group_leader->comm`) to
/// `dst` (16 bytes); false without the offsets or when a read failed.
#[inline(always)]
fn process_comm(dst: *mut u8) -> bool {
    let Some(cfg) = read::config() else {
        return false;
    };
    let task = &cfg.task;
    if task.group_leader == ABSENT_OFFSET || task.comm == ABSENT_OFFSET {
        return false;
    }
    // SAFETY: a helper without arguments.
    let me = unsafe { generated::bpf_get_current_task() };
    let leader: u64 = read::member_or(me, task.group_leader, 0);
    leader != 0 && read::bytes_into(leader + u64::from(task.comm), dst, 16)
}

/// The socket's entry in SOCKS, null when it has none. A raw pointer,
/// not an `Option`: see `state.rs` on what the verifier makes of those.
#[inline(always)]
pub fn entry(sk: u64) -> *mut SockInfo {
    if sk == 0 {
        return core::ptr::null_mut();
    }
    SOCKS.get_ptr_mut(sk).unwrap_or(core::ptr::null_mut())
}

/// `entry` (maybe null) when it is the entry of the socket it was looked
/// up for, whose namespace is `netns` and remote port `peer_port`; null
/// when it was made for another socket.
///
/// Entries are keyed by the socket's address and nothing deletes them
/// when a socket is freed: the next socket at that address overwrites
/// the entry when it opens. Under churn some sockets reach their resets
/// and errors with no transition of theirs recorded (measured on 6.18:
/// hundreds in 12 s, far more than the kernel's `recursion_misses`; the
/// cause is not pinned down), and find a freed socket's entry, possibly
/// from another namespace: their events were charged to that socket's
/// namespace and owner. A mismatch in namespace or remote port tells
/// them apart; the entry is then left alone (unknown owner) until the
/// socket's own opening or the preexisting table overwrites it.
#[inline(always)]
pub fn checked(entry: *mut SockInfo, netns: u32, peer_port: u16) -> *mut SockInfo {
    if entry.is_null() || is_own(entry, netns, peer_port) {
        entry
    } else {
        core::ptr::null_mut()
    }
}

/// Whether the entry `entry` (not null) was made for a socket of
/// namespace `netns` and remote port `peer_port` (see `checked`).
#[inline(always)]
pub fn is_own(entry: *const SockInfo, netns: u32, peer_port: u16) -> bool {
    // SAFETY: a valid map value pointer from a lookup (or a stack copy).
    let (known_netns, known_port) = unsafe { ((*entry).netns, (*entry).peer_port) };
    known_netns == netns && (known_port == 0 || known_port == peer_port)
}

/// The socket's entry if it is its own (see `checked`), else null. `ev`
/// holds the socket's namespace and addresses.
#[inline(always)]
pub fn own_entry(sk: u64, ev: &Event) -> *mut SockInfo {
    checked(entry(sk), ev.netns, ev.dport)
}

/// The entry `entry` points to, or zeros (owner unknown, times unknown).
#[inline(always)]
pub fn info(entry: *const SockInfo) -> SockInfo {
    if entry.is_null() {
        return SockInfo::default();
    }
    // SAFETY: a valid map value pointer from a lookup.
    unsafe { copied(entry) }
}

/// A copy of `*value` made of 8-byte loads. A plain `*value` copies
/// byte by byte here (`comm` is a byte array, so LLVM splits the struct
/// into bytes, or calls aya-ebpf's byte-loop memmove): 56 loads and
/// stores for a `SockInfo` on every lookup.
///
/// # Safety
/// `value` points to a readable `T`.
#[inline(always)]
pub unsafe fn copied<T: Copy>(value: *const T) -> T {
    let mut out = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: both are valid for a whole T.
    unsafe { copy_words(out.as_mut_ptr(), value) };
    // SAFETY: every byte was written.
    unsafe { out.assume_init() }
}

/// `*dst = *src` with 8-byte loads and stores (see `copied`); volatile
/// so LLVM cannot merge them back into a byte-loop memcpy call.
///
/// # Safety
/// Both point to a valid `T`; `dst` is writable.
#[inline(always)]
pub unsafe fn copy_words<T: Copy>(dst: *mut T, src: *const T) {
    const {
        assert!(size_of::<T>().is_multiple_of(8) && align_of::<T>() >= 8);
    };
    let (dst, src) = (dst.cast::<u64>(), src.cast::<u64>());
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: word i lies inside both values (size checked above).
        unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
    }
}

/// The socket's own entry (see `checked`); for a socket the programs
/// never saw open, the owner userspace found for its addresses at
/// start-up (copied into SOCKS so the next event finds it directly).
/// `ev` holds the socket's namespace and addresses.
#[inline(always)]
pub fn sock_info_or_preexisting(sk: u64, ev: &Event) -> SockInfo {
    info_or_preexisting(sk, own_entry(sk, ev), ev)
}

/// `sock_info_or_preexisting` for a socket already looked up (`entry`,
/// its own or null: see `checked`).
#[inline(always)]
pub fn info_or_preexisting(sk: u64, entry: *const SockInfo, ev: &Event) -> SockInfo {
    let info = info(entry);
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
                owner: unsafe { copied(owner) },
                netns: ev.netns,
                peer_port: ev.dport,
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
    let found = entry(sk);
    let entry = checked(found, ev.netns, ev.dport);
    if !entry.is_null() {
        // SAFETY: a valid map value pointer from the lookup.
        unsafe {
            if (*entry).reuse_mark == mark {
                return SockInfo::default();
            }
            (*entry).reuse_mark = mark;
            if (*entry).owner.tgid == 0 {
                copy_words(&mut (*entry).owner, &current());
            }
            return copied(entry);
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
        Some(owner) => unsafe { copied(owner) },
        None => current(),
    };
    let info = SockInfo {
        owner,
        syn_sent_ns: 0,
        established_ns: 0,
        reuse_mark: mark,
        last_send_jiffies: 0,
        netns: ev.netns,
        peer_port: ev.dport,
        _pad: 0,
    };
    if found.is_null() {
        insert(sk, &info);
    } else {
        // A freed socket's entry: this socket's replaces it.
        // SAFETY: a valid map value pointer from the lookup.
        unsafe { copy_words(found, &info) };
    }
    info
}

/// Records a send at `stamp` (never 0) and returns the socket's entry
/// as it was before, its `last_send_jiffies` 0 when no send was seen. A
/// socket the programs never saw gets an entry owned by the task sending
/// now (sendmsg runs in the owner's process context). The entry found is
/// not checked (see `checked`): the caller does, for the rare send that
/// makes an event.
#[inline(always)]
pub fn swap_last_send(sock: &SockLayout, sk: u64, stamp: u32) -> SockInfo {
    if let Some(entry) = SOCKS.get_ptr_mut(&sk) {
        // SAFETY: a valid map value pointer from the lookup.
        unsafe {
            let mut before = copied(entry);
            if before.owner.tgid == 0 {
                before.owner = current();
                copy_words(&mut (*entry).owner, &before.owner);
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
        netns: read::netns(sock, sk),
        peer_port: peer_port(sock, sk),
        _pad: 0,
    };
    insert(sk, &info);
    SockInfo {
        last_send_jiffies: 0,
        ..info
    }
}

/// Records the ESTABLISHED time and the remote port (a passive child's
/// is set after its SYN_RECV is reported) in place (no second map
/// update) in the socket's own entry (`entry`, maybe null: see
/// `checked`) and returns the entry (zeros if unknown).
#[inline(always)]
pub fn mark_established(entry: *mut SockInfo, now: u64, peer_port: u16) -> SockInfo {
    if entry.is_null() {
        return SockInfo::default();
    }
    // SAFETY: a valid map value pointer from a lookup.
    unsafe {
        (*entry).established_ns = now;
        (*entry).peer_port = peer_port;
        copied(entry)
    }
}

/// Makes the running task the owner, in place when the socket is known.
/// An entry found is not checked (see `checked`): a freed socket's entry
/// keeps its namespace and remote port, so the events that check it
/// still refuse it, and the hot path costs no probe read.
#[inline(always)]
pub fn claim(sock: &SockLayout, sk: u64) {
    let me = current();
    match SOCKS.get_ptr_mut(&sk) {
        // SAFETY: a valid map value pointer from the lookup.
        Some(entry) => unsafe { copy_words(&mut (*entry).owner, &me) },
        None => insert(
            sk,
            &SockInfo {
                owner: me,
                netns: read::netns(sock, sk),
                peer_port: peer_port(sock, sk),
                ..SockInfo::default()
            },
        ),
    }
}

/// The remote port of `sk` in host order (0 if unknown), as events carry
/// it (`Event::dport`).
#[inline(always)]
fn peer_port(sock: &SockLayout, sk: u64) -> u16 {
    u16::from_be(read::member_or::<u16>(sk, sock.skc_dport, 0))
}

/// Makes `info` the entry of `sk`: in place when the address already has
/// one (a freed socket's address is soon reused), else a new entry. An
/// LRU update always takes a fresh node from the free list and hands the
/// old one back: the costliest step of an open, and a lookup and an
/// in-place write cost a fraction of it.
#[inline(always)]
pub fn remember(sk: u64, info: &SockInfo) {
    match SOCKS.get_ptr_mut(sk) {
        // SAFETY: a valid map value pointer from the lookup.
        Some(entry) => unsafe { copy_words(entry, info) },
        None => insert(sk, info),
    }
}

/// A new entry for `sk`, which the caller just looked up and missed.
#[inline(always)]
fn insert(sk: u64, info: &SockInfo) {
    let _ = SOCKS.insert(&sk, info, 0);
}

#[inline(always)]
pub fn listener(netns: u32, port: u16) -> Owner {
    let key = ListenKey::new(netns, port);
    match LISTENERS.get_ptr(key) {
        // SAFETY: a valid map value pointer from the lookup.
        Some(owner) => unsafe { copied(owner) },
        None => Owner::default(),
    }
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
    // SAFETY: two valid owners.
    unsafe { copy_words(&mut ev.owner, &info.owner) };
    ev.opened_by = if info.syn_sent_ns != 0 {
        opened_by::CONNECT
    } else if info.established_ns != 0 {
        opened_by::ACCEPT
    } else {
        opened_by::UNKNOWN
    };
}
