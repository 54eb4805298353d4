//! The user message in a built-in [`PromptStyle`], with the byte ranges of its parts.

use std::fmt::Write as _;
use std::ops::Range;

use super::sentences::compose_sentences;
use super::{split_sentences, PromptStyle, Sample};

/// What the user message contains, with byte ranges relative to the message.
pub(super) struct Composed {
    pub message: String,
    pub docs: Vec<Range<usize>>,
    pub sentences: Vec<Vec<Range<usize>>>,
    pub question: Range<usize>,
}

/// One document as it goes into a message, whatever writes it (a built-in style or a user
/// template).
pub(super) struct DocPiece<'a> {
    /// Its 1-based number in the sample (kept in leave-out prompts).
    pub number: usize,
    /// The trimmed title.
    pub title: &'a str,
    /// The kept sentences of the trimmed text, joined as [`compose_sentences`] does.
    pub body: String,
    /// Per sentence of the document, its range in `body` (removed ones: empty).
    pub sentences: Vec<Range<usize>>,
    /// False for a document left out of the prompt: it is not written at all.
    pub kept: bool,
}

/// The documents of `sample` with the kept documents and sentences. Document texts and titles
/// are trimmed (chat templates such as Llama 3's and Gemma's trim the message, and the message
/// must appear verbatim in the rendered prompt).
pub(super) fn doc_pieces<'a>(
    sample: &'a Sample,
    keep_docs: &[bool],
    keep_sents: &[Vec<bool>],
) -> Vec<DocPiece<'a>> {
    sample
        .docs
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            let text = doc.text.trim();
            let sents = split_sentences(text);
            let (body, sentences) = if keep_docs[i] {
                compose_sentences(text, &sents, &keep_sents[i])
            } else {
                (String::new(), vec![0..0; sents.len()])
            };
            DocPiece {
                number: i + 1,
                title: doc.title.trim(),
                body,
                sentences,
                kept: keep_docs[i],
            }
        })
        .collect()
}

/// The instruction as written: trimmed, `None` when absent or blank (so that an empty
/// `--instruction ""` leaves the prompt as it is without one).
pub(super) fn written_instruction(instruction: Option<&str>) -> Option<&str> {
    instruction.map(str::trim).filter(|i| !i.is_empty())
}

/// Write the user message in a built-in style (see [`PromptStyle`]); an instruction goes on its
/// own line(s) right before the question (in context-query style before `Query: `).
pub(super) fn compose_builtin(
    pieces: &[DocPiece],
    question: &str,
    style: PromptStyle,
    instruction: Option<&str>,
) -> Composed {
    let mut msg = String::new();
    let mut docs = Vec::with_capacity(pieces.len());
    let mut sentences = Vec::with_capacity(pieces.len());
    let mut wrote_doc = false;
    if style == PromptStyle::ContextQuery {
        msg.push_str("Context: ");
    }
    for p in pieces {
        let piece = write_doc(p, style);
        let Some((piece, body_at)) = piece.filter(|_| p.kept) else {
            // Left out, or a context-query document with no title and no kept sentence: nothing
            // to write; empty spans where it would have been.
            let at = msg.len();
            docs.push(at..at);
            sentences.push(vec![at..at; p.sentences.len()]);
            continue;
        };
        if wrote_doc {
            msg.push_str(match style {
                PromptStyle::Mirage => "\n",
                PromptStyle::ContextQuery => "\n\n",
            });
        }
        wrote_doc = true;
        let start = msg.len();
        msg.push_str(&piece);
        docs.push(start..msg.len());
        let at = start + body_at;
        sentences.push(
            p.sentences
                .iter()
                .map(|r| at + r.start..at + r.end)
                .collect(),
        );
    }
    match style {
        PromptStyle::Mirage if wrote_doc => msg.push_str("\n\n"),
        PromptStyle::Mirage => {}
        PromptStyle::ContextQuery => msg.push_str("\n\n"),
    }
    if let Some(instruction) = written_instruction(instruction) {
        msg.push_str(instruction);
        msg.push('\n');
    }
    if style == PromptStyle::ContextQuery {
        msg.push_str("Query: ");
    }
    let q = msg.len();
    msg.push_str(question.trim());
    Composed {
        question: q..msg.len(),
        message: msg,
        docs,
        sentences,
    }
}

/// A document's own text (header or title, then the body) and the body's offset in it; `None`
/// when there is nothing to write.
fn write_doc(p: &DocPiece, style: PromptStyle) -> Option<(String, usize)> {
    let mut piece = String::new();
    match style {
        PromptStyle::Mirage => {
            let _ = write!(piece, "Document [{}](Title: {}): ", p.number, p.title);
        }
        PromptStyle::ContextQuery => {
            if !p.title.is_empty() {
                piece.push_str(p.title);
                if !p.body.is_empty() {
                    piece.push('\n');
                }
            }
        }
    }
    let body_at = piece.len();
    piece.push_str(&p.body);
    (!piece.is_empty()).then_some((piece, body_at))
}
