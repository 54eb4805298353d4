//! Plain text: the characters only.

use ratatui::buffer::Buffer;

use super::cells::{shown, visible};

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
