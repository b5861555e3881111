//! `cargo xtask bench soak`: memory of the always-on modes over a long
//! connection storm. `top`, `diagnose` and the exporter (scraped every
//! second) run side by side on one churn for minutes; their resident set
//! is sampled every few seconds. Flat means the tables stay bounded
//! (two generations, top-N) whatever the churn: what issue 13 asks over
//! 5 minutes and an exporter left on for weeks needs. The exporter keeps
//! one slice of figures per interval for its whole `--window` (5 min by
//! default), so it grows until the window is full: the default soak of
//! 10 minutes shows whether it stays flat after.

use std::{
    fmt::Write as _,
    fs,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{
    churn::{BenchNetns, churn},
    overhead::{
        Ready, Run, Scraper, Tracer, read_exporter_counts, read_tcptrace_counts, status_kib,
    },
};

/// Seconds between two samples of the resident sets.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// The modes soaked, as (label, arguments); the exporter's address is
/// read from its first lines.
const MODES: [(&str, &[&str]); 3] = [
    (
        "tcptrace top --json",
        &["top", "--json", "--interval", "1s"],
    ),
    ("tcptrace diagnose --json", &["diagnose", "--json"]),
    (
        "tcptrace exporter (scraped every 1 s)",
        &["exporter", "--listen", "127.0.0.1:0", "--interval", "15s"],
    ),
];

/// Seconds since the start, and the resident set of each mode (KiB).
type Sample = (f64, Vec<u64>);

/// Runs the soak and returns the table (markdown).
pub fn soak(tcptrace: &std::path::Path, minutes: u64, threads: usize) -> Result<String> {
    let ns = BenchNetns::new()?;
    let tmp = std::env::temp_dir().join(format!("tcptrace-soak-{}", std::process::id()));
    fs::create_dir_all(&tmp)?;
    let duration = Duration::from_secs(minutes * 60);
    let mut tracers = Vec::new();
    for (i, (label, args)) in MODES.iter().enumerate() {
        let output = tmp.join(format!("mode{i}.out"));
        let tracer = Tracer::start(
            Command::new(tcptrace).args(*args),
            Ready::StderrLine("Ctrl-C to stop"),
            Some(&output),
        )
        .with_context(|| format!("starting {label}"))?;
        tracers.push((label, output, tracer));
    }
    let scraper = Scraper::start(tracers[2].2.metrics_addr()?, duration);
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let pids: Vec<u32> = tracers.iter().map(|(_, _, t)| t.pid()).collect();
    let sampler = {
        let (samples, done) = (samples.clone(), done.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            while !done.load(Ordering::Relaxed) {
                let rss = pids.iter().map(|pid| status_kib(*pid, "VmRSS:")).collect();
                let at = started.elapsed().as_secs_f64();
                samples.lock().expect("samples").push((at, rss));
                let next = started + SAMPLE_EVERY * (1 + (at / SAMPLE_EVERY.as_secs_f64()) as u32);
                while !done.load(Ordering::Relaxed) && Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        })
    };
    eprintln!("xtask bench: soaking top, diagnose and the exporter for {minutes} min");
    let (rate, connections) = churn(&ns, threads, duration)?;
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler thread");
    let scrapes = scraper.join()?;
    let samples = Arc::into_inner(samples)
        .context("sampler still holds the samples")?
        .into_inner()
        .expect("samples");

    let mut table = String::new();
    let _ = writeln!(
        table,
        "Churn: {connections} connections in {minutes} min ({rate:.0}/s, {threads} threads); \
         resident set sampled every {} s; the exporter answered {scrapes} scrapes.\n",
        SAMPLE_EVERY.as_secs()
    );
    let _ = writeln!(
        table,
        "| mode | RSS at each minute (MiB) | growth over the second half | peak RSS | events received / produced | lost |"
    );
    let _ = writeln!(table, "| --- | --- | ---: | ---: | ---: | ---: |");
    let at = |mode: usize, secs: f64| -> u64 {
        samples
            .iter()
            .find(|(t, _)| *t >= secs)
            .or(samples.last())
            .map_or(0, |(_, rss)| rss[mode])
    };
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let total = duration.as_secs_f64();
    for (mode, (label, output, tracer)) in tracers.into_iter().enumerate() {
        let peak = tracer.peak_rss_kib();
        let (_usage, stderr) = tracer.stop()?;
        let mut run = Run::default();
        if mode == 2 {
            read_exporter_counts(&stderr, &mut run)?;
        } else {
            read_tcptrace_counts(&output, &stderr, &mut run)?;
        }
        let received = run.received.unwrap_or(0);
        let lost = run.lost.unwrap_or(0);
        let produced = run.produced.unwrap_or(received + lost);
        let (half, end) = (
            at(mode, total / 2.0),
            samples.last().map_or(0, |s| s.1[mode]),
        );
        let by_minute: Vec<String> = (1..=minutes)
            .map(|m| format!("{:.1}", at(mode, m as f64 * 60.0) as f64 / 1024.0))
            .collect();
        let _ = writeln!(
            table,
            "| {label} | {} | {:+.1} MiB | {} | {received} / {produced} | {lost} |",
            by_minute.join(", "),
            (end as f64 - half as f64) / 1024.0,
            mib(peak),
        );
    }
    let _ = fs::remove_dir_all(&tmp);
    Ok(table)
}
