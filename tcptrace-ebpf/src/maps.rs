//! Every map the programs share, in one place.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use tcptrace_common::{
    Config, ConnKey, DEFAULT_RING_BYTES, DROP_REASON_SLOTS, Event, ListenKey, OPEN_KEYS, OpenKey,
    Owner, RECORD_BYTES, SockInfo, kind,
};

/// Events to userspace. Userspace may resize it before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Per-CPU copy of the tracepoint record being handled (see
/// `read::Record`); twice the copied size, so that a field read at any
/// offset below `RECORD_BYTES` is provably in bounds for the verifier.
#[map]
pub static RECORD: PerCpuArray<[u8; 2 * RECORD_BYTES]> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU event under construction (see `emit::blank`).
#[map]
pub static EVENT: PerCpuArray<Event> = PerCpuArray::with_max_entries(1, 0);

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

/// Successful opens counted here instead of sent (`Config::count_opens`).
/// A plain (preallocated) hash, never LRU: a full map refuses the new key
/// and the open goes to the ring buffer instead, so no count is evicted.
#[map]
pub static OPENS: PerCpuHashMap<OpenKey, u64> = PerCpuHashMap::with_max_entries(OPEN_KEYS, 0);

/// Opens that found `OPENS` full and were sent as events instead.
#[map]
pub static OPENS_FULL: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
