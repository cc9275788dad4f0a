//! The accuracy-against-sparsity plot of a sweep, as SVG and PNG (text
//! through an embedded font, so no fontconfig or freetype at build time).

use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::grid::Grid;

/// Canvas size of both plots, in pixels (SVG user units).
pub(crate) const PLOT_SIZE: (u32, u32) = (900, 560);

/// Okabe–Ito colours: distinguishable with colour-blindness and on white.
const COLORS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// One point of a method's line: x on the plot axis, accuracy in %.
struct Point {
    x: f64,
    mean: f64,
    std: f64,
}

/// What the plot shows, in plot coordinates.
pub(crate) struct PlotData {
    lines: Vec<(String, Vec<Point>)>,
    /// Dense student's mean accuracy in %.
    dense: Option<f64>,
    x_axis: SparsityAxis,
    y_range: (f64, f64),
}

/// The sparsity axis of the plot: linear in x = [`sparsity_x`]`(s)`, with a
/// tick and a label exactly at each configured sparsity.
#[derive(Clone)]
struct SparsityAxis {
    lo: f64,
    hi: f64,
    /// (sparsity, its x).
    ticks: Vec<(f64, f64)>,
}

impl Ranged for SparsityAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, x: &f64, limit: (i32, i32)) -> i32 {
        let t = (x - self.lo) / (self.hi - self.lo);
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // Bold lines and labels at the sparsities; no light lines between.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.iter().map(|&(_, x)| x).collect()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for SparsityAxis {
    fn format(x: &f64) -> String {
        format!("{:.3}", 1.0 - 10f64.powf(-x))
    }

    /// The sparsity whose tick sits at `x`, as written in the config.
    fn format_ext(&self, x: &f64) -> String {
        match self.ticks.iter().find(|(_, tx)| (tx - x).abs() < 1e-9) {
            Some((s, _)) => s.to_string(),
            None => Self::format(x),
        }
    }
}

/// The sparsity axis is x = −log10(1 − s), labelled with s itself: the
/// interesting sparsities (0.9, 0.95, 0.98, 0.99) crowd against 1 on a linear
/// axis, while equally spaced categories would hide that 0.98 → 0.99 halves
/// the remaining weights just as 0.9 → 0.95 does. On this axis each halving
/// of the remaining weights is the same step.
fn sparsity_x(s: f64) -> f64 {
    -(1.0 - s).log10()
}

impl PlotData {
    pub(crate) fn new(grid: &Grid) -> Self {
        let ticks: Vec<(f64, f64)> = grid
            .sparsities
            .iter()
            .map(|&s| (s, sparsity_x(s)))
            .collect();
        let (xs_lo, xs_hi) = ticks
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, x)| {
                (lo.min(x), hi.max(x))
            });
        let pad = (0.08 * (xs_hi - xs_lo)).max(0.15);
        let x_axis = SparsityAxis {
            lo: xs_lo - pad,
            hi: xs_hi + pad,
            ticks: ticks.clone(),
        };
        // Lines are shifted sideways a little so that error bars of methods
        // with equal accuracy do not hide each other.
        let k = grid.methods.len() as f64;
        let dodge = 0.012 * (x_axis.hi - x_axis.lo);

        let mut lines = Vec::new();
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for (m, method) in grid.methods.iter().enumerate() {
            let shift = (m as f64 - (k - 1.0) / 2.0) * dodge;
            let mut points = Vec::new();
            for (s, &(_, x)) in ticks.iter().enumerate() {
                if let Some(f) = grid.summary(m, s, |c| c.final_accuracy) {
                    let (mean, std) = (100.0 * f.mean, 100.0 * f.std.unwrap_or(0.0));
                    lo = lo.min(mean - std);
                    hi = hi.max(mean + std);
                    points.push(Point {
                        x: x + shift,
                        mean,
                        std,
                    });
                }
            }
            lines.push((method.clone(), points));
        }
        let dense = grid.dense().map(|d| 100.0 * d.mean);
        if let Some(d) = dense {
            lo = lo.min(d);
            hi = hi.max(d);
        }
        let pad = (0.08 * (hi - lo)).max(0.5);
        let y_range = ((lo - pad).max(0.0), (hi + pad).min(100.0));
        Self {
            lines,
            dense,
            x_axis,
            y_range,
        }
    }
}

/// Registers DejaVu Sans as plotters' `sans-serif` once per process: the
/// ab_glyph text back end knows no system fonts.
fn register_fonts() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        bail!("cannot load the embedded DejaVu Sans font")
    }
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("cannot draw the accuracy plot: {e}")
}

/// Final accuracy (mean, error bar = std over seeds) against sparsity, one
/// line per method, the dense student as a grey reference line.
fn draw_accuracy<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plot: &PlotData,
    title: &str,
) -> Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let (x0, x1) = (plot.x_axis.lo, plot.x_axis.hi);
    let (y0, y1) = plot.y_range;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(64)
        .build_cartesian_2d(plot.x_axis.clone(), y0..y1)
        .map_err(plot_err)?;
    let y_decimals = if y1 - y0 < 2.0 {
        2
    } else if y1 - y0 < 10.0 {
        1
    } else {
        0
    };
    let y_label = |y: &f64| format!("{y:.y_decimals$}");
    chart
        .configure_mesh()
        .x_desc("target sparsity (spaced by log of 1 − sparsity)")
        .y_desc("final test accuracy (%)")
        .y_label_formatter(&y_label)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .y_max_light_lines(2)
        .draw()
        .map_err(plot_err)?;

    if let Some(d) = plot.dense {
        // Dashed so that it does not read as a grid line.
        let dense = RGBColor(64, 64, 64).stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new([(x0, d), (x1, d)], 8, 6, dense))
            .map_err(plot_err)?
            .label("dense student")
            .legend(move |(x, y)| {
                plotters::element::DashedPathElement::new([(x, y), (x + 24, y)], 8, 6, dense)
            });
    }
    for (i, (method, points)) in plot.lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let line = color.stroke_width(2);
        // Past the seven colours, lines are dashed so that no two methods
        // look alike.
        if (i / COLORS.len()) % 2 == 1 {
            chart
                .draw_series(DashedLineSeries::new(
                    points.iter().map(|p| (p.x, p.mean)),
                    10,
                    5,
                    line,
                ))
                .map_err(plot_err)?
                .label(method)
                .legend(move |(x, y)| {
                    plotters::element::DashedPathElement::new([(x, y), (x + 24, y)], 6, 4, line)
                });
        } else {
            chart
                .draw_series(LineSeries::new(points.iter().map(|p| (p.x, p.mean)), line))
                .map_err(plot_err)?
                .label(method)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], line));
        }
        chart
            .draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.x, p.mean), 4, color.filled())),
            )
            .map_err(plot_err)?;
        chart
            .draw_series(points.iter().filter(|p| p.std > 0.0).map(|p| {
                ErrorBar::new_vertical(p.x, p.mean - p.std, p.mean, p.mean + p.std, line, 8)
            }))
            .map_err(plot_err)?;
    }
    // Accuracy falls with sparsity, so the lower left is usually empty.
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

pub(crate) fn render_svg(plot: &PlotData, title: &str) -> Result<String> {
    register_fonts()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        draw_accuracy(&root, plot, title)?;
    }
    Ok(svg)
}

/// Draws into an RGB buffer and encodes it with `image` (already in the build
/// through the data crate) rather than plotters' own encoder, which would pull
/// in a second, older `image`.
pub(crate) fn render_png(plot: &PlotData, title: &str) -> Result<Vec<u8>> {
    use image::ImageEncoder as _;
    register_fonts()?;
    let (w, h) = PLOT_SIZE;
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, PLOT_SIZE).into_drawing_area();
        draw_accuracy(&root, plot, title)?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, w, h, image::ExtendedColorType::Rgb8)
        .context("cannot encode the accuracy plot as PNG")?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::results::tests::{cell, names};

    #[test]
    fn sparsity_ticks_are_labelled_as_configured() {
        let cells = [cell("m", 0.95, 0, 0.9), cell("m", 0.98, 0, 0.8)];
        let sp = [0.9, 0.95, 0.98, 0.99];
        let methods = names(&["m"]);
        let plot = PlotData::new(&Grid::new(&cells, &methods, &sp).unwrap());
        let axis = &plot.x_axis;
        let keys = axis.key_points(plotters::coord::ranged1d::BoldPoints(10));
        let labels: Vec<String> = keys.iter().map(|x| axis.format_ext(x)).collect();
        assert_eq!(labels, ["0.9", "0.95", "0.98", "0.99"]);
        // −log10(1 − s): 0.9 → 1, 0.99 → 2.
        assert!((keys[0] - 1.0).abs() < 1e-12 && (keys[3] - 2.0).abs() < 1e-12);
        assert!(axis.lo < keys[0] && keys[3] < axis.hi);
        // No light grid lines between the sparsities.
        let light = plotters::coord::ranged1d::LightPoints::new(10, 100);
        assert!(axis.key_points(light).is_empty());
        assert_eq!(plot.lines[0].1.len(), 2, "no point where no cell finished");
    }
}
