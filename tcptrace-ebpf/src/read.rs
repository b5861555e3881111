//! Reading tracepoint fields and socket members at offsets learnt from
//! the running kernel. Every read goes through a probe-read helper, so a
//! wrong or absent offset yields `None`, never a fault.

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{helpers::generated::bpf_probe_read_kernel, programs::TracePointContext};
use tcptrace_common::{
    ABSENT_OFFSET, AF_INET, AF_INET6, Config, SockLayout, TracepointLayout, field,
};

use crate::maps::CONFIG;

#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

#[inline(always)]
pub fn field<T>(ctx: &TracePointContext, layout: &TracepointLayout, slot: usize) -> Option<T> {
    let offset = *layout.offsets.get(slot)?;
    if offset == ABSENT_OFFSET {
        return None;
    }
    unsafe { ctx.read_at::<T>(offset as usize).ok() }
}

/// Reads a member of a kernel object at `offset`, or `default` when the
/// offset is unknown or the read fails. Values are always initialised:
/// LLVM may hoist arithmetic above an `Option` check, and the verifier
/// rejects any use of the undefined payload of a `None`.
#[inline(always)]
pub fn member_or<T: Copy>(base: u64, offset: u16, default: T) -> T {
    if base == 0 || offset == ABSENT_OFFSET {
        return default;
    }
    read_kernel_or(base + offset as u64, default)
}

/// Reads a `T` at a kernel address, or `default`.
#[inline(always)]
pub fn read_kernel_or<T: Copy>(addr: u64, default: T) -> T {
    let mut value = default;
    let rc = unsafe {
        bpf_probe_read_kernel(
            (&mut value as *mut T).cast::<c_void>(),
            size_of::<T>() as u32,
            addr as *const c_void,
        )
    };
    if rc == 0 { value } else { default }
}

/// Addresses and ports of a tracepoint record in either layout.
pub struct Endpoints {
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

#[inline(always)]
pub fn endpoints(ctx: &TracePointContext, layout: &TracepointLayout) -> Option<Endpoints> {
    if layout.sockaddr_style != 0 {
        return sockaddr_endpoints(ctx, layout);
    }
    let family: u16 = field(ctx, layout, field::FAMILY)?;
    let mut ends = Endpoints {
        family,
        sport: field(ctx, layout, field::SPORT).unwrap_or(0),
        dport: field(ctx, layout, field::DPORT).unwrap_or(0),
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET6 {
        ends.saddr = field(ctx, layout, field::SADDR_V6).unwrap_or([0; 16]);
        ends.daddr = field(ctx, layout, field::DADDR_V6).unwrap_or([0; 16]);
    } else {
        let s: [u8; 4] = field(ctx, layout, field::SADDR).unwrap_or([0; 4]);
        let d: [u8; 4] = field(ctx, layout, field::DADDR).unwrap_or([0; 4]);
        ends.saddr[..4].copy_from_slice(&s);
        ends.daddr[..4].copy_from_slice(&d);
    }
    Some(ends)
}

/// `saddr`/`daddr` hold a sockaddr_in or sockaddr_in6 image (28 bytes):
/// family at 0, port (network order) at 2, IPv4 at 4, IPv6 at 8.
#[inline(always)]
fn sockaddr_endpoints(ctx: &TracePointContext, layout: &TracepointLayout) -> Option<Endpoints> {
    let s: [u8; 28] = field(ctx, layout, field::SADDR)?;
    let d: [u8; 28] = field(ctx, layout, field::DADDR)?;
    let family = u16::from_ne_bytes([s[0], s[1]]);
    let mut ends = Endpoints {
        family,
        sport: u16::from_be_bytes([s[2], s[3]]),
        dport: u16::from_be_bytes([d[2], d[3]]),
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == AF_INET {
        ends.saddr[..4].copy_from_slice(&s[4..8]);
        ends.daddr[..4].copy_from_slice(&d[4..8]);
    } else {
        ends.saddr.copy_from_slice(&s[8..24]);
        ends.daddr.copy_from_slice(&d[8..24]);
    }
    Some(ends)
}

/// Network namespace inode of a socket (0: unknown).
#[inline(always)]
pub fn netns(sock: &SockLayout, sk: u64) -> u32 {
    let net: u64 = member_or(sk, sock.skc_net, 0);
    member_or(net, sock.net_inum, 0)
}
