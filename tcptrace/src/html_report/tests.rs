use serde_json::json;

use super::*;

/// A `diagnose --json` document as the HAProxy idle-timeout scenario
/// gives it, cut down.
fn haproxy_report() -> Value {
    json!({
        "v": 1, "type": "diagnose", "seconds": 5.3, "netns": "tt-lb-1",
        "events": 66, "events_received": 66, "events_produced": 66, "events_lost": 0,
        "missed_by_kernel": 0, "verdict": "problem",
        "findings": [{
            "cause": "lb_idle_timeout",
            "title": "Load balancer / middlebox idle timeout shorter than the client pool's idle time",
            "confidence": "high", "score": 3,
            "summary": "pid 30295 (python3) got 3 RSTs reusing connections to 127.0.0.1:8080",
            "evidence": ["3 RSTs received by pid 30295 (python3) in CLOSE_WAIT <b>"],
            "affected": [
                {"pid": 30295, "comm": "python3", "peer": "127.0.0.1:8080", "events": 3, "role": "client", "cgroup_id": 0, "cgroup": "/"},
                {"pid": 30226, "comm": "haproxy", "peer": "127.0.0.1:8080", "events": 3, "role": "closer", "cgroup_id": 0, "cgroup": null}
            ],
            "fix": ["Raise HAProxy's `timeout client` above the pool's idle time."],
            "figures": {"idle_timeout_s": 2.01, "resets": 3.0},
            "moments": {"first_s": 4.2, "last_s": 4.3}
        }, {
            "cause": "linger_zero_abort", "title": "Abortive close", "confidence": "low", "score": 1,
            "summary": "s", "evidence": [], "affected": [], "fix": [], "figures": {}, "moments": null
        }],
        "checked": ["idle timeouts: 3 RSTs on reuse after the peer closed"],
        "counters": {"TcpEstabResets": 3, "TcpExtTCPAbortOnData": 0},
        "sysctls": {"net.core.somaxconn": "4096"},
        "sockets_start": {"states": {"LISTEN": 2}, "time_wait_by_peer": [], "listeners": [{"local": "127.0.0.1:8080", "queued": 0, "limit": 4096}]},
        "sockets_end": {"states": {"LISTEN": 2, "TIME_WAIT": 3}, "time_wait_by_peer": [["127.0.0.1:8081", 3]], "listeners": []},
        "conntrack": {"loaded": true, "start": {"loaded": true, "count": 2, "max": 262144}, "end": {"loaded": true, "count": 5, "max": 262144}, "delta": {}},
        "host_global": {"start": {"orphans": 0, "tcp_max_orphans": 65536}, "end": {"orphans": 1, "tcp_max_orphans": 65536}},
        "processes": [{"pid": 30295, "comm": "python3", "connects": 3, "connect_failed": 0, "refused": 0,
            "rst_sent": {}, "rst_received": {"CLOSE_WAIT": 3}, "retransmits": {}, "syn_retransmits": 0,
            "synack_retransmits": 0, "timeout_aborts": 0, "drops": {}, "socket_errors": {"ECONNRESET": 3},
            "connect_latency": {"count": 3, "p50_ns": 60000, "p90_ns": 80000, "p99_ns": 80000, "max_ns": 80000},
            "idle_before_rst": null, "age_at_rst": null, "lifetime": null}],
        "peers": [{"peer": "127.0.0.1:8080", "processes": [30295, 0], "connects": 3, "rst_received": {"CLOSE_WAIT": 3}}],
        "scattered_resets": [{"address": "198.18.0.9", "rst_sent": 700, "rst_received": 0, "ports": 690}],
        "timeline": {"bucket_s": 1.0, "series": {"rst_sent": [0, 0, 0, 0, 1], "rst_received": [0, 0, 0, 0, 3],
            "retransmits": [0, 0, 0, 0, 0], "connect_failed": [], "drops": [], "socket_errors": [0, 0, 0, 0, 3]}},
        "distributions": {"connect_latency": [[60000, 2], [80000, 1]], "idle_before_rst": [],
            "peer_close_idle": [[2_005_000_000u64, 3]], "local_close_idle": [[2_007_000_000u64, 3]], "reuse_idle": [[3_001_000_000u64, 3]]},
        "missing": [], "load": null, "started_at": "2026-11-24T14:53:01.000000000Z", "kernel": "6.18.0",
        "filters": {"pid": null, "comm": null, "port": null, "netns": "tt-lb-1", "events": ["all"], "reuse_idle_ms": 500}
    })
}

#[test]
fn the_page_has_every_section_and_a_chart_each() {
    let page = render_json(&haproxy_report()).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"), "{}", &page[..100]);
    for id in [
        "findings",
        "timeline",
        "idle",
        "latency",
        "processes",
        "peers",
        "host",
        "method",
    ] {
        assert!(page.contains(&format!("<section id=\"{id}\">")), "{id}");
    }
    // Three charts: timeline, idle, latency.
    assert_eq!(page.matches("<svg class=\"chart\"").count(), 3, "{page}");
    assert!(page.contains("lb_idle_timeout"));
    assert!(
        page.contains("idle timeout ≈ 2.01s (F1)"),
        "the timeout on the idle chart"
    );
    assert!(
        page.lines().any(|l| l.trim() == "F1"),
        "the moment on the timeline"
    );
    assert!(
        page.contains("<code>timeout client</code>"),
        "backticks as code"
    );
    assert!(page.contains("198.18.0.9"), "scattered resets");
    assert!(page.contains("TcpEstabResets"));
    assert!(page.contains("6.18.0"));
    assert!(page.contains("RSTs received per s (peak 3)"));
    assert!(page.contains("None during the run: retransmits, failed connects, packets dropped."));
    if let Some(path) = std::env::var_os("TCPTRACE_REPORT_SAMPLE") {
        // For looking at the page while working on it.
        std::fs::write(path, &page).unwrap();
    }
}

#[test]
fn the_page_is_self_contained_and_escapes_what_processes_name() {
    let mut report = haproxy_report();
    report["findings"][0]["affected"][0]["comm"] = json!("<script>x</script>");
    let page = render_json(&report).unwrap();
    assert!(!page.contains("<script"), "no script, and comm escaped");
    assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"));
    assert!(page.contains("in CLOSE_WAIT &lt;b&gt;"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no URL"
    );
    assert!(!page.contains("url("), "no CSS fetch");
    assert!(!page.contains(" src="), "nothing embedded by reference");
    for href in page.split("href=\"").skip(1) {
        assert!(
            href.starts_with('#'),
            "only links within the page: {href:.40}"
        );
    }
    assert!(page.contains("default-src 'none'"));
    assert!(page.contains("prefers-color-scheme: dark"));
    assert!(page.contains("@media print"));
}

#[test]
fn a_report_without_problems_or_new_fields_still_renders() {
    // A document from before the pictures: no timeline, distributions,
    // peers, moments.
    let page = render_json(&json!({
        "v": 1, "type": "diagnose", "seconds": 2.0, "verdict": "no_problem",
        "findings": [], "checked": ["accept queues: +0"], "counters": {},
    }))
    .unwrap();
    assert!(page.contains("No problem found"));
    assert!(page.contains("This report has no timeline."));
    assert!(page.contains("No connect from this host completed"));
    assert!(!page.contains("<svg"));
    // A field of the wrong type is an error, not a panic.
    assert!(render_json(&json!({"seconds": "long"})).is_err());
}
