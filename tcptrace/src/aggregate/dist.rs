//! A latency/duration distribution: an hdrhistogram allocated on first
//! use, so the many groups that never see a value cost nothing.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Values are recorded in whole units of `unit_ns` (microseconds for
/// connect latency, milliseconds for idle and age) so that the histogram
/// stays small: two significant digits over up to a day.
#[derive(Debug, Clone)]
pub struct Dist {
    unit_ns: u64,
    hist: Option<Box<Histogram<u32>>>,
}

/// Percentiles in nanoseconds, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min_ns: u64,
    pub p10_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

impl Percentiles {
    /// True when the middle 80 % lie within ±`tolerance` of the median:
    /// a timeout, not chance, decided these values.
    pub fn clustered(&self, tolerance: f64) -> bool {
        let p50 = self.p50_ns as f64;
        p50 > 0.0
            && (self.p90_ns as f64) <= p50 * (1.0 + tolerance)
            && (self.p10_ns as f64) >= p50 * (1.0 - tolerance)
    }
}

impl Dist {
    pub const MICROS: u64 = 1_000;
    pub const MILLIS: u64 = 1_000_000;

    pub fn new(unit_ns: u64) -> Dist {
        Dist {
            unit_ns,
            hist: None,
        }
    }

    pub fn record(&mut self, ns: u64) {
        let hist = self.hist.get_or_insert_with(|| {
            // 1 unit .. 1 day; bounds are valid, so this cannot fail.
            let high = (86_400_000_000_000 / self.unit_ns).max(2);
            Box::new(Histogram::new_with_bounds(1, high, 2).expect("static histogram bounds"))
        });
        hist.saturating_record((ns / self.unit_ns).max(1));
    }

    pub fn count(&self) -> u64 {
        self.hist.as_ref().map_or(0, |h| h.len())
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    pub fn percentiles(&self) -> Option<Percentiles> {
        let h = self.hist.as_ref().filter(|h| !h.is_empty())?;
        let at = |q: f64| h.value_at_quantile(q) * self.unit_ns;
        // hdrhistogram reports bucket upper bounds; min/max are exact-ish.
        Some(Percentiles {
            count: h.len(),
            min_ns: h.min() * self.unit_ns,
            p10_ns: at(0.10),
            p50_ns: at(0.50),
            p90_ns: at(0.90),
            p99_ns: at(0.99),
            max_ns: h.max() * self.unit_ns,
        })
    }

    /// Values at or above `ns`.
    pub fn count_at_least(&self, ns: u64) -> u64 {
        self.hist.as_ref().map_or(0, |h| {
            let floor = ns / self.unit_ns;
            h.iter_recorded()
                .filter(|v| v.value_iterated_to() >= floor)
                .map(|v| u64::from(v.count_at_value()))
                .sum()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
