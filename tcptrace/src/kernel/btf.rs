//! Struct member offsets from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`). Rust eBPF has no CO-RE relocations, so the
//! programs read `struct sock`/`tcp_sock` members at offsets found here.

use btf_rs::{Btf, Type};
use tcptrace_common::{ABSENT_OFFSET, SkbLayout, SockLayout, TaskLayout};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Struct member offsets for the kernel programs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Layouts {
    /// `struct sock` / `tcp_sock` / `inet_connection_sock` members.
    pub sock: SockLayout,
    /// `task_struct` -> `files_struct` -> `fdtable` -> `file` -> `socket`
    /// members: the socket behind an fd accept() returned.
    pub task: TaskLayout,
    /// `struct sk_buff` members (headers of a dropped packet, size of a
    /// retransmitted one).
    pub skb: SkbLayout,
}

/// Offsets the programs need; members this kernel lacks stay absent
/// (the matching figures are then reported as unknown) and are listed
/// in the returned warnings.
pub fn layouts() -> (Layouts, Vec<String>) {
    let mut missing = Vec::new();
    let btf = match Btf::from_file(VMLINUX) {
        Ok(btf) => btf,
        Err(err) => {
            missing.push(format!(
                "kernel BTF ({VMLINUX}: {err}): no idle times, netns, accept() attribution, drop headers, socket errors or reuse after idle"
            ));
            return (Layouts::default(), missing);
        }
    };
    let layouts = layouts_from(&btf, &mut missing);
    (layouts, missing)
}

fn layouts_from(btf: &Btf, missing: &mut Vec<String>) -> Layouts {
    let mut layout = SockLayout::default();
    let mut task = TaskLayout::default();
    let mut skb = SkbLayout::default();
    let mut find = |strukt: &str, path: &[&str]| -> u16 {
        match member_offset(btf, strukt, path) {
            Some(offset) if offset < ABSENT_OFFSET as u32 => offset as u16,
            _ => {
                missing.push(format!("struct {strukt}.{}", path.join(".")));
                ABSENT_OFFSET
            }
        }
    };
    layout.skc_state = find("sock_common", &["skc_state"]);
    layout.skc_net = find("sock_common", &["skc_net"]);
    layout.net_inum = find("net", &["ns", "inum"]);
    layout.lsndtime = find("tcp_sock", &["lsndtime"]);
    layout.rcv_tstamp = find("tcp_sock", &["rcv_tstamp"]);
    layout.lrcvtime = find("inet_connection_sock", &["icsk_ack", "lrcvtime"]);
    task.task_files = find("task_struct", &["files"]);
    task.files_fdt = find("files_struct", &["fdt"]);
    task.fdt_fd = find("fdtable", &["fd"]);
    task.file_private_data = find("file", &["private_data"]);
    task.socket_sk = find("socket", &["sk"]);
    // Owners are named after their process, not the thread that ran.
    task.group_leader = find("task_struct", &["group_leader"]);
    task.comm = find("task_struct", &["comm"]);
    // Socket errors and reuse read the socket's own addresses.
    layout.skc_family = find("sock_common", &["skc_family"]);
    layout.skc_num = find("sock_common", &["skc_num"]);
    layout.inet_sport = find("inet_sock", &["inet_sport"]);
    layout.skc_dport = find("sock_common", &["skc_dport"]);
    layout.skc_rcv_saddr = find("sock_common", &["skc_rcv_saddr"]);
    layout.skc_daddr = find("sock_common", &["skc_daddr"]);
    layout.skc_v6_rcv_saddr = find("sock_common", &["skc_v6_rcv_saddr"]);
    layout.skc_v6_daddr = find("sock_common", &["skc_v6_daddr"]);
    layout.sk_protocol = find("sock", &["sk_protocol"]);
    layout.sk_err = find("sock", &["sk_err"]);
    layout.mss_cache = find("tcp_sock", &["mss_cache"]);
    layout.pmtu_cookie = find("inet_connection_sock", &["icsk_pmtu_cookie"]);
    // What a reset left in the queues: lost data, or a complete exchange.
    layout.write_seq = find("tcp_sock", &["write_seq"]);
    layout.snd_una = find("tcp_sock", &["snd_una"]);
    layout.rcv_nxt = find("tcp_sock", &["rcv_nxt"]);
    layout.copied_seq = find("tcp_sock", &["copied_seq"]);
    // Whether the socket ever sent data: a reset of a connection that
    // never answered, which jiffy timestamps cannot tell apart from an
    // answer within the jiffy the connection was created in.
    layout.data_segs_out = find("tcp_sock", &["data_segs_out"]);
    // Dropped packets: their headers, socket and device.
    skb.head = find("sk_buff", &["head"]);
    skb.network_header = find("sk_buff", &["network_header"]);
    skb.transport_header = find("sk_buff", &["transport_header"]);
    skb.tail = find("sk_buff", &["tail"]);
    skb.len = find("sk_buff", &["len"]);
    skb.sk = find("sk_buff", &["sk"]);
    skb.dev = find("sk_buff", &["dev"]);
    skb.skb_iif = find("sk_buff", &["skb_iif"]);
    skb.dev_net = find("net_device", &["nd_net", "net"]);
    // TCP_SKB_CB(skb) is `skb->cb` seen as a `struct tcp_skb_cb`.
    let cb = find("sk_buff", &["cb"]);
    let segs = find("tcp_skb_cb", &["tcp_gso_segs"]);
    if cb != ABSENT_OFFSET && segs != ABSENT_OFFSET {
        skb.tcp_gso_segs = cb + segs;
    }
    Layouts {
        // Resets read their tcp_sock members in one probe read when close,
        // state changes the start of the socket when they can.
        sock: layout.with_tcp_span().with_head(),
        task,
        skb,
    }
}

/// Byte offset of `path` (nested member names) inside `struct strukt`,
/// looking through anonymous structs and unions on the way.
pub fn member_offset(btf: &Btf, strukt: &str, path: &[&str]) -> Option<u32> {
    let root = btf
        .resolve_types_by_name(strukt)
        .ok()?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))?;
    let mut current = root;
    let mut bits = 0;
    for name in path {
        let (offset, member_type) = find_member(btf, &current, name)?;
        bits += offset;
        current = member_type;
    }
    (bits % 8 == 0).then_some(bits / 8)
}

/// (bit offset, type) of member `name`, searching anonymous members too.
fn find_member(btf: &Btf, strukt: &Type, name: &str) -> Option<(u32, Type)> {
    let members = match strukt {
        Type::Struct(s) | Type::Union(s) => &s.members,
        _ => return None,
    };
    for member in members {
        let member_name = btf.resolve_name(member).unwrap_or_default();
        let member_type = resolve_alias(btf, btf.resolve_chained_type(member).ok()?)?;
        if member_name == name {
            return Some((member.bit_offset(), member_type));
        }
        if member_name.is_empty()
            && let Some((inner, found)) = find_member(btf, &member_type, name)
        {
            return Some((member.bit_offset() + inner, found));
        }
    }
    None
}

/// Follows typedefs and qualifiers down to the underlying type.
fn resolve_alias(btf: &Btf, mut t: Type) -> Option<Type> {
    loop {
        t = match &t {
            Type::Typedef(x) => btf.resolve_chained_type(x).ok()?,
            Type::Const(x) | Type::Volatile(x) | Type::Restrict(x) => {
                btf.resolve_chained_type(x).ok()?
            }
            Type::TypeTag(x) => btf.resolve_chained_type(x).ok()?,
            _ => return Some(t),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against this machine's kernel when it has BTF (CI does).
    #[test]
    fn finds_nested_members_in_vmlinux() {
        if !std::path::Path::new(VMLINUX).exists() {
            return;
        }
        let (Layouts { sock, task, skb }, missing) = layouts();
        assert!(task.task_files > 0 && task.socket_sk > 0);
        assert!(task.group_leader > 0 && task.comm > 0);
        assert!(missing.is_empty(), "missing: {missing:?}");
        // sock_common starts with addresses and ports; skc_state is never first.
        assert!(sock.skc_state > 0 && sock.skc_state < 64);
        // The addresses come first in sock_common (skc_addrpair).
        assert_eq!(sock.skc_daddr, 0);
        assert_eq!(sock.skc_rcv_saddr, 4);
        // tcp_sock embeds inet_connection_sock, which embeds sock.
        assert!(sock.lsndtime > sock.lrcvtime || sock.lsndtime > 512);
        assert!(sock.mss_cache > 512 && sock.pmtu_cookie > 512);
        assert!(sock.write_seq > 512 && sock.snd_una > 512);
        assert!(sock.rcv_nxt > 512 && sock.copied_seq > 512);
        assert!(sock.data_segs_out > 512 && sock.data_segs_out % 4 == 0);
        // Members inside anonymous unions and struct groups are found.
        assert!(skb.dev > 0 && skb.dev < 64, "sk_buff.dev at {}", skb.dev);
        assert!(skb.network_header > skb.dev && skb.head > skb.network_header);
        assert_ne!(skb.tcp_gso_segs, ABSENT_OFFSET);
        // Since 6.8 (tcp_sock in cache-line groups) the reset's members
        // fit in one span; it covers each of them.
        if sock.tcp_span_bytes != 0 {
            for offset in sock.tcp_span_members() {
                assert!(offset >= sock.tcp_span_start);
                assert!(offset + 4 <= sock.tcp_span_start + sock.tcp_span_bytes);
            }
        }
        // sock_common is the socket's first 136 bytes on every 64-bit
        // kernel since 4.x: the state-change hook reads it in one go.
        assert!(sock.head_bytes > 0, "no head: {sock:?}");
        for (offset, size) in sock.head_members() {
            assert!(offset + size <= sock.head_bytes);
        }
    }

    #[test]
    fn head_covers_the_members_or_is_off() {
        // 6.18's offsets.
        let sock = SockLayout {
            skc_daddr: 0,
            skc_rcv_saddr: 4,
            skc_dport: 12,
            skc_num: 14,
            skc_family: 16,
            skc_state: 18,
            skc_net: 48,
            skc_v6_daddr: 56,
            skc_v6_rcv_saddr: 72,
            sk_protocol: 532,
            inet_sport: 814,
            ..SockLayout::default()
        };
        assert_eq!(sock.with_head().head_bytes, 88);
        // Without any of them, or of inet_sport or sk_protocol (a
        // bitfield before 5.6), the formatted tracepoint is used.
        for absent in [
            SockLayout {
                skc_v6_daddr: ABSENT_OFFSET,
                ..sock
            },
            SockLayout {
                skc_net: ABSENT_OFFSET,
                ..sock
            },
            SockLayout {
                inet_sport: ABSENT_OFFSET,
                ..sock
            },
            SockLayout {
                sk_protocol: ABSENT_OFFSET,
                ..sock
            },
        ] {
            assert_eq!(absent.with_head().head_bytes, 0, "{absent:?}");
        }
        // Past the record buffer, or misaligned: off too.
        assert_eq!(
            SockLayout {
                skc_v6_rcv_saddr: 120,
                ..sock
            }
            .with_head()
            .head_bytes,
            0
        );
        assert_eq!(
            SockLayout {
                skc_net: 44,
                ..sock
            }
            .with_head()
            .head_bytes,
            0
        );
    }

    #[test]
    fn tcp_span_covers_the_members_or_is_off() {
        use tcptrace_common::TCP_SPAN_BYTES;
        // 6.18's offsets: 464 bytes from lrcvtime to rcv_tstamp
        // (data_segs_out in between).
        let close = SockLayout {
            lsndtime: 1584,
            rcv_tstamp: 1724,
            lrcvtime: 1264,
            write_seq: 1576,
            snd_una: 1672,
            rcv_nxt: 1664,
            copied_seq: 1464,
            data_segs_out: 1540,
            ..SockLayout::default()
        }
        .with_tcp_span();
        assert_eq!((close.tcp_span_start, close.tcp_span_bytes), (1264, 464));
        // An absent member is left out of the span.
        let partial = SockLayout {
            rcv_tstamp: ABSENT_OFFSET,
            ..close
        }
        .with_tcp_span();
        assert_eq!(
            (partial.tcp_span_start, partial.tcp_span_bytes),
            (1264, 1676 - 1264)
        );
        // The start is 8-byte aligned.
        let odd = SockLayout {
            lrcvtime: 1268,
            ..close
        }
        .with_tcp_span();
        assert_eq!((odd.tcp_span_start, odd.tcp_span_bytes), (1264, 464));
        // Too far apart: read one by one.
        let wide = SockLayout {
            lrcvtime: 1724 - TCP_SPAN_BYTES as u16,
            ..close
        }
        .with_tcp_span();
        assert_eq!(wide.tcp_span_bytes, 0);
        // A misaligned member (not a u32 on its own): one by one.
        let misaligned = SockLayout {
            snd_una: 1674,
            ..close
        }
        .with_tcp_span();
        assert_eq!(misaligned.tcp_span_bytes, 0);
        // Nothing known: nothing to read.
        assert_eq!(SockLayout::default().with_tcp_span().tcp_span_bytes, 0);
    }
}
