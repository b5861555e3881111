//! Decoded TCP events: plain data, owned, safe to pass anywhere; and the
//! version of the schema they are written in.

use std::net::{IpAddr, SocketAddr};

use tcptrace_common::kind;

use crate::origin::Provenance;

/// Version of every JSON record tcptrace writes (events, loss records,
/// summaries, `top` snapshots, the `diagnose` report): the `"v"` field.
/// Fields may be added; renaming or removing one bumps it
/// (docs/events.md).
pub const SCHEMA_VERSION: u32 = 1;

/// Number of event kinds: the length of every per-kind array, as the
/// kernel programs size their per-kind counters (`tcptrace_common::kind::COUNT`).
pub const KINDS: usize = kind::COUNT as usize;

/// What happened. The discriminants are the kernel's kind numbers
/// (`tcptrace_common::kind`), so `kind as usize` indexes per-kind arrays
/// and a kind added there must be added here (the build fails otherwise).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A TCP state change that is not a connect outcome.
    State = kind::STATE,
    /// SYN_SENT -> ESTABLISHED: an active open succeeded.
    Connect = kind::CONNECT,
    /// SYN_SENT -> CLOSE: an active open failed.
    ConnectFailed = kind::CONNECT_FAILED,
    /// `tcp:tcp_retransmit_skb`: a data (or SYN) segment was retransmitted.
    Retransmit = kind::RETRANSMIT,
    /// `tcp:tcp_retransmit_synack`: a SYN-ACK was retransmitted.
    SynAckRetransmit = kind::SYNACK_RETRANSMIT,
    /// `tcp:tcp_send_reset`: this host sent an RST.
    RstSent = kind::RST_SENT,
    /// `tcp:tcp_receive_reset`: this host received an RST.
    RstReceived = kind::RST_RECEIVED,
    /// `skb:kfree_skb`: a TCP packet the kernel dropped, with its reason.
    Drop = kind::DROP,
    /// `sock:inet_sk_error_report`: the error a socket handed its
    /// application (`sk_err`: ECONNRESET, ETIMEDOUT, ...).
    SocketError = kind::SOCKET_ERROR,
    /// A send on a connection after an idle gap of at least `--reuse-idle`
    /// (`tcp:tcp_sendmsg_locked`, or `sock:sock_send_length`).
    Reuse = kind::REUSE,
}

impl EventKind {
    /// Every kind, in kernel number order (`ALL[k as usize] == k`).
    pub const ALL: [EventKind; KINDS] = [
        EventKind::State,
        EventKind::Connect,
        EventKind::ConnectFailed,
        EventKind::Retransmit,
        EventKind::SynAckRetransmit,
        EventKind::RstSent,
        EventKind::RstReceived,
        EventKind::Drop,
        EventKind::SocketError,
        EventKind::Reuse,
    ];

    /// Index into per-kind arrays (`[T; KINDS]`).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name used in JSON and in human output.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::State => "state",
            EventKind::Connect => "connect",
            EventKind::ConnectFailed => "connect_failed",
            EventKind::Retransmit => "retransmit",
            EventKind::SynAckRetransmit => "synack_retransmit",
            EventKind::RstSent => "rst_sent",
            EventKind::RstReceived => "rst_received",
            EventKind::Drop => "drop",
            EventKind::SocketError => "socket_error",
            EventKind::Reuse => "reuse",
        }
    }

    /// An RST sent or received.
    pub fn is_rst(self) -> bool {
        matches!(self, EventKind::RstSent | EventKind::RstReceived)
    }

    /// A retransmitted segment or SYN-ACK.
    pub fn is_retransmit(self) -> bool {
        matches!(self, EventKind::Retransmit | EventKind::SynAckRetransmit)
    }
}

// `ALL` lists the kinds at their own index, so `TryFrom` can index it.
const _: () = {
    let mut i = 0;
    while i < KINDS {
        assert!(EventKind::ALL[i] as usize == i);
        i += 1;
    }
};

impl TryFrom<u8> for EventKind {
    type Error = u8;
    /// The kind with this kernel number; the number itself if unknown.
    fn try_from(raw: u8) -> Result<Self, u8> {
        EventKind::ALL.get(usize::from(raw)).copied().ok_or(raw)
    }
}

/// The process that owns the socket, as recorded where it really ran.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Command name of the thread (`comm`, at most 15 bytes).
    pub comm: Comm,
    /// cgroup v2 id: the inode of the process's cgroup directory.
    pub cgroup_id: u64,
}

/// A task's command name (at most 15 bytes), stored inline: events are
/// decoded by the hundred thousand a second and must not allocate.
/// Bytes that are not UTF-8 read as `?`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm {
    bytes: [u8; 16],
    len: u8,
}

impl Comm {
    /// From the kernel's NUL-padded bytes (or any bytes): up to the first
    /// NUL, at most 16 bytes.
    pub fn new(raw: &[u8]) -> Comm {
        let raw = &raw[..raw
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(raw.len())
            .min(16)];
        let mut bytes = [0u8; 16];
        bytes[..raw.len()].copy_from_slice(raw);
        // ASCII (nearly every name) is checked inline, without a call.
        if !raw.is_ascii() && std::str::from_utf8(raw).is_err() {
            for b in &mut bytes[..raw.len()] {
                if !b.is_ascii() {
                    *b = b'?';
                }
            }
        }
        Comm {
            bytes,
            len: raw.len() as u8,
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        // SAFETY: `new` keeps the bytes valid UTF-8 (non-ASCII bytes of an
        // invalid name become '?'); this runs for every event written.
        unsafe { std::str::from_utf8_unchecked(&self.bytes[..usize::from(self.len)]) }
    }
}

impl std::ops::Deref for Comm {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl PartialEq<&str> for Comm {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<&str> for Comm {
    fn from(text: &str) -> Comm {
        Comm::new(text.as_bytes())
    }
}

impl serde::Serialize for Comm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One event from the kernel, decoded: when, what, on which connection,
/// whose, and the kind-specific figures (`None` where they do not apply
/// or the kernel could not tell).
#[derive(Debug, Clone, PartialEq)]
pub struct TcpEvent {
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    pub mono_ns: u64,
    /// What happened.
    pub kind: EventKind,
    /// Kernel socket address: stable for a connection's life.
    pub sock: u64,
    /// Network namespace inode; `None` when the kernel had no socket.
    pub netns: Option<u32>,
    /// This host's end.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
    /// Who owns the socket, as recorded where it really ran; `None` when
    /// unknown (never guessed from the softirq's `current`).
    pub owner: Option<Owner>,
    /// How the connection was opened, as the kernel programs saw it:
    /// accepted (true) or connected (false); `None` when they did not
    /// see it open. Files the connection under its peer when its open
    /// was counted in the kernel rather than sent.
    pub accepted: Option<bool>,
    /// State changes and connect outcomes: (old, new) state numbers.
    pub transition: Option<(u8, u8)>,
    /// Resets and retransmits: the socket's state at the time.
    pub state: Option<u8>,
    /// Sent resets: `enum sk_rst_reason` value, `None` on kernels < 6.10.
    pub rst_reason: Option<u32>,
    /// Connect latency (Connect) or time to failure (ConnectFailed).
    pub connect_ns: Option<u64>,
    /// Resets, reuses, socket errors: time since the connection was
    /// established.
    pub age_ns: Option<u64>,
    /// Resets and reuses: time since the last data sent (for a reuse, the
    /// idle gap the send ended).
    pub idle_send_ns: Option<u64>,
    /// Resets and reuses: time since the last data received.
    pub idle_recv_ns: Option<u64>,
    /// Retransmits on kernels >= 6.17: the transmit error, if any.
    pub err: Option<i32>,
    /// What only some kinds carry (drops, socket errors, retransmitted
    /// segments).
    pub detail: Detail,
}

/// Kind-specific figures of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Detail {
    /// Kinds without extra figures.
    #[default]
    None,
    /// `drop`: the dropped packet.
    Drop(Dropped),
    /// `socket_error`: what the kernel set on the socket.
    SocketError {
        /// The positive errno of `sk_err`, e.g. 104 (ECONNRESET); named
        /// with `kernel::errno::name`.
        errno: i32,
    },
    /// `retransmit`: the segment and the path.
    Segment(Segment),
    /// `rst_sent` / `rst_received`: what the connection still held, and
    /// for `rst_received` with TC programs in the socket's namespace, who
    /// sent the RST and the evidence.
    Reset(Queues, Option<Provenance>),
}

/// What a reset connection still held (full TCP sockets only: not for a
/// listener, a request or TIME_WAIT socket, or a connect in SYN_SENT).
/// Unknown figures are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Queues {
    /// Bytes the application wrote that the peer had not acknowledged
    /// (`write_seq - snd_una`: in flight or not yet sent).
    pub unacked: Option<u32>,
    /// Bytes received that the application had not read
    /// (`rcv_nxt - copied_seq`).
    pub unread: Option<u32>,
    /// Time since the last data (not a bare ACK) arrived
    /// (`icsk_ack.lrcvtime`, jiffy resolution).
    pub idle_data_recv_ns: Option<u64>,
    /// Data segments this side had sent (`tcp_sock.data_segs_out`). 0:
    /// it never sent a byte, so it answered nothing, whatever the jiffy
    /// timestamps say (a passive child's `lsndtime` and `lrcvtime` both
    /// start at its creation jiffy). `None` when unknown (a kernel
    /// without the member, a recording before format version 4).
    pub data_segs_out: Option<u32>,
}

impl Queues {
    /// Nothing lost by the reset: the peer had acknowledged everything
    /// written and the application had read everything received.
    pub fn drained(&self) -> Option<bool> {
        Some(self.unacked? == 0 && self.unread? == 0)
    }
}

/// A dropped packet, as parsed from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// `enum skb_drop_reason` value; `None` on kernels without reasons.
    pub reason: Option<u32>,
    /// The TCP header's flags byte (FIN 0x01, SYN 0x02, RST 0x04,
    /// PSH 0x08, ACK 0x10, URG 0x20, ECE 0x40, CWR 0x80).
    pub tcp_flags: u8,
    /// True for a packet this host received (the event's local end is its
    /// destination), false for one it sent.
    pub incoming: bool,
}

/// A retransmitted segment: `len` payload bytes sent as `segs` segments
/// of at most `mss`, on a path whose MTU is `pmtu`. Unknown figures are
/// `None` (a BTF member this kernel lacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Payload bytes of the retransmitted skb (`skb->len`); 0 for a bare
    /// SYN or FIN.
    pub len: Option<u32>,
    /// Segments the skb is sent as (`tcp_skb_pcount`, GSO).
    pub segs: Option<u16>,
    /// The connection's MSS in bytes (`tcp_sock.mss_cache`).
    pub mss: Option<u32>,
    /// The path MTU in bytes (`inet_connection_sock.icsk_pmtu_cookie`).
    pub pmtu: Option<u32>,
}

impl Segment {
    /// Every segment as big as the MSS allows: what a PMTU black hole
    /// retransmits (small ones get through).
    pub fn is_full_size(&self) -> Option<bool> {
        match (self.len, self.segs, self.mss) {
            (Some(len), Some(segs), Some(mss)) if len > 0 && segs > 0 && mss > 0 => {
                Some(len >= u32::from(segs) * mss)
            }
            _ => None,
        }
    }
}

/// Names of the TCP header flags set in `flags`, `|`-separated in header
/// order (`SYN`, `SYN|ACK`, `FIN|ACK`, ...); `-` for none.
pub fn tcp_flag_names(flags: u8) -> String {
    const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    // Order people read them in: SYN|ACK, not ACK|SYN.
    const ORDER: [usize; 8] = [1, 0, 2, 3, 4, 5, 6, 7];
    let names: Vec<&str> = ORDER
        .iter()
        .filter(|bit| flags & (1 << **bit) != 0)
        .map(|bit| NAMES[*bit])
        .collect();
    if names.is_empty() {
        "-".to_string()
    } else {
        names.join("|")
    }
}

impl TcpEvent {
    /// The remote address as most people write it: v4-mapped IPv6 shown
    /// as IPv4.
    pub fn remote_ip(&self) -> IpAddr {
        self.remote.ip().to_canonical()
    }

    /// `drop` events: the dropped packet.
    pub fn dropped(&self) -> Option<&Dropped> {
        match &self.detail {
            Detail::Drop(d) => Some(d),
            _ => None,
        }
    }

    /// `socket_error` events: the positive errno handed to the application.
    pub fn socket_errno(&self) -> Option<i32> {
        match self.detail {
            Detail::SocketError { errno } => Some(errno),
            _ => None,
        }
    }

    /// `rst_received` events (TC programs attached): who sent the RST.
    pub fn provenance(&self) -> Option<&Provenance> {
        match &self.detail {
            Detail::Reset(_, Some(p)) => Some(p),
            _ => None,
        }
    }

    /// Resets: what the connection still held.
    pub fn queues(&self) -> Option<&Queues> {
        match &self.detail {
            Detail::Reset(q, _) => Some(q),
            _ => None,
        }
    }

    /// Resets: was the last request answered, i.e. had this side sent
    /// data since the last data it received (same jiffy counts as
    /// answered, unless it never sent a data segment)? `None` when
    /// unknown or nothing was ever received.
    pub fn answered(&self) -> Option<bool> {
        let q = self.queues()?;
        let recv = q.idle_data_recv_ns?;
        let send = self.idle_send_ns?;
        Some(send <= recv && q.data_segs_out != Some(0))
    }

    /// Resets: did this side send strictly after the last data it
    /// received (`Some(true)`), or receive strictly after its last send
    /// (`Some(false)`)? `None` when unknown or both fall in one jiffy,
    /// which cannot order them.
    pub fn sent_since_data(&self) -> Option<bool> {
        let recv = self.queues()?.idle_data_recv_ns?;
        let send = self.idle_send_ns?;
        (send != recv).then_some(send < recv)
    }

    /// `retransmit` events: the retransmitted segment and the path.
    pub fn segment(&self) -> Option<&Segment> {
        match &self.detail {
            Detail::Segment(s) => Some(s),
            _ => None,
        }
    }

    /// Idle time before a reset: since the most recent activity either way.
    pub fn idle_ns(&self) -> Option<u64> {
        match (self.idle_send_ns, self.idle_recv_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Successful opens the kernel counted instead of sending each one as an
/// event (the `OPENS` map, for the readers that only aggregate): `n`
/// opens since the last reading with the same owner, peer and latency
/// bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCount {
    /// The socket's owner (`tid` 0: counts are per process), `None`
    /// when unknown.
    pub owner: Option<Owner>,
    /// Network namespace inode, when known.
    pub netns: Option<u32>,
    /// The remote endpoint, as `aggregate::peer_key` files it: address
    /// and port for a connect, address alone (port 0) for an accepted
    /// connection.
    pub peer: SocketAddr,
    /// Accepted (SYN_RECV -> ESTABLISHED) rather than connected.
    pub passive: bool,
    /// `tcptrace_common::log_bucket` of the connect latency; `None` for
    /// an accepted connection or a connect whose start was not seen.
    pub latency_bucket: Option<u16>,
    /// How many.
    pub n: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_kernel_numbers() {
        assert_eq!(EventKind::ALL[usize::from(kind::DROP)], EventKind::Drop);
        assert_eq!(
            EventKind::ALL[usize::from(kind::SOCKET_ERROR)],
            EventKind::SocketError
        );
        assert_eq!(EventKind::ALL[usize::from(kind::REUSE)], EventKind::Reuse);
        for (i, k) in EventKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
    }

    #[test]
    fn flag_names() {
        assert_eq!(tcp_flag_names(0x02), "SYN");
        assert_eq!(tcp_flag_names(0x12), "SYN|ACK");
        assert_eq!(tcp_flag_names(0x11), "FIN|ACK");
        assert_eq!(tcp_flag_names(0x14), "RST|ACK");
        assert_eq!(tcp_flag_names(0), "-");
    }

    #[test]
    fn full_size_segments() {
        let seg = |len, segs, mss| Segment {
            len: Some(len),
            segs: Some(segs),
            mss: Some(mss),
            pmtu: Some(1500),
        };
        assert_eq!(seg(1448, 1, 1448).is_full_size(), Some(true));
        assert_eq!(seg(2896, 2, 1448).is_full_size(), Some(true));
        assert_eq!(seg(100, 1, 1448).is_full_size(), Some(false));
        assert_eq!(seg(0, 1, 1448).is_full_size(), None, "a bare SYN or FIN");
    }
}
