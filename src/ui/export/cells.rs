//! The shared cell model: the cells a terminal draws (skipping the cell hidden under each wide
//! glyph), each cell's resolved look, and what it paints (a background, a block or box shape, text).

use std::borrow::Cow;

use ratatui::buffer::{Buffer, Cell, CellDiffOption, CellWidth as _};
use ratatui::style::Modifier;

use super::palette::{mix, Palette};
use super::Rgb;

/// A cell the terminal draws, and how many columns it covers.
pub(super) struct Vis<'a> {
    pub(super) x: u16,
    pub(super) w: u16,
    pub(super) cell: &'a Cell,
}

/// The drawn cells of each row; the cells under the right half of a wide glyph are skipped, as
/// ratatui's own `Debug` for `Buffer` does.
pub(super) fn visible(buf: &Buffer) -> Vec<Vec<Vis<'_>>> {
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

pub(super) fn blank(w: u16) -> Cow<'static, str> {
    Cow::Owned(" ".repeat(usize::from(w)))
}

/// The text a cell shows: hidden cells are blank, control characters (which would corrupt XML or
/// a terminal reading the .txt) become spaces.
pub(super) fn shown<'a>(v: &Vis<'a>) -> Cow<'a, str> {
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
pub(super) struct Look {
    pub(super) fg: Rgb,
    pub(super) bg: Rgb,
    pub(super) bold: bool,
    pub(super) italic: bool,
    pub(super) underline: bool,
    pub(super) strike: bool,
    pub(super) dim: bool,
}

impl Look {
    pub(super) fn of(cell: &Cell, palette: &Palette) -> Self {
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
    pub(super) fn ink(&self) -> Rgb {
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
pub(super) enum Block {
    Part([u8; 4]),
    Shade(u32),
    Lines(u8, bool),
}

pub(super) fn block(sym: &str) -> Option<Block> {
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
pub(super) struct Paint<'a> {
    pub(super) x: u16,
    pub(super) w: u16,
    pub(super) bg: Rgb,
    pub(super) shape: Option<(Rgb, Block)>,
    pub(super) text: Cow<'a, str>,
    pub(super) shown: Cow<'a, str>,
    pub(super) look: Look,
}

pub(super) fn paints<'a>(buf: &'a Buffer, palette: &Palette) -> Vec<Vec<Paint<'a>>> {
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
pub(super) fn is_blank(p: &Paint) -> bool {
    let lines = matches!(p.shape, Some((_, Block::Lines(..))));
    lines || !p.look.underline && !p.look.strike && p.text.chars().all(char::is_whitespace)
}

/// First column and width in columns of a run of cells.
pub(super) fn extent(run: &[Paint]) -> (u32, u32) {
    let (first, last) = (&run[0], &run[run.len() - 1]);
    (u32::from(first.x), u32::from(last.x + last.w - first.x))
}

/// Same-style runs of glyphs. Blanks inside a run join it (they draw nothing), so only a change of
/// style or a decorated run meeting a blank splits the text.
pub(super) fn text_runs<'r, 'a>(row: &'r [Paint<'a>]) -> Vec<&'r [Paint<'a>]> {
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
