//! The formats on a small buffer: snapshots of the SVG, HTML and text, PNG pixels, odd buffers.

use ratatui::buffer::CellDiffOption;
use ratatui::style::{Color, Modifier};

use super::png::{braille_dots, glyph, lookalike};
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
    let mut reader = ::png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut img = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut img).unwrap();
    assert_eq!((info.width, info.height), (12 * 8, 4 * 16));
    assert_eq!(info.color_type, ::png::ColorType::Rgb);
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
    let mut reader = ::png::Decoder::new(std::io::Cursor::new(bytes))
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
    for c in ['✕', '✓', '▸', '★', '␣', '…', '⟳', '−', '◆', '•'] {
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
    let dir = std::env::temp_dir().join(format!("headscope-export-test-{}", std::process::id()));
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
