//! The rendered, tokenised prompt ([`RagPrompt`]) and the spans of its parts.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::compose::{compose_builtin, doc_pieces, Composed};
use super::{Granularity, PromptFormat, Sample};
use crate::engine::chat::{ChatMessage, ChatTemplate};
use crate::engine::tokenizer::encode_with_offsets;
use crate::{Error, Result};

/// A piece of the prompt: a byte range in [`RagPrompt::text`] and the token range that covers it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Span {
    /// Byte range in the prompt text.
    pub chars: Range<usize>,
    /// Token index range in the prompt ids.
    pub tokens: Range<usize>,
}

impl Span {
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// A RAG prompt, rendered and tokenised, with the spans of its parts.
///
/// **Token rule.** Each token has an *anchor*: the byte offset of its first non-whitespace byte in
/// the prompt text, or its first byte when the token is all whitespace (or empty). A token belongs
/// to the span that contains its anchor; a span `[start, end)` of bytes covers the tokens
/// `[first token with anchor >= start, first token with anchor >= end)`. So
/// * a token that merges a document's last character with the separator after it (Qwen's `".\n"`
///   or `".\n\n"`) belongs to the document;
/// * a token that carries the space before a word (`" The"`) belongs to the span of that word,
///   so a sentence's first word belongs to the sentence, not to the gap before it;
/// * whitespace-only tokens between spans (`"\n"`, `"\n\n"`) belong to no span;
/// * spans never share a token, and an empty byte range gives an empty token range at the
///   position where the text would have been.
///
/// Spans of documents and sentences are indexed like the sample's documents and sentences, also in
/// leave-out prompts (removed sources have empty spans).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RagPrompt {
    /// How the user message was written (serialised as `style`, plus `instruction` and
    /// `template` when given).
    #[serde(flatten)]
    pub format: PromptFormat,
    /// The rendered chat prompt (the model's input text), ending with the generation prompt.
    pub text: String,
    /// Its token ids (encoded once, without adding special tokens).
    pub ids: Vec<u32>,
    /// Per token, its byte range in `text` (see `engine::tokenizer::encode_with_offsets`).
    pub token_offsets: Vec<(usize, usize)>,
    /// One span per document of the sample. In Mirage style a document's span covers its whole
    /// line, `Document [i](Title: T): text`; in context-query style `T\ntext` (or `text`); with
    /// a user template from its title (when written right before its text) to the end of its text.
    pub docs: Vec<Span>,
    /// Per document, one span per sentence of its text (see [`split_sentences`]).
    pub sentences: Vec<Vec<Span>>,
    /// The question's text (without the `Query: ` label).
    pub question: Span,
    /// The user message as written, before the chat template.
    pub user_message: String,
    /// Byte offset of the user message inside `text`.
    pub user_message_start: usize,
}

/// Per token, the anchor byte of the token rule (see [`RagPrompt`]); non-decreasing.
fn token_anchors(text: &str, offsets: &[(usize, usize)]) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut prev = 0;
    offsets
        .iter()
        .map(|&(s, e)| {
            let (s, e) = (s.min(bytes.len()), e.min(bytes.len()));
            let slice = text.get(s..e.max(s)).unwrap_or("");
            let anchor = match slice.find(|c: char| !c.is_whitespace()) {
                Some(p) => s + p,
                None => s,
            };
            prev = anchor.max(prev);
            prev
        })
        .collect()
}

fn to_span(anchors: &[usize], chars: Range<usize>) -> Span {
    let start = anchors.partition_point(|&a| a < chars.start);
    let end = anchors.partition_point(|&a| a < chars.end).max(start);
    Span {
        chars,
        tokens: start..end,
    }
}

/// Write the user message for `sample` with the kept documents and sentences, as `format` says.
fn compose(
    sample: &Sample,
    format: &PromptFormat,
    keep_docs: &[bool],
    keep_sents: &[Vec<bool>],
) -> Result<Composed> {
    let pieces = doc_pieces(sample, keep_docs, keep_sents);
    let instruction = format.instruction.as_deref();
    match &format.template {
        Some(t) => t.compose(&pieces, &sample.question, instruction),
        None => Ok(compose_builtin(
            &pieces,
            &sample.question,
            format.style,
            instruction,
        )),
    }
}

fn assemble(
    sample: &Sample,
    format: &PromptFormat,
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    keep_docs: &[bool],
    keep_sents: &[Vec<bool>],
) -> Result<RagPrompt> {
    let c = compose(sample, format, keep_docs, keep_sents)?;
    let text = template.render(&[ChatMessage::user(c.message.clone())], true)?;
    let Some(at) = text.find(&c.message) else {
        return Err(Error::Template(format!(
            "the chat template changed the user message (it does not appear verbatim in the \
             rendered prompt), so document and question positions cannot be located; rendered \
             prompt starts: {:?}",
            text.chars().take(200).collect::<String>()
        )));
    };
    let (ids, offsets) = encode_with_offsets(tokenizer, &text)?;
    let anchors = token_anchors(&text, &offsets);
    let shift = |r: &Range<usize>| at + r.start..at + r.end;
    let docs = c.docs.iter().map(|r| to_span(&anchors, shift(r))).collect();
    let sentences = c
        .sentences
        .iter()
        .map(|doc| doc.iter().map(|r| to_span(&anchors, shift(r))).collect())
        .collect();
    let question = to_span(&anchors, shift(&c.question));
    Ok(RagPrompt {
        format: format.clone(),
        text,
        ids,
        token_offsets: offsets,
        docs,
        sentences,
        question,
        user_message: c.message,
        user_message_start: at,
    })
}

impl RagPrompt {
    /// Build the prompt for a sample with every document and sentence.
    pub fn build(
        sample: &Sample,
        format: &PromptFormat,
        template: &ChatTemplate,
        tokenizer: &Tokenizer,
    ) -> Result<RagPrompt> {
        let keep_docs = vec![true; sample.docs.len()];
        let keep_sents: Vec<Vec<bool>> = sample
            .sentences()
            .iter()
            .map(|s| vec![true; s.len()])
            .collect();
        assemble(sample, format, template, tokenizer, &keep_docs, &keep_sents)
    }

    /// Build a leave-out prompt: the sample with only the sources where `keep` is true.
    ///
    /// * `Granularity::Document`: `keep` has one entry per document. Removed documents are dropped
    ///   from the message. The remaining documents **keep their original 1-based numbers** in Mirage
    ///   style (`Document [1]`, `Document [3]`, ...), so the model sees the same labels as in the full
    ///   prompt and a citation "[3]" means the same document in every variant.
    /// * `Granularity::Sentence`: `keep` has one entry per sentence, over all documents in order
    ///   (document 0's sentences first). Removed sentences are cut from their document's text; kept
    ///   ones are joined with the original separators between them (ContextCite's reconstruction,
    ///   ANALYSES.md, "Common ground"). Document headers and titles stay, even when all their sentences are removed
    ///   (in context-query style a document with no title and no sentence left disappears).
    ///
    /// With all documents removed the Mirage message is the question alone; the context-query message
    /// is `Context: \n\nQuery: {question}` (ContextCite's empty context).
    ///
    /// With a user template, removed documents are left out of its `docs` and removed sentences
    /// cut from `doc.text` the same way.
    ///
    /// Removed sources have empty spans at the position where they would have been.
    pub fn build_with_sources(
        sample: &Sample,
        format: &PromptFormat,
        template: &ChatTemplate,
        tokenizer: &Tokenizer,
        keep: &[bool],
        granularity: Granularity,
    ) -> Result<RagPrompt> {
        let sents = sample.sentences();
        let n = match granularity {
            Granularity::Document => sample.docs.len(),
            Granularity::Sentence => sents.iter().map(Vec::len).sum(),
        };
        if keep.len() != n {
            return Err(Error::Hook(format!(
                "leave-out mask has {} entries but the sample has {n} {}s",
                keep.len(),
                granularity
            )));
        }
        let (keep_docs, keep_sents) = match granularity {
            Granularity::Document => (
                keep.to_vec(),
                sents
                    .iter()
                    .map(|s| vec![true; s.len()])
                    .collect::<Vec<_>>(),
            ),
            Granularity::Sentence => {
                let mut rest = keep;
                let per_doc = sents
                    .iter()
                    .map(|s| {
                        let (mine, tail) = rest.split_at(s.len());
                        rest = tail;
                        mine.to_vec()
                    })
                    .collect();
                (vec![true; sample.docs.len()], per_doc)
            }
        };
        assemble(sample, format, template, tokenizer, &keep_docs, &keep_sents)
    }

    /// The same sample in this prompt's format with only the sources where `keep` is true
    /// ([`RagPrompt::build_with_sources`]). `sample` must be the one this prompt was built from.
    pub fn without_sources(
        &self,
        sample: &Sample,
        template: &ChatTemplate,
        tokenizer: &Tokenizer,
        keep: &[bool],
        granularity: Granularity,
    ) -> Result<RagPrompt> {
        Self::build_with_sources(sample, &self.format, template, tokenizer, keep, granularity)
    }

    /// Number of prompt tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Positions of the answer's tokens in the concatenated ids `prompt ++ answer`:
    /// `prompt_len .. prompt_len + answer_len`.
    pub fn answer_span(&self, answer_len: usize) -> Range<usize> {
        self.ids.len()..self.ids.len() + answer_len
    }

    /// The sources at a granularity: the documents, or all sentences flattened in order
    /// (document 0's sentences first), matching the `keep` masks of [`RagPrompt::build_with_sources`].
    pub fn sources(&self, granularity: Granularity) -> Vec<Span> {
        match granularity {
            Granularity::Document => self.docs.clone(),
            Granularity::Sentence => self.sentences.iter().flatten().cloned().collect(),
        }
    }

    /// Short labels for the sources, in the order of [`RagPrompt::sources`]: `D1`, `D2`, ... or
    /// `D1.S1`, `D1.S2`, ... (1-based, as the prompt numbers documents).
    pub fn source_labels(&self, granularity: Granularity) -> Vec<String> {
        match granularity {
            Granularity::Document => (1..=self.docs.len()).map(|i| format!("D{i}")).collect(),
            Granularity::Sentence => self
                .sentences
                .iter()
                .enumerate()
                .flat_map(|(d, s)| (1..=s.len()).map(move |k| format!("D{}.S{k}", d + 1)))
                .collect(),
        }
    }

    /// The span of a byte range of the prompt text, by the token rule above.
    pub fn span_of(&self, chars: Range<usize>) -> Span {
        to_span(&token_anchors(&self.text, &self.token_offsets), chars)
    }

    /// The prompt text of a span.
    pub fn span_text(&self, span: &Span) -> &str {
        self.text.get(span.chars.clone()).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_skip_leading_whitespace() {
        let text = "a. The\n\nb";
        // Tokens "a", ".", " The", "\n\n", "b".
        let offsets = [(0, 1), (1, 2), (2, 6), (6, 8), (8, 9)];
        let anchors = token_anchors(text, &offsets);
        assert_eq!(anchors, [0, 1, 3, 6, 8]);
        assert_eq!(to_span(&anchors, 3..6).tokens, 2..3);
        assert_eq!(to_span(&anchors, 0..2).tokens, 0..2);
        assert_eq!(to_span(&anchors, 8..9).tokens, 4..5);
        assert_eq!(to_span(&anchors, 6..6).tokens, 3..3);
        assert_eq!(to_span(&[], 0..5).tokens, 0..0);
    }
}
