//! A latency/duration distribution: an hdrhistogram allocated on first
//! use, so the many groups that never see a value cost nothing; and the
//! one `Percentiles` every report takes from a histogram.
//!
//! A histogram is dense (10-16 KiB whatever it holds). The exporter keeps
//! a slice of figures per interval for its whole window, each slice with
//! dozens of distributions that will only be read again: those are
//! `seal`ed into the few buckets they use, and turned back into a
//! histogram when read.

use std::borrow::Cow;

use hdrhistogram::{Counter, Histogram};
use serde::Serialize;

/// Values are recorded in whole units of `unit_ns` (microseconds for
/// connect latency, milliseconds for idle and age) so that the histogram
/// stays small: two significant digits over up to a day.
#[derive(Debug, Clone)]
pub struct Dist {
    unit_ns: u64,
    store: Option<Store>,
}

/// Where a distribution's values are.
#[derive(Debug, Clone)]
enum Store {
    /// A histogram, to record into.
    Dense(Box<Histogram<u32>>),
    /// A sealed one: (value in units, count) of each bucket used,
    /// ascending; each value is its bucket's highest equivalent, so it
    /// falls in the same bucket when recorded again.
    Sealed(Box<[(u64, u64)]>),
}

/// Percentiles of a distribution of durations, in nanoseconds. Values
/// are hdrhistogram bucket bounds, so as precise as the histogram they
/// come from (two or three significant digits).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min_ns: u64,
    /// Mean, in nanoseconds.
    pub mean_ns: f64,
    /// 10th percentile.
    pub p10_ns: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Largest value.
    pub max_ns: u64,
}

impl Percentiles {
    /// The percentiles of `hist`, whose values are in units of `unit_ns`
    /// nanoseconds (1,000 for a histogram of microseconds); `None` when
    /// it is empty.
    pub fn of<T: Counter>(hist: &Histogram<T>, unit_ns: u64) -> Option<Percentiles> {
        if hist.is_empty() {
            return None;
        }
        let at = |q: f64| hist.value_at_quantile(q) * unit_ns;
        Some(Percentiles {
            count: hist.len(),
            min_ns: hist.min() * unit_ns,
            mean_ns: hist.mean() * unit_ns as f64,
            p10_ns: at(0.10),
            p50_ns: at(0.50),
            p90_ns: at(0.90),
            p99_ns: at(0.99),
            max_ns: hist.max() * unit_ns,
        })
    }

    /// True when the middle 80 % lie within ±`tolerance` of the median:
    /// a timeout, not chance, decided these values.
    pub fn clustered(&self, tolerance: f64) -> bool {
        let p50 = self.p50_ns as f64;
        p50 > 0.0
            && (self.p90_ns as f64) <= p50 * (1.0 + tolerance)
            && (self.p10_ns as f64) >= p50 * (1.0 - tolerance)
    }
}

/// `Percentiles` in whole microseconds, the shape `stress` reports use
/// (docs/stress.md): `count`, `min`, `mean` (one decimal), `p50`, `p90`,
/// `p99`, `max`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Micros {
    /// Values recorded.
    pub count: u64,
    /// Smallest, µs.
    pub min: u64,
    /// Mean, µs, one decimal.
    pub mean: f64,
    /// Median, µs.
    pub p50: u64,
    /// 90th percentile, µs.
    pub p90: u64,
    /// 99th percentile, µs.
    pub p99: u64,
    /// Largest, µs.
    pub max: u64,
}

impl Percentiles {
    /// The same figures in whole microseconds.
    pub fn micros(&self) -> Micros {
        Micros {
            count: self.count,
            min: self.min_ns / 1000,
            mean: (self.mean_ns / 100.0).round() / 10.0,
            p50: self.p50_ns / 1000,
            p90: self.p90_ns / 1000,
            p99: self.p99_ns / 1000,
            max: self.max_ns / 1000,
        }
    }
}

/// serde `serialize_with` for an `Option<Percentiles>` field shown in
/// microseconds (`null` when empty).
pub fn serialize_micros<S: serde::Serializer>(
    percentiles: &Option<Percentiles>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    percentiles.map(|p| p.micros()).serialize(serializer)
}

impl Dist {
    /// Record in microseconds (connect latency).
    pub const MICROS: u64 = 1_000;
    /// Record in milliseconds (idle times, ages, lifetimes).
    pub const MILLIS: u64 = 1_000_000;

    /// An empty distribution recording in units of `unit_ns`.
    pub fn new(unit_ns: u64) -> Dist {
        Dist {
            unit_ns,
            store: None,
        }
    }

    /// An empty histogram of this unit's bounds: 1 unit .. 1 day.
    fn empty_histogram(&self) -> Histogram<u32> {
        let high = (86_400_000_000_000 / self.unit_ns).max(2);
        // The bounds are valid, so this cannot fail.
        Histogram::new_with_bounds(1, high, 2).expect("static histogram bounds")
    }

    /// The histogram to record into (a sealed one is unsealed first).
    fn dense(&mut self) -> &mut Histogram<u32> {
        // Already a histogram is the usual case (every value recorded):
        // checked first, so recording moves nothing in and out of `store`.
        if !matches!(self.store, Some(Store::Dense(_))) {
            let hist = match self.store.take() {
                Some(Store::Sealed(buckets)) => {
                    let mut hist = Box::new(self.empty_histogram());
                    add_buckets(&mut hist, &buckets);
                    hist
                }
                _ => Box::new(self.empty_histogram()),
            };
            self.store = Some(Store::Dense(hist));
        }
        match &mut self.store {
            Some(Store::Dense(hist)) => hist,
            _ => unreachable!("just stored a histogram"),
        }
    }

    /// Its values as a histogram, to read; `None` while empty.
    fn histogram(&self) -> Option<Cow<'_, Histogram<u32>>> {
        match self.store.as_ref()? {
            Store::Dense(hist) => Some(Cow::Borrowed(hist)),
            Store::Sealed(buckets) => {
                let mut hist = self.empty_histogram();
                add_buckets(&mut hist, buckets);
                Some(Cow::Owned(hist))
            }
        }
    }

    /// Keeps only the buckets in use (a few hundred bytes instead of the
    /// histogram's 10-16 KiB), for a distribution that will only be read
    /// or merged from now on. Reading it stays exact; recording into it
    /// again unseals it.
    pub fn seal(&mut self) {
        if let Some(Store::Dense(hist)) = &self.store {
            let buckets: Box<[(u64, u64)]> = hist
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), u64::from(v.count_at_value())))
                .collect();
            self.store = Some(Store::Sealed(buckets));
        }
    }

    /// Records a duration in nanoseconds (at least one unit).
    pub fn record(&mut self, ns: u64) {
        self.record_n(ns, 1);
    }

    /// Records `n` durations of `ns` nanoseconds each.
    pub fn record_n(&mut self, ns: u64, n: u64) {
        if n == 0 {
            return;
        }
        let unit_ns = self.unit_ns;
        let hist = self.dense();
        // Saturating like `saturating_record`: a value beyond a day is
        // recorded as a day rather than refused.
        let value = (ns / unit_ns).clamp(1, hist.high());
        record_n(hist, value, n);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        match &self.store {
            None => 0,
            Some(Store::Dense(hist)) => hist.len(),
            Some(Store::Sealed(buckets)) => buckets.iter().map(|(_, n)| n).sum(),
        }
    }

    /// True before the first value.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// Its percentiles; `None` while empty.
    pub fn percentiles(&self) -> Option<Percentiles> {
        Percentiles::of(&*self.histogram()?, self.unit_ns)
    }

    /// Every value recorded, as (nanoseconds, count) ascending; each value
    /// is the highest equivalent of its histogram bucket (two significant
    /// digits), so the list stays short however many were recorded.
    pub fn values(&self) -> Vec<(u64, u64)> {
        self.histogram().map_or_else(Vec::new, |h| {
            h.iter_recorded()
                .map(|v| {
                    (
                        h.highest_equivalent(v.value_iterated_to()) * self.unit_ns,
                        u64::from(v.count_at_value()),
                    )
                })
                .collect()
        })
    }

    /// Adds every value of `other` (recorded in the same unit).
    pub fn merge(&mut self, other: &Dist) {
        debug_assert_eq!(self.unit_ns, other.unit_ns);
        match &other.store {
            None => {}
            Some(Store::Sealed(buckets)) => add_buckets(self.dense(), buckets),
            // Same bounds on both sides: adding cannot fail.
            Some(Store::Dense(theirs)) => match &mut self.store {
                None => self.store = Some(Store::Dense(theirs.clone())),
                _ => self.dense().add(&**theirs).expect("histograms of one unit"),
            },
        }
    }

    /// Values at or above `ns`.
    pub fn count_at_least(&self, ns: u64) -> u64 {
        self.histogram().map_or(0, |h| {
            let floor = ns / self.unit_ns;
            h.iter_recorded()
                .filter(|v| v.value_iterated_to() >= floor)
                .map(|v| u64::from(v.count_at_value()))
                .sum()
        })
    }
}

/// Records `n` values of `value` (in bounds), `u32::MAX` at a time.
fn record_n(hist: &mut Histogram<u32>, value: u64, n: u64) {
    let mut left = n;
    while left > 0 {
        let step = left.min(u64::from(u32::MAX));
        // In bounds, so this cannot fail.
        let _ = hist.record_n(value, step as u32);
        left -= step;
    }
}

/// Records a sealed distribution's buckets into a histogram of its unit.
fn add_buckets(hist: &mut Histogram<u32>, buckets: &[(u64, u64)]) {
    for (value, n) in buckets {
        record_n(hist, *value, *n);
    }
}

/// One bin of a histogram drawn on a log scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogBin {
    /// Lower bound, ns (included).
    pub low_ns: f64,
    /// Upper bound, ns (excluded).
    pub high_ns: f64,
    /// Values in it.
    pub count: u64,
}

/// `values` ((ns, count), as `Dist::values` gives them) counted in bins
/// of equal width on a log scale, `per_decade` bins per power of ten,
/// aligned on powers of ten, from the bin of the smallest value to the
/// bin of the largest. Empty for no values.
pub fn log_bins(values: &[(u64, u64)], per_decade: u32) -> Vec<LogBin> {
    let per_decade = f64::from(per_decade.max(1));
    let index = |ns: u64| ((ns.max(1) as f64).log10() * per_decade).floor() as i64;
    let (Some(low), Some(high)) = (
        values.iter().map(|v| index(v.0)).min(),
        values.iter().map(|v| index(v.0)).max(),
    ) else {
        return Vec::new();
    };
    let mut bins: Vec<LogBin> = (low..=high)
        .map(|i| LogBin {
            low_ns: 10f64.powf(i as f64 / per_decade),
            high_ns: 10f64.powf((i + 1) as f64 / per_decade),
            count: 0,
        })
        .collect();
    for (ns, count) in values {
        bins[(index(*ns) - low) as usize].count += count;
    }
    bins
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_log_bins() {
        let mut d = Dist::new(Dist::MILLIS);
        for ms in [2, 2, 2000, 2010, 30_000] {
            d.record(ms * 1_000_000);
        }
        let values = d.values();
        assert_eq!(values.iter().map(|v| v.1).sum::<u64>(), 5);
        assert_eq!(values[0], (2_000_000, 2));
        let bins = log_bins(&values, 2);
        // 2 ms .. 30 s, two bins a decade: 1-3.16 ms up to 10-31.6 s.
        assert_eq!(bins.len(), 9);
        assert_eq!(bins[0].count, 2);
        assert!(bins[0].low_ns <= 2e6 && 2e6 < bins[0].high_ns);
        assert_eq!(bins[6].count, 2, "{bins:?}");
        assert_eq!(bins[8].count, 1);
        assert!(log_bins(&[], 10).is_empty());
    }

    #[test]
    fn a_sealed_distribution_reads_and_merges_as_the_histogram_did() {
        let mut dense = Dist::new(Dist::MICROS);
        for us in [
            3,
            40,
            41,
            500,
            7_000,
            7_010,
            90_000,
            1_000_000,
            86_400_000_000_000,
        ] {
            dense.record(us * 1_000);
        }
        let mut sealed = dense.clone();
        sealed.seal();
        assert!(matches!(sealed.store, Some(Store::Sealed(_))));
        assert_eq!(sealed.count(), dense.count());
        assert_eq!(sealed.percentiles(), dense.percentiles());
        assert_eq!(sealed.values(), dense.values());
        assert_eq!(
            sealed.count_at_least(7_000_000),
            dense.count_at_least(7_000_000)
        );
        // Merged into an empty one, into a dense one, twice over.
        let mut merged = Dist::new(Dist::MICROS);
        merged.merge(&sealed);
        merged.merge(&dense);
        let mut twice = dense.clone();
        twice.merge(&dense);
        assert_eq!(merged.percentiles(), twice.percentiles());
        assert_eq!(merged.values(), twice.values());
        // Recording again unseals it, nothing lost.
        sealed.record(2_000);
        assert_eq!(sealed.count(), dense.count() + 1);
        let mut empty = Dist::new(Dist::MILLIS);
        empty.seal();
        assert!(empty.is_empty());
    }

    #[test]
    fn empty_until_recorded() {
        let d = Dist::new(Dist::MILLIS);
        assert!(d.is_empty());
        assert_eq!(d.percentiles(), None);
    }

    #[test]
    fn percentiles_and_clusters() {
        let mut d = Dist::new(Dist::MILLIS);
        for ms in [1990, 2000, 2000, 2010, 2020] {
            d.record(ms * 1_000_000);
        }
        let p = d.percentiles().unwrap();
        assert_eq!(p.count, 5);
        assert!((1_980_000_000..=2_030_000_000).contains(&p.p50_ns), "{p:?}");
        assert!(p.clustered(0.1));
        d.record(9_000_000_000);
        d.record(100_000_000);
        assert!(!d.percentiles().unwrap().clustered(0.1));
        assert_eq!(d.count_at_least(1_000_000_000), 6);
        let mut merged = Dist::new(Dist::MILLIS);
        merged.merge(&Dist::new(Dist::MILLIS));
        assert!(merged.is_empty());
        merged.merge(&d);
        merged.merge(&d);
        assert_eq!(merged.count(), 14);
        assert_eq!(
            merged.percentiles().unwrap().max_ns,
            d.percentiles().unwrap().max_ns
        );
    }
}

/// When the first and the last of some events happened (monotonic ns),
/// for telling one moment (a burst) from events spread over the run.
/// Empty until the first `record`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    /// The earliest moment recorded; 0 when none was.
    pub first_ns: u64,
    /// The latest moment recorded.
    pub last_ns: u64,
}

impl Span {
    /// Takes one moment in.
    pub fn record(&mut self, ns: u64) {
        if self.first_ns == 0 || ns < self.first_ns {
            self.first_ns = ns;
        }
        self.last_ns = self.last_ns.max(ns);
    }

    /// Takes another span's moments in.
    pub fn merge(&mut self, other: &Span) {
        if other.first_ns != 0 {
            self.record(other.first_ns);
            self.record(other.last_ns);
        }
    }

    /// Last minus first (0 for none or one moment).
    pub fn len_ns(&self) -> u64 {
        self.last_ns.saturating_sub(self.first_ns)
    }
}
