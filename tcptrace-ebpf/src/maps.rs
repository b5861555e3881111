//! Every map the programs share, in one place.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use tcptrace_common::{
    Config, ConnKey, DEFAULT_RING_BYTES, DROP_REASON_SLOTS, EventWithPeer, FLIGHT_FLOWS,
    FlightPayload, FlightRing, FlowKey, ListenKey, OPEN_KEYS, OpenKey, Owner, PeerProfile,
    RECORD_BYTES, SockInfo, TCP_SPAN_BYTES, WatchedFlowKey, kind,
};

/// Events to userspace. Userspace may resize it before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Per-CPU copy of the tracepoint record (or socket head) being handled
/// (see `read::Record`, `read::SockHead`), one per `emit::buffer` as the
/// events are; twice the copied size, so that a field read at any offset
/// below `RECORD_BYTES` is provably in bounds for the verifier.
#[map]
pub static RECORD: PerCpuArray<[u8; 2 * RECORD_BYTES]> =
    PerCpuArray::with_max_entries(crate::emit::buffer::COUNT, 0);

/// Per-CPU copy of the span of a `tcp_sock` a reset reads (see
/// `read::TcpSpan`); 8 bytes over `TCP_SPAN_BYTES`, so that a 4-byte read
/// at any masked offset is provably in bounds for the verifier.
/// One per `emit::buffer`, as the events are.
#[map]
pub static TCP_SPAN: PerCpuArray<[u8; TCP_SPAN_BYTES + 8]> =
    PerCpuArray::with_max_entries(crate::emit::buffer::COUNT, 0);

/// Per-CPU events under construction, one per kind of program that may
/// interrupt another on the CPU (`emit::buffer`), with room for the
/// peer's profile an `RST_RECEIVED` record carries after it.
#[map]
pub static EVENT: PerCpuArray<EventWithPeer> =
    PerCpuArray::with_max_entries(crate::emit::buffer::COUNT, 0);

/// Offsets and filters; one entry.
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Socket address -> owner and open timestamps. LRU so it stays bounded
/// whatever the churn; a reused address is overwritten when the new
/// socket opens.
#[map]
pub static SOCKS: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(65536, 0);

/// (netns, port) of a listen() -> the listening process, so connections
/// the application has not accepted yet still have an owner.
#[map]
pub static LISTENERS: LruHashMap<ListenKey, Owner> = LruHashMap::with_max_entries(4096, 0);

/// Connections open before the tracer started -> their owner (filled by
/// userspace once; a hit is copied into SOCKS).
#[map]
pub static PREEXISTING: HashMap<ConnKey, Owner> = HashMap::with_max_entries(65536, 0);

/// Events that passed the filters, by kind: the ground truth for loss.
#[map]
pub static PRODUCED: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::COUNT, 0);

/// Events dropped because the ring buffer was full, by kind.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::COUNT, 0);

/// TCP drops the filters keep, by drop reason (`DROP_REASON_SLOTS`):
/// counted before the ring buffer, so exact even when events are lost.
#[map]
pub static DROP_REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_REASON_SLOTS, 0);

/// Every TCP drop on the host by reason, counted before any filter: what
/// the kernel dropped outside the traced scope too.
#[map]
pub static HOST_DROP_REASONS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(DROP_REASON_SLOTS, 0);

/// Per connection (this host's end first): what the peer's segments look
/// like and the last RST received, from the TC programs, for the reset
/// program to hand on. LRU: bounded whatever the churn (about 130 bytes
/// an entry with the key and the kernel's LRU node).
#[map]
pub static PEERS: LruHashMap<FlowKey, PeerProfile> = LruHashMap::with_max_entries(32768, 0);

/// The flight recorder (`trace --pcap`): the last packets of each
/// connection. Userspace sizes it to one entry unless asked for.
#[map]
pub static FLIGHT: LruHashMap<FlowKey, FlightRing> = LruHashMap::with_max_entries(FLIGHT_FLOWS, 0);

/// Their payload bytes (`--pcap-payload`); one entry unless asked for.
#[map]
pub static FLIGHT_PAYLOAD: LruHashMap<FlowKey, FlightPayload> =
    LruHashMap::with_max_entries(FLIGHT_FLOWS, 0);

/// An all-zero ring and payload block, what a connection's first packet
/// inserts (too big for the 512-byte stack). Never written.
#[map]
pub static FLIGHT_EMPTY: Array<FlightRing> = Array::with_max_entries(1, 0);
#[map]
pub static FLIGHT_PAYLOAD_EMPTY: Array<FlightPayload> = Array::with_max_entries(1, 0);

/// Per-CPU scratch for the TC programs: a TCP header with its options,
/// read at offsets the verifier can bound. Apart from `RECORD`: a TC
/// program in softirq may run while a tracepoint program on the same
/// CPU is interrupted.
#[map]
pub static TC_SCRATCH: PerCpuArray<[u8; 128]> = PerCpuArray::with_max_entries(1, 0);

/// Connections the filters keep, by their two ends -> their namespace
/// (see `related`): drops and unowned RSTs of these flows elsewhere on the
/// host are kept too. Only filled when `Config::related_flows` is on.
#[map]
pub static WATCHED_FLOWS: LruHashMap<WatchedFlowKey, u32> = LruHashMap::with_max_entries(16384, 0);
/// Successful opens counted here instead of sent (`Config::count_opens`).
/// A plain (preallocated) hash, never LRU: a full map refuses the new key
/// and the open goes to the ring buffer instead, so no count is evicted.
#[map]
pub static OPENS: PerCpuHashMap<OpenKey, u64> = PerCpuHashMap::with_max_entries(OPEN_KEYS, 0);

/// Opens that found `OPENS` full and were sent as events instead.
#[map]
pub static OPENS_FULL: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
