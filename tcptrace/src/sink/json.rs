//! NDJSON: one object per line, schema in docs/events.md. Stable: other
//! tools parse it. Add fields, never rename or remove them without
//! bumping `SCHEMA_VERSION`.
//!
//! Events are the hot path (hundreds of thousands a second in a storm),
//! so they are written field by field with no allocation into one
//! buffer the sink owns and hands to the output in large pieces: keys
//! are literals, numbers go through `itoa`, the socket address is hex
//! by hand, and strings that can hold arbitrary bytes (comm, cgroup
//! path) are copied as they are when they need no escaping (the usual
//! case) and go through serde_json's escaping otherwise. Loss and
//! summary records are rare and use plain serde.

use std::{
    io::{self, Write},
    net::IpAddr,
};

use serde::Serialize;

use super::{Context, Output, Sink};
use crate::{
    event::{Detail, EventKind, SCHEMA_VERSION, TcpEvent, tcp_flag_names},
    kernel::errno,
    origin::{Origin, Provenance},
    summary::Summary,
    timefmt,
};

/// NDJSON, one record a line (`trace --json`).
pub struct JsonSink {
    out: Output,
    /// Events formatted but not yet handed to `out`: one `write_all` per
    /// `HANDOFF_BYTES` instead of a few dozen small copies per event.
    lines: Vec<u8>,
}

/// How much formatted output `JsonSink` gathers before handing it on.
const HANDOFF_BYTES: usize = 256 * 1024;

impl JsonSink {
    /// Writes to `out`.
    pub fn new(out: Output) -> JsonSink {
        JsonSink {
            out,
            lines: Vec::with_capacity(HANDOFF_BYTES + 4096),
        }
    }

    /// Hands the gathered lines to the output, in order.
    fn hand_off(&mut self) -> io::Result<()> {
        if !self.lines.is_empty() {
            self.out.write_all(&self.lines)?;
            self.lines.clear();
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct LossRecord {
    v: u32,
    #[serde(rename = "type")]
    record: &'static str,
    kind: &'static str,
    lost: u64,
    total_lost: u64,
}

impl Sink for JsonSink {
    fn event(&mut self, ev: &TcpEvent, ctx: &mut Context) -> io::Result<()> {
        write_event(&mut self.lines, ev, ctx)?;
        if self.lines.len() >= HANDOFF_BYTES {
            self.hand_off()?;
        }
        Ok(())
    }

    fn loss(&mut self, kind: EventKind, lost: u64, total_lost: u64) -> io::Result<()> {
        self.hand_off()?;
        let record = LossRecord {
            v: SCHEMA_VERSION,
            record: "loss",
            kind: kind.name(),
            lost,
            total_lost,
        };
        serde_json::to_writer(&mut self.out, &record)?;
        self.out.write_all(b"\n")
    }

    fn summary(&mut self, summary: &Summary) -> io::Result<()> {
        self.hand_off()?;
        serde_json::to_writer(&mut self.out, &summary.to_json())?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.hand_off()?;
        self.out.flush()
    }
}

// The event writer spells the version out (hot path): a bump must update it.
const _: () = assert!(SCHEMA_VERSION == 1);

/// One event as one line. Fields that do not apply to the event's kind,
/// or that are unknown, are left out (jq reads them as null).
pub fn write_event(out: &mut impl Write, ev: &TcpEvent, ctx: &mut Context) -> io::Result<()> {
    let mut n = itoa::Buffer::new();
    out.write_all(b"{\"v\":1,\"type\":\"event\",\"time\":\"")?;
    timefmt::write_rfc3339(out, ctx.clock.unix_ns(ev.mono_ns))?;
    out.write_all(b"\",\"mono_ns\":")?;
    out.write_all(n.format(ev.mono_ns).as_bytes())?;
    out.write_all(b",\"kind\":\"")?;
    out.write_all(ev.kind.name().as_bytes())?;
    out.write_all(b"\"")?;
    if let Some(netns) = ev.netns {
        out.write_all(b",\"netns\":")?;
        out.write_all(n.format(netns).as_bytes())?;
    }
    out.write_all(if ev.local.is_ipv4() {
        b",\"family\":\"ipv4\""
    } else {
        b",\"family\":\"ipv6\""
    })?;
    out.write_all(b",\"local_addr\":\"")?;
    write_ip(out, ev.local.ip())?;
    out.write_all(b"\",\"local_port\":")?;
    out.write_all(n.format(ev.local.port()).as_bytes())?;
    out.write_all(b",\"remote_addr\":\"")?;
    write_ip(out, ev.remote.ip())?;
    out.write_all(b"\",\"remote_port\":")?;
    out.write_all(n.format(ev.remote.port()).as_bytes())?;
    match &ev.owner {
        Some(owner) => {
            out.write_all(b",\"owner\":{\"pid\":")?;
            out.write_all(n.format(owner.pid).as_bytes())?;
            out.write_all(b",\"tid\":")?;
            out.write_all(n.format(owner.tid).as_bytes())?;
            out.write_all(b",\"comm\":")?;
            json_str(out, owner.comm.as_str())?;
            out.write_all(b",\"cgroup_id\":")?;
            out.write_all(n.format(owner.cgroup_id).as_bytes())?;
            if let Some(cgroup) = ctx.cgroups.lookup_owner(owner.pid, owner.cgroup_id) {
                out.write_all(b",\"cgroup\":")?;
                json_str(out, cgroup.path.as_str())?;
                if let Some(id) = &cgroup.container {
                    out.write_all(b",\"container_id\":\"")?;
                    out.write_all(id.as_bytes())?;
                    out.write_all(b"\"")?;
                }
                // Names come from directory names: escaped like any text.
                if let Some(container) = cgroup.container_name() {
                    out.write_all(b",\"container\":")?;
                    json_str(out, container)?;
                }
                if let Some(pod) = cgroup.pod_name() {
                    out.write_all(b",\"pod\":")?;
                    json_str(out, pod)?;
                }
                if let Some(namespace) = cgroup.namespace() {
                    out.write_all(b",\"namespace\":")?;
                    json_str(out, namespace)?;
                }
            }
            out.write_all(b"}")?;
        }
        None => out.write_all(b",\"owner\":null")?,
    }
    // State and reason names come from the kernel's format files: plain
    // [A-Z0-9_] identifiers, no escaping needed.
    if let Some((old, new)) = ev.transition {
        str_field(out, b",\"old_state\":\"", ctx.names.state(old))?;
        str_field(out, b",\"new_state\":\"", ctx.names.state(new))?;
    }
    if let Some(state) = ev.state {
        str_field(out, b",\"state\":\"", ctx.names.state(state))?;
    }
    if let Some(reason) = ev.rst_reason {
        str_field(out, b",\"reason\":\"", &ctx.names.reason(reason))?;
    }
    num_field(out, &mut n, b",\"connect_ns\":", ev.connect_ns)?;
    num_field(out, &mut n, b",\"age_ns\":", ev.age_ns)?;
    num_field(out, &mut n, b",\"idle_ns\":", ev.idle_ns())?;
    num_field(out, &mut n, b",\"idle_send_ns\":", ev.idle_send_ns)?;
    num_field(out, &mut n, b",\"idle_recv_ns\":", ev.idle_recv_ns)?;
    if let Some(err) = ev.err {
        out.write_all(b",\"err\":")?;
        out.write_all(n.format(err).as_bytes())?;
    }
    write_detail(out, &mut n, ev, ctx)?;
    out.write_all(b",\"sock\":\"")?;
    out.write_all(hex(ev.sock, &mut [0; 18]))?;
    out.write_all(b"\"}\n")
}

/// `0x` and the lowest-case hex digits of `value`, as `{:#x}` prints it,
/// without the formatting machinery (once per event).
fn hex(mut value: u64, buf: &mut [u8; 18]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
        if value == 0 {
            break;
        }
    }
    start -= 2;
    buf[start..start + 2].copy_from_slice(b"0x");
    &buf[start..]
}

/// `value` as a JSON string. Names and paths rarely need escaping: those
/// that do not are copied as they are, the rest go through serde_json.
fn json_str(out: &mut impl Write, value: &str) -> io::Result<()> {
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.write_all(b"\"")?;
        out.write_all(value.as_bytes())?;
        out.write_all(b"\"")
    } else {
        Ok(serde_json::to_writer(&mut *out, value)?)
    }
}

/// The fields of drops, socket errors and retransmitted segments.
fn write_detail(
    out: &mut impl Write,
    n: &mut itoa::Buffer,
    ev: &TcpEvent,
    ctx: &Context,
) -> io::Result<()> {
    match &ev.detail {
        Detail::None => Ok(()),
        Detail::Drop(drop) => {
            if let Some(reason) = drop.reason {
                str_field(out, b",\"reason\":\"", &ctx.names.drop_reason(reason))?;
            }
            str_field(out, b",\"tcp_flags\":\"", &tcp_flag_names(drop.tcp_flags))?;
            out.write_all(if drop.incoming {
                b",\"direction\":\"in\""
            } else {
                b",\"direction\":\"out\""
            })
        }
        Detail::SocketError { errno } => {
            if let Some(name) = errno::name(*errno) {
                str_field(out, b",\"error\":\"", name)?;
            }
            out.write_all(b",\"errno\":")?;
            out.write_all(n.format(*errno).as_bytes())
        }
        Detail::Segment(seg) => {
            num_field(out, n, b",\"seg_len\":", seg.len.map(u64::from))?;
            num_field(out, n, b",\"segs\":", seg.segs.map(u64::from))?;
            num_field(out, n, b",\"mss\":", seg.mss.map(u64::from))?;
            num_field(out, n, b",\"pmtu\":", seg.pmtu.map(u64::from))
        }
        Detail::Reset(q, origin) => {
            num_field(out, n, b",\"unacked\":", q.unacked.map(u64::from))?;
            num_field(out, n, b",\"unread\":", q.unread.map(u64::from))?;
            num_field(out, n, b",\"idle_data_recv_ns\":", q.idle_data_recv_ns)?;
            num_field(
                out,
                n,
                b",\"data_segs_out\":",
                q.data_segs_out.map(u64::from),
            )?;
            match origin {
                Some(p) => write_origin(out, p),
                None => Ok(()),
            }
        }
    }
}

/// `origin`, `origin_hops_closer` and `origin_evidence` of a received
/// RST (rare next to the other kinds: written through serde_json).
fn write_origin(out: &mut impl Write, p: &Provenance) -> io::Result<()> {
    str_field(out, b",\"origin\":\"", p.origin.name())?;
    if p.origin == Origin::Middlebox {
        write!(out, ",\"origin_hops_closer\":{}", p.hops_closer)?;
    }
    let mut evidence = serde_json::Map::new();
    let mut put = |key: &str, value: serde_json::Value| {
        evidence.insert(key.to_string(), value);
    };
    put("peer_segments", p.peer_segments.into());
    if p.peer_segments > 0 {
        put("peer_ttl_min", p.peer_ttl_min.into());
        put("peer_ttl_max", p.peer_ttl_max.into());
        put("peer_timestamp_segments", p.peer_timestamp_segments.into());
        if !p.v6 {
            put("peer_ip_ids", p.peer_ip_ids.name().into());
            put("peer_ip_id", p.peer_ip_id.into());
        } else {
            put("peer_flow_label", p.peer_flow_label.into());
        }
    }
    if p.rst_seen() {
        put("rst_ttl", p.rst_ttl.into());
        put("rst_flags", tcp_flag_names(p.rst_flags).into());
        put("rst_timestamp", p.rst_timestamp.into());
        if p.v6 {
            put("rst_flow_label", p.rst_flow_label.into());
        } else {
            put("rst_ip_id", p.rst_ip_id.into());
        }
        if let Some(in_sequence) = p.ip_id_in_sequence() {
            put("ip_id_in_sequence", in_sequence.into());
        }
        if let Some(offset) = p.seq_offset {
            put("seq_offset", offset.into());
        }
        if let Some(offset) = p.ack_offset {
            put("ack_offset", offset.into());
        }
        put("stateless", p.stateless().into());
    }
    put("why", p.why().into());
    out.write_all(b",\"origin_evidence\":")?;
    serde_json::to_writer(&mut *out, &evidence)?;
    Ok(())
}

fn str_field(out: &mut impl Write, key: &[u8], value: &str) -> io::Result<()> {
    out.write_all(key)?;
    out.write_all(value.as_bytes())?;
    out.write_all(b"\"")
}

fn num_field(
    out: &mut impl Write,
    n: &mut itoa::Buffer,
    key: &[u8],
    value: Option<u64>,
) -> io::Result<()> {
    if let Some(value) = value {
        out.write_all(key)?;
        out.write_all(n.format(value).as_bytes())?;
    }
    Ok(())
}

fn write_ip(out: &mut impl Write, ip: IpAddr) -> io::Result<()> {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.write_all(b".")?;
                }
                out.write_all(n.format(octet).as_bytes())?;
            }
            Ok(())
        }
        IpAddr::V6(v6) => write!(out, "{v6}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::*;
    use crate::{
        event::Owner,
        host::cgroups::Cgroups,
        kernel::{clock::WallClock, names::Names},
    };

    fn names() -> Names {
        Names::new(
            BTreeMap::from([(1, "TCP_ESTABLISHED".into()), (7, "TCP_CLOSE".into())]),
            BTreeMap::from([(11, "TCP_ABORT_ON_CLOSE".into())]),
        )
        .with_drop_reasons(BTreeMap::from([(12, "NETFILTER_DROP".into())]))
    }

    fn line(ev: &TcpEvent) -> Value {
        let names = names();
        let clock = WallClock::now();
        let mut cgroups = Cgroups::new("/nonexistent");
        let mut ctx = Context {
            names: &names,
            clock: &clock,
            cgroups: &mut cgroups,
        };
        let mut buf = Vec::new();
        write_event(&mut buf, ev, &mut ctx).unwrap();
        assert_eq!(buf.last(), Some(&b'\n'));
        assert_eq!(buf.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&buf).unwrap()
    }

    fn rst() -> TcpEvent {
        TcpEvent {
            mono_ns: 123,
            kind: EventKind::RstSent,
            sock: 0xffff_8880_1234,
            netns: Some(4026531840),
            local: "10.1.2.3:45678".parse().unwrap(),
            remote: "[2001:db8::2]:443".parse().unwrap(),
            owner: Some(Owner {
                pid: 42,
                tid: 43,
                comm: "we\"ird\\co\nmm".into(),
                cgroup_id: 9,
            }),
            accepted: None,
            transition: None,
            state: Some(7),
            rst_reason: Some(11),
            connect_ns: None,
            age_ns: Some(5_000_000_000),
            idle_send_ns: Some(60_000_000_000),
            idle_recv_ns: Some(59_000_000_000),
            err: None,
            detail: Default::default(),
        }
    }

    #[test]
    fn event_is_valid_json_with_the_documented_fields() {
        let v = line(&rst());
        assert_eq!(v["v"], 1);
        assert_eq!(v["type"], "event");
        assert_eq!(v["kind"], "rst_sent");
        assert_eq!(v["netns"], 4026531840u64);
        assert_eq!(v["local_addr"], "10.1.2.3");
        assert_eq!(v["local_port"], 45678);
        assert_eq!(v["remote_addr"], "2001:db8::2");
        assert_eq!(v["owner"]["pid"], 42);
        assert_eq!(
            v["owner"]["comm"], "we\"ird\\co\nmm",
            "arbitrary comm bytes are escaped"
        );
        assert_eq!(v["state"], "CLOSE");
        assert_eq!(v["reason"], "TCP_ABORT_ON_CLOSE");
        assert_eq!(v["age_ns"], 5_000_000_000u64);
        assert_eq!(v["idle_ns"], 59_000_000_000u64);
        assert_eq!(v["sock"], "0xffff88801234");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert!(
            v.get("connect_ns").is_none(),
            "fields that do not apply are left out"
        );
    }

    #[test]
    fn drops_errors_and_segments_have_their_fields() {
        let mut ev = rst();
        ev.kind = EventKind::Drop;
        ev.rst_reason = None;
        ev.detail = Detail::Drop(crate::event::Dropped {
            reason: Some(12),
            tcp_flags: 0x02,
            incoming: false,
        });
        let v = line(&ev);
        assert_eq!(v["kind"], "drop");
        assert_eq!(v["reason"], "NETFILTER_DROP");
        assert_eq!(v["tcp_flags"], "SYN");
        assert_eq!(v["direction"], "out");

        ev.kind = EventKind::SocketError;
        ev.detail = Detail::SocketError { errno: 104 };
        let v = line(&ev);
        assert_eq!(v["error"], "ECONNRESET");
        assert_eq!(v["errno"], 104);
        assert!(v.get("reason").is_none());

        ev.kind = EventKind::Retransmit;
        ev.detail = Detail::Segment(crate::event::Segment {
            len: Some(1448),
            segs: Some(1),
            mss: Some(1448),
            pmtu: None,
        });
        let v = line(&ev);
        assert_eq!(v["seg_len"], 1448);
        assert_eq!(v["segs"], 1);
        assert_eq!(v["mss"], 1448);
        assert!(v.get("pmtu").is_none(), "unknown figures are left out");

        for kind in [EventKind::RstSent, EventKind::RstReceived] {
            ev.kind = kind;
            ev.detail = Detail::Reset(
                crate::event::Queues {
                    unacked: Some(0),
                    unread: Some(0),
                    idle_data_recv_ns: Some(4_000_000),
                    data_segs_out: Some(0),
                },
                None,
            );
            let v = line(&ev);
            assert_eq!(v["data_segs_out"], 0, "sent nothing: 0, not left out");
            assert!(v.get("seg_len").is_none());
            ev.detail = Detail::Reset(
                crate::event::Queues {
                    data_segs_out: None,
                    ..Default::default()
                },
                None,
            );
            assert!(line(&ev).get("data_segs_out").is_none());
        }
    }

    #[test]
    fn hand_written_hex_and_strings_match_the_formatters() {
        for value in [0, 1, 0xf, 0x10, 0xffff_8880_1234, u64::MAX] {
            assert_eq!(hex(value, &mut [0; 18]), format!("{value:#x}").as_bytes());
        }
        for text in [
            "tokio-rt-worker",
            "/system.slice/a b.service",
            "we\"ird\\co\nmm",
            "é\u{7f}\t",
        ] {
            let mut ours = Vec::new();
            json_str(&mut ours, text).unwrap();
            assert_eq!(ours, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn the_sink_keeps_the_order_of_events_and_loss_records() {
        let file = std::env::temp_dir().join(format!("tcptrace-json-order-{}", std::process::id()));
        let out: Output = io::BufWriter::new(Box::new(std::fs::File::create(&file).unwrap()));
        let mut sink = JsonSink::new(out);
        let names = names();
        let clock = WallClock::now();
        let mut cgroups = Cgroups::new("/nonexistent");
        let mut ctx = Context {
            names: &names,
            clock: &clock,
            cgroups: &mut cgroups,
        };
        sink.event(&rst(), &mut ctx).unwrap();
        sink.loss(EventKind::State, 3, 3).unwrap();
        sink.event(&rst(), &mut ctx).unwrap();
        sink.flush().unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        let types: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["type"].to_string())
            .collect();
        assert_eq!(types, ["\"event\"", "\"loss\"", "\"event\""]);
    }

    #[test]
    fn unknown_owner_is_null() {
        let mut ev = rst();
        ev.owner = None;
        ev.rst_reason = Some(99);
        let v = line(&ev);
        assert!(v["owner"].is_null());
        assert_eq!(v["reason"], "REASON_99");
    }
}
