//! Atomic file output and PNG encoding.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `path` through `fill`: the bytes go to a temporary file in the same
/// folder, which is synced and renamed over `path` only if `fill` succeeds.
/// The temporary file is removed on every failure path.
pub(super) fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        // What `File::create` asks for (the umask applies), not tempfile's 0o600.
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let tmp = builder
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file to write {}", path.display()))?;
    let mut writer = BufWriter::new(tmp.as_file());
    fill(&mut writer)
        .and_then(|()| Ok(writer.flush()?))
        .with_context(|| format!("writing {}", path.display()))?;
    drop(writer);
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("renaming a temporary file to {}", path.display()))?;
    Ok(())
}

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
