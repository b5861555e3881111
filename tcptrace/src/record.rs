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
//! Frames, in the order the live `trace` met them: `H` (first, once:
//! JSON `Header`), `E` (raw records, `event_size` bytes each), `C` (JSON:
//! a cgroup id resolved to its path and container), `L` (JSON: the
//! loss counters when they changed at a loss check), `Z` (last, once:
//! JSON `End`, the run's length and exact counts). A file without its
//! `Z` frame was cut short and is refused as a whole.
//!
//! Writing costs a copy of each record, a CRC per frame and one
//! `write(2)` per 1 MiB (or per flush): no formatting, no name lookups
//! (a cgroup is resolved until found, then written once).

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
};

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tcptrace_common::EVENT_SIZE;

use crate::{
    counts::{Counts, DropCounts, KernelCounts},
    event::{EventKind, KINDS, TcpEvent},
    host::cgroups::{CgroupInfo, Cgroups},
    kernel::names::Names,
};

/// The first bytes of every record file.
pub const MAGIC: &[u8; 16] = b"tcptrace record\n";
/// The version of the format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
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

/// What the recording host knew that decoding and printing need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The tcptrace version that recorded.
    pub tcptrace: String,
    /// Bytes per raw record (`tcptrace_common::EVENT_SIZE` of that build).
    pub event_size: usize,
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
}

impl Header {
    /// This host and build: `hz`, `boot_unix_ns`, `names` and `missing`
    /// come from the running session.
    pub fn here(hz: Option<u32>, boot_unix_ns: i128, names: Names, missing: Vec<String>) -> Header {
        Header {
            tcptrace: env!("CARGO_PKG_VERSION").to_string(),
            event_size: EVENT_SIZE,
            kinds: kind_names(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            hz,
            boot_unix_ns: i64::try_from(boot_unix_ns).unwrap_or(0),
            names,
            missing,
        }
    }
}

fn kind_names() -> Vec<String> {
    EventKind::ALL
        .iter()
        .map(|k| k.name().to_string())
        .collect()
}

/// The last frame: how long the run was and its exact counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct End {
    /// Seconds from attach to stop, as the live summary gave them.
    pub seconds: f64,
    /// Received, produced, lost, skipped and drops by reason.
    pub counts: CountsRecord,
}

/// `Counts` as a record file keeps them (arrays by kind index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountsRecord {
    received: Vec<u64>,
    produced: Vec<u64>,
    lost: Vec<u64>,
    missed_by_kernel: u64,
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

#[derive(Serialize, Deserialize)]
struct CgroupRecord {
    id: u64,
    path: String,
    container: Option<String>,
}

/// Writes a record file as `trace` runs.
pub struct RecordWriter<W: Write = File> {
    out: BufWriter<W>,
    /// Raw records not yet written as an `E` frame.
    pending: Vec<u8>,
    /// Cgroup ids already written as `C` frames.
    resolved: FxHashSet<u64>,
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
            pending: Vec::with_capacity(EVENTS_PER_FRAME * EVENT_SIZE),
            resolved: FxHashSet::default(),
            lost: [0; KINDS],
        };
        writer.json_frame(HEADER, header)?;
        Ok(writer)
    }

    /// Adds one event: `raw` is its record as the ring buffer handed it
    /// out. Its owner's cgroup is resolved through `cgroups` (the same
    /// table, and so the same answers, as a JSON sink in the same run)
    /// until it is found, then written once.
    ///
    /// # Errors
    /// Failures to write.
    pub fn event(&mut self, ev: &TcpEvent, raw: &[u8], cgroups: &mut Cgroups) -> io::Result<()> {
        if let Some(owner) = &ev.owner
            && owner.cgroup_id != 0
            && !self.resolved.contains(&owner.cgroup_id)
            && let Some(info) = cgroups.lookup(owner.cgroup_id)
        {
            let record = CgroupRecord {
                id: owner.cgroup_id,
                path: info.path.clone(),
                container: info.container.clone(),
            };
            self.resolved.insert(owner.cgroup_id);
            self.write_pending()?;
            self.json_frame(CGROUP, &record)?;
        }
        self.pending.extend_from_slice(raw);
        if self.pending.len() >= EVENTS_PER_FRAME * EVENT_SIZE {
            self.write_pending()?;
        }
        Ok(())
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

    /// Ends the file: the end frame, then everything written out.
    ///
    /// # Errors
    /// Failures to write.
    pub fn finish(mut self, seconds: f64, counts: &Counts) -> io::Result<W> {
        self.write_pending()?;
        let end = End {
            seconds,
            counts: counts.into(),
        };
        self.json_frame(END, &end)?;
        self.out
            .into_inner()
            .map_err(io::IntoInnerError::into_error)
    }

    fn write_pending(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            write_frame(&mut self.out, EVENTS, &self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    fn json_frame(&mut self, kind: u8, value: &impl Serialize) -> io::Result<()> {
        let payload = serde_json::to_vec(value)?;
        write_frame(&mut self.out, kind, &payload)
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
    #[error("{path}: record format version {found}; this tcptrace reads version {FORMAT_VERSION}")]
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
    /// Raw records, `event_size` bytes each.
    Events(&'a [u8]),
    /// A cgroup the recording host resolved.
    Cgroup(u64, CgroupInfo),
    /// The loss counters at a loss check.
    Losses(Counts),
    /// The last frame.
    End(f64, Counts),
}

/// Reads a record file frame by frame, every frame checked (length,
/// CRC, kind, JSON); `open` reads the whole file once first so that a
/// damaged file is refused before anything is printed.
pub struct RecordReader {
    path: PathBuf,
    input: BufReader<File>,
    offset: u64,
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

    fn start(path: &Path) -> Result<RecordReader, RecordError> {
        let file = File::open(path).map_err(|source| RecordError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = RecordReader {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(1 << 20, file),
            offset: 0,
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
        if version != FORMAT_VERSION {
            return Err(RecordError::Version {
                path: reader.path,
                found: version,
            });
        }
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
        let what = if header.event_size != EVENT_SIZE {
            Some(format!(
                "{}-byte records (this build's are {EVENT_SIZE})",
                header.event_size
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
                if !self.payload.len().is_multiple_of(EVENT_SIZE) {
                    return Err(self.corrupt(at, "an event frame is not whole records"));
                }
                Frame::Events(&self.payload)
            }
            CGROUP => {
                let record: CgroupRecord = self.json(at)?;
                Frame::Cgroup(
                    record.id,
                    CgroupInfo {
                        path: record.path,
                        container: record.container,
                    },
                )
            }
            LOSSES => Frame::Losses(self.counts(at)?),
            END => {
                let end: End = self.json(at)?;
                let counts = end
                    .counts
                    .to_counts()
                    .ok_or_else(|| self.corrupt(at, "counts are not one per event kind"))?;
                let mut rest = [0u8; 1];
                if self.read_exact(&mut rest)? {
                    return Err(self.corrupt(self.offset - 1, "data after the end record"));
                }
                self.ended = true;
                Frame::End(end.seconds, counts)
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

    /// A file with two events, a cgroup frame before the first, a loss
    /// check between them and the end.
    fn sample() -> Vec<u8> {
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
        let out = writer.finish(1.25, &counts(4)).unwrap();
        let _ = std::fs::remove_dir(&root);
        out
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
                    Frame::Events(raw) => format!("events {}", raw.len() / EVENT_SIZE),
                    Frame::Cgroup(_, info) => format!("cgroup {}", info.path),
                    Frame::Losses(c) => format!("lost {}", c.lost()),
                    Frame::End(seconds, c) => {
                        assert_eq!(c, counts(4));
                        format!("end {seconds}")
                    }
                });
            }
            Ok::<_, RecordError>(seen)
        })();
        let _ = std::fs::remove_file(&path);
        result.map_err(|e| e.to_string())
    }

    #[test]
    fn frames_come_back_in_order() {
        assert_eq!(
            read(&sample()).unwrap(),
            ["cgroup /", "events 1", "lost 4", "events 1", "end 1.25"],
            "the cgroup once, before its first event; a loss frame only when the counters moved"
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

    #[test]
    fn another_build_is_named() {
        let mut h = header();
        h.event_size = EVENT_SIZE + 8;
        h.tcptrace = "9.9.9".into();
        let writer = RecordWriter::new(Vec::new(), &h).unwrap();
        let bytes = writer.finish(0.0, &Counts::default()).unwrap();
        let err = read(&bytes).unwrap_err();
        assert!(err.contains("recorded by tcptrace 9.9.9"), "{err}");
        assert!(err.contains("records (this build's are"), "{err}");
    }
}
