//! PNG, rasterised in-process from the `font8x8` bitmaps: backgrounds per cell, block elements as
//! rectangles, braille as dots.

use font8x8::UnicodeFonts as _;
use ratatui::buffer::Buffer;

use super::cells::{paints, Block};
use super::palette::Palette;
use super::Rgb;
use crate::{Error, Result};

// A PNG cell is 8 × 16 px: the 8 × 8 glyph doubled vertically (wide glyphs also horizontally).
const PW: usize = 8;
const PH: usize = 16;

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    /// Fills a rectangle, clipped to the image.
    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, c: Rgb) {
        for yy in y..(y + h).min(self.h) {
            for xx in x..(x + w).min(self.w) {
                let i = (yy * self.w + xx) * 3;
                self.px[i..i + 3].copy_from_slice(&c);
            }
        }
    }
}

/// A glyph's 8 rows (bit 0 is the leftmost pixel); `None` where the font has nothing for `c`.
pub(super) fn glyph(c: char) -> Option<[u8; 8]> {
    use font8x8::{
        BASIC_FONTS, BLOCK_FONTS, BOX_FONTS, GREEK_FONTS, HIRAGANA_FONTS, LATIN_FONTS, MISC_FONTS,
    };
    let g = BASIC_FONTS
        .get(c)
        .or_else(|| LATIN_FONTS.get(c))
        .or_else(|| BOX_FONTS.get(c));
    let g = g
        .or_else(|| BLOCK_FONTS.get(c))
        .or_else(|| GREEK_FONTS.get(c));
    let g = g
        .or_else(|| HIRAGANA_FONTS.get(c))
        .or_else(|| MISC_FONTS.get(c));
    g.filter(|rows| *rows != [0; 8])
}

/// An ASCII stand-in for the symbols the explorer draws that the bitmap font lacks (marks,
/// arrows, the star, the visible space), so PNG screenshots show them instead of a box.
pub(super) fn lookalike(c: char) -> Option<char> {
    Some(match c {
        '✕' | '✗' | '×' => 'x',
        '✓' | '✔' => 'v',
        '▸' | '▶' | '›' | '→' => '>',
        '◂' | '◀' | '‹' | '←' => '<',
        '★' | '☆' => '*',
        '◆' | '◇' => '#',
        '•' => '.',
        '␣' => '_',
        '…' | '⋯' => ':',
        '⟳' => '@',
        '⏸' => '=',
        '−' | '–' | '—' => '-',
        _ => return None,
    })
}

/// The raised dots `(column, row)` of a braille pattern (U+2800–U+28FF), `None` for other chars.
/// Dots 1–3 and 7 are the left column top to bottom, 4–6 and 8 the right.
pub(super) fn braille_dots(c: char) -> Option<impl Iterator<Item = (usize, usize)>> {
    let bits = u32::from(c).checked_sub(0x2800).filter(|&b| b <= 0xff)?;
    const DOTS: [(usize, usize); 8] = [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
        (1, 1),
        (1, 2),
        (0, 3),
        (1, 3),
    ];
    Some(
        DOTS.into_iter()
            .enumerate()
            .filter(move |&(i, _)| bits >> i & 1 == 1)
            .map(|(_, d)| d),
    )
}

/// The buffer as a PNG: backgrounds per cell, block elements as rectangles, braille as dots, text
/// in `font8x8`.
pub fn to_png(buf: &Buffer, palette: &Palette) -> Result<Vec<u8>> {
    let rows = paints(buf, palette);
    // A PNG cannot be empty: an empty buffer gives one background pixel.
    let (w, h) = (
        (usize::from(buf.area.width) * PW).max(1),
        (rows.len() * PH).max(1),
    );
    let mut img = Canvas {
        w,
        h,
        px: palette.bg.repeat(w * h),
    };
    for (r, row) in rows.iter().enumerate() {
        for p in row {
            let (x, y, cw) = (usize::from(p.x) * PW, r * PH, usize::from(p.w) * PW);
            img.fill(x, y, cw, PH, p.bg);
            if let Some((c, Block::Part(part))) = p.shape {
                let [x0, y0, x1, y1] = part.map(usize::from);
                img.fill(
                    x + x0 * cw / 8,
                    y + y0 * PH / 8,
                    (x1 - x0) * cw / 8,
                    (y1 - y0) * PH / 8,
                    c,
                );
            }
            let ink = p.look.ink();
            if let Some(ch) = p.text.chars().next().filter(|c| !c.is_whitespace()) {
                if let Some(dots) = braille_dots(ch) {
                    // Charts draw with braille; the bitmap font has none, so each raised dot is a
                    // 2×2 square on a 2 × 4 grid.
                    for (col, row) in dots {
                        img.fill(
                            x + col * cw / 2 + cw / 4 - 1,
                            y + row * PH / 4 + PH / 8 - 1,
                            2,
                            2,
                            ink,
                        );
                    }
                } else {
                    match glyph(ch).or_else(|| lookalike(ch).and_then(glyph)) {
                        Some(bitmap) => {
                            let sx = usize::from(p.w.min(2));
                            for (gy, &bits) in bitmap.iter().enumerate() {
                                // Italic shears the top half one pixel right; bold smears one pixel.
                                let shift = usize::from(p.look.italic && gy < 4);
                                for gx in (0..8usize).filter(|&gx| bits >> gx & 1 == 1) {
                                    let w = sx + usize::from(p.look.bold);
                                    img.fill(x + (gx + shift) * sx, y + gy * 2, w, 2, ink);
                                }
                            }
                        }
                        // Unknown glyph: a small box.
                        None => {
                            img.fill(x + 1, y + 4, cw - 2, 1, ink);
                            img.fill(x + 1, y + 11, cw - 2, 1, ink);
                            img.fill(x + 1, y + 4, 1, 8, ink);
                            img.fill(x + cw - 2, y + 4, 1, 8, ink);
                        }
                    }
                }
            }
            if p.look.underline {
                img.fill(x, y + PH - 2, cw, 1, ink);
            }
            if p.look.strike {
                img.fill(x, y + PH / 2, cw, 1, ink);
            }
        }
    }
    let mut out = Vec::new();
    let err = |e: png::EncodingError| Error::Export(format!("PNG: {e}"));
    let mut encoder = png::Encoder::new(&mut out, w as u32, h as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(err)?;
    writer.write_image_data(&img.px).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(out)
}
