//! Synthesized event streams for unit tests of the aggregator and the
//! diagnosis rules: what the tracer emits, without a kernel.

use std::{collections::BTreeMap, net::SocketAddr};

use crate::{
    event::{EventKind, Owner, TcpEvent},
    kernel::names::Names,
};

/// The kernel's state names by number (include/net/tcp_states.h).
pub const STATES: [&str; 13] = [
    "",
    "TCP_ESTABLISHED",
    "TCP_SYN_SENT",
    "TCP_SYN_RECV",
    "TCP_FIN_WAIT1",
    "TCP_FIN_WAIT2",
    "TCP_TIME_WAIT",
    "TCP_CLOSE",
    "TCP_CLOSE_WAIT",
    "TCP_LAST_ACK",
    "TCP_LISTEN",
    "TCP_CLOSING",
    "TCP_NEW_SYN_RECV",
];

/// `enum sk_rst_reason` as Linux 6.12+ numbers it.
pub const REASONS: [&str; 17] = [
    "NOT_SPECIFIED",
    "NO_SOCKET",
    "TCP_INVALID_ACK_SEQUENCE",
    "TCP_RFC7323_PAWS",
    "TCP_TOO_OLD_ACK",
    "TCP_ACK_UNSENT_DATA",
    "TCP_FLAGS",
    "TCP_OLD_ACK",
    "TCP_ABORT_ON_DATA",
    "TCP_TIMEWAIT_SOCKET",
    "INVALID_SYN",
    "TCP_ABORT_ON_CLOSE",
    "TCP_ABORT_ON_LINGER",
    "TCP_ABORT_ON_MEMORY",
    "TCP_STATE",
    "TCP_KEEPALIVE_TIMEOUT",
    "TCP_DISCONNECT_WITH_DATA",
];

/// Some `enum skb_drop_reason` values (numbers of this file only).
pub const DROP_REASONS: [(u32, &str); 5] = [
    (1, "NOT_SPECIFIED"),
    (2, "NO_SOCKET"),
    (12, "NETFILTER_DROP"),
    (40, "IP_INNOROUTES"),
    (93, "PKT_TOO_BIG"),
];

/// Names as a 6.18 kernel's format files give them.
pub fn names() -> Names {
    let states: BTreeMap<u32, String> = STATES
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, s)| (i as u32, s.to_string()))
        .collect();
    let reasons = REASONS
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u32, s.to_string()))
        .collect();
    Names::new(states, reasons).with_drop_reasons(
        DROP_REASONS
            .iter()
            .map(|(n, name)| (*n, name.to_string()))
            .collect(),
    )
}

/// The number of state `name` (`ESTABLISHED` -> 1).
pub fn state(name: &str) -> u8 {
    STATES
        .iter()
        .position(|s| s.strip_prefix("TCP_") == Some(name))
        .unwrap_or_else(|| panic!("no state {name}")) as u8
}

/// Builder: `ev(EventKind::RstReceived, 1_000).sock(7).owner(42, "curl")...`
#[derive(Debug, Clone)]
pub struct Ev(pub TcpEvent);

/// An event of `kind` at `at_ms` milliseconds, IPv4, no owner.
pub fn ev(kind: EventKind, at_ms: u64) -> Ev {
    Ev(TcpEvent {
        mono_ns: at_ms * 1_000_000,
        kind,
        sock: 1,
        netns: Some(4026531840),
        local: "10.0.0.1:40000".parse().unwrap(),
        remote: "10.0.0.2:443".parse().unwrap(),
        owner: None,
        accepted: None,
        transition: None,
        state: None,
        rst_reason: None,
        connect_ns: None,
        age_ns: None,
        idle_send_ns: None,
        idle_recv_ns: None,
        err: None,
        detail: Default::default(),
    })
}

impl Ev {
    /// The kernel socket address.
    pub fn sock(mut self, sock: u64) -> Ev {
        self.0.sock = sock;
        self
    }
    /// Owned by `pid` (`comm`).
    pub fn owner(mut self, pid: u32, comm: &str) -> Ev {
        self.0.owner = Some(Owner {
            pid,
            tid: pid,
            comm: comm.into(),
            cgroup_id: 0,
        });
        self
    }
    /// The local endpoint, `IP:PORT`.
    pub fn local(mut self, addr: &str) -> Ev {
        self.0.local = addr.parse::<SocketAddr>().unwrap();
        self
    }
    /// The remote endpoint, `IP:PORT`.
    pub fn remote(mut self, addr: &str) -> Ev {
        self.0.remote = addr.parse::<SocketAddr>().unwrap();
        self
    }
    /// A state change `old` -> `new` (names).
    pub fn transition(mut self, old: &str, new: &str) -> Ev {
        self.0.transition = Some((state(old), state(new)));
        self
    }
    /// The socket's state (names).
    pub fn state(mut self, name: &str) -> Ev {
        self.0.state = Some(state(name));
        self
    }
    /// An RST reason by name.
    pub fn reason(mut self, name: &str) -> Ev {
        let reason = REASONS.iter().position(|r| *r == name).expect("reason");
        self.0.rst_reason = Some(reason as u32);
        self
    }
    /// Connect latency or time to failure, ms.
    pub fn connect_ms(mut self, ms: f64) -> Ev {
        self.0.connect_ns = Some((ms * 1e6) as u64);
        self
    }
    /// Age at the reset, ms.
    pub fn age_ms(mut self, ms: u64) -> Ev {
        self.0.age_ns = Some(ms * 1_000_000);
        self
    }
    /// Idle since the last send and the last receive.
    pub fn idle_ms(mut self, send: u64, recv: u64) -> Ev {
        self.0.idle_send_ns = Some(send * 1_000_000);
        self.0.idle_recv_ns = Some(recv * 1_000_000);
        self
    }
    /// A drop with this kernel reason number and TCP flags.
    pub fn dropped(mut self, reason: u32, tcp_flags: u8) -> Ev {
        self.0.detail = crate::event::Detail::Drop(crate::event::Dropped {
            reason: Some(reason),
            tcp_flags,
            incoming: false,
        });
        self
    }
    /// A received packet dropped for `reason` with these TCP flags.
    pub fn dropped_incoming(mut self, reason: u32, tcp_flags: u8) -> Ev {
        self.0.detail = crate::event::Detail::Drop(crate::event::Dropped {
            reason: Some(reason),
            tcp_flags,
            incoming: true,
        });
        self
    }
    /// A socket error with this errno.
    pub fn socket_errno(mut self, errno: i32) -> Ev {
        self.0.detail = crate::event::Detail::SocketError { errno };
        self
    }
    /// A retransmitted segment of `len` bytes in `segs` segments.
    pub fn segment(mut self, len: u32, segs: u16, mss: u32) -> Ev {
        self.0.detail = crate::event::Detail::Segment(crate::event::Segment {
            len: Some(len),
            segs: Some(segs),
            mss: Some(mss),
            pmtu: Some(1500),
        });
        self
    }
    /// A received RST's origin: `hops_closer` 0 for the peer, more for
    /// a middlebox that many hops closer (TTL 64 against the peer's).
    pub fn origin(mut self, hops_closer: u8) -> Ev {
        use crate::origin::{IpIdPattern, Origin, Provenance};
        let queues = self.0.queues().copied().unwrap_or_default();
        self.0.detail = crate::event::Detail::Reset(
            queues,
            Some(Provenance {
                origin: if hops_closer == 0 {
                    Origin::Peer
                } else {
                    Origin::Middlebox
                },
                hops_closer,
                rst_ttl: 64
                    - if hops_closer == 0 {
                        3
                    } else {
                        3 - hops_closer.min(3)
                    },
                peer_ttl_min: 61,
                peer_ttl_max: 61,
                rst_flags: 0x04,
                rst_timestamp: false,
                v6: false,
                peer_ip_ids: IpIdPattern::Zero,
                peer_segments: 4,
                peer_timestamp_segments: 4,
                rst_ip_id: 0,
                peer_ip_id: 0,
                rst_flow_label: 0,
                peer_flow_label: 0,
                seq_offset: Some(0),
                ack_offset: None,
            }),
        );
        self
    }

    /// What a reset connection still held: unacknowledged and unread
    /// bytes, and ms since the last data arrived.
    pub fn queues(mut self, unacked: u32, unread: u32, data_recv_ms: u64) -> Ev {
        let origin = self.0.provenance().cloned();
        self.0.detail = crate::event::Detail::Reset(
            crate::event::Queues {
                unacked: Some(unacked),
                unread: Some(unread),
                idle_data_recv_ns: Some(data_recv_ms * 1_000_000),
                data_segs_out: None,
            },
            origin,
        );
        self
    }

    /// A reset's data segments sent (after `queues`).
    pub fn data_segs_out(mut self, n: u32) -> Ev {
        if let crate::event::Detail::Reset(q, _) = &mut self.0.detail {
            q.data_segs_out = Some(n);
        }
        self
    }
    /// The event.
    pub fn build(self) -> TcpEvent {
        self.0
    }
}

/// A client connection's life as the tracer reports it, as a starting
/// point: connect at `at_ms`.
pub fn connect(sock: u64, at_ms: u64, pid: u32, comm: &str, remote: &str) -> Vec<TcpEvent> {
    let local = format!("10.0.0.1:{}", 40_000 + sock % 20_000);
    vec![
        ev(EventKind::State, at_ms)
            .sock(sock)
            .owner(pid, comm)
            .local("10.0.0.1:0")
            .remote(remote)
            .transition("CLOSE", "SYN_SENT")
            .build(),
        ev(EventKind::Connect, at_ms)
            .sock(sock)
            .owner(pid, comm)
            .local(&local)
            .remote(remote)
            .transition("SYN_SENT", "ESTABLISHED")
            .connect_ms(0.2)
            .build(),
    ]
}

/// Events from `tcptrace trace --json` output (docs/events.md), state and
/// reason names mapped back to this file's numbering: recorded streams
/// replayed without a kernel.
pub fn from_ndjson(text: &str) -> Vec<TcpEvent> {
    use serde_json::Value;
    let kinds = EventKind::ALL;
    let u64_of = |v: &Value, k: &str| v[k].as_u64();
    let addr = |v: &Value, side: &str| -> SocketAddr {
        let ip: std::net::IpAddr = v[format!("{side}_addr")].as_str().unwrap().parse().unwrap();
        SocketAddr::new(ip, v[format!("{side}_port")].as_u64().unwrap() as u16)
    };
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("NDJSON line"))
        .filter(|v| v["type"] == "event")
        .map(|v| {
            let kind = *kinds
                .iter()
                .find(|k| k.name() == v["kind"])
                .expect("known kind");
            let owner = v["owner"].as_object().map(|o| Owner {
                pid: o["pid"].as_u64().unwrap() as u32,
                tid: o["tid"].as_u64().unwrap() as u32,
                comm: o["comm"].as_str().unwrap().into(),
                cgroup_id: o["cgroup_id"].as_u64().unwrap_or(0),
            });
            let transition = match (v["old_state"].as_str(), v["new_state"].as_str()) {
                (Some(old), Some(new)) => Some((state(old), state(new))),
                _ => None,
            };
            // Drop reasons share the field name but not the table.
            let reason = v["reason"]
                .as_str()
                .filter(|_| kind == EventKind::RstSent)
                .map(|r| REASONS.iter().position(|n| *n == r).expect("known reason") as u32);
            let sock = v["sock"].as_str().expect("sock");
            let detail = match kind {
                EventKind::SocketError => crate::event::Detail::SocketError {
                    errno: v["errno"].as_i64().expect("errno") as i32,
                },
                EventKind::Drop => crate::event::Detail::Drop(crate::event::Dropped {
                    reason: v["reason"].as_str().map(|r| {
                        DROP_REASONS
                            .iter()
                            .find(|(_, name)| *name == r)
                            .unwrap_or_else(|| panic!("drop reason {r} not in DROP_REASONS"))
                            .0
                    }),
                    tcp_flags: tcp_flags(v["tcp_flags"].as_str().unwrap_or("-")),
                    incoming: v["direction"] == "in",
                }),
                k if k.is_rst() => crate::event::Detail::Reset(
                    crate::event::Queues {
                        unacked: u64_of(&v, "unacked").map(|n| n as u32),
                        unread: u64_of(&v, "unread").map(|n| n as u32),
                        idle_data_recv_ns: u64_of(&v, "idle_data_recv_ns"),
                        data_segs_out: u64_of(&v, "data_segs_out").map(|n| n as u32),
                    },
                    None,
                ),
                _ => crate::event::Detail::default(),
            };
            TcpEvent {
                mono_ns: u64_of(&v, "mono_ns").unwrap(),
                kind,
                sock: u64::from_str_radix(sock.trim_start_matches("0x"), 16).unwrap(),
                netns: u64_of(&v, "netns").map(|n| n as u32),
                local: addr(&v, "local"),
                remote: addr(&v, "remote"),
                owner,
                accepted: None,
                transition,
                state: v["state"].as_str().map(state),
                rst_reason: reason,
                connect_ns: u64_of(&v, "connect_ns"),
                age_ns: u64_of(&v, "age_ns"),
                idle_send_ns: u64_of(&v, "idle_send_ns"),
                idle_recv_ns: u64_of(&v, "idle_recv_ns"),
                err: v["err"].as_i64().map(|e| e as i32),
                detail,
            }
        })
        .collect()
}

/// `PSH|ACK` -> its TCP header flags byte.
fn tcp_flags(names: &str) -> u8 {
    const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    names
        .split('|')
        .filter_map(|n| NAMES.iter().position(|f| *f == n))
        .fold(0, |flags, bit| flags | (1 << bit))
}
