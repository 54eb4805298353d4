//! Colour resolution shared by every format: ratatui colours to RGB, and blending.

use ratatui::style::Color;

use super::Rgb;

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
pub(super) fn mix(a: Rgb, b: Rgb, num: u32, den: u32) -> Rgb {
    std::array::from_fn(|i| {
        ((u32::from(a[i]) * (den - num) + u32::from(b[i]) * num + den / 2) / den) as u8
    })
}

pub(super) fn hex([r, g, b]: Rgb) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}
