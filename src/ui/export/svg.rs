//! SVG: one rectangle per background run, shapes for block and box glyphs, one `<text>` per
//! same-style run pinned to the grid.

use ratatui::buffer::Buffer;

use super::cells::{blank, extent, is_blank, paints, text_runs, Block, Paint};
use super::markup::{esc, font_props, FONT};
use super::palette::{hex, mix, Palette};
use super::Rgb;

// SVG lengths in hundredths of a px, so that every coordinate is an exact integer: a cell is
// 8.4 × 18 px (0.6 em wide at a 14 px font, the advance of the common monospace fonts).
const CW: u32 = 840;
const CH: u32 = 1800;
const BASELINE: u32 = 1350;
const TITLE_BAR: u32 = 3000;

/// A length in hundredths of a px, written without float noise.
fn px(v: u32) -> String {
    let s = format!("{}.{:02}", v / 100, v % 100);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The buffer as an SVG image, optionally framed as a window with `title`.
pub fn to_svg(buf: &Buffer, palette: &Palette, title: Option<&str>) -> String {
    let rows = paints(buf, palette);
    let top = if title.is_some() { TITLE_BAR } else { 0 };
    let (w, h) = (
        px(u32::from(buf.area.width) * CW),
        px(top + rows.len() as u32 * CH),
    );
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"{}\"/>\n",
        hex(palette.bg)
    );
    if let Some(title) = title {
        title_bar(&mut s, &w, title, palette);
    }
    // Crisp edges, so that neighbouring rectangles meet without anti-aliased seams.
    s += "<g shape-rendering=\"crispEdges\">\n";
    for (r, row) in rows.iter().enumerate() {
        let y = top + r as u32 * CH;
        backgrounds(&mut s, row, y, palette);
        shapes(&mut s, row, y);
    }
    s += &format!("</g>\n<g font-family=\"{FONT}\" font-size=\"14\">\n");
    for (r, row) in rows.iter().enumerate() {
        for run in text_runs(row) {
            text_run(&mut s, run, top + r as u32 * CH + BASELINE);
        }
    }
    s + "</g>\n</svg>\n"
}

/// A window's title bar `w` wide: three dots and the title.
fn title_bar(s: &mut String, w: &str, title: &str, palette: &Palette) {
    let bar = hex(mix(palette.bg, palette.fg, 1, 8));
    *s += &format!(
        "<rect width=\"{w}\" height=\"{}\" fill=\"{bar}\"/>\n",
        px(TITLE_BAR)
    );
    for (cx, dot) in [(16, "#ff5f57"), (36, "#febc2e"), (56, "#28c840")] {
        *s += &format!("<circle cx=\"{cx}\" cy=\"15\" r=\"6\" fill=\"{dot}\"/>\n");
    }
    *s += &format!(
        "<text x=\"50%\" y=\"20\" text-anchor=\"middle\" font-family=\"{FONT}\" font-size=\"13\" \
         fill=\"{}\">{}</text>\n",
        hex(palette.fg),
        esc(title)
    );
}

/// A filled rectangle (lengths in hundredths of a px).
fn rect(s: &mut String, x: u32, y: u32, w: u32, h: u32, c: Rgb) {
    let (x, y, w, h, c) = (px(x), px(y), px(w), px(h), hex(c));
    *s += &format!("<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"{c}\"/>\n");
}

/// One rectangle per background run of a row at `y`; the default background is already painted.
fn backgrounds(s: &mut String, row: &[Paint], y: u32, palette: &Palette) {
    for run in row.chunk_by(|a, b| a.bg == b.bg) {
        let (x, n) = extent(run);
        if run[0].bg != palette.bg {
            rect(s, x * CW, y, n * CW, CH, run[0].bg);
        }
    }
}

/// Shapes of a row at `y`; a run of the same full-width one (a bar of ▀ or ─) is one rectangle.
fn shapes(s: &mut String, row: &[Paint], y: u32) {
    let full_width = |p: &Paint| match p.shape {
        Some((_, Block::Part(r))) => r[0] == 0 && r[2] == 8,
        Some((_, Block::Lines(arms, _))) => arms == 10,
        _ => false,
    };
    for run in row.chunk_by(|a, b| a.shape == b.shape && full_width(a)) {
        let (x, n) = extent(run);
        let (x, w) = (x * CW, n * CW);
        match run[0].shape {
            Some((c, Block::Part(part))) => {
                let [x0, y0, x1, y1] = part.map(u32::from);
                rect(
                    s,
                    x + x0 * w / 8,
                    y + y0 * CH / 8,
                    (x1 - x0) * w / 8,
                    (y1 - y0) * CH / 8,
                    c,
                );
            }
            Some((c, Block::Lines(arms, heavy))) => box_lines(s, (x, y, w), arms, heavy, c),
            _ => {}
        }
    }
}

/// Box lines as bars through the centre of the cells at `(x, y)`, `w` wide, so that borders
/// join between rows.
fn box_lines(s: &mut String, (x, y, w): (u32, u32, u32), arms: u8, heavy: bool, c: Rgb) {
    let t = if heavy { 240 } else { 120 };
    let (cx, cy) = (x + w / 2 - t / 2, y + CH / 2 - t / 2);
    match arms & 5 {
        5 => rect(s, cx, y, t, CH, c),
        1 => rect(s, cx, y, t, CH / 2 + t / 2, c),
        4 => rect(s, cx, cy, t, CH / 2 + t / 2, c),
        _ => {}
    }
    match arms & 10 {
        10 => rect(s, x, cy, w, t, c),
        8 => rect(s, x, cy, w / 2 + t / 2, t, c),
        2 => rect(s, cx, cy, w / 2 + t / 2, t, c),
        _ => {}
    }
}

/// One same-style run of glyphs as a `<text>` on the baseline `y`.
fn text_run(s: &mut String, run: &[Paint], y: u32) {
    let ((x, n), look) = (extent(run), run[0].look);
    let (x, y, fill) = (px(x * CW), px(y), hex(look.fg));
    *s += &format!("<text x=\"{x}\" y=\"{y}\" fill=\"{fill}\"");
    for (name, value) in font_props(&look) {
        *s += &format!(" {name}=\"{value}\"");
    }
    if look.dim {
        *s += " opacity=\"0.6\"";
    }
    // textLength pins the run to the grid when the font's advance is not exactly 8.4 px.
    let text: String = run
        .iter()
        .map(|p| {
            if is_blank(p) {
                blank(p.w)
            } else {
                p.text.clone()
            }
        })
        .collect();
    *s += &format!(
        " textLength=\"{}\" xml:space=\"preserve\">{}</text>\n",
        px(n * CW),
        esc(&text)
    );
}
