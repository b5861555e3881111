//! `inet_sk_error_report` as a raw tracepoint: the error a TCP socket
//! hands its application (`sk_err`: ECONNRESET, ETIMEDOUT, ECONNREFUSED,
//! EHOSTUNREACH, ...), attributed to the socket's owner. The formatted
//! tracepoint only carries the addresses; the raw one gets the socket
//! itself, so the owner comes from the socket map like everywhere else.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::raw_tracepoint, programs::RawTracePointContext};
use tcptrace_common::{IPPROTO_TCP, kind};

use crate::{emit, owner, read};

#[raw_tracepoint(tracepoint = "inet_sk_error_report")]
pub fn inet_sk_error_report(ctx: RawTracePointContext) -> u32 {
    let _ = handle(&ctx);
    0
}

#[inline(always)]
fn handle(ctx: &RawTracePointContext) -> Option<()> {
    let cfg = read::config()?;
    // TP_PROTO(const struct sock *sk)
    let sk: u64 = ctx.arg(0);
    if sk == 0 {
        return None;
    }
    let sock = &cfg.sock;
    // tcp_disconnect() reports too: a linger-0 close or connect(AF_UNSPEC)
    // by the application itself, or the clean-up after a failed connect
    // whose error was already reported (sk_err then read back as 0). It
    // zeroes the remote port first, which no connected socket has. Tested
    // first: it is half the runs under a churn of abortive closes, and
    // then one member read is all it costs.
    if read::member_or::<u16>(sk, sock.skc_dport, 1) == 0 {
        return None;
    }
    // Also fired for UDP, SCTP, MPTCP. Without the offset (kernels before
    // 5.6 had a bitfield) every inet socket passes.
    if read::member_or::<u16>(sk, sock.sk_protocol, IPPROTO_TCP) != IPPROTO_TCP {
        return None;
    }
    let err = read::member_or::<i32>(sk, sock.sk_err, 0);
    if err == 0 {
        return None;
    }
    let ev = emit::blank(emit::buffer::SOCKET_ERROR)?;
    read::sock_endpoints(sock, sk, ev)?;
    ev.skaddr = sk;
    ev.netns = read::netns(sock, sk);
    let entry = owner::own_entry(sk, ev);
    ev.kind = kind::SOCKET_ERROR;
    ev.old_state = read::member_or::<u8>(sk, sock.skc_state, 0);
    ev.err = err;
    let info = owner::info_or_preexisting(sk, entry, ev);
    owner::attribute(ev, &info);
    // The clock is read only for an event that goes out.
    if !emit::in_scope(cfg, ev) {
        return None;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    ev.ts_ns = now;
    if info.established_ns != 0 {
        ev.age_ns = now - info.established_ns;
    }
    emit::submit(cfg, ev);
    Some(())
}
