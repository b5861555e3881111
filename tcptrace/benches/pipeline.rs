//! Userspace cost per event, without root: decode a ring buffer record,
//! add it to the aggregator, write it as NDJSON. A regression here shows
//! up without running the kernel benchmark (`cargo xtask bench overhead`).
//!
//! Run: `AYA_BUILD_SKIP=1 cargo bench -p tcptrace --bench pipeline`

use std::{collections::BTreeMap, hint::black_box, io};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tcptrace::{
    aggregate::Aggregate,
    decode::Decoder,
    host::cgroups::Cgroups,
    kernel::clock::WallClock,
    kernel::names::Names,
    sink::{Context, json::write_event},
};
use tcptrace_common::{EVENT_SIZE, Event, Owner, kind};

/// One connection's worth of records as the churn benchmark makes them:
/// connect, state changes on both ends, an RST each way.
fn records() -> Vec<Vec<u8>> {
    let mut comm = [0u8; 16];
    comm[..6].copy_from_slice(b"client");
    let owner = Owner {
        tgid: 4242,
        pid: 4243,
        cgroup_id: 1,
        comm,
    };
    let mut saddr = [0u8; 16];
    saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    let base = Event {
        ts_ns: 1,
        skaddr: 0xffff_8880_0000_1000,
        owner,
        netns: 4026531840,
        family: 2,
        sport: 40000,
        dport: 8080,
        saddr,
        daddr: saddr,
        reason: u32::MAX,
        idle_send_jiffies: u32::MAX,
        idle_recv_jiffies: u32::MAX,
        ..Event::default()
    };
    let with = |k: u8, old: u8, new: u8| Event {
        kind: k,
        old_state: old,
        new_state: new,
        ..base
    };
    let mut events = [
        with(kind::STATE, 7, 2),
        Event {
            duration_ns: 40_000,
            ..with(kind::CONNECT, 2, 1)
        },
        with(kind::STATE, 10, 3),
        with(kind::STATE, 3, 1),
        with(kind::STATE, 1, 7),
        Event {
            reason: 14,
            age_ns: 50_000,
            idle_send_jiffies: 1,
            idle_recv_jiffies: 1,
            ..with(kind::RST_SENT, 7, 0)
        },
        Event {
            age_ns: 50_000,
            idle_send_jiffies: 1,
            idle_recv_jiffies: 1,
            ..with(kind::RST_RECEIVED, 1, 0)
        },
        with(kind::STATE, 1, 7),
    ];
    // Vary the ports so the aggregator sees many peers, as in a storm.
    events
        .iter_mut()
        .enumerate()
        .for_each(|(i, e)| e.sport = 40000 + i as u16);
    events
        .iter()
        .map(|e| {
            unsafe { std::slice::from_raw_parts((e as *const Event).cast::<u8>(), EVENT_SIZE) }
                .to_vec()
        })
        .collect()
}

/// Connections in one pass of the storm benchmark: enough to turn the
/// flow index's generations over several times.
const STORM_CONNECTIONS: u32 = 100_000;

/// `connections` copies of one connection's records, each with its own
/// client port and address and a later timestamp.
fn storm(records: &[Vec<u8>], connections: u32) -> Vec<Vec<u8>> {
    let sport = std::mem::offset_of!(Event, sport);
    let saddr = std::mem::offset_of!(Event, saddr);
    let ts = std::mem::offset_of!(Event, ts_ns);
    let mut out = Vec::with_capacity(records.len() * connections as usize);
    for n in 0..connections {
        for (i, r) in records.iter().enumerate() {
            let mut r = r.clone();
            let port = 1024 + (n % 60_000) as u16;
            r[sport..sport + 2].copy_from_slice(&port.to_ne_bytes());
            r[saddr + 2..saddr + 4].copy_from_slice(&((n / 60_000) as u16).to_be_bytes());
            let at = 1 + u64::from(n) * 40_000 + i as u64 * 1_000;
            r[ts..ts + 8].copy_from_slice(&at.to_ne_bytes());
            out.push(r);
        }
    }
    out
}

fn names() -> Names {
    let states = [
        (1, "TCP_ESTABLISHED"),
        (2, "TCP_SYN_SENT"),
        (3, "TCP_SYN_RECV"),
        (7, "TCP_CLOSE"),
        (10, "TCP_LISTEN"),
    ];
    Names::new(
        states.iter().map(|(n, s)| (*n, s.to_string())).collect(),
        BTreeMap::from([(14, "TCP_STATE".to_string())]),
    )
}

fn pipeline(c: &mut Criterion) {
    let records = records();
    let decoder = Decoder::new(Some(250));
    let names = names();
    let clock = WallClock::now();
    let mut cgroups = Cgroups::new("/nonexistent");
    let mut group = c.benchmark_group("per_event");
    group.throughput(Throughput::Elements(records.len() as u64));

    group.bench_function("decode", |b| {
        b.iter(|| {
            for r in &records {
                black_box(decoder.decode(black_box(r)).unwrap());
            }
        })
    });

    group.bench_function("decode+json", |b| {
        let mut out = io::sink();
        b.iter(|| {
            for r in &records {
                let ev = decoder.decode(black_box(r)).unwrap();
                let mut ctx = Context {
                    names: &names,
                    clock: &clock,
                    cgroups: &mut cgroups,
                };
                write_event(&mut out, &ev, &mut ctx).unwrap();
            }
        })
    });

    group.bench_function("decode+aggregate", |b| {
        let mut agg = Aggregate::new(names.clone());
        b.iter(|| {
            for r in &records {
                let ev = decoder.decode(black_box(r)).unwrap();
                agg.add(&ev);
            }
        })
    });
    group.finish();

    // A storm as the aggregator meets it: every connection new (its own
    // client port and address), the clock moving 40 us per connection
    // (25k connections/s), so the connection and flow tables fill, age
    // and turn over as they do under the churn of `cargo xtask bench
    // overhead`.
    let storm = storm(&records, STORM_CONNECTIONS);
    let mut group = c.benchmark_group("storm");
    group.throughput(Throughput::Elements(storm.len() as u64));
    group.sample_size(10);
    group.bench_function("decode+aggregate", |b| {
        b.iter(|| {
            let mut agg = Aggregate::new(names.clone());
            for r in &storm {
                let ev = decoder.decode(black_box(r)).unwrap();
                agg.add(&ev);
            }
            black_box(agg.events);
        })
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
