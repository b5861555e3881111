//! TC programs (clsact or TCX, ingress and egress) on the interfaces of
//! the traced namespace. Per connection they keep what the peer's own
//! segments look like (TTL / hop limit, IPv4 ID, timestamp option,
//! sequence numbers) and the last RST that arrived, in `PEERS`, for the
//! reset program to hand on with the `RST_RECEIVED` event: the RST's
//! facts next to the peer's tell who really sent it. With `trace --pcap`
//! they also keep the last packets of every connection (`FLIGHT`).
//!
//! They never change a packet or its fate: every packet goes on to the
//! next program or filter (`TC_ACT_UNSPEC`, which TCX reads as
//! `TCX_NEXT`), so other TC users (Cilium, ...) see it as before.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    helpers::{bpf_ktime_get_ns, generated::bpf_skb_load_bytes},
    macros::classifier,
    programs::TcContext,
};
use tcptrace_common::{
    AF_INET, AF_INET6, Config, ETH_P_IP, ETH_P_IPV6, FLIGHT_HEADER_BYTES, FLIGHT_PACKETS,
    FLIGHT_PAYLOAD_BYTES, FlowKey, IP_ID_STEP_MAX, PEER_PROFILE_SIZE, PeerProfile, RstSeen,
    flight_direction, profile_known, rst_options,
};

use crate::{
    maps::{FLIGHT, FLIGHT_EMPTY, FLIGHT_PAYLOAD, FLIGHT_PAYLOAD_EMPTY, PEERS, TC_SCRATCH},
    read,
};

/// The programs are attached only to devices with an Ethernet header
/// (Ethernet, veth, bridges, loopback): the IP header follows it.
const ETH_HLEN: u32 = 14;
const IPPROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
/// TCP option kinds (RFC 9293, RFC 7323).
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_TIMESTAMP: u8 = 8;
/// Options examined before giving up (40 option bytes hold at most 10
/// non-NOP options; a run of NOPs longer than that is not a real stack's).
const MAX_OPTIONS: usize = 12;

#[classifier]
pub fn tcptrace_tc_ingress(ctx: TcContext) -> i32 {
    let _ = handle(&ctx, true);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn tcptrace_tc_egress(ctx: TcContext) -> i32 {
    let _ = handle(&ctx, false);
    TC_ACT_UNSPEC
}

/// A TCP segment's headers, parsed.
struct Segment {
    key: FlowKey,
    /// IP header and TCP header (with options) lengths in bytes.
    ip_header_len: u32,
    tcp_header_len: u32,
    /// The IP packet's length, and the TCP payload's.
    wire_len: u32,
    payload_len: u32,
    seq: u32,
    ack: u32,
    tsval: u32,
    tsecr: u32,
    flow_label: u32,
    ip_id: u16,
    ttl: u8,
    flags: u8,
    has_timestamp: bool,
    v6: bool,
}

#[inline(always)]
fn handle(ctx: &TcContext, ingress: bool) -> Option<()> {
    let cfg = read::config()?;
    let seg = parse(ctx, ingress)?;
    if cfg.filter_port != 0
        && seg.key.local_port != cfg.filter_port
        && seg.key.remote_port != cfg.filter_port
    {
        return None;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if ingress {
        peer_segment(&seg, now);
    } else {
        our_segment(&seg);
    }
    if cfg.flight != 0 {
        record(ctx, cfg, &seg, now, ingress);
    }
    Some(())
}

/// `len` if it is 1 to `max`, in a form whose bounds the verifier sees
/// on the very register handed to `bpf_skb_load_bytes` (it must be
/// provably 1 to the room left): `((len - 1) & mask) + 1`, with `mask + 1`
/// a power of two at least `max` and at most the room. It equals `len`;
/// LLVM would fold it to `len` (and test a copy of the register) if it
/// still knew the range, so a volatile read makes it forget.
#[inline(always)]
fn bounded(len: u32, max: u32, mask: u32) -> Option<u32> {
    if len == 0 || len > max {
        return None;
    }
    let len = unsafe { core::ptr::read_volatile(&len) };
    Some((len.wrapping_sub(1) & mask) + 1)
}

/// Copies `len` bytes of the packet at `offset` to `dst`; false if the
/// packet is shorter.
#[inline(always)]
fn load(ctx: &TcContext, offset: u32, dst: *mut u8, len: u32) -> bool {
    // SAFETY: the caller hands a writable buffer of at least `len` bytes.
    unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const c_void,
            offset,
            dst.cast::<c_void>(),
            len,
        ) == 0
    }
}

#[inline(always)]
fn be16(bytes: *const u8, at: usize) -> u16 {
    // SAFETY: the callers index inside their buffers.
    unsafe { (u16::from(*bytes.add(at)) << 8) | u16::from(*bytes.add(at + 1)) }
}

#[inline(always)]
fn be32(bytes: *const u8, at: usize) -> u32 {
    (u32::from(be16(bytes, at)) << 16) | u32::from(be16(bytes, at + 2))
}

/// The IP and TCP headers of a first (or only) fragment of a TCP
/// segment, keyed with this host's end first: the destination of a
/// packet received, the source of one sent.
#[inline(always)]
fn parse(ctx: &TcContext, ingress: bool) -> Option<Segment> {
    // SAFETY: the context's own `__sk_buff`.
    let protocol = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    let v6 = if protocol == ETH_P_IP {
        false
    } else if protocol == ETH_P_IPV6 {
        true
    } else {
        return None;
    };
    // Words, not bytes: zeroing is then a few stores, not a memset call.
    let mut ip = [0u64; 5];
    let ip_bytes = ip.as_mut_ptr().cast::<u8>();
    if !load(ctx, ETH_HLEN, ip_bytes, if v6 { 40 } else { 20 }) {
        return None;
    }
    // SAFETY: indices below are inside the 40-byte buffer.
    let byte = |i: usize| unsafe { *ip_bytes.add(i) };
    let mut seg = Segment {
        key: FlowKey::default(),
        ip_header_len: 0,
        tcp_header_len: 0,
        wire_len: 0,
        payload_len: 0,
        seq: 0,
        ack: 0,
        tsval: 0,
        tsecr: 0,
        flow_label: 0,
        ip_id: 0,
        ttl: 0,
        flags: 0,
        has_timestamp: false,
        v6,
    };
    let (src, dst, addr_len) = if v6 {
        if byte(0) >> 4 != 6 || byte(6) != IPPROTO_TCP {
            return None;
        }
        seg.ip_header_len = 40;
        seg.wire_len = 40 + u32::from(be16(ip_bytes, 4));
        seg.ttl = byte(7);
        seg.flow_label =
            (u32::from(byte(1) & 0x0f) << 16) | (u32::from(byte(2)) << 8) | u32::from(byte(3));
        seg.key.family = AF_INET6 as u8;
        (8usize, 24usize, 16usize)
    } else {
        let ihl = u32::from(byte(0) & 0x0f) * 4;
        let fragment_offset = be16(ip_bytes, 6) & 0x1fff;
        if byte(0) >> 4 != 4 || ihl < 20 || byte(9) != IPPROTO_TCP || fragment_offset != 0 {
            return None;
        }
        seg.ip_header_len = ihl;
        seg.wire_len = u32::from(be16(ip_bytes, 2));
        seg.ip_id = be16(ip_bytes, 4);
        seg.ttl = byte(8);
        seg.key.family = AF_INET as u8;
        (12, 16, 4)
    };
    let (local, remote) = if ingress { (dst, src) } else { (src, dst) };
    // Fixed bounds so LLVM unrolls instead of calling memcpy.
    for i in 0..16 {
        if i < addr_len {
            seg.key.local_addr[i] = byte(local + i);
            seg.key.remote_addr[i] = byte(remote + i);
        }
    }

    // The TCP header with its options, in a per-CPU buffer whose offsets
    // the verifier can bound (options are read at variable offsets).
    let tcp = TC_SCRATCH.get_ptr_mut(0)?.cast::<u8>();
    let l4 = ETH_HLEN + seg.ip_header_len;
    if !load(ctx, l4, tcp, 20) {
        return None;
    }
    let at = |i: usize| unsafe { *tcp.add(i & 127) };
    let sport = be16(tcp, 0);
    let dport = be16(tcp, 2);
    (seg.key.local_port, seg.key.remote_port) = if ingress {
        (dport, sport)
    } else {
        (sport, dport)
    };
    seg.seq = be32(tcp, 4);
    seg.ack = be32(tcp, 8);
    seg.flags = at(13);
    let doff = u32::from(at(12) >> 4) * 4;
    if doff < 20 {
        return None;
    }
    seg.tcp_header_len = doff;
    // The scratch buffer has 108 bytes of room after the fixed header.
    if let Some(options) = bounded(doff - 20, 40, 63)
        && load(ctx, l4 + 20, unsafe { tcp.add(20) }, options)
    {
        timestamp_option(tcp, options as usize, &mut seg);
    }
    let headers = seg.ip_header_len + doff;
    seg.payload_len = if seg.wire_len > headers {
        seg.wire_len - headers
    } else {
        0
    };
    Some(seg)
}

/// Finds the timestamp option among the `len` option bytes that follow
/// the fixed TCP header in `tcp`. A function of its own: unrolled into
/// its callers, the loop's temporaries overflow the 512-byte stack.
#[inline(never)]
fn timestamp_option(tcp: *const u8, len: usize, seg: &mut Segment) {
    // SAFETY: masked inside the 128-byte scratch buffer.
    let at = |i: usize| unsafe { *tcp.add(i & 127) };
    let mut i = 0usize;
    for _ in 0..MAX_OPTIONS {
        if i >= len {
            return;
        }
        // `i` < `len` <= 40 here, so the mask keeps it; the volatile read
        // stops LLVM from dropping the mask, which 6.1's verifier needs:
        // it walks this loop on contradictory bounds (umin > umax) and
        // would find `i` past the scratch buffer.
        i = unsafe { core::ptr::read_volatile(&i) } & 63;
        let kind = at(20 + i);
        if kind == TCPOPT_EOL {
            return;
        }
        if kind == TCPOPT_NOP {
            i += 1;
            continue;
        }
        if i + 1 >= len {
            return;
        }
        let size = usize::from(at(20 + i + 1));
        if kind == TCPOPT_TIMESTAMP && size == 10 && i + 10 <= len {
            // A fresh bounded offset: on 6.12 the verifier loses the
            // pointer when `i`'s copies are linked scalars (tcp + i
            // becomes a scalar), on 6.18 it does not. The volatile read
            // makes LLVM hand it a plain value masked below 64.
            let i = unsafe { core::ptr::read_volatile(&i) } & 63;
            let word = |from: usize| {
                (u32::from(at(from)) << 24)
                    | (u32::from(at(from + 1)) << 16)
                    | (u32::from(at(from + 2)) << 8)
                    | u32::from(at(from + 3))
            };
            seg.tsval = word(20 + i + 2);
            seg.tsecr = word(20 + i + 6);
            seg.has_timestamp = true;
            return;
        }
        if size < 2 {
            return;
        }
        i += size;
    }
}

/// The connection's profile, a fresh one if it has none or if `fresh`
/// (a SYN opens the 4-tuple again: what was kept is another connection's).
#[inline(always)]
fn profile(key: &FlowKey, fresh: bool) -> Option<&'static mut PeerProfile> {
    if !fresh && let Some(p) = PEERS.get_ptr_mut(key) {
        // SAFETY: a map value; concurrent writers only race on figures.
        return Some(unsafe { &mut *p });
    }
    // Words: LLVM zeroes them with stores (a struct would be a memset call).
    let zero = [0u64; PEER_PROFILE_SIZE / 8];
    // SAFETY: PeerProfile is plain integers, all-zero valid, 8-aligned.
    let empty = unsafe { &*zero.as_ptr().cast::<PeerProfile>() };
    PEERS.insert(key, empty, 0).ok()?;
    // SAFETY: as above.
    PEERS.get_ptr_mut(key).map(|p| unsafe { &mut *p })
}

/// A segment from the peer: into its profile; an RST is kept apart.
#[inline(always)]
fn peer_segment(seg: &Segment, now: u64) {
    if seg.flags & TCP_RST != 0 {
        let Some(p) = profile(&seg.key, false) else {
            return;
        };
        p.rst = RstSeen {
            ts_ns: now,
            seq: seg.seq,
            ack: seg.ack,
            tsval: seg.tsval,
            tsecr: seg.tsecr,
            flow_label: seg.flow_label,
            ip_id: seg.ip_id,
            ttl: seg.ttl,
            tcp_flags: seg.flags,
            options: if seg.has_timestamp {
                rst_options::TIMESTAMP
            } else {
                0
            },
            _pad: [0; 7],
        };
        return;
    }
    let opening = seg.flags & TCP_SYN != 0 && seg.flags & TCP_ACK == 0;
    let Some(p) = profile(&seg.key, opening) else {
        return;
    };
    p.segments += 1;
    if p.segments == 1 {
        p.ttl_min = seg.ttl;
        p.ttl_max = seg.ttl;
    } else {
        if seg.ttl < p.ttl_min {
            p.ttl_min = seg.ttl;
        }
        if seg.ttl > p.ttl_max {
            p.ttl_max = seg.ttl;
        }
    }
    p.ttl_last = seg.ttl;
    if seg.has_timestamp {
        p.ts_segments += 1;
        p.last_tsval = seg.tsval;
    }
    if seg.v6 {
        p.flow_label = seg.flow_label;
        p.known |= profile_known::V6;
    } else {
        // A SYN-ACK comes from the request socket (ID 0 with DF on
        // Linux), the connection's counter starts after it.
        let syn = seg.flags & TCP_SYN != 0;
        if p.segments > 1 && !syn && p.known & profile_known::LAST_WAS_SYN == 0 {
            p.ip_id_pairs += 1;
            let step = seg.ip_id.wrapping_sub(p.last_ip_id);
            if step >= 1 && step <= IP_ID_STEP_MAX {
                p.ip_id_steps += 1;
            }
        }
        if syn {
            p.known |= profile_known::LAST_WAS_SYN;
        } else {
            p.known &= !profile_known::LAST_WAS_SYN;
        }
        if seg.ip_id == 0 {
            p.ip_id_zero += 1;
        }
        p.last_ip_id = seg.ip_id;
    }
    p.next_seq = next_seq(seg);
    p.known |= profile_known::PEER_SEQ;
    p.last_ns = now;
}

/// A segment we sent: our next sequence number, what an RST from the
/// peer acknowledges. Only for connections the peer was seen on, or
/// that we open now.
#[inline(always)]
fn our_segment(seg: &Segment) {
    if seg.flags & TCP_RST != 0 {
        return;
    }
    let opening = seg.flags & TCP_SYN != 0 && seg.flags & TCP_ACK == 0;
    let p = if opening {
        profile(&seg.key, true)
    } else {
        // SAFETY: a map value; concurrent writers only race on figures.
        PEERS.get_ptr_mut(&seg.key).map(|p| unsafe { &mut *p })
    };
    let Some(p) = p else { return };
    let next = next_seq(seg);
    // Retransmissions must not move it back.
    if p.known & profile_known::OUR_SEQ == 0 || (next.wrapping_sub(p.our_next_seq) as i32) > 0 {
        p.our_next_seq = next;
        p.known |= profile_known::OUR_SEQ;
    }
}

/// The sender's sequence number after this segment.
#[inline(always)]
fn next_seq(seg: &Segment) -> u32 {
    let mut next = seg.seq.wrapping_add(seg.payload_len);
    if seg.flags & (TCP_SYN | TCP_FIN) != 0 {
        next = next.wrapping_add(1);
    }
    next
}

/// The flight recorder: this packet into its connection's ring. Two
/// packets of one connection on two CPUs at once may race for a slot;
/// one of them is then not kept (a recorder, not an accounting).
#[inline(always)]
fn record(ctx: &TcContext, cfg: &Config, seg: &Segment, now: u64, ingress: bool) -> Option<()> {
    let ring = match FLIGHT.get_ptr_mut(&seg.key) {
        Some(ring) => ring,
        None => {
            FLIGHT.insert(&seg.key, FLIGHT_EMPTY.get(0)?, 0).ok()?;
            FLIGHT.get_ptr_mut(&seg.key)?
        }
    };
    // SAFETY: a map value of ours.
    let ring = unsafe { &mut *ring };
    let slot_index = (ring.next as usize) & (FLIGHT_PACKETS - 1);
    ring.next = ring.next.wrapping_add(1);
    let slot = &mut ring.packets[slot_index];
    slot.ts_ns = now;
    slot.wire_len = seg.wire_len;
    slot.direction = if ingress {
        flight_direction::IN
    } else {
        flight_direction::OUT
    };
    slot.payload_len = 0;
    let headers = seg.ip_header_len + seg.tcp_header_len;
    let header_len = if headers > FLIGHT_HEADER_BYTES as u32 {
        FLIGHT_HEADER_BYTES as u32
    } else {
        headers
    };
    let Some(header_len) = bounded(
        header_len,
        FLIGHT_HEADER_BYTES as u32,
        FLIGHT_HEADER_BYTES as u32 - 1,
    )
    .filter(|len| load(ctx, ETH_HLEN, slot.header.as_mut_ptr(), *len)) else {
        slot.header_len = 0;
        return None;
    };
    slot.header_len = header_len as u8;
    let wanted = u32::from(cfg.flight_payload);
    if wanted == 0 || seg.payload_len == 0 {
        return Some(());
    }
    let mut len = if seg.payload_len < wanted {
        seg.payload_len
    } else {
        wanted
    };
    if len > FLIGHT_PAYLOAD_BYTES as u32 {
        len = FLIGHT_PAYLOAD_BYTES as u32;
    }
    let payload = match FLIGHT_PAYLOAD.get_ptr_mut(&seg.key) {
        Some(payload) => payload,
        None => {
            FLIGHT_PAYLOAD
                .insert(&seg.key, FLIGHT_PAYLOAD_EMPTY.get(0)?, 0)
                .ok()?;
            FLIGHT_PAYLOAD.get_ptr_mut(&seg.key)?
        }
    };
    // SAFETY: a map value of ours; slot_index is below FLIGHT_PACKETS.
    let dst = unsafe { (*payload).bytes[slot_index].as_mut_ptr() };
    // A GSO packet's payload may lie in its pages: the helper reads those too.
    if let Some(len) = bounded(
        len,
        FLIGHT_PAYLOAD_BYTES as u32,
        FLIGHT_PAYLOAD_BYTES as u32 - 1,
    ) && load(ctx, ETH_HLEN + headers, dst, len)
    {
        slot.payload_len = len as u16;
    }
    Some(())
}
