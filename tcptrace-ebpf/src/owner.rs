//! Who owns a socket. Captured only where the owner is really running
//! (connect, listen, accept); everywhere else it is looked up.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
};
use tcptrace_common::{ListenKey, Owner, SockInfo};

use crate::maps::{LISTENERS, SOCKS};

/// The task running now. Only meaningful in process context.
#[inline(always)]
pub fn current() -> Owner {
    let pid_tgid = bpf_get_current_pid_tgid();
    Owner {
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

#[inline(always)]
pub fn sock_info(sk: u64) -> Option<SockInfo> {
    if sk == 0 {
        return None;
    }
    unsafe { SOCKS.get(&sk).copied() }
}

#[inline(always)]
pub fn remember(sk: u64, info: &SockInfo) {
    let _ = SOCKS.insert(&sk, info, 0);
}

#[inline(always)]
pub fn listener(netns: u32, port: u16) -> Owner {
    let key = ListenKey {
        netns,
        port,
        _pad: 0,
    };
    unsafe { LISTENERS.get(&key).copied() }.unwrap_or_default()
}

#[inline(always)]
pub fn remember_listener(netns: u32, port: u16, owner: &Owner) {
    let key = ListenKey {
        netns,
        port,
        _pad: 0,
    };
    let _ = LISTENERS.insert(&key, owner, 0);
}

#[inline(always)]
pub fn forget_listener(netns: u32, port: u16) {
    let key = ListenKey {
        netns,
        port,
        _pad: 0,
    };
    let _ = LISTENERS.remove(&key);
}
