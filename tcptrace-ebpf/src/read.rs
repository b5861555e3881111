//! Reading tracepoint fields and socket members at offsets learnt from
//! the running kernel. The tracepoint record is copied once per hook into
//! a per-CPU buffer (one probe-read instead of one per field: the helper
//! call is most of a field read's cost); socket members go through a
//! probe-read each, so a wrong or absent offset yields a default, never a
//! fault.

use core::{
    ffi::c_void,
    mem::{align_of, size_of},
};

use aya_ebpf::{
    EbpfContext as _, helpers::generated::bpf_probe_read_kernel, programs::TracePointContext,
};
use tcptrace_common::{
    ABSENT_OFFSET, AF_INET, AF_INET6, Config, Event, RECORD_BYTES, SockLayout, TCP_SPAN_BYTES,
    TracepointLayout, field,
};

use crate::maps::{CONFIG, RECORD, TCP_SPAN};

#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

/// One field read straight from the record, for a hook that needs just
/// one (accept's return value): no copy of the record.
#[inline(always)]
pub fn field<T>(ctx: &TracePointContext, layout: &TracepointLayout, slot: usize) -> Option<T> {
    let offset = *layout.offsets.get(slot)?;
    if offset == ABSENT_OFFSET {
        return None;
    }
    unsafe { ctx.read_at::<T>(offset as usize).ok() }
}

/// Where a syscall exit record holds `long ret` on every kernel since
/// syscall tracepoints exist (`struct syscall_trace_exit`: the 8-byte
/// `trace_entry`, `int nr`, then `ret`).
const SYSCALL_RET_OFFSET: u16 = 16;

/// A syscall exit's return value. At the usual offset it is a plain load
/// from the record (the verifier allows context loads at constant
/// offsets; a probe read costs a helper call); elsewhere a probe read.
#[inline(always)]
pub fn syscall_ret(ctx: &TracePointContext, layout: &TracepointLayout) -> Option<i64> {
    let offset = *layout.offsets.get(field::RET)?;
    if offset == SYSCALL_RET_OFFSET {
        // SAFETY: the record is at least this long (its format says so);
        // a context load at a constant, aligned offset.
        return Some(unsafe {
            ctx.as_ptr()
                .cast::<u8>()
                .add(SYSCALL_RET_OFFSET as usize)
                .cast::<i64>()
                .read()
        });
    }
    field(ctx, layout, field::RET)
}

/// A tracepoint record copied out of the kernel's trace buffer, read at
/// the offsets of its layout. Programs of the same CPU never overlap
/// (the kernel skips a nested run), so one buffer per CPU is enough.
pub struct Record<'a> {
    bytes: *const u8,
    layout: &'a TracepointLayout,
}

/// Copies the record `ctx` points to.
#[inline(always)]
pub fn record<'a>(ctx: &TracePointContext, layout: &'a TracepointLayout) -> Option<Record<'a>> {
    let buf = RECORD.get_ptr_mut(crate::emit::buffer::TRACEPOINT)?;
    // Bounded for the verifier; userspace already caps it.
    let len = if usize::from(layout.record_bytes) > RECORD_BYTES {
        RECORD_BYTES as u32
    } else {
        u32::from(layout.record_bytes)
    };
    // SAFETY: buf is a RECORD_BYTES map value; the source is read with a
    // fault-safe helper.
    let rc = unsafe { bpf_probe_read_kernel(buf.cast::<c_void>(), len, ctx.as_ptr().cast_const()) };
    (rc == 0).then_some(Record {
        bytes: buf.cast::<u8>().cast_const(),
        layout,
    })
}

impl Record<'_> {
    /// The field in `slot`, if this kernel's record has it.
    #[inline(always)]
    pub fn field<T: Copy>(&self, slot: usize) -> Option<T> {
        self.at(self.offset(slot)?)
    }

    #[inline(always)]
    fn offset(&self, slot: usize) -> Option<usize> {
        let offset = *self.layout.offsets.get(slot)?;
        (offset != ABSENT_OFFSET).then_some(offset as usize)
    }

    /// A `T` at byte `offset`. Scalar fields of a trace record are
    /// naturally aligned; anything else reads as absent.
    #[inline(always)]
    fn at<T: Copy>(&self, offset: usize) -> Option<T> {
        const { assert!(size_of::<T>() <= 16) };
        let offset = in_buffer(offset);
        if offset % align_of::<T>() != 0 {
            return None;
        }
        // SAFETY: offset < RECORD_BYTES and size_of::<T>() <= 16, inside
        // the 2 * RECORD_BYTES buffer; aligned (checked above).
        Some(unsafe { self.bytes.add(offset).cast::<T>().read() })
    }

    /// Copies the address at `offset` into `dst`: 4 bytes (IPv4) or 16
    /// (IPv6). `dst` starts zeroed, so an IPv4 address is zero-padded.
    #[inline(always)]
    fn copy_addr(&self, offset: usize, v6: bool, dst: &mut [u8; 16]) {
        let offset = in_buffer(offset);
        let len = if v6 { 16 } else { 4 };
        // Byte copies (addresses in a record are byte arrays, maybe
        // unaligned) with a fixed bound, so LLVM unrolls the loop instead
        // of calling memcpy.
        for i in 0..16 {
            if i < len {
                // SAFETY: offset < RECORD_BYTES, so offset + 16 is inside
                // the 2 * RECORD_BYTES buffer.
                dst[i] = unsafe { *self.bytes.add(offset + i) };
            }
        }
    }

    /// Family, ports and addresses into a blank event, from either layout.
    #[inline(always)]
    pub fn endpoints_into(&self, ev: &mut Event) -> Option<()> {
        if self.layout.sockaddr_style != 0 {
            // `saddr`/`daddr` hold sockaddr_in / sockaddr_in6 images:
            // family at 0, port (network order) at 2, IPv4 at 4, IPv6 at 8.
            let s = self.offset(field::SADDR)?;
            let d = self.offset(field::DADDR)?;
            let family: u16 = self.at(s)?;
            let v6 = family == AF_INET6;
            let at = if v6 { 8 } else { 4 };
            ev.family = family as u8;
            ev.sport = u16::from_be(self.at(s + 2)?);
            ev.dport = u16::from_be(self.at(d + 2)?);
            self.copy_addr(s + at, v6, &mut ev.saddr);
            self.copy_addr(d + at, v6, &mut ev.daddr);
            return Some(());
        }
        let family: u16 = self.field(field::FAMILY)?;
        let v6 = family == AF_INET6;
        let (s, d) = if v6 {
            (self.offset(field::SADDR_V6)?, self.offset(field::DADDR_V6)?)
        } else {
            (self.offset(field::SADDR)?, self.offset(field::DADDR)?)
        };
        ev.family = family as u8;
        ev.sport = self.field(field::SPORT).unwrap_or(0);
        ev.dport = self.field(field::DPORT).unwrap_or(0);
        self.copy_addr(s, v6, &mut ev.saddr);
        self.copy_addr(d, v6, &mut ev.daddr);
        Some(())
    }
}

/// `offset` masked below `RECORD_BYTES`, a bound the verifier can see
/// (userspace never hands out a larger one). Reads of up to 16 bytes from
/// there stay inside the per-CPU buffer, which is twice `RECORD_BYTES`.
#[inline(always)]
fn in_buffer(offset: usize) -> usize {
    offset & (RECORD_BYTES - 1)
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

/// Network namespace inode of a socket (0: unknown).
#[inline(always)]
pub fn netns(sock: &SockLayout, sk: u64) -> u32 {
    let net: u64 = member_or(sk, sock.skc_net, 0);
    member_or(net, sock.net_inum, 0)
}

/// Network namespace inode of the device a packet is on (0: unknown):
/// where a packet no socket owns was handled (a router forwarding it, an
/// RST answering it).
#[inline(always)]
pub fn skb_netns(cfg: &Config, skb: u64) -> u32 {
    let dev: u64 = member_or(skb, cfg.skb.dev, 0);
    let net: u64 = member_or(dev, cfg.skb.dev_net, 0);
    member_or(net, cfg.sock.net_inum, 0)
}

/// Copies `len` bytes of kernel memory at `addr` to `dst`; false if the
/// read failed (`dst` is then zeroed by the helper).
#[inline(always)]
pub fn bytes_into(addr: u64, dst: *mut u8, len: u32) -> bool {
    // SAFETY: the caller hands a writable buffer of at least `len` bytes;
    // the source is read with the fault-safe helper.
    unsafe { bpf_probe_read_kernel(dst.cast::<c_void>(), len, addr as *const c_void) == 0 }
}

/// Family, ports and addresses of a socket, from its `sock_common`, in
/// the tracepoints' convention (local = s, remote = d). None for a
/// socket that is neither IPv4 nor IPv6, or without BTF offsets.
#[inline(always)]
pub fn sock_endpoints(sock: &SockLayout, sk: u64, ev: &mut Event) -> Option<()> {
    let family: u16 = member_or(sk, sock.skc_family, 0);
    let v6 = family == AF_INET6;
    if !v6 && family != AF_INET {
        return None;
    }
    ev.family = family as u8;
    ev.sport = if sock.inet_sport != ABSENT_OFFSET {
        u16::from_be(member_or(sk, sock.inet_sport, 0))
    } else {
        member_or(sk, sock.skc_num, 0)
    };
    ev.dport = u16::from_be(member_or(sk, sock.skc_dport, 0));
    let (s, d, len) = if v6 {
        (sock.skc_v6_rcv_saddr, sock.skc_v6_daddr, 16)
    } else {
        (sock.skc_rcv_saddr, sock.skc_daddr, 4)
    };
    if s == ABSENT_OFFSET || d == ABSENT_OFFSET {
        return None;
    }
    bytes_into(sk + u64::from(s), ev.saddr.as_mut_ptr(), len);
    bytes_into(sk + u64::from(d), ev.daddr.as_mut_ptr(), len);
    Some(())
}

/// The start of a socket (`struct sock_common`, `SockLayout::head_bytes`
/// of it: family, ports, addresses, state, namespace) copied in one probe
/// read into the CPU's record buffer, which a raw tracepoint has no
/// formatted record to put in.
pub struct SockHead {
    bytes: *const u8,
}

/// Copies the head of `sk`; None when the layout has no head (the state
/// hook is then the formatted tracepoint) or the read failed.
#[inline(always)]
pub fn sock_head(sock: &SockLayout, sk: u64) -> Option<SockHead> {
    let len = u32::from(sock.head_bytes);
    if sk == 0 || len == 0 {
        return None;
    }
    let buf = RECORD.get_ptr_mut(crate::emit::buffer::STATE)?;
    // Bounded for the verifier; userspace already caps it.
    let len = if len > RECORD_BYTES as u32 {
        RECORD_BYTES as u32
    } else {
        len
    };
    bytes_into(sk, buf.cast::<u8>(), len).then_some(SockHead {
        bytes: buf.cast::<u8>().cast_const(),
    })
}

impl SockHead {
    /// The member at `offset` (inside the head, naturally aligned:
    /// `SockLayout::with_head` checked both).
    #[inline(always)]
    fn at<T: Copy>(&self, offset: u16) -> T {
        const { assert!(size_of::<T>() <= 16) };
        // SAFETY: masked below RECORD_BYTES, and the buffer is twice that.
        unsafe {
            self.bytes
                .add(in_buffer(usize::from(offset)))
                .cast::<T>()
                .read()
        }
    }

    /// Network namespace inode of the socket (0: unknown).
    #[inline(always)]
    pub fn netns(&self, sock: &SockLayout) -> u32 {
        member_or(self.at::<u64>(sock.skc_net), sock.net_inum, 0)
    }

    /// Family, ports and addresses into a blank event, as the formatted
    /// tracepoint has them (local = s, remote = d). The local port is
    /// `inet_sport`, read apart: `skc_num` is zeroed when a closing
    /// socket is unhashed, before its last state change is reported.
    #[inline(always)]
    pub fn endpoints_into(&self, sock: &SockLayout, sk: u64, ev: &mut Event) -> Option<()> {
        let family: u16 = self.at(sock.skc_family);
        let v6 = family == AF_INET6;
        if !v6 && family != AF_INET {
            return None;
        }
        ev.family = family as u8;
        ev.sport = u16::from_be(member_or(sk, sock.inet_sport, 0));
        ev.dport = u16::from_be(self.at(sock.skc_dport));
        let (s, d) = if v6 {
            (sock.skc_v6_rcv_saddr, sock.skc_v6_daddr)
        } else {
            (sock.skc_rcv_saddr, sock.skc_daddr)
        };
        self.copy_addr(s, v6, &mut ev.saddr);
        self.copy_addr(d, v6, &mut ev.daddr);
        Some(())
    }

    /// Copies the address at `offset`: 4 bytes (IPv4) or 16 (IPv6) into a
    /// zeroed `dst`, as `Record::copy_addr` does.
    #[inline(always)]
    fn copy_addr(&self, offset: u16, v6: bool, dst: &mut [u8; 16]) {
        let offset = in_buffer(usize::from(offset));
        let len = if v6 { 16 } else { 4 };
        for i in 0..16 {
            if i < len {
                // SAFETY: offset < RECORD_BYTES, so offset + 16 is inside
                // the 2 * RECORD_BYTES buffer.
                dst[i] = unsafe { *self.bytes.add(offset + i) };
            }
        }
    }
}

/// The `tcp_sock` members a reset reads (`SockLayout::tcp_span_members`:
/// idle times, queue sequence numbers), copied in one probe read when
/// userspace found them within `TCP_SPAN_BYTES` of each other (6.8+,
/// where `tcp_sock` is grouped by cache line), else read one by one.
pub struct TcpSpan<'a> {
    sock: &'a SockLayout,
    sk: u64,
    /// The CPU's `TCP_SPAN` buffer, holding the span; null when the
    /// members are read one by one.
    bytes: *const u8,
}

/// Copies the span of `sk` (a full TCP socket) the members lie in.
#[inline(always)]
pub fn tcp_span(sock: &SockLayout, sk: u64, buffer: u32) -> TcpSpan<'_> {
    let mut span = TcpSpan {
        sock,
        sk,
        bytes: core::ptr::null(),
    };
    let len = u32::from(sock.tcp_span_bytes);
    if sk == 0 || len == 0 {
        return span;
    }
    let Some(buf) = TCP_SPAN.get_ptr_mut(buffer) else {
        return span;
    };
    // Bounded for the verifier; userspace already caps it.
    let len = if len > TCP_SPAN_BYTES as u32 {
        TCP_SPAN_BYTES as u32
    } else {
        len
    };
    let from = sk + u64::from(sock.tcp_span_start);
    if bytes_into(from, buf.cast::<u8>(), len) {
        span.bytes = buf.cast::<u8>().cast_const();
    }
    span
}

impl TcpSpan<'_> {
    /// False for a null socket: every member is unknown.
    #[inline(always)]
    pub fn has_socket(&self) -> bool {
        self.sk != 0
    }

    /// The u32 member at `offset` of the socket, or `default` when the
    /// offset is unknown or the read failed.
    #[inline(always)]
    pub fn u32_or(&self, offset: u16, default: u32) -> u32 {
        if self.sk == 0 || offset == ABSENT_OFFSET {
            return default;
        }
        if !self.bytes.is_null() {
            let at = usize::from(offset.wrapping_sub(self.sock.tcp_span_start));
            if at + 4 <= usize::from(self.sock.tcp_span_bytes) && at % 4 == 0 {
                // SAFETY: masked below TCP_SPAN_BYTES, and the buffer is 8
                // bytes longer; 4-aligned (the buffer is 8-aligned).
                return unsafe {
                    self.bytes
                        .add(at & (TCP_SPAN_BYTES - 1))
                        .cast::<u32>()
                        .read()
                };
            }
        }
        member_or(self.sk, offset, default)
    }
}
