//! `tcp:tcp_retransmit_skb` and `tcp:tcp_retransmit_synack` (softirq or
//! timer context: the owner comes from the socket map).

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use tcptrace_common::{Event, field, kind, tcp_state, tracepoint as tp};

use crate::{emit, owner, read};

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
    let layout = cfg.layouts.get(which)?;
    let sk: u64 = read::field(ctx, layout, field::SKADDR).unwrap_or(0);
    let ends = read::endpoints(ctx, layout)?;
    // A SYN-ACK is retransmitted for a request socket; `skaddr` is then
    // the listener, whose owner we know from listen().
    let state: i32 = read::field(ctx, layout, field::STATE).unwrap_or(tcp_state::NEW_SYN_RECV);
    let mut ev = Event {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        skaddr: sk,
        netns: read::netns(&cfg.sock, sk),
        kind: event_kind,
        family: ends.family as u8,
        old_state: state as u8,
        sport: ends.sport,
        dport: ends.dport,
        saddr: ends.saddr(),
        daddr: ends.daddr(),
        err: read::field(ctx, layout, field::ERR).unwrap_or(0),
        ..Event::default()
    };
    ev.owner = owner::sock_info(sk).owner;
    emit::submit(cfg, &ev);
    Some(())
}
