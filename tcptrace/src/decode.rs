//! Ring buffer items -> `TcpEvent`, in one checked function: length
//! checked, read unaligned, every number converted with `TryFrom`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tcptrace_common::{AF_INET, AF_INET6, EVENT_SIZE, Event, UNKNOWN_U32, direction};

use crate::event::{Comm, Detail, Dropped, EventKind, Owner, Segment, TcpEvent};

/// A ring buffer record that is not an event this binary knows.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The record has the wrong length (a kernel/userspace build mismatch).
    #[error("ring buffer item of {0} bytes, expected {EVENT_SIZE}")]
    Size(usize),
    /// The kind number is unknown.
    #[error("unknown event kind {0}")]
    Kind(u8),
    /// The address family is neither AF_INET nor AF_INET6.
    #[error("unknown address family {0}")]
    Family(u8),
}

/// Converts kernel units (jiffies) to time.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    /// Jiffies per second, as given to `new`.
    hz: Option<u32>,
    /// Nanoseconds per jiffy; `None` if HZ is unknown (idle then unknown).
    ns_per_jiffy: Option<u64>,
}

impl Decoder {
    /// A decoder for a kernel ticking `hz` times a second (`None`: idle times unknown).
    pub fn new(hz: Option<u32>) -> Decoder {
        Decoder {
            hz,
            ns_per_jiffy: hz
                .filter(|hz| *hz > 0)
                .map(|hz| 1_000_000_000 / u64::from(hz)),
        }
    }

    /// The kernel's jiffies per second this decoder converts with (what a
    /// record file keeps, so replay decodes the same way).
    pub fn hz(&self) -> Option<u32> {
        self.hz
    }

    /// Decodes one ring buffer record: length checked, read unaligned.
    pub fn decode(&self, bytes: &[u8]) -> Result<TcpEvent, DecodeError> {
        if bytes.len() != EVENT_SIZE {
            return Err(DecodeError::Size(bytes.len()));
        }
        // SAFETY: the length is checked; Event is plain integers (every
        // bit pattern valid); read_unaligned copes with any alignment.
        let raw: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        self.from_raw(&raw)
    }

    /// Converts a kernel record, every number checked.
    pub fn from_raw(&self, raw: &Event) -> Result<TcpEvent, DecodeError> {
        let kind = EventKind::try_from(raw.kind).map_err(DecodeError::Kind)?;
        let (local_ip, remote_ip) = match u16::from(raw.family) {
            AF_INET => (IpAddr::from(v4(&raw.saddr)), IpAddr::from(v4(&raw.daddr))),
            AF_INET6 => (
                IpAddr::from(Ipv6Addr::from(raw.saddr)),
                IpAddr::from(Ipv6Addr::from(raw.daddr)),
            ),
            other => return Err(DecodeError::Family(other as u8)),
        };
        let is_transition = matches!(
            kind,
            EventKind::State | EventKind::Connect | EventKind::ConnectFailed
        );
        let jiffies = |j: u32| {
            (j != UNKNOWN_U32)
                .then_some(())
                .and(self.ns_per_jiffy)
                .map(|ns| u64::from(j) * ns)
        };
        // Resets, the first close of an established connection, reuses.
        let has_idle = kind.is_rst() || kind == EventKind::State || kind == EventKind::Reuse;
        let has_age = has_idle || kind == EventKind::SocketError;
        Ok(TcpEvent {
            mono_ns: raw.ts_ns,
            kind,
            sock: raw.skaddr,
            netns: (raw.netns != 0).then_some(raw.netns),
            local: SocketAddr::new(local_ip, raw.sport),
            remote: SocketAddr::new(remote_ip, raw.dport),
            owner: owner(&raw.owner),
            transition: is_transition.then_some((raw.old_state, raw.new_state)),
            state: (!is_transition && raw.old_state != 0).then_some(raw.old_state),
            rst_reason: (kind == EventKind::RstSent && raw.reason != UNKNOWN_U32)
                .then_some(raw.reason),
            connect_ns: matches!(kind, EventKind::Connect | EventKind::ConnectFailed)
                .then_some(raw.duration_ns)
                .filter(|ns| *ns != 0),
            age_ns: (has_age && raw.age_ns != 0).then_some(raw.age_ns),
            idle_send_ns: if has_idle {
                jiffies(raw.idle_send_jiffies)
            } else {
                None
            },
            idle_recv_ns: if has_idle {
                jiffies(raw.idle_recv_jiffies)
            } else {
                None
            },
            err: (kind == EventKind::Retransmit && raw.err != 0).then_some(raw.err),
            detail: detail(kind, raw),
        })
    }
}

fn detail(kind: EventKind, raw: &Event) -> Detail {
    match kind {
        EventKind::Drop => Detail::Drop(Dropped {
            reason: (raw.reason != UNKNOWN_U32).then_some(raw.reason),
            tcp_flags: raw.tcp_flags,
            incoming: raw.direction == direction::IN,
        }),
        EventKind::SocketError => Detail::SocketError { errno: raw.err },
        EventKind::Retransmit => Detail::Segment(Segment {
            len: (raw.seg_len != UNKNOWN_U32).then_some(raw.seg_len),
            segs: (raw.segs != 0).then_some(raw.segs),
            mss: (raw.mss != 0).then_some(raw.mss),
            pmtu: (raw.pmtu != 0).then_some(raw.pmtu),
        }),
        _ => Detail::None,
    }
}

fn v4(addr: &[u8; 16]) -> Ipv4Addr {
    Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])
}

fn owner(raw: &tcptrace_common::Owner) -> Option<Owner> {
    if raw.tgid == 0 {
        return None;
    }
    Some(Owner {
        pid: raw.tgid,
        tid: raw.pid,
        comm: Comm::new(&raw.comm),
        cgroup_id: raw.cgroup_id,
    })
}

#[cfg(test)]
mod tests {
    use tcptrace_common::kind;

    use super::*;

    fn bytes(ev: &Event) -> Vec<u8> {
        // SAFETY: Event is repr(C) plain data.
        unsafe { std::slice::from_raw_parts((ev as *const Event).cast::<u8>(), EVENT_SIZE) }
            .to_vec()
    }

    fn rst(kind: u8) -> Event {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        Event {
            ts_ns: 5,
            skaddr: 0xffff_8880_0000_1000,
            owner: tcptrace_common::Owner {
                tgid: 42,
                pid: 43,
                cgroup_id: 7,
                comm,
            },
            netns: 4026531840,
            kind,
            family: 2,
            old_state: 7,
            sport: 40000,
            dport: 80,
            reason: 11,
            saddr,
            daddr,
            age_ns: 2_000_000_000,
            idle_send_jiffies: 250,
            idle_recv_jiffies: 500,
            ..Event::default()
        }
    }

    #[test]
    fn decodes_a_sent_reset() {
        let ev = Decoder::new(Some(250))
            .decode(&bytes(&rst(kind::RST_SENT)))
            .unwrap();
        assert_eq!(ev.kind, EventKind::RstSent);
        assert_eq!(ev.local.to_string(), "10.0.0.1:40000");
        assert_eq!(ev.remote.to_string(), "10.0.0.2:80");
        assert_eq!(ev.owner.as_ref().unwrap().comm, "curl");
        assert_eq!(ev.owner.as_ref().unwrap().pid, 42);
        assert_eq!(ev.rst_reason, Some(11));
        assert_eq!(ev.state, Some(7));
        assert_eq!(ev.idle_send_ns, Some(1_000_000_000));
        assert_eq!(ev.idle_ns(), Some(1_000_000_000));
        assert_eq!(ev.age_ns, Some(2_000_000_000));
    }

    #[test]
    fn unknown_values_stay_unknown() {
        let mut raw = rst(kind::RST_SENT);
        raw.reason = UNKNOWN_U32;
        raw.idle_send_jiffies = UNKNOWN_U32;
        raw.owner = Default::default();
        let ev = Decoder::new(Some(250)).decode(&bytes(&raw)).unwrap();
        assert_eq!(ev.rst_reason, None);
        assert_eq!(ev.idle_send_ns, None);
        assert_eq!(ev.owner, None);
        // Without HZ no idle time is guessed.
        let ev = Decoder::new(None)
            .decode(&bytes(&rst(kind::RST_RECEIVED)))
            .unwrap();
        assert_eq!(ev.idle_recv_ns, None);
        assert_eq!(ev.rst_reason, None, "received resets carry no reason");
    }

    #[test]
    fn ipv6_and_v4_mapped() {
        let mut raw = rst(kind::RST_RECEIVED);
        raw.family = 10;
        raw.daddr = "::ffff:10.0.0.2".parse::<Ipv6Addr>().unwrap().octets();
        let ev = Decoder::new(Some(250)).decode(&bytes(&raw)).unwrap();
        assert!(ev.remote.is_ipv6());
        assert_eq!(ev.remote_ip().to_string(), "10.0.0.2");
    }

    #[test]
    fn rejects_bad_records() {
        let d = Decoder::new(Some(250));
        assert_eq!(d.decode(&[0u8; 12]), Err(DecodeError::Size(12)));
        let mut raw = rst(99);
        assert_eq!(d.decode(&bytes(&raw)), Err(DecodeError::Kind(99)));
        raw = rst(kind::STATE);
        raw.family = 7;
        assert_eq!(d.decode(&bytes(&raw)), Err(DecodeError::Family(7)));
    }

    #[test]
    fn connect_latency() {
        let mut raw = rst(kind::CONNECT);
        raw.old_state = 2;
        raw.new_state = 1;
        raw.duration_ns = 50_000_000;
        let ev = Decoder::new(Some(250)).decode(&bytes(&raw)).unwrap();
        assert_eq!(ev.transition, Some((2, 1)));
        assert_eq!(ev.connect_ns, Some(50_000_000));
        assert_eq!(ev.state, None);
        assert_eq!(ev.idle_ns(), None);
    }

    #[test]
    fn drop_socket_error_reuse_and_segment() {
        let d = Decoder::new(Some(250));
        let mut raw = rst(kind::DROP);
        raw.reason = 12;
        raw.tcp_flags = 0x02;
        raw.direction = direction::OUT;
        let ev = d.decode(&bytes(&raw)).unwrap();
        assert_eq!(ev.kind, EventKind::Drop);
        let dropped = ev.dropped().unwrap();
        assert_eq!(dropped.reason, Some(12));
        assert_eq!(dropped.tcp_flags, 0x02);
        assert!(!dropped.incoming);
        assert_eq!(ev.rst_reason, None, "a drop reason is not a reset reason");
        assert_eq!(ev.idle_ns(), None);

        let mut raw = rst(kind::SOCKET_ERROR);
        raw.err = 104;
        let ev = d.decode(&bytes(&raw)).unwrap();
        assert_eq!(ev.socket_errno(), Some(104));
        assert_eq!(ev.err, None, "err is the retransmit's transmit error");
        assert_eq!(ev.age_ns, Some(2_000_000_000));

        let mut raw = rst(kind::REUSE);
        raw.idle_send_jiffies = 200;
        raw.idle_recv_jiffies = 201;
        let ev = d.decode(&bytes(&raw)).unwrap();
        assert_eq!(ev.idle_ns(), Some(800_000_000));
        assert_eq!(ev.detail, Detail::None);

        let mut raw = rst(kind::RETRANSMIT);
        raw.seg_len = 2896;
        raw.segs = 2;
        raw.mss = 1448;
        raw.pmtu = 1500;
        let ev = d.decode(&bytes(&raw)).unwrap();
        let seg = ev.segment().unwrap();
        assert_eq!(
            (seg.len, seg.segs, seg.mss, seg.pmtu),
            (Some(2896), Some(2), Some(1448), Some(1500))
        );
        assert_eq!(seg.is_full_size(), Some(true));
        raw.seg_len = UNKNOWN_U32;
        raw.mss = 0;
        let seg = *d.decode(&bytes(&raw)).unwrap().segment().unwrap();
        assert_eq!((seg.len, seg.mss), (None, None));
    }

    #[test]
    fn idle_at_first_close() {
        let mut raw = rst(kind::STATE);
        raw.old_state = 1;
        raw.new_state = 8; // CLOSE_WAIT: the peer closed
        raw.idle_send_jiffies = 500;
        raw.idle_recv_jiffies = 1;
        raw.age_ns = 3_000_000_000;
        let ev = Decoder::new(Some(250)).decode(&bytes(&raw)).unwrap();
        assert_eq!(ev.transition, Some((1, 8)));
        assert_eq!(ev.idle_send_ns, Some(2_000_000_000));
        assert_eq!(ev.age_ns, Some(3_000_000_000));
    }
}
