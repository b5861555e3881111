//! `tcptrace exporter`: always-on Prometheus/OpenMetrics metrics on
//! `/metrics`, and the diagnosis as metrics: the findings of the last
//! `--window`, re-evaluated every `--interval` (docs/exporter.md).
//!
//! One loop owns every figure: events go to the live aggregate (for the
//! rules) and to the tally source (for the counters); each interval the
//! tally is folded into bounded series and the rules run over the
//! window; each scrape folds what came since and answers with the text
//! of that moment. The counts come through `tally::TallySource`, so the
//! in-kernel counters of issue 13 can replace `EventTally` without
//! touching this module.

mod exposition;
mod findings;
mod http;
mod series;

use std::{net::SocketAddr, process::ExitCode};

use anyhow::Context as _;
use tcptrace_common::kind_mask;
use tokio::sync::mpsc;

use self::{
    exposition::Exposition,
    findings::Findings,
    http::Scrape,
    series::{Limits, Series, Workload},
};
use crate::{
    aggregate::Aggregate,
    cli::ExporterArgs,
    counts::Counts,
    diagnosis::finding::Affected,
    event::{OpenCount, TcpEvent},
    filter_args::{self, session_options},
    host::cgroups::Cgroups,
    kernel::names::Names,
    session::{Next, Session, TracerOptions},
    stop::stop_signal,
    tally::{EventTally, TallySource, Who},
    timefmt::duration_ns,
};

/// Scrapes waiting for the loop at most (a scraper waits for its answer).
const MAX_PENDING: usize = 16;

/// Runs `tcptrace exporter` until SIGTERM, Ctrl-C or `--duration`.
///
/// # Errors
/// A `--listen` address that cannot be bound, a `--pods-dir` that cannot
/// be read, what the session refuses, and host facts that cannot be read
/// at start.
pub async fn run(args: ExporterArgs) -> anyhow::Result<ExitCode> {
    if args.interval > args.window {
        eprintln!(
            "tcptrace: --interval {} is longer than --window {}: the window is made of whole intervals",
            duration_ns(args.interval.as_nanos() as u64),
            duration_ns(args.window.as_nanos() as u64)
        );
        return Ok(ExitCode::from(2));
    }
    let (options, netns) = session_options(&args.filter, args.ring_kib)?;
    // Successful opens come one by one, not counted in the kernel
    // (`count_opens`, as `top` does): the rules' flow index follows each
    // connection from its open, as in `diagnose`.
    let mut options = TracerOptions {
        skip_opening: true,
        count_opens: false,
        ..options
    };
    if args.filter.events.is_empty() {
        // The rules need every kind, reuse after idle included.
        options.kinds = kind_mask::ALL;
    }
    let mut cgroups = filter_args::cgroups(&args.filter)?;
    // Bound before anything loads: a port in use is one line, at once.
    let listener = bind(args.listen)?;
    let listening = listener.local_addr()?;
    let mut findings = Findings::start(netns.map(|ns| ns.path), args.window)?;

    let mut session = Session::start(&options, stop_signal(args.duration))?;
    let names = session.names().clone();
    let (scrape_tx, mut scrapes) = mpsc::channel::<Scrape>(MAX_PENDING);
    let server = http::serve(listener, scrape_tx);
    eprintln!("tcptrace: exporting on http://{listening}/metrics; Ctrl-C to stop");

    let mut agg = Aggregate::new(names.clone());
    let mut source: Box<dyn TallySource> = Box::new(EventTally::default());
    let mut series = Series::new(Limits {
        top_processes: args.top_processes.into(),
        top_peers: args.top_peers.into(),
        max_series: args.max_series as usize,
        ttl: args.window,
    });
    let mut batch: Vec<TcpEvent> = Vec::with_capacity(4096);
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut served = 0u64;
    loop {
        tokio::select! {
            biased;
            // Before the events: a storm keeps the ring always ready and
            // must not keep a scraper waiting.
            Some(scrape) = scrapes.recv() => {
                add_opens(&session.take_opens()?, &mut agg, source.as_mut());
                series.fold(&source.take(), &names, |who| workload(&mut cgroups, who));
                let text = render(&series, &findings, &session.counts()?, &names, &mut cgroups);
                // The scraper may have gone: nothing to do then.
                let _ = scrape.reply.send(text);
                served += 1;
            }
            _ = tick.tick() => {
                add_opens(&session.take_opens()?, &mut agg, source.as_mut());
                series.fold(&source.take(), &names, |who| workload(&mut cgroups, who));
                findings.evaluate(&mut agg);
            }
            next = session.next(&mut batch) => match next? {
                Next::Stopped(_) => break,
                Next::Events => add(&mut batch, &mut agg, source.as_mut()),
            },
        }
    }
    // From here on scrapes get 503: nobody answers them any more.
    drop(scrapes);
    let (counts, opens) = session
        .finish_counting(&mut batch, |batch| {
            add(batch, &mut agg, source.as_mut());
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    add_opens(&opens, &mut agg, source.as_mut());
    server.stop().await;
    eprintln!(
        "tcptrace exporter: {}; {served} scrapes served",
        counts.human()
    );
    Ok(ExitCode::SUCCESS)
}

/// The listening socket, non-blocking for tokio.
fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(listener)?)
}

/// Every event to the aggregate (for the rules) and the tally (for the
/// counters), filed under the same peer.
fn add(batch: &mut Vec<TcpEvent>, agg: &mut Aggregate, source: &mut dyn TallySource) {
    for ev in batch.iter() {
        source.add(ev, agg.peer_of(ev));
        agg.add(ev);
    }
    batch.clear();
}

/// The opens the kernel counted, to both as well.
fn add_opens(opens: &[OpenCount], agg: &mut Aggregate, source: &mut dyn TallySource) {
    source.add_opens(opens);
    agg.add_opens(opens);
}

/// A socket owner's labels: its command and, from its cgroup, the pod
/// and container.
fn workload(cgroups: &mut Cgroups, who: &Who) -> Workload {
    let mut labels = Workload {
        process: who.comm.to_string(),
        ..Workload::default()
    };
    if let Some(cgroup) = cgroups.lookup_owner(who.pid, who.cgroup_id) {
        name(&mut labels, cgroup);
    }
    labels
}

/// The same for a process a finding is about (pid 0: unattributed).
fn affected_workload(cgroups: &mut Cgroups, a: &Affected) -> Workload {
    let mut labels = Workload {
        process: if a.pid == 0 {
            String::new()
        } else {
            a.comm.clone()
        },
        ..Workload::default()
    };
    if a.pid != 0
        && let Some(cgroup) = cgroups.lookup_owner(a.pid, a.cgroup_id)
    {
        name(&mut labels, cgroup);
    }
    labels
}

fn name(labels: &mut Workload, cgroup: &crate::host::cgroups::CgroupInfo) {
    labels.namespace = cgroup.namespace().unwrap_or_default().to_string();
    labels.pod = cgroup.pod_name().unwrap_or_default().to_string();
    labels.container = cgroup.container_name().unwrap_or_default().to_string();
}

/// One scrape's text.
fn render(
    series: &Series,
    findings: &Findings,
    counts: &Counts,
    names: &Names,
    cgroups: &mut Cgroups,
) -> String {
    let mut exposition = Exposition::default();
    exposition.series(series);
    exposition.counts(counts, |reason| names.drop_reason(reason).into_owned());
    exposition.findings(
        &findings.current,
        findings.covered().as_secs_f64(),
        findings.evaluations,
        |a| affected_workload(cgroups, a),
    );
    exposition.encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_one_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = runtime.block_on(async { bind(addr).unwrap_err() });
        let text = format!("{err:#}");
        assert!(
            text.starts_with(&format!("cannot listen on {addr}: ")),
            "{text}"
        );
        assert!(text.to_lowercase().contains("in use"), "{text}");
    }
}
