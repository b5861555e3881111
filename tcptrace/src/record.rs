//! Record files (`trace --record FILE`, read by `tcptrace replay`): the
//! kernel's raw event records as the ring buffer handed them out, plus
//! what decoding and printing them needs that only the recording host
//! knew. Format (docs/record.md, version `FORMAT_VERSION`):
//!
//! ```text
//! "tcptrace record\n"   16 bytes, then the format version (u32 LE)
//! frame*                kind (u8), payload length (u32 LE), CRC-32 of the payload (u32 LE), payload
//! ```
//!
//! Frames, in the order the live command met them: `H` (first, once:
//! JSON `Header`, which names the command that recorded, `trace`,
//! `diagnose` or `top`), `E` (raw records, each after its length: `event_size`
//! bytes, or `event_with_peer_size` for a received RST with the TC
//! programs' profile of the peer), `C` (JSON: what a socket owner's
//! cgroup resolved to, path, container, pod and namespace, whenever that
//! changed), `L` (trace: JSON, the loss counters when they changed at a
//! loss check), `Z` (last, once: JSON `End`, the run's length, exact
//! counts and the summary's TC and `--pcap` lines). A file without its
//! `Z` frame was cut short and is refused as a whole. `diagnose` adds
//! its host readings and options (`D`, `R`, `S`, `Q`, `P`, `F`: see
//! `diagnosis`); `top` a `T` frame at each snapshot (JSON: its time into
//! the run, the counts, the opens the kernel counted since the last one).
//!
//! Writing costs a copy of each record, a CRC per frame and one
//! `write(2)` per 1 MiB (or per flush): no formatting; an owner's cgroup
//! is looked up in the same cache the JSON sink uses and written only
//! when its answer changes.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tcptrace_common::{EVENT_SIZE, EVENT_WITH_PEER_SIZE};

mod diagnosis;

pub use self::diagnosis::{RecordedHost, RecordingHost, replay as replay_diagnosis};
use crate::{
    counts::{Counts, DropCounts, KernelCounts},
    diagnosis::{
        facts::Listener,
        watch::{HostReading, Moment, RunFacts},
    },
    event::{EventKind, KINDS, OpenCount, TcpEvent},
    host::{
        cgroups::{CgroupInfo, Cgroups},
        k8s::PodNames,
        owners::Owner,
        survey::Survey,
    },
    kernel::names::Names,
    summary::RecorderReport,
    tracer::{RawRecords, TcReport, split_records},
};

/// The first bytes of every record file.
pub const MAGIC: &[u8; 16] = b"tcptrace record\n";
/// The version of the format this build writes (and reads, with the
/// older ones in `READS_VERSIONS`).
pub const FORMAT_VERSION: u32 = 4;
/// Versions this build reads: 1 (`trace` only, no command in the header),
/// 2 (the command named; `diagnose` frames), 3 (`top` recordings) and 4
/// (resets carry the data segments sent in `seg_len`; before, 0 there
/// means unknown: `Decoder::for_record`).
const READS_VERSIONS: [u32; 4] = [1, 2, 3, 4];
/// A frame longer than this is corruption, not data (memory stays
/// bounded whatever the file says).
const MAX_FRAME: u32 = 64 << 20;
/// Records gathered before an `E` frame is written.
const EVENTS_PER_FRAME: usize = 4096;

const HEADER: u8 = b'H';
const EVENTS: u8 = b'E';
const CGROUP: u8 = b'C';
const LOSSES: u8 = b'L';
const END: u8 = b'Z';
// `diagnose` (see `diagnosis`).
const RUN: u8 = b'D';
const READING: u8 = b'R';
const SURVEY: u8 = b'S';
const LISTENERS: u8 = b'Q';
const OWNERS: u8 = b'P';
const DIAGNOSE_END: u8 = b'F';
// `top`.
const TICK: u8 = b'T';

/// The command that recorded a file, whose output `replay` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recorded {
    /// `trace --record` (every version-1 file).
    #[default]
    Trace,
    /// `diagnose --record`.
    Diagnose,
    /// `top --record`.
    Top,
}

/// What the recording host knew that decoding and printing need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The command that recorded (absent in version 1: `trace`).
    #[serde(default)]
    pub command: Recorded,
    /// The tcptrace version that recorded.
    pub tcptrace: String,
    /// Bytes per raw record (`tcptrace_common::EVENT_SIZE` of that build).
    pub event_size: usize,
    /// Bytes of a received RST's record with the peer's profile after
    /// it (`tcptrace_common::EVENT_WITH_PEER_SIZE` of that build).
    pub event_with_peer_size: usize,
    /// Event kind names by kind index (the meaning of the records' kind
    /// numbers and of the per-kind counters).
    pub kinds: Vec<String>,
    /// The recording kernel's release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// The recording kernel's jiffies per second (idle times are in jiffies).
    pub hz: Option<u32>,
    /// Unix time in nanoseconds of CLOCK_MONOTONIC zero: event stamps
    /// plus this are wall time.
    pub boot_unix_ns: i64,
    /// State, reset-reason and drop-reason names of the recording kernel
    /// (read from its tracepoint format files).
    pub names: Names,
    /// What that kernel could not trace, one phrase each.
    pub missing: Vec<String>,
    /// `top`: its `--rows` (rows per table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
}

impl Header {
    /// This host and build: `hz`, `boot_unix_ns`, `names` and `missing`
    /// come from the running session.
    pub fn here(hz: Option<u32>, boot_unix_ns: i128, names: Names, missing: Vec<String>) -> Header {
        Header {
            command: Recorded::Trace,
            tcptrace: env!("CARGO_PKG_VERSION").to_string(),
            event_size: EVENT_SIZE,
            event_with_peer_size: EVENT_WITH_PEER_SIZE,
            kinds: kind_names(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            hz,
            boot_unix_ns: i64::try_from(boot_unix_ns).unwrap_or(0),
            names,
            missing,
            rows: None,
        }
    }
}

fn kind_names() -> Vec<String> {
    EventKind::ALL
        .iter()
        .map(|k| k.name().to_string())
        .collect()
}

/// The last frame: how long the run was, its exact counts, and the
/// summary's lines about packets (TC programs, `--pcap`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct End {
    /// Seconds from attach to stop, as the live summary gave them.
    pub seconds: f64,
    /// Received, produced, lost, skipped and drops by reason.
    pub counts: CountsRecord,
    /// Where the TC programs watched packets (`None`: not attached).
    pub tc: Option<TcRecord>,
    /// What `--pcap` wrote (`None`: no flight recorder).
    pub pcap: Option<PcapRecord>,
}

/// `TcReport` as a record file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcRecord {
    mode: String,
    interfaces: Vec<String>,
}

impl From<&TcReport> for TcRecord {
    fn from(r: &TcReport) -> TcRecord {
        TcRecord {
            mode: r.mode.to_string(),
            interfaces: r.interfaces.clone(),
        }
    }
}

impl TcRecord {
    /// Back to `TcReport`; `None` for a mode this build does not know.
    pub fn to_report(&self) -> Option<TcReport> {
        let mode = match self.mode.as_str() {
            "tcx" => "tcx",
            "clsact" => "clsact",
            _ => return None,
        };
        Some(TcReport {
            mode,
            interfaces: self.interfaces.clone(),
        })
    }
}

/// `RecorderReport` (the `--pcap` flight recorder's) as a record file
/// keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcapRecord {
    dir: PathBuf,
    written: u64,
    over_max: u64,
    without_packets: u64,
    failed: u64,
    error: Option<String>,
}

impl From<&RecorderReport> for PcapRecord {
    fn from(r: &RecorderReport) -> PcapRecord {
        PcapRecord {
            dir: r.dir.clone(),
            written: r.written,
            over_max: r.over_max,
            without_packets: r.without_packets,
            failed: r.failed,
            error: r.error.clone(),
        }
    }
}

impl From<&PcapRecord> for RecorderReport {
    fn from(r: &PcapRecord) -> RecorderReport {
        RecorderReport {
            dir: r.dir.clone(),
            written: r.written,
            over_max: r.over_max,
            without_packets: r.without_packets,
            failed: r.failed,
            error: r.error.clone(),
        }
    }
}

/// A `T` frame: when `top` took a snapshot, and what it took then
/// besides the events.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TickRecord {
    /// Since the session started (`Session::elapsed`).
    elapsed_ns: u64,
    counts: CountsRecord,
    /// Opens the kernel counted since the previous snapshot.
    opens: Vec<diagnosis::OpenRecord>,
}

/// `Counts` as a record file keeps them (arrays by kind index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountsRecord {
    received: Vec<u64>,
    produced: Vec<u64>,
    lost: Vec<u64>,
    missed_by_kernel: u64,
    opens_counted: u64,
    count_map_full: u64,
    decode_errors: u64,
    drops_in_scope: BTreeMap<u32, u64>,
    drops_host: BTreeMap<u32, u64>,
}

impl From<&Counts> for CountsRecord {
    fn from(c: &Counts) -> CountsRecord {
        CountsRecord {
            received: c.received.to_vec(),
            produced: c.kernel.produced.to_vec(),
            lost: c.kernel.lost.to_vec(),
            missed_by_kernel: c.kernel.missed_by_kernel,
            opens_counted: c.kernel.counted,
            count_map_full: c.kernel.count_map_full,
            decode_errors: c.decode_errors,
            drops_in_scope: c.drops.in_scope.clone(),
            drops_host: c.drops.host.clone(),
        }
    }
}

impl CountsRecord {
    /// Back to `Counts`; `None` if an array is not one entry per kind.
    pub fn to_counts(&self) -> Option<Counts> {
        Some(Counts {
            received: self.received.as_slice().try_into().ok()?,
            kernel: KernelCounts {
                counted: self.opens_counted,
                count_map_full: self.count_map_full,
                produced: self.produced.as_slice().try_into().ok()?,
                lost: self.lost.as_slice().try_into().ok()?,
                missed_by_kernel: self.missed_by_kernel,
            },
            decode_errors: self.decode_errors,
            drops: DropCounts {
                in_scope: self.drops_in_scope.clone(),
                host: self.drops_host.clone(),
            },
        })
    }
}

/// A `C` frame: from here on, what the JSON sink names for the socket
/// owners of `key` (`Cgroups::owner_key`: pid, or 0 where the pid does
/// not matter, and cgroup id); `cgroup: None` names nothing.
#[derive(Serialize, Deserialize)]
struct CgroupRecord {
    key: (u32, u64),
    cgroup: Option<OwnerCgroup>,
}

/// What the JSON sink prints of an owner's cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OwnerCgroup {
    path: String,
    container_id: Option<String>,
    container: Option<String>,
    pod: Option<String>,
    namespace: Option<String>,
}

impl OwnerCgroup {
    fn of(info: &CgroupInfo) -> OwnerCgroup {
        OwnerCgroup {
            path: info.path.clone(),
            container_id: info.container.clone(),
            container: info.container_name().map(str::to_string),
            pod: info.pod_name().map(str::to_string),
            namespace: info.namespace().map(str::to_string),
        }
    }

    /// Whether `info` prints as this, compared without allocating (once
    /// per recorded event).
    fn prints_as(&self, info: &CgroupInfo) -> bool {
        self.path == info.path
            && self.container_id == info.container
            && self.container.as_deref() == info.container_name()
            && self.pod.as_deref() == info.pod_name()
            && self.namespace.as_deref() == info.namespace()
    }

    /// A cgroup that prints the same.
    fn to_info(&self) -> CgroupInfo {
        let pod = self.pod.as_ref().map(|pod| PodNames {
            namespace: self.namespace.clone(),
            pod: pod.clone(),
            container: self.container.clone(),
        });
        CgroupInfo::recorded(self.path.clone(), self.container_id.clone(), pod)
    }
}

/// Writes a record file as `trace` runs.
pub struct RecordWriter<W: Write = File> {
    out: BufWriter<W>,
    /// Raw records not yet written as an `E` frame.
    pending: RawRecords,
    /// Owners' cgroups as the last `C` frame of their key gave them
    /// (a key with none yet names nothing).
    written: FxHashMap<(u32, u64), Option<OwnerCgroup>>,
    /// The loss counters as the last `L` frame gave them.
    lost: [u64; KINDS],
}

impl<W: Write> RecordWriter<W> {
    /// Starts a record file on `out` (for a path: opened with
    /// `safe_file::create`, mode 0600, no symlink) with its header.
    ///
    /// # Errors
    /// Failures to write.
    pub fn new(out: W, header: &Header) -> io::Result<RecordWriter<W>> {
        let mut out = BufWriter::with_capacity(1 << 20, out);
        out.write_all(MAGIC)?;
        out.write_all(&FORMAT_VERSION.to_le_bytes())?;
        let mut writer = RecordWriter {
            out,
            pending: RawRecords::default(),
            written: FxHashMap::default(),
            lost: [0; KINDS],
        };
        writer.json_frame(HEADER, header)?;
        Ok(writer)
    }

    /// Adds one event: `raw` is its record as the ring buffer handed it
    /// out. Its owner's cgroup is looked up in `cgroups` (the table a
    /// JSON sink in the same run uses; call this before the sink, so
    /// that a name the lookup refreshes is the sink's too) and written
    /// when what it prints changed: pods get their names after their
    /// UIDs, and on v1 hosts an owner is looked up by pid.
    ///
    /// # Errors
    /// Failures to write.
    pub fn event(&mut self, ev: &TcpEvent, raw: &[u8], cgroups: &mut Cgroups) -> io::Result<()> {
        if let Some(owner) = &ev.owner {
            self.owner_cgroup(owner.pid, owner.cgroup_id, cgroups)?;
        }
        self.pending.push(raw);
        if self.pending.as_bytes().len() >= EVENTS_PER_FRAME * EVENT_SIZE {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Looks up the cgroup of the owner `pid` in `cgroup_id` in
    /// `cgroups` and writes a `C` frame when what it prints changed.
    ///
    /// # Errors
    /// Failures to write.
    pub fn owner_cgroup(
        &mut self,
        pid: u32,
        cgroup_id: u64,
        cgroups: &mut Cgroups,
    ) -> io::Result<()> {
        let key = cgroups.owner_key(pid, cgroup_id);
        let info = cgroups.lookup_owner(pid, cgroup_id);
        let last = self.written.get(&key).and_then(Option::as_ref);
        let same = match (last, info) {
            (Some(last), Some(info)) => last.prints_as(info),
            (None, None) => true,
            _ => false,
        };
        if !same {
            let record = CgroupRecord {
                key,
                cgroup: info.map(OwnerCgroup::of),
            };
            self.write_pending()?;
            self.json_frame(CGROUP, &record)?;
            self.written.insert(key, record.cgroup);
        }
        Ok(())
    }

    /// `top`: a snapshot was taken after the events so far, `elapsed`
    /// into the run, with these counts and the opens the kernel counted
    /// since the last one (a `T` frame).
    ///
    /// # Errors
    /// Failures to write.
    pub fn tick(
        &mut self,
        elapsed: Duration,
        counts: &Counts,
        opens: &[OpenCount],
    ) -> io::Result<()> {
        let tick = TickRecord {
            elapsed_ns: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            counts: counts.into(),
            opens: opens.iter().map(diagnosis::open_record).collect(),
        };
        self.frame_after_events(TICK, &tick)
    }

    /// A loss check: an `L` frame if any loss counter moved since the
    /// last one (replay turns it into the same loss records).
    ///
    /// # Errors
    /// Failures to write.
    pub fn losses(&mut self, counts: &Counts) -> io::Result<()> {
        if counts.kernel.lost != self.lost {
            self.lost = counts.kernel.lost;
            self.write_pending()?;
            self.json_frame(LOSSES, &CountsRecord::from(counts))?;
        }
        Ok(())
    }

    /// Writes what is buffered (the file is readable up to here, though
    /// without its end frame).
    ///
    /// # Errors
    /// Failures to write.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.out.flush()
    }

    /// Ends the file: the end frame (the run's length, its counts, and
    /// where TC programs watched and what `--pcap` wrote), then
    /// everything written out.
    ///
    /// # Errors
    /// Failures to write.
    pub fn finish(
        mut self,
        seconds: f64,
        counts: &Counts,
        tc: Option<&TcReport>,
        pcap: Option<&RecorderReport>,
    ) -> io::Result<W> {
        self.write_pending()?;
        let end = End {
            seconds,
            counts: counts.into(),
            tc: tc.map(TcRecord::from),
            pcap: pcap.map(PcapRecord::from),
        };
        self.json_frame(END, &end)?;
        self.out
            .into_inner()
            .map_err(io::IntoInnerError::into_error)
    }

    fn write_pending(&mut self) -> io::Result<()> {
        if !self.pending.as_bytes().is_empty() {
            write_frame(&mut self.out, EVENTS, self.pending.as_bytes())?;
            self.pending.clear();
        }
        Ok(())
    }

    fn json_frame(&mut self, kind: u8, value: &impl Serialize) -> io::Result<()> {
        let payload = serde_json::to_vec(value)?;
        write_frame(&mut self.out, kind, &payload)
    }

    /// Adds the records of a batch (`diagnose`: no owner's cgroup is
    /// printed per event, so none is written) and clears them.
    ///
    /// # Errors
    /// Failures to write.
    pub fn raw_events(&mut self, raw: &mut RawRecords) -> io::Result<()> {
        for record in raw.iter() {
            self.pending.push(record);
            if self.pending.as_bytes().len() >= EVENTS_PER_FRAME * EVENT_SIZE {
                self.write_pending()?;
            }
        }
        raw.clear();
        Ok(())
    }

    /// A JSON frame after the events so far (`diagnosis`' frames).
    fn frame_after_events(&mut self, kind: u8, value: &impl Serialize) -> io::Result<()> {
        self.write_pending()?;
        self.json_frame(kind, value)
    }
}

fn write_frame(out: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len <= MAX_FRAME)
        .ok_or_else(|| io::Error::other("record frame too large"))?;
    let mut head = [0u8; 9];
    head[0] = kind;
    head[1..5].copy_from_slice(&len.to_le_bytes());
    head[5..9].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.write_all(&head)?;
    out.write_all(payload)
}

/// Why a record file cannot be replayed. Each is one line naming the
/// file (`path`) and, for damage, the byte offset of the frame.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// It does not start with `MAGIC` and a version.
    #[error("{path}: not a tcptrace record file")]
    NotARecord {
        /// The file.
        path: PathBuf,
    },
    /// Another format version (`found`).
    #[error(
        "{path}: record format version {found}; this tcptrace reads versions 1 to {FORMAT_VERSION}"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version it has.
        found: u32,
    },
    /// Recorded by a build (`by`) whose records or kinds differ (`what`).
    #[error("{path}: recorded by tcptrace {by} with {what}; replay it with that version")]
    Build {
        /// The file.
        path: PathBuf,
        /// That build's version.
        by: String,
        /// What differs.
        what: String,
    },
    /// The file ends before its end frame.
    #[error("{path}: truncated at byte {offset} (no end record: the recording was cut short)")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Where the cut frame starts.
        offset: u64,
    },
    /// A frame is damaged (`what`).
    #[error("{path}: corrupt at byte {offset}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damaged frame starts.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// Whole frames, but not all a diagnosis needs (`what` is missing).
    #[error("{path}: an incomplete diagnose recording: no {what}")]
    Incomplete {
        /// The file.
        path: PathBuf,
        /// What it lacks.
        what: String,
    },
    /// Reading failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
}

/// One frame of a record file, checked.
#[derive(Debug)]
pub enum Frame<'a> {
    /// Raw records, each after its length (`tracer::split_records`),
    /// every length one of the header's record sizes.
    Events(&'a [u8]),
    /// From here on, what the owners of a key (`Cgroups::owner_key`)
    /// print for their cgroup (`None`: nothing).
    Cgroup((u32, u64), Option<CgroupInfo>),
    /// The loss counters at a loss check.
    Losses(Counts),
    /// The last frame: seconds, counts, TC programs, `--pcap`.
    End(Box<Ending>),
    /// `diagnose`: its options and what the session said at its start.
    Run(Box<RunFacts>),
    /// `diagnose`: a reading of the watched namespace.
    Reading(Moment, Box<HostReading>),
    /// `diagnose`: a reading of every namespace.
    Survey(Moment, Box<Survey>),
    /// `diagnose`: one sample of the accept queues.
    Listeners(Vec<Listener>),
    /// `diagnose`: the holders of the listening sockets, by inode.
    Owners(std::collections::HashMap<u64, Owner>),
    /// `diagnose`: how its `--during` load ended, and the opens the
    /// kernel counted.
    DiagnoseEnd(Option<String>, Vec<OpenCount>),
    /// `top`: a snapshot, taken this long into the run, with these
    /// counts and the opens counted since the previous one.
    Tick(Duration, Counts, Vec<OpenCount>),
}

/// What the end frame holds, checked.
#[derive(Debug)]
pub struct Ending {
    /// Seconds from attach to stop.
    pub seconds: f64,
    /// The exact counts.
    pub counts: Counts,
    /// Where the TC programs watched packets.
    pub tc: Option<TcReport>,
    /// What `--pcap` wrote.
    pub pcap: Option<RecorderReport>,
}

/// Reads a record file frame by frame, every frame checked (length,
/// CRC, kind, JSON); `open` reads the whole file once first so that a
/// damaged file is refused before anything is printed.
pub struct RecordReader {
    path: PathBuf,
    input: BufReader<File>,
    offset: u64,
    version: u32,
    header: Header,
    payload: Vec<u8>,
    ended: bool,
}

impl RecordReader {
    /// Opens `path`, checks all of it, and returns a reader positioned
    /// after the header.
    ///
    /// # Errors
    /// Any `RecordError`.
    pub fn open(path: &Path) -> Result<RecordReader, RecordError> {
        let mut reader = RecordReader::start(path)?;
        while reader.next_frame()?.is_some() {}
        RecordReader::start(path)
    }

    /// The recording host's facts.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file's record format version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// A decoder for this file's records: its host's HZ, and what its
    /// format version put in each field (`Decoder::for_record`).
    pub fn decoder(&self) -> crate::decode::Decoder {
        crate::decode::Decoder::for_record(self.header.hz, self.version)
    }

    fn start(path: &Path) -> Result<RecordReader, RecordError> {
        let file = File::open(path).map_err(|source| RecordError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = RecordReader {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(1 << 20, file),
            offset: 0,
            version: 0,
            header: Header::here(None, 0, Names::default(), Vec::new()),
            payload: Vec::new(),
            ended: false,
        };
        let mut magic = [0u8; 20];
        match reader.read_exact(&mut magic)? {
            true if magic[..16] == *MAGIC => {}
            _ => return Err(RecordError::NotARecord { path: reader.path }),
        }
        let version = u32::from_le_bytes(magic[16..20].try_into().expect("4 bytes"));
        if !READS_VERSIONS.contains(&version) {
            return Err(RecordError::Version {
                path: reader.path,
                found: version,
            });
        }
        reader.version = version;
        let at = reader.offset;
        match reader.frame()? {
            Some(HEADER) => reader.header = reader.json(at)?,
            None => {
                return Err(RecordError::Truncated {
                    path: reader.path,
                    offset: at,
                });
            }
            Some(_) => return Err(reader.corrupt(at, "the first frame is not the header")),
        }
        let header = &reader.header;
        let what = if (header.event_size, header.event_with_peer_size)
            != (EVENT_SIZE, EVENT_WITH_PEER_SIZE)
        {
            Some(format!(
                "{}/{}-byte records (this build's are {EVENT_SIZE}/{EVENT_WITH_PEER_SIZE})",
                header.event_size, header.event_with_peer_size
            ))
        } else if header.kinds != kind_names() {
            Some(format!("other event kinds ({})", header.kinds.join(",")))
        } else {
            None
        };
        if let Some(what) = what {
            return Err(RecordError::Build {
                by: header.tcptrace.clone(),
                path: reader.path,
                what,
            });
        }
        Ok(reader)
    }

    /// The next frame, checked; `None` after the end frame.
    ///
    /// # Errors
    /// A damaged or cut-short file, a failed read.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, RecordError> {
        if self.ended {
            return Ok(None);
        }
        let at = self.offset;
        let Some(kind) = self.frame()? else {
            return Err(RecordError::Truncated {
                path: self.path.clone(),
                offset: at,
            });
        };
        Ok(Some(match kind {
            EVENTS => {
                let whole = split_records(&self.payload).all(|r| {
                    r.is_ok_and(|r| r.len() == EVENT_SIZE || r.len() == EVENT_WITH_PEER_SIZE)
                });
                if !whole {
                    return Err(self.corrupt(at, "an event frame is not whole records"));
                }
                Frame::Events(&self.payload)
            }
            CGROUP => {
                let record: CgroupRecord = self.json(at)?;
                Frame::Cgroup(record.key, record.cgroup.as_ref().map(OwnerCgroup::to_info))
            }
            LOSSES => Frame::Losses(self.counts(at)?),
            END => {
                let end: End = self.json(at)?;
                let counts = end
                    .counts
                    .to_counts()
                    .ok_or_else(|| self.corrupt(at, "counts are not one per event kind"))?;
                let tc = match &end.tc {
                    Some(tc) => Some(
                        tc.to_report()
                            .ok_or_else(|| self.corrupt(at, "unknown TC attach mode"))?,
                    ),
                    None => None,
                };
                let mut rest = [0u8; 1];
                if self.read_exact(&mut rest)? {
                    return Err(self.corrupt(self.offset - 1, "data after the end record"));
                }
                self.ended = true;
                Frame::End(Box::new(Ending {
                    seconds: end.seconds,
                    counts,
                    tc,
                    pcap: end.pcap.as_ref().map(RecorderReport::from),
                }))
            }
            RUN | READING | SURVEY | LISTENERS | OWNERS | DIAGNOSE_END
                if self.header.command != Recorded::Diagnose =>
            {
                return Err(self.corrupt(at, "a diagnose frame in another command's recording"));
            }
            RUN => Frame::Run(Box::new(self.json(at)?)),
            READING => {
                let (at_moment, reading) = diagnosis::reading(&self.json(at)?);
                Frame::Reading(at_moment, Box::new(reading))
            }
            SURVEY => {
                let survey: diagnosis::SurveyRecord = self.json(at)?;
                Frame::Survey(survey.at, Box::new(survey.survey))
            }
            LISTENERS => Frame::Listeners(diagnosis::listeners(self.json(at)?)),
            OWNERS => Frame::Owners(self.json(at)?),
            DIAGNOSE_END => {
                let end: diagnosis::EndRecord = self.json(at)?;
                Frame::DiagnoseEnd(end.load_status, diagnosis::opens(&end.opens))
            }
            TICK if self.header.command != Recorded::Top => {
                return Err(self.corrupt(at, "a top frame in another command's recording"));
            }
            TICK => {
                let tick: TickRecord = self.json(at)?;
                let counts = tick
                    .counts
                    .to_counts()
                    .ok_or_else(|| self.corrupt(at, "counts are not one per event kind"))?;
                Frame::Tick(
                    Duration::from_nanos(tick.elapsed_ns),
                    counts,
                    diagnosis::opens(&tick.opens),
                )
            }
            HEADER => return Err(self.corrupt(at, "a second header")),
            other => {
                return Err(self.corrupt(at, &format!("unknown frame kind {other:#04x}")));
            }
        }))
    }

    fn counts(&self, at: u64) -> Result<Counts, RecordError> {
        let record: CountsRecord = self.json(at)?;
        record
            .to_counts()
            .ok_or_else(|| self.corrupt(at, "counts are not one per event kind"))
    }

    /// Reads one frame into `payload`: its kind, or `None` at a clean or
    /// cut end of file (the caller knows which it expected).
    fn frame(&mut self) -> Result<Option<u8>, RecordError> {
        let at = self.offset;
        let mut head = [0u8; 9];
        if !self.read_exact(&mut head)? {
            return Ok(None);
        }
        let len = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(head[5..9].try_into().expect("4 bytes"));
        if len > MAX_FRAME {
            return Err(self.corrupt(at, &format!("a frame of {len} bytes")));
        }
        let mut payload = std::mem::take(&mut self.payload);
        payload.resize(len as usize, 0);
        let whole = self.read_exact(&mut payload)?;
        self.payload = payload;
        if !whole {
            return Ok(None);
        }
        if crc32fast::hash(&self.payload) != crc {
            return Err(self.corrupt(at, "checksum mismatch"));
        }
        Ok(Some(head[0]))
    }

    fn json<T: DeserializeOwned>(&self, at: u64) -> Result<T, RecordError> {
        serde_json::from_slice(&self.payload).map_err(|e| self.corrupt(at, &e.to_string()))
    }

    /// Fills `buf`; false if the file ended first.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<bool, RecordError> {
        match self.input.read_exact(buf) {
            Ok(()) => {
                self.offset += buf.len() as u64;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(source) => Err(RecordError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn corrupt(&self, offset: u64, what: &str) -> RecordError {
        RecordError::Corrupt {
            path: self.path.clone(),
            offset,
            what: what.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header::here(
            Some(250),
            1_700_000_000_000_000_000,
            Names::new(
                BTreeMap::from([(1, "TCP_ESTABLISHED".into())]),
                BTreeMap::from([(11, "TCP_ABORT_ON_CLOSE".into())]),
            ),
            vec!["retransmit errors".into()],
        )
    }

    fn counts(lost: u64) -> Counts {
        let mut counts = Counts::default();
        counts.received[0] = 2;
        counts.kernel.produced[0] = 2 + lost;
        counts.kernel.lost[0] = lost;
        counts.drops.host.insert(3, 9);
        counts
    }

    fn event(cgroup_id: u64) -> (TcpEvent, Vec<u8>) {
        let mut raw = tcptrace_common::Event {
            ts_ns: 5,
            family: 2,
            kind: tcptrace_common::kind::STATE,
            ..Default::default()
        };
        raw.owner.tgid = 7;
        raw.owner.cgroup_id = cgroup_id;
        // SAFETY: Event is repr(C) plain integers.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const tcptrace_common::Event).cast::<u8>(),
                EVENT_SIZE,
            )
        }
        .to_vec();
        let ev = crate::decode::Decoder::new(Some(250))
            .decode(&bytes)
            .unwrap();
        (ev, bytes)
    }

    /// A received RST with the TC programs' profile of the peer behind it.
    fn rst_with_peer(cgroup_id: u64) -> (TcpEvent, Vec<u8>) {
        let mut raw = tcptrace_common::EventWithPeer::default();
        raw.event.ts_ns = 6;
        raw.event.family = 2;
        raw.event.kind = tcptrace_common::kind::RST_RECEIVED;
        raw.event.owner.tgid = 7;
        raw.event.owner.cgroup_id = cgroup_id;
        raw.peer.segments = 3;
        // SAFETY: EventWithPeer is repr(C) plain integers.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const tcptrace_common::EventWithPeer).cast::<u8>(),
                EVENT_WITH_PEER_SIZE,
            )
        }
        .to_vec();
        let ev = crate::decode::Decoder::new(Some(250))
            .decode(&bytes)
            .unwrap();
        (ev, bytes)
    }

    fn tc() -> TcReport {
        TcReport {
            mode: "clsact",
            interfaces: vec!["lo".into()],
        }
    }

    fn pcap() -> RecorderReport {
        RecorderReport {
            dir: "/tmp/flights".into(),
            written: 3,
            failed: 1,
            error: Some("No space left on device".into()),
            ..RecorderReport::default()
        }
    }

    fn sample() -> Vec<u8> {
        sample_with_cgroup().0
    }

    /// A file with three events, a cgroup frame before the first, a loss
    /// check after it and the end; and the cgroup's id.
    fn sample_with_cgroup() -> (Vec<u8>, u64) {
        let root = std::env::temp_dir().join(format!("tcptrace-record-cg-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let mut cgroups = Cgroups::new(&root);
        let id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&root).unwrap());
        let mut writer = RecordWriter::new(Vec::new(), &header()).unwrap();
        let (ev, raw) = event(id);
        writer.event(&ev, &raw, &mut cgroups).unwrap();
        writer.losses(&counts(0)).unwrap();
        writer.losses(&counts(4)).unwrap();
        writer.event(&ev, &raw, &mut cgroups).unwrap();
        let (rst, raw) = rst_with_peer(id);
        writer.event(&rst, &raw, &mut cgroups).unwrap();
        let out = writer
            .finish(1.25, &counts(4), Some(&tc()), Some(&pcap()))
            .unwrap();
        let _ = std::fs::remove_dir(&root);
        (out, id)
    }

    fn read(bytes: &[u8]) -> Result<Vec<String>, String> {
        let path = std::env::temp_dir().join(format!(
            "tcptrace-record-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::write(&path, bytes).unwrap();
        let result = (|| {
            let mut reader = RecordReader::open(&path)?;
            assert_eq!(reader.header(), &header());
            let mut seen = Vec::new();
            while let Some(frame) = reader.next_frame()? {
                seen.push(match frame {
                    Frame::Events(raw) => {
                        let sizes: Vec<usize> =
                            split_records(raw).map(|r| r.unwrap().len()).collect();
                        format!("events {sizes:?}")
                    }
                    Frame::Cgroup(key, info) => match info {
                        Some(info) => format!(
                            "cgroup {key:?} {} {:?} {:?} {:?}",
                            info.path,
                            info.pod_name(),
                            info.namespace(),
                            info.container_name()
                        ),
                        None => format!("cgroup {key:?} none"),
                    },
                    Frame::Losses(c) => format!("lost {}", c.lost()),
                    Frame::End(end) => {
                        assert_eq!(end.counts, counts(4));
                        if let Some(tc) = end.tc {
                            assert_eq!(tc, self::tc());
                        }
                        if let Some(pcap) = end.pcap {
                            assert_eq!(pcap, self::pcap());
                        }
                        format!("end {}", end.seconds)
                    }
                    other => format!("{other:?}"),
                });
            }
            Ok::<_, RecordError>(seen)
        })();
        let _ = std::fs::remove_file(&path);
        result.map_err(|e| e.to_string())
    }

    #[test]
    fn frames_come_back_in_order() {
        let (bytes, id) = sample_with_cgroup();
        let cgroup = format!("cgroup (0, {id}) / None None None");
        assert_eq!(
            read(&bytes).unwrap(),
            [
                cgroup.as_str(),
                &format!("events [{EVENT_SIZE}]"),
                "lost 4",
                &format!("events [{EVENT_SIZE}, {EVENT_WITH_PEER_SIZE}]"),
                "end 1.25"
            ],
            "the cgroup once, before its first event; a loss frame only when the counters moved; \
             a received RST keeps the peer's profile"
        );
    }

    /// A pod named by its UID first, by its name once the kubelet's logs
    /// show it: a new cgroup frame where the answer changed, and back
    /// the names the JSON sink prints.
    #[test]
    fn an_owner_cgroup_is_written_again_when_its_names_change() {
        let mut cgroups = Cgroups::fixed();
        let key = cgroups.owner_key(7, 9);
        let uid = PodNames {
            namespace: None,
            pod: "ac04f3f2-1f2c".into(),
            container: Some("0123456789ab".into()),
        };
        let named = PodNames {
            namespace: Some("shop".into()),
            pod: "cart-7d4".into(),
            container: Some("envoy".into()),
        };
        let info = |pod: &PodNames| {
            Some(CgroupInfo::recorded(
                "/kubepods/pod".into(),
                Some("0123456789ab".into()),
                Some(pod.clone()),
            ))
        };
        let mut writer = RecordWriter::new(Vec::new(), &header()).unwrap();
        let (ev, raw) = event(9);
        cgroups.insert(key, info(&uid));
        writer.event(&ev, &raw, &mut cgroups).unwrap();
        writer.event(&ev, &raw, &mut cgroups).unwrap();
        cgroups.insert(key, info(&named));
        writer.event(&ev, &raw, &mut cgroups).unwrap();
        cgroups.insert(key, None);
        writer.event(&ev, &raw, &mut cgroups).unwrap();
        let bytes = writer.finish(2.0, &counts(4), None, None).unwrap();
        assert_eq!(
            read(&bytes).unwrap(),
            [
                "cgroup (0, 9) /kubepods/pod Some(\"ac04f3f2-1f2c\") None Some(\"0123456789ab\")",
                &format!("events [{EVENT_SIZE}, {EVENT_SIZE}]"),
                "cgroup (0, 9) /kubepods/pod Some(\"cart-7d4\") Some(\"shop\") Some(\"envoy\")",
                &format!("events [{EVENT_SIZE}]"),
                "cgroup (0, 9) none",
                &format!("events [{EVENT_SIZE}]"),
                "end 2"
            ]
        );
    }

    #[test]
    fn every_cut_short_file_is_refused_with_its_offset() {
        let bytes = sample();
        for len in 0..bytes.len() {
            let err = read(&bytes[..len]).unwrap_err();
            let expected = if len < 20 {
                "not a tcptrace record file"
            } else {
                "truncated at byte"
            };
            assert!(err.contains(expected), "{len}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn damage_is_named() {
        let good = sample();
        // Any flipped byte after the magic is caught (version, length,
        // kind, checksum or payload).
        for at in 16..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            let err = read(&bad).unwrap_err();
            assert!(
                err.contains("corrupt at byte")
                    || err.contains("format version")
                    || err.contains("truncated"),
                "byte {at}: {err}"
            );
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(
            read(&longer)
                .unwrap_err()
                .contains("data after the end record")
        );
        let mut other = good;
        other[0] = b'T';
        assert!(
            read(&other)
                .unwrap_err()
                .contains("not a tcptrace record file")
        );
    }

    /// Version 1 files (written before `diagnose --record`, no command in
    /// the header) are still read, as `trace` recordings; a newer
    /// version is refused by number.
    #[test]
    fn version_1_files_are_read_and_newer_ones_named() {
        let mut header = serde_json::to_value(header()).unwrap();
        header.as_object_mut().unwrap().remove("command");
        let mut v1 = MAGIC.to_vec();
        v1.extend_from_slice(&1u32.to_le_bytes());
        write_frame(&mut v1, HEADER, &serde_json::to_vec(&header).unwrap()).unwrap();
        let (_, raw) = event(9);
        let mut records = RawRecords::default();
        records.push(&raw);
        write_frame(&mut v1, EVENTS, records.as_bytes()).unwrap();
        let end = End {
            seconds: 1.25,
            counts: (&counts(4)).into(),
            tc: None,
            pcap: None,
        };
        write_frame(&mut v1, END, &serde_json::to_vec(&end).unwrap()).unwrap();
        assert_eq!(
            read(&v1).unwrap(),
            [format!("events [{EVENT_SIZE}]"), "end 1.25".into()]
        );
        let path = std::env::temp_dir().join(format!("tcptrace-record-v1-{}", std::process::id()));
        std::fs::write(&path, &v1).unwrap();
        let reader = RecordReader::open(&path).unwrap();
        assert_eq!(reader.header().command, Recorded::Trace);
        let _ = std::fs::remove_file(&path);
        let mut v5 = v1;
        v5[16..20].copy_from_slice(&5u32.to_le_bytes());
        let err = read(&v5).unwrap_err();
        assert!(
            err.contains("record format version 5; this tcptrace reads versions 1 to 4"),
            "{err}"
        );
    }

    /// A reset's `seg_len` is its socket's data segments sent from
    /// version 4 on; before, 0 there is no figure and replay decodes it
    /// as unknown, not as "never sent a byte".
    #[test]
    fn old_versions_have_no_data_segments_on_resets() {
        let (_, raw) = rst_with_peer(9);
        for (version, expect) in [(2u32, None), (3, None), (FORMAT_VERSION, Some(0))] {
            let mut file = MAGIC.to_vec();
            file.extend_from_slice(&version.to_le_bytes());
            write_frame(&mut file, HEADER, &serde_json::to_vec(&header()).unwrap()).unwrap();
            let mut records = RawRecords::default();
            records.push(&raw);
            write_frame(&mut file, EVENTS, records.as_bytes()).unwrap();
            let end = End {
                seconds: 1.0,
                counts: (&counts(0)).into(),
                tc: None,
                pcap: None,
            };
            write_frame(&mut file, END, &serde_json::to_vec(&end).unwrap()).unwrap();
            let path = std::env::temp_dir().join(format!(
                "tcptrace-record-segs-{version}-{}",
                std::process::id()
            ));
            std::fs::write(&path, &file).unwrap();
            let mut reader = RecordReader::open(&path).unwrap();
            assert_eq!(reader.version(), version);
            let decoder = reader.decoder();
            let mut seen = Vec::new();
            while let Some(frame) = reader.next_frame().unwrap() {
                if let Frame::Events(bytes) = frame {
                    for record in split_records(bytes) {
                        let ev = decoder.decode(record.unwrap()).unwrap();
                        seen.push(ev.queues().unwrap().data_segs_out);
                    }
                }
            }
            let _ = std::fs::remove_file(&path);
            assert_eq!(seen, [expect], "version {version}");
        }
    }

    /// Seconds are printed with every digit (diagnose's report): the
    /// f64 read back must be the one written.
    #[test]
    fn seconds_come_back_exactly() {
        for seconds in [1.202_739_471_000_000_1, 0.1 + 0.2, 5.000_000_001, 1e-9] {
            let writer = RecordWriter::new(Vec::new(), &header()).unwrap();
            let bytes = writer.finish(seconds, &counts(4), None, None).unwrap();
            let read = read(&bytes).unwrap();
            assert_eq!(read.last().unwrap(), &format!("end {seconds}"));
        }
    }

    #[test]
    fn another_build_is_named() {
        let mut h = header();
        h.event_size = EVENT_SIZE + 8;
        h.tcptrace = "9.9.9".into();
        let writer = RecordWriter::new(Vec::new(), &h).unwrap();
        let bytes = writer.finish(0.0, &Counts::default(), None, None).unwrap();
        let err = read(&bytes).unwrap_err();
        assert!(err.contains("recorded by tcptrace 9.9.9"), "{err}");
        assert!(err.contains("records (this build's are"), "{err}");
    }
}
