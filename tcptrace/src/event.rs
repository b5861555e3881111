//! Decoded TCP events: plain data, owned, safe to pass anywhere.

use std::net::{IpAddr, SocketAddr};

/// What happened. Mirrors `tcptrace_common::kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    State,
    Connect,
    ConnectFailed,
    Retransmit,
    SynAckRetransmit,
    RstSent,
    RstReceived,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::State,
        EventKind::Connect,
        EventKind::ConnectFailed,
        EventKind::Retransmit,
        EventKind::SynAckRetransmit,
        EventKind::RstSent,
        EventKind::RstReceived,
    ];

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
        }
    }

    pub fn is_rst(self) -> bool {
        matches!(self, EventKind::RstSent | EventKind::RstReceived)
    }

    pub fn is_retransmit(self) -> bool {
        matches!(self, EventKind::Retransmit | EventKind::SynAckRetransmit)
    }
}

impl TryFrom<u8> for EventKind {
    type Error = u8;
    fn try_from(raw: u8) -> Result<Self, u8> {
        EventKind::ALL.get(raw as usize).copied().ok_or(raw)
    }
}

/// The process that owns the socket, as recorded where it really ran.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub comm: Comm,
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
    pub fn new(raw: &[u8]) -> Comm {
        let raw = &raw[..raw
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(raw.len())
            .min(16)];
        let mut bytes = [0u8; 16];
        bytes[..raw.len()].copy_from_slice(raw);
        if std::str::from_utf8(raw).is_err() {
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

#[derive(Debug, Clone, PartialEq)]
pub struct TcpEvent {
    /// CLOCK_MONOTONIC nanoseconds.
    pub mono_ns: u64,
    pub kind: EventKind,
    /// Kernel socket address: stable for a connection's life.
    pub sock: u64,
    /// Network namespace inode; `None` when the kernel had no socket.
    pub netns: Option<u32>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub owner: Option<Owner>,
    /// State changes and connect outcomes: (old, new) state numbers.
    pub transition: Option<(u8, u8)>,
    /// Resets and retransmits: the socket's state at the time.
    pub state: Option<u8>,
    /// Sent resets: `enum sk_rst_reason` value, `None` on kernels < 6.10.
    pub rst_reason: Option<u32>,
    /// Connect latency (Connect) or time to failure (ConnectFailed).
    pub connect_ns: Option<u64>,
    /// Resets: time since the connection was established.
    pub age_ns: Option<u64>,
    /// Resets: time since the last data sent / received.
    pub idle_send_ns: Option<u64>,
    pub idle_recv_ns: Option<u64>,
    /// Retransmits on kernels >= 6.17: the transmit error, if any.
    pub err: Option<i32>,
}

impl TcpEvent {
    /// The remote address as most people write it: v4-mapped IPv6 shown
    /// as IPv4.
    pub fn remote_ip(&self) -> IpAddr {
        self.remote.ip().to_canonical()
    }

    /// Idle time before a reset: since the most recent activity either way.
    pub fn idle_ns(&self) -> Option<u64> {
        match (self.idle_send_ns, self.idle_recv_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
