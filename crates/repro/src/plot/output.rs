//! PNG encoding of the plots (written atomically by `resnet_models::write_atomic`).

use std::io::Write;

use anyhow::Result;

/// Encodes 8-bit RGB pixels (`width * height * 3` bytes) as a PNG image.
pub(super) fn encode_png(out: impl Write, rgb: &[u8], width: u32, height: u32) -> Result<()> {
    let mut encoder = png::Encoder::new(out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(())
}
