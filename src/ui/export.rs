//! Screenshots: a ratatui [`Buffer`] (exactly what the screen shows) as SVG, HTML, plain text or
//! PNG. All four share one colour resolution ([`Palette`]) and one reading of the grid: the cells a
//! terminal draws, skipping the cell hidden under each wide glyph.
//!
//! The PNG is rasterised in-process from the `font8x8` bitmaps, so it needs no font files. Licence:
//! the `font8x8` crate is MIT (© 2017 Joaquin Rosales); its glyphs come from Marcel Sondaar's and
//! IBM's public-domain VGA font (via dhepper/font8x8, also public domain).

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use font8x8::UnicodeFonts as _;
use ratatui::buffer::{Buffer, Cell, CellDiffOption, CellWidth as _};
use ratatui::style::{Color, Modifier};

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

/// How ratatui colours become RGB: `Reset` is the default `fg`/`bg` (the theme's), the 16 named
/// colours and `Indexed(0..16)` come from `ansi`, the rest of `Indexed` from the xterm-256 table,
/// and `Rgb` is used as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Palette {
    pub fg: Rgb,
    pub bg: Rgb,
    pub ansi: [Rgb; 16],
}

const fn rgb(v: u32) -> Rgb {
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

impl Palette {
    /// Light text on a near-black background (VS Code's dark terminal colours).
    pub fn dark() -> Self {
        Self {
            fg: rgb(0xd4d4d4),
            bg: rgb(0x1e1e1e),
            ansi: [
                0x000000, 0xcd3131, 0x0dbc79, 0xe5e510, 0x2472c8, 0xbc3fbc, 0x11a8cd, 0xe5e5e5,
                0x666666, 0xf14c4c, 0x23d18b, 0xf5f543, 0x3b8eea, 0xd670d6, 0x29b8db, 0xffffff,
            ]
            .map(rgb),
        }
    }

    /// Dark text on white (VS Code's light terminal colours).
    pub fn light() -> Self {
        Self {
            fg: rgb(0x333333),
            bg: rgb(0xffffff),
            ansi: [
                0x000000, 0xcd3131, 0x00bc00, 0x949800, 0x0451a5, 0xbc05bc, 0x0598bc, 0x555555,
                0x666666, 0xcd3131, 0x14ce14, 0xb5ba00, 0x0451a5, 0xbc05bc, 0x0598bc, 0xa5a5a5,
            ]
            .map(rgb),
        }
    }

    /// The palette for a theme: `light()` or `dark()` by the brightness of the theme's background,
    /// with the theme's default colours.
    pub fn from_theme(fg: Color, bg: Color) -> Self {
        let [r, g, b] = Self::dark().resolve(bg, [0; 3]).map(u32::from);
        let base = if 299 * r + 587 * g + 114 * b > 128_000 {
            Self::light()
        } else {
            Self::dark()
        };
        base.with_defaults(fg, bg)
    }

    /// This palette with the theme's default colours (`Reset` keeps the palette's own).
    pub fn with_defaults(mut self, fg: Color, bg: Color) -> Self {
        (self.fg, self.bg) = (self.resolve(fg, self.fg), self.resolve(bg, self.bg));
        self
    }

    /// The RGB of `color`, with `default` standing for `Color::Reset`.
    pub fn resolve(&self, color: Color, default: Rgb) -> Rgb {
        let named = |i: usize| self.ansi[i];
        match color {
            Color::Reset => default,
            Color::Black => named(0),
            Color::Red => named(1),
            Color::Green => named(2),
            Color::Yellow => named(3),
            Color::Blue => named(4),
            Color::Magenta => named(5),
            Color::Cyan => named(6),
            Color::Gray => named(7),
            Color::DarkGray => named(8),
            Color::LightRed => named(9),
            Color::LightGreen => named(10),
            Color::LightYellow => named(11),
            Color::LightBlue => named(12),
            Color::LightMagenta => named(13),
            Color::LightCyan => named(14),
            Color::White => named(15),
            Color::Indexed(n @ 0..16) => named(usize::from(n)),
            // The 6×6×6 cube, then 24 greys.
            Color::Indexed(n @ 16..232) => {
                let level = |v: u8| if v == 0 { 0 } else { 55 + 40 * v };
                let n = n - 16;
                [level(n / 36), level(n / 6 % 6), level(n % 6)]
            }
            Color::Indexed(n) => [8 + 10 * (n - 232); 3],
            Color::Rgb(r, g, b) => [r, g, b],
        }
    }
}

impl Default for Palette {
    fn default() -> Self {
        Self::dark()
    }
}

/// `a` blended towards `b` by `num/den`.
fn mix(a: Rgb, b: Rgb, num: u32, den: u32) -> Rgb {
    std::array::from_fn(|i| {
        ((u32::from(a[i]) * (den - num) + u32::from(b[i]) * num + den / 2) / den) as u8
    })
}

fn hex([r, g, b]: Rgb) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// A cell the terminal draws, and how many columns it covers.
struct Vis<'a> {
    x: u16,
    w: u16,
    cell: &'a Cell,
}

/// The drawn cells of each row; the cells under the right half of a wide glyph are skipped, as
/// ratatui's own `Debug` for `Buffer` does.
fn visible(buf: &Buffer) -> Vec<Vec<Vis<'_>>> {
    let width = usize::from(buf.area.width);
    if width == 0 {
        return Vec::new();
    }
    let rows = buf.content().chunks(width).map(|row| {
        let (mut out, mut x) = (Vec::new(), 0);
        while x < row.len() {
            let cell = &row[x];
            let w = usize::from(width_of(cell)).clamp(1, row.len() - x);
            out.push(Vis {
                x: x as u16,
                w: w as u16,
                cell,
            });
            x += w;
        }
        out
    });
    rows.collect()
}

fn width_of(cell: &Cell) -> u16 {
    match cell.diff_option {
        CellDiffOption::ForcedWidth(w) => w.get(),
        // `cell_width` debug-asserts on single-byte control characters; any one byte is one column.
        _ if cell.symbol().len() <= 1 => 1,
        _ => cell.cell_width(),
    }
}

fn blank(w: u16) -> Cow<'static, str> {
    Cow::Owned(" ".repeat(usize::from(w)))
}

/// The text a cell shows: hidden cells are blank, control characters (which would corrupt XML or
/// a terminal reading the .txt) become spaces.
fn shown<'a>(v: &Vis<'a>) -> Cow<'a, str> {
    let sym = v.cell.symbol();
    if v.cell.modifier.contains(Modifier::HIDDEN) || sym.is_empty() {
        blank(v.w)
    } else if sym.chars().any(char::is_control) {
        Cow::Owned(
            sym.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(sym)
    }
}

/// A cell's resolved style, REVERSED already applied.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Look {
    fg: Rgb,
    bg: Rgb,
    bold: bool,
    italic: bool,
    underline: bool,
    strike: bool,
    dim: bool,
}

impl Look {
    fn of(cell: &Cell, palette: &Palette) -> Self {
        let m = cell.modifier;
        let mut fg = palette.resolve(cell.fg, palette.fg);
        let mut bg = palette.resolve(cell.bg, palette.bg);
        if m.contains(Modifier::REVERSED) {
            std::mem::swap(&mut fg, &mut bg);
        }
        Look {
            fg,
            bg,
            bold: m.contains(Modifier::BOLD),
            italic: m.contains(Modifier::ITALIC),
            underline: m.contains(Modifier::UNDERLINED),
            strike: m.contains(Modifier::CROSSED_OUT),
            dim: m.contains(Modifier::DIM),
        }
    }

    /// The foreground as drawn: DIM is 60 % of it over the background.
    fn ink(&self) -> Rgb {
        if self.dim {
            mix(self.bg, self.fg, 3, 5)
        } else {
            self.fg
        }
    }
}

/// How a block element covers its cell: a foreground rectangle in eighths of the cell
/// (x0, y0, x1, y1), or a shade (quarters of the foreground over the background); or a
/// box-drawing glyph as arms from the centre (up 1, right 2, down 4, left 8) and whether heavy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Part([u8; 4]),
    Shade(u32),
    Lines(u8, bool),
}

fn block(sym: &str) -> Option<Block> {
    let mut chars = sym.chars();
    let (Some(c), None) = (chars.next(), chars.next()) else {
        return None;
    };
    let n = c as u32;
    Some(match c {
        '▀' => Block::Part([0, 0, 8, 4]),
        '▔' => Block::Part([0, 0, 8, 1]),
        '▁'..='█' => Block::Part([0, (8 - (n - 0x2580)) as u8, 8, 8]), // the lower n eighths
        '▉'..='▏' => Block::Part([0, 0, (0x2590 - n) as u8, 8]),       // the left n eighths
        '▐' => Block::Part([4, 0, 8, 8]),
        '▕' => Block::Part([7, 0, 8, 8]),
        '░' => Block::Shade(1),
        '▒' => Block::Shade(2),
        '▓' => Block::Shade(3),
        _ => {
            const ARMS: [u8; 19] = [
                10, 5, 6, 12, 3, 9, 7, 13, 14, 11, 15, 6, 12, 9, 3, 8, 1, 2, 4,
            ];
            let light = "─│┌┐└┘├┤┬┴┼╭╮╯╰╴╵╶╷".chars().position(|l| l == c);
            let heavy = "━┃┏┓┗┛┣┫┳┻╋".chars().position(|h| h == c);
            let i = light.or(heavy)?;
            Block::Lines(ARMS[i], light.is_none())
        }
    })
}

/// What a visible cell paints. Full blocks and shades fold into the background, so a run of them
/// becomes one rectangle (or span) and a heatmap has no gaps whatever the font; partial blocks and
/// box lines are a `shape` over it. `text` is what is left to draw as text (box lines keep theirs
/// for the PNG's font, which joins them), `shown` the cell's characters.
struct Paint<'a> {
    x: u16,
    w: u16,
    bg: Rgb,
    shape: Option<(Rgb, Block)>,
    text: Cow<'a, str>,
    shown: Cow<'a, str>,
    look: Look,
}

fn paints<'a>(buf: &'a Buffer, palette: &Palette) -> Vec<Vec<Paint<'a>>> {
    let paint = |v: Vis<'a>| {
        let (look, shown) = (Look::of(v.cell, palette), shown(&v));
        let mut p = Paint {
            x: v.x,
            w: v.w,
            bg: look.bg,
            shape: None,
            text: shown.clone(),
            shown,
            look,
        };
        match block(&p.shown) {
            Some(Block::Part([0, 0, 8, 8])) => p.bg = look.ink(),
            Some(Block::Shade(q)) => p.bg = mix(look.bg, look.ink(), q, 4),
            Some(shape @ Block::Part(_)) => p.shape = Some((look.ink(), shape)),
            Some(shape @ Block::Lines(..)) => {
                p.shape = Some((look.ink(), shape));
                return p;
            }
            None => return p,
        }
        p.text = blank(v.w);
        p
    };
    visible(buf)
        .into_iter()
        .map(|row| row.into_iter().map(paint).collect())
        .collect()
}

/// No text for the SVG to draw.
fn is_blank(p: &Paint) -> bool {
    let lines = matches!(p.shape, Some((_, Block::Lines(..))));
    lines || !p.look.underline && !p.look.strike && p.text.chars().all(char::is_whitespace)
}

/// First column and width in columns of a run of cells.
fn extent(run: &[Paint]) -> (u32, u32) {
    let (first, last) = (&run[0], &run[run.len() - 1]);
    (u32::from(first.x), u32::from(last.x + last.w - first.x))
}

/// Same-style runs of glyphs. Blanks inside a run join it (they draw nothing), so only a change of
/// style or a decorated run meeting a blank splits the text.
fn text_runs<'r, 'a>(row: &'r [Paint<'a>]) -> Vec<&'r [Paint<'a>]> {
    let key = |p: &Paint| {
        let l = p.look;
        (l.fg, l.bold, l.italic, l.underline, l.strike, l.dim)
    };
    let (mut runs, mut cur): (Vec<&[Paint]>, Option<(usize, usize)>) = (Vec::new(), None);
    for (i, p) in row.iter().enumerate() {
        if is_blank(p) {
            if cur.is_some_and(|(s, _)| row[s].look.underline || row[s].look.strike) {
                runs.extend(cur.take().map(|(s, e)| &row[s..e]));
            }
            continue;
        }
        cur = match cur {
            Some((s, _)) if key(&row[s]) == key(p) => Some((s, i + 1)),
            prev => {
                runs.extend(prev.map(|(s, e)| &row[s..e]));
                Some((i, i + 1))
            }
        };
    }
    runs.extend(cur.map(|(s, e)| &row[s..e]));
    runs
}

/// XML/HTML escaping; control characters (invalid in XML) become spaces.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

const FONT: &str = "'DejaVu Sans Mono','JetBrains Mono','Cascadia Mono',Menlo,Consolas,'Liberation Mono',monospace";
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
        let bar = hex(mix(palette.bg, palette.fg, 1, 8));
        s += &format!(
            "<rect width=\"{w}\" height=\"{}\" fill=\"{bar}\"/>\n",
            px(TITLE_BAR)
        );
        for (cx, dot) in [(16, "#ff5f57"), (36, "#febc2e"), (56, "#28c840")] {
            s += &format!("<circle cx=\"{cx}\" cy=\"15\" r=\"6\" fill=\"{dot}\"/>\n");
        }
        s += &format!(
            "<text x=\"50%\" y=\"20\" text-anchor=\"middle\" font-family=\"{FONT}\" font-size=\"13\" \
             fill=\"{}\">{}</text>\n",
            hex(palette.fg),
            esc(title)
        );
    }
    // Crisp edges, so that neighbouring rectangles meet without anti-aliased seams.
    s += "<g shape-rendering=\"crispEdges\">\n";
    let mut rect = |x: u32, y: u32, w: u32, h: u32, c: Rgb| {
        let (x, y, w, h, c) = (px(x), px(y), px(w), px(h), hex(c));
        s += &format!("<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"{c}\"/>\n");
    };
    for (r, row) in rows.iter().enumerate() {
        let y = top + r as u32 * CH;
        // One rectangle per background run; the default background is already painted.
        for run in row.chunk_by(|a, b| a.bg == b.bg) {
            let (x, n) = extent(run);
            if run[0].bg != palette.bg {
                rect(x * CW, y, n * CW, CH, run[0].bg);
            }
        }
        // Shapes; a run of the same full-width one (a bar of ▀ or ─) is one rectangle.
        let full_width = |p: &Paint| match p.shape {
            Some((_, Block::Part(r))) => r[0] == 0 && r[2] == 8,
            Some((_, Block::Lines(arms, _))) => arms == 10,
            _ => false,
        };
        for run in row.chunk_by(|a, b| a.shape == b.shape && full_width(a)) {
            let ((x, n), y) = (extent(run), y);
            let (x, w) = (x * CW, n * CW);
            match run[0].shape {
                Some((c, Block::Part(part))) => {
                    let [x0, y0, x1, y1] = part.map(u32::from);
                    rect(
                        x + x0 * w / 8,
                        y + y0 * CH / 8,
                        (x1 - x0) * w / 8,
                        (y1 - y0) * CH / 8,
                        c,
                    );
                }
                // Box lines as bars through the centre, so that borders join between rows.
                Some((c, Block::Lines(arms, heavy))) => {
                    let t = if heavy { 240 } else { 120 };
                    let (cx, cy) = (x + w / 2 - t / 2, y + CH / 2 - t / 2);
                    match arms & 5 {
                        5 => rect(cx, y, t, CH, c),
                        1 => rect(cx, y, t, CH / 2 + t / 2, c),
                        4 => rect(cx, cy, t, CH / 2 + t / 2, c),
                        _ => {}
                    }
                    match arms & 10 {
                        10 => rect(x, cy, w, t, c),
                        8 => rect(x, cy, w / 2 + t / 2, t, c),
                        2 => rect(cx, cy, w / 2 + t / 2, t, c),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }
    s += &format!("</g>\n<g font-family=\"{FONT}\" font-size=\"14\">\n");
    for (r, row) in rows.iter().enumerate() {
        for run in text_runs(row) {
            let ((x, n), look) = (extent(run), run[0].look);
            let (x, y, fill) = (px(x * CW), px(top + r as u32 * CH + BASELINE), hex(look.fg));
            s += &format!("<text x=\"{x}\" y=\"{y}\" fill=\"{fill}\"");
            for (name, value) in font_props(&look) {
                s += &format!(" {name}=\"{value}\"");
            }
            if look.dim {
                s += " opacity=\"0.6\"";
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
            s += &format!(
                " textLength=\"{}\" xml:space=\"preserve\">{}</text>\n",
                px(n * CW),
                esc(&text)
            );
        }
    }
    s + "</g>\n</svg>\n"
}

/// Bold, italic and decorations, named alike as SVG attributes and CSS properties.
fn font_props(look: &Look) -> impl Iterator<Item = (&'static str, &'static str)> {
    let decoration = match (look.underline, look.strike) {
        (true, true) => Some("underline line-through"),
        (true, false) => Some("underline"),
        (false, true) => Some("line-through"),
        (false, false) => None,
    };
    [
        ("font-weight", look.bold.then_some("bold")),
        ("font-style", look.italic.then_some("italic")),
        ("text-decoration", decoration),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value?)))
}

/// The inline CSS for a look; empty for the page's default.
fn css(look: &Look, palette: &Palette) -> String {
    let mut css = String::new();
    if look.ink() != palette.fg {
        css += &format!("color:{};", hex(look.ink()));
    }
    if look.bg != palette.bg {
        css += &format!("background:{};", hex(look.bg));
    }
    for (name, value) in font_props(look) {
        css += &format!("{name}:{value};");
    }
    css
}

/// The buffer as a standalone HTML page: a `<pre>` of styled `<span>` runs.
pub fn to_html(buf: &Buffer, palette: &Palette, title: Option<&str>) -> String {
    let (fg, bg) = (hex(palette.fg), hex(palette.bg));
    let mut s = format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n\
         body {{ margin: 0; background: {bg}; }}\n\
         pre {{ margin: 0; padding: 12px; font-family: {FONT}; font-size: 14px; line-height: 1.15; \
         color: {fg}; background: {bg}; }}\n</style>\n</head>\n<body>\n<pre>",
        esc(title.unwrap_or("headscope"))
    );
    for row in paints(buf, palette) {
        let cells: Vec<(String, &str)> = row
            .iter()
            .map(|p| {
                // A folded block is a coloured space that keeps its character for copy and paste.
                let mut look = p.look;
                if p.bg != look.bg {
                    (look.fg, look.bg, look.dim) = (p.bg, p.bg, false);
                }
                (css(&look, palette), &*p.shown)
            })
            .collect();
        let mut line = String::new();
        for run in cells.chunk_by(|a, b| a.0 == b.0) {
            let text: String = run.iter().map(|(_, t)| *t).collect();
            match run[0].0.as_str() {
                "" => line.push_str(&esc(&text)),
                style => line += &format!("<span style=\"{style}\">{}</span>", esc(&text)),
            }
        }
        s.push_str(line.trim_end_matches(' '));
        s.push('\n');
    }
    s.push_str("</pre>\n</body>\n</html>\n");
    s
}

/// The buffer's characters, one line per row, trailing spaces trimmed.
pub fn to_text(buf: &Buffer) -> String {
    let mut s = String::new();
    for row in visible(buf) {
        let line: String = row.iter().map(shown).collect();
        s.push_str(line.trim_end_matches(' '));
        s.push('\n');
    }
    s
}

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
fn glyph(c: char) -> Option<[u8; 8]> {
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
fn lookalike(c: char) -> Option<char> {
    Some(match c {
        '✕' | '✗' | '×' => 'x',
        '✓' | '✔' => 'v',
        '▸' | '▶' | '›' | '→' => '>',
        '◂' | '◀' | '‹' | '←' => '<',
        '★' | '☆' => '*',
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
fn braille_dots(c: char) -> Option<impl Iterator<Item = (usize, usize)>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::layout::Rect;
    use ratatui::style::Style;

    /// Styled text, a heatmap row of block and shade glyphs, modifiers, and a wide glyph.
    fn sample() -> Buffer {
        let mut buf = Buffer::empty(Rect::new(0, 0, 12, 4));
        let bold = Style::default()
            .fg(Color::Green)
            .add_modifier(Modifier::BOLD);
        buf.set_string(0, 0, "Hi <&> \"x\"", bold);
        buf.set_string(10, 0, "!", Style::default().fg(Color::Indexed(208)));
        let heat = ["█", "█", "▀", "▄", "░", "▒", "▓", "▁", "▆", "▌", "▐", "▏"];
        for (x, sym) in heat.iter().enumerate() {
            let v = 40 + 18 * x as u8;
            let style = Style::default()
                .fg(Color::Rgb(v, 30, 255 - v))
                .bg(Color::Rgb(10, 10, v / 2));
            buf.set_string(x as u16, 1, sym, style);
        }
        buf.set_string(1, 1, "█", Style::default().fg(Color::Rgb(40, 30, 215))); // merges with x = 0
        buf.set_string(0, 2, "it", Style::default().add_modifier(Modifier::ITALIC));
        let reversed = Style::default()
            .fg(Color::Yellow)
            .bg(Color::Blue)
            .add_modifier(Modifier::REVERSED);
        buf.set_string(3, 2, "rv", reversed);
        buf.set_string(6, 2, "dim", Style::default().add_modifier(Modifier::DIM));
        buf.set_string(2, 2, "│", Style::default().fg(Color::Cyan)); // box lines as bars
        buf.set_string(5, 2, "┏", Style::default().fg(Color::Cyan));
        let deco = Style::default().add_modifier(Modifier::UNDERLINED | Modifier::CROSSED_OUT);
        buf.set_string(10, 2, "u ", deco);
        buf.set_string(
            0,
            3,
            "世界 ok",
            Style::default().fg(Color::Rgb(255, 128, 0)),
        );
        buf.set_string(8, 3, "gr", Style::default().bg(Color::Indexed(244)));
        buf
    }

    #[test]
    fn svg_snapshot() {
        insta::assert_snapshot!(
            "svg",
            to_svg(&sample(), &Palette::dark(), Some("headscope <demo>"))
        );
    }

    #[test]
    fn html_snapshot() {
        insta::assert_snapshot!("html", to_html(&sample(), &Palette::light(), None));
    }

    #[test]
    fn text_snapshot() {
        insta::assert_snapshot!("text", to_text(&sample()));
    }

    #[test]
    fn png_decodes_to_the_grid_with_a_red_cell() {
        let mut buf = sample();
        buf.set_string(5, 0, " ", Style::default().bg(Color::Rgb(255, 0, 0)));
        let bytes = to_png(&buf, &Palette::dark()).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut img = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut img).unwrap();
        assert_eq!((info.width, info.height), (12 * 8, 4 * 16));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let at = |x: usize, y: usize| &img[(y * 96 + x) * 3..][..3];
        assert_eq!(at(5 * 8 + 4, 8), [255, 0, 0]); // the red cell
        assert_eq!(at(4, 16 + 8), [40, 30, 215]); // the full block's colour
        assert_eq!(at(2 * 8 + 3, 16 + 2), [76, 30, 179]); // ▀: the top half is the foreground,
        assert_eq!(at(2 * 8 + 3, 16 + 12), [10, 10, 38]); // the bottom half the background
        assert_eq!(at(0, 0), Palette::dark().ansi[2]); // the left stem of the bold green 'H'
        assert_eq!(at(11 * 8 + 7, 3 * 16 + 8), Palette::dark().bg); // plain background
    }

    #[test]
    fn png_draws_braille_dots() {
        // ⢁: dot 1 (left column, top row) and dot 8 (right column, bottom row).
        let mut buf = Buffer::empty(Rect::new(0, 0, 2, 1));
        buf.set_string(0, 0, "⢁", Style::default().fg(Color::Rgb(250, 250, 250)));
        let bytes = to_png(&buf, &Palette::dark()).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut img = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut img).unwrap();
        let at = |x: usize, y: usize| &img[(y * 16 + x) * 3..][..3];
        let ink = [250, 250, 250];
        assert_eq!(at(1, 1), ink, "dot 1");
        assert_eq!(at(5, 13), ink, "dot 8");
        for (x, y) in [(5, 1), (1, 13), (1, 5), (5, 9)] {
            assert_eq!(at(x, y), Palette::dark().bg, "no dot at ({x}, {y})");
        }
        assert!(braille_dots('a').is_none() && braille_dots('⠀').unwrap().count() == 0);
        // Symbols the font lacks fall back to ASCII look-alikes it has.
        for c in ['✕', '✓', '▸', '★', '␣', '…', '⟳', '−'] {
            assert!(lookalike(c).and_then(glyph).is_some(), "{c}");
        }
        assert_eq!(braille_dots('⣿').unwrap().count(), 8);
    }

    #[test]
    fn palette_resolution() {
        let p = Palette::dark();
        assert_eq!(p.resolve(Color::Reset, p.fg), p.fg);
        assert_eq!(p.resolve(Color::Red, p.fg), p.ansi[1]);
        assert_eq!(p.resolve(Color::Indexed(9), p.fg), p.ansi[9]);
        assert_eq!(p.resolve(Color::Indexed(16), p.fg), [0, 0, 0]);
        assert_eq!(p.resolve(Color::Indexed(208), p.fg), [255, 135, 0]);
        assert_eq!(p.resolve(Color::Indexed(231), p.fg), [255, 255, 255]);
        assert_eq!(p.resolve(Color::Indexed(232), p.fg), [8, 8, 8]);
        assert_eq!(p.resolve(Color::Indexed(255), p.fg), [238, 238, 238]);
        let themed = Palette::from_theme(Color::Rgb(1, 2, 3), Color::Rgb(250, 250, 240));
        assert_eq!(
            (themed.fg, themed.bg, themed.ansi),
            ([1, 2, 3], [250, 250, 240], Palette::light().ansi)
        );
        assert_eq!(
            Palette::from_theme(Color::Reset, Color::Reset),
            Palette::dark()
        );
    }

    #[test]
    fn formats_and_stems() {
        assert_eq!("SVG".parse::<ExportFormat>(), Ok(ExportFormat::Svg));
        assert_eq!(" text".parse::<ExportFormat>(), Ok(ExportFormat::Txt));
        assert!("jpeg".parse::<ExportFormat>().is_err());
        assert_eq!(stem_at(0), "headscope-19700101-000000");
        assert_eq!(stem_at(951_782_400), "headscope-20000229-000000");
        assert_eq!(stem_at(1_700_000_000), "headscope-20231114-221320");
        assert_eq!(timestamp_stem().len(), "headscope-YYYYMMDD-HHMMSS".len());
    }

    #[test]
    fn odd_buffers_do_not_panic() {
        let mut buf = Buffer::empty(Rect::new(3, 2, 4, 3));
        buf[(3, 2)].set_symbol("\x1b");
        buf[(4, 2)].set_symbol("");
        buf[(5, 2)].set_symbol("x").set_style(Modifier::HIDDEN);
        buf[(6, 2)].set_symbol("世"); // a wide glyph in the last column
        let forced = CellDiffOption::ForcedWidth(std::num::NonZeroU16::new(9).unwrap());
        buf[(3, 3)].set_symbol("\u{301}").set_diff_option(forced); // wider than the row
        buf[(3, 4)].set_symbol("a\u{85}b");
        buf[(6, 4)]
            .set_symbol("😀")
            .set_style(Modifier::ITALIC | Modifier::BOLD);
        for b in [&buf, &Buffer::empty(Rect::ZERO)] {
            let svg = to_svg(b, &Palette::light(), Some("\x07"));
            assert!(!svg.chars().any(|c| c.is_control() && c != '\n'));
            to_html(b, &Palette::light(), None);
            to_text(b);
            to_png(b, &Palette::light()).unwrap();
        }
        assert!(to_text(&buf).starts_with("   世\n\u{301}\na b"));
    }

    #[test]
    fn writes_files_atomically() {
        let dir =
            std::env::temp_dir().join(format!("headscope-export-test-{}", std::process::id()));
        let formats = [ExportFormat::Txt, ExportFormat::Png, ExportFormat::Txt];
        let paths = write_screenshot(&sample(), &Palette::dark(), &dir, &formats, "shot").unwrap();
        assert_eq!(paths, [dir.join("shot.txt"), dir.join("shot.png")]);
        assert_eq!(
            std::fs::read_to_string(&paths[0]).unwrap(),
            to_text(&sample())
        );
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2); // no temporary files left
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
