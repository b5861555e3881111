//! Every TCP socket of the current network namespace, read through
//! netlink `sock_diag` as `ss` does (no /proc/net/tcp text, no shell-out).

use std::{fmt, io, net::SocketAddr};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags, nlas::Nla},
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};
use serde::Serialize;

/// Why the sock_diag dump failed.
#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    /// The netlink socket could not be opened, bound, written or read.
    #[error("netlink sock_diag: {context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A reply that did not decode, with netlink's message.
    #[error("netlink sock_diag: undecodable reply: {0}")]
    Decode(String),
}

/// TCP states, with the kernel's numbering (include/net/tcp_states.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    /// `TCP_ESTABLISHED` (1).
    Established,
    /// `TCP_SYN_SENT` (2).
    SynSent,
    /// `TCP_SYN_RECV` (3).
    SynRecv,
    /// `TCP_FIN_WAIT1` (4).
    FinWait1,
    /// `TCP_FIN_WAIT2` (5).
    FinWait2,
    /// `TCP_TIME_WAIT` (6).
    TimeWait,
    /// `TCP_CLOSE` (7).
    Close,
    /// `TCP_CLOSE_WAIT` (8).
    CloseWait,
    /// `TCP_LAST_ACK` (9).
    LastAck,
    /// `TCP_LISTEN` (10).
    Listen,
    /// `TCP_CLOSING` (11).
    Closing,
    /// `TCP_NEW_SYN_RECV` (12): a request socket, before the handshake completes.
    NewSynRecv,
}

impl TcpState {
    /// Every state, in kernel number order.
    pub const ALL: [TcpState; 12] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
        TcpState::NewSynRecv,
    ];

    /// The name as `ss` and the kernel print it, without `TCP_`: `ESTABLISHED`, `TIME_WAIT`, ...
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::NewSynRecv => "NEW_SYN_RECV",
        }
    }
}

impl TryFrom<u8> for TcpState {
    type Error = u8;

    fn try_from(value: u8) -> Result<Self, u8> {
        match value {
            1..=12 => Ok(Self::ALL[usize::from(value) - 1]),
            other => Err(other),
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One socket as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSocket {
    /// The socket's state.
    pub state: TcpState,
    /// This host's end.
    pub local: SocketAddr,
    /// The peer's end (`0.0.0.0:0` for a listener).
    pub remote: SocketAddr,
    /// LISTEN: connections waiting in the accept queue; otherwise unread bytes.
    pub recv_q: u32,
    /// LISTEN: the accept queue limit, min(backlog, somaxconn); otherwise unacked bytes.
    pub send_q: u32,
    /// 0 for sockets without a file (TIME_WAIT, not yet accepted).
    pub inode: u64,
    /// Owner's user id (the socket's `sk_uid`).
    pub uid: u32,
    /// `tcp_info` when the kernel sent it (not for TIME_WAIT or request sockets).
    pub info: Option<TcpInfo>,
}

/// The few `struct tcp_info` fields a snapshot shows. They sit at fixed
/// offsets that have not moved since Linux 2.6 (the struct only grows at
/// the end), so any kernel's record decodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TcpInfo {
    /// Consecutive retransmits of the current segment (0 when healthy).
    pub retransmits: u8,
    /// Unanswered zero-window or keepalive probes.
    pub probes: u8,
    /// Retransmission timeout, µs (`tcpi_rto`).
    pub rto_us: u32,
    /// Segments sent and not yet acknowledged (`tcpi_unacked`).
    pub unacked: u32,
    /// Segments considered lost (`tcpi_lost`).
    pub lost: u32,
    /// Milliseconds since data was last sent (`tcpi_last_data_sent`).
    pub last_data_sent_ms: u32,
    /// Milliseconds since data was last received (`tcpi_last_data_recv`).
    pub last_data_recv_ms: u32,
    /// Milliseconds since an ACK was last received (`tcpi_last_ack_recv`).
    pub last_ack_recv_ms: u32,
    /// Smoothed round-trip time, µs (`tcpi_rtt`).
    pub rtt_us: u32,
    /// Round-trip time variance, µs (`tcpi_rttvar`).
    pub rttvar_us: u32,
    /// Retransmits over the connection's life (`tcpi_total_retrans`).
    pub total_retrans: u32,
}

impl TcpInfo {
    /// Length of the prefix decoded here (up to `tcpi_total_retrans`).
    pub const MIN_LEN: usize = 104;

    /// Decodes a raw INET_DIAG_INFO attribute; `None` if it is too short.
    pub fn decode(bytes: &[u8]) -> Option<TcpInfo> {
        if bytes.len() < Self::MIN_LEN {
            return None;
        }
        let u32_at = |offset: usize| {
            let mut word = [0; 4];
            word.copy_from_slice(&bytes[offset..offset + 4]);
            u32::from_ne_bytes(word)
        };
        Some(TcpInfo {
            retransmits: bytes[2],
            probes: bytes[3],
            rto_us: u32_at(8),
            unacked: u32_at(24),
            lost: u32_at(32),
            last_data_sent_ms: u32_at(44),
            last_data_recv_ms: u32_at(52),
            last_ack_recv_ms: u32_at(56),
            rtt_us: u32_at(68),
            rttvar_us: u32_at(72),
            total_retrans: u32_at(100),
        })
    }
}

/// Dumps the IPv4 and IPv6 TCP sockets of the caller's network namespace.
pub fn dump_tcp() -> Result<Vec<TcpSocket>, SockDiagError> {
    dump(StateFlags::all(), ExtensionFlags::INFO)
}

/// Dumps only the listening TCP sockets (their accept queues: `recv_q`
/// queued, `send_q` the limit), without `tcp_info`: cheap enough to
/// sample while watching.
pub fn dump_tcp_listeners() -> Result<Vec<TcpSocket>, SockDiagError> {
    dump(StateFlags::LISTEN, ExtensionFlags::empty())
}

fn dump(states: StateFlags, extensions: ExtensionFlags) -> Result<Vec<TcpSocket>, SockDiagError> {
    let io = |context| move |source| SockDiagError::Io { context, source };
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(io("cannot open a netlink socket"))?;
    socket
        .bind_auto()
        .map_err(io("cannot bind the netlink socket"))?;
    socket
        .connect(&NetlinkAddr::new(0, 0))
        .map_err(io("cannot connect the netlink socket"))?;
    let mut sockets = Vec::new();
    for family in [AF_INET, AF_INET6] {
        request_dump(&socket, family, states.clone(), extensions.clone())?;
        receive_dump(&socket, &mut sockets)?;
    }
    Ok(sockets)
}

fn request_dump(
    socket: &Socket,
    family: u8,
    states: StateFlags,
    extensions: ExtensionFlags,
) -> Result<(), SockDiagError> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let request = SockDiagMessage::InetRequest(InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions,
        states,
        socket_id: if family == AF_INET {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        },
    });
    let mut packet = NetlinkMessage::new(header, request.into());
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).map_err(|source| SockDiagError::Io {
        context: "cannot send the dump request",
        source,
    })?;
    Ok(())
}

fn receive_dump(socket: &Socket, into: &mut Vec<TcpSocket>) -> Result<(), SockDiagError> {
    loop {
        let (datagram, _) = socket
            .recv_from_full()
            .map_err(|source| SockDiagError::Io {
                context: "cannot receive the dump",
                source,
            })?;
        let mut rest = &datagram[..];
        while !rest.is_empty() {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(rest)
                .map_err(|e| SockDiagError::Decode(e.to_string()))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(error) => {
                    return Err(SockDiagError::Io {
                        context: "the kernel refused the dump",
                        source: error.to_io(),
                    });
                }
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    if let Some(socket) = from_response(&response) {
                        into.push(socket);
                    }
                }
                _ => {}
            }
            if length == 0 || length > rest.len() {
                break;
            }
            rest = &rest[length..];
        }
    }
}

fn from_response(response: &InetResponse) -> Option<TcpSocket> {
    let header = &response.header;
    // A state this build does not know is skipped rather than guessed.
    let state = TcpState::try_from(header.state).ok()?;
    let id = &header.socket_id;
    let info = response.nlas.iter().find_map(|nla| match nla {
        Nla::TcpInfo(bytes) => TcpInfo::decode(bytes),
        _ => None,
    });
    Some(TcpSocket {
        state,
        local: canonical(SocketAddr::new(id.source_address, id.source_port)),
        remote: canonical(SocketAddr::new(id.destination_address, id.destination_port)),
        recv_q: header.recv_queue,
        send_q: header.send_queue,
        inode: u64::from(header.inode),
        uid: header.uid,
        info,
    })
}

/// Shows an IPv4 peer of a dual-stack socket (`::ffff:10.0.0.1`) as IPv4,
/// so it groups with the same peer reached over an IPv4 socket.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_the_kernel_numbering() {
        assert_eq!(TcpState::try_from(1), Ok(TcpState::Established));
        assert_eq!(TcpState::try_from(6), Ok(TcpState::TimeWait));
        assert_eq!(TcpState::try_from(10), Ok(TcpState::Listen));
        assert_eq!(TcpState::try_from(12), Ok(TcpState::NewSynRecv));
        assert_eq!(TcpState::try_from(0), Err(0));
        assert_eq!(TcpState::try_from(13), Err(13));
    }

    #[test]
    fn tcp_info_decodes_fixed_offsets() {
        let mut raw = vec![0u8; 232];
        raw[2] = 3; // retransmits
        raw[8..12].copy_from_slice(&204_000u32.to_ne_bytes());
        raw[44..48].copy_from_slice(&1500u32.to_ne_bytes());
        raw[52..56].copy_from_slice(&2500u32.to_ne_bytes());
        raw[68..72].copy_from_slice(&840u32.to_ne_bytes());
        raw[100..104].copy_from_slice(&17u32.to_ne_bytes());
        let info = TcpInfo::decode(&raw).unwrap();
        assert_eq!(info.retransmits, 3);
        assert_eq!(info.rto_us, 204_000);
        assert_eq!(info.last_data_sent_ms, 1500);
        assert_eq!(info.last_data_recv_ms, 2500);
        assert_eq!(info.rtt_us, 840);
        assert_eq!(info.total_retrans, 17);
        assert_eq!(TcpInfo::decode(&raw[..TcpInfo::MIN_LEN - 1]), None);
        assert!(TcpInfo::decode(&raw[..TcpInfo::MIN_LEN]).is_some());
    }

    #[test]
    fn dual_stack_peers_show_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:80".parse().unwrap();
        assert_eq!(canonical(mapped), "10.1.2.3:80".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn dumps_this_namespace_without_root() {
        // sock_diag dumps need no privilege; a listener of our own must show.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sockets = dump_tcp().unwrap();
        let ours = sockets
            .iter()
            .find(|s| s.state == TcpState::Listen && s.local.port() == port)
            .expect("our listener in the dump");
        assert_ne!(ours.inode, 0);
    }
}
