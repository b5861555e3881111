//! What a load run counted, shown two ways: a live progress line on a
//! terminal while it runs, and a final report (human or JSON) at the end.
//!
//! Workers count into a few `Tally` slots behind uncontended mutexes; the
//! progress line and the final report merge the slots. Keeping counters
//! per slot instead of one shared set keeps workers on different cores
//! from fighting over the same cache lines at 100k connects per second.

use std::{
    collections::BTreeMap,
    io::{self, IsTerminal as _, Write},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{
    aggregate::{Percentiles, serialize_micros},
    stress::{Mode, classify::Class, traced::KernelView},
    timefmt::duration_ns,
};

/// Upper edges of the idle-before-use buckets of `pool`, in milliseconds.
/// A use of a fresh connection goes in its own bucket before these.
const IDLE_EDGES_MS: [u64; 9] = [
    10, 100, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000,
];
/// Fresh, one per edge, and one past the last edge.
pub const IDLE_BUCKETS: usize = IDLE_EDGES_MS.len() + 2;

/// Uses of pooled connections in one idle bucket.
#[derive(Debug, Clone, Default)]
pub struct Uses {
    /// Uses of a connection that had been idle this long.
    pub uses: u64,
    /// Failed uses, by failure class.
    pub errors: BTreeMap<Class, u64>,
}

/// Everything one slot counted.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Connects tried.
    pub attempts: u64,
    /// Connects that succeeded.
    pub connected: u64,
    /// Failed connects, by failure class (errno name).
    pub connect_errors: BTreeMap<Class, u64>,
    /// Connect time of the successful connects, in microseconds.
    pub connect_us: Histogram<u64>,
    /// `hold`: connections still open at the end, and why the others died.
    pub held: u64,
    /// `hold`: held connections that died, by failure class.
    pub lost: BTreeMap<Class, u64>,
    /// `pool`: requests sent and answered, reply time, uses by idle gap.
    pub requests: u64,
    /// `pool`: requests answered.
    pub replies: u64,
    /// `pool`: time from request to reply, in microseconds.
    pub reply_us: Histogram<u64>,
    /// `pool`: uses by how long the connection had been idle, `IDLE_BUCKETS` buckets (fresh first).
    pub by_idle: [Uses; IDLE_BUCKETS],
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 h at 2 significant digits (1% steps): ample for
    // percentiles, and small enough (~30 KiB) to merge every second.
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn count(map: &mut BTreeMap<Class, u64>, class: Class) {
    *map.entry(class).or_default() += 1;
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            attempts: 0,
            connected: 0,
            connect_errors: BTreeMap::new(),
            connect_us: histogram(),
            held: 0,
            lost: BTreeMap::new(),
            requests: 0,
            replies: 0,
            reply_us: histogram(),
            by_idle: Default::default(),
        }
    }
}

impl Tally {
    /// A connect that succeeded after `elapsed`.
    pub fn connect_ok(&mut self, elapsed: Duration) {
        self.attempts += 1;
        self.connected += 1;
        self.connect_us.saturating_record(micros(elapsed));
    }

    /// A connect that failed with `class`.
    pub fn connect_failed(&mut self, class: Class) {
        self.attempts += 1;
        count(&mut self.connect_errors, class);
    }

    /// A held connection ended before the hold did.
    pub fn lost(&mut self, class: Class) {
        count(&mut self.lost, class);
    }

    /// One use of a pooled connection; `idle` is `None` for a fresh one.
    pub fn request(&mut self, idle: Option<Duration>, outcome: Result<Duration, Class>) {
        self.requests += 1;
        let bucket = &mut self.by_idle[idle_bucket(idle)];
        bucket.uses += 1;
        match outcome {
            Ok(elapsed) => {
                self.replies += 1;
                self.reply_us.saturating_record(micros(elapsed));
            }
            Err(class) => count(&mut bucket.errors, class),
        }
    }

    /// Adds `other`'s counts and histograms to this one.
    pub fn merge(&mut self, other: &Tally) {
        fn add(into: &mut BTreeMap<Class, u64>, from: &BTreeMap<Class, u64>) {
            for (class, n) in from {
                *into.entry(class.clone()).or_default() += n;
            }
        }
        self.attempts += other.attempts;
        self.connected += other.connected;
        add(&mut self.connect_errors, &other.connect_errors);
        self.connect_us
            .add(&other.connect_us)
            .expect("same histogram bounds");
        self.held += other.held;
        add(&mut self.lost, &other.lost);
        self.requests += other.requests;
        self.replies += other.replies;
        self.reply_us
            .add(&other.reply_us)
            .expect("same histogram bounds");
        for (into, from) in self.by_idle.iter_mut().zip(&other.by_idle) {
            into.uses += from.uses;
            add(&mut into.errors, &from.errors);
        }
    }

    fn request_errors(&self) -> BTreeMap<Class, u64> {
        let mut all = BTreeMap::new();
        for bucket in &self.by_idle {
            for (class, n) in &bucket.errors {
                *all.entry(class.clone()).or_default() += n;
            }
        }
        all
    }
}

fn idle_bucket(idle: Option<Duration>) -> usize {
    match idle {
        None => 0,
        Some(idle) => {
            let ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
            1 + IDLE_EDGES_MS
                .iter()
                .position(|edge| ms < *edge)
                .unwrap_or(IDLE_EDGES_MS.len())
        }
    }
}

fn idle_label(bucket: usize) -> String {
    let ms = |i: usize| duration_ns(IDLE_EDGES_MS[i] * 1_000_000);
    match bucket {
        0 => "fresh".into(),
        1 => format!("<{}", ms(0)),
        b if b == IDLE_BUCKETS - 1 => format!(">={}", ms(IDLE_EDGES_MS.len() - 1)),
        b => format!("{}..{}", ms(b - 2), ms(b - 1)),
    }
}

/// The slots workers count into, shared with the progress line.
pub struct Live {
    slots: Vec<Mutex<Tally>>,
}

impl Live {
    /// Slots for `workers` workers; more than a few dozen would only make
    /// merging slower without lowering contention further.
    pub fn new(workers: usize) -> Arc<Live> {
        let slots = (0..workers.clamp(1, 32))
            .map(|_| Mutex::new(Tally::default()))
            .collect();
        Arc::new(Live { slots })
    }

    /// Runs `f` on the slot of worker `worker`.
    pub fn with<T>(&self, worker: usize, f: impl FnOnce(&mut Tally) -> T) -> T {
        let mut slot = self.slots[worker % self.slots.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut slot)
    }

    /// The slots merged into one tally.
    pub fn total(&self) -> Tally {
        let mut total = Tally::default();
        for slot in &self.slots {
            total.merge(&slot.lock().unwrap_or_else(PoisonError::into_inner));
        }
        total
    }

    /// Prints a progress line on stderr every second, only when stderr is
    /// a terminal: a pipe or a log file gets the final report alone. The
    /// line is erased when the returned guard drops.
    pub fn progress(self: &Arc<Self>, mode: Mode, start: Instant) -> Progress {
        if !io::stderr().is_terminal() {
            return Progress { task: None };
        }
        let live = Arc::clone(self);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(start.into(), Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let line = progress_line(mode, start.elapsed(), &live.total());
                // Progress is a courtesy: a closed terminal must not stop the load.
                let _ = write!(io::stderr(), "\r\x1b[K{line}");
            }
        });
        Progress { task: Some(task) }
    }
}

/// Stops and erases the progress line.
pub struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = write!(io::stderr(), "\r\x1b[K");
        }
    }
}

fn progress_line(mode: Mode, elapsed: Duration, tally: &Tally) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let failed: u64 = tally.connect_errors.values().sum();
    let mut line = format!(
        "{} {:>6.1}s  {} connects  {:.0}/s  {} failed",
        mode.name(),
        secs,
        tally.connected,
        tally.connected as f64 / secs,
        failed
    );
    if mode == Mode::Pool {
        let errors: u64 = tally.request_errors().values().sum();
        line += &format!("  {} requests  {} errors", tally.requests, errors);
    }
    if !tally.connect_us.is_empty() {
        line += &format!(
            "  p99 {}",
            duration_ns(tally.connect_us.value_at_quantile(0.99) * 1000)
        );
    }
    line
}

/// `p50 1.2ms  p90 ...  (min 45us, n=300)`.
fn percentiles_text(p: &Percentiles) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  max {}  (min {}, n={})",
        duration_ns(p.p50_ns),
        duration_ns(p.p90_ns),
        duration_ns(p.p99_ns),
        duration_ns(p.max_ns),
        duration_ns(p.min_ns),
        p.count
    )
}

/// `pool` only: what happened to the requests.
#[derive(Debug, Serialize)]
pub struct Requests {
    /// Requests sent.
    pub sent: u64,
    /// Requests answered.
    pub ok: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Answered requests per second, one decimal.
    pub rate_per_s: f64,
    /// Failed requests, by failure class.
    pub errors: BTreeMap<Class, u64>,
    /// Time from sending a request to its reply.
    #[serde(serialize_with = "serialize_micros")]
    pub reply_us: Option<Percentiles>,
    /// Uses and failures by how long the connection had been idle before
    /// the use: resets that cluster in one bucket point at an idle timeout.
    pub by_idle: Vec<IdleUses>,
}

/// Uses of pooled connections in one idle bucket, as reported.
#[derive(Debug, Serialize)]
pub struct IdleUses {
    /// The bucket: `fresh`, `<10ms`, `100ms..1s`, `>=2m`, ...
    pub idle: String,
    /// Uses in the bucket.
    pub uses: u64,
    /// Failed uses in the bucket.
    pub failed: u64,
    /// Failed uses by failure class.
    pub errors: BTreeMap<Class, u64>,
}

/// `hold` only: connections still open at the end, and why the others died.
#[derive(Debug, Serialize)]
pub struct Held {
    /// Connections still open at the end.
    pub held: u64,
    /// Connections that died while held, by failure class.
    pub lost: BTreeMap<Class, u64>,
}

/// The final report of a client mode.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The client mode: `churn`, `hold`, `pool` or `latency`.
    pub mode: &'static str,
    /// The target as given (`HOST:PORT`).
    pub target: String,
    /// The address it resolved to.
    pub address: String,
    /// Length of the run in seconds (three decimals).
    pub elapsed_s: f64,
    /// Connects tried.
    pub attempts: u64,
    /// Connects that succeeded.
    pub connected: u64,
    /// Connects that failed.
    pub failed: u64,
    /// Successful connects per second, one decimal.
    pub connect_rate_per_s: f64,
    /// Failed connects by failure class (errno name).
    pub errors: BTreeMap<Class, u64>,
    /// Connect time of the successful connects, measured by the client.
    #[serde(serialize_with = "serialize_micros")]
    pub connect_us: Option<Percentiles>,
    /// `hold` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<Held>,
    /// `pool` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<Requests>,
    /// `--trace`: what the kernel saw on the target's port meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelView>,
}

fn rate(n: u64, elapsed: Duration) -> f64 {
    let per_s = n as f64 / elapsed.as_secs_f64().max(1e-9);
    (per_s * 10.0).round() / 10.0
}

impl Report {
    /// The report of a run of `mode` against `target` (resolved to `address`) that lasted `elapsed` and counted `tally`.
    pub fn new(
        mode: Mode,
        target: &str,
        address: &str,
        elapsed: Duration,
        tally: &Tally,
    ) -> Report {
        let hold = (mode == Mode::Hold).then(|| Held {
            held: tally.held,
            lost: tally.lost.clone(),
        });
        let requests = (mode == Mode::Pool).then(|| {
            let errors = tally.request_errors();
            Requests {
                sent: tally.requests,
                ok: tally.replies,
                failed: errors.values().sum(),
                rate_per_s: rate(tally.replies, elapsed),
                errors,
                reply_us: Percentiles::of(&tally.reply_us, 1000),
                by_idle: (tally.by_idle.iter().enumerate())
                    .filter(|(_, b)| b.uses > 0)
                    .map(|(i, b)| IdleUses {
                        idle: idle_label(i),
                        uses: b.uses,
                        failed: b.errors.values().sum(),
                        errors: b.errors.clone(),
                    })
                    .collect(),
            }
        });
        Report {
            mode: mode.name(),
            target: target.to_string(),
            address: address.to_string(),
            elapsed_s: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            attempts: tally.attempts,
            connected: tally.connected,
            failed: tally.connect_errors.values().sum(),
            connect_rate_per_s: rate(tally.connected, elapsed),
            errors: tally.connect_errors.clone(),
            connect_us: Percentiles::of(&tally.connect_us, 1000),
            hold,
            requests,
            kernel: None,
        }
    }

    /// Writes the report; write errors propagate (a closed pipe ends quietly).
    pub fn write(&self, json: bool, out: &mut impl Write) -> io::Result<()> {
        if json {
            serde_json::to_writer(&mut *out, self)?;
            return writeln!(out);
        }
        writeln!(
            out,
            "{} {} ({}) for {:.2}s",
            self.mode, self.target, self.address, self.elapsed_s
        )?;
        writeln!(
            out,
            "  connects      {} attempted, {} ok ({}/s), {} failed",
            self.attempts, self.connected, self.connect_rate_per_s, self.failed
        )?;
        if !self.errors.is_empty() {
            writeln!(out, "  errors        {}", classes(&self.errors))?;
        }
        if let Some(connect) = &self.connect_us {
            writeln!(out, "  connect time  {}", percentiles_text(connect))?;
        }
        if let Some(hold) = &self.hold {
            write!(out, "  held          {} open at the end", hold.held)?;
            if !hold.lost.is_empty() {
                write!(out, "; lost while held: {}", classes(&hold.lost))?;
            }
            writeln!(out)?;
        }
        if let Some(req) = &self.requests {
            writeln!(
                out,
                "  requests      {} sent, {} ok ({}/s), {} failed",
                req.sent, req.ok, req.rate_per_s, req.failed
            )?;
            if !req.errors.is_empty() {
                writeln!(out, "  errors        {}", classes(&req.errors))?;
            }
            if let Some(reply) = &req.reply_us {
                writeln!(out, "  reply time    {}", percentiles_text(reply))?;
            }
            writeln!(out, "  by idle before use:")?;
            for bucket in &req.by_idle {
                write!(out, "    {:<12} {} uses", bucket.idle, bucket.uses)?;
                if bucket.failed > 0 {
                    write!(
                        out,
                        ", {} failed: {}",
                        bucket.failed,
                        classes(&bucket.errors)
                    )?;
                }
                writeln!(out)?;
            }
        }
        if let Some(kernel) = &self.kernel {
            for line in kernel.human() {
                writeln!(out, "  {line}")?;
            }
        }
        Ok(())
    }
}

/// `ECONNREFUSED 10, ETIMEDOUT 2`, most frequent first.
pub fn classes(map: &BTreeMap<Class, u64>) -> String {
    let mut sorted: Vec<_> = map.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    sorted
        .iter()
        .map(|(class, n)| format!("{class} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn class(name: &'static str) -> Class {
        Cow::Borrowed(name)
    }

    #[test]
    fn stress_micros_read_well() {
        assert_eq!(duration_ns(45_000), "45us");
        assert_eq!(duration_ns(20_150_000), "20.1ms");
    }

    #[test]
    fn stress_idle_buckets() {
        assert_eq!(idle_bucket(None), 0);
        assert_eq!(
            idle_label(idle_bucket(Some(Duration::from_millis(3)))),
            "<10ms"
        );
        assert_eq!(
            idle_label(idle_bucket(Some(Duration::from_millis(500)))),
            "100ms..1s"
        );
        assert_eq!(
            idle_label(idle_bucket(Some(Duration::from_secs(5)))),
            "5s..10s"
        );
        assert_eq!(
            idle_label(idle_bucket(Some(Duration::from_secs(600)))),
            ">=120s"
        );
        assert_eq!(idle_bucket(Some(Duration::MAX)), IDLE_BUCKETS - 1);
    }

    #[test]
    fn stress_tallies_merge_and_report() {
        let live = Live::new(4);
        for worker in 0..4 {
            live.with(worker, |t| {
                t.connect_ok(Duration::from_micros(100 * (worker as u64 + 1)));
                t.connect_failed(class("ECONNREFUSED"));
                t.request(None, Ok(Duration::from_micros(50)));
                t.request(Some(Duration::from_millis(500)), Err(class("ECONNRESET")));
            });
        }
        let total = live.total();
        assert_eq!(
            (
                total.attempts,
                total.connected,
                total.requests,
                total.replies
            ),
            (8, 4, 8, 4)
        );
        let report = Report::new(
            Mode::Pool,
            "lb:80",
            "198.18.0.2:80",
            Duration::from_secs(2),
            &total,
        );
        assert_eq!(report.failed, 4);
        assert_eq!(report.connect_rate_per_s, 2.0);
        let connect = report.connect_us.as_ref().unwrap();
        assert_eq!((connect.min_ns, connect.count), (100_000, 4));
        // Values share a bucket within 1% (2 significant digits).
        assert!((400_000..=404_000).contains(&connect.max_ns), "{connect:?}");
        let requests = report.requests.as_ref().unwrap();
        assert_eq!((requests.ok, requests.failed), (4, 4));
        assert_eq!(requests.by_idle.len(), 2);
        assert_eq!(requests.by_idle[1].idle, "100ms..1s");
        assert_eq!(requests.by_idle[1].errors[&class("ECONNRESET")], 4);

        let mut json = Vec::new();
        report.write(true, &mut json).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["errors"]["ECONNREFUSED"], 4);
        // Percentiles stay in whole microseconds in the JSON (docs/stress.md).
        assert_eq!(value["connect_us"]["min"], 100);
        assert_eq!(value["connect_us"]["count"], 4);
        // hdrhistogram averages bucket midpoints: within 1 % of 250 µs.
        let mean = value["connect_us"]["mean"].as_f64().unwrap();
        assert!((247.5..=252.5).contains(&mean), "{mean}");
        assert_eq!(value["requests"]["by_idle"][1]["failed"], 4);
        assert!(
            value.get("hold").is_none(),
            "hold section only in hold mode"
        );

        let mut human = Vec::new();
        report.write(false, &mut human).unwrap();
        let human = String::from_utf8(human).unwrap();
        assert!(
            human.contains("8 attempted, 4 ok (2/s), 4 failed"),
            "{human}"
        );
        assert!(human.contains("errors        ECONNREFUSED 4"), "{human}");
        assert!(
            human.contains("100ms..1s    4 uses, 4 failed: ECONNRESET 4"),
            "{human}"
        );
    }

    #[test]
    fn stress_classes_most_frequent_first() {
        let map = BTreeMap::from([
            (class("ECONNREFUSED"), 2),
            (class("ETIMEDOUT"), 7),
            (class("EOF"), 2),
        ]);
        assert_eq!(classes(&map), "ETIMEDOUT 7, ECONNREFUSED 2, EOF 2");
    }

    #[test]
    fn stress_progress_line() {
        let mut tally = Tally::default();
        tally.connect_ok(Duration::from_micros(120));
        tally.connect_failed(class("ETIMEDOUT"));
        let line = progress_line(Mode::Churn, Duration::from_secs(1), &tally);
        assert_eq!(line, "churn    1.0s  1 connects  1/s  1 failed  p99 120us");
    }
}
