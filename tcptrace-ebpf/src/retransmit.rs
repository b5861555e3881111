//! `tcp:tcp_retransmit_skb` and `tcp:tcp_retransmit_synack` (softirq or
//! timer context: the owner comes from the socket map).

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use tcptrace_common::{Config, Event, UNKNOWN_U32, field, kind, tcp_state, tracepoint as tp};

use crate::{emit, owner, read, read::Record};

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let _ = handle(&ctx, tp::RETRANSMIT_SKB, kind::RETRANSMIT);
    0
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    let _ = handle(&ctx, tp::RETRANSMIT_SYNACK, kind::SYNACK_RETRANSMIT);
    0
}

#[inline(always)]
fn handle(ctx: &TracePointContext, which: usize, event_kind: u8) -> Option<()> {
    let cfg = read::config()?;
    let rec = read::record(ctx, cfg.layouts.get(which)?)?;
    let sk: u64 = rec.field(field::SKADDR).unwrap_or(0);
    // A SYN-ACK is retransmitted for a request socket; `skaddr` is then
    // the listener, whose owner we know from listen().
    let state: i32 = rec.field(field::STATE).unwrap_or(tcp_state::NEW_SYN_RECV);
    let ev = emit::blank(emit::buffer::TRACEPOINT)?;
    rec.endpoints_into(ev)?;
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.skaddr = sk;
    ev.netns = read::netns(&cfg.sock, sk);
    ev.kind = event_kind;
    ev.old_state = state as u8;
    ev.err = rec.field(field::ERR).unwrap_or(0);
    if event_kind == kind::RETRANSMIT {
        segment(cfg, &rec, sk, ev);
    }
    let info = owner::sock_info_or_preexisting(sk, ev);
    owner::attribute(ev, &info);
    emit::submit(cfg, ev);
    Some(())
}

/// How big the retransmitted segment is and what the path allows: a PMTU
/// black hole shows as retransmits that are all full-size (`seg_len` =
/// `segs` x `mss`) while small segments get through. The skb is the one
/// on the retransmit queue: payload only, headers are added to its clone.
#[inline(always)]
fn segment(cfg: &Config, rec: &Record, sk: u64, ev: &mut Event) {
    let skb: u64 = rec.field(field::SKBADDR).unwrap_or(0);
    ev.seg_len = read::member_or(skb, cfg.skb.len, UNKNOWN_U32);
    ev.segs = read::member_or::<u16>(skb, cfg.skb.tcp_gso_segs, 0);
    ev.mss = read::member_or(sk, cfg.sock.mss_cache, 0);
    ev.pmtu = read::member_or(sk, cfg.sock.pmtu_cookie, 0);
}
