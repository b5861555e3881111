//! NDJSON: one object per line, schema in docs/events.md. Stable: other
//! tools parse it. Add fields, never rename or remove them without
//! bumping `SCHEMA_VERSION`.

use std::io::{self, Write};

use serde::Serialize;

use super::{Context, Output, Sink};
use crate::{
    event::{EventKind, TcpEvent},
    summary::Summary,
    timefmt,
};

pub const SCHEMA_VERSION: u32 = 1;

pub struct JsonSink {
    out: Output,
}

impl JsonSink {
    pub fn new(out: Output) -> JsonSink {
        JsonSink { out }
    }
}

#[derive(Serialize)]
struct EventRecord<'a> {
    v: u32,
    #[serde(rename = "type")]
    record: &'static str,
    time: String,
    mono_ns: u64,
    kind: &'static str,
    netns: Option<u32>,
    family: &'static str,
    local_addr: String,
    local_port: u16,
    remote_addr: String,
    remote_port: u16,
    owner: Option<OwnerRecord<'a>>,
    old_state: Option<String>,
    new_state: Option<String>,
    state: Option<String>,
    reason: Option<String>,
    connect_ns: Option<u64>,
    age_ns: Option<u64>,
    idle_ns: Option<u64>,
    idle_send_ns: Option<u64>,
    idle_recv_ns: Option<u64>,
    err: Option<i32>,
    sock: String,
}

#[derive(Serialize)]
struct OwnerRecord<'a> {
    pid: u32,
    tid: u32,
    comm: &'a str,
    cgroup_id: u64,
    cgroup: Option<&'a str>,
    container: Option<&'a str>,
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
        let cgroup = ev
            .owner
            .as_ref()
            .and_then(|o| ctx.cgroups.lookup(o.cgroup_id));
        let record = EventRecord {
            v: SCHEMA_VERSION,
            record: "event",
            time: timefmt::rfc3339(ctx.clock.unix_ns(ev.mono_ns)),
            mono_ns: ev.mono_ns,
            kind: ev.kind.name(),
            netns: ev.netns,
            family: if ev.local.is_ipv4() { "ipv4" } else { "ipv6" },
            local_addr: ev.local.ip().to_string(),
            local_port: ev.local.port(),
            remote_addr: ev.remote.ip().to_string(),
            remote_port: ev.remote.port(),
            owner: ev.owner.as_ref().map(|o| OwnerRecord {
                pid: o.pid,
                tid: o.tid,
                comm: &o.comm,
                cgroup_id: o.cgroup_id,
                cgroup: cgroup.map(|c| c.path.as_str()),
                container: cgroup.and_then(|c| c.container.as_deref()),
            }),
            old_state: ev.transition.map(|(old, _)| ctx.names.state(old)),
            new_state: ev.transition.map(|(_, new)| ctx.names.state(new)),
            state: ev.state.map(|s| ctx.names.state(s)),
            reason: ev.rst_reason.map(|r| ctx.names.reason(r)),
            connect_ns: ev.connect_ns,
            age_ns: ev.age_ns,
            idle_ns: ev.idle_ns(),
            idle_send_ns: ev.idle_send_ns,
            idle_recv_ns: ev.idle_recv_ns,
            err: ev.err,
            sock: format!("{:#x}", ev.sock),
        };
        serde_json::to_writer(&mut self.out, &record)?;
        self.out.write_all(b"\n")
    }

    fn loss(&mut self, kind: EventKind, lost: u64, total_lost: u64) -> io::Result<()> {
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
        serde_json::to_writer(&mut self.out, &summary.to_json())?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
