//! Text for the PNG: glyphs placed with their real metrics.
//!
//! plotters 0.3.7 draws `ab_glyph` text ignoring each glyph's side bearing, so
//! letters come out unevenly spaced ("Res Net"). [`GlyphText`] wraps a backend,
//! draws text itself with the embedded DejaVu Sans, and passes everything else
//! through. Text boxes are sized exactly as plotters estimates them, so the
//! layout is unchanged.

use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, InvalidFont, ScaleFont};
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
    FontStyle,
};

/// A backend whose text is rasterized with correct glyph spacing.
pub(super) struct GlyphText<B>(pub(super) B);

/// DejaVu Sans regular and bold, parsed once.
fn fonts() -> Result<&'static [FontRef<'static>; 2], InvalidFont> {
    static FONTS: OnceLock<Result<[FontRef<'static>; 2], InvalidFont>> = OnceLock::new();
    let fonts = FONTS.get_or_init(|| {
        Ok([
            FontRef::try_from_slice(dejavu::sans::regular())?,
            FontRef::try_from_slice(dejavu::sans::bold())?,
        ])
    });
    fonts.as_ref().map_err(|e| *e)
}

impl<B: DrawingBackend> DrawingBackend for GlyphText<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.blit_bitmap(pos, size, src)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let fonts = fonts().map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
        let bold = matches!(style.style(), FontStyle::Bold);
        let font = fonts[usize::from(bold)].as_scaled(style.size() as f32);
        let glyphs = || {
            text.chars()
                .map(|c| font.glyph_id(c))
                .scan(None, |prev, id| {
                    let kern = prev.map_or(0.0, |p| font.kern(p, id));
                    *prev = Some(id);
                    Some((id, kern))
                })
        };
        // plotters' box: the advance width by `size / 1.24`, truncated.
        let width = glyphs()
            .map(|(id, kern)| kern + font.h_advance(id))
            .sum::<f32>() as i32;
        let height = (style.size() / 1.24) as i32;
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Center => -width / 2,
            HPos::Right => -width,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        // Centre the line (ascent to descent) in the box.
        let baseline = (height as f32 + font.ascent() + font.descent()) / 2.0;
        let transform = style.transform();
        let mut pen = 0.0;
        let mut result = Ok(());
        for (id, kern) in glyphs() {
            pen += kern;
            let glyph = id.with_scale_and_position(font.scale(), point(pen, baseline));
            pen += font.h_advance(id);
            let Some(outline) = font.outline_glyph(glyph) else {
                continue;
            };
            let origin = outline.px_bounds().min;
            outline.draw(|x, y, coverage| {
                if result.is_err() || coverage <= 0.0 {
                    return;
                }
                let x = origin.x as i32 + x as i32 + dx;
                let y = origin.y as i32 + y as i32 + dy;
                let (x, y) = transform.transform(x, y);
                let pixel = (pos.0 + x, pos.1 + y);
                result = self.0.draw_pixel(pixel, color.mix(f64::from(coverage)));
            });
        }
        result
    }
}
