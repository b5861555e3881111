//! `diagnose --record`: the host readings a diagnosis takes, written as
//! the live host gives them (`RecordingHost`) and handed back in the
//! same order by a record file (`RecordedHost`), so that `replay` runs
//! the same `diagnosis::watch` over the same inputs.
//!
//! Frames (JSON payloads, docs/record.md):
//!
//! | kind | payload |
//! | --- | --- |
//! | `D` | `RunFacts`: options, start time, kernel, what was not traced |
//! | `R` | `{"at": "start" or "end", counters, sysctls, sockets, conntrack, host_global}` |
//! | `S` | `{"at", "survey": {"namespaces": {inode: {name, counters, conntrack, cookie}}, "truncated"}}` |
//! | `Q` | accept-queue sample: `[{"local", "queued", "limit", "inode"}]`, only when it differs from the last |
//! | `P` | holders of the listening sockets: `{inode: {"pid", "comm"}}` |
//! | `C` | an affected owner's cgroup, keyed by (pid, cgroup id) |
//! | `F` | `{"load_status", "opens"}` |

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    fs::File,
    io::{self, Write},
    net::SocketAddr,
    path::Path,
};

use serde::{Deserialize, Serialize};

use super::{
    CGROUP, CgroupRecord, DIAGNOSE_END, Frame, LISTENERS, OWNERS, OwnerCgroup, READING, RUN,
    RecordError, RecordReader, RecordWriter, SURVEY, write_frame,
};
use crate::{
    aggregate::Aggregate,
    counts::Counts,
    diagnosis::{
        facts::{Listener, SocketFacts},
        report::Report,
        watch::{
            HostReading, HostSource, Moment, RunEnd, RunFacts, SourceError, StartReadings, Watch,
        },
    },
    event::{Comm, OpenCount, Owner as SocketOwner, TcpEvent},
    host::{
        cgroups::CgroupInfo, conntrack::Conntrack, counters::Counters, global::HostGlobal,
        owners::Owner, survey::Survey,
    },
    tracer::{RawRecords, TcReport, split_records},
};

/// A listener as a reading or a sample had it (its holder is named at
/// the end, from the `P` frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ListenerRecord {
    local: SocketAddr,
    queued: u32,
    limit: Option<u32>,
    inode: u64,
}

impl From<&Listener> for ListenerRecord {
    fn from(l: &Listener) -> ListenerRecord {
        ListenerRecord {
            local: l.local,
            queued: l.queued,
            limit: l.limit,
            inode: l.inode,
        }
    }
}

impl ListenerRecord {
    fn to_listener(&self) -> Listener {
        Listener {
            local: self.local,
            queued: self.queued,
            limit: self.limit,
            owner: None,
            inode: self.inode,
        }
    }
}

/// `SocketFacts` with the listeners' inodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SocketsRecord {
    states: BTreeMap<String, u64>,
    time_wait_by_peer: Vec<(SocketAddr, u64)>,
    /// Absent from records written before it.
    #[serde(default)]
    held_by_peer: Vec<(SocketAddr, u64)>,
    /// Absent from records written before it.
    #[serde(default)]
    stuck_by_peer: Vec<(SocketAddr, u64)>,
    listeners: Vec<ListenerRecord>,
}

/// An `R` frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ReadingRecord {
    at: Moment,
    counters: Counters,
    sysctls: BTreeMap<String, String>,
    sockets: Option<SocketsRecord>,
    conntrack: Option<Conntrack>,
    host_global: Option<HostGlobal>,
}

impl ReadingRecord {
    fn of(at: Moment, r: &HostReading) -> ReadingRecord {
        ReadingRecord {
            at,
            counters: r.counters.clone(),
            sysctls: r.sysctls.clone(),
            sockets: r.sockets.as_ref().map(|s| SocketsRecord {
                states: s.states.clone(),
                time_wait_by_peer: s.time_wait_by_peer.clone(),
                held_by_peer: s.held_by_peer.clone(),
                stuck_by_peer: s.stuck_by_peer.clone(),
                listeners: s.listeners.iter().map(ListenerRecord::from).collect(),
            }),
            conntrack: r.conntrack.clone(),
            host_global: r.host_global.clone(),
        }
    }
}

/// An `R` frame's reading.
pub(super) fn reading(r: &ReadingRecord) -> (Moment, HostReading) {
    let reading = HostReading {
        counters: r.counters.clone(),
        sysctls: r.sysctls.clone(),
        sockets: r.sockets.as_ref().map(|s| SocketFacts {
            states: s.states.clone(),
            time_wait_by_peer: s.time_wait_by_peer.clone(),
            held_by_peer: s.held_by_peer.clone(),
            stuck_by_peer: s.stuck_by_peer.clone(),
            listeners: s
                .listeners
                .iter()
                .map(ListenerRecord::to_listener)
                .collect(),
        }),
        conntrack: r.conntrack.clone(),
        host_global: r.host_global.clone(),
    };
    (r.at, reading)
}

/// An `S` frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SurveyRecord {
    pub(super) at: Moment,
    pub(super) survey: Survey,
}

/// A `Q` frame's sample.
pub(super) fn listeners(records: Vec<ListenerRecord>) -> Vec<Listener> {
    records.iter().map(ListenerRecord::to_listener).collect()
}

/// An open the kernel counted, as an `F` frame keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct OpenRecord {
    /// pid, tid, comm, cgroup id.
    owner: Option<(u32, u32, String, u64)>,
    netns: Option<u32>,
    peer: SocketAddr,
    passive: bool,
    latency_bucket: Option<u16>,
    n: u64,
}

/// An `F` frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct EndRecord {
    pub(super) load_status: Option<String>,
    pub(super) opens: Vec<OpenRecord>,
}

pub(super) fn open_record(o: &OpenCount) -> OpenRecord {
    OpenRecord {
        owner: o
            .owner
            .as_ref()
            .map(|w| (w.pid, w.tid, w.comm.to_string(), w.cgroup_id)),
        netns: o.netns,
        peer: o.peer,
        passive: o.passive,
        latency_bucket: o.latency_bucket,
        n: o.n,
    }
}

/// An `F` frame's opens.
pub(super) fn opens(records: &[OpenRecord]) -> Vec<OpenCount> {
    records
        .iter()
        .map(|r| OpenCount {
            owner: r
                .owner
                .as_ref()
                .map(|(pid, tid, comm, cgroup_id)| SocketOwner {
                    pid: *pid,
                    tid: *tid,
                    comm: Comm::new(comm.as_bytes()),
                    cgroup_id: *cgroup_id,
                }),
            netns: r.netns,
            peer: r.peer,
            passive: r.passive,
            latency_bucket: r.latency_bucket,
            n: r.n,
        })
        .collect()
}

/// A `HostSource` whose every reading is also written into a record
/// file (`diagnose --record`), with the run's options, its events and
/// its end; without a file, the source itself.
pub struct RecordingHost<H, W: Write = File> {
    host: H,
    writer: Option<RecordWriter<W>>,
    /// Recording, but the file is not started yet (its header needs the
    /// session): frames written meanwhile, kind and JSON payload.
    waiting: Option<Vec<(u8, Vec<u8>)>>,
    /// The last accept-queue sample written: an unchanged one is not
    /// written again (taking it twice changes no peak).
    last_listeners: Option<Vec<ListenerRecord>>,
    /// Owners whose cgroup was written.
    cgroups: HashSet<(u32, u64)>,
}

impl<H: HostSource, W: Write> RecordingHost<H, W> {
    /// Reads from `host`; with `record`, keeps what it read for the file
    /// `start_file` starts.
    pub fn new(host: H, record: bool) -> RecordingHost<H, W> {
        RecordingHost {
            host,
            writer: None,
            waiting: record.then(Vec::new),
            last_listeners: None,
            cgroups: HashSet::new(),
        }
    }

    /// From now on writes into `writer` (its header names `diagnose`),
    /// first what was read before.
    ///
    /// # Errors
    /// Failures to write.
    pub fn start_file(&mut self, mut writer: RecordWriter<W>) -> io::Result<()> {
        for (kind, payload) in self.waiting.take().unwrap_or_default() {
            write_frame(&mut writer.out, kind, &payload)?;
        }
        self.writer = Some(writer);
        Ok(())
    }

    /// The run's options and start (`D`).
    ///
    /// # Errors
    /// Failures to write.
    pub fn run(&mut self, run: &RunFacts) -> io::Result<()> {
        self.write(RUN, run)
    }

    /// A batch's raw records (`E`); clears them. Nothing without a file.
    ///
    /// # Errors
    /// Failures to write.
    pub fn events(&mut self, raw: Option<&mut RawRecords>) -> io::Result<()> {
        match (&mut self.writer, raw) {
            (Some(writer), Some(raw)) => writer.raw_events(raw),
            (None, Some(raw)) => {
                raw.clear();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// How the load ended and the opens the kernel counted (`F`).
    ///
    /// # Errors
    /// Failures to write.
    pub fn run_end(&mut self, end: &RunEnd) -> io::Result<()> {
        let record = EndRecord {
            load_status: end.load_status.clone(),
            opens: end.opens.iter().map(open_record).collect(),
        };
        self.write(DIAGNOSE_END, &record)
    }

    /// Ends the file (`Z`: seconds, counts, TC programs) and returns it;
    /// `None` without a file.
    ///
    /// # Errors
    /// Failures to write.
    pub fn finish(
        self,
        seconds: f64,
        counts: &Counts,
        tc: Option<&TcReport>,
    ) -> io::Result<Option<W>> {
        self.writer
            .map(|w| w.finish(seconds, counts, tc, None))
            .transpose()
    }

    fn write(&mut self, kind: u8, value: &impl Serialize) -> io::Result<()> {
        match (&mut self.writer, &mut self.waiting) {
            (Some(writer), _) => writer.frame_after_events(kind, value),
            (None, Some(waiting)) => {
                waiting.push((kind, serde_json::to_vec(value)?));
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }
}

impl<H: HostSource, W: Write> HostSource for RecordingHost<H, W> {
    fn reading(&mut self, at: Moment) -> Result<HostReading, SourceError> {
        let reading = self.host.reading(at)?;
        self.write(READING, &ReadingRecord::of(at, &reading))?;
        Ok(reading)
    }

    fn survey(&mut self, at: Moment) -> Result<Survey, SourceError> {
        let survey = self.host.survey(at)?;
        let record = SurveyRecord { at, survey };
        self.write(SURVEY, &record)?;
        Ok(record.survey)
    }

    fn listeners(&mut self) -> Result<Option<Vec<Listener>>, SourceError> {
        let sample = self.host.listeners()?;
        if let Some(listeners) = &sample {
            let record: Vec<ListenerRecord> = listeners.iter().map(ListenerRecord::from).collect();
            if self.last_listeners.as_ref() != Some(&record) {
                self.write(LISTENERS, &record)?;
                self.last_listeners = Some(record);
            }
        }
        Ok(sample)
    }

    fn socket_owners(
        &mut self,
        inodes: &BTreeSet<u64>,
    ) -> Result<HashMap<u64, Owner>, SourceError> {
        let owners = self.host.socket_owners(inodes)?;
        let sorted: BTreeMap<_, _> = owners.iter().collect();
        self.write(OWNERS, &sorted)?;
        Ok(owners)
    }

    fn cgroup(&mut self, pid: u32, cgroup_id: u64) -> Result<Option<CgroupInfo>, SourceError> {
        let info = self.host.cgroup(pid, cgroup_id)?;
        if self.cgroups.insert((pid, cgroup_id)) {
            let frame = CgroupRecord {
                key: (pid, cgroup_id),
                cgroup: info.as_ref().map(OwnerCgroup::of),
            };
            self.write(CGROUP, &frame)?;
        }
        Ok(info)
    }
}

/// The report a `diagnose --record` file's live run printed, and the
/// aggregate its figures come from: the recorded events and host
/// readings through the same `Watch` as live.
///
/// # Errors
/// A damaged file, or one without a part of the diagnosis.
pub fn replay(path: &Path) -> Result<(Report, Aggregate), RecordError> {
    let (mut host, run, end) = RecordedHost::load(path)?;
    let not_recorded = |e: SourceError| RecordError::Incomplete {
        path: path.to_path_buf(),
        what: e.to_string(),
    };
    let start = StartReadings::take(&mut host).map_err(not_recorded)?;
    let mut reader = RecordReader::open(path)?;
    let header = reader.header().clone();
    let mut watch = Watch::begin(run, header.names, start);
    let decoder = reader.decoder();
    let mut batch: Vec<TcpEvent> = Vec::with_capacity(4096);
    loop {
        let at = reader.offset;
        let Some(frame) = reader.next_frame()? else {
            break;
        };
        if let Frame::Events(records) = frame {
            // The reader checked every length; only records that
            // decoded live were recorded.
            for record in split_records(records).map_while(Result::ok) {
                match decoder.decode(record) {
                    Ok(ev) => batch.push(ev),
                    Err(e) => {
                        return Err(RecordError::Corrupt {
                            path: path.to_path_buf(),
                            offset: at,
                            what: e.to_string(),
                        });
                    }
                }
            }
            watch.add_batch(&mut batch);
        }
    }
    // Taken between the events live; a peak does not depend on when.
    while host.has_listener_samples() {
        watch.sample_listeners(&mut host).map_err(not_recorded)?;
    }
    watch.conclude(end, &mut host).map_err(not_recorded)
}

/// A diagnosis' host readings as a record file holds them, handed back
/// in the order they were taken.
#[derive(Debug, Default)]
pub struct RecordedHost {
    readings: BTreeMap<Moment, HostReading>,
    surveys: BTreeMap<Moment, Survey>,
    listeners: VecDeque<Vec<Listener>>,
    owners: HashMap<u64, Owner>,
    cgroups: HashMap<(u32, u64), Option<CgroupInfo>>,
}

impl RecordedHost {
    /// The host readings, options and end of the diagnosis recorded in
    /// `path` (a `diagnose --record` file, already checked by
    /// `RecordReader::open`).
    ///
    /// # Errors
    /// A damaged file, or one without the options or the end of a
    /// diagnosis.
    pub fn load(path: &Path) -> Result<(RecordedHost, RunFacts, RunEnd), RecordError> {
        let mut reader = RecordReader::open(path)?;
        let mut host = RecordedHost::default();
        let mut run = None;
        let mut diagnose_end = None;
        let mut end = None;
        while let Some(frame) = reader.next_frame()? {
            match frame {
                Frame::Run(facts) => run = Some(*facts),
                Frame::Reading(at, reading) => {
                    host.readings.insert(at, *reading);
                }
                Frame::Survey(at, survey) => {
                    host.surveys.insert(at, *survey);
                }
                Frame::Listeners(sample) => host.listeners.push_back(sample),
                Frame::Owners(owners) => host.owners = owners,
                Frame::Cgroup(key, info) => {
                    host.cgroups.insert(key, info);
                }
                Frame::DiagnoseEnd(load_status, opens) => diagnose_end = Some((load_status, opens)),
                Frame::End(ending) => end = Some(ending),
                // The reader refuses top frames in a diagnose recording.
                Frame::Events(_) | Frame::Losses(_) | Frame::Tick(..) => {}
            }
        }
        let missing = |what: &str| RecordError::Incomplete {
            path: path.to_path_buf(),
            what: what.to_string(),
        };
        let run = run.ok_or_else(|| missing("options (D frame)"))?;
        let (load_status, opens) = diagnose_end.ok_or_else(|| missing("load status (F frame)"))?;
        // The reader refuses a file without its end record.
        let end = end.ok_or_else(|| missing("end record"))?;
        Ok((
            host,
            run,
            RunEnd {
                seconds: end.seconds,
                counts: end.counts,
                opens,
                load_status,
            },
        ))
    }

    /// Whether an accept-queue sample is still to be handed out.
    fn has_listener_samples(&self) -> bool {
        !self.listeners.is_empty()
    }

    fn not_recorded(what: &str) -> SourceError {
        SourceError::NotRecorded(what.to_string())
    }
}

impl HostSource for RecordedHost {
    fn reading(&mut self, at: Moment) -> Result<HostReading, SourceError> {
        self.readings
            .remove(&at)
            .ok_or_else(|| Self::not_recorded(&format!("{} reading (R frame)", at.name())))
    }

    fn survey(&mut self, at: Moment) -> Result<Survey, SourceError> {
        self.surveys
            .remove(&at)
            .ok_or_else(|| Self::not_recorded(&format!("{} namespace survey (S frame)", at.name())))
    }

    fn listeners(&mut self) -> Result<Option<Vec<Listener>>, SourceError> {
        Ok(self.listeners.pop_front())
    }

    fn socket_owners(
        &mut self,
        inodes: &BTreeSet<u64>,
    ) -> Result<HashMap<u64, Owner>, SourceError> {
        Ok(self
            .owners
            .iter()
            .filter(|(inode, _)| inodes.contains(inode))
            .map(|(inode, owner)| (*inode, owner.clone()))
            .collect())
    }

    fn cgroup(&mut self, pid: u32, cgroup_id: u64) -> Result<Option<CgroupInfo>, SourceError> {
        Ok(self.cgroups.get(&(pid, cgroup_id)).cloned().flatten())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tcptrace_common::{EVENT_SIZE, Event, kind};

    use super::{super::Recorded, *};
    use crate::{
        host::{
            conntrack::{ConntrackState, parse_stat},
            sock_diag::{TcpSocket, TcpState},
            survey::NamespaceReading,
        },
        kernel::names::Names,
        record::Header,
    };

    /// A host that answers the same made-up readings every time, with
    /// accept queues that fill and drain.
    struct MadeUp {
        samples: VecDeque<Option<Vec<Listener>>>,
    }

    fn socket(state: TcpState, local: &str, remote: &str, recv_q: u32, inode: u64) -> TcpSocket {
        TcpSocket {
            state,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            recv_q,
            send_q: 128,
            inode,
            uid: 0,
            info: None,
        }
    }

    fn counters(aborts: i64) -> Counters {
        let netstat = format!(
            "TcpExt: TCPAbortOnData TCPAbortOnClose ListenOverflows\nTcpExt: {aborts} 3 0\n\
             IpExt: InOctets\nIpExt: 99\n"
        );
        let mut counters = Counters::parse(
            &netstat,
            "Tcp: ActiveOpens EstabResets\nTcp: 10 2\nUdp: InDatagrams\nUdp: 4\n",
        )
        .unwrap();
        counters.retain(crate::host::reading::is_tcp_counter);
        counters
    }

    fn conntrack() -> Conntrack {
        let (_, stats) = parse_stat(
            "entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
             0000000a  00000001 00000002 00000003 00000004 00000000 00000000 00000000 00000005 00000006 0000000f 00000010 00000000  00000000 00000000 00000000 00000001\n",
        )
        .unwrap();
        Conntrack::Loaded(ConntrackState {
            stats,
            count: Some(10),
            max: Some(262_144),
            ..ConntrackState::default()
        })
    }

    impl HostSource for MadeUp {
        fn reading(&mut self, at: Moment) -> Result<HostReading, SourceError> {
            let tw = socket(TcpState::TimeWait, "10.0.0.1:40000", "10.0.0.2:80", 0, 0);
            let sockets = [
                socket(TcpState::Listen, "0.0.0.0:80", "0.0.0.0:0", 1, 0),
                socket(TcpState::Listen, "0.0.0.0:80", "0.0.0.0:0", 2, 77),
                tw.clone(),
                tw,
            ];
            Ok(HostReading {
                counters: counters(if at == Moment::Start { 1 } else { 6 }),
                sysctls: BTreeMap::from([("net.core.somaxconn".into(), "4096".into())]),
                sockets: Some(SocketFacts::of(&sockets)),
                conntrack: Some(conntrack()),
                host_global: Some(HostGlobal {
                    orphans: Some(3),
                    ..HostGlobal::default()
                }),
            })
        }

        fn survey(&mut self, at: Moment) -> Result<Survey, SourceError> {
            let reading = NamespaceReading {
                name: "pod".into(),
                counters: counters(if at == Moment::Start { 0 } else { 5 }),
                conntrack: Some(conntrack()),
                cookie: Some(7),
                deleted: false,
            };
            Ok(Survey {
                namespaces: BTreeMap::from([(4_026_532_458, reading)]),
                truncated: false,
            })
        }

        fn listeners(&mut self) -> Result<Option<Vec<Listener>>, SourceError> {
            Ok(self.samples.pop_front().flatten())
        }

        fn socket_owners(
            &mut self,
            inodes: &BTreeSet<u64>,
        ) -> Result<HashMap<u64, Owner>, SourceError> {
            assert!(inodes.contains(&77), "{inodes:?}");
            Ok(HashMap::from([(
                77,
                Owner {
                    pid: 41,
                    comm: "srv".into(),
                },
            )]))
        }

        fn cgroup(&mut self, pid: u32, cgroup_id: u64) -> Result<Option<CgroupInfo>, SourceError> {
            Ok((pid == 7).then(|| {
                CgroupInfo::recorded(format!("/system.slice/app-{cgroup_id}.service"), None, None)
            }))
        }
    }

    fn names() -> Names {
        Names::new(
            BTreeMap::from([(1, "TCP_ESTABLISHED".into()), (7, "TCP_CLOSE".into())]),
            BTreeMap::from([(11, "TCP_ABORT_ON_CLOSE".into())]),
        )
    }

    fn run_facts() -> RunFacts {
        RunFacts {
            netns: Some("pod".into()),
            watched_netns: Some(4_026_532_458),
            filters: serde_json::json!({"events": ["all"]}),
            during: Some("stress churn 127.0.0.1:80".into()),
            started_at: "2026-11-30T20:00:00.000000000Z".into(),
            started_mono_ns: 1_000,
            kernel: Some("6.18.0".into()),
            drops_traced: true,
            missing: vec!["retransmit errors".into()],
        }
    }

    /// Resets a process closing with unread data sent, as raw records.
    fn raw_resets() -> Vec<Vec<u8>> {
        (0..6u16)
            .map(|i| {
                let mut ev = Event {
                    ts_ns: 2_000 + u64::from(i) * 1_000_000,
                    skaddr: 0xffff_0000 + u64::from(i),
                    kind: kind::RST_SENT,
                    family: 2,
                    old_state: 1,
                    new_state: 1,
                    sport: 80,
                    dport: 40_000 + i,
                    reason: 11,
                    netns: 4_026_532_458,
                    age_ns: 5_000_000,
                    ..Default::default()
                };
                ev.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
                ev.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
                ev.owner.tgid = 7;
                ev.owner.pid = 7;
                ev.owner.cgroup_id = 9;
                ev.owner.comm[..3].copy_from_slice(b"app");
                // SAFETY: Event is repr(C) plain integers.
                unsafe {
                    std::slice::from_raw_parts((&ev as *const Event).cast::<u8>(), EVENT_SIZE)
                }
                .to_vec()
            })
            .collect()
    }

    fn end() -> RunEnd {
        let mut counts = Counts::default();
        counts.received[usize::from(kind::RST_SENT)] = 6;
        counts.kernel.produced[usize::from(kind::RST_SENT)] = 6;
        counts.drops.host.insert(3, 2);
        RunEnd {
            seconds: 2.5,
            counts,
            opens: Vec::new(),
            load_status: Some("exit status: 0".into()),
        }
    }

    fn listener(queued: u32) -> Listener {
        Listener {
            local: "0.0.0.0:80".parse().unwrap(),
            queued,
            limit: Some(128),
            owner: None,
            inode: 77,
        }
    }

    /// Runs a diagnosis over the made-up host as `diagnose --record`
    /// does: the live report (JSON and text) and the record file.
    fn live() -> (String, String, Vec<u8>) {
        let samples = [Some(vec![listener(1)]), None, Some(vec![listener(5)])]
            .into_iter()
            .chain([Some(vec![listener(5)]), Some(vec![listener(2)])])
            .collect();
        let mut host = RecordingHost::new(MadeUp { samples }, true);
        let start = StartReadings::take(&mut host).unwrap();
        let header = Header {
            command: Recorded::Diagnose,
            ..Header::here(Some(250), 1_700_000_000_000_000_000, names(), Vec::new())
        };
        host.start_file(RecordWriter::new(Vec::new(), &header).unwrap())
            .unwrap();
        host.run(&run_facts()).unwrap();
        let mut watch = Watch::begin(run_facts(), names(), start);
        let decoder = crate::decode::Decoder::new(Some(250));
        let mut raw = RawRecords::default();
        let mut batch = Vec::new();
        for record in raw_resets() {
            batch.push(decoder.decode(&record).unwrap());
            raw.push(&record);
            watch.sample_listeners(&mut host).unwrap();
        }
        host.events(Some(&mut raw)).unwrap();
        watch.add_batch(&mut batch);
        host.run_end(&end()).unwrap();
        let (report, agg) = watch.conclude(end(), &mut host).unwrap();
        let file = host
            .finish(2.5, &end().counts, None)
            .unwrap()
            .expect("a file");
        (
            printed(&report, &agg, true),
            printed(&report, &agg, false),
            file,
        )
    }

    fn printed(report: &Report, agg: &Aggregate, json: bool) -> String {
        let mut out = Vec::new();
        report.print(&report.to_json(agg), json, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn temp(bytes: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "tcptrace-diag-record-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn replayed(bytes: &[u8]) -> Result<(String, String), String> {
        let path = temp(bytes);
        let result = replay(&path).map_err(|e| e.to_string());
        let _ = std::fs::remove_file(&path);
        let (report, agg) = result?;
        Ok((printed(&report, &agg, true), printed(&report, &agg, false)))
    }

    #[test]
    fn a_replayed_diagnosis_prints_the_live_report() {
        let (json, text, file) = live();
        let (replayed_json, replayed_text) = replayed(&file).unwrap();
        assert_eq!(replayed_json, json);
        assert_eq!(replayed_text, text);
        // What the equality covers: the readings, the accept-queue peak
        // and its holder, the affected process's cgroup, the load.
        let report: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(report["events"], 6, "{report:#}");
        assert_eq!(report["counters"]["TcpExtTCPAbortOnData"], 5);
        assert_eq!(report["sysctls"]["net.core.somaxconn"], "4096");
        assert_eq!(report["listeners_peak"][0]["queued"], 5);
        assert_eq!(report["listeners_peak"][0]["owner"]["comm"], "srv");
        assert_eq!(report["sockets_end"]["listeners"][0]["owner"]["pid"], 41);
        assert_eq!(report["sockets_end"]["states"]["TIME_WAIT"], 2);
        assert_eq!(report["conntrack"]["end"]["stats"]["invalid"], 4);
        assert_eq!(report["load"]["status"], "exit status: 0");
        assert_eq!(report["started_at"], "2026-11-30T20:00:00.000000000Z");
        assert!(
            text.contains("/system.slice/app-9.service"),
            "the affected process's cgroup: {text}"
        );
        // An unchanged accept-queue sample is written once.
        let path = temp(&file);
        let mut reader = RecordReader::open(&path).unwrap();
        let mut samples = 0;
        while let Some(frame) = reader.next_frame().unwrap() {
            samples += usize::from(matches!(frame, Frame::Listeners(_)));
        }
        let _ = std::fs::remove_file(&path);
        assert_eq!(samples, 3);
    }

    #[test]
    fn every_cut_or_damaged_diagnosis_file_is_refused_in_one_line() {
        let (_, _, file) = live();
        for len in 0..file.len() {
            let err = replayed(&file[..len]).unwrap_err();
            assert!(
                err.contains("not a tcptrace record file") || err.contains("truncated at byte"),
                "{len}: {err}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
        for at in (16..file.len()).step_by(7) {
            let mut bad = file.clone();
            bad[at] ^= 0x40;
            let err = replayed(&bad).unwrap_err();
            assert!(
                err.contains("corrupt at byte")
                    || err.contains("format version")
                    || err.contains("truncated"),
                "byte {at}: {err}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
    }

    /// A file whose frames are whole but lack a part of the diagnosis
    /// names the part.
    #[test]
    fn an_incomplete_diagnosis_is_named() {
        let header = Header {
            command: Recorded::Diagnose,
            ..Header::here(Some(250), 0, names(), Vec::new())
        };
        let mut host = recording_into_memory(&header);
        host.run(&run_facts()).unwrap();
        host.run_end(&end()).unwrap();
        let file = host.finish(1.0, &end().counts, None).unwrap().unwrap();
        let err = replayed(&file).unwrap_err();
        assert!(
            err.contains("an incomplete diagnose recording: no start reading (R frame)"),
            "{err}"
        );
    }

    /// A host with no samples, recording into memory under `header`.
    fn recording_into_memory(header: &Header) -> RecordingHost<MadeUp, Vec<u8>> {
        let mut host = RecordingHost::new(
            MadeUp {
                samples: VecDeque::new(),
            },
            false,
        );
        host.start_file(RecordWriter::new(Vec::new(), header).unwrap())
            .unwrap();
        host
    }

    /// The frames of a diagnosis do not belong in a trace recording.
    #[test]
    fn diagnose_frames_in_a_trace_recording_are_corrupt() {
        let header = Header::here(Some(250), 0, names(), Vec::new());
        let mut host = recording_into_memory(&header);
        host.run(&run_facts()).unwrap();
        let file = host.finish(1.0, &end().counts, None).unwrap().unwrap();
        let err = replayed(&file).unwrap_err();
        assert!(
            err.contains("a diagnose frame in another command's recording"),
            "{err}"
        );
    }
}
