//! SVG charts (plotters' SVG backend): the line chart and stacked bars every plot is drawn
//! with, the `explain --svg FILE` plot, and writing plots into a directory. Pure rendering:
//! nothing here reads the kernel. The plots of run records (`run … --svg DIR`, `report FILE
//! --svg DIR`) belong to their experiments ([`crate::experiment::plots`]).
//!
//! Every plot has a title naming what it shows, axes labelled with units, a legend, on white.

use std::path::Path;

use crate::explain::ExplainReport;
use plotters::prelude::*;

/// Why a plot could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// plotters failed to draw.
    #[error(transparent)]
    Draw(#[from] DrawingAreaErrorKind<std::io::Error>),
    /// The output directory or a file in it was refused or could not be written.
    #[error(transparent)]
    Write(#[from] crate::safefs::SafeFsError),
}

const SIZE: (u32, u32) = (960, 540);
/// Bytes per MiB, for the axes.
pub const MIB: f64 = 1048576.0;

/// One line of a line chart.
pub struct Series {
    /// Its legend entry.
    pub name: String,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
}

fn color(i: usize) -> RGBColor {
    // Distinguishable on white (Tableau 10).
    const C: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = C[i % C.len()];
    RGBColor(r, g, b)
}

fn range(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    lo = lo.min(0.0);
    if hi <= lo {
        hi = lo + 1.0;
    }
    let pad = (hi - lo) * 0.05;
    (lo - if lo < 0.0 { pad } else { 0.0 }, hi + pad)
}

/// A line chart; `marks` are vertical lines at x with a label (e.g. the OOM kill); `hlines`
/// horizontal ones.
pub fn line_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    marks: &[(f64, String)],
    hlines: &[(f64, String)],
) -> Result<String, PlotError> {
    // Counted x axes (iterations, indices) label whole numbers only.
    let integer_x = series
        .iter()
        .flat_map(|s| s.points.iter())
        .all(|p| (p.0 - p.0.round()).abs() < 1e-9);
    let (x0, x1) = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (y0, y1) = range(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(hlines.iter().map(|h| h.0)),
    );
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 18))?;
        let mut c = ChartBuilder::on(&root)
            .margin(16)
            .margin_right(LEGEND_WIDTH)
            .x_label_area_size(44)
            .y_label_area_size(80)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        let whole = |x: &f64| {
            if (x - x.round()).abs() < 1e-9 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        };
        let plain = |x: &f64| format!("{x}");
        c.configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .light_line_style(WHITE.mix(0.0))
            .x_label_formatter(if integer_x { &whole } else { &plain })
            .draw()?;
        let mut entries = Vec::new();
        for (i, s) in series.iter().enumerate() {
            let col = color(i);
            c.draw_series(LineSeries::new(
                s.points.iter().copied(),
                col.stroke_width(2),
            ))?;
            c.draw_series(s.points.iter().map(|&p| Circle::new(p, 2, col.filled())))?;
            entries.push((s.name.clone(), Swatch::Line(col)));
        }
        for (i, (y, name)) in hlines.iter().enumerate() {
            let col = color(series.len() + i);
            c.draw_series(DashedLineSeries::new(
                [(x0, *y), (x1, *y)],
                6,
                4,
                col.stroke_width(2),
            ))?;
            entries.push((name.clone(), Swatch::Line(col)));
        }
        for (x, name) in marks {
            c.draw_series(LineSeries::new([(*x, y0), (*x, y1)], RED.stroke_width(2)))?;
            entries.push((name.clone(), Swatch::Mark(RED)));
        }
        legend(&root, &entries)?;
        root.present()?;
    }
    Ok(out)
}

/// Room on the right for the legend, outside the plotted data.
const LEGEND_WIDTH: u32 = 270;

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
enum Swatch {
    Line(RGBColor),
    Mark(RGBColor),
    Box(RGBColor),
}

/// Draws the legend in the room right of the plot, where it hides no data.
fn legend(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    entries: &[(String, Swatch)],
) -> Result<(), PlotError> {
    let x = (root.dim_in_pixel().0 - LEGEND_WIDTH + 24) as i32;
    for (i, (name, sw)) in entries.iter().enumerate() {
        let y = 60 + 20 * i as i32;
        match *sw {
            Swatch::Line(c) => root.draw(&PathElement::new(
                vec![(x, y), (x + 22, y)],
                c.stroke_width(3),
            ))?,
            Swatch::Mark(c) => root.draw(&PathElement::new(
                vec![(x + 11, y - 7), (x + 11, y + 7)],
                c.stroke_width(3),
            ))?,
            Swatch::Box(c) => root.draw(&Rectangle::new(
                [(x + 4, y - 6), (x + 18, y + 6)],
                c.filled(),
            ))?,
        }
        let short: String = name.chars().take(30).collect();
        root.draw(&Text::new(
            short,
            (x + 30, y - 7),
            ("sans-serif", 13).into_font(),
        ))?;
    }
    Ok(())
}

/// A stacked bar chart: one bar per category, one segment per entry of `segments`
/// (name, value per category); positive values stack up from 0, negative ones down.
pub fn stacked_bars(
    title: &str,
    y_desc: &str,
    categories: &[String],
    segments: &[(String, Vec<f64>)],
) -> Result<String, PlotError> {
    let n = categories.len().max(1);
    let mut tops = vec![(0.0f64, 0.0f64); n];
    for (_, vals) in segments {
        for (i, v) in vals.iter().enumerate().take(n) {
            if *v >= 0.0 {
                tops[i].0 += v;
            } else {
                tops[i].1 += v;
            }
        }
    }
    let (y0, y1) = range(tops.iter().flat_map(|t| [t.0, t.1]));
    let mut out = String::new();
    {
        // Wide enough that every category's name fits under its bar.
        let width = SIZE.0.max(150 * n as u32 + LEGEND_WIDTH + 120);
        let root = SVGBackend::with_string(&mut out, (width, SIZE.1)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 18))?;
        let mut c = ChartBuilder::on(&root)
            .margin(16)
            .margin_right(LEGEND_WIDTH)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), y0..y1)?;
        // Category names under their bars, shortened to the bar's width.
        let room = ((width - LEGEND_WIDTH - 120) as usize / n / 7).max(4);
        let label = |x: &f64| {
            let i = x.round();
            if (x - i).abs() > 1e-6 || i < 0.0 {
                return String::new();
            }
            let name = categories.get(i as usize).cloned().unwrap_or_default();
            if name.chars().count() > room {
                let keep: String = name.chars().take(room.saturating_sub(1)).collect();
                format!("{keep}…")
            } else {
                name
            }
        };
        c.configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE.mix(0.0))
            .x_labels(n)
            .x_label_formatter(&label)
            .y_desc(y_desc)
            .draw()?;
        let mut entries = Vec::new();
        let mut up = vec![0.0f64; n];
        let mut down = vec![0.0f64; n];
        for (k, (name, vals)) in segments.iter().enumerate() {
            let col = color(k);
            let mut rects = Vec::new();
            for (i, v) in vals.iter().enumerate().take(n) {
                if *v == 0.0 {
                    continue;
                }
                let (a, b) = if *v > 0.0 {
                    let a = up[i];
                    up[i] += v;
                    (a, up[i])
                } else {
                    let a = down[i];
                    down[i] += v;
                    (down[i], a)
                };
                let x = i as f64;
                rects.push(Rectangle::new([(x - 0.35, a), (x + 0.35, b)], col.filled()));
            }
            c.draw_series(rects)?;
            entries.push((name.clone(), Swatch::Box(col)));
        }
        legend(&root, &entries)?;
        root.present()?;
    }
    Ok(out)
}

/// The ledger of an `explain` report: one stacked bar per term, split by CPU.
pub fn explain_plot(r: &ExplainReport) -> Result<String, PlotError> {
    let cats: Vec<String> = r.terms.iter().map(|t| t.term.clone()).collect();
    let ps = r.page_size as f64;
    let cpus = r.terms.iter().map(|t| t.per_cpu.len()).max().unwrap_or(0);
    let mut segs: Vec<(String, Vec<f64>)> = vec![(
        "flushed + pending (tree)".into(),
        r.terms
            .iter()
            .map(|t| (t.bytes as f64 - t.per_cpu.iter().sum::<i64>() as f64 * ps) / MIB)
            .collect(),
    )];
    for cpu in 0..cpus {
        segs.push((
            format!("cpu{cpu}"),
            r.terms
                .iter()
                .map(|t| t.per_cpu.get(cpu).copied().unwrap_or(0) as f64 * ps / MIB)
                .collect(),
        ));
    }
    stacked_bars(
        &format!(
            "explain {}: usage {:.1} MiB, unexplained {} pages",
            r.cgroup,
            r.usage_bytes as f64 / MIB,
            r.unexplained_pages
        ),
        "MiB",
        &cats,
        &segs,
    )
}

/// Writes `plots` into `dir` (created if missing; see [`crate::safefs::prepare_output_dir`]);
/// returns the paths written.
pub fn write_all(
    dir: &Path,
    plots: &[(String, String)],
) -> Result<Vec<std::path::PathBuf>, PlotError> {
    crate::safefs::prepare_output_dir(dir, "--svg")?;
    let mut out = Vec::new();
    for (name, text) in plots {
        out.push(crate::safefs::write_output_file(
            dir,
            name,
            text.as_bytes(),
            "--svg",
        )?);
    }
    Ok(out)
}
