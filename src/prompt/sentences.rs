//! Sentence splitting of document texts, and a document's text with only some sentences kept.

use std::ops::Range;

/// Words that end in a period without ending a sentence (compared lower-cased, without the period).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "messrs", "dr", "prof", "sr", "jr", "st", "mt", "ft", "vs", "etc", "cf",
    "ca", "approx", "al", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
    "nov", "dec", "inc", "ltd", "co", "corp", "bros", "gen", "col", "lt", "sgt", "capt", "cmdr",
    "adm", "gov", "sen", "rep", "pres", "rev", "hon", "dept", "univ", "assn", "ave", "blvd", "rd",
    "eds", "esp", "viz",
];

/// Abbreviations that precede a number ("No. 5", "p. 12"); only abbreviations when a digit
/// follows, since some are also words ("no").
const NUMBER_ABBREVIATIONS: &[&str] = &[
    "no", "nos", "p", "pp", "fig", "figs", "vol", "vols", "ch", "op", "art", "sec", "para", "nr",
];

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '‽')
}

fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | '”' | '’' | ')' | ']' | '}' | '»' | '›')
}

fn is_opener(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | '“' | '‘' | '(' | '[' | '{' | '«' | '‹' | '¿' | '¡'
    )
}

/// A character that may begin a new sentence: an upper-case (or uncased) letter, a digit, or an
/// opening quote or bracket.
fn starts_sentence(c: char) -> bool {
    (c.is_alphabetic() && !c.is_lowercase()) || c.is_numeric() || is_opener(c)
}

/// Line breaks as in Python's `str.splitlines` (`\r\n` counts as one).
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\u{0b}'
            | '\u{0c}'
            | '\u{1c}'
            | '\u{1d}'
            | '\u{1e}'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// Is the period at byte `dot` of `line` the end of an abbreviation, given what follows (`next`,
/// the first character after the whitespace)?
fn is_abbreviation(line: &str, dot: usize, next: char) -> bool {
    let before = &line[..dot];
    let word_start = before
        .char_indices()
        .rev()
        .find(|&(_, c)| c.is_whitespace())
        .map_or(0, |(p, c)| p + c.len_utf8());
    let word = before[word_start..].trim_start_matches(is_opener);
    if word.is_empty() {
        return false;
    }
    let lower = word.to_lowercase();
    if ABBREVIATIONS.contains(&lower.as_str()) {
        return true;
    }
    if NUMBER_ABBREVIATIONS.contains(&lower.as_str()) && next.is_ascii_digit() {
        return true;
    }
    let mut chars = word.chars();
    // A single letter: an initial ("J. R. R. Tolkien").
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return c.is_alphabetic();
    }
    // Dotted letters: "U.S", "e.g", "i.e", "a.m", "Ph.D".
    word.contains('.')
        && word.split('.').all(|seg| {
            !seg.is_empty() && seg.chars().count() <= 3 && seg.chars().all(char::is_alphabetic)
        })
}

/// Split text into sentences; returns byte ranges into `text`, trimmed (no leading or trailing
/// whitespace), in order, never empty.
///
/// A rule-based stand-in for NLTK's punkt, which ContextCite and ARC-JSD split documents with: the
/// text is first cut into lines (every line break ends a sentence; blank lines yield nothing),
/// then each line is cut after `.`, `!`, `?` or `…` (a run of them, plus any closing quotes or
/// brackets) when whitespace follows and the next word starts with an upper-case or uncased
/// letter, a digit or an opening quote/bracket. A period does not end a sentence after a common
/// abbreviation (Mr. Dr. St. etc. Jan. Inc. ...), after "No."/"p."/"Fig."... before a number,
/// after a single-letter initial ("J."), or after dotted letters ("U.S.", "e.g.", "Ph.D.").
/// Decimals ("3.14") never split since no whitespace follows their point.
pub fn split_sentences(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut line_start = 0;
    let mut iter = text.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        if is_line_break(c) {
            split_line(text, line_start..i, &mut out);
            let mut next = i + c.len_utf8();
            if c == '\r' {
                if let Some(&(j, '\n')) = iter.peek() {
                    iter.next();
                    next = j + 1;
                }
            }
            line_start = next;
        }
    }
    split_line(text, line_start..text.len(), &mut out);
    out
}

fn push_trimmed(text: &str, r: Range<usize>, out: &mut Vec<Range<usize>>) {
    let s = &text[r.clone()];
    let lead = s.len() - s.trim_start().len();
    let trail = s.len() - s.trim_end().len();
    if lead + trail < s.len() {
        out.push(r.start + lead..r.end - trail);
    }
}

fn split_line(text: &str, range: Range<usize>, out: &mut Vec<Range<usize>>) {
    let base = range.start;
    let line = &text[range];
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let n = chars.len();
    let mut seg_start = 0;
    let mut i = 0;
    while i < n {
        let (pos, c) = chars[i];
        if !is_terminator(c) {
            i += 1;
            continue;
        }
        // The run of terminators and closing quotes/brackets.
        let mut j = i + 1;
        while j < n && (is_terminator(chars[j].1) || is_closer(chars[j].1)) {
            j += 1;
        }
        let mut k = j;
        while k < n && chars[k].1.is_whitespace() {
            k += 1;
        }
        if k > j && k < n && starts_sentence(chars[k].1) {
            let lone_period = c == '.' && !chars[i + 1..j].iter().any(|&(_, d)| is_terminator(d));
            if !(lone_period && is_abbreviation(line, pos, chars[k].1)) {
                push_trimmed(text, base + seg_start..base + chars[j].0, out);
                seg_start = chars[k].0;
                i = k;
                continue;
            }
        }
        i = j;
    }
    push_trimmed(text, base + seg_start..base + line.len(), out);
}

/// The text of a document with only the kept sentences, following ContextCite's reconstruction
/// (ANALYSES.md, "Common ground"): kept sentences in order, each preceded by the original text
/// between it and the sentence before it (the first kept one by nothing). Returns the text and
/// each sentence's byte range in it (removed sentences: an empty range where they would have been).
pub(super) fn compose_sentences(
    text: &str,
    sentences: &[Range<usize>],
    keep: &[bool],
) -> (String, Vec<Range<usize>>) {
    let mut out = String::new();
    let mut spans = Vec::with_capacity(sentences.len());
    let mut any = false;
    for (k, s) in sentences.iter().enumerate() {
        if !keep[k] {
            spans.push(out.len()..out.len());
            continue;
        }
        if any {
            let prev_end = sentences[k - 1].end;
            out.push_str(&text[prev_end..s.start]);
        }
        any = true;
        let start = out.len();
        out.push_str(&text[s.clone()]);
        spans.push(start..out.len());
    }
    (out, spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sents(text: &str) -> Vec<&str> {
        split_sentences(text)
            .into_iter()
            .map(|r| &text[r])
            .collect()
    }

    #[test]
    fn splits_plain_sentences() {
        assert_eq!(
            sents("The cat sat. The dog ran! Did it? Yes."),
            ["The cat sat.", "The dog ran!", "Did it?", "Yes."]
        );
        assert!(sents("").is_empty());
        assert!(sents("   \n\n  ").is_empty());
        assert_eq!(sents("  No terminator here  "), ["No terminator here"]);
    }

    #[test]
    fn abbreviations_and_initials_do_not_split() {
        assert_eq!(
            sents("Dr. Smith met Mr. and Mrs. Jones on Main St. Tuesday. They talked."),
            [
                "Dr. Smith met Mr. and Mrs. Jones on Main St. Tuesday.",
                "They talked."
            ]
        );
        assert_eq!(
            sents("J. R. R. Tolkien wrote it. Fans loved it."),
            ["J. R. R. Tolkien wrote it.", "Fans loved it."]
        );
        assert_eq!(
            sents("The U.S. Army was founded in 1775. It is the oldest branch."),
            [
                "The U.S. Army was founded in 1775.",
                "It is the oldest branch."
            ]
        );
        assert_eq!(
            sents("Some fruits, e.g. Apples, are red. Others, i.e. Limes, are not."),
            [
                "Some fruits, e.g. Apples, are red.",
                "Others, i.e. Limes, are not."
            ]
        );
        assert_eq!(
            sents("It opened on Jan. 5, 1901. Trade grew, etc. Then it closed."),
            [
                "It opened on Jan. 5, 1901.",
                "Trade grew, etc. Then it closed."
            ]
        );
        assert_eq!(
            sents("Smith vs. Jones was decided. Appeals followed."),
            ["Smith vs. Jones was decided.", "Appeals followed."]
        );
    }

    #[test]
    fn number_abbreviations_only_before_numbers() {
        assert_eq!(
            sents("See No. 5 for details. Then go."),
            ["See No. 5 for details.", "Then go."]
        );
        assert_eq!(
            sents("He said no. Then he left."),
            ["He said no.", "Then he left."]
        );
        assert_eq!(
            sents("It is on p. 12 of the book. Read it."),
            ["It is on p. 12 of the book.", "Read it."]
        );
    }

    #[test]
    fn decimals_numbers_and_lowercase() {
        assert_eq!(
            sents("Pi is about 3.14. That is all."),
            ["Pi is about 3.14.", "That is all."]
        );
        assert_eq!(
            sents("Version 2.0 shipped. 300 people came."),
            ["Version 2.0 shipped.", "300 people came."]
        );
        assert_eq!(
            sents("It ended. then it resumed."),
            ["It ended. then it resumed."]
        );
        assert_eq!(sents("It costs $5.99 today."), ["It costs $5.99 today."]);
    }

    #[test]
    fn quotes_brackets_and_ellipses() {
        assert_eq!(
            sents("She asked, \"Is it true?\" He nodded. \"Yes,\" she said."),
            [
                "She asked, \"Is it true?\"",
                "He nodded.",
                "\"Yes,\" she said."
            ]
        );
        assert_eq!(
            sents("(See below.) The next part."),
            ["(See below.)", "The next part."]
        );
        assert_eq!(
            sents("Wait... What happened?! Nothing."),
            ["Wait...", "What happened?!", "Nothing."]
        );
        assert_eq!(
            sents("He wrote “Done.” Then he slept."),
            ["He wrote “Done.”", "Then he slept."]
        );
    }

    #[test]
    fn newlines_always_split_and_ranges_are_trimmed() {
        let text = "  Line one\nLine two. Three.\r\n\r\n  Last line  \n";
        let r = split_sentences(text);
        let got: Vec<&str> = r.iter().map(|x| &text[x.clone()]).collect();
        assert_eq!(got, ["Line one", "Line two.", "Three.", "Last line"]);
        for x in &r {
            let s = &text[x.clone()];
            assert_eq!(s, s.trim());
        }
        assert_eq!(sents("a\u{2028}b"), ["a", "b"]);
    }

    #[test]
    fn unicode_byte_ranges() {
        let text = "Café au lait is sweet. Übermensch is a word. Ελλάδα είναι χώρα. Ναι.";
        assert_eq!(
            sents(text),
            [
                "Café au lait is sweet.",
                "Übermensch is a word.",
                "Ελλάδα είναι χώρα.",
                "Ναι."
            ]
        );
    }

    #[test]
    fn reconstruction_with_all_kept_is_identity() {
        let text = "One. Two!  Three?\nFour.\n\nFive";
        let s = split_sentences(text);
        let (all, spans) = compose_sentences(text, &s, &vec![true; s.len()]);
        assert_eq!(all, text);
        assert_eq!(spans, s);
        let (some, spans) = compose_sentences(text, &s, &[false, true, false, true, true]);
        assert_eq!(some, "Two!\nFour.\n\nFive");
        assert_eq!(spans[0], 0..0);
        assert_eq!(&some[spans[1].clone()], "Two!");
        assert_eq!(spans[2], 4..4);
        assert_eq!(&some[spans[4].clone()], "Five");
    }
}
