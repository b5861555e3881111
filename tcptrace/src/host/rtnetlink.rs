//! The interfaces of the caller's network namespace and the TC objects on
//! them (clsact qdiscs, BPF filters), through rtnetlink as `ip link` and
//! `tc` read them. Every call works in the namespace of the calling
//! thread: run it inside `netns::run_in` for another one.

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage},
    tc::{TcAttribute, TcFilterBpfOption, TcHandle, TcMessage, TcOption},
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_ROUTE};

/// Why an rtnetlink request failed.
#[derive(Debug, thiserror::Error)]
pub enum RtnetlinkError {
    /// The socket could not be opened, written or read, or the kernel
    /// refused the request (with its errno).
    #[error("rtnetlink: {context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A reply that did not decode.
    #[error("rtnetlink: undecodable reply: {0}")]
    Decode(String),
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index (unique within its namespace only).
    pub index: u32,
    /// Its name (`eth0`, `veth0`, ...).
    pub name: String,
    /// ARPHRD_* link type (`ARPHRD_ETHER` 1, `ARPHRD_LOOPBACK` 772, ...).
    pub link_type: u16,
    /// `IFF_LOOPBACK`.
    pub loopback: bool,
}

impl Link {
    /// Its frames start with a 14-byte Ethernet header (Ethernet, veth,
    /// bridges, bonds, loopback), which is what the TC programs parse.
    pub fn has_ethernet_header(&self) -> bool {
        self.link_type == u16::from(LinkLayerType::Ether)
            || self.link_type == u16::from(LinkLayerType::Loopback)
    }
}

/// A TC hook of an interface's clsact qdisc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// Packets received.
    Ingress,
    /// Packets sent.
    Egress,
}

impl Hook {
    /// Both hooks.
    pub const BOTH: [Hook; 2] = [Hook::Ingress, Hook::Egress];

    fn parent(self) -> TcHandle {
        TcHandle {
            major: TcHandle::CLSACT.major,
            minor: match self {
                Hook::Ingress => TcHandle::MIN_INGRESS,
                Hook::Egress => TcHandle::MIN_EGRESS,
            },
        }
    }
}

/// A filter on a clsact hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Its hook.
    pub hook: Hook,
    /// Its priority and protocol (`tcm_info`: priority << 16 | protocol).
    pub info: u32,
    /// Its handle.
    pub handle: u32,
    /// Filter kind (`bpf`, `u32`, `flower`, ...).
    pub kind: String,
    /// A BPF filter's program name (`TCA_BPF_NAME`), if any.
    pub bpf_name: Option<String>,
}

impl Filter {
    /// Its priority.
    pub fn priority(&self) -> u16 {
        (self.info >> 16) as u16
    }
}

/// The interfaces of the caller's namespace.
///
/// # Errors
/// The dump fails (no rtnetlink: not expected on Linux).
pub fn links() -> Result<Vec<Link>, RtnetlinkError> {
    let mut request = LinkMessage::default();
    request.header.index = 0;
    let replies = exchange(
        RouteNetlinkMessage::GetLink(request),
        NLM_F_REQUEST | NLM_F_DUMP,
    )?;
    Ok(replies
        .into_iter()
        .filter_map(|reply| match reply {
            RouteNetlinkMessage::NewLink(link) => {
                let name = link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(name) => Some(name.clone()),
                    _ => None,
                })?;
                Some(Link {
                    index: link.header.index,
                    name,
                    link_type: u16::from(link.header.link_layer_type),
                    loopback: link.header.flags.contains(LinkFlags::Loopback),
                })
            }
            _ => None,
        })
        .collect())
}

/// The filters on one hook of interface `index`'s clsact qdisc (none if
/// it has no clsact qdisc).
///
/// # Errors
/// The dump fails for another reason.
pub fn filters(index: u32, hook: Hook) -> Result<Vec<Filter>, RtnetlinkError> {
    let mut request = TcMessage::default();
    request.header.index = index as i32;
    request.header.parent = hook.parent();
    let replies = match exchange(
        RouteNetlinkMessage::GetTrafficFilter(request),
        NLM_F_REQUEST | NLM_F_DUMP,
    ) {
        Ok(replies) => replies,
        // No clsact qdisc: no hook, so no filter.
        Err(RtnetlinkError::Io { source, .. })
            if source.raw_os_error() == Some(libc::EINVAL)
                || source.raw_os_error() == Some(libc::ENOENT) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    Ok(replies
        .into_iter()
        .filter_map(|reply| match reply {
            RouteNetlinkMessage::NewTrafficFilter(filter) => {
                let kind = filter.attributes.iter().find_map(|a| match a {
                    TcAttribute::Kind(kind) => Some(kind.clone()),
                    _ => None,
                })?;
                let bpf_name = filter.attributes.iter().find_map(|a| match a {
                    TcAttribute::Options(options) => options.iter().find_map(|o| match o {
                        TcOption::Bpf(TcFilterBpfOption::ProgName(name)) => Some(name.clone()),
                        _ => None,
                    }),
                    _ => None,
                });
                // The dump also lists each priority's chain head (handle 0).
                (filter.header.handle != TcHandle::UNSPEC).then(|| Filter {
                    hook,
                    info: filter.header.info,
                    handle: u32::from(filter.header.handle),
                    kind,
                    bpf_name,
                })
            }
            _ => None,
        })
        .collect())
}

/// Deletes one filter (as found by `filters`) from interface `index`.
///
/// # Errors
/// The kernel refuses (it is gone already: ENOENT).
pub fn delete_filter(index: u32, filter: &Filter) -> Result<(), RtnetlinkError> {
    let mut request = TcMessage::default();
    request.header.index = index as i32;
    request.header.parent = filter.hook.parent();
    request.header.handle = TcHandle::from(filter.handle);
    request.header.info = filter.info;
    exchange(
        RouteNetlinkMessage::DelTrafficFilter(request),
        NLM_F_REQUEST | NLM_F_ACK,
    )
    .map(drop)
}

/// Whether interface `index` has a clsact qdisc.
///
/// # Errors
/// The dump fails.
pub fn has_clsact(index: u32) -> Result<bool, RtnetlinkError> {
    let replies = exchange(
        RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
        NLM_F_REQUEST | NLM_F_DUMP,
    )?;
    Ok(replies.into_iter().any(|reply| match reply {
        RouteNetlinkMessage::NewQueueDiscipline(qdisc) => {
            qdisc.header.index == index as i32
                && qdisc
                    .attributes
                    .iter()
                    .any(|a| matches!(a, TcAttribute::Kind(kind) if kind == "clsact"))
        }
        _ => false,
    }))
}

/// Deletes interface `index`'s clsact qdisc, and every filter on it.
///
/// # Errors
/// The kernel refuses (there is none: EINVAL / ENOENT).
pub fn delete_clsact(index: u32) -> Result<(), RtnetlinkError> {
    let mut request = TcMessage::default();
    request.header.index = index as i32;
    request.header.parent = TcHandle::CLSACT;
    request.header.handle = TcHandle {
        major: TcHandle::CLSACT.major,
        minor: 0,
    };
    request.attributes.push(TcAttribute::Kind("clsact".into()));
    exchange(
        RouteNetlinkMessage::DelQueueDiscipline(request),
        NLM_F_REQUEST | NLM_F_ACK,
    )
    .map(drop)
}

/// Sends one request and collects the replies until the dump is done or
/// the kernel acknowledges.
fn exchange(
    message: RouteNetlinkMessage,
    flags: u16,
) -> Result<Vec<RouteNetlinkMessage>, RtnetlinkError> {
    let io = |context| move |source| RtnetlinkError::Io { context, source };
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(io("cannot open a netlink socket"))?;
    socket
        .bind_auto()
        .map_err(io("cannot bind the netlink socket"))?;
    socket
        .connect(&NetlinkAddr::new(0, 0))
        .map_err(io("cannot connect the netlink socket"))?;
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket
        .send(&buf, 0)
        .map_err(io("cannot send the request"))?;
    let mut replies = Vec::new();
    loop {
        let (datagram, _) = socket
            .recv_from_full()
            .map_err(io("cannot receive the reply"))?;
        let mut rest = &datagram[..];
        while !rest.is_empty() {
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                .map_err(|e| RtnetlinkError::Decode(e.to_string()))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(replies),
                NetlinkPayload::Error(error) => {
                    // An ACK is an error message with code 0.
                    return match error.code {
                        None => Ok(replies),
                        Some(_) => Err(RtnetlinkError::Io {
                            context: "the kernel refused the request",
                            source: error.to_io(),
                        }),
                    };
                }
                NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                _ => {}
            }
            if length == 0 || length > rest.len() {
                break;
            }
            rest = &rest[length.next_multiple_of(4).min(rest.len())..];
        }
        if flags & NLM_F_DUMP == 0 && flags & NLM_F_ACK == 0 {
            return Ok(replies);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_with_its_type() {
        // Every namespace has lo; reading it needs no privilege.
        let links = links().unwrap();
        let lo = links.iter().find(|l| l.name == "lo").expect("lo");
        assert!(lo.loopback);
        assert_eq!(lo.link_type, 772);
        assert!(lo.has_ethernet_header());
        assert_eq!(lo.index, 1);
    }

    #[test]
    fn hooks_are_the_clsact_minors() {
        assert_eq!(u32::from(Hook::Ingress.parent()), 0xffff_fff2);
        assert_eq!(u32::from(Hook::Egress.parent()), 0xffff_fff3);
    }
}
