//! HTML: a standalone page, a `<pre>` of styled `<span>` runs.

use ratatui::buffer::Buffer;

use super::cells::{paints, Look};
use super::markup::{esc, font_props, FONT};
use super::palette::{hex, Palette};

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
