//! Records shared by the kernel programs and userspace.
//!
//! Everything that crosses the kernel boundary is `#[repr(C)]` with
//! fixed-width integers and explicit padding only: no `bool`, no Rust enums
//! (a bad byte would be undefined behaviour). Userspace converts the raw
//! numbers with `TryFrom` in its decoder.
#![no_std]

#[cfg(feature = "user")]
mod user;

use core::mem::size_of;

/// Event kinds (`Event::kind`). Also the index into the per-kind counters.
pub mod kind {
    /// A TCP state transition that is not one of the connect outcomes below.
    pub const STATE: u8 = 0;
    /// SYN_SENT -> ESTABLISHED: an active open that succeeded.
    pub const CONNECT: u8 = 1;
    /// SYN_SENT -> CLOSE: an active open that failed.
    pub const CONNECT_FAILED: u8 = 2;
    /// `tcp:tcp_retransmit_skb`.
    pub const RETRANSMIT: u8 = 3;
    /// `tcp:tcp_retransmit_synack`.
    pub const SYNACK_RETRANSMIT: u8 = 4;
    /// `tcp:tcp_send_reset`.
    pub const RST_SENT: u8 = 5;
    /// `tcp:tcp_receive_reset`.
    pub const RST_RECEIVED: u8 = 6;
    /// `skb:kfree_skb` of a TCP segment: a packet the kernel dropped,
    /// with its drop reason.
    pub const DROP: u8 = 7;
    /// `sock:inet_sk_error_report` on a TCP socket: the error the
    /// application is handed (`sk_err`: ECONNRESET, ETIMEDOUT, ...).
    pub const SOCKET_ERROR: u8 = 8;
    /// A send on a connection idle for at least `Config::reuse_idle_jiffies`.
    pub const REUSE: u8 = 9;
    /// Number of kinds; size of the per-kind counter arrays.
    pub const COUNT: u32 = 10;
}

/// Bits of `Config::kind_mask` (in-kernel event selection).
pub mod kind_mask {
    use super::kind;
    pub const STATE: u32 = 1 << kind::STATE;
    pub const CONNECT: u32 = (1 << kind::CONNECT) | (1 << kind::CONNECT_FAILED);
    pub const RETRANSMIT: u32 = (1 << kind::RETRANSMIT) | (1 << kind::SYNACK_RETRANSMIT);
    pub const RST: u32 = (1 << kind::RST_SENT) | (1 << kind::RST_RECEIVED);
    pub const DROP: u32 = 1 << kind::DROP;
    pub const ERROR: u32 = 1 << kind::SOCKET_ERROR;
    pub const REUSE: u32 = 1 << kind::REUSE;
    pub const ALL: u32 = STATE | CONNECT | RETRANSMIT | RST | DROP | ERROR | REUSE;
}

/// TCP states as numbered in include/net/tcp_states.h (unchanged since
/// 2.6). The kernel programs need them for logic; userspace takes the
/// display names from the running kernel's format file instead.
pub mod tcp_state {
    pub const ESTABLISHED: i32 = 1;
    pub const SYN_SENT: i32 = 2;
    pub const SYN_RECV: i32 = 3;
    pub const FIN_WAIT1: i32 = 4;
    pub const TIME_WAIT: i32 = 6;
    pub const CLOSE: i32 = 7;
    pub const CLOSE_WAIT: i32 = 8;
    pub const LISTEN: i32 = 10;
    pub const NEW_SYN_RECV: i32 = 12;
}

pub const IPPROTO_TCP: u16 = 6;

/// `skb->protocol` (host order, as `skb:kfree_skb` reports it).
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;

/// `Event::direction` of a dropped packet.
pub mod direction {
    /// Received (it came in on an interface): `saddr`/`daddr` of the
    /// event are its destination/source, i.e. local/remote.
    pub const IN: u8 = 1;
    /// Sent by this host (never received): source/destination.
    pub const OUT: u8 = 2;
}

/// Drop reasons counted one by one in `DROP_REASONS`; larger values
/// (subsystem reasons have bits above 16 set) share the last slot.
pub const DROP_REASON_SLOTS: u32 = 256;

/// `Event::opened_by`: how the socket was opened (not to be confused
/// with a received RST's origin, which userspace judges from the TC
/// programs' `PeerProfile`).
pub mod opened_by {
    /// Not seen opening (open before the tracer started, or forgotten).
    pub const UNKNOWN: u8 = 0;
    /// connect(): SYN_SENT first.
    pub const CONNECT: u8 = 1;
    /// Accepted from a listener: SYN_RECV, then ESTABLISHED.
    pub const ACCEPT: u8 = 2;
}

/// Address families as the kernel numbers them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Marks a field absent from this kernel's tracepoint, or a value unknown.
pub const ABSENT_OFFSET: u16 = u16::MAX;
pub const UNKNOWN_U32: u32 = u32::MAX;

/// The process that owns a socket, recorded where it really runs
/// (inside connect(), listen() or accept()), never taken from `current`
/// in softirq. `tgid == 0` means unknown.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Owner {
    pub tgid: u32,
    pub pid: u32,
    pub cgroup_id: u64,
    pub comm: [u8; 16],
}
const _: () = assert!(size_of::<Owner>() == 32);

/// Per-socket bookkeeping kept in the kernel (LRU map keyed by sock address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockInfo {
    pub owner: Owner,
    /// When connect() moved the socket to SYN_SENT (0: passive open).
    pub syn_sent_ns: u64,
    /// When the socket reached ESTABLISHED (0: not yet).
    pub established_ns: u64,
    /// Jiffies of the last activity before the idle gap a `REUSE` event
    /// was sent for, so a gap is reported once even when one send makes
    /// the hook fire several times (0: none yet).
    pub reuse_mark: u32,
    /// Jiffies of the last send seen by `sock_send_length` (kernels
    /// without `tcp_sendmsg_locked`; 0: none seen).
    pub last_send_jiffies: u32,
    /// Network namespace inode of the socket the entry was made for. An
    /// entry outlives its socket (nothing deletes it at close, and a
    /// missed opening leaves it in place), so it is only taken for a
    /// socket of the same namespace (`owner::checked`).
    pub netns: u32,
    /// Remote port of the socket the entry was made for (0: not known
    /// yet, a passive child before ESTABLISHED): a second check that the
    /// entry is this socket's and not a freed one's at the same address.
    pub peer_port: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<SockInfo>() == 64);

/// Key of the listener map: the (netns, local port) a listen() bound, so
/// connections not yet accepted are attributed to the listening process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenKey {
    pub netns: u32,
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<ListenKey>() == 8);

impl ListenKey {
    /// The key of a listener on `port` in network namespace `netns`
    /// (inode): the one constructor, used by the kernel programs and by
    /// userspace seeding pre-existing listeners, so both build the same
    /// bytes (padding zeroed).
    pub const fn new(netns: u32, port: u16) -> ListenKey {
        ListenKey {
            netns,
            port,
            _pad: 0,
        }
    }
}

/// A connection by its addresses, for sockets that were open before the
/// tracer started (userspace finds their owners with sock_diag and /proc).
/// Addresses as the tracepoints report them: IPv4 in the first 4 bytes
/// for AF_INET sockets, 16 bytes (maybe v4-mapped) for AF_INET6 ones.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub netns: u32,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}
const _: () = assert!(size_of::<ConnKey>() == 40);

/// A connection in scope by its two ends, for `map::WATCHED_FLOWS` (no
/// family: the two namespaces that see a flow may disagree on v4-mapped
/// addresses, so each address is folded on its own; `FlowKey` is the TC
/// programs' key): the
/// connections the filters keep, so that packets of theirs dropped or
/// answered elsewhere on the host (a node namespace forwarding for the
/// watched pod) are kept too. IPv4 (also v4-mapped IPv6) in the first
/// four bytes of an address, zero-padded; IPv6 in all 16. The same bytes
/// whichever namespace saw the packet, so a lookup tries both orders.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WatchedFlowKey {
    pub local: [u8; 16],
    pub remote: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
}
const _: () = assert!(size_of::<WatchedFlowKey>() == 36);

/// One record on the ring buffer. Same layout for every kind; fields a
/// kind does not use are zero (or `UNKNOWN_U32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Event {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub ts_ns: u64,
    /// Kernel address of the socket (0 when the kernel had none).
    pub skaddr: u64,
    pub owner: Owner,
    /// Network namespace inode (0: unknown).
    pub netns: u32,
    pub kind: u8,
    /// Low byte of AF_INET / AF_INET6.
    pub family: u8,
    /// STATE/CONNECT*: the old state. RST/retransmit: the socket's state.
    pub old_state: u8,
    /// STATE/CONNECT*: the new state.
    pub new_state: u8,
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    /// RST_SENT: `enum sk_rst_reason` value; DROP: `enum skb_drop_reason`
    /// value. `UNKNOWN_U32` when this kernel's tracepoint has no reason.
    pub reason: u32,
    /// IPv4 in the first four bytes, IPv6 (maybe v4-mapped) in all 16.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// CONNECT: SYN_SENT -> ESTABLISHED; CONNECT_FAILED: SYN_SENT -> CLOSE.
    pub duration_ns: u64,
    /// RST, REUSE, SOCKET_ERROR: time since the socket reached
    /// ESTABLISHED (0: unknown).
    pub age_ns: u64,
    /// RST, REUSE: jiffies since the last send / last receive (`UNKNOWN_U32`).
    pub idle_send_jiffies: u32,
    pub idle_recv_jiffies: u32,
    /// RETRANSMIT: the `err` field (kernels >= 6.17), else 0.
    /// SOCKET_ERROR: the socket's `sk_err` (a positive errno).
    pub err: i32,
    /// RST (sent or received, on a full TCP socket): bytes the application
    /// wrote that the peer had not acknowledged (`write_seq - snd_una`:
    /// in flight or still queued); `UNKNOWN_U32` when unknown.
    pub unacked: u32,
    /// RETRANSMIT: payload bytes of the retransmitted skb (`skb->len`;
    /// 0 for a bare SYN/FIN) and the segments it is sent as
    /// (`tcp_skb_pcount`); `UNKNOWN_U32` / 0 when unknown.
    /// RST (sent or received, on a full TCP socket): the data segments
    /// the socket had sent (`tcp_sock.data_segs_out`, 4.6+): 0 when it
    /// never answered, which the jiffy timestamps cannot tell from an
    /// answer in the jiffy the connection was created; `UNKNOWN_U32`
    /// when unknown. (Record files before format version 4 hold 0 here
    /// for resets: unknown.)
    pub seg_len: u32,
    /// RETRANSMIT: the connection's `tcp_sock.mss_cache` and
    /// `icsk_pmtu_cookie` (path MTU) at the time (0: unknown).
    pub mss: u32,
    pub pmtu: u32,
    pub segs: u16,
    /// DROP: flags byte of the TCP header (FIN 0x01 ... CWR 0x80).
    pub tcp_flags: u8,
    /// DROP: `direction::IN` / `OUT` (0: unknown).
    pub direction: u8,
    /// RST: bytes received that the application had not read
    /// (`rcv_nxt - copied_seq`); `UNKNOWN_U32` when unknown.
    pub unread: u32,
    /// RST: jiffies since the last data (not a bare ACK) was received
    /// (`icsk_ack.lrcvtime`); `UNKNOWN_U32` when unknown. Next to
    /// `idle_send_jiffies` it tells whether the last request was answered.
    pub idle_data_recv_jiffies: u32,
    /// How the socket was opened, as far as the programs saw
    /// (`opened_by::*`): lets a reader that never got the open (counted
    /// in the kernel) file the connection under the right peer.
    pub opened_by: u8,
    pub _pad: [u8; 7],
}
pub const EVENT_SIZE: usize = 160;
const _: () = assert!(size_of::<Event>() == EVENT_SIZE);

/// Tracepoints the programs read, in `Config::layouts` order.
pub mod tracepoint {
    pub const SET_STATE: usize = 0;
    pub const RETRANSMIT_SKB: usize = 1;
    pub const RETRANSMIT_SYNACK: usize = 2;
    pub const SEND_RESET: usize = 3;
    pub const RECEIVE_RESET: usize = 4;
    /// accept()/accept4() returning: the process-context moment that
    /// names the owner of a passive connection.
    pub const EXIT_ACCEPT4: usize = 5;
    pub const EXIT_ACCEPT: usize = 6;
    /// `skb:kfree_skb`: packets the kernel dropped, with the reason.
    pub const KFREE_SKB: usize = 7;
    pub const COUNT: usize = 8;
    /// (category, name, program name in the object).
    pub const ALL: [(&str, &str, &str); COUNT] = [
        // Attached only without BTF: `raw_tracepoint::SET_STATE` else.
        ("sock", "inet_sock_set_state", "inet_sock_set_state_record"),
        ("tcp", "tcp_retransmit_skb", "tcp_retransmit_skb"),
        ("tcp", "tcp_retransmit_synack", "tcp_retransmit_synack"),
        ("tcp", "tcp_send_reset", "tcp_send_reset"),
        ("tcp", "tcp_receive_reset", "tcp_receive_reset"),
        ("syscalls", "sys_exit_accept4", "sys_exit_accept4"),
        ("syscalls", "sys_exit_accept", "sys_exit_accept"),
        ("skb", "kfree_skb", "kfree_skb"),
    ];
}

/// Raw tracepoints: the program gets the tracepoint's arguments (the
/// `struct sock *` itself) instead of the formatted record, which is what
/// these two need, and costs less than a formatted record on a hot path.
pub mod raw_tracepoint {
    /// `inet_sk_error_report(const struct sock *sk)` (kernels >= 5.13).
    pub const ERROR_REPORT: usize = 0;
    /// `tcp_sendmsg_locked(const struct sock *sk, const struct msghdr *msg,
    /// const struct sk_buff *skb, int size_goal)`: runs inside sendmsg
    /// before anything is sent, so `lsndtime` still holds the previous
    /// send.
    pub const SENDMSG: usize = 1;
    /// `sock_send_length(struct sock *sk, int ret, int flags)` (6.2+):
    /// after the data was sent; reuse after idle where `tcp_sendmsg_locked`
    /// is missing (6.12 and earlier).
    pub const SEND_LENGTH: usize = 2;
    /// `inet_sock_set_state(const struct sock *sk, const int oldstate,
    /// const int newstate)` (4.16+): every state change, where BTF gives
    /// the socket's layout (`SockLayout::head_bytes`); it runs at every
    /// transition of every connection, and the formatted record costs the
    /// kernel more to build than the program to read the socket.
    pub const SET_STATE: usize = 3;
    pub const COUNT: usize = 4;
    /// (category, name, program name in the object).
    pub const ALL: [(&str, &str, &str); COUNT] = [
        ("sock", "inet_sk_error_report", "inet_sk_error_report"),
        ("tcp", "tcp_sendmsg_locked", "tcp_sendmsg_locked"),
        ("sock", "sock_send_length", "sock_send_length"),
        ("sock", "inet_sock_set_state", "inet_sock_set_state"),
    ];
}

/// Field slots of a `TracepointLayout`.
pub mod field {
    pub const SKADDR: usize = 0;
    pub const OLDSTATE: usize = 1;
    pub const NEWSTATE: usize = 2;
    pub const SPORT: usize = 3;
    pub const DPORT: usize = 4;
    pub const FAMILY: usize = 5;
    pub const PROTOCOL: usize = 6;
    pub const SADDR: usize = 7;
    pub const DADDR: usize = 8;
    pub const SADDR_V6: usize = 9;
    pub const DADDR_V6: usize = 10;
    pub const STATE: usize = 11;
    pub const REASON: usize = 12;
    pub const ERR: usize = 13;
    /// Syscall exit tracepoints: the return value.
    pub const RET: usize = 14;
    /// `tcp_retransmit_skb`, `kfree_skb`: the `struct sk_buff *`.
    pub const SKBADDR: usize = 15;
    /// `kfree_skb` (kernels >= 6.11): the socket that was receiving it.
    pub const RX_SK: usize = 16;
    pub const COUNT: usize = 20;
    /// Names as they appear in the format files, by slot.
    pub const NAMES: [&str; 17] = [
        "skaddr", "oldstate", "newstate", "sport", "dport", "family", "protocol", "saddr", "daddr",
        "saddr_v6", "daddr_v6", "state", "reason", "err", "ret", "skbaddr", "rx_sk",
    ];
}

/// Where each field sits in one tracepoint's record on this kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracepointLayout {
    /// Byte offsets by `field::*` slot; `ABSENT_OFFSET` if missing.
    pub offsets: [u16; field::COUNT],
    /// 1 when `saddr`/`daddr` are sockaddr_in/sockaddr_in6 images
    /// (tcp_send_reset since 6.10) instead of separate fields.
    pub sockaddr_style: u8,
    pub _pad: u8,
    /// Bytes of the record the programs copy in one read: up to the end
    /// of its last field, at most `RECORD_BYTES`.
    pub record_bytes: u16,
    pub _pad2: [u8; 4],
}

/// The most of a tracepoint record a program copies (a power of two: the
/// programs mask offsets with it) (the largest tcptrace
/// reads ends at byte 88 on 6.18). Fields beyond it are treated as absent.
pub const RECORD_BYTES: usize = 128;
const _: () = assert!(RECORD_BYTES.is_power_of_two());
const _: () = assert!(size_of::<TracepointLayout>() == 48);

impl Default for TracepointLayout {
    fn default() -> Self {
        Self {
            offsets: [ABSENT_OFFSET; field::COUNT],
            sockaddr_style: 0,
            _pad: 0,
            record_bytes: 0,
            _pad2: [0; 4],
        }
    }
}

/// Struct member offsets from the running kernel's BTF, used with
/// `bpf_probe_read_kernel`. `ABSENT_OFFSET` disables the read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockLayout {
    /// `sock_common.skc_state` (u8).
    pub skc_state: u16,
    /// `sock_common.skc_net` (pointer to `struct net`).
    pub skc_net: u16,
    /// `net.ns.inum` (u32), relative to `struct net`.
    pub net_inum: u16,
    /// `tcp_sock.lsndtime` (u32 jiffies of the last data sent).
    pub lsndtime: u16,
    /// `tcp_sock.rcv_tstamp` (u32 jiffies of the last ACK received).
    pub rcv_tstamp: u16,
    /// `inet_connection_sock.icsk_ack.lrcvtime` (u32 jiffies of the last data received).
    pub lrcvtime: u16,
    /// `sock_common.skc_family` (u16).
    pub skc_family: u16,
    /// `sock_common.skc_num` (u16, local port, host order).
    pub skc_num: u16,
    /// `sock_common.skc_dport` (__be16).
    pub skc_dport: u16,
    /// `sock_common.skc_rcv_saddr` / `skc_daddr` (__be32).
    pub skc_rcv_saddr: u16,
    pub skc_daddr: u16,
    /// `sock_common.skc_v6_rcv_saddr` / `skc_v6_daddr` (16 bytes).
    pub skc_v6_rcv_saddr: u16,
    pub skc_v6_daddr: u16,
    /// `sock.sk_protocol` (u16 since 5.6; a bitfield before: absent).
    pub sk_protocol: u16,
    /// `sock.sk_err` (int, positive errno).
    pub sk_err: u16,
    /// `tcp_sock.mss_cache` (u32).
    pub mss_cache: u16,
    /// `inet_connection_sock.icsk_pmtu_cookie` (u32).
    pub pmtu_cookie: u16,
    /// `inet_sock.inet_sport` (__be16): the local port, which (unlike
    /// `skc_num`) survives the unhashing at close, when errors are reported.
    pub inet_sport: u16,
    /// `tcp_sock.write_seq` / `snd_una` (u32 sequence numbers): what the
    /// application wrote, and what the peer acknowledged.
    pub write_seq: u16,
    pub snd_una: u16,
    /// `tcp_sock.rcv_nxt` / `copied_seq` (u32 sequence numbers): what
    /// arrived, and what the application read.
    pub rcv_nxt: u16,
    pub copied_seq: u16,
    /// `tcp_sock.data_segs_out` (u32, 4.6+): data segments sent, so a
    /// reset tells "never sent a byte" from an answer in the same jiffy.
    pub data_segs_out: u16,
    /// Where the bytes holding the members a reset reads (`TCP_SPAN_MEMBERS`:
    /// idle times and queue sequence numbers) start in the socket, and how
    /// many there are: one probe read of them costs less than one per
    /// member (the helper call is most of a member read's cost). 0 bytes:
    /// they lie further apart than `TCP_SPAN_BYTES`, read one by one.
    /// Set by `with_tcp_span`.
    pub tcp_span_start: u16,
    pub tcp_span_bytes: u16,
    /// How many bytes from the start of the socket hold the members of
    /// `head_members` (family, remote port, addresses, namespace: all in
    /// `sock_common`), copied in one probe read by the state-change hook
    /// when it runs as a raw tracepoint. 0 when one of them, `inet_sport`
    /// or `sk_protocol` is unknown, or they reach past `RECORD_BYTES`: the
    /// hook then runs as the formatted tracepoint. Set by `with_head`.
    pub head_bytes: u16,
    pub _pad: [u16; 2],
}
const _: () = assert!(size_of::<SockLayout>() == 56);

/// The widest span of `tcp_sock` read in one go (a power of two: the
/// programs mask offsets into their buffer with it). On 6.18 the members
/// span 464 bytes (`icsk_ack.lrcvtime` at 1264 to `rcv_tstamp` at 1724).
pub const TCP_SPAN_BYTES: usize = 512;
const _: () = assert!(TCP_SPAN_BYTES.is_power_of_two());

impl SockLayout {
    /// The members a reset reads from a full TCP socket (4-byte each).
    pub const fn tcp_span_members(&self) -> [u16; 8] {
        [
            self.lsndtime,
            self.rcv_tstamp,
            self.lrcvtime,
            self.write_seq,
            self.snd_una,
            self.rcv_nxt,
            self.copied_seq,
            self.data_segs_out,
        ]
    }

    /// The `sock_common` members an event's endpoints and namespace come
    /// from, with their sizes in bytes.
    pub const fn head_members(&self) -> [(u16, u16); 7] {
        [
            (self.skc_family, 2),
            (self.skc_dport, 2),
            (self.skc_rcv_saddr, 4),
            (self.skc_daddr, 4),
            (self.skc_v6_rcv_saddr, 16),
            (self.skc_v6_daddr, 16),
            (self.skc_net, 8),
        ]
    }

    /// This layout with `head_bytes` covering every member of
    /// `head_members` (each naturally aligned), or 0 (see `head_bytes`).
    pub fn with_head(mut self) -> SockLayout {
        let mut end = 0u32;
        let mut known = self.inet_sport != ABSENT_OFFSET && self.sk_protocol != ABSENT_OFFSET;
        for (offset, size) in self.head_members() {
            known &= offset != ABSENT_OFFSET && offset % size.min(8) == 0;
            end = end.max(u32::from(offset) + u32::from(size));
        }
        self.head_bytes = if known && end <= RECORD_BYTES as u32 {
            end as u16
        } else {
            0
        };
        self
    }

    /// This layout with `tcp_span_start`/`tcp_span_bytes` covering every
    /// present member of `tcp_span_members`, 8-byte aligned at its start,
    /// or 0 bytes when they do not fit in `TCP_SPAN_BYTES` (or none is
    /// known, or one is not 4-byte aligned).
    pub fn with_tcp_span(mut self) -> SockLayout {
        let mut low = u32::MAX;
        let mut high = 0u32;
        let mut aligned = true;
        for offset in self.tcp_span_members() {
            if offset == ABSENT_OFFSET {
                continue;
            }
            aligned &= offset % 4 == 0;
            low = low.min(u32::from(offset) & !7);
            high = high.max(u32::from(offset) + 4);
        }
        if aligned && low < high && high - low <= TCP_SPAN_BYTES as u32 {
            self.tcp_span_start = low as u16;
            self.tcp_span_bytes = (high - low) as u16;
        } else {
            self.tcp_span_start = 0;
            self.tcp_span_bytes = 0;
        }
        self
    }
}

impl Default for SockLayout {
    fn default() -> Self {
        Self {
            skc_state: ABSENT_OFFSET,
            skc_net: ABSENT_OFFSET,
            net_inum: ABSENT_OFFSET,
            lsndtime: ABSENT_OFFSET,
            rcv_tstamp: ABSENT_OFFSET,
            lrcvtime: ABSENT_OFFSET,
            skc_family: ABSENT_OFFSET,
            skc_num: ABSENT_OFFSET,
            skc_dport: ABSENT_OFFSET,
            skc_rcv_saddr: ABSENT_OFFSET,
            skc_daddr: ABSENT_OFFSET,
            skc_v6_rcv_saddr: ABSENT_OFFSET,
            skc_v6_daddr: ABSENT_OFFSET,
            sk_protocol: ABSENT_OFFSET,
            sk_err: ABSENT_OFFSET,
            mss_cache: ABSENT_OFFSET,
            pmtu_cookie: ABSENT_OFFSET,
            inet_sport: ABSENT_OFFSET,
            write_seq: ABSENT_OFFSET,
            snd_una: ABSENT_OFFSET,
            rcv_nxt: ABSENT_OFFSET,
            copied_seq: ABSENT_OFFSET,
            data_segs_out: ABSENT_OFFSET,
            tcp_span_start: 0,
            tcp_span_bytes: 0,
            head_bytes: 0,
            _pad: [0; 2],
        }
    }
}

/// `struct sk_buff` (and neighbours) member offsets from BTF, to parse the
/// headers of a dropped packet and size a retransmitted one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkbLayout {
    /// `sk_buff.head` (pointer to the start of the buffer).
    pub head: u16,
    /// `sk_buff.network_header` / `transport_header` (u16 offsets from
    /// `head`; `0xffff` when unset).
    pub network_header: u16,
    pub transport_header: u16,
    /// `sk_buff.tail` (u32 offset from `head` on 64-bit kernels): the end
    /// of the linear data, so a header is only read where it really is.
    pub tail: u16,
    /// `sk_buff.len` (u32, bytes of data).
    pub len: u16,
    /// `sk_buff.sk` (pointer: the owning socket on egress, or the socket
    /// early demux found on ingress).
    pub sk: u16,
    /// `sk_buff.dev` (pointer to `struct net_device`).
    pub dev: u16,
    /// `sk_buff.skb_iif` (int): the interface it arrived on, 0 when sent
    /// by this host.
    pub skb_iif: u16,
    /// `sk_buff.cb` + `tcp_skb_cb.tcp_gso_segs` (u16): segments of a TCP skb.
    pub tcp_gso_segs: u16,
    /// `net_device.nd_net.net` (pointer to `struct net`).
    pub dev_net: u16,
    pub _pad: [u16; 2],
}
const _: () = assert!(size_of::<SkbLayout>() == 24);

impl Default for SkbLayout {
    fn default() -> Self {
        Self {
            head: ABSENT_OFFSET,
            network_header: ABSENT_OFFSET,
            transport_header: ABSENT_OFFSET,
            tail: ABSENT_OFFSET,
            len: ABSENT_OFFSET,
            sk: ABSENT_OFFSET,
            dev: ABSENT_OFFSET,
            skb_iif: ABSENT_OFFSET,
            tcp_gso_segs: ABSENT_OFFSET,
            dev_net: ABSENT_OFFSET,
            _pad: [0; 2],
        }
    }
}

/// Offsets to walk from the current task to the socket behind a file
/// descriptor: task_struct.files -> files_struct.fdt -> fdtable.fd[fd]
/// -> file.private_data (struct socket) -> socket.sk.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskLayout {
    pub task_files: u16,
    pub files_fdt: u16,
    pub fdt_fd: u16,
    pub file_private_data: u16,
    pub socket_sk: u16,
    /// `task_struct.group_leader` (pointer) and `task_struct.comm`
    /// (16 bytes): the process's name is its main thread's comm, where
    /// `bpf_get_current_comm` gives the running thread's (a named worker
    /// thread: `tokio-rt-worker`, a Java pool thread).
    pub group_leader: u16,
    pub comm: u16,
    pub _pad: [u16; 1],
}
const _: () = assert!(size_of::<TaskLayout>() == 16);

impl Default for TaskLayout {
    fn default() -> Self {
        Self {
            task_files: ABSENT_OFFSET,
            files_fdt: ABSENT_OFFSET,
            fdt_fd: ABSENT_OFFSET,
            file_private_data: ABSENT_OFFSET,
            socket_sk: ABSENT_OFFSET,
            group_leader: ABSENT_OFFSET,
            comm: ABSENT_OFFSET,
            _pad: [0; 1],
        }
    }
}

/// The single entry of the `CONFIG` map, written before the programs attach.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    pub layouts: [TracepointLayout; tracepoint::COUNT],
    pub sock: SockLayout,
    pub task: TaskLayout,
    pub skb: SkbLayout,
    /// Bits of `kind_mask::*`; events of other kinds are not emitted.
    pub kind_mask: u32,
    /// Owner tgid to keep (0: all).
    pub filter_tgid: u32,
    /// Owner comm to keep, NUL padded (all zero: all).
    pub filter_comm: [u8; 16],
    /// Network namespace inode to keep (0: all).
    pub filter_netns: u32,
    /// Local or remote port to keep (0: all).
    pub filter_port: u16,
    /// 1: do not emit the opening transitions (->SYN_SENT, ->LISTEN,
    /// ->SYN_RECV). Aggregating readers have no use for them; the
    /// bookkeeping they drive still happens.
    pub skip_opening: u16,
    /// Wake the reader only once this many bytes wait in the ring buffer
    /// (0: wake on every event). The reader also drains on a short timer,
    /// so batching costs a few milliseconds of latency and saves a wakeup
    /// per event under load.
    pub wakeup_bytes: u32,
    /// REUSE: a send after at least this many jiffies without sending or
    /// receiving is reported (0: never).
    pub reuse_idle_jiffies: u32,
    /// 1: remember the flows of connections in scope (`map::WATCHED_FLOWS`)
    /// and keep drops and unowned RSTs of those flows wherever they happen.
    /// Set when a scope filter (pid, comm, netns, port) is on.
    pub related_flows: u32,
    /// DROP: reasons (bit `reason` of this bitmap, below
    /// `DROP_REASON_SLOTS`) that are counted but not sent as events.
    pub quiet_drop_reasons: [u32; DROP_REASON_SLOTS as usize / 32],
    /// Network namespace inode whose interfaces carry the TC programs
    /// (0: none attached). `RST_RECEIVED` events of sockets in it carry
    /// the peer's profile (`PeerProfile`) after the event.
    pub tc_netns: u32,
    /// 1: the TC programs keep the last packets of each connection
    /// (`FLIGHT`, `trace --pcap`).
    pub flight: u16,
    /// Payload bytes kept per packet in `FLIGHT_PAYLOAD` (0 to
    /// `FLIGHT_PAYLOAD_BYTES`; 0: headers only).
    pub flight_payload: u16,
    /// 1: count successful opens (connects with their latency, accepted
    /// connections) in the `OPENS` map instead of sending them as events,
    /// and put the age on CLOSE transitions (the lifetime an aggregating
    /// reader no longer gets from the open). An open that finds `OPENS`
    /// full is sent as an event and counted in `OPENS_FULL`.
    pub count_opens: u32,
}
const _: () = assert!(
    size_of::<Config>()
        == tracepoint::COUNT * 48 + 56 + 16 + 24 + 44 + DROP_REASON_SLOTS as usize / 8 + 12
);

/// A connection as the TC programs and the reset program key it: this
/// host's end first, whichever way the packet went. IPv4 addresses in
/// the first four bytes (also for an IPv6 socket talking to a v4-mapped
/// address: the wire carries IPv4), IPv6 in all sixteen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Host byte order.
    pub local_port: u16,
    pub remote_port: u16,
    /// Low byte of `AF_INET` / `AF_INET6`.
    pub family: u8,
    pub _pad: [u8; 3],
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}
const _: () = assert!(size_of::<FlowKey>() == 40);

/// Bits of `PeerProfile::known`.
pub mod profile_known {
    /// `next_seq` holds the peer's next sequence number.
    pub const PEER_SEQ: u8 = 1;
    /// The peer's last segment was a SYN (its IPv4 ID comes from the
    /// request socket, not from the connection's counter).
    pub const LAST_WAS_SYN: u8 = 8;
    /// `our_next_seq` holds ours (seen on egress).
    pub const OUR_SEQ: u8 = 2;
    /// IPv6 segments (flow labels, hop limits) rather than IPv4.
    pub const V6: u8 = 4;
}

/// Bits of `RstSeen::options`.
pub mod rst_options {
    /// The RST carried a TCP timestamp option.
    pub const TIMESTAMP: u8 = 1;
}

/// Largest gap between the IPv4 IDs of two consecutive segments of the
/// peer that still counts as its per-connection counter moving on (Linux
/// adds the segments a GSO packet was cut into).
pub const IP_ID_STEP_MAX: u16 = 64;

/// The last RST that arrived on a connection, as the TC ingress program
/// parsed it, for the reset program (which runs right after, in the same
/// softirq) to hand on with the event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RstSeen {
    /// `bpf_ktime_get_ns()` when it crossed the interface (0: none seen).
    pub ts_ns: u64,
    /// Host byte order.
    pub seq: u32,
    pub ack: u32,
    /// Timestamp option values (when `options` has `TIMESTAMP`).
    pub tsval: u32,
    pub tsecr: u32,
    /// IPv6 flow label (20 bits).
    pub flow_label: u32,
    /// IPv4 identification.
    pub ip_id: u16,
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
    /// The TCP flags byte.
    pub tcp_flags: u8,
    /// `rst_options::*` bits.
    pub options: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(size_of::<RstSeen>() == 40);

/// What the peer's own segments on one connection look like, kept by
/// the TC ingress program (egress adds our next sequence number): what a
/// received RST is compared with to tell the peer's RST from one forged
/// on the path. Reset when a SYN opens the connection again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerProfile {
    /// `bpf_ktime_get_ns()` of the peer's last segment (not an RST).
    pub last_ns: u64,
    /// The peer's segments seen (RSTs not counted).
    pub segments: u32,
    /// Of those, how many carried a TCP timestamp option.
    pub ts_segments: u32,
    /// IPv4: pairs of consecutive segments (after the handshake) whose
    /// IDs were compared, those whose ID moved on by 1 to `IP_ID_STEP_MAX`
    /// (a per-connection counter), and segments with ID 0.
    pub ip_id_pairs: u32,
    pub ip_id_steps: u32,
    pub ip_id_zero: u32,
    /// The last segment's timestamp value.
    pub last_tsval: u32,
    /// The peer's sequence number after its last segment (seq + payload,
    /// + 1 for SYN or FIN): what an RST of its own carries.
    pub next_seq: u32,
    /// Ours after our last segment (egress): what the peer acknowledges.
    pub our_next_seq: u32,
    /// IPv6: the last segment's flow label.
    pub flow_label: u32,
    /// IPv4: the last segment's ID.
    pub last_ip_id: u16,
    /// TTL / hop limit range of the peer's segments, and the last one.
    pub ttl_min: u8,
    pub ttl_max: u8,
    pub ttl_last: u8,
    /// `profile_known::*` bits.
    pub known: u8,
    pub _pad: [u8; 6],
    /// The last RST received on the connection.
    pub rst: RstSeen,
}
pub const PEER_PROFILE_SIZE: usize = 96;
const _: () = assert!(size_of::<PeerProfile>() == PEER_PROFILE_SIZE);

/// An `RST_RECEIVED` record when TC programs run in the socket's
/// namespace: the event, then the peer's profile (all zero when no
/// segment of the connection crossed a watched interface).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventWithPeer {
    pub event: Event,
    pub peer: PeerProfile,
}
pub const EVENT_WITH_PEER_SIZE: usize = EVENT_SIZE + PEER_PROFILE_SIZE;
const _: () = assert!(size_of::<EventWithPeer>() == EVENT_WITH_PEER_SIZE);

/// Packets kept per connection by the flight recorder (a power of two).
pub const FLIGHT_PACKETS: usize = 16;
const _: () = assert!(FLIGHT_PACKETS.is_power_of_two());
/// Header bytes kept per packet: the IP header and the TCP header with
/// its options (at most 60 + 60 for IPv4, 40 + 60 for IPv6).
pub const FLIGHT_HEADER_BYTES: usize = 128;
/// Most payload bytes kept per packet (`--pcap-payload`).
pub const FLIGHT_PAYLOAD_BYTES: usize = 256;
/// Connections the flight recorder keeps (LRU: the least recently
/// active one makes room).
pub const FLIGHT_FLOWS: u32 = 4096;

/// `FlightPacket::direction`.
pub mod flight_direction {
    /// Received on a watched interface.
    pub const IN: u8 = 1;
    /// Sent through one.
    pub const OUT: u8 = 2;
}

/// One packet of the flight recorder: when, which way, its length on the
/// wire and its first header bytes (IP header onwards).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FlightPacket {
    /// `bpf_ktime_get_ns()` (0: empty slot).
    pub ts_ns: u64,
    /// The IP packet's length (IPv4 total length, IPv6 40 + payload length).
    pub wire_len: u32,
    /// Bytes of the matching `FLIGHT_PAYLOAD` slot filled.
    pub payload_len: u16,
    /// Bytes of `header` filled.
    pub header_len: u8,
    /// `flight_direction::*`.
    pub direction: u8,
    pub header: [u8; FLIGHT_HEADER_BYTES],
}
const _: () = assert!(size_of::<FlightPacket>() == 16 + FLIGHT_HEADER_BYTES);

/// The last `FLIGHT_PACKETS` packets of one connection, a ring.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FlightRing {
    /// Packets recorded so far; the next goes to `next % FLIGHT_PACKETS`.
    pub next: u32,
    pub _pad: u32,
    pub packets: [FlightPacket; FLIGHT_PACKETS],
}
pub const FLIGHT_RING_SIZE: usize = 8 + FLIGHT_PACKETS * (16 + FLIGHT_HEADER_BYTES);
const _: () = assert!(size_of::<FlightRing>() == FLIGHT_RING_SIZE);

/// Payload bytes of the packets of one `FlightRing`, slot by slot.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FlightPayload {
    pub bytes: [[u8; FLIGHT_PAYLOAD_BYTES]; FLIGHT_PACKETS],
}

/// TC programs (clsact / TCX), by program name in the object.
pub mod tc_program {
    /// Packets received on a watched interface.
    pub const INGRESS: &str = "tcptrace_tc_ingress";
    /// Packets sent through one.
    pub const EGRESS: &str = "tcptrace_tc_egress";
}
/// Key of the `OPENS` map: one successful open, by what the aggregator
/// groups on. Every byte is set (padding zero), so equal opens hash
/// alike.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OpenKey {
    /// The socket's owner, `pid` (thread id) zero: counts are per process.
    pub owner: Owner,
    /// Network namespace inode (0: unknown).
    pub netns: u32,
    /// Remote port, host order; 0 for an accepted connection (its
    /// clients are grouped by address).
    pub peer_port: u16,
    /// `log_bucket` of the connect latency; `NO_LATENCY` for an accepted
    /// connection or a connect whose start was not seen.
    pub latency_bucket: u16,
    /// 1: accepted (SYN_RECV -> ESTABLISHED); 0: connected.
    pub passive: u8,
    /// Low byte of AF_INET / AF_INET6.
    pub family: u8,
    pub _pad: [u8; 6],
    /// Remote address as in `Event::daddr`.
    pub peer_addr: [u8; 16],
}
const _: () = assert!(size_of::<OpenKey>() == 64);

/// `OpenKey::latency_bucket` of an open without a latency.
pub const NO_LATENCY: u16 = u16::MAX;

/// Sub-buckets per power of two of `log_bucket`, as bits.
pub const LOG_SUB_BITS: u32 = 4;

/// The log-linear bucket of `ns`: exact below 16, then 16 buckets per
/// power of two (a bucket spans at most 1/16 of its values). Written
/// without `leading_zeros` (no BPF instruction) and without loops, so the
/// kernel programs and userspace compute the same bucket.
#[inline(always)]
pub fn log_bucket(ns: u64) -> u16 {
    const SUB: u64 = 1 << LOG_SUB_BITS;
    if ns < SUB {
        return ns as u16;
    }
    // exp = floor(log2(ns)), by halving steps.
    let mut exp = 0u32;
    let mut v = ns;
    if v >= 1 << 32 {
        v >>= 32;
        exp += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        exp += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        exp += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        exp += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        exp += 2;
    }
    if v >= 1 << 1 {
        exp += 1;
    }
    let sub = (ns >> (exp - LOG_SUB_BITS)) & (SUB - 1);
    ((u64::from(exp - LOG_SUB_BITS + 1)) * SUB + sub) as u16
}

/// The smallest value of `log_bucket` bucket `b` (saturating).
pub fn log_bucket_lower_bound(b: u16) -> u64 {
    const SUB: u64 = 1 << LOG_SUB_BITS;
    let b = b as u64;
    if b < SUB {
        return b;
    }
    let exp = b / SUB + LOG_SUB_BITS as u64 - 1;
    let sub = b % SUB;
    (SUB + sub)
        .checked_shl((exp - LOG_SUB_BITS as u64) as u32)
        .unwrap_or(u64::MAX)
}

/// Entries of the `OPENS` map (userspace may change it before load).
pub const OPEN_KEYS: u32 = 16384;

/// Map names shared by both sides.
pub mod map {
    pub const EVENTS: &str = "EVENTS";
    pub const CONFIG: &str = "CONFIG";
    pub const SOCKS: &str = "SOCKS";
    pub const LISTENERS: &str = "LISTENERS";
    pub const PREEXISTING: &str = "PREEXISTING";
    /// Per-CPU, by kind: events that passed the filters (ground truth).
    pub const PRODUCED: &str = "PRODUCED";
    /// Per-CPU, by kind: events lost because the ring buffer was full.
    pub const LOST: &str = "LOST";
    /// Per-CPU, by `enum skb_drop_reason` value (`DROP_REASON_SLOTS`):
    /// TCP drops the filters keep, counted before the ring buffer, so
    /// exact even when events are lost.
    pub const DROP_REASONS: &str = "DROP_REASONS";
    /// The same for every TCP drop on the host, counted before any filter.
    pub const HOST_DROP_REASONS: &str = "HOST_DROP_REASONS";
    /// LRU, `FlowKey` -> `PeerProfile` (TC programs, reset program).
    pub const PEERS: &str = "PEERS";
    /// LRU, `FlowKey` -> `FlightRing`: the flight recorder.
    pub const FLIGHT: &str = "FLIGHT";
    /// LRU, `FlowKey` -> `FlightPayload` (one entry unless payload is kept).
    pub const FLIGHT_PAYLOAD: &str = "FLIGHT_PAYLOAD";
    /// `FlowKey` of connections in scope -> their namespace (LRU), when
    /// `Config::related_flows` is on.
    pub const WATCHED_FLOWS: &str = "WATCHED_FLOWS";
    /// Per-CPU hash, `OpenKey` -> successful opens counted in the kernel
    /// (`Config::count_opens`). Never deleted from while loaded: readers
    /// take differences, so a count is never lost to a race.
    pub const OPENS: &str = "OPENS";
    /// Per-CPU, one entry: opens that found `OPENS` full and were sent
    /// as events instead.
    pub const OPENS_FULL: &str = "OPENS_FULL";
}

/// Default ring buffer size in bytes (power of two, page multiple).
pub const DEFAULT_RING_BYTES: u32 = 8 << 20;
