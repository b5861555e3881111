//! Ring buffer items -> `TcpEvent`, in one checked function: length
//! checked, read unaligned, every number converted with `TryFrom`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tcptrace_common::{
    AF_INET, AF_INET6, EVENT_SIZE, EVENT_WITH_PEER_SIZE, Event, EventWithPeer, NO_LATENCY, OpenKey,
    UNKNOWN_U32, direction, kind, opened_by,
};

use crate::{
    event::{Comm, Detail, Dropped, EventKind, OpenCount, Owner, Queues, Segment, TcpEvent},
    origin,
};

/// A ring buffer record that is not an event this binary knows.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The record has the wrong length (a kernel/userspace build mismatch).
    #[error(
        "ring buffer item of {0} bytes, expected {EVENT_SIZE} (or {EVENT_WITH_PEER_SIZE} for rst_received)"
    )]
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
    /// Whether resets carry `data_segs_out` in `seg_len` (false for
    /// record files before format version 4, which hold 0 there).
    reset_segs: bool,
}

impl Decoder {
    /// A decoder for a kernel ticking `hz` times a second (`None`: idle times unknown).
    pub fn new(hz: Option<u32>) -> Decoder {
        Decoder {
            hz,
            ns_per_jiffy: hz
                .filter(|hz| *hz > 0)
                .map(|hz| 1_000_000_000 / u64::from(hz)),
            reset_segs: true,
        }
    }

    /// A decoder for the records of a file of record format `version`:
    /// before version 4 a reset's `seg_len` was always 0, not the data
    /// segments sent, and is decoded as unknown.
    pub fn for_record(hz: Option<u32>, version: u32) -> Decoder {
        Decoder {
            reset_segs: version >= 4,
            ..Decoder::new(hz)
        }
    }

    /// The kernel's jiffies per second this decoder converts with (what a
    /// record file keeps, so replay decodes the same way).
    pub fn hz(&self) -> Option<u32> {
        self.hz
    }

    /// Decodes one ring buffer record: length checked, read unaligned.
    /// An `rst_received` record may carry the peer's profile after the
    /// event (TC programs in its namespace): its RST is then judged.
    pub fn decode(&self, bytes: &[u8]) -> Result<TcpEvent, DecodeError> {
        match bytes.len() {
            EVENT_SIZE => {
                // SAFETY: the length is checked; Event is plain integers
                // (every bit pattern valid); read_unaligned copes with any
                // alignment.
                let raw: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
                self.from_raw(&raw)
            }
            EVENT_WITH_PEER_SIZE => {
                // SAFETY: as above, for the larger record.
                let raw: EventWithPeer = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
                if raw.event.kind != kind::RST_RECEIVED {
                    return Err(DecodeError::Size(bytes.len()));
                }
                let mut event = self.from_raw(&raw.event)?;
                if let Detail::Reset(_, origin) = &mut event.detail {
                    *origin = Some(origin::judge(raw.event.ts_ns, &raw.peer));
                }
                Ok(event)
            }
            other => Err(DecodeError::Size(other)),
        }
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
            accepted: match raw.opened_by {
                opened_by::CONNECT => Some(false),
                opened_by::ACCEPT => Some(true),
                _ => None,
            },
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
            detail: detail(kind, raw, jiffies, self.reset_segs),
        })
    }
}

/// Converts one `OPENS` entry (`n` opens of `key`), every number checked.
///
/// # Errors
/// An address family that is neither AF_INET nor AF_INET6.
pub fn open_count(key: &OpenKey, n: u64) -> Result<OpenCount, DecodeError> {
    let ip = match u16::from(key.family) {
        AF_INET => IpAddr::from(v4(&key.peer_addr)),
        AF_INET6 => IpAddr::from(Ipv6Addr::from(key.peer_addr)),
        other => return Err(DecodeError::Family(other as u8)),
    };
    Ok(OpenCount {
        owner: owner(&key.owner),
        netns: (key.netns != 0).then_some(key.netns),
        peer: SocketAddr::new(ip.to_canonical(), key.peer_port),
        passive: key.passive != 0,
        latency_bucket: (key.latency_bucket != NO_LATENCY).then_some(key.latency_bucket),
        n,
    })
}

fn detail(
    kind: EventKind,
    raw: &Event,
    jiffies: impl Fn(u32) -> Option<u64>,
    reset_segs: bool,
) -> Detail {
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
        EventKind::RstSent | EventKind::RstReceived => Detail::Reset(
            Queues {
                unacked: (raw.unacked != UNKNOWN_U32).then_some(raw.unacked),
                unread: (raw.unread != UNKNOWN_U32).then_some(raw.unread),
                idle_data_recv_ns: jiffies(raw.idle_data_recv_jiffies),
                // RST records carry `tcp_sock.data_segs_out` in `seg_len`.
                data_segs_out: (reset_segs && raw.seg_len != UNKNOWN_U32).then_some(raw.seg_len),
            },
            None,
        ),
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
            // What the reset program writes when the socket's data
            // segments are unknown.
            seg_len: UNKNOWN_U32,
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
    fn resets_carry_what_the_connection_still_held() {
        let mut raw = rst(kind::RST_RECEIVED);
        raw.unacked = 0;
        raw.unread = 5;
        raw.idle_data_recv_jiffies = 300;
        let d = Decoder::new(Some(250));
        let ev = d.decode(&bytes(&raw)).unwrap();
        let q = *ev.queues().unwrap();
        assert_eq!(
            (q.unacked, q.unread, q.idle_data_recv_ns),
            (Some(0), Some(5), Some(1_200_000_000))
        );
        assert_eq!(q.drained(), Some(false), "5 bytes unread were lost");
        // Sent 1.0 s ago, last data received 1.2 s ago: answered.
        assert_eq!(ev.answered(), Some(true));
        raw.unread = 0;
        raw.idle_data_recv_jiffies = 100;
        let ev = d.decode(&bytes(&raw)).unwrap();
        assert_eq!(ev.queues().unwrap().drained(), Some(true));
        assert_eq!(
            ev.answered(),
            Some(false),
            "a request came after the last send"
        );
        raw.unacked = UNKNOWN_U32;
        raw.idle_data_recv_jiffies = UNKNOWN_U32;
        let ev = d.decode(&bytes(&raw)).unwrap();
        assert_eq!(ev.queues().unwrap().drained(), None);
        assert_eq!(ev.answered(), None);
    }

    /// A reset's `seg_len` is the socket's `data_segs_out`: 0 is "never
    /// sent a data segment", which makes a same-jiffy send/receive pair
    /// no answer; unknown stays unknown, and so does every value in a
    /// record file before format version 4 (whose resets hold 0 there).
    #[test]
    fn resets_carry_the_data_segments_sent() {
        let mut raw = rst(kind::RST_SENT);
        raw.unacked = 0;
        raw.unread = 0;
        // The passive child's lsndtime and lrcvtime: the same jiffy.
        raw.idle_send_jiffies = 251;
        raw.idle_data_recv_jiffies = 251;
        let d = Decoder::new(Some(250));
        assert_eq!(
            d.decode(&bytes(&raw))
                .unwrap()
                .queues()
                .unwrap()
                .data_segs_out,
            None
        );
        assert_eq!(d.decode(&bytes(&raw)).unwrap().answered(), Some(true));
        raw.seg_len = 0;
        let ev = d.decode(&bytes(&raw)).unwrap();
        assert_eq!(ev.queues().unwrap().data_segs_out, Some(0));
        assert_eq!(ev.answered(), Some(false), "nothing was ever sent");
        raw.seg_len = 3;
        let ev = d.decode(&bytes(&raw)).unwrap();
        assert_eq!(ev.queues().unwrap().data_segs_out, Some(3));
        assert_eq!(ev.answered(), Some(true));
        // Received resets too.
        raw.kind = kind::RST_RECEIVED;
        assert_eq!(
            d.decode(&bytes(&raw))
                .unwrap()
                .queues()
                .unwrap()
                .data_segs_out,
            Some(3)
        );
        // Old recordings: 0 there meant nothing.
        raw.seg_len = 0;
        for version in [1, 2, 3] {
            let old = Decoder::for_record(Some(250), version);
            let ev = old.decode(&bytes(&raw)).unwrap();
            assert_eq!(
                ev.queues().unwrap().data_segs_out,
                None,
                "version {version}"
            );
            assert_eq!(ev.answered(), Some(true));
        }
        let ev = Decoder::for_record(Some(250), 4)
            .decode(&bytes(&raw))
            .unwrap();
        assert_eq!(ev.queues().unwrap().data_segs_out, Some(0));
        // A retransmit's seg_len stays its segment's length.
        let mut re = rst(kind::RETRANSMIT);
        re.seg_len = 1448;
        let ev = Decoder::for_record(Some(250), 3)
            .decode(&bytes(&re))
            .unwrap();
        assert_eq!(ev.segment().unwrap().len, Some(1448));
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
    fn a_received_reset_with_the_peers_profile_is_judged() {
        use tcptrace_common::{PeerProfile, RstSeen, profile_known};
        let mut raw = EventWithPeer {
            event: rst(kind::RST_RECEIVED),
            peer: PeerProfile {
                segments: 3,
                ts_segments: 3,
                ttl_min: 63,
                ttl_max: 63,
                known: profile_known::PEER_SEQ,
                rst: RstSeen {
                    ts_ns: 4,
                    ttl: 64,
                    tcp_flags: 0x04,
                    ..RstSeen::default()
                },
                ..PeerProfile::default()
            },
        };
        // SAFETY: EventWithPeer is repr(C) plain data.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const EventWithPeer).cast::<u8>(),
                EVENT_WITH_PEER_SIZE,
            )
        }
        .to_vec();
        let ev = Decoder::new(Some(250)).decode(&bytes).unwrap();
        let p = ev.provenance().expect("judged");
        assert_eq!(p.origin, origin::Origin::Middlebox);
        assert_eq!(p.hops_closer, 1);
        assert_eq!(ev.owner.as_ref().unwrap().comm, "curl");
        // Only received resets come with a profile.
        raw.event.kind = kind::RST_SENT;
        // SAFETY: as above.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const EventWithPeer).cast::<u8>(),
                EVENT_WITH_PEER_SIZE,
            )
        };
        assert_eq!(
            Decoder::new(Some(250)).decode(bytes),
            Err(DecodeError::Size(EVENT_WITH_PEER_SIZE))
        );
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

    #[test]
    fn open_counts_decode_checked() {
        let mut key = OpenKey {
            owner: rst(kind::CONNECT).owner,
            netns: 4026531840,
            peer_port: 443,
            latency_bucket: tcptrace_common::log_bucket(1_500_000),
            passive: 0,
            family: 10,
            ..OpenKey::default()
        };
        // A v4-mapped peer is filed under its IPv4 address.
        key.peer_addr[10..12].copy_from_slice(&[0xff, 0xff]);
        key.peer_addr[12..].copy_from_slice(&[10, 0, 0, 2]);
        let open = open_count(&key, 7).unwrap();
        assert_eq!(open.peer, "10.0.0.2:443".parse().unwrap());
        assert_eq!(open.owner.as_ref().map(|o| o.pid), Some(42));
        assert_eq!(open.n, 7);
        assert!(!open.passive);
        let b = open.latency_bucket.unwrap();
        assert!(tcptrace_common::log_bucket_lower_bound(b) <= 1_500_000);
        assert!(tcptrace_common::log_bucket_lower_bound(b + 1) > 1_500_000);
        key.latency_bucket = NO_LATENCY;
        key.passive = 1;
        let open = open_count(&key, 1).unwrap();
        assert_eq!((open.latency_bucket, open.passive), (None, true));
        key.family = 9;
        assert_eq!(open_count(&key, 1), Err(DecodeError::Family(9)));
    }
}
