//! Drawing a [`Figure`] with plotters onto the SVG or bitmap backend.

use std::fmt::Display;
use std::ops::Range;
use std::sync::OnceLock;

use anyhow::{anyhow, ensure, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::element::{DashedPathElement, Drawable, PointCollection};
use plotters::prelude::*;
use plotters::style::register_font;
use plotters_backend::{BackendCoord, DrawingErrorKind};

use super::axes::{clip, fit, legend_corner, tick};
use super::text::GlyphText;
use super::{Figure, LineStyle, Panel, Scale, Series};

/// Family name the embedded font is registered under.
const FONT: &str = "sans-serif";

/// Okabe–Ito colourblind-safe palette, with its yellow darkened to read on
/// white; ordered so the first few colours are the most distinct.
const PALETTE: [RGBColor; 8] = [
    RGBColor(230, 159, 0),   // orange
    RGBColor(0, 114, 178),   // blue
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(0, 0, 0),       // black
    RGBColor(190, 165, 0),   // dark yellow
];

/// A series with the points that can be drawn on its panel's axes.
type Visible<'a> = (&'a Series, Vec<(f64, f64)>);

/// The visible ranges of a panel's axes.
struct Axes {
    x: Range<f64>,
    y: Range<f64>,
    log: bool,
}

/// Renders `fig` as an SVG document.
pub(super) fn svg(fig: &Figure) -> Result<String> {
    register_fonts()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, fig.size()).into_drawing_area();
        draw_figure(fig, &root)?;
        root.present().map_err(drawing)?;
    }
    Ok(out)
}

/// Renders `fig` as 8-bit RGB pixels.
pub(super) fn rgb(fig: &Figure) -> Result<Vec<u8>> {
    register_fonts()?;
    let (width, height) = fig.size();
    let mut buf = vec![255u8; width as usize * height as usize * 3];
    {
        let bitmap = BitMapBackend::with_buffer(&mut buf, (width, height));
        let root = GlyphText(bitmap).into_drawing_area();
        draw_figure(fig, &root)?;
        root.present().map_err(drawing)?;
    }
    Ok(buf)
}

/// Registers the embedded DejaVu Sans (regular and bold) once per process.
fn register_fonts() -> Result<()> {
    static LOADED: OnceLock<bool> = OnceLock::new();
    let loaded = *LOADED.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    ensure!(loaded, "the embedded DejaVu Sans font failed to load");
    Ok(())
}

/// Wraps a plotters error.
fn drawing(e: impl Display) -> anyhow::Error {
    anyhow!("drawing failed: {e}")
}

/// Draws the title and the panels side by side.
fn draw_figure<DB: DrawingBackend>(fig: &Figure, root: &DrawingArea<DB, Shift>) -> Result<()> {
    root.fill(&WHITE).map_err(drawing)?;
    let title = (FONT, 22).into_font().style(FontStyle::Bold);
    let body = root.titled(&fig.title, title).map_err(drawing)?;
    for (panel, area) in fig
        .panels
        .iter()
        .zip(body.split_evenly((1, fig.panels.len())))
    {
        draw_panel(panel, &area)?;
    }
    Ok(())
}

/// Works out a panel's visible points and axis ranges, then draws it.
fn draw_panel<DB: DrawingBackend>(panel: &Panel, area: &DrawingArea<DB, Shift>) -> Result<()> {
    let log = panel.y_scale == Scale::Log;
    let series: Vec<Visible> = panel
        .series
        .iter()
        .map(|s| {
            let points = s.points.iter().copied();
            let ok = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!log || y > 0.0);
            (s, points.filter(ok).collect())
        })
        .collect();
    let all = || series.iter().flat_map(|(_, p)| p.iter().copied());
    let x = fit(all().map(|p| p.0), false, 0.02);
    let fitted = fit(all().map(|p| p.1), log, 0.05);
    let y = match panel.y_range {
        Some((lo, hi)) => {
            let lo = if log && lo <= 0.0 { fitted.start } else { lo };
            match lo.is_finite() && hi.is_finite() && lo < hi {
                true => lo..hi,
                false => fitted,
            }
        }
        None => fitted,
    };
    let axes = Axes { x, y, log };
    match panel.y_scale {
        Scale::Linear => draw_chart(panel, &series, area, &axes, axes.y.clone()),
        Scale::Log => {
            // plotters finds the first labelled decade as `ceil(ln(lo) / ln(10))`,
            // which rounds 0.1 up to 1; widening by a hair keeps that label.
            let y = axes.y.start * (1.0 - 1e-9)..axes.y.end;
            draw_chart(panel, &series, area, &axes, y.log_scale())
        }
    }
}

/// Draws a panel's axes, series and legend on the y axis `y`.
fn draw_chart<'a, DB, Y>(
    panel: &Panel,
    series: &[Visible],
    area: &'a DrawingArea<DB, Shift>,
    axes: &Axes,
    y: Y,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 18))
        .margin(10)
        .x_label_area_size(42)
        .y_label_area_size(58)
        .build_cartesian_2d(axes.x.clone(), y)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .x_desc(&panel.x_label)
        .y_desc(&panel.y_label)
        .axis_desc_style((FONT, 15))
        .label_style((FONT, 12))
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(RGBColor(240, 240, 240))
        .max_light_lines(4)
        .draw()
        .map_err(drawing)?;
    let mut shown = Vec::new();
    for (s, points) in series {
        let color = PALETTE[s.color % PALETTE.len()];
        let runs = clip(points, &axes.y, axes.log);
        if s.style == LineStyle::Points || points.len() == 1 {
            let inside = points
                .iter()
                .filter(|p| (axes.y.start..=axes.y.end).contains(&p.1));
            let markers = inside.map(|&p| Circle::new(p, 3, color.filled()));
            chart.draw_series(markers).map_err(drawing)?;
        }
        let line = if s.style == LineStyle::Dashed {
            let thin = color.stroke_width(1);
            let dashed = runs
                .iter()
                .map(|r| DashedPathElement::new(r.iter().copied(), 6, 4, thin));
            chart.draw_series(dashed)
        } else {
            let width = if s.style == LineStyle::Bold { 3 } else { 1 };
            let solid = runs
                .iter()
                .map(|r| PathElement::new(r.clone(), color.stroke_width(width)));
            chart.draw_series(solid)
        };
        let style = s.style;
        line.map_err(drawing)?
            .label(&s.label)
            .legend(move |at| LegendSample { at, style, color });
        shown.extend(runs.into_iter().flatten());
    }
    if !series.is_empty() {
        let corner = legend_corner(shown.into_iter(), &axes.x, &axes.y, axes.log, series.len());
        chart
            .configure_series_labels()
            .position(corner)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(170, 170, 170))
            .label_font((FONT, 13))
            .draw()
            .map_err(drawing)?;
    }
    Ok(())
}

/// The short line drawn left of a series' label in the legend.
struct LegendSample {
    at: BackendCoord,
    style: LineStyle,
    color: RGBColor,
}

impl<'a> PointCollection<'a, BackendCoord> for &'a LegendSample {
    type Point = &'a BackendCoord;
    type IntoIter = std::iter::Once<&'a BackendCoord>;

    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.at)
    }
}

impl<DB: DrawingBackend> Drawable<DB> for LegendSample {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut at: I,
        backend: &mut DB,
        _: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let Some((x, y)) = at.next() else {
            return Ok(());
        };
        let thin = self.color.stroke_width(1);
        match self.style {
            LineStyle::Dashed => {
                for dash in [0, 8, 16] {
                    backend.draw_line((x + dash, y), (x + dash + 5, y), &thin)?;
                }
            }
            LineStyle::Bold => {
                backend.draw_line((x, y), (x + 21, y), &self.color.stroke_width(3))?;
            }
            LineStyle::Points => {
                backend.draw_line((x, y), (x + 21, y), &thin)?;
                backend.draw_circle((x + 10, y), 3, &self.color.filled(), true)?;
            }
        }
        Ok(())
    }
}
