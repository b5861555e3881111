//! `skb:kfree_skb`: TCP segments the kernel threw away, with the drop
//! reason it gives, the addresses, ports and flags parsed from the
//! packet's own headers (offsets of `struct sk_buff` from BTF), and the
//! socket the packet belonged to when there is one.
//!
//! Every TCP drop is counted by reason in `HOST_DROP_REASONS` before any
//! filter, and those the user's filters keep in `DROP_REASONS` before the
//! ring buffer is asked for room: both exact when events are lost.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use tcptrace_common::{
    AF_INET, AF_INET6, DROP_REASON_SLOTS, ETH_P_IP, ETH_P_IPV6, Event, SkbLayout, UNKNOWN_U32,
    direction, field, kind, tracepoint as tp,
};

use crate::{
    emit,
    maps::{DROP_REASONS, HOST_DROP_REASONS},
    owner, read, related,
};

const IPPROTO_TCP: u8 = 6;
/// `network_header` / `transport_header` of an skb that has none.
const UNSET_HEADER: u16 = 0xffff;

#[tracepoint(category = "skb", name = "kfree_skb")]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    let _ = handle(&ctx);
    0
}

#[inline(always)]
fn handle(ctx: &TracePointContext) -> Option<()> {
    let cfg = read::config()?;
    let rec = read::record(ctx, &cfg.layouts[tp::KFREE_SKB])?;
    // Most drops on a busy host are not IP at all (ARP, other L2): the
    // cheapest test first.
    let protocol: u16 = rec.field(field::PROTOCOL)?;
    if protocol != ETH_P_IP && protocol != ETH_P_IPV6 {
        return None;
    }
    let skb: u64 = rec.field(field::SKBADDR)?;
    let layout = &cfg.skb;
    // A packet that came in on an interface has its interface index;
    // one this host sent has none (loopback traffic counts as received
    // once it has looped).
    let incoming = read::member_or::<i32>(skb, layout.skb_iif, 0) != 0;
    let ev = emit::blank(emit::buffer::TRACEPOINT)?;
    if !tcp_headers_into(layout, skb, protocol == ETH_P_IPV6, incoming, ev) {
        return None;
    }
    ev.direction = if incoming {
        direction::IN
    } else {
        direction::OUT
    };
    // The receiving socket (6.11+), else the skb's own: the sender's on
    // egress, the one early demux found on ingress.
    let rx_sk: u64 = rec.field(field::RX_SK).unwrap_or(0);
    let sk = if rx_sk != 0 {
        rx_sk
    } else {
        read::member_or(skb, layout.sk, 0)
    };
    ev.netns = if sk != 0 {
        read::netns(&cfg.sock, sk)
    } else {
        read::skb_netns(cfg, skb)
    };
    let reason: u32 = rec.field(field::REASON).unwrap_or(UNKNOWN_U32);
    let slot = if reason < DROP_REASON_SLOTS {
        reason
    } else {
        DROP_REASON_SLOTS - 1
    };
    emit::bump(&HOST_DROP_REASONS, slot);
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.skaddr = sk;
    ev.kind = kind::DROP;
    ev.reason = reason;
    let info = owner::sock_info_or_preexisting(sk, ev);
    owner::attribute(ev, &info);
    if ev.owner.tgid == 0 {
        // No known socket: dropped before TCP looked it up, or one the
        // programs never saw open (a request socket's SYN-ACK). A packet
        // to or from a port a process listens on is that process's
        // traffic, as connections it has not accepted yet are.
        ev.owner = owner::listener(ev.netns, ev.sport);
    }
    // Out of scope, unless it is a packet of a watched connection dropped
    // elsewhere on the host (a node namespace forwarding it).
    if !emit::in_scope(cfg, ev) && !related::watched(cfg, ev) {
        return None;
    }
    emit::bump(&DROP_REASONS, slot);
    // `slot` is below DROP_REASON_SLOTS, and LLVM knows it, so it drops
    // any bound check on the word index; 6.1's verifier has lost the bound
    // by now (`slot` went through the stack across the calls above) and
    // refuses the load ("R1 max value is outside of the allowed memory
    // range"). A volatile read hides the range from LLVM, so the mask it
    // cannot prove redundant stays, and bounds the offset for the verifier.
    let word =
        (unsafe { core::ptr::read_volatile(&slot) } / 32) as usize % cfg.quiet_drop_reasons.len();
    let quiet = cfg.quiet_drop_reasons[word] & (1 << (slot % 32)) != 0;
    if emit::selected(cfg, kind::DROP) && !quiet {
        emit::send(cfg, ev);
    }
    Some(())
}

/// Family, addresses, ports and TCP flags of the packet into `ev`, with
/// this host's end as local (the destination of an incoming packet).
/// False unless it is a first (or only) fragment of a TCP segment whose
/// TCP header lies in the skb's linear data.
#[inline(always)]
fn tcp_headers_into(
    layout: &SkbLayout,
    skb: u64,
    v6: bool,
    incoming: bool,
    ev: &mut Event,
) -> bool {
    let head: u64 = read::member_or(skb, layout.head, 0);
    let network: u16 = read::member_or(skb, layout.network_header, UNSET_HEADER);
    if head == 0 || network == UNSET_HEADER {
        return false;
    }
    // Words, not bytes, so that zeroing is a few stores (a byte array
    // would become a memset call).
    let mut ip = [0u64; 5];
    let ip_bytes = ip.as_mut_ptr().cast::<u8>();
    let ip_len = if v6 { 40 } else { 20 };
    if !read::bytes_into(head + u64::from(network), ip_bytes, ip_len) {
        return false;
    }
    // SAFETY: indices below are inside the 40-byte buffer.
    let byte = |i: usize| unsafe { *ip_bytes.add(i) };
    let (header_len, src, dst, addr_len) = if v6 {
        if byte(0) >> 4 != 6 || byte(6) != IPPROTO_TCP {
            return false;
        }
        (40u32, 8usize, 24usize, 16usize)
    } else {
        let ihl = u32::from(byte(0) & 0x0f) * 4;
        let fragment_offset = (u16::from(byte(6) & 0x1f) << 8) | u16::from(byte(7));
        if byte(0) >> 4 != 4 || ihl < 20 || byte(9) != IPPROTO_TCP || fragment_offset != 0 {
            return false;
        }
        (ihl, 12, 16, 4)
    };
    let transport = u32::from(network) + header_len;
    // The TCP header must be in the linear data (`tail` is where it ends).
    let tail: u32 = read::member_or(skb, layout.tail, 0);
    if tail != 0 && transport + 20 > tail {
        return false;
    }
    let mut tcp = [0u64; 2];
    let tcp_bytes = tcp.as_mut_ptr().cast::<u8>();
    if !read::bytes_into(head + u64::from(transport), tcp_bytes, 14) {
        return false;
    }
    // SAFETY: inside the 16-byte buffer.
    let tcp_byte = |i: usize| unsafe { *tcp_bytes.add(i) };
    let sport = (u16::from(tcp_byte(0)) << 8) | u16::from(tcp_byte(1));
    let dport = (u16::from(tcp_byte(2)) << 8) | u16::from(tcp_byte(3));
    let (local, remote) = if incoming { (dst, src) } else { (src, dst) };
    ev.family = if v6 { AF_INET6 as u8 } else { AF_INET as u8 };
    (ev.sport, ev.dport) = if incoming {
        (dport, sport)
    } else {
        (sport, dport)
    };
    // Fixed bounds so LLVM unrolls instead of calling memcpy.
    for i in 0..16 {
        if i < addr_len {
            ev.saddr[i] = byte(local + i);
            ev.daddr[i] = byte(remote + i);
        }
    }
    ev.tcp_flags = tcp_byte(13);
    true
}
