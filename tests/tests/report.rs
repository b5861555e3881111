//! `diagnose --report FILE.html` on a real incident (HAProxy's idle
//! timeout killing pooled connections): the page is written safely, has
//! every section with a chart each, names the cause, loads nothing, and
//! headless Chromium renders it to a PNG that is not blank, with nothing
//! logged to the console.
//!
//! `TCPTRACE_REPORT_PNG=docs/report.png` keeps the rendered PNG (the
//! README's example).

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::PathBuf,
    time::Instant,
};

use tests::{
    Netns,
    browser::screenshot,
    diagnose::{Diagnose, assert_top, describe},
    haproxy::{IDLE_TIMEOUT_S, IdleTimeoutLb},
    require_root,
};

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 3000;

/// A directory of our own, removed at the end.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn html_report_of_an_lb_idle_timeout() {
    require_root();
    let t0 = Instant::now();
    let dir = TempDir(std::env::temp_dir().join(format!("tcptrace-report-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let page = dir.0.join("incident.html");
    let ns = Netns::new("report");
    let lb = IdleTimeoutLb::start(&ns);

    eprintln!("phase: haproxy up at {:.1} s", t0.elapsed().as_secs_f64());
    let diagnose = Diagnose::start_with(ns.name(), &["--report", page.to_str().unwrap()]);
    assert_eq!(
        lb.pooled_reuse_after_gap(&ns),
        3,
        "every reuse after the gap fails"
    );
    eprintln!("phase: traffic done at {:.1} s", t0.elapsed().as_secs_f64());
    let (report, _) = diagnose.finish();
    eprintln!(
        "phase: diagnose done at {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let top = assert_top(&report, "lb_idle_timeout");
    // The resets came after the pool's 3 s gap, within a moment of each
    // other.
    let (first, last) = (
        top["moments"]["first_s"].as_f64().unwrap(),
        top["moments"]["last_s"].as_f64().unwrap(),
    );
    assert!(
        first > 2.5 && last - first < 1.0,
        "moments {first} - {last}: {top:#}"
    );

    // Written as every file tcptrace writes: ours, 0600, a regular file.
    let meta = std::fs::symlink_metadata(&page).expect("the report was written");
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);
    let html = std::fs::read_to_string(&page).unwrap();

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
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "section {id}"
        );
    }
    assert_eq!(
        html.matches("<svg class=\"chart\"").count(),
        3,
        "a chart each for the timeline, idle times and connect latency"
    );
    assert!(html.contains("<code>lb_idle_timeout</code>"));
    assert!(html.contains("HIGH"));
    assert!(html.contains("haproxy"), "the closer is named");
    assert!(
        html.contains("idle timeout ≈"),
        "the inferred timeout is drawn"
    );
    assert!(
        html.lines().any(|l| l.trim() == "F1"),
        "the finding's moment is marked on the timeline"
    );
    assert!(html.contains("RSTs received per s"));
    // Self-contained: no script, no URL, no reference to load.
    assert!(!html.contains("<script"), "no script");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no URL"
    );
    assert!(
        !html.contains(" src=") && !html.contains("url("),
        "nothing to load"
    );
    for href in html.split("href=\"").skip(1) {
        assert!(href.starts_with('#'), "a link out of the page: {href:.60}");
    }

    let png = dir.0.join("incident.png");
    eprintln!("phase: checked at {:.1} s", t0.elapsed().as_secs_f64());
    let shot = screenshot(&page, &png, &dir.0.join("profile"), WIDTH, HEIGHT);
    assert!(
        shot.console.is_empty(),
        "the page logged to the console: {:?}",
        shot.console
    );
    eprintln!("phase: rendered at {:.1} s", t0.elapsed().as_secs_f64());
    let (width, height, luma) = decode(&png, &shot.stderr);
    assert_eq!((width, height), (WIDTH, HEIGHT));
    // Not blank: text, tables and bars make the luminance vary, and a fair
    // share of the page is not background.
    let n = luma.len() as f64;
    let mean = luma.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
    let variance = luma
        .iter()
        .map(|v| (f64::from(*v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let background = *luma.first().unwrap();
    let inked = luma.iter().filter(|v| v.abs_diff(background) > 40).count() as f64 / n;
    assert!(variance > 100.0, "luminance variance {variance:.1}: blank?");
    assert!(
        inked > 0.02,
        "only {:.2} % of the page is not background",
        inked * 100.0
    );
    if let Some(keep) = std::env::var_os("TCPTRACE_REPORT_PNG") {
        std::fs::copy(&png, &keep).expect("copy the PNG");
    }
    describe("html_report", &report, t0.elapsed().as_secs_f64());
    eprintln!(
        "report: {} bytes of HTML, PNG luminance variance {variance:.0}, {:.1} % inked; idle timeout {IDLE_TIMEOUT_S} s",
        html.len(),
        inked * 100.0
    );
}

/// The PNG's size and the luminance (0-255) of a sample of its pixels.
fn decode(path: &std::path::Path, chromium: &str) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("no screenshot at {} ({e}): {chromium}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let channels = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "{info:?}");
    // Every 5th pixel is plenty to tell a page from a blank one, and keeps
    // this unoptimised loop short.
    let luma = buf[..info.buffer_size()]
        .chunks(channels)
        .step_by(5)
        .map(|px| match px {
            [r, g, b, ..] => {
                ((u32::from(*r) * 299 + u32::from(*g) * 587 + u32::from(*b) * 114) / 1000) as u8
            }
            [gray, ..] => *gray,
            [] => 0,
        })
        .collect();
    (info.width, info.height, luma)
}
