//! Screenshots: a ratatui [`Buffer`] (exactly what the screen shows) as SVG, HTML, plain text or
//! PNG. All four share one colour resolution ([`Palette`]) and one reading of the grid: the cells a
//! terminal draws, skipping the cell hidden under each wide glyph.
//!
//! The PNG is rasterised in-process from the `font8x8` bitmaps, so it needs no font files. Licence:
//! the `font8x8` crate is MIT (© 2017 Joaquin Rosales); its glyphs come from Marcel Sondaar's and
//! IBM's public-domain VGA font (via dhepper/font8x8, also public domain).
//!
//! One file per part: `cells` reads the grid into the shared cell model (what each cell paints,
//! in which look), `palette` resolves colours, `markup` is what the SVG and HTML share, and
//! `svg`, `html`, `text` and `png` write the formats.

mod cells;
mod html;
mod markup;
mod palette;
mod png;
mod svg;
mod text;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use ratatui::buffer::Buffer;

pub use self::html::to_html;
pub use self::palette::Palette;
pub use self::png::to_png;
pub use self::svg::to_svg;
pub use self::text::to_text;
use crate::{Error, Result};

/// A colour as red, green, blue.
pub type Rgb = [u8; 3];

/// The screenshot formats, named by their file extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExportFormat {
    Svg,
    Png,
    Html,
    Txt,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 4] = [Self::Svg, Self::Png, Self::Html, Self::Txt];

    pub fn extension(self) -> &'static str {
        match self {
            Self::Svg => "svg",
            Self::Png => "png",
            Self::Html => "html",
            Self::Txt => "txt",
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

impl FromStr for ExportFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "svg" => Ok(Self::Svg),
            "png" => Ok(Self::Png),
            "html" | "htm" => Ok(Self::Html),
            "txt" | "text" => Ok(Self::Txt),
            other => Err(format!(
                "unknown screenshot format {other:?} (expected svg, png, html or txt)"
            )),
        }
    }
}

/// Writes `dir/stem.<ext>` for each format (each through a temporary file and a rename, so no
/// reader sees half a file) and returns the paths written.
pub fn write_screenshot(
    buf: &Buffer,
    palette: &Palette,
    dir: &Path,
    formats: &[ExportFormat],
    stem: &str,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written: Vec<PathBuf> = Vec::new();
    for &format in formats {
        let path = dir.join(format!("{stem}.{format}"));
        if written.contains(&path) {
            continue;
        }
        let bytes = match format {
            ExportFormat::Svg => to_svg(buf, palette, None).into_bytes(),
            ExportFormat::Png => to_png(buf, palette)?,
            ExportFormat::Html => to_html(buf, palette, None).into_bytes(),
            ExportFormat::Txt => to_text(buf).into_bytes(),
        };
        let tmp = dir.join(format!(".{stem}.{format}.tmp"));
        if let Err(e) = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(&path, e));
        }
        written.push(path);
    }
    Ok(written)
}

/// `headscope-YYYYMMDD-HHMMSS`, the current time in UTC.
pub fn timestamp_stem() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    stem_at(secs)
}

/// The stem for `secs` after the Unix epoch (days to a civil date: H. Hinnant's algorithm).
fn stem_at(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
    format!("headscope-{year:04}{month:02}{day:02}-{hh:02}{mm:02}{ss:02}")
}
