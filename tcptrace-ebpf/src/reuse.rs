//! Reuse after idle: `tcp_sendmsg_locked` as a raw tracepoint runs
//! inside sendmsg() before anything is sent, so `tcp_sock.lsndtime`
//! still holds the previous send. A send on a connection that neither
//! sent nor received for at least `Config::reuse_idle_jiffies` is
//! reported once per idle gap: the reuses that worked, next to the ones
//! a middlebox answered with a reset or silence.
//!
//! It fires for every chunk of every send, so a connection in use must
//! cost one member read and a compare: the idle test comes first, before
//! any map or ring buffer work.
//!
//! Kernels without `tcp_sendmsg_locked` (6.12 and earlier) have
//! `sock_send_length`, which fires after the data went out, when
//! `lsndtime` already says "now". There the previous send's time is kept
//! in the socket map: a map lookup per send, and only sends seen since
//! tracing started count.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_jiffies64},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use tcptrace_common::{AF_INET, AF_INET6, Config, Event, IPPROTO_TCP, SockInfo, kind, tcp_state};

use crate::{emit, owner, read};

#[raw_tracepoint(tracepoint = "tcp_sendmsg_locked")]
pub fn tcp_sendmsg_locked(ctx: RawTracePointContext) -> u32 {
    let _ = handle(&ctx);
    0
}

#[inline(always)]
fn handle(ctx: &RawTracePointContext) -> Option<()> {
    let cfg = read::config()?;
    let threshold = cfg.reuse_idle_jiffies;
    if threshold == 0 {
        return None;
    }
    // TP_PROTO(const struct sock *sk, const struct msghdr *msg,
    //          const struct sk_buff *skb, int size_goal)
    let sk: u64 = ctx.arg(0);
    let sock = &cfg.sock;
    let now = unsafe { bpf_jiffies64() } as u32;
    // An unknown offset or a failed read gives `now`: not idle.
    let idle_send = now.wrapping_sub(read::member_or::<u32>(sk, sock.lsndtime, now));
    if idle_send < threshold {
        return None;
    }
    let idle_data = now.wrapping_sub(read::member_or::<u32>(sk, sock.lrcvtime, now));
    let idle_ack = now.wrapping_sub(read::member_or::<u32>(sk, sock.rcv_tstamp, now));
    let idle_recv = if idle_data < idle_ack {
        idle_data
    } else {
        idle_ack
    };
    if idle_recv < threshold {
        return None;
    }
    // A connection in use (CLOSE_WAIT: the peer closed, the application
    // still sends, which is how a keep-alive race shows).
    let state = i32::from(read::member_or::<u8>(sk, sock.skc_state, 0));
    if state != tcp_state::ESTABLISHED && state != tcp_state::CLOSE_WAIT {
        return None;
    }
    let idle = if idle_send < idle_recv {
        idle_send
    } else {
        idle_recv
    };
    // The gap is named by its last activity; never 0 (no mark yet).
    let mark = now.wrapping_sub(idle) | 1;
    let ev = emit::blank(emit::buffer::REUSE)?;
    read::sock_endpoints(sock, sk, ev)?;
    ev.netns = read::netns(sock, sk);
    let info = owner::claim_reuse(sk, ev, mark);
    if info.reuse_mark == 0 {
        return None;
    }
    submit(cfg, sk, state, idle_send, idle_recv, &info, ev);
    Some(())
}

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_length(ctx: RawTracePointContext) -> u32 {
    let _ = after_send(&ctx);
    0
}

#[inline(always)]
fn after_send(ctx: &RawTracePointContext) -> Option<()> {
    let cfg = read::config()?;
    let threshold = cfg.reuse_idle_jiffies;
    if threshold == 0 {
        return None;
    }
    // TP_PROTO(struct sock *sk, int ret, int flags): ret is what was sent.
    let sk: u64 = ctx.arg(0);
    let sent = ctx.arg::<u64>(1) as i32;
    if sent <= 0 {
        return None;
    }
    let sock = &cfg.sock;
    // Every socket's sends come here (UDP, unix, netlink): TCP only.
    if read::member_or::<u16>(sk, sock.sk_protocol, 0) != IPPROTO_TCP {
        return None;
    }
    let family: u16 = read::member_or(sk, sock.skc_family, 0);
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let now = unsafe { bpf_jiffies64() } as u32;
    let before = owner::swap_last_send(sock, sk, now | 1);
    if before.last_send_jiffies == 0 {
        return None;
    }
    let idle_send = now.wrapping_sub(before.last_send_jiffies);
    if idle_send < threshold {
        return None;
    }
    // Data received only: the ACK of what was just sent may already have
    // been processed, so `rcv_tstamp` can say "now" here.
    let idle_recv = now.wrapping_sub(read::member_or::<u32>(sk, sock.lrcvtime, now));
    if idle_recv < threshold {
        return None;
    }
    let state = i32::from(read::member_or::<u8>(sk, sock.skc_state, 0));
    if state != tcp_state::ESTABLISHED && state != tcp_state::CLOSE_WAIT {
        return None;
    }
    let ev = emit::blank(emit::buffer::REUSE)?;
    read::sock_endpoints(sock, sk, ev)?;
    ev.netns = read::netns(sock, sk);
    // A freed socket's entry (see `owner::checked`): its last send and
    // owner are not this socket's.
    if !owner::is_own(&before, ev.netns, ev.dport) {
        return None;
    }
    submit(cfg, sk, state, idle_send, idle_recv, &before, ev);
    Some(())
}

#[inline(always)]
fn submit(
    cfg: &Config,
    sk: u64,
    state: i32,
    idle_send: u32,
    idle_recv: u32,
    info: &SockInfo,
    ev: &mut Event,
) {
    let now_ns = unsafe { bpf_ktime_get_ns() };
    ev.ts_ns = now_ns;
    ev.skaddr = sk;
    ev.kind = kind::REUSE;
    ev.old_state = state as u8;
    ev.idle_send_jiffies = idle_send;
    ev.idle_recv_jiffies = idle_recv;
    owner::attribute(ev, &info);
    if info.established_ns != 0 {
        ev.age_ns = now_ns - info.established_ns;
    }
    emit::submit(cfg, ev);
}
