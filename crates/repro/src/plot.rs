//! Plots of the paper's figures, written as SVG and PNG.
//!
//! A [`Figure`] is a title over one or more [`Panel`]s laid out side by side;
//! each panel holds [`Series`] of `(x, y)` points. The styling follows the
//! paper: training error is a thin dashed line ([`LineStyle::Dashed`]), test
//! error a bold solid line ([`LineStyle::Bold`]), and the train and test
//! curves of one network share a colour (the same [`Series::color`] index into
//! a fixed colourblind-friendly palette).
//!
//! Text is drawn with DejaVu Sans embedded in the binary, so rendering needs
//! no system fonts.
//!
//! ```no_run
//! use resnet_repro::plot::{Figure, LineStyle, Panel, Scale, Series};
//! let fig = Figure {
//!     title: "CIFAR-10 error vs iterations".into(),
//!     panels: vec![Panel {
//!         title: "plain nets".into(),
//!         x_label: "iteration".into(),
//!         y_label: "error (%)".into(),
//!         y_scale: Scale::Linear,
//!         y_range: Some((0.0, 20.0)),
//!         series: vec![Series {
//!             label: "plain-20 test".into(),
//!             points: vec![(100.0, 80.0), (32_000.0, 9.0)],
//!             style: LineStyle::Bold,
//!             color: 0,
//!         }],
//!     }],
//! };
//! let (svg, png) = fig.write("out", "fig6")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

mod axes;
mod output;
mod render;
mod text;

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

/// Width in pixels of one panel; a figure is this times its panel count wide.
pub const PANEL_WIDTH: u32 = 600;

/// Height in pixels of every figure, title included.
pub const FIGURE_HEIGHT: u32 = 450;

/// A titled figure made of panels laid out left to right.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Title drawn across the top of the whole figure.
    pub title: String,
    /// The panels, left to right; there must be at least one.
    pub panels: Vec<Panel>,
}

/// One set of axes with its own title, labels, scale and series.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Panel {
    /// Title drawn above the panel.
    pub title: String,
    /// Label of the horizontal axis.
    pub x_label: String,
    /// Label of the vertical axis.
    pub y_label: String,
    /// Scale of the vertical axis.
    pub y_scale: Scale,
    /// Visible `(min, max)` of the vertical axis; `None` fits the data.
    ///
    /// Curves are cut where they leave the range. On a [`Scale::Log`] axis a
    /// non-positive minimum is replaced by the fitted one; a range that is
    /// still unusable (non-finite, or min not below max) fits the data.
    pub y_range: Option<(f64, f64)>,
    /// The curves, drawn in order and listed in the legend in order.
    pub series: Vec<Series>,
}

/// A labelled curve of `(x, y)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry, e.g. `"plain-20 train"`.
    pub label: String,
    /// The points, joined in order. Non-finite points are skipped, as are
    /// non-positive `y` values on a [`Scale::Log`] axis.
    pub points: Vec<(f64, f64)>,
    /// How the curve is drawn.
    pub style: LineStyle,
    /// Index into the palette (wrapping around); give a network's train and
    /// test series the same index.
    pub color: usize,
}

/// How a [`Series`] is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineStyle {
    /// Thin dashed line: the paper's training error.
    Dashed,
    /// Thick solid line: the paper's test error.
    Bold,
    /// Circle markers joined by a thin solid line, e.g. per-layer responses.
    Points,
}

/// Scale of a vertical axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    /// Evenly spaced values.
    #[default]
    Linear,
    /// Logarithmic (base 10) values; only positive values are shown.
    Log,
}

impl Figure {
    /// Size of the rendered figure in pixels, `(width, height)`.
    pub fn size(&self) -> (u32, u32) {
        let panels = u32::try_from(self.panels.len()).unwrap_or(u32::MAX);
        (PANEL_WIDTH.saturating_mul(panels), FIGURE_HEIGHT)
    }

    /// Renders the figure as an SVG document.
    pub fn to_svg(&self) -> Result<String> {
        self.check()?;
        render::svg(self)
    }

    /// Renders the figure as 8-bit RGB pixels, row by row.
    pub fn to_rgb(&self) -> Result<Vec<u8>> {
        self.check()?;
        render::rgb(self)
    }

    /// Writes `dir/<stem>.svg` and `dir/<stem>.png`, creating `dir` if
    /// needed, and returns their paths `(svg, png)`.
    ///
    /// Each file is written to a temporary file in `dir` and renamed into
    /// place, so readers never see a partial file and failures leave no
    /// temporary files behind.
    pub fn write(&self, dir: impl AsRef<Path>, stem: &str) -> Result<(PathBuf, PathBuf)> {
        let dir = dir.as_ref();
        let svg_path = dir.join(format!("{stem}.svg"));
        let png_path = dir.join(format!("{stem}.png"));
        let svg = self
            .to_svg()
            .with_context(|| format!("rendering {}", svg_path.display()))?;
        let rgb = self
            .to_rgb()
            .with_context(|| format!("rendering {}", png_path.display()))?;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating folder {}", dir.display()))?;
        resnet_models::write_atomic(&svg_path, svg.as_bytes())?;
        let (width, height) = self.size();
        let mut png = Vec::new();
        output::encode_png(&mut png, &rgb, width, height)?;
        resnet_models::write_atomic(&png_path, &png)?;
        Ok((svg_path, png_path))
    }

    /// Rejects figures that cannot be drawn.
    fn check(&self) -> Result<()> {
        ensure!(
            !self.panels.is_empty(),
            "figure {:?} has no panels",
            self.title
        );
        Ok(())
    }
}
