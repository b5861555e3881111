//! The report's charts, drawn with plotters' SVG backend: the incident
//! timeline, the idle times around a timeout, and connect latency.
//!
//! Readable without colour: each series is a panel of its own with its
//! name written in it (small multiples), moments and timeouts are dashed
//! lines with a text label. Colours are fixed sentinels that the page's
//! CSS maps to its light, dark and print palettes (an SVG presentation
//! attribute yields to CSS), so the charts follow the page's theme. Text
//! is written as SVG `<text>` (plotters' built-in layout, no font files).

use std::error::Error;

use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use crate::{aggregate::log_bins, timefmt::duration_ns};

/// Axes, labels and text; the CSS maps it to the page's text colour.
pub const FG: RGBColor = RGBColor(0, 0, 0);
/// Grid lines; mapped to the page's grid colour.
pub const GRID: RGBColor = RGBColor(0xCC, 0xCC, 0xCC);
/// Bands that mark a finding's moments.
pub const BAND: RGBColor = RGBColor(0x88, 0x88, 0x88);
/// Series colours (Okabe-Ito, distinguishable with colour-blindness);
/// remapped by the CSS for dark pages.
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0x56, 0xB4, 0xE9),
];

/// Width of every chart, px (scaled to the page by CSS).
const WIDTH: u32 = 960;
const FONT: &str = "sans-serif";

type Result<T> = std::result::Result<T, Box<dyn Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// One panel of counts per bucket of time.
pub struct Counts<'a> {
    /// What is counted, as the panel says it.
    pub label: String,
    /// Counts per bucket from the start.
    pub counts: &'a [u64],
    /// Index into `PALETTE`.
    pub colour: usize,
}

/// A span of time (a finding's first and last event) or an instant.
pub struct Mark {
    /// Its label (`F1`, `idle timeout 2.0 s (F1)`).
    pub label: String,
    /// Start, s (a duration, for the idle and latency charts).
    pub from_s: f64,
    /// End, s.
    pub to_s: f64,
}

/// A distribution as (ns, count) values.
pub struct Values<'a> {
    /// What is measured, as the panel says it.
    pub label: String,
    /// The values.
    pub values: &'a [(u64, u64)],
    /// Index into `PALETTE`.
    pub colour: usize,
}

fn text(size: u32) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).color(&FG)
}

fn top_left(size: u32) -> TextStyle<'static> {
    text(size).pos(Pos::new(HPos::Left, VPos::Top))
}

/// Draws into an SVG of `height` px and returns its markup.
fn svg(height: u32, draw: impl FnOnce(&Area) -> Result<()>) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        draw(&root)?;
        root.present()?;
    }
    Ok(out)
}

/// Seconds on a time axis: `12 s`, `5 min`, `2 h`.
fn clock_label(s: f64) -> String {
    if s >= 7200.0 {
        format!("{:.0} h", s / 3600.0)
    } else if s >= 300.0 {
        format!("{:.0} min", s / 60.0)
    } else if s.fract().abs() < 1e-9 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

/// A duration on a log axis: `100us`, `1s`.
fn duration_label(s: f64) -> String {
    duration_ns((s * 1e9).round() as u64)
}

fn nice_max(peak: f64) -> f64 {
    // Headroom above the highest bar for the panel's name.
    (peak * 1.5).max(1.0)
}

/// Incidents per bucket, one panel per series, with each mark drawn as
/// a band across every panel and labelled in the first.
pub fn timeline(panels: &[Counts], bucket_s: f64, run_s: f64, marks: &[Mark]) -> Result<String> {
    const PANEL: u32 = 96;
    const AXIS: u32 = 44;
    let buckets = panels.iter().map(|p| p.counts.len()).max().unwrap_or(0);
    let x_max = (buckets as f64 * bucket_s).max(run_s).max(1.0);
    let per = if bucket_s == 1.0 {
        "s".to_string()
    } else {
        clock_label(bucket_s)
    };
    svg(PANEL * panels.len() as u32 + AXIS, |root| {
        let mut rest = root.clone();
        for (i, panel) in panels.iter().enumerate() {
            let last = i + 1 == panels.len();
            let (area, below) = if last {
                (rest.clone(), rest.clone())
            } else {
                rest.split_vertically(PANEL)
            };
            rest = below;
            let peak = panel.counts.iter().copied().max().unwrap_or(0);
            let y_max = nice_max(peak as f64);
            let mut chart = ChartBuilder::on(&area)
                .margin_top(NAME)
                .margin_right(20)
                .y_label_area_size(Y_LABELS)
                .x_label_area_size(if last { AXIS } else { 0 })
                .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
            let mut mesh = chart.configure_mesh();
            mesh.y_labels(3)
                .x_labels(12)
                .y_label_formatter(&|v| format!("{v:.0}"))
                .x_label_formatter(&|v| clock_label(*v))
                .axis_style(FG)
                .bold_line_style(GRID)
                .light_line_style(TRANSPARENT)
                .label_style(text(16));
            if last {
                mesh.x_desc("time since tracing started")
                    .axis_desc_style(text(16));
            }
            mesh.draw()?;
            let colour = PALETTE[panel.colour % PALETTE.len()];
            chart.draw_series(
                panel
                    .counts
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(b, c)| {
                        let x0 = b as f64 * bucket_s;
                        Rectangle::new(
                            [(x0, 0.0), (x0 + bucket_s * 0.85, *c as f64)],
                            colour.filled(),
                        )
                    }),
            )?;
            for (m, mark) in marks.iter().enumerate() {
                let to = mark.to_s.max(mark.from_s + bucket_s * 0.1);
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(mark.from_s, 0.0), (to, y_max)],
                    BAND.mix(0.3).filled(),
                )))?;
                for x in [mark.from_s, to] {
                    chart.draw_series(DashedLineSeries::new(
                        [(x, 0.0), (x, y_max)],
                        4,
                        3,
                        FG.stroke_width(1),
                    ))?;
                }
                if i == 0 {
                    let y = y_max * (1.0 - 0.22 * (m % 4) as f64);
                    let (x, anchor, label) = if to / x_max > 0.8 {
                        (mark.from_s, HPos::Right, format!("{} ", mark.label))
                    } else {
                        (to, HPos::Left, format!(" {}", mark.label))
                    };
                    chart.draw_series(std::iter::once(Text::new(
                        label,
                        (x, y),
                        text(16).pos(Pos::new(anchor, VPos::Top)),
                    )))?;
                }
            }
            name(&area, &format!("{} per {per} (peak {peak})", panel.label))?;
        }
        Ok(())
    })
}

/// Space above a panel's plot for its name.
const NAME: u32 = 24;
/// Width of the count labels left of a plot.
const Y_LABELS: u32 = 56;

/// Writes a panel's name above its plot.
fn name(area: &Area, name: &str) -> Result<()> {
    area.draw(&Text::new(
        name.to_string(),
        (Y_LABELS as i32 + 4, 4),
        top_left(18),
    ))?;
    Ok(())
}

/// The range, in seconds, a log axis needs for `values` and `marks`.
fn log_range(values: &[&[(u64, u64)]], marks: &[Mark]) -> Option<(f64, f64)> {
    let all = values
        .iter()
        .flat_map(|v| v.iter().map(|(ns, _)| *ns as f64 / 1e9))
        .chain(marks.iter().flat_map(|m| [m.from_s, m.to_s]))
        .filter(|s| *s > 0.0);
    let (low, high) = all.fold((f64::MAX, 0f64), |(lo, hi), s| (lo.min(s), hi.max(s)));
    (high > 0.0).then(|| {
        // A decade's fraction of room either side, and at least one decade.
        let low = low / 1.6;
        let high = (high * 1.6).max(low * 10.0);
        (low, high)
    })
}

/// Histograms of durations on one log axis, `per_decade` bins per power
/// of ten, one panel each, with each mark drawn as a dashed line (a band
/// for a range) labelled in the first panel. `None` when there is no
/// value at all.
pub fn durations(
    panels: &[Values],
    marks: &[Mark],
    x_desc: &str,
    per_decade: u32,
) -> Result<Option<String>> {
    const PANEL: u32 = 120;
    const AXIS: u32 = 46;
    let panels: Vec<&Values> = panels.iter().filter(|p| !p.values.is_empty()).collect();
    let all: Vec<&[(u64, u64)]> = panels.iter().map(|p| p.values).collect();
    let Some((x_low, x_high)) = log_range(&all, marks) else {
        return Ok(None);
    };
    svg(PANEL * panels.len() as u32 + AXIS, |root| {
        let mut rest = root.clone();
        for (i, panel) in panels.iter().enumerate() {
            let last = i + 1 == panels.len();
            let (area, below) = if last {
                (rest.clone(), rest.clone())
            } else {
                rest.split_vertically(PANEL)
            };
            rest = below;
            let bins = log_bins(panel.values, per_decade);
            let peak = bins.iter().map(|b| b.count).max().unwrap_or(0);
            let total: u64 = panel.values.iter().map(|v| v.1).sum();
            let y_max = nice_max(peak as f64);
            let mut chart = ChartBuilder::on(&area)
                .margin_top(NAME)
                .margin_right(20)
                .y_label_area_size(Y_LABELS)
                .x_label_area_size(if last { AXIS } else { 0 })
                .build_cartesian_2d(
                    (x_low..x_high)
                        .log_scale()
                        .with_key_points(log_ticks(x_low, x_high)),
                    0f64..y_max,
                )?;
            let mut mesh = chart.configure_mesh();
            mesh.y_labels(3)
                .y_label_formatter(&|v| format!("{v:.0}"))
                .x_label_formatter(&|v| duration_label(*v))
                .axis_style(FG)
                .bold_line_style(GRID)
                .light_line_style(TRANSPARENT)
                .label_style(text(16));
            if last {
                mesh.x_desc(x_desc).axis_desc_style(text(16));
            }
            mesh.draw()?;
            let colour = PALETTE[panel.colour % PALETTE.len()];
            chart.draw_series(bins.iter().filter(|b| b.count > 0).map(|b| {
                let (low, high) = (b.low_ns / 1e9, b.high_ns / 1e9);
                // A thin gap between bars, equal on the log scale.
                let high = low * (high / low).powf(0.9);
                Rectangle::new([(low, 0.0), (high, b.count as f64)], colour.filled())
            }))?;
            for (m, mark) in marks.iter().enumerate() {
                if mark.to_s > mark.from_s {
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(mark.from_s, 0.0), (mark.to_s, y_max)],
                        BAND.mix(0.3).filled(),
                    )))?;
                }
                for x in [mark.from_s, mark.to_s] {
                    chart.draw_series(DashedLineSeries::new(
                        [(x, 0.0), (x, y_max)],
                        6,
                        4,
                        FG.stroke_width(2),
                    ))?;
                }
                if i == 0 {
                    let y = y_max * (1.0 - 0.22 * (m % 4) as f64);
                    let at = (mark.to_s / x_low).ln() / (x_high / x_low).ln();
                    let (x, anchor, label) = if at > 0.6 {
                        (mark.from_s, HPos::Right, format!("{} ", mark.label))
                    } else {
                        (mark.to_s, HPos::Left, format!(" {}", mark.label))
                    };
                    chart.draw_series(std::iter::once(Text::new(
                        label,
                        (x, y),
                        text(16).pos(Pos::new(anchor, VPos::Top)),
                    )))?;
                }
            }
            name(&area, &format!("{} (n={total})", panel.label))?;
        }
        Ok(())
    })
    .map(Some)
}

/// Tick marks for a log axis from `low` to `high`: 1-2-5 steps on a
/// range of up to three decades, powers of ten beyond.
fn log_ticks(low: f64, high: f64) -> Vec<f64> {
    let (first, last) = (low.log10().floor() as i32, high.log10().ceil() as i32);
    let steps: &[f64] = if last - first <= 3 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    (first..=last)
        .flat_map(|d| steps.iter().map(move |m| m * 10f64.powi(d)))
        .filter(|t| (low..=high).contains(t))
        .collect()
}

/// The value at quantile `q` (0..1) of (ns, count) values sorted by ns.
pub fn quantile_ns(values: &[(u64, u64)], q: f64) -> Option<u64> {
    let total: u64 = values.iter().map(|v| v.1).sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    values.iter().find_map(|(ns, n)| {
        seen += n;
        (seen >= rank).then_some(*ns)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_labels() {
        let counts = [0, 3, 0, 1];
        let svg = timeline(
            &[Counts {
                label: "RSTs received".into(),
                counts: &counts,
                colour: 1,
            }],
            1.0,
            5.0,
            &[Mark {
                label: "F1".into(),
                from_s: 1.2,
                to_s: 3.4,
            }],
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("RSTs received per s (peak 3)"), "{svg}");
        assert!(svg.lines().any(|l| l.trim() == "F1"), "{svg}");
        assert!(svg.contains("#0072B2"), "the series colour");
        // Two bars, the band, dashed lines as paths.
        assert!(svg.matches("<rect").count() >= 3, "{svg}");

        let idle = [(2_000_000_000, 3), (3_000_000_000, 1)];
        let svg = durations(
            &[Values {
                label: "idle".into(),
                values: &idle,
                colour: 0,
            }],
            &[Mark {
                label: "idle timeout 2.0 s".into(),
                from_s: 2.0,
                to_s: 2.0,
            }],
            "idle time",
            10,
        )
        .unwrap()
        .unwrap();
        assert!(svg.contains("idle (n=4)"), "{svg}");
        assert!(svg.contains("idle timeout 2.0 s"), "{svg}");
        assert!(
            svg.contains("\n2s\n") && svg.contains("\n5s\n"),
            "log labels: {svg}"
        );
        assert!(durations(&[], &[], "x", 10).unwrap().is_none());
    }

    #[test]
    fn quantiles_of_values() {
        let v = [(1, 50), (10, 40), (100, 10)];
        assert_eq!(quantile_ns(&v, 0.5), Some(1));
        assert_eq!(quantile_ns(&v, 0.9), Some(10));
        assert_eq!(quantile_ns(&v, 0.99), Some(100));
        assert_eq!(quantile_ns(&[], 0.5), None);
        assert_eq!(log_ticks(1.25, 12.5), vec![2.0, 5.0, 10.0]);
        assert_eq!(log_ticks(1e-5, 100.0).len(), 8);
    }
}
