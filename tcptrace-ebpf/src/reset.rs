//! `tcp:tcp_send_reset` and `tcp:tcp_receive_reset`, with how old the
//! connection was and how long it had been idle: the figures that expose
//! load-balancer idle timeouts.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_jiffies64},
    macros::tracepoint,
    programs::TracePointContext,
};
use tcptrace_common::{
    AF_INET, AF_INET6, Config, Event, FlowKey, UNKNOWN_U32, field, kind, tcp_state,
    tracepoint as tp,
};

use crate::{emit, maps::PEERS, owner, read, read::TcpSpan, related};

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
    let ev = emit::blank(emit::buffer::TRACEPOINT)?;
    rec.endpoints_into(ev)?;
    ev.skaddr = sk;
    let full = is_full_tcp_sock(state);
    ev.netns = if sk == 0 {
        // An RST for a segment no socket owns: the namespace of the
        // device the segment came in on is where it was answered.
        read::skb_netns(cfg, rec.field(field::SKBADDR).unwrap_or(0))
    } else {
        read::netns(&cfg.sock, sk)
    };
    // A time-wait or request socket, or a socket whose opening was
    // missed, may sit at the address of a freed socket whose entry is
    // still there: only the socket's own is taken.
    let entry = owner::own_entry(sk, ev);
    ev.kind = event_kind;
    ev.old_state = state as u8;
    ev.reason = rec.field(field::REASON).unwrap_or(UNKNOWN_U32);
    // Data segments sent (`queues`): unknown unless a full socket's.
    ev.seg_len = UNKNOWN_U32;
    if full {
        let span = read::tcp_span(&cfg.sock, sk, emit::buffer::TRACEPOINT);
        let now = unsafe { bpf_jiffies64() } as u32;
        idle(cfg, &span, now, ev);
        queues(cfg, &span, now, ev);
    }
    let info = owner::info_or_preexisting(sk, entry, ev);
    owner::attribute(ev, &info);
    // The clock is read only for an event that goes out.
    if event_kind == kind::RST_RECEIVED && cfg.tc_netns != 0 && ev.netns == cfg.tc_netns {
        if !(emit::selected(cfg, event_kind) && emit::in_scope(cfg, ev)) {
            return None;
        }
        stamp(ev, info.established_ns);
        // The TC ingress program saw this RST a moment ago, in the same
        // softirq: what it and the peer's own segments looked like goes
        // with the event (zeros when the connection crossed no watched
        // interface).
        let key = flow_key(ev);
        emit::attach_peer(unsafe { PEERS.get(&key) })?;
        emit::submit_with_peer(cfg, ev);
    } else if sk == 0 && event_kind == kind::RST_SENT && related::watched(cfg, ev) {
        // This host's answer to a packet of a watched connection that
        // reached a namespace where no socket holds its ends (a reply
        // that skipped reverse NAT): kept even out of scope.
        if emit::selected(cfg, event_kind) {
            stamp(ev, info.established_ns);
            emit::send(cfg, ev);
        }
    } else if emit::in_scope(cfg, ev) {
        stamp(ev, info.established_ns);
        emit::submit(cfg, ev);
    }
    Some(())
}

/// The event's time, and the connection's age at it when known (the
/// time it reached ESTABLISHED, `established_ns`, is not 0).
#[inline(always)]
fn stamp(ev: &mut Event, established_ns: u64) {
    let now = unsafe { bpf_ktime_get_ns() };
    ev.ts_ns = now;
    if established_ns != 0 {
        ev.age_ns = now - established_ns;
    }
}

/// The connection's key in `PEERS`, from the event's endpoints. An IPv6
/// socket talking to a v4-mapped address sends IPv4 on the wire, which
/// is how the TC programs keyed it.
#[inline(always)]
fn flow_key(ev: &Event) -> FlowKey {
    let mut key = FlowKey {
        local_port: ev.sport,
        remote_port: ev.dport,
        family: ev.family,
        _pad: [0; 3],
        local_addr: ev.saddr,
        remote_addr: ev.daddr,
    };
    if u16::from(ev.family) == AF_INET6 && is_v4_mapped(&ev.daddr) {
        key.family = AF_INET as u8;
        key.local_addr = [0; 16];
        key.remote_addr = [0; 16];
        for i in 0..4 {
            key.local_addr[i] = ev.saddr[12 + i];
            key.remote_addr[i] = ev.daddr[12 + i];
        }
    }
    key
}

#[inline(always)]
fn is_v4_mapped(addr: &[u8; 16]) -> bool {
    let mut zero = true;
    for byte in addr.iter().take(10) {
        zero &= *byte == 0;
    }
    zero && addr[10] == 0xff && addr[11] == 0xff
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
/// received (whichever is more recent), at `now` (jiffies). Plain
/// sentinels rather than `Option` pairs: the verifier rejects the code
/// LLVM makes for those.
#[inline(always)]
pub fn idle(cfg: &Config, span: &TcpSpan, now: u32, ev: &mut Event) {
    ev.idle_send_jiffies = jiffies_since(span, cfg.sock.lsndtime, now);
    let data = jiffies_since(span, cfg.sock.lrcvtime, now);
    let ack = jiffies_since(span, cfg.sock.rcv_tstamp, now);
    // UNKNOWN_U32 is the largest value, so min keeps a known one.
    ev.idle_recv_jiffies = if data < ack { data } else { ack };
}

/// What was still in the connection's queues when it was reset: bytes
/// the application wrote that the peer had not acknowledged, and bytes
/// received it had not read. Both zero after a complete exchange (an
/// abortive close that lost nothing); either one non-zero means data was
/// lost. Also when the last data arrived, to tell whether it was answered,
/// and how many data segments the socket sent (`seg_len`): 0 means it
/// never answered, even when its timestamps share the creation jiffy.
#[inline(always)]
fn queues(cfg: &Config, span: &TcpSpan, now: u32, ev: &mut Event) {
    ev.idle_data_recv_jiffies = jiffies_since(span, cfg.sock.lrcvtime, now);
    ev.unacked = seq_gap(span, cfg.sock.write_seq, cfg.sock.snd_una);
    ev.unread = seq_gap(span, cfg.sock.rcv_nxt, cfg.sock.copied_seq);
    ev.seg_len = if span.has_socket() && cfg.sock.data_segs_out != tcptrace_common::ABSENT_OFFSET {
        span.u32_or(cfg.sock.data_segs_out, UNKNOWN_U32)
    } else {
        UNKNOWN_U32
    };
}

/// `later - earlier` of two sequence-number members, or `UNKNOWN_U32`.
#[inline(always)]
fn seq_gap(span: &TcpSpan, later: u16, earlier: u16) -> u32 {
    let abs = tcptrace_common::ABSENT_OFFSET;
    if !span.has_socket() || later == abs || earlier == abs {
        return UNKNOWN_U32;
    }
    let a = span.u32_or(later, 0);
    let b = span.u32_or(earlier, 0);
    let gap = a.wrapping_sub(b);
    // A gap near 2^32 is a torn read of a changing socket, not data.
    if gap > (1 << 30) { UNKNOWN_U32 } else { gap }
}

#[inline(always)]
fn jiffies_since(span: &TcpSpan, offset: u16, now: u32) -> u32 {
    if !span.has_socket() || offset == tcptrace_common::ABSENT_OFFSET {
        return UNKNOWN_U32;
    }
    // An unreadable member gives `now`: no time since.
    now.wrapping_sub(span.u32_or(offset, now))
}
