//! `tcptrace replay FILE`: prints what the live command that recorded
//! FILE would have printed, human or `--json`, byte for byte.
//!
//! `trace --record`: the same decoder, names, wall clock, cgroups (pods,
//! namespaces, containers), loss checks and summary lines as the
//! recording host had, from the file. `diagnose --record`: the same
//! pipeline (`diagnosis::watch`) over the same events, with the host
//! readings the recording host took, from the file. A damaged or
//! cut-short file is refused before anything is printed.

use std::{
    io::{self, BufWriter, Write as _},
    process::ExitCode,
};

use anyhow::Context as _;

use crate::{
    aggregate::Aggregate,
    cli::ReplayArgs,
    decode::Decoder,
    host::cgroups::Cgroups,
    kernel::clock::WallClock,
    ranking::{self, Snapshot},
    record::{Frame, RecordReader, Recorded, replay_diagnosis},
    sink::{Context, HumanSink, JsonSink, LossTracker, Output, Sink},
    summary::Summary,
    tracer::split_records,
};

/// Runs `tcptrace replay`.
///
/// # Errors
/// A file that is not a whole record file of this format (one line
/// naming the damage), and failures to write stdout.
pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let reader = RecordReader::open(&args.file)?;
    match reader.header().command {
        Recorded::Trace => trace(&args, reader),
        Recorded::Diagnose => diagnosis(&args),
        Recorded::Top => top(&args, reader),
    }
}

/// What `trace` printed: the events as they come, then the summary.
fn trace(args: &ReplayArgs, mut reader: RecordReader) -> anyhow::Result<ExitCode> {
    let header = reader.header().clone();
    let decoder = reader.decoder();
    let clock = WallClock::from_boot_unix_ns(i128::from(header.boot_unix_ns));
    let names = header.names;
    let mut cgroups = Cgroups::fixed();
    let out: Output = BufWriter::with_capacity(1 << 16, Box::new(io::stdout()));
    let mut sink: Box<dyn Sink> = if args.json {
        Box::new(JsonSink::new(out))
    } else {
        Box::new(HumanSink::new(out))
    };
    let mut summary = Summary::default();
    let mut losses = LossTracker::default();
    let write_err = |e: io::Error| anyhow::Error::new(e).context("writing events to stdout");
    while let Some(frame) = reader.next_frame()? {
        match frame {
            Frame::Events(records) => {
                for ev in events(&decoder, records, args) {
                    let ev = ev?;
                    summary.add(&ev);
                    let mut ctx = Context {
                        names: &names,
                        clock: &clock,
                        cgroups: &mut cgroups,
                    };
                    sink.event(&ev, &mut ctx).map_err(write_err)?;
                }
            }
            Frame::Cgroup(key, info) => cgroups.insert(key, info),
            Frame::Losses(counts) => {
                losses.report(&counts, sink.as_mut()).map_err(write_err)?;
            }
            Frame::End(end) => {
                losses
                    .report(&end.counts, sink.as_mut())
                    .map_err(write_err)?;
                summary.finish(end.seconds, end.counts, &header.missing, &names);
                summary.set_packets(end.tc, end.pcap);
            }
            // The reader refuses other commands' frames.
            Frame::Run(_)
            | Frame::Reading(..)
            | Frame::Survey(..)
            | Frame::Listeners(_)
            | Frame::Owners(_)
            | Frame::DiagnoseEnd(..)
            | Frame::Tick(..) => {}
        }
    }
    if args.json {
        sink.summary(&summary).map_err(write_err)?;
    }
    sink.flush().map_err(write_err)?;
    if !args.no_summary {
        let _ = io::stderr().write_all(summary.to_human().as_bytes());
    }
    Ok(ExitCode::SUCCESS)
}

/// What `top --plain` or `--json` printed: a snapshot at every recorded
/// tick, of the same aggregate over the same events, opens counted in
/// the kernel, counts and owners' cgroups as the recording host had them.
fn top(args: &ReplayArgs, mut reader: RecordReader) -> anyhow::Result<ExitCode> {
    let header = reader.header().clone();
    let decoder = reader.decoder();
    let rows = usize::from(header.rows.unwrap_or(20));
    let mut agg = Aggregate::new(header.names);
    let mut cgroups = Cgroups::fixed();
    let mut previous = Snapshot::default();
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    while let Some(frame) = reader.next_frame()? {
        match frame {
            Frame::Events(records) => {
                for ev in events(&decoder, records, args) {
                    agg.add(&ev?);
                }
            }
            Frame::Cgroup(key, info) => cgroups.insert(key, info),
            Frame::Tick(elapsed, counts, opens) => {
                agg.add_opens(&opens);
                let mut snap = Snapshot::take(&agg, &previous, elapsed, counts);
                snap.name_pods(&mut cgroups);
                ranking::plain::write(&mut out, &snap, rows, args.json)
                    .context("writing snapshots to stdout")?;
                previous = snap;
            }
            // The reader refuses other commands' frames; top records no
            // loss checks (the snapshots carry the counts).
            _ => {}
        }
    }
    out.flush().context("writing snapshots to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// What `diagnose` printed: its report, from the recorded events and
/// host readings through the same pipeline (`record::replay_diagnosis`).
fn diagnosis(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let (report, agg) = replay_diagnosis(&args.file)?;
    let json = report.to_json(&agg);
    report
        .print(&json, args.json, &mut io::stdout().lock())
        .context("writing the report")?;
    Ok(ExitCode::SUCCESS)
}

/// The events of an `E` frame's records, decoded as the recording host
/// did. The reader checked every length; only records that decoded live
/// were recorded, so one that does not decode now is corruption.
fn events<'a>(
    decoder: &'a Decoder,
    records: &'a [u8],
    args: &'a ReplayArgs,
) -> impl Iterator<Item = anyhow::Result<crate::event::TcpEvent>> + 'a {
    split_records(records)
        .map_while(Result::ok)
        .map(move |record| {
            decoder
                .decode(record)
                .map_err(|e| anyhow::anyhow!("{}: corrupt: {e}", args.file.display()))
        })
}
