//! One scrape's text: every family as plain data, encoded in the
//! OpenMetrics text format by `prometheus-client` (names, `_total`,
//! units, escaping, `# EOF` are its business).

use std::collections::BTreeMap;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};

use super::series::{Family, HistFamily, Series, Workload};
use crate::{
    counts::Counts,
    diagnosis::finding::{Affected, Finding},
    event::EventKind,
};

/// A sample's labels, in order.
pub type Labels = Vec<(&'static str, String)>;

/// A sample's value.
#[derive(Debug, Clone)]
enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram {
        sum: f64,
        count: u64,
        /// (upper bound, values in that bucket), the last one +Inf.
        buckets: Vec<(f64, u64)>,
    },
}

#[derive(Debug, Clone)]
struct FamilyData {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

/// Every family of one scrape, in order.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    families: Vec<FamilyData>,
}

impl Exposition {
    fn family(
        &mut self,
        name: &'static str,
        help: &'static str,
        unit: Option<Unit>,
        kind: MetricType,
    ) -> &mut Vec<(Labels, Value)> {
        self.families.push(FamilyData {
            name,
            help,
            unit,
            kind,
            samples: Vec::new(),
        });
        &mut self.families.last_mut().expect("pushed").samples
    }

    /// The counter and histogram series.
    pub fn series(&mut self, series: &Series) {
        let mut by_family: BTreeMap<Family, Vec<(Labels, Value)>> = BTreeMap::new();
        for (key, (value, _)) in &series.counters {
            by_family
                .entry(key.family)
                .or_default()
                .push((key.labels(), Value::Counter(*value)));
        }
        for family in Family::ALL {
            let (name, help) = family.describe();
            let samples = by_family.remove(&family).unwrap_or_default();
            *self.family(name, help, None, MetricType::Counter) = samples;
        }
        for family in HistFamily::ALL {
            let (name, help, bounds) = family.describe();
            let samples = series
                .histograms
                .iter()
                .filter(|(k, _)| k.family == family)
                .map(|(key, (hist, _))| {
                    let mut buckets: Vec<(f64, u64)> = bounds
                        .iter()
                        .copied()
                        .zip(hist.per_bucket.iter().copied())
                        .collect();
                    buckets.push((f64::INFINITY, *hist.per_bucket.last().unwrap_or(&0)));
                    (
                        key.labels(),
                        Value::Histogram {
                            sum: hist.sum_s,
                            count: hist.count,
                            buckets,
                        },
                    )
                })
                .collect();
            *self.family(name, help, Some(Unit::Seconds), MetricType::Histogram) = samples;
        }
        let gauge = |v: usize| vec![(Labels::new(), Value::Gauge(v as f64))];
        let counter = |v: u64| vec![(Labels::new(), Value::Counter(v))];
        *self.family(
            "tcptrace_exporter_series",
            "counter and histogram series kept now (bounded by --max-series)",
            None,
            MetricType::Gauge,
        ) = gauge(series.len());
        *self.family(
            "tcptrace_exporter_series_expired",
            "series dropped after not moving for --window",
            None,
            MetricType::Counter,
        ) = counter(series.expired);
        *self.family(
            "tcptrace_exporter_series_capped",
            "counts put under process=\"other\", peer=\"other\" because --max-series was reached",
            None,
            MetricType::Counter,
        ) = counter(series.capped);
    }

    /// The session's accounting: received + lost = produced, by kind;
    /// hook runs skipped; the kernel's exact drop counts by reason.
    pub fn counts(&mut self, counts: &Counts, drop_reason: impl Fn(u32) -> String) {
        let per_kind = |values: &[u64]| -> Vec<(Labels, Value)> {
            EventKind::ALL
                .iter()
                .map(|k| {
                    (
                        vec![("kind", k.name().to_string())],
                        Value::Counter(values[k.index()]),
                    )
                })
                .collect()
        };
        *self.family(
            "tcptrace_events_received",
            "events read from the ring buffer, by kind",
            None,
            MetricType::Counter,
        ) = per_kind(&counts.received);
        *self.family(
            "tcptrace_events_produced",
            "events the kernel programs kept after filtering, by kind (received + lost once read)",
            None,
            MetricType::Counter,
        ) = per_kind(&counts.kernel.produced);
        *self.family(
            "tcptrace_events_lost",
            "events the ring buffer had no room for, by kind (counts are then lower bounds)",
            None,
            MetricType::Counter,
        ) = per_kind(&counts.kernel.lost);
        *self.family(
            "tcptrace_hook_runs_skipped",
            "hook runs the kernel skipped because the program was already running on that CPU (recursion_misses): events never produced",
            None,
            MetricType::Counter,
        ) = vec![(Labels::new(), Value::Counter(counts.missed_by_kernel()))];
        *self.family(
            "tcptrace_opens_counted_in_kernel",
            "successful opens (connects, accepted connections) counted in the kernel instead of sent as events",
            None,
            MetricType::Counter,
        ) = vec![(Labels::new(), Value::Counter(counts.kernel.counted))];
        *self.family(
            "tcptrace_count_map_full",
            "opens sent as events because the kernel's count map was full (nothing lost; the map is too small)",
            None,
            MetricType::Counter,
        ) = vec![(Labels::new(), Value::Counter(counts.kernel.count_map_full))];
        let mut drops = Vec::new();
        for (scope, by_reason) in [
            ("filtered", &counts.drops.in_scope),
            ("host", &counts.drops.host),
        ] {
            for (reason, n) in by_reason {
                drops.push((
                    vec![
                        ("reason", drop_reason(*reason)),
                        ("scope", scope.to_string()),
                    ],
                    Value::Counter(*n),
                ));
            }
        }
        *self.family(
            "tcptrace_kernel_drops",
            "TCP packets the kernel dropped, counted in the kernel by reason (exact even when events are lost; QUEUE_PURGE included): scope filtered = what the filters kept, host = every TCP drop",
            None,
            MetricType::Counter,
        ) = drops;
    }

    /// The findings of the latest evaluation, with who they are about.
    pub fn findings(
        &mut self,
        findings: &[Finding],
        window_s: f64,
        evaluations: u64,
        mut workload: impl FnMut(&Affected) -> Workload,
    ) {
        let mut present: BTreeMap<Labels, f64> = BTreeMap::new();
        let mut events: BTreeMap<Labels, f64> = BTreeMap::new();
        let mut figures: BTreeMap<Labels, f64> = BTreeMap::new();
        for finding in findings {
            let cause = ("cause", finding.cause.id().to_string());
            let affected: Vec<(Workload, String, &Affected)> = finding
                .affected
                .iter()
                .map(|a| (workload(a), affected_peer(a), a))
                .collect();
            for (who, peer, a) in &affected {
                let mut labels = vec![
                    cause.clone(),
                    ("confidence", finding.confidence.name().to_string()),
                    ("role", a.role.to_string()),
                ];
                labels.extend(who.labels());
                labels.push(("peer", peer.clone()));
                // Two findings of one cause about the same process: the
                // higher ranked (first) one speaks.
                present.entry(labels.clone()).or_insert(1.0);
                events.entry(labels).or_insert(a.events as f64);
            }
            if affected.is_empty() {
                let mut labels = vec![
                    cause.clone(),
                    ("confidence", finding.confidence.name().to_string()),
                    ("role", String::new()),
                ];
                labels.extend(Workload::default().labels());
                labels.push(("peer", String::new()));
                present.entry(labels).or_insert(1.0);
            }
            // The figures belong to the finding: labelled with its first
            // (most involved) process.
            let (primary, peer) = affected.first().map_or_else(
                || (Workload::default(), String::new()),
                |(w, p, _)| (w.clone(), p.clone()),
            );
            for (figure, value) in &finding.figures {
                let mut labels = vec![
                    cause.clone(),
                    ("confidence", finding.confidence.name().to_string()),
                    ("figure", figure.to_string()),
                ];
                labels.extend(primary.labels());
                labels.push(("peer", peer.clone()));
                figures.entry(labels).or_insert(*value);
            }
        }
        let gauges = |m: BTreeMap<Labels, f64>| -> Vec<(Labels, Value)> {
            m.into_iter().map(|(l, v)| (l, Value::Gauge(v))).collect()
        };
        *self.family(
            "tcptrace_finding",
            "1 for each process a diagnosis finding of the last --window is about: cause, confidence, its role (client, server, closer, ...) and who it is",
            None,
            MetricType::Gauge,
        ) = gauges(present);
        *self.family(
            "tcptrace_finding_events",
            "events of the finding's cause that involve that process",
            None,
            MetricType::Gauge,
        ) = gauges(events);
        *self.family(
            "tcptrace_finding_figure",
            "the evidence of a finding as figures (idle_timeout_s, resets, ...; docs/diagnose.md), labelled with its confidence and its most involved process",
            None,
            MetricType::Gauge,
        ) = gauges(figures);
        *self.family(
            "tcptrace_findings_window",
            "how far back the findings look now (reaches --window after that long)",
            Some(Unit::Seconds),
            MetricType::Gauge,
        ) = vec![(Labels::new(), Value::Gauge(window_s))];
        *self.family(
            "tcptrace_findings_evaluations",
            "times the diagnosis rules ran",
            None,
            MetricType::Counter,
        ) = vec![(Labels::new(), Value::Counter(evaluations))];
    }

    /// The text: OpenMetrics, `# EOF` at the end.
    pub fn encode(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("encoding into a String");
        text
    }
}

/// The peer of an affected process as a label: its top peer
/// (address:port, or the address alone for many client ports).
fn affected_peer(a: &Affected) -> String {
    a.peer.map_or_else(String::new, super::series::peer_label)
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            let mut metric = encoder.encode_descriptor(
                family.name,
                family.help,
                family.unit.as_ref(),
                family.kind,
            )?;
            for (labels, value) in &family.samples {
                let mut sample = metric.encode_family(labels)?;
                match value {
                    Value::Counter(v) => sample.encode_counter::<NoLabelSet, _, u64>(v, None)?,
                    Value::Gauge(v) => sample.encode_gauge(v)?,
                    Value::Histogram {
                        sum,
                        count,
                        buckets,
                    } => sample.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        aggregate::testing::names,
        diagnosis::finding::{Cause, Confidence},
        event::Comm,
        exporter::series::Limits,
        tally::{Measure, Signal, Tally, Who},
    };

    #[test]
    fn a_scrape_is_valid_openmetrics() {
        let mut series = Series::new(Limits {
            top_processes: 10,
            top_peers: 10,
            max_series: 100,
            ttl: Duration::from_secs(60),
        });
        let mut tally = Tally::default();
        let who = Who {
            pid: 7,
            comm: Comm::from("python3"),
            cgroup_id: 1,
        };
        let peer = "10.0.0.5:8090".parse().unwrap();
        tally.count(who, peer, Signal::RstReceived { state: Some(8) }, 3);
        tally.record(who, peer, Measure::ConnectLatency, 250_000);
        series.fold(&tally, &names(), |w| Workload {
            process: w.comm.to_string(),
            namespace: "shop".into(),
            pod: "checkout-1".into(),
            container: "app".into(),
        });
        let mut finding = Finding::new(
            Cause::ServerKeepaliveTimeout,
            Confidence::High,
            3,
            "x".into(),
        );
        finding.figures.insert("idle_timeout_s", 1.0);
        finding.affected.push(Affected {
            pid: 7,
            comm: "python3".into(),
            peer: Some(peer),
            events: 3,
            role: "client",
            cgroup_id: 1,
            cgroup: None,
        });
        let mut counts = Counts::default();
        counts.received[EventKind::RstReceived.index()] = 3;
        counts.kernel.produced[EventKind::RstReceived.index()] = 3;
        let mut exposition = Exposition::default();
        exposition.series(&series);
        exposition.counts(&counts, |r| format!("R{r}"));
        exposition.findings(&[finding], 300.0, 2, |a| Workload {
            process: a.comm.clone(),
            ..Workload::default()
        });
        let text = exposition.encode();
        for line in [
            "# TYPE tcptrace_resets counter",
            r#"tcptrace_resets_total{direction="received",reason="",state="CLOSE_WAIT",process="python3",namespace="shop",pod="checkout-1",container="app",peer="10.0.0.5:8090"} 3"#,
            "# TYPE tcptrace_connect_latency_seconds histogram",
            "# UNIT tcptrace_connect_latency_seconds seconds",
            r#"tcptrace_connect_latency_seconds_bucket{le="0.00025",process="python3",namespace="shop",pod="checkout-1",container="app",peer="10.0.0.5:8090"} 1"#,
            r#"tcptrace_connect_latency_seconds_count{process="python3",namespace="shop",pod="checkout-1",container="app",peer="10.0.0.5:8090"} 1"#,
            r#"tcptrace_events_received_total{kind="rst_received"} 3"#,
            r#"tcptrace_finding{cause="server_keepalive_timeout",confidence="high",role="client",process="python3",namespace="",pod="",container="",peer="10.0.0.5:8090"} 1.0"#,
            r#"tcptrace_finding_figure{cause="server_keepalive_timeout",confidence="high",figure="idle_timeout_s",process="python3",namespace="",pod="",container="",peer="10.0.0.5:8090"} 1.0"#,
            "tcptrace_findings_evaluations_total 2",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
