//! `tcp:tcp_send_reset` and `tcp:tcp_receive_reset`, with how old the
//! connection was and how long it had been idle: the figures that expose
//! load-balancer idle timeouts.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_jiffies64},
    macros::tracepoint,
    programs::TracePointContext,
};
use tcptrace_common::{Config, Event, UNKNOWN_U32, field, kind, tcp_state, tracepoint as tp};

use crate::{emit, owner, read};

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let _ = handle(&ctx, tp::SEND_RESET, kind::RST_SENT);
    0
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let _ = handle(&ctx, tp::RECEIVE_RESET, kind::RST_RECEIVED);
    0
}

#[inline(always)]
fn handle(ctx: &TracePointContext, which: usize, event_kind: u8) -> Option<()> {
    let cfg = read::config()?;
    let rec = read::record(ctx, cfg.layouts.get(which)?)?;
    // 0 when the kernel answered a segment no socket owns.
    let sk: u64 = rec.field(field::SKADDR).unwrap_or(0);
    let state: i32 = match rec.field::<i32>(field::STATE) {
        Some(state) => state,
        None => i32::from(read::member_or::<u8>(sk, cfg.sock.skc_state, 0)),
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let ev = emit::blank()?;
    rec.endpoints_into(ev)?;
    ev.ts_ns = now;
    ev.skaddr = sk;
    let entry = owner::entry(sk);
    let full = is_full_tcp_sock(state);
    ev.netns = if full {
        owner::netns(&cfg.sock, sk, entry)
    } else {
        read::netns(&cfg.sock, sk)
    };
    ev.kind = event_kind;
    ev.old_state = state as u8;
    ev.reason = rec.field(field::REASON).unwrap_or(UNKNOWN_U32);
    if full {
        idle(cfg, sk, ev);
    }
    let info = owner::info_or_preexisting(sk, entry, ev);
    owner::attribute(ev, &info);
    if info.established_ns != 0 {
        ev.age_ns = now - info.established_ns;
    }
    emit::submit(cfg, ev);
    Some(())
}

/// Time-wait and request sockets are smaller structs without the
/// `tcp_sock` members; a listener's timestamps mean nothing, and a
/// connecting socket's are still zero (the kernel sets them when the
/// handshake completes), so "idle" would be jiffies since boot.
#[inline(always)]
fn is_full_tcp_sock(state: i32) -> bool {
    state != 0
        && state != tcp_state::TIME_WAIT
        && state != tcp_state::NEW_SYN_RECV
        && state != tcp_state::LISTEN
        && state != tcp_state::SYN_SENT
}

/// Jiffies since the last data sent, and since the last data or ACK
/// received (whichever is more recent). Plain sentinels rather than
/// `Option` pairs: the verifier rejects the code LLVM makes for those.
#[inline(always)]
pub fn idle(cfg: &Config, sk: u64, ev: &mut Event) {
    let now = unsafe { bpf_jiffies64() } as u32;
    ev.idle_send_jiffies = jiffies_since(sk, cfg.sock.lsndtime, now);
    let data = jiffies_since(sk, cfg.sock.lrcvtime, now);
    let ack = jiffies_since(sk, cfg.sock.rcv_tstamp, now);
    // UNKNOWN_U32 is the largest value, so min keeps a known one.
    ev.idle_recv_jiffies = if data < ack { data } else { ack };
}

#[inline(always)]
fn jiffies_since(sk: u64, offset: u16, now: u32) -> u32 {
    if sk == 0 || offset == tcptrace_common::ABSENT_OFFSET {
        return UNKNOWN_U32;
    }
    now.wrapping_sub(read::member_or::<u32>(sk, offset, now))
}
