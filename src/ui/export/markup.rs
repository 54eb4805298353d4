//! What the SVG and the HTML share: escaping, the font stack, and font properties named alike as
//! SVG attributes and CSS properties.

use super::cells::Look;

/// XML/HTML escaping; control characters (invalid in XML) become spaces.
pub(super) fn esc(s: &str) -> String {
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

pub(super) const FONT: &str = "'DejaVu Sans Mono','JetBrains Mono','Cascadia Mono',Menlo,Consolas,'Liberation Mono',monospace";

/// Bold, italic and decorations, named alike as SVG attributes and CSS properties.
pub(super) fn font_props(look: &Look) -> impl Iterator<Item = (&'static str, &'static str)> {
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
