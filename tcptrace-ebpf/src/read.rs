//! Reading tracepoint fields and socket members at offsets learnt from
//! the running kernel. Every read goes through a probe-read helper, so a
//! wrong or absent offset yields `None`, never a fault.

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    EbpfContext as _, helpers::generated::bpf_probe_read_kernel, programs::TracePointContext,
};
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

/// Addresses and ports of a tracepoint record in either layout. 8-byte
/// aligned so zeroing and copying it are word stores, not calls to
/// aya-ebpf's byte-at-a-time `memset`.
#[repr(C, align(8))]
pub struct Endpoints {
    /// Address bytes, held as words so zeroing them is two stores.
    saddr: [u64; 2],
    daddr: [u64; 2],
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    /// Keeps the size a multiple of 8 (whole-word zeroing).
    pub _pad: u16,
}

#[inline(always)]
pub fn endpoints(ctx: &TracePointContext, layout: &TracepointLayout) -> Option<Endpoints> {
    let mut ends = Endpoints {
        saddr: [0; 2],
        daddr: [0; 2],
        family: 0,
        sport: 0,
        dport: 0,
        _pad: 0,
    };
    if layout.sockaddr_style != 0 {
        // `saddr`/`daddr` hold sockaddr_in / sockaddr_in6 images: family
        // at 0, port (network order) at 2, IPv4 at 4, IPv6 at 8.
        let s = offset(layout, field::SADDR)?;
        let d = offset(layout, field::DADDR)?;
        ends.family = read_ctx(ctx, s)?;
        ends.sport = u16::from_be(read_ctx(ctx, s + 2)?);
        ends.dport = u16::from_be(read_ctx(ctx, d + 2)?);
        let (at, len) = if ends.family == AF_INET {
            (4, 4)
        } else {
            (8, 16)
        };
        read_ctx_into(ctx, s + at, &mut ends.saddr, len);
        read_ctx_into(ctx, d + at, &mut ends.daddr, len);
        return Some(ends);
    }
    ends.family = field(ctx, layout, field::FAMILY)?;
    ends.sport = field(ctx, layout, field::SPORT).unwrap_or(0);
    ends.dport = field(ctx, layout, field::DPORT).unwrap_or(0);
    let (s, d, len) = if ends.family == AF_INET6 {
        (
            offset(layout, field::SADDR_V6)?,
            offset(layout, field::DADDR_V6)?,
            16,
        )
    } else {
        (
            offset(layout, field::SADDR)?,
            offset(layout, field::DADDR)?,
            4,
        )
    };
    read_ctx_into(ctx, s, &mut ends.saddr, len);
    read_ctx_into(ctx, d, &mut ends.daddr, len);
    Some(ends)
}

impl Endpoints {
    #[inline(always)]
    pub fn saddr(&self) -> [u8; 16] {
        // SAFETY: [u64; 2] and [u8; 16] have the same size; any bytes are valid.
        unsafe { core::mem::transmute(self.saddr) }
    }

    #[inline(always)]
    pub fn daddr(&self) -> [u8; 16] {
        // SAFETY: as above.
        unsafe { core::mem::transmute(self.daddr) }
    }
}

#[inline(always)]
fn offset(layout: &TracepointLayout, slot: usize) -> Option<usize> {
    let offset = *layout.offsets.get(slot)?;
    (offset != ABSENT_OFFSET).then_some(offset as usize)
}

#[inline(always)]
fn read_ctx<T>(ctx: &TracePointContext, offset: usize) -> Option<T> {
    unsafe { ctx.read_at::<T>(offset).ok() }
}

/// Reads `len` (4 or 16) bytes of the record straight into `dst` (left
/// zero if the read fails).
#[inline(always)]
fn read_ctx_into(ctx: &TracePointContext, offset: usize, dst: &mut [u64; 2], len: u32) {
    // SAFETY: dst has room for 16 >= len bytes; the source is read with
    // a fault-safe helper.
    unsafe {
        bpf_probe_read_kernel(
            dst.as_mut_ptr().cast::<c_void>(),
            len,
            ctx.as_ptr().add(offset).cast_const(),
        )
    };
}

/// Network namespace inode of a socket (0: unknown).
#[inline(always)]
pub fn netns(sock: &SockLayout, sk: u64) -> u32 {
    let net: u64 = member_or(sk, sock.skc_net, 0);
    member_or(net, sock.net_inum, 0)
}
