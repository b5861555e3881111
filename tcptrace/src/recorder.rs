//! The flight recorder's output (`trace --pcap DIR`): when a connection
//! is reset (an RST sent or received), times out (`ETIMEDOUT` handed to
//! its application) or fails to connect, the last packets the TC
//! programs kept for it are written as one pcapng file, with comments
//! saying whose connection it was (process, pod), the RST's reason and
//! origin, and how long it had been idle.
//!
//! Bounded: at most `--pcap-max` files a run; connections past it are
//! counted, never written. A file is written a moment after its event
//! (`SETTLE_NS`), so the RST this host sends right after the tracepoint
//! fired is in it. Files go through `safe_file` (0600, no symlink
//! followed) into a directory only we can write.

use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
    io::{self, BufWriter, Write as _},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use pcap_file::{
    DataLink, Endianness,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
            section_header::{SectionHeaderBlock, SectionHeaderOption},
        },
    },
};
use tcptrace_common::{
    AF_INET, AF_INET6, FLIGHT_HEADER_BYTES, FLIGHT_PAYLOAD_BYTES, FlightPacket, FlowKey,
    flight_direction,
};

use crate::{
    event::{EventKind, TcpEvent, tcp_flag_names},
    host::pods,
    kernel::errno,
    safe_file::{self, SafeFileError},
    session::{Flight, Session},
    sink::Context,
    summary::RecorderReport,
    timefmt,
};

/// A capture is written this long after its event: the RST this host
/// sends goes out (through the egress program) right after
/// `tcp_send_reset` fires.
pub const SETTLE_NS: u64 = 200_000_000;
/// Packets kept up to this long after the event: the RST this host
/// sends is in, what the connection's remains do later (a peer still
/// retransmitting, our answering RSTs) is not: the file ends at the reset.
const AFTER_EVENT_NS: u64 = 20_000_000;
/// Connections whose capture was written or counted are not written
/// again for this long (a reset gives `rst_received`, then
/// `connect_failed` or a `socket_error`: one file).
const DEDUP_NS: u64 = 10_000_000_000;
/// `ETIMEDOUT`: the retransmission, keepalive or connect timeout gave up.
const ETIMEDOUT: i32 = 110;
/// pcapng `epb_flags` direction bits (inbound 1, outbound 2).
const EPB_INBOUND: u32 = 1;
const EPB_OUTBOUND: u32 = 2;

/// What `--pcap` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecorderOptions {
    /// Where the files go.
    pub dir: PathBuf,
    /// At most this many files.
    pub max_files: u32,
    /// Payload bytes kept per packet.
    pub payload: u16,
}

/// A capture waiting for its packets to settle.
struct Pending {
    due_ns: u64,
    key: FlowKey,
    event: TcpEvent,
}

/// Decides which connections get a file, and writes them.
pub struct Recorder {
    options: RecorderOptions,
    /// Start of the run, in file names (`20260520T101112Z`).
    run: String,
    pending: VecDeque<Pending>,
    /// Connections written, pending or counted, with when.
    recent: HashMap<FlowKey, u64>,
    report: RecorderReport,
}

impl Recorder {
    /// A recorder writing into `options.dir`, created (0700) if missing.
    ///
    /// # Errors
    /// The directory cannot be created, or others could write into it.
    pub fn new(options: RecorderOptions) -> Result<Recorder, SafeFileError> {
        safe_file::private_dir(&options.dir)?;
        Ok(Recorder {
            run: jiff::Timestamp::now()
                .strftime("%Y%m%dT%H%M%SZ")
                .to_string(),
            report: RecorderReport {
                dir: options.dir.clone(),
                ..RecorderReport::default()
            },
            options,
            pending: VecDeque::new(),
            recent: HashMap::new(),
        })
    }

    /// Takes an event: a reset, a timeout or a failed connect schedules
    /// its connection's capture (or counts it, past `--pcap-max`).
    pub fn note(&mut self, ev: &TcpEvent) {
        if !is_trigger(ev) {
            return;
        }
        let key = flow_key(ev.local, ev.remote);
        if self
            .recent
            .get(&key)
            .is_some_and(|at| ev.mono_ns.saturating_sub(*at) < DEDUP_NS)
        {
            return;
        }
        self.remember(key, ev.mono_ns);
        let promised = self.report.written + self.report.failed + self.pending.len() as u64;
        if promised >= u64::from(self.options.max_files) {
            self.report.over_max += 1;
            return;
        }
        self.pending.push_back(Pending {
            due_ns: ev.mono_ns + SETTLE_NS,
            key,
            event: ev.clone(),
        });
    }

    /// Writes the captures whose packets have settled by `now_ns`
    /// (CLOCK_MONOTONIC); all of them with `u64::MAX`.
    pub fn write_due(&mut self, now_ns: u64, session: &Session, ctx: &mut Context) {
        while self.pending.front().is_some_and(|p| p.due_ns <= now_ns) {
            let pending = self.pending.pop_front().expect("checked");
            match session.flight(&pending.key) {
                Some(flight) => self.write(&pending, &flight, ctx),
                None => self.report.without_packets += 1,
            }
        }
    }

    /// What was written and counted.
    pub fn report(&self) -> &RecorderReport {
        &self.report
    }

    fn remember(&mut self, key: FlowKey, now_ns: u64) {
        if self.recent.len() >= 4096 {
            self.recent
                .retain(|_, at| now_ns.saturating_sub(*at) < DEDUP_NS);
            if self.recent.len() >= 4096 {
                self.recent.clear();
            }
        }
        self.recent.insert(key, now_ns);
    }

    fn write(&mut self, pending: &Pending, flight: &Flight, ctx: &mut Context) {
        let until = pending.event.mono_ns.saturating_add(AFTER_EVENT_NS);
        let packets: Vec<Packet> = packets(flight)
            .into_iter()
            .filter(|p| p.mono_ns <= until)
            .collect();
        if packets.is_empty() {
            self.report.without_packets += 1;
            return;
        }
        let n = self.report.written + self.report.failed + 1;
        let ev = &pending.event;
        let name = format!(
            "tcptrace-{}-{n:04}-{}-{}-{}.pcapng",
            self.run,
            ev.kind.name(),
            endpoint(ev.local),
            endpoint(ev.remote)
        );
        let path = self.options.dir.join(name);
        let comments = comments(ev, ctx);
        match write_file(&path, &packets, &comments, self.snaplen(), ctx) {
            Ok(()) => self.report.written += 1,
            Err(err) => {
                self.report.failed += 1;
                // A full disk fails the first write: nothing to keep.
                discard_if_empty(&path);
                if self.report.error.is_none() {
                    let message = format!("{}: {err}", path.display());
                    eprintln!("tcptrace: warning: --pcap: cannot write {message}");
                    self.report.error = Some(message);
                }
            }
        }
    }

    fn snaplen(&self) -> u32 {
        (FLIGHT_HEADER_BYTES + usize::from(self.options.payload).min(FLIGHT_PAYLOAD_BYTES)) as u32
    }
}

/// Resets, timeouts and failed connects.
fn is_trigger(ev: &TcpEvent) -> bool {
    match ev.kind {
        EventKind::RstSent | EventKind::RstReceived | EventKind::ConnectFailed => true,
        EventKind::SocketError => ev.socket_errno() == Some(ETIMEDOUT),
        _ => false,
    }
}

/// The TC programs' key of a connection: IPv4 for v4-mapped addresses
/// (the wire carries IPv4).
pub fn flow_key(local: SocketAddr, remote: SocketAddr) -> FlowKey {
    let mut key = FlowKey {
        local_port: local.port(),
        remote_port: remote.port(),
        ..FlowKey::default()
    };
    match (local.ip().to_canonical(), remote.ip().to_canonical()) {
        (IpAddr::V4(l), IpAddr::V4(r)) => {
            key.family = AF_INET as u8;
            key.local_addr[..4].copy_from_slice(&l.octets());
            key.remote_addr[..4].copy_from_slice(&r.octets());
        }
        (l, r) => {
            key.family = AF_INET6 as u8;
            key.local_addr = v6_octets(l);
            key.remote_addr = v6_octets(r);
        }
    }
    key
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// `198.18.0.1_45678`, `2001:db8::1_443`: a file-name friendly endpoint.
fn endpoint(addr: SocketAddr) -> String {
    format!("{}_{}", addr.ip().to_canonical(), addr.port())
}

/// One packet to write: when (CLOCK_MONOTONIC), which way, its length
/// on the wire and the bytes kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// When it crossed the interface.
    pub mono_ns: u64,
    /// Received (true) or sent.
    pub incoming: bool,
    /// The IP packet's length.
    pub wire_len: u32,
    /// IP header onwards: headers, then the payload bytes kept.
    pub bytes: Vec<u8>,
}

/// The ring's packets in time order, from the connection's last opening
/// SYN on (a ring may still hold the end of an earlier connection on the
/// same addresses and ports).
pub fn packets(flight: &Flight) -> Vec<Packet> {
    let mut slots: Vec<(usize, &FlightPacket)> = flight
        .ring
        .packets
        .iter()
        .enumerate()
        .filter(|(_, p)| p.ts_ns != 0 && p.header_len != 0)
        .collect();
    slots.sort_by_key(|(_, p)| p.ts_ns);
    let start = slots
        .iter()
        .rposition(|(_, p)| is_opening_syn(p))
        .unwrap_or(0);
    slots[start..]
        .iter()
        .map(|(slot, p)| {
            let header_len = usize::from(p.header_len).min(FLIGHT_HEADER_BYTES);
            let mut bytes = p.header[..header_len].to_vec();
            if let Some(payload) = &flight.payload {
                let len = usize::from(p.payload_len).min(FLIGHT_PAYLOAD_BYTES);
                bytes.extend_from_slice(&payload.bytes[*slot][..len]);
            }
            Packet {
                mono_ns: p.ts_ns,
                incoming: p.direction == flight_direction::IN,
                wire_len: p.wire_len.max(bytes.len() as u32),
                bytes,
            }
        })
        .collect()
}

/// A SYN without ACK: a connection opening.
fn is_opening_syn(p: &FlightPacket) -> bool {
    tcp_flags(&p.header[..usize::from(p.header_len).min(FLIGHT_HEADER_BYTES)])
        .is_some_and(|flags| flags & 0x12 == 0x02)
}

/// The TCP flags byte of an IP packet's bytes.
fn tcp_flags(ip: &[u8]) -> Option<u8> {
    let header_len = match ip.first()? >> 4 {
        4 => usize::from(ip[0] & 0x0f) * 4,
        6 => 40,
        _ => return None,
    };
    ip.get(header_len + 13).copied()
}

/// The file's comments: whose connection, what happened, and why.
fn comments(ev: &TcpEvent, ctx: &mut Context) -> Vec<String> {
    let mut lines = vec![format!(
        "tcptrace flight recorder: {} on {} -> {}",
        ev.kind.name(),
        ev.local,
        ev.remote
    )];
    match &ev.owner {
        Some(owner) => {
            lines.push(format!(
                "process: pid {} ({}), cgroup id {}",
                owner.pid, owner.comm, owner.cgroup_id
            ));
            if let Some(cgroup) = ctx.cgroups.lookup(owner.cgroup_id) {
                lines.push(format!("cgroup: {}", cgroup.path));
                if let Some(pod) = pods::pod_of(&cgroup.path) {
                    lines.push(format!("pod: {pod}"));
                }
                if let Some(container) = &cgroup.container {
                    lines.push(format!("container: {container}"));
                }
            }
        }
        None => lines.push("process: unknown (no socket owner known)".into()),
    }
    if let Some(state) = ev.state {
        lines.push(format!("state: {}", ctx.names.state(state)));
    }
    match ev.kind {
        EventKind::RstSent => lines.push(format!(
            "RST sent by this host, reason {}",
            ev.rst_reason.map_or_else(
                || "unknown (kernel before 6.10)".into(),
                |r| ctx.names.reason(r).into_owned()
            )
        )),
        EventKind::RstReceived => {
            lines.push("RST received (the sender's reason is not visible from here)".into())
        }
        EventKind::ConnectFailed => lines.push(format!(
            "connect failed after {}",
            ev.connect_ns
                .map_or_else(|| "?".into(), timefmt::duration_ns)
        )),
        _ => {
            if let Some(errno) = ev.socket_errno() {
                lines.push(format!(
                    "error handed to the application: {}",
                    errno::label(errno)
                ));
            }
        }
    }
    if let Some(p) = ev.provenance() {
        lines.push(match p.origin {
            crate::origin::Origin::Middlebox => format!(
                "origin: middlebox, {} hop(s) closer than the peer: {}",
                p.hops_closer,
                p.why()
            ),
            other => format!("origin: {}: {}", other.name(), p.why()),
        });
    }
    if let Some(idle) = ev.idle_ns() {
        lines.push(format!(
            "idle before the reset: {}",
            timefmt::duration_ns(idle)
        ));
    }
    if let Some(age) = ev.age_ns {
        lines.push(format!("connection age: {}", timefmt::duration_ns(age)));
    }
    lines
}

/// Removes the file a failed write left at `path` when it holds nothing
/// (a file with data is kept: its packets are readable up to the cut).
fn discard_if_empty(path: &Path) {
    let empty = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0);
    if empty && let Err(err) = safe_file::remove(path) {
        log::debug!("removing the empty {}: {err}", path.display());
    }
}

fn write_file(
    path: &Path,
    packets: &[Packet],
    comments: &[String],
    snaplen: u32,
    ctx: &Context,
) -> io::Result<()> {
    let file = safe_file::create(path).map_err(io::Error::other)?;
    let mut section = SectionHeaderBlock {
        endianness: if cfg!(target_endian = "big") {
            Endianness::Big
        } else {
            Endianness::Little
        },
        ..SectionHeaderBlock::default()
    };
    section
        .options
        .push(SectionHeaderOption::UserApplication(Cow::Borrowed(
            concat!("tcptrace ", env!("CARGO_PKG_VERSION")),
        )));
    for comment in comments {
        section
            .options
            .push(SectionHeaderOption::Comment(Cow::Owned(comment.clone())));
    }
    let mut writer = PcapNgWriter::with_section_header(BufWriter::new(file), section)
        .map_err(io::Error::other)?;
    writer
        .write_pcapng_block(InterfaceDescriptionBlock {
            // The IP header first: packets of IPv4 and IPv6 alike.
            linktype: DataLink::RAW,
            snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Borrowed("tcptrace")),
                // Nanosecond timestamps (pcap-file writes them as such).
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        })
        .map_err(io::Error::other)?;
    let last = packets.len() - 1;
    for (i, packet) in packets.iter().enumerate() {
        let unix_ns = ctx.clock.unix_ns(packet.mono_ns).max(0) as u64;
        let mut options = vec![EnhancedPacketOption::Flags(if packet.incoming {
            EPB_INBOUND
        } else {
            EPB_OUTBOUND
        })];
        if i == last {
            // The packet that ends it (the RST, the last retransmission):
            // the summary where Wireshark shows packet comments.
            options.push(EnhancedPacketOption::Comment(Cow::Owned(format!(
                "{} (last packet kept: {})",
                comments[1..].join("; "),
                tcp_flags(&packet.bytes).map_or_else(|| "?".into(), tcp_flag_names)
            ))));
        }
        writer
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::from_nanos(unix_ns),
                original_len: packet.wire_len,
                data: Cow::Borrowed(&packet.bytes),
                options,
            })
            .map_err(io::Error::other)?;
    }
    let mut out = writer.into_inner();
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

#[cfg(test)]
mod tests {
    use tcptrace_common::{FLIGHT_PACKETS, FlightRing};

    use super::*;

    #[test]
    fn a_failed_write_leaves_no_empty_file_but_keeps_data() {
        let dir = std::env::temp_dir().join(format!("tcptrace-pcap-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pcapng");
        std::fs::write(&empty, b"").unwrap();
        discard_if_empty(&empty);
        assert!(!empty.exists(), "an empty capture is removed");
        let partial = dir.join("partial.pcapng");
        std::fs::write(&partial, b"\x0a\x0d\x0d\x0a").unwrap();
        discard_if_empty(&partial);
        assert!(partial.exists(), "a capture with data is kept");
        discard_if_empty(&dir.join("never-created.pcapng"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn ipv4_segment(flags: u8) -> [u8; FLIGHT_HEADER_BYTES] {
        let mut header = [0u8; FLIGHT_HEADER_BYTES];
        header[0] = 0x45;
        header[9] = 6;
        header[20 + 12] = 5 << 4;
        header[20 + 13] = flags;
        header
    }

    fn ring(packets: &[(u64, u8)]) -> Flight {
        let mut ring = FlightRing {
            next: packets.len() as u32,
            _pad: 0,
            packets: [FlightPacket {
                ts_ns: 0,
                wire_len: 0,
                payload_len: 0,
                header_len: 0,
                direction: 0,
                header: [0; FLIGHT_HEADER_BYTES],
            }; FLIGHT_PACKETS],
        };
        for (slot, (ts, flags)) in packets.iter().enumerate() {
            ring.packets[slot] = FlightPacket {
                ts_ns: *ts,
                wire_len: 40,
                payload_len: 0,
                header_len: 40,
                direction: flight_direction::IN,
                header: ipv4_segment(*flags),
            };
        }
        Flight {
            ring: Box::new(ring),
            payload: None,
        }
    }

    #[test]
    fn packets_come_in_time_order_from_the_last_opening_syn() {
        // An old connection's FIN, then the new one: SYN, SYN-ACK, ACK, RST.
        let flight = ring(&[(50, 0x10), (40, 0x02), (10, 0x11), (60, 0x04), (45, 0x12)]);
        let flags: Vec<_> = packets(&flight)
            .iter()
            .map(|p| tcp_flags(&p.bytes).unwrap())
            .collect();
        assert_eq!(flags, [0x02, 0x12, 0x10, 0x04]);
        // No SYN kept (the ring wrapped): all of it.
        let flight = ring(&[(2, 0x10), (1, 0x18), (3, 0x04)]);
        assert_eq!(packets(&flight).len(), 3);
    }

    #[test]
    fn v4_mapped_connections_are_keyed_as_ipv4() {
        let key = flow_key(
            "[::ffff:198.18.0.1]:40000".parse().unwrap(),
            "[::ffff:198.18.0.2]:80".parse().unwrap(),
        );
        assert_eq!(key.family, AF_INET as u8);
        assert_eq!(&key.local_addr[..4], &[198, 18, 0, 1]);
        assert_eq!(key.local_addr[4..], [0; 12]);
        assert_eq!((key.local_port, key.remote_port), (40000, 80));
        let key = flow_key(
            "[2001:db8::1]:40000".parse().unwrap(),
            "[2001:db8::2]:80".parse().unwrap(),
        );
        assert_eq!(key.family, AF_INET6 as u8);
        assert_eq!(
            endpoint("[2001:db8::1]:443".parse().unwrap()),
            "2001:db8::1_443"
        );
    }
}
