//! `sock:inet_sock_set_state`: state changes, connect latency and failed
//! connects, and the ownership bookkeeping at the process-context
//! transitions (CLOSE->SYN_SENT in connect, ->LISTEN in listen).

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_jiffies64},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use tcptrace_common::{
    Config, Event, IPPROTO_TCP, SockInfo, field, kind, tcp_state, tracepoint as tp,
};

use crate::{emit, opens, owner, read, related, reset};

/// The hook as a raw tracepoint, where the kernel's BTF gives the
/// socket's layout (`SockLayout::head_bytes`): the kernel skips building
/// the formatted record at every transition of every connection, and the
/// program reads what it needs from the socket in three probe reads.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> u32 {
    let _ = from_socket(&ctx);
    0
}

/// The hook as the formatted tracepoint: kernels without BTF.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state_record(ctx: TracePointContext) -> u32 {
    let _ = from_record(&ctx);
    0
}

#[inline(always)]
fn from_socket(ctx: &RawTracePointContext) -> Option<()> {
    let cfg = read::config()?;
    // TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
    let sk: u64 = ctx.arg(0);
    let old = ctx.arg::<u64>(1) as i32;
    let new = ctx.arg::<u64>(2) as i32;
    // Also fired for SCTP and MPTCP sockets.
    if read::member_or::<u16>(sk, cfg.sock.sk_protocol, 0) != IPPROTO_TCP {
        return None;
    }
    let head = read::sock_head(&cfg.sock, sk)?;
    handle(
        cfg,
        emit::buffer::STATE,
        sk,
        old,
        new,
        |ev| head.endpoints_into(&cfg.sock, sk, ev),
        || head.netns(&cfg.sock),
    )
}

#[inline(always)]
fn from_record(ctx: &TracePointContext) -> Option<()> {
    let cfg = read::config()?;
    let rec = read::record(ctx, &cfg.layouts[tp::SET_STATE])?;
    // Kernels before the protocol field only reported TCP here.
    if rec.field::<u16>(field::PROTOCOL).unwrap_or(IPPROTO_TCP) != IPPROTO_TCP {
        return None;
    }
    let sk: u64 = rec.field(field::SKADDR)?;
    let old: i32 = rec.field(field::OLDSTATE)?;
    let new: i32 = rec.field(field::NEWSTATE)?;
    handle(
        cfg,
        emit::buffer::TRACEPOINT,
        sk,
        old,
        new,
        |ev| rec.endpoints_into(ev),
        || read::netns(&cfg.sock, sk),
    )
}

/// The transition `old` -> `new` of `sk`, whose endpoints `endpoints`
/// writes into the event and whose namespace `netns` reads from the
/// socket; built in `buffer`.
#[inline(always)]
fn handle(
    cfg: &Config,
    buffer: u32,
    sk: u64,
    old: i32,
    new: i32,
    endpoints: impl FnOnce(&mut Event) -> Option<()>,
    netns: impl FnOnce() -> u32,
) -> Option<()> {
    // The clock is read here only for the times the socket's entry keeps
    // (SYN_SENT, ESTABLISHED); other events read it once they passed the
    // filters. Durations and ages hold their start until then.
    let mut now = if new == tcp_state::SYN_SENT || new == tcp_state::ESTABLISHED {
        unsafe { bpf_ktime_get_ns() }
    } else {
        0
    };
    let mut duration_since = 0u64;
    let mut age_since = 0u64;
    let opening =
        new == tcp_state::SYN_SENT || new == tcp_state::LISTEN || new == tcp_state::SYN_RECV;
    // Always the socket's own: an entry may be a freed socket's (see
    // `owner::checked`), and the namespace is what tells them apart.
    let netns = netns();

    let ev = emit::blank(buffer)?;
    endpoints(ev)?;
    // Every later transition finds the entry an opening made: looked up
    // once here, taken only if it is this socket's.
    let entry = if opening {
        core::ptr::null_mut()
    } else {
        owner::checked(owner::entry(sk), netns, ev.dport)
    };
    ev.skaddr = sk;
    ev.netns = netns;
    ev.kind = kind::STATE;
    ev.old_state = old as u8;
    ev.new_state = new as u8;

    // Plain values, never `Option<SockInfo>`: an unknown socket reads as
    // zeros (owner unknown, times unknown). LLVM turns Option copies into
    // code that reads an undefined register, which the verifier rejects.
    // Each arm attributes the event itself, so the entries it handles
    // (64 bytes each) never share the 512-byte stack.
    match new {
        tcp_state::SYN_SENT => {
            // Inside connect(): the running task is the owner.
            let info = SockInfo {
                owner: owner::current(),
                syn_sent_ns: now,
                established_ns: 0,
                reuse_mark: 0,
                last_send_jiffies: 0,
                netns,
                peer_port: ev.dport,
                _pad: 0,
            };
            owner::remember(sk, &info);
            owner::attribute(ev, &info);
        }
        tcp_state::LISTEN => {
            let info = SockInfo {
                owner: owner::current(),
                netns,
                ..SockInfo::default()
            };
            owner::remember_listener(netns, ev.sport, &info.owner);
            owner::remember(sk, &info);
            owner::attribute(ev, &info);
        }
        tcp_state::SYN_RECV => {
            // A passive child, created in softirq: provisionally owned by
            // the listener until accept() names the real owner.
            // Its remote port is set just after this is reported (0 then:
            // not checked until ESTABLISHED records it).
            let info = SockInfo {
                owner: owner::listener(netns, ev.sport),
                netns,
                peer_port: ev.dport,
                ..SockInfo::default()
            };
            owner::remember(sk, &info);
            owner::attribute(ev, &info);
        }
        tcp_state::ESTABLISHED => {
            let info = owner::mark_established(entry, now, ev.dport);
            if old == tcp_state::SYN_SENT && info.syn_sent_ns != 0 {
                ev.kind = kind::CONNECT;
                duration_since = info.syn_sent_ns;
            }
            owner::attribute(ev, &info);
        }
        tcp_state::CLOSE => {
            let info = owner::info_or_preexisting(sk, entry, ev);
            if old == tcp_state::SYN_SENT {
                ev.kind = kind::CONNECT_FAILED;
                duration_since = info.syn_sent_ns;
            } else if old == tcp_state::LISTEN {
                owner::forget_listener(netns, ev.sport);
            } else if cfg.count_opens != 0 && info.established_ns != 0 {
                // The lifetime, for a reader that never saw the open.
                age_since = info.established_ns;
            }
            owner::attribute(ev, &info);
        }
        tcp_state::FIN_WAIT1 | tcp_state::CLOSE_WAIT if old == tcp_state::ESTABLISHED => {
            // The first close of an established connection, by us
            // (FIN_WAIT1) or by the peer (CLOSE_WAIT): how long it had
            // been idle is the closer's idle timeout (keep-alive, LB).
            let span = read::tcp_span(&cfg.sock, sk, buffer);
            reset::idle(cfg, &span, unsafe { bpf_jiffies64() } as u32, ev);
            let info = owner::info_or_preexisting(sk, entry, ev);
            age_since = info.established_ns;
            owner::attribute(ev, &info);
        }
        _ => {
            let info = owner::info_or_preexisting(sk, entry, ev);
            owner::attribute(ev, &info);
        }
    }
    if opening && cfg.skip_opening != 0 {
        return Some(());
    }
    // Out of scope, nothing goes out (neither counted nor sent).
    if !emit::in_scope(cfg, ev) {
        return Some(());
    }
    if now == 0 {
        now = unsafe { bpf_ktime_get_ns() };
    }
    ev.ts_ns = now;
    if duration_since != 0 {
        ev.duration_ns = now - duration_since;
    }
    if age_since != 0 {
        ev.age_ns = now - age_since;
    }
    if opens::wanted(cfg, ev) && opens::count(ev) {
        // Counted, not sent: the flow is still left for `related`, as
        // `emit::submit` would (the filters kept it: `opens::wanted`).
        related::remember(cfg, ev);
        return Some(());
    }
    emit::submit(cfg, ev);
    Some(())
}
