//! Who really sent an RST: the RST's packet facts next to those of the
//! peer's own segments on the same connection, as the TC programs saw
//! them (`tcptrace_common::PeerProfile`).
//!
//! The strongest sign is the distance. Every router on the way lowers
//! the IP TTL (IPv6 hop limit) by one, and stacks start from one of a
//! few values (64 for Linux and macOS, 128 for Windows, 255 for network
//! gear), so `initial - received` is how many hops away the sender is.
//! An RST from fewer hops than the peer's segments came from a device on
//! the path (a load balancer that forgot the flow, a firewall's
//! `REJECT --reject-with tcp-reset`, a NAT gateway, an IDS): `middlebox`.
//! From the peer's distance: `peer`; and whether it came with the
//! connection's state (the timestamp option the peer always sends, its
//! IPv4 ID counter, its IPv6 flow label) tells the peer's socket from its
//! kernel answering for a connection it no longer knows (`stateless`).
//! Without an RST or a peer segment to compare: `unknown`, never a guess.

use tcptrace_common::{IP_ID_STEP_MAX, PeerProfile, profile_known, rst_options};

/// The TCP header's ACK flag.
const TCP_ACK: u8 = 0x10;

/// An RST the TC program saw up to this long before `tcp_receive_reset`
/// fired is the one that reset the connection (they run one after the
/// other in the same softirq; a socket busy in a system call processes
/// it when released, within microseconds).
pub const RST_MATCH_NS: u64 = 1_000_000_000;

/// Who sent a received RST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// The peer's host, from the peer's distance.
    Peer,
    /// A device on the path, closer than the peer.
    Middlebox,
    /// Nothing to compare with (no RST or no segment of the peer crossed
    /// a watched interface), or an RST from farther than the peer.
    Unknown,
}

impl Origin {
    /// `peer`, `middlebox` or `unknown`, as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Origin::Peer => "peer",
            Origin::Middlebox => "middlebox",
            Origin::Unknown => "unknown",
        }
    }
}

/// How the peer numbers its IPv4 packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpIdPattern {
    /// Fewer than two segments seen.
    Unknown,
    /// A counter per connection (Linux): each ID a little above the last.
    Incrementing,
    /// Always 0 (some stacks with DF set).
    Zero,
    /// Neither (random IDs, a global counter on a busy host).
    Other,
}

impl IpIdPattern {
    /// As in JSON.
    pub fn name(self) -> &'static str {
        match self {
            IpIdPattern::Unknown => "unknown",
            IpIdPattern::Incrementing => "incrementing",
            IpIdPattern::Zero => "zero",
            IpIdPattern::Other => "other",
        }
    }
}

/// A received RST's origin and the evidence for it. Compact and `Copy`:
/// it travels inside every `rst_received` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provenance {
    /// The verdict.
    pub origin: Origin,
    /// `Middlebox`: how many hops closer than the peer it was sent (>= 1).
    pub hops_closer: u8,
    /// The RST's IP TTL / hop limit; 0 when the RST crossed no watched
    /// interface (a TTL of 0 is never delivered).
    pub rst_ttl: u8,
    /// The peer's segments' TTL range (meaningful when `peer_segments > 0`).
    pub peer_ttl_min: u8,
    /// See `peer_ttl_min`.
    pub peer_ttl_max: u8,
    /// The RST's TCP flags byte.
    pub rst_flags: u8,
    /// The RST carried a timestamp option.
    pub rst_timestamp: bool,
    /// IPv6 (flow labels) rather than IPv4 (IDs).
    pub v6: bool,
    /// The peer's IPv4 ID behaviour.
    pub peer_ip_ids: IpIdPattern,
    /// The peer's segments seen before the RST, and how many of them
    /// carried a timestamp option.
    pub peer_segments: u32,
    /// See `peer_segments`.
    pub peer_timestamp_segments: u32,
    /// IPv4: the RST's ID and the peer's last one.
    pub rst_ip_id: u16,
    /// See `rst_ip_id`.
    pub peer_ip_id: u16,
    /// IPv6: the RST's flow label and the peer's last one.
    pub rst_flow_label: u32,
    /// See `rst_flow_label`.
    pub peer_flow_label: u32,
    /// The RST's sequence number minus the peer's next one (0: exactly
    /// where the peer's stream stood); `None` when unknown.
    pub seq_offset: Option<i32>,
    /// With ACK set: the RST's acknowledgement minus our next sequence
    /// number (0: it acknowledges all we sent); `None` otherwise.
    pub ack_offset: Option<i32>,
}

/// The distance a TTL / hop limit says: the hops from the most likely
/// initial value (the next of 32, 64, 128, 255 at or above it).
pub fn hops(ttl: u8) -> u8 {
    let initial = match ttl {
        0..=32 => 32,
        33..=64 => 64,
        65..=128 => 128,
        _ => 255,
    };
    initial - ttl
}

/// Judges the RST of an `rst_received` event that fired at `event_ns`
/// (CLOCK_MONOTONIC) on a connection whose profile is `profile`.
pub fn judge(event_ns: u64, profile: &PeerProfile) -> Provenance {
    let rst = &profile.rst;
    let rst_seen = rst.ts_ns != 0 && event_ns >= rst.ts_ns && event_ns - rst.ts_ns <= RST_MATCH_NS;
    let v6 = profile.known & profile_known::V6 != 0;
    let mut p = Provenance {
        origin: Origin::Unknown,
        hops_closer: 0,
        rst_ttl: 0,
        peer_ttl_min: profile.ttl_min,
        peer_ttl_max: profile.ttl_max,
        rst_flags: 0,
        rst_timestamp: false,
        v6,
        peer_ip_ids: ip_id_pattern(profile),
        peer_segments: profile.segments,
        peer_timestamp_segments: profile.ts_segments,
        rst_ip_id: 0,
        peer_ip_id: profile.last_ip_id,
        rst_flow_label: 0,
        peer_flow_label: profile.flow_label,
        seq_offset: None,
        ack_offset: None,
    };
    if !rst_seen {
        return p;
    }
    p.rst_ttl = rst.ttl;
    p.rst_flags = rst.tcp_flags;
    p.rst_timestamp = rst.options & rst_options::TIMESTAMP != 0;
    p.rst_ip_id = rst.ip_id;
    p.rst_flow_label = rst.flow_label;
    if profile.known & profile_known::PEER_SEQ != 0 {
        p.seq_offset = Some(rst.seq.wrapping_sub(profile.next_seq) as i32);
    }
    if rst.tcp_flags & TCP_ACK != 0 && profile.known & profile_known::OUR_SEQ != 0 {
        p.ack_offset = Some(rst.ack.wrapping_sub(profile.our_next_seq) as i32);
    }
    if profile.segments == 0 {
        return p;
    }
    let rst_hops = hops(rst.ttl);
    // The peer's nearest and farthest distance (routes can change).
    let nearest = hops(profile.ttl_max);
    let farthest = hops(profile.ttl_min);
    if rst_hops < nearest {
        p.origin = Origin::Middlebox;
        p.hops_closer = nearest - rst_hops;
    } else if rst_hops <= farthest {
        p.origin = Origin::Peer;
    }
    p
}

fn ip_id_pattern(profile: &PeerProfile) -> IpIdPattern {
    if profile.known & profile_known::V6 != 0 || profile.segments < 2 {
        return IpIdPattern::Unknown;
    }
    if profile.ip_id_zero == profile.segments {
        IpIdPattern::Zero
    } else if profile.ip_id_pairs == 0 {
        IpIdPattern::Unknown
    } else if profile.ip_id_steps * 10 >= profile.ip_id_pairs * 9 {
        // Nine steps in ten: a retransmission or reordering may break one.
        IpIdPattern::Incrementing
    } else {
        IpIdPattern::Other
    }
}

impl Provenance {
    /// The RST crossed a watched interface.
    pub fn rst_seen(&self) -> bool {
        self.rst_ttl != 0
    }

    /// The peer sent a timestamp option on every segment seen.
    pub fn peer_always_timestamps(&self) -> bool {
        self.peer_segments > 0 && self.peer_timestamp_segments == self.peer_segments
    }

    /// IPv4: the RST's ID continues the peer's counter (`None`: IPv6, or
    /// the peer keeps no counter).
    pub fn ip_id_in_sequence(&self) -> Option<bool> {
        if self.v6 || !self.rst_seen() || self.peer_ip_ids != IpIdPattern::Incrementing {
            return None;
        }
        let step = self.rst_ip_id.wrapping_sub(self.peer_ip_id);
        Some((1..=IP_ID_STEP_MAX).contains(&step))
    }

    /// The RST came without the connection's state: no timestamp option
    /// where the peer always sends one, or an IPv4 ID off the peer's
    /// counter, or an IPv6 flow label unlike the peer's. What a device
    /// (or the peer's kernel, for a connection it no longer has) sends.
    pub fn stateless(&self) -> bool {
        if !self.rst_seen() {
            return false;
        }
        let no_timestamp = self.peer_always_timestamps() && !self.rst_timestamp;
        let id_off = self.ip_id_in_sequence() == Some(false);
        let label_off =
            self.v6 && self.peer_segments > 0 && self.rst_flow_label != self.peer_flow_label;
        no_timestamp || id_off || label_off
    }

    /// One sentence: why the verdict.
    pub fn why(&self) -> String {
        if !self.rst_seen() {
            return "the RST crossed no watched interface: nothing to compare".into();
        }
        let ttl = if self.v6 { "hop limit" } else { "TTL" };
        if self.peer_segments == 0 {
            return format!(
                "RST {ttl} {}; no segment of the peer on this connection to compare with",
                self.rst_ttl
            );
        }
        let peer_ttl = if self.peer_ttl_min == self.peer_ttl_max {
            self.peer_ttl_min.to_string()
        } else {
            format!("{}-{}", self.peer_ttl_min, self.peer_ttl_max)
        };
        let mut why = match self.origin {
            Origin::Middlebox => format!(
                "RST {ttl} {}, the peer's segments {peer_ttl}: sent {} {} closer than the peer",
                self.rst_ttl,
                self.hops_closer,
                if self.hops_closer == 1 { "hop" } else { "hops" }
            ),
            Origin::Peer => format!(
                "RST {ttl} {} as the peer's segments ({peer_ttl}): sent from the peer's distance",
                self.rst_ttl
            ),
            Origin::Unknown => format!(
                "RST {ttl} {}, the peer's segments {peer_ttl}: sent from farther than the peer (a route change, or a spoofer)",
                self.rst_ttl
            ),
        };
        let mut signs = Vec::new();
        if self.peer_always_timestamps() && !self.rst_timestamp {
            signs.push("no timestamp option although the peer always sends one");
        }
        match self.ip_id_in_sequence() {
            Some(false) if self.rst_ip_id == 0 => signs.push("IP ID 0, off the peer's counter"),
            Some(false) => signs.push("IP ID off the peer's counter"),
            Some(true) => signs.push("IP ID continues the peer's counter"),
            None => {}
        }
        if self.v6 && self.rst_flow_label != self.peer_flow_label {
            signs.push("flow label unlike the peer's");
        }
        if self.rst_timestamp && self.peer_always_timestamps() {
            signs.push("timestamp option like the peer's");
        }
        if !signs.is_empty() {
            why.push_str("; ");
            why.push_str(&signs.join(", "));
        }
        if self.origin == Origin::Peer && self.stateless() {
            why.push_str(
                " (the peer's host answered without the connection's state: its kernel no longer knew it, or a firewall on it)",
            );
        }
        why
    }
}

#[cfg(test)]
mod tests {
    use tcptrace_common::RstSeen;

    use super::*;

    const T: u64 = 10_000_000_000;

    /// A Linux peer one hop away: TTL 63, timestamps, IDs counting up.
    fn peer() -> PeerProfile {
        PeerProfile {
            last_ns: T - 1_000_000,
            segments: 5,
            ts_segments: 5,
            ip_id_pairs: 4,
            ip_id_steps: 4,
            ip_id_zero: 0,
            last_tsval: 1000,
            next_seq: 5000,
            our_next_seq: 9000,
            flow_label: 0,
            last_ip_id: 700,
            ttl_min: 63,
            ttl_max: 63,
            ttl_last: 63,
            known: profile_known::PEER_SEQ | profile_known::OUR_SEQ,
            _pad: [0; 6],
            rst: RstSeen::default(),
        }
    }

    fn rst(ttl: u8, ip_id: u16, flags: u8, timestamp: bool) -> RstSeen {
        RstSeen {
            ts_ns: T - 20_000,
            seq: 5000,
            ack: 9000,
            tsval: 1001,
            tsecr: 0,
            flow_label: 0,
            ip_id,
            ttl,
            tcp_flags: flags,
            options: if timestamp { rst_options::TIMESTAMP } else { 0 },
            _pad: [0; 7],
        }
    }

    #[test]
    fn a_router_rejecting_with_tcp_reset_is_a_middlebox_one_hop_closer() {
        // iptables REJECT on the router: TTL 64, ID 0, no options, no ACK.
        let mut profile = peer();
        profile.rst = rst(64, 0, 0x04, false);
        let p = judge(T, &profile);
        assert_eq!(p.origin, Origin::Middlebox);
        assert_eq!(p.hops_closer, 1);
        assert!(p.stateless());
        assert_eq!(p.seq_offset, Some(0));
        assert_eq!(p.ack_offset, None, "no ACK flag");
        let why = p.why();
        assert!(
            why.contains("TTL 64, the peer's segments 63: sent 1 hop closer"),
            "{why}"
        );
        assert!(why.contains("no timestamp option"), "{why}");
        assert!(why.contains("IP ID 0"), "{why}");
    }

    #[test]
    fn the_peers_own_abort_is_peer_with_its_state() {
        // SO_LINGER 0 on the server: its socket's next ID, timestamps, ACK.
        let mut profile = peer();
        profile.rst = rst(63, 701, 0x14, true);
        let p = judge(T, &profile);
        assert_eq!(p.origin, Origin::Peer);
        assert!(!p.stateless());
        assert_eq!(p.ip_id_in_sequence(), Some(true));
        assert_eq!(p.ack_offset, Some(0));
        assert!(
            p.why().contains("sent from the peer's distance"),
            "{}",
            p.why()
        );
    }

    #[test]
    fn the_peers_kernel_without_the_connection_is_peer_stateless() {
        // The server restarted: its kernel answers NO_SOCKET, no options.
        let mut profile = peer();
        profile.rst = rst(63, 0, 0x04, false);
        let p = judge(T, &profile);
        assert_eq!(p.origin, Origin::Peer);
        assert!(p.stateless());
        assert!(p.why().contains("without the connection's state"));
    }

    #[test]
    fn distances_use_the_likely_initial_value() {
        assert_eq!(hops(64), 0);
        assert_eq!(hops(63), 1);
        assert_eq!(hops(120), 8);
        assert_eq!(hops(255), 0);
        assert_eq!(hops(250), 5);
        // A Windows server 8 hops away, a Linux firewall 3 hops away.
        let mut profile = peer();
        profile.ttl_min = 120;
        profile.ttl_max = 120;
        profile.rst = rst(61, 0, 0x04, false);
        let p = judge(T, &profile);
        assert_eq!((p.origin, p.hops_closer), (Origin::Middlebox, 5));
    }

    #[test]
    fn nothing_to_compare_is_unknown() {
        // No RST seen (it came another way), or a stale one.
        let p = judge(T, &peer());
        assert_eq!(p.origin, Origin::Unknown);
        assert!(!p.rst_seen());
        let mut stale = peer();
        stale.rst = rst(64, 0, 0x04, false);
        stale.rst.ts_ns = T - 2 * RST_MATCH_NS;
        assert_eq!(judge(T, &stale).origin, Origin::Unknown);
        // A refused connect: the RST, but no other segment of the peer.
        let refused = PeerProfile {
            rst: rst(64, 0, 0x14, false),
            ..PeerProfile::default()
        };
        let p = judge(T, &refused);
        assert_eq!(p.origin, Origin::Unknown);
        assert!(p.why().contains("no segment of the peer"), "{}", p.why());
        // From farther than the peer: not a verdict we can give.
        let mut farther = peer();
        farther.rst = rst(60, 0, 0x04, false);
        assert_eq!(judge(T, &farther).origin, Origin::Unknown);
    }

    #[test]
    fn ipv6_compares_hop_limits_and_flow_labels() {
        let mut profile = peer();
        profile.known |= profile_known::V6;
        profile.flow_label = 0x5a3f1;
        profile.rst = rst(64, 0, 0x04, false);
        profile.rst.flow_label = 0;
        let p = judge(T, &profile);
        assert_eq!((p.origin, p.hops_closer), (Origin::Middlebox, 1));
        assert_eq!(p.peer_ip_ids, IpIdPattern::Unknown);
        assert_eq!(p.ip_id_in_sequence(), None);
        assert!(p.stateless());
        let why = p.why();
        assert!(why.contains("hop limit 64"), "{why}");
        assert!(why.contains("flow label unlike"), "{why}");
    }

    #[test]
    fn ip_id_patterns() {
        let mut profile = peer();
        assert_eq!(ip_id_pattern(&profile), IpIdPattern::Incrementing);
        profile.ip_id_steps = 0;
        profile.ip_id_zero = 5;
        assert_eq!(ip_id_pattern(&profile), IpIdPattern::Zero);
        profile.ip_id_zero = 0;
        assert_eq!(ip_id_pattern(&profile), IpIdPattern::Other);
        profile.segments = 1;
        assert_eq!(ip_id_pattern(&profile), IpIdPattern::Unknown);
        profile.segments = 2;
        profile.ip_id_pairs = 0;
        assert_eq!(
            ip_id_pattern(&profile),
            IpIdPattern::Unknown,
            "SYN-ACK + one"
        );
    }
}
