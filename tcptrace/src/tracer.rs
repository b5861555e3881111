//! The tracer: configure the kernel side from the running kernel, load
//! and attach the programs, and hand out decoded events with exact
//! counts. Commands do not use it directly: `session` drives its
//! lifecycle (start, read, stop, detach, drain).

use std::{
    collections::BTreeMap,
    fs,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as AyaHashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{ProgramError, RawTracePoint, TracePoint},
};
use tcptrace_common::{
    ABSENT_OFFSET, Config, ConnKey, DROP_REASON_SLOTS, FLIGHT_PAYLOAD_BYTES, FlightPayload,
    FlightRing, FlowKey, ListenKey, OpenKey, Owner, SockLayout, field, kind, kind_mask, map,
    raw_tracepoint, tracepoint,
};
use tokio::io::unix::AsyncFd;

use crate::{
    counts::{Counts, DropCounts, KernelCounts},
    decode::{self, Decoder},
    error::{Error, Result},
    event::{KINDS, OpenCount, TcpEvent},
    host::preexisting::Preexisting,
    kernel::{btf, clock, format::Format, names::Names, proginfo, tracefs, verifier},
    tc::{self, TcAttachment, TcOptions},
};

/// The compiled kernel programs, embedded in the binary.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcptrace"));

/// What to trace. Filters run in the kernel.
#[derive(Debug, Clone)]
pub struct TracerOptions {
    /// Only sockets owned by this process id (tgid).
    pub pid: Option<u32>,
    /// Only sockets owned by a task with this command name (1-15 bytes).
    pub comm: Option<String>,
    /// Only connections with this local or remote port.
    pub port: Option<u16>,
    /// Only this network namespace (its inode, see `host::netns::resolve`).
    /// Needs kernel BTF: `Tracer::start` refuses it without.
    pub netns: Option<u32>,
    /// `tcptrace_common::kind_mask` bits.
    pub kinds: u32,
    /// Leave out the opening state transitions (->SYN_SENT, ->LISTEN,
    /// ->SYN_RECV): aggregating readers (top, diagnose) do not use them.
    pub skip_opening: bool,
    /// Ring buffer bytes (power of two, page multiple).
    pub ring_bytes: u32,
    /// Batch wakeups (see `Config::wakeup_bytes`); `next_batch` then
    /// also polls every `DRAIN_INTERVAL`.
    pub batch_wakeups: bool,
    /// `reuse` events: a send after at least this long without sending
    /// or receiving on the connection.
    pub reuse_idle: Duration,
    /// TC programs on the traced namespace's interfaces: received RSTs
    /// then carry what tells who sent them (`None`: no TC programs).
    pub tc: Option<TcOptions>,
    /// With `tc`: keep the last packets of every connection (the flight
    /// recorder, `trace --pcap`), with up to this many payload bytes each
    /// (0 to `FLIGHT_PAYLOAD_BYTES`). `None`: no recorder.
    pub flight_payload: Option<u16>,
    /// Count successful opens (connects with their latency, accepted
    /// connections) in the kernel instead of sending them: the reader
    /// takes them with `take_opens` (see `Config::count_opens`).
    pub count_opens: bool,
}

/// Default `TracerOptions::reuse_idle`.
pub const DEFAULT_REUSE_IDLE: Duration = Duration::from_millis(500);

/// How often `next_batch` looks at the ring buffer without a wakeup.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(20);

/// How long `drain_final` waits for records still being committed.
const FINAL_DRAIN_LIMIT: Duration = Duration::from_secs(1);

impl Default for TracerOptions {
    fn default() -> Self {
        TracerOptions {
            pid: None,
            comm: None,
            port: None,
            netns: None,
            kinds: kind_mask::ALL,
            ring_bytes: tcptrace_common::DEFAULT_RING_BYTES,
            batch_wakeups: true,
            skip_opening: false,
            reuse_idle: DEFAULT_REUSE_IDLE,
            tc: None,
            flight_payload: None,
            count_opens: false,
        }
    }
}

/// The loaded and attached kernel programs and their ring buffer.
pub struct Tracer {
    ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    decoder: Decoder,
    names: Names,
    missing: Vec<String>,
    /// What has been read off the ring buffer.
    reader: ReadCounts,
    attached: Vec<&'static str>,
    /// Set by `detach`: how long `drain_final` waits for stragglers.
    final_deadline: Option<Instant>,
    /// `missed_by_kernel` as it was when the programs were unloaded.
    missed_at_detach: u64,
    /// `skb:kfree_skb` is attached: `counts` reads the drop counters.
    drops_traced: bool,
    /// The TC programs, while attached.
    tc: Option<TcAttachment>,
    /// What `tc` reported when attached (kept after detach).
    tc_report: Option<TcReport>,
    /// `OPENS` totals (summed over CPUs) as last handed out by `take_opens`.
    opens_seen: rustc_hash::FxHashMap<OpenKey, u64>,
    /// Opens handed out by `take_opens`, all keys.
    opens_counted: u64,
    /// With `keep_raw`: the bytes of every record decoded into the
    /// caller's batch, in the same order (`trace --record`).
    raw: Option<RawRecords>,
}

/// Where the TC programs ran: for summaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcReport {
    /// `tcx` or `clsact`.
    pub mode: &'static str,
    /// The interfaces watched.
    pub interfaces: Vec<String>,
}

/// The packets the flight recorder kept for one connection.
pub struct Flight {
    /// The ring of packet headers.
    pub ring: Box<FlightRing>,
    /// Their payload bytes, when kept.
    pub payload: Option<Box<FlightPayload>>,
}

/// Records read off the ring buffer.
#[derive(Debug, Default)]
struct ReadCounts {
    /// Decoded events by kind.
    received: [u64; KINDS],
    /// Records that failed to decode (a bug, never expected).
    decode_errors: u64,
}

impl ReadCounts {
    /// Records read, decoded or not.
    fn read(&self) -> u64 {
        self.received.iter().sum::<u64>() + self.decode_errors
    }
}

impl Tracer {
    /// Loads and attaches everything this kernel supports. What it lacks
    /// is listed in `missing()`.
    ///
    /// # Errors
    /// Not root; no tracefs; a filter this kernel cannot apply (`--netns`
    /// without BTF); the object or its maps refused; none of the
    /// tracepoints attached.
    pub fn start(options: &TracerOptions) -> Result<Tracer> {
        check_privileges()?;
        if EBPF_OBJECT.is_empty() {
            return Err(Error::Kernel(
                "this binary was built with AYA_BUILD_SKIP=1 and has no kernel programs; build it with `cargo xtask build`".into(),
            ));
        }
        raise_memlock_limit();
        let root = tracefs::root()?;
        let mut missing = Vec::new();

        let mut config = Config {
            kind_mask: options.kinds,
            skip_opening: u16::from(options.skip_opening),
            count_opens: u32::from(options.count_opens),
            wakeup_bytes: if options.batch_wakeups {
                options.ring_bytes / 8
            } else {
                0
            },
            ..Config::default()
        };
        let mut formats: [Option<Format>; tracepoint::COUNT] = Default::default();
        for (i, (category, name, _)) in tracepoint::ALL.iter().enumerate() {
            let path = tracefs::format_path(&root, category, name);
            match fs::read_to_string(&path) {
                Ok(text) => match Format::parse(&text) {
                    Ok(format) => {
                        config.layouts[i] = format.layout();
                        formats[i] = Some(format);
                    }
                    Err(err) => missing.push(format!("{category}:{name} ({err})")),
                },
                Err(_) => missing.push(format!(
                    "{category}:{name} (no such tracepoint on this kernel)"
                )),
            }
        }
        missing.extend(tracepoint_limits(&formats, options.kinds));
        let (layouts, btf_missing) = btf::layouts();
        check_netns_filter(options.netns, &layouts.sock, &btf_missing)?;
        config.sock = layouts.sock;
        config.task = layouts.task;
        config.skb = layouts.skb;
        missing.extend(btf_missing);
        apply_filters(&mut config, options)?;
        let hz = clock::hz();
        if hz.is_none() {
            missing.push("the kernel's HZ (no /proc/config.gz, /boot/config or /proc/timer_list): idle times unknown, no reuse events".into());
        }
        config.reuse_idle_jiffies = reuse_idle_jiffies(options.reuse_idle, hz);

        let drop_reasons = formats[tracepoint::KFREE_SKB]
            .as_ref()
            .map(|f| f.symbols("reason"))
            .unwrap_or_default();
        config.quiet_drop_reasons = quiet_drop_reasons(&drop_reasons);
        let names = Names::new(
            formats[tracepoint::SET_STATE]
                .as_ref()
                .map(|f| f.symbols("newstate"))
                .unwrap_or_default(),
            formats[tracepoint::SEND_RESET]
                .as_ref()
                .map(|f| f.symbols("reason"))
                .unwrap_or_default(),
        )
        .with_drop_reasons(drop_reasons);

        let flight_payload = options
            .flight_payload
            .filter(|_| options.tc.is_some())
            .map(|p| p.min(FLIGHT_PAYLOAD_BYTES as u16));
        config.flight = u16::from(flight_payload.is_some());
        config.flight_payload = flight_payload.unwrap_or(0);
        // Maps nobody uses in this run shrink to one entry: the flight
        // recorder alone would take 9 MiB of kernel memory, 25 with payload.
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(map::EVENTS, options.ring_bytes);
        loader.map_max_entries(
            map::OPENS,
            if options.count_opens { open_keys() } else { 1 },
        );
        if options.tc.is_none() {
            loader.map_max_entries(map::PEERS, 1);
        }
        if flight_payload.is_none() {
            loader.map_max_entries(map::FLIGHT, 1);
        }
        if flight_payload.unwrap_or(0) == 0 {
            loader.map_max_entries(map::FLIGHT_PAYLOAD, 1);
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(|e| match e {
            aya::EbpfError::MapError(aya::maps::MapError::CreateError { name, io_error })
                if name == map::EVENTS =>
            {
                Error::RingBuffer {
                    step: "create",
                    kib: options.ring_bytes / 1024,
                    source: Box::new(io_error),
                }
            }
            e => Error::Load(Box::new(e)),
        })?;
        write_config(&mut ebpf, config)?;

        // State changes come from the socket itself where BTF says where
        // its members are; tests take the formatted tracepoint on demand.
        let state_from_record = config.sock.head_bytes == 0
            || std::env::var_os(STATE_HOOK_ENV).is_some_and(|v| v == "record");
        let mut hooks = Vec::new();
        for (i, (category, name, program)) in tracepoint::ALL.iter().enumerate() {
            // The hooks of the new signals only run when their events are
            // wanted: a host dropping or sending a lot pays nothing else.
            if formats[i].is_none() || (i == tracepoint::KFREE_SKB && !wants(options, kind::DROP)) {
                continue;
            }
            if i == tracepoint::SET_STATE && !state_from_record {
                hooks.push(Hook::raw(raw_tracepoint::SET_STATE, "state events"));
                continue;
            }
            hooks.push(Hook::Tracepoint {
                category,
                name,
                program,
            });
        }
        let exists = |which: usize| {
            let (category, name, _) = raw_tracepoint::ALL[which];
            tracefs::format_path(&root, category, name).exists()
        };
        if wants(options, kind::SOCKET_ERROR) {
            if exists(raw_tracepoint::ERROR_REPORT) {
                hooks.push(Hook::raw(
                    raw_tracepoint::ERROR_REPORT,
                    "socket_error events",
                ));
            } else {
                missing.push(NO_ERROR_REPORT.to_string());
            }
        }
        // Tests take the fallback on kernels that have both.
        let send_length_only = std::env::var_os(REUSE_HOOK_ENV).is_some_and(|v| v == "send_length");
        if wants(options, kind::REUSE) && config.reuse_idle_jiffies != 0 {
            if exists(raw_tracepoint::SENDMSG) && !send_length_only {
                hooks.push(Hook::raw(raw_tracepoint::SENDMSG, "reuse events"));
            } else if exists(raw_tracepoint::SEND_LENGTH) {
                missing.push(REUSE_FROM_SEND_LENGTH.to_string());
                hooks.push(Hook::raw(raw_tracepoint::SEND_LENGTH, "reuse events"));
            } else {
                missing.push(NO_REUSE.to_string());
            }
        }
        // Every program is verified before the first is attached: the
        // verifier takes about a second for all of them, and a program
        // attached before the others were verified would fill the ring
        // buffer all that time with nobody reading it yet (events lost at
        // start-up under a storm). Attaching them all takes milliseconds.
        let mut loaded = Vec::with_capacity(hooks.len());
        for hook in hooks {
            match hook.load(&mut ebpf) {
                Ok(()) => loaded.push(hook),
                Err(err) => missing.push(hook.not_traced(&err)),
            }
        }
        let mut attached = Vec::with_capacity(loaded.len());
        for hook in loaded {
            match hook.attach(&mut ebpf) {
                Ok(()) => attached.push(hook.program()),
                Err(err) => missing.push(hook.not_traced(&err)),
            }
        }
        if !attached.iter().any(|p| p.starts_with("sys_exit_accept")) {
            missing.push("accept() attribution: accepted connections stay attributed to the listening process".into());
        }
        if attached.is_empty() {
            return Err(Error::Kernel(format!(
                "no TCP tracepoint could be attached: {}",
                missing.join("; ")
            )));
        }
        let drops_traced = attached.contains(&tracepoint::ALL[tracepoint::KFREE_SKB].2);
        let mut tc_attachment = None;
        if let Some(tc_options) = &options.tc {
            let (attachment, notes) = tc::attach(&mut ebpf, tc_options)?;
            missing.extend(notes);
            if let Some(attachment) = attachment {
                // From now on received resets in that namespace carry the
                // peer's profile.
                config.tc_netns = attachment.netns_inode;
                write_config(&mut ebpf, config)?;
                tc_attachment = Some(attachment);
            }
        }
        let tc_report = tc_attachment.as_ref().map(|a| TcReport {
            mode: a.mode.name(),
            interfaces: a.interfaces.clone(),
        });
        // Owners of what was open before we attached (new sockets are
        // already being tracked, so nothing falls in between).
        seed_preexisting(&mut ebpf, &Preexisting::scan(options.netns));

        let ring = ebpf
            .take_map(map::EVENTS)
            .ok_or(Error::MissingMap(map::EVENTS))?;
        let ring = RingBuf::try_from(ring).map_err(|e| Error::RingBuffer {
            step: "map",
            kib: options.ring_bytes / 1024,
            source: Box::new(e),
        })?;
        // SAFETY: the RingBuf owns its fd and lives inside the AsyncFd, so
        // the fd stays open for as long as it is registered.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| Error::io("watching the ring buffer", e.into_parts().1))?;
        Ok(Tracer {
            ebpf,
            ring,
            decoder: Decoder::new(hz),
            names,
            missing,
            reader: ReadCounts::default(),
            attached,
            final_deadline: None,
            missed_at_detach: 0,
            drops_traced,
            tc: tc_attachment,
            tc_report,
            opens_seen: rustc_hash::FxHashMap::default(),
            opens_counted: 0,
            raw: None,
        })
    }

    /// Where the TC programs ran (`None`: not attached).
    pub fn tc_report(&self) -> Option<&TcReport> {
        self.tc_report.as_ref()
    }

    /// The packets the flight recorder kept for the connection `key`
    /// (`None`: no recorder, or nothing kept for it). Readable after
    /// `detach` too.
    pub fn flight(&self, key: &FlowKey) -> Option<Flight> {
        let map = self.ebpf.map(map::FLIGHT)?;
        let rings = AyaHashMap::<_, FlowKey, FlightRing>::try_from(map).ok()?;
        let ring = rings.get(key, 0).ok()?;
        let payload = self
            .ebpf
            .map(map::FLIGHT_PAYLOAD)
            .and_then(|map| AyaHashMap::<_, FlowKey, FlightPayload>::try_from(map).ok())
            .and_then(|payloads| payloads.get(key, 0).ok())
            .map(Box::new);
        Some(Flight {
            ring: Box::new(ring),
            payload,
        })
    }

    /// What this kernel could not provide, one phrase each.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// `skb:kfree_skb` is attached: drops are seen and counted by reason
    /// (an empty count then means none happened).
    pub fn drops_traced(&self) -> bool {
        self.drops_traced
    }

    /// This kernel's names for TCP states, reset reasons and drop reasons.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// How records were decoded (the kernel's HZ).
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// From now on, also keeps the bytes of every record handed out (in
    /// batch order) in `raw_records`.
    pub fn keep_raw(&mut self) {
        self.raw.get_or_insert_with(RawRecords::default);
    }

    /// The kept bytes of the events handed out since the caller last
    /// cleared them; `None` without `keep_raw`.
    pub fn raw_records(&mut self) -> Option<&mut RawRecords> {
        self.raw.as_mut()
    }

    /// Waits until events are available, then appends up to
    /// `MAX_BATCH` of them (bounded, so memory stays flat in a storm).
    /// With batched wakeups the kernel only signals once a backlog has
    /// built up, so this also looks every `DRAIN_INTERVAL`: a quiet
    /// connection's event arrives within that time. Cancel-safe: events
    /// are only appended right before returning.
    pub async fn next_batch(&mut self, out: &mut Vec<TcpEvent>) -> Result<()> {
        loop {
            let more = read_ring(
                self.ring.get_mut(),
                &self.decoder,
                &mut self.reader,
                out,
                self.raw.as_mut(),
            );
            if more || !out.is_empty() {
                return Ok(());
            }
            tokio::select! {
                ready = self.ring.readable_mut() => {
                    ready.map_err(|e| Error::io("waiting for events", e))?.clear_ready();
                }
                _ = tokio::time::sleep(DRAIN_INTERVAL) => {}
            }
        }
    }

    /// Appends up to `MAX_BATCH` events that are in the ring buffer now,
    /// without waiting. Returns true if more may be waiting.
    pub fn drain(&mut self, out: &mut Vec<TcpEvent>) -> bool {
        read_ring(
            self.ring.get_mut(),
            &self.decoder,
            &mut self.reader,
            out,
            self.raw.as_mut(),
        )
    }

    /// Received, produced and lost events so far, the hook runs the
    /// kernel skipped and, when drops are traced, the per-reason drop
    /// counts. Exact once `drain_final` has returned false.
    pub fn counts(&self) -> Result<Counts> {
        let drops = if self.drops_traced {
            DropCounts {
                in_scope: self.per_reason(map::DROP_REASONS)?,
                host: self.per_reason(map::HOST_DROP_REASONS)?,
            }
        } else {
            DropCounts::default()
        };
        Ok(Counts {
            received: self.reader.received,
            kernel: self.kernel_counts()?,
            decode_errors: self.reader.decode_errors,
            drops,
        })
    }

    /// The successful opens the kernel counted since the last call
    /// (`TracerOptions::count_opens`; nothing otherwise), one entry per
    /// owner, peer and latency bucket. The kernel's map only grows while
    /// the programs are loaded; this takes differences from the totals it
    /// last saw, so nothing is lost to an update between two readings.
    /// After `detach` it is exact: call it then for the last counts.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn take_opens(&mut self) -> Result<Vec<OpenCount>> {
        let map = self
            .ebpf
            .map(map::OPENS)
            .ok_or(Error::MissingMap(map::OPENS))?;
        let opens: PerCpuHashMap<_, OpenKey, u64> =
            PerCpuHashMap::try_from(map).map_err(|e| map_error(map::OPENS, e))?;
        let mut out = Vec::new();
        for entry in opens.iter() {
            let (key, per_cpu) = entry.map_err(|e| map_error(map::OPENS, e))?;
            let total: u64 = per_cpu.iter().sum();
            let seen = self.opens_seen.entry(key).or_default();
            let n = total.saturating_sub(*seen);
            if n == 0 {
                continue;
            }
            *seen = total;
            self.opens_counted += n;
            match decode::open_count(&key, n) {
                Ok(count) => out.push(count),
                Err(err) => {
                    log::debug!("{err}");
                    self.reader.decode_errors += n;
                }
            }
        }
        Ok(out)
    }

    /// Produced and lost events so far, summed over CPUs.
    fn kernel_counts(&self) -> Result<KernelCounts> {
        Ok(KernelCounts {
            counted: self.opens_counted,
            count_map_full: self.per_kind_total(map::OPENS_FULL)?,
            produced: self.per_kind(map::PRODUCED)?,
            lost: self.per_kind(map::LOST)?,
            missed_by_kernel: if self.attached.is_empty() {
                self.missed_at_detach
            } else {
                self.missed_by_kernel()
            },
        })
    }

    fn missed_by_kernel(&self) -> u64 {
        self.attached
            .iter()
            .filter_map(|name| self.ebpf.program(name)?.fd().ok())
            .filter_map(proginfo::recursion_misses)
            .sum()
    }

    /// A per-CPU array of drop counts by reason (`map::DROP_REASONS` or
    /// `HOST_DROP_REASONS`), summed over CPUs, non-zero ones only.
    fn per_reason(&self, name: &'static str) -> Result<BTreeMap<u32, u64>> {
        let map = self.ebpf.map(name).ok_or(Error::MissingMap(name))?;
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|e| map_error(name, e))?;
        let mut counts = BTreeMap::new();
        for reason in 0..DROP_REASON_SLOTS {
            let total: u64 = array
                .get(&reason, 0)
                .map_err(|e| map_error(name, e))?
                .iter()
                .sum();
            if total > 0 {
                counts.insert(reason, total);
            }
        }
        Ok(counts)
    }

    /// Entry 0 of a per-CPU counter array, summed over CPUs.
    fn per_kind_total(&self, name: &'static str) -> Result<u64> {
        let map = self.ebpf.map(name).ok_or(Error::MissingMap(name))?;
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|e| map_error(name, e))?;
        Ok(array
            .get(&0, 0)
            .map_err(|e| map_error(name, e))?
            .iter()
            .sum())
    }

    fn per_kind(&self, name: &'static str) -> Result<[u64; KINDS]> {
        let map = self.ebpf.map(name).ok_or(Error::MissingMap(name))?;
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|e| map_error(name, e))?;
        let mut totals = [0u64; KINDS];
        for (index, total) in totals.iter_mut().enumerate() {
            let values = array
                .get(&(index as u32), 0)
                .map_err(|e| map_error(name, e))?;
            *total = values.iter().sum();
        }
        Ok(totals)
    }

    /// After `detach`: appends what is left, in bounded batches. Returns
    /// true while more may come. A program that was running when it was
    /// detached may still be committing its record, which the reader sees
    /// as not ready; so this keeps looking until every event the kernel
    /// counted as produced was read or counted lost (for at most 1 s).
    pub async fn drain_final(&mut self, out: &mut Vec<TcpEvent>) -> Result<bool> {
        if self.drain(out) {
            return Ok(true);
        }
        let counts = self.kernel_counts()?;
        let settled = self.reader.read() + counts.total_lost() >= counts.total_produced();
        let deadline = *self
            .final_deadline
            .get_or_insert_with(|| Instant::now() + FINAL_DRAIN_LIMIT);
        if settled || Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(true)
    }

    /// Detaches every program; events already in the ring buffer stay
    /// readable with `drain` / `drain_final`.
    pub fn detach(&mut self) {
        self.missed_at_detach = self.missed_by_kernel();
        if let Some(mut tc) = self.tc.take() {
            tc.detach();
        }
        for name in std::mem::take(&mut self.attached) {
            let result = match self.ebpf.program_mut(name) {
                Some(aya::programs::Program::TracePoint(p)) => p.unload(),
                Some(aya::programs::Program::RawTracePoint(p)) => p.unload(),
                _ => Ok(()),
            };
            if let Err(err) = result {
                log::warn!("detaching {name}: {err}");
            }
        }
    }
}

/// Events handed out per call.
pub const MAX_BATCH: usize = 4096;

/// Ring buffer records as they were read, each after its length (u16,
/// little-endian): `EVENT_SIZE` bytes, or `EVENT_WITH_PEER_SIZE` for a
/// received RST with the peer's profile. What `trace --record` writes.
#[derive(Debug, Default)]
pub struct RawRecords {
    bytes: Vec<u8>,
}

impl RawRecords {
    /// Appends one record (at most `u16::MAX` bytes: records are a few
    /// hundred).
    pub fn push(&mut self, record: &[u8]) {
        let len = u16::try_from(record.len()).expect("a ring buffer record is a few hundred bytes");
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(record);
    }

    /// The records in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        split_records(&self.bytes).map_while(Result::ok)
    }

    /// Forgets them all (the capacity stays).
    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    /// The records with their lengths, as `split_records` reads them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Splits length-prefixed records (`RawRecords`' layout); an `Err` with
/// the offset where a length runs past the end.
pub fn split_records(mut bytes: &[u8]) -> impl Iterator<Item = Result<&[u8], usize>> {
    let total = bytes.len();
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let at = total - bytes.len();
        let Some((len, rest)) = bytes.split_first_chunk::<2>() else {
            bytes = &[];
            return Some(Err(at));
        };
        let len = usize::from(u16::from_le_bytes(*len));
        if rest.len() < len {
            bytes = &[];
            return Some(Err(at));
        }
        let (record, rest) = rest.split_at(len);
        bytes = rest;
        Some(Ok(record))
    })
}

/// Decodes up to `MAX_BATCH` items (keeping the bytes of those decoded
/// in `raw` when given); true if the limit stopped it.
fn read_ring(
    ring: &mut RingBuf<MapData>,
    decoder: &Decoder,
    counts: &mut ReadCounts,
    out: &mut Vec<TcpEvent>,
    mut raw: Option<&mut RawRecords>,
) -> bool {
    for _ in 0..MAX_BATCH {
        let Some(item) = ring.next() else {
            return false;
        };
        match decoder.decode(&item) {
            Ok(event) => {
                counts.received[event.kind.index()] += 1;
                out.push(event);
                if let Some(raw) = raw.as_deref_mut() {
                    raw.push(&item);
                }
            }
            Err(err) => {
                counts.decode_errors += 1;
                log::warn!("{err}");
            }
        }
    }
    true
}

/// The kernel programs read a socket's namespace through BTF offsets
/// (`sock_common.skc_net`, `net.ns.inum`); without them every socket's
/// namespace reads as unknown and a `--netns` filter would silently match
/// nothing.
fn check_netns_filter(netns: Option<u32>, sock: &SockLayout, btf_missing: &[String]) -> Result<()> {
    if netns.is_none() || (sock.skc_net != ABSENT_OFFSET && sock.net_inum != ABSENT_OFFSET) {
        return Ok(());
    }
    let why = if btf_missing.is_empty() {
        "this kernel's BTF lacks sock_common.skc_net or net.ns.inum".to_string()
    } else {
        btf_missing.join("; ")
    };
    Err(Error::Kernel(format!(
        "--netns needs the kernel's BTF to read each socket's network namespace ({why}); run without --netns, or inside the namespace (ip netns exec)"
    )))
}

fn apply_filters(config: &mut Config, options: &TracerOptions) -> Result<()> {
    config.filter_tgid = options.pid.unwrap_or(0);
    config.filter_port = options.port.unwrap_or(0);
    config.filter_netns = options.netns.unwrap_or(0);
    if let Some(comm) = &options.comm {
        if comm.is_empty() || comm.len() > 15 {
            return Err(Error::Usage(format!(
                "--comm '{comm}': a command name is 1 to 15 bytes"
            )));
        }
        config.filter_comm[..comm.len()].copy_from_slice(comm.as_bytes());
    }
    // With a scope, drops and unowned RSTs of the connections in it are
    // kept wherever on the host they happen (tcptrace-ebpf `related`).
    let scoped = config.filter_tgid != 0
        || config.filter_port != 0
        || config.filter_netns != 0
        || config.filter_comm[0] != 0;
    config.related_flows = u32::from(scoped);
    Ok(())
}

/// Why a tracepoint's program could not be loaded or attached (it is
/// then listed as not traced on this kernel).
#[derive(Debug, thiserror::Error)]
enum AttachError {
    #[error("program {0} missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("{step}: {}", verifier::verdict(source))]
    Program {
        step: &'static str,
        #[source]
        source: ProgramError,
    },
}

/// One kernel program and where it attaches.
enum Hook {
    /// A formatted tracepoint (`category:name`), read through its record.
    Tracepoint {
        category: &'static str,
        name: &'static str,
        program: &'static str,
    },
    /// A raw tracepoint, handed the kernel's own arguments; `gives` says
    /// what is missing without it.
    Raw {
        category: &'static str,
        name: &'static str,
        program: &'static str,
        gives: &'static str,
    },
}

impl Hook {
    fn raw(which: usize, gives: &'static str) -> Hook {
        let (category, name, program) = raw_tracepoint::ALL[which];
        Hook::Raw {
            category,
            name,
            program,
            gives,
        }
    }

    fn program(&self) -> &'static str {
        match self {
            Hook::Tracepoint { program, .. } | Hook::Raw { program, .. } => program,
        }
    }

    /// Loads the program into the kernel (the verifier runs here).
    fn load(&self, ebpf: &mut Ebpf) -> Result<(), AttachError> {
        let program = self.program();
        let prog = ebpf
            .program_mut(program)
            .ok_or(AttachError::MissingProgram(program))?;
        let step = |source| AttachError::Program {
            step: "load",
            source,
        };
        match self {
            Hook::Tracepoint { .. } => {
                let prog: &mut TracePoint = prog.try_into().map_err(step)?;
                prog.load().map_err(step)
            }
            Hook::Raw { .. } => {
                let prog: &mut RawTracePoint = prog.try_into().map_err(step)?;
                prog.load().map_err(step)
            }
        }
    }

    /// Attaches the loaded program: from now on it runs.
    fn attach(&self, ebpf: &mut Ebpf) -> Result<(), AttachError> {
        let program = self.program();
        let prog = ebpf
            .program_mut(program)
            .ok_or(AttachError::MissingProgram(program))?;
        let step = |source| AttachError::Program {
            step: "attach",
            source,
        };
        match self {
            Hook::Tracepoint { category, name, .. } => {
                let prog: &mut TracePoint = prog.try_into().map_err(step)?;
                prog.attach(category, name).map(drop).map_err(step)
            }
            Hook::Raw { name, .. } => {
                let prog: &mut RawTracePoint = prog.try_into().map_err(step)?;
                prog.attach(name).map(drop).map_err(step)
            }
        }
    }

    /// The "not traced on this kernel" line for `err`.
    fn not_traced(&self, err: &AttachError) -> String {
        match self {
            Hook::Tracepoint { category, name, .. } => format!("{category}:{name} ({err})"),
            Hook::Raw {
                category,
                name,
                gives,
                ..
            } => format!("{category}:{name} as a raw tracepoint ({err}): no {gives}"),
        }
    }
}

/// Drop reasons counted but not sent as events. `QUEUE_PURGE` is what a
/// socket's queues hold when it is freed: on a healthy host most often
/// the peer's FIN reaching a socket its application had already closed,
/// about one per actively closed connection. Counted (the summary shows
/// it), never streamed.
pub const QUIET_DROP_REASONS: &[&str] = &["QUEUE_PURGE"];

/// The `Config::quiet_drop_reasons` bitmap for this kernel's numbering.
fn quiet_drop_reasons(names: &BTreeMap<u32, String>) -> [u32; DROP_REASON_SLOTS as usize / 32] {
    let mut bits = [0u32; DROP_REASON_SLOTS as usize / 32];
    for (reason, name) in names {
        if *reason < DROP_REASON_SLOTS && QUIET_DROP_REASONS.contains(&name.as_str()) {
            bits[(*reason / 32) as usize] |= 1 << (reason % 32);
        }
    }
    bits
}

fn wants(options: &TracerOptions, kind: u8) -> bool {
    options.kinds & (1 << kind) != 0
}

/// `reuse_idle` in jiffies, at least 1; 0 (no reuse events) when HZ is
/// unknown.
fn reuse_idle_jiffies(reuse_idle: Duration, hz: Option<u32>) -> u32 {
    let Some(hz) = hz.filter(|hz| *hz > 0) else {
        return 0;
    };
    let jiffies = reuse_idle.as_nanos() * u128::from(hz) / 1_000_000_000;
    jiffies.clamp(1, u128::from(u32::MAX / 2)) as u32
}

/// Puts the owners of pre-existing listeners and connections into the
/// kernel maps. Never overwrites what the programs recorded meanwhile.
fn seed_preexisting(ebpf: &mut Ebpf, found: &Preexisting) {
    const BPF_NOEXIST: u64 = 1;
    if let Some(map) = ebpf.map_mut(map::LISTENERS)
        && let Ok(mut listeners) = AyaHashMap::<_, ListenKey, Owner>::try_from(map)
    {
        for (key, owner) in &found.listeners {
            let _ = listeners.insert(key, owner, BPF_NOEXIST);
        }
    }
    if let Some(map) = ebpf.map_mut(map::PREEXISTING)
        && let Ok(mut connections) = AyaHashMap::<_, ConnKey, Owner>::try_from(map)
    {
        for (key, owner) in &found.connections {
            let _ = connections.insert(key, owner, BPF_NOEXIST);
        }
    }
    log::debug!(
        "pre-existing: {} listeners, {} connection keys",
        found.listeners.len(),
        found.connections.len()
    );
}

/// Said when `tcp:tcp_send_reset` has the layout of kernels before 6.10.
pub const SEND_RESET_BEFORE_6_10: &str = "tcp:tcp_send_reset for resets sent without a full socket (to connects nothing listens for, from TIME_WAIT) and reset reasons: kernels before 6.10 report only resets sent by a full socket, without a reason";

/// `TCPTRACE_STATE_HOOK=record` makes state changes come from the
/// formatted `sock:inet_sock_set_state` (what kernels without BTF use)
/// rather than the raw tracepoint (how the fallback is tested).
pub const STATE_HOOK_ENV: &str = "TCPTRACE_STATE_HOOK";

/// `TCPTRACE_REUSE_HOOK=send_length` makes reuse after idle use the
/// `sock:sock_send_length` fallback even where `tcp:tcp_sendmsg_locked`
/// exists (how the fallback is tested on new kernels).
pub const REUSE_HOOK_ENV: &str = "TCPTRACE_REUSE_HOOK";

/// `TCPTRACE_OPEN_KEYS=N` sizes the kernel's `OPENS` map to N keys (1 or
/// more): how tests fill it to check that a full map loses nothing.
pub const OPEN_KEYS_ENV: &str = "TCPTRACE_OPEN_KEYS";

/// Keys of the `OPENS` map: `OPEN_KEYS_ENV` when set to a positive
/// number, else `tcptrace_common::OPEN_KEYS`.
fn open_keys() -> u32 {
    std::env::var(OPEN_KEYS_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(tcptrace_common::OPEN_KEYS)
}

/// Said when `sock:inet_sk_error_report` is missing (kernels before 5.13).
pub const NO_ERROR_REPORT: &str =
    "sock:inet_sk_error_report (no such tracepoint on this kernel): no socket_error events";
/// Said when reuse after idle falls back to `sock:sock_send_length`
/// (kernels with it but without `tcp:tcp_sendmsg_locked`, 6.12 among them).
pub const REUSE_FROM_SEND_LENGTH: &str = "tcp:tcp_sendmsg_locked (no such tracepoint on this kernel): reuse after idle comes from sock:sock_send_length instead, which costs a map lookup per send and times a gap only from sends seen since tracing started, and from data received (not bare ACKs)";
/// Said when neither send tracepoint exists (6.1 and earlier).
pub const NO_REUSE: &str = "tcp:tcp_sendmsg_locked and sock:sock_send_length (no such tracepoints on this kernel): no reuse events (reuse after idle)";
/// Said when `skb:kfree_skb` has no `rx_sk` (kernels before 6.11).
pub const KFREE_SKB_WITHOUT_RX_SK: &str = "skb:kfree_skb without rx_sk (kernels before 6.11): packets dropped on receive once TCP had looked up their socket have no owner";
/// Said when `skb:kfree_skb` has no `reason` (kernels before 5.17).
pub const KFREE_SKB_WITHOUT_REASON: &str = "skb:kfree_skb without a drop reason (kernels before 5.17): drops are reported with reason unknown";

/// What this kernel's tracepoints leave out even though they attach.
fn tracepoint_limits(formats: &[Option<Format>; tracepoint::COUNT], kinds: u32) -> Vec<String> {
    let mut limits = Vec::new();
    if kinds & kind_mask::DROP != 0
        && let Some(kfree_skb) = &formats[tracepoint::KFREE_SKB]
    {
        let layout = kfree_skb.layout();
        if layout.offsets[field::REASON] == ABSENT_OFFSET {
            limits.push(KFREE_SKB_WITHOUT_REASON.to_string());
        }
        if layout.offsets[field::RX_SK] == ABSENT_OFFSET {
            limits.push(KFREE_SKB_WITHOUT_RX_SK.to_string());
        }
    }
    // 6.10 added `reason` and, in the same series, the calls for resets
    // sent with no socket or a time-wait one.
    if formats[tracepoint::SEND_RESET]
        .as_ref()
        .is_some_and(|f| f.field("reason").is_none())
    {
        limits.push(SEND_RESET_BEFORE_6_10.to_string());
    }
    limits
}

fn write_config(ebpf: &mut Ebpf, config: Config) -> Result<()> {
    let map = ebpf
        .map_mut(map::CONFIG)
        .ok_or(Error::MissingMap(map::CONFIG))?;
    let mut array: Array<_, Config> =
        Array::try_from(map).map_err(|e| map_error(map::CONFIG, e))?;
    array
        .set(0, config, 0)
        .map_err(|e| map_error(map::CONFIG, e))
}

fn map_error(name: &'static str, source: aya::maps::MapError) -> Error {
    Error::Map { name, source }
}

/// Root, or CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN) in the effective
/// set (include/uapi/linux/capability.h numbers).
fn check_privileges() -> Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let effective = procfs::process::Process::myself()
        .and_then(|me| me.status())
        .map_or(0, |status| status.capeff);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err(Error::NotRoot)
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK. Raising it can
/// fail without CAP_SYS_RESOURCE, which newer kernels do not need.
fn raise_memlock_limit() {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let unlimited = Rlimit {
        current: None,
        maximum: None,
    };
    if let Err(err) = setrlimit(Resource::Memlock, unlimited) {
        log::debug!("could not raise RLIMIT_MEMLOCK: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formats(send_reset: &str) -> [Option<Format>; tracepoint::COUNT] {
        let mut formats: [Option<Format>; tracepoint::COUNT] = Default::default();
        formats[tracepoint::SEND_RESET] = Some(Format::parse(send_reset).unwrap());
        formats
    }

    #[test]
    fn netns_filter_needs_btf_offsets() {
        let with_btf = SockLayout {
            skc_net: 48,
            net_inum: 136,
            ..SockLayout::default()
        };
        assert!(check_netns_filter(Some(4026531840), &with_btf, &[]).is_ok());
        let without = SockLayout {
            skc_net: ABSENT_OFFSET,
            net_inum: ABSENT_OFFSET,
            ..SockLayout::default()
        };
        assert!(check_netns_filter(None, &without, &[]).is_ok());
        let missing = vec!["kernel BTF (/sys/kernel/btf/vmlinux: not found)".to_string()];
        let err = check_netns_filter(Some(4026531840), &without, &missing)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--netns needs the kernel's BTF"), "{err}");
        assert!(err.contains("/sys/kernel/btf/vmlinux"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn send_reset_before_6_10_is_reported_as_partial() {
        let old = formats(include_str!("../tests/fixtures/tcp_send_reset-6.1.format"));
        assert_eq!(
            tracepoint_limits(&old, kind_mask::ALL),
            vec![SEND_RESET_BEFORE_6_10]
        );
        let new = formats(include_str!("../tests/fixtures/tcp_send_reset-6.18.format"));
        assert!(tracepoint_limits(&new, kind_mask::ALL).is_empty());
        assert!(tracepoint_limits(&Default::default(), kind_mask::ALL).is_empty());
    }

    #[test]
    fn kfree_skb_without_rx_sk_is_named() {
        let mut formats: [Option<Format>; tracepoint::COUNT] = Default::default();
        let with_rx_sk = include_str!("../tests/fixtures/kfree_skb-6.18.format");
        formats[tracepoint::KFREE_SKB] = Some(Format::parse(with_rx_sk).unwrap());
        assert!(tracepoint_limits(&formats, kind_mask::ALL).is_empty());
        // 6.1's layout: the same fields up to `protocol`, no `rx_sk`.
        let without: String = with_rx_sk
            .lines()
            .filter(|l| !l.contains("rx_sk;"))
            .collect::<Vec<_>>()
            .join("\n");
        formats[tracepoint::KFREE_SKB] = Some(Format::parse(&without).unwrap());
        assert_eq!(
            tracepoint_limits(&formats, kind_mask::ALL),
            vec![KFREE_SKB_WITHOUT_RX_SK]
        );
        // Not asked for drops: nothing to say.
        assert!(tracepoint_limits(&formats, kind_mask::RST).is_empty());
    }

    #[test]
    fn queue_purge_is_quiet_whatever_its_number() {
        for (fixture, number) in [
            (include_str!("../tests/fixtures/kfree_skb-6.18.format"), 104),
            (include_str!("../tests/fixtures/kfree_skb-6.12.format"), 91),
        ] {
            let names = Format::parse(fixture).unwrap().symbols("reason");
            assert_eq!(names[&number], "QUEUE_PURGE");
            let bits = quiet_drop_reasons(&names);
            assert_eq!(bits[number as usize / 32], 1 << (number % 32));
            assert_eq!(bits.iter().map(|b| b.count_ones()).sum::<u32>(), 1);
        }
        // 6.1 has no such reason: nothing is quiet.
        let names = Format::parse(include_str!("../tests/fixtures/kfree_skb-6.1.format"))
            .unwrap()
            .symbols("reason");
        assert_eq!(quiet_drop_reasons(&names), [0; 8]);
    }

    #[test]
    fn reuse_threshold_in_jiffies() {
        let ms = Duration::from_millis;
        assert_eq!(reuse_idle_jiffies(ms(500), Some(250)), 125);
        assert_eq!(reuse_idle_jiffies(ms(500), Some(1000)), 500);
        assert_eq!(reuse_idle_jiffies(ms(1), Some(100)), 1, "never 0 (off)");
        assert_eq!(reuse_idle_jiffies(ms(500), None), 0);
    }
}
