//! Samples and RAG prompts: loading (good and bad files), spans, leave-out prompts, and the
//! shipped samples in samples/.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use headscope::engine::{ChatMessage, ChatTemplate};
use headscope::prompt::{
    load_samples, split_sentences, Document, Granularity, PromptStyle, RagPrompt, Sample,
};
use serde_json::{json, Value};
use tokenizers::Tokenizer;

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

pub(crate) fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("headscope-prompt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Loads `bytes` as a sample file; returns the error message, checked to name the file.
fn load_err(name: &str, bytes: &[u8]) -> String {
    let d = tmp_dir(name);
    let p = write(&d, &format!("{name}.json"), bytes);
    let err = load_samples(&p).expect_err("expected an error").to_string();
    assert!(
        err.contains(&p.display().to_string()),
        "message does not name the file: {err}"
    );
    err
}

/// A tiny byte-level BPE tokenizer with Qwen2's pre-tokenizer, built in memory: every byte is a
/// token, plus merges for a few words (with and without a leading space) and for `".\n"`,
/// `".\n\n"` and `"\n\n"`, so that, as with Qwen, a document's final period and the newline
/// after it are one token.
pub(crate) fn tiny_tokenizer() -> Tokenizer {
    let table = headscope::engine::tokenizer::byte_level_alphabet();
    let bl =
        |s: &str| -> Vec<String> { s.bytes().map(|b| table[b as usize].to_string()).collect() };
    let mut vocab: Vec<String> = vec!["<|im_start|>".into(), "<|im_end|>".into()];
    vocab.extend(table.iter().map(|c| c.to_string()));
    let mut merges: Vec<String> = Vec::new();
    let mut add_word = |word: &str, vocab: &mut Vec<String>| {
        let pieces = bl(word);
        let mut acc = pieces[0].clone();
        for p in &pieces[1..] {
            let merged = format!("{acc}{p}");
            let rule = format!("{acc} {p}");
            if !merges.contains(&rule) {
                merges.push(rule);
            }
            if !vocab.contains(&merged) {
                vocab.push(merged.clone());
            }
            acc = merged;
        }
    };
    for w in [
        ".\n\n", ".\n", "\n\n", "Document", "Title", "Context", "Query",
    ] {
        add_word(w, &mut vocab);
    }
    for w in [
        "The",
        "the",
        "is",
        "of",
        "in",
        "river",
        "town",
        "village",
        "county",
        "and",
        "was",
        "user",
        "assistant",
    ] {
        add_word(&format!(" {w}"), &mut vocab);
        add_word(w, &mut vocab);
    }
    let vocab: serde_json::Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    let regex = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let tj = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<|im_start|>"), special(1, "<|im_end|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "vocab": vocab, "merges": merges}
    });
    tj.to_string()
        .parse::<Tokenizer>()
        .expect("tiny tokenizer builds")
}

pub(crate) fn sample() -> Sample {
    let mut s = Sample::new(
        "Which river flows through Harrowgate?",
        vec![
            Document::new(
                "Millbrook",
                "Millbrook is a village in the east of Calden County. It is known for its wool market. The village has no river.",
            ),
            Document::new(
                "Harrowgate",
                "Harrowgate is a small market town. The River Verrin flows through the town, and Dr. Moss built its bridge in 1742.",
            ),
            Document::new("", "  Calden County is rural; its café is famous. Its largest town is Eastwick.  "),
        ],
    );
    s.extra.insert("gold".into(), json!(1));
    s
}

/// The text of a token range (from the first token's start to the last token's end).
fn tokens_text<'a>(p: &'a RagPrompt, r: &std::ops::Range<usize>) -> &'a str {
    if r.is_empty() {
        return "";
    }
    &p.text[p.token_offsets[r.start].0..p.token_offsets[r.end - 1].1]
}

/// Checks every invariant of the spans of a prompt built from `s`.
pub(crate) fn check_spans(p: &RagPrompt, s: &Sample, tok: &Tokenizer) {
    assert_eq!(p.ids.len(), p.token_offsets.len());
    assert!(p.text[p.user_message_start..].starts_with(&p.user_message));
    assert_eq!(p.docs.len(), s.docs.len());
    assert_eq!(p.sentences.len(), s.docs.len());
    let mut prev_chars = 0;
    let mut prev_tokens = 0;
    for (i, (span, doc)) in p.docs.iter().zip(&s.docs).enumerate() {
        let text = doc.text.trim();
        assert!(
            span.chars.start >= prev_chars && span.tokens.start >= prev_tokens,
            "doc {i} overlaps the previous"
        );
        assert!(span.chars.end >= span.chars.start && span.tokens.end >= span.tokens.start);
        let complete = p.sentences[i].iter().all(|x| !x.chars.is_empty());
        if !span.chars.is_empty() && complete {
            assert!(
                p.span_text(span).contains(text),
                "doc {i}: {:?}",
                p.span_text(span)
            );
            assert!(
                tokens_text(p, &span.tokens).contains(text),
                "doc {i} tokens: {:?}",
                tokens_text(p, &span.tokens)
            );
            let decoded = tok.decode(&p.ids[span.tokens.clone()], false).unwrap();
            assert!(decoded.contains(text), "doc {i} decoded: {decoded:?}");
        }
        // Sentences lie inside their document, in order, without sharing tokens.
        let mut prev_sent = span.tokens.start;
        for (k, sent) in p.sentences[i].iter().enumerate() {
            assert!(
                sent.chars.start >= span.chars.start && sent.chars.end <= span.chars.end,
                "doc {i} sentence {k}"
            );
            assert!(
                sent.tokens.start >= prev_sent && sent.tokens.end <= span.tokens.end,
                "doc {i} sentence {k}"
            );
            if !sent.chars.is_empty() {
                let st = p.span_text(sent);
                assert!(tokens_text(p, &sent.tokens).contains(st), "sentence {st:?}");
            }
            prev_sent = sent.tokens.end;
        }
        prev_chars = span.chars.end;
        prev_tokens = span.tokens.end;
    }
    assert_eq!(p.span_text(&p.question), s.question.trim());
    assert!(p.question.tokens.start >= prev_tokens && p.question.chars.start >= prev_chars);
    assert!(tokens_text(p, &p.question.tokens).contains(s.question.trim()));
    assert!(
        p.question.tokens.end < p.ids.len(),
        "the generation prompt follows the question"
    );
    assert_eq!(p.answer_span(3), p.ids.len()..p.ids.len() + 3);
}

// ------------------------------------------------------------------------------------------------
// Loading
// ------------------------------------------------------------------------------------------------

const ONE: &str =
    r#"{"id": "a", "question": "Q1?", "docs": [{"title": "T", "text": "Text one."}]}"#;
const TWO: &str =
    r#"{"id": 7, "question": "Q2?", "docs": [{"text": "Text two."}], "output": "Yes."}"#;

#[test]
fn loads_list_object_and_jsonl() {
    let d = tmp_dir("formats");
    let list = load_samples(&write(
        &d,
        "list.json",
        format!("[{ONE},\n{TWO}]").as_bytes(),
    ))
    .unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].question, "Q1?");
    assert_eq!(list[1].docs[0].title, "");
    assert_eq!(list[1].output.as_deref(), Some("Yes."));
    assert_eq!(list[0].id().as_deref(), Some("a"));
    assert_eq!(list[1].id().as_deref(), Some("7"));

    let obj = load_samples(&write(&d, "obj.json", ONE.as_bytes())).unwrap();
    assert_eq!(obj, list[..1]);

    let jsonl = load_samples(&write(
        &d,
        "s.jsonl",
        format!("{ONE}\n\n{TWO}\n").as_bytes(),
    ))
    .unwrap();
    assert_eq!(jsonl, list);

    // A byte-order mark and CRLF line ends are fine.
    let bom = load_samples(&write(
        &d,
        "bom.jsonl",
        format!("\u{feff}{ONE}\r\n{TWO}\r\n").as_bytes(),
    ))
    .unwrap();
    assert_eq!(bom, list);
}

#[test]
fn helpers_read_gold_answers_id() {
    let d = tmp_dir("helpers");
    let p = write(
        &d,
        "h.json",
        br#"[{"id": "x1", "question": "q", "docs": [{"text": "a"}, {"text": "b"}], "gold": 1, "answers": ["Verrin", 1742, null]},
            {"question": "q", "docs": [{"text": "a"}], "answer": "solo"}]"#,
    );
    let s = load_samples(&p).unwrap();
    assert_eq!(s[0].gold(), Some(1));
    assert_eq!(s[0].answers(), ["Verrin", "1742"]);
    assert_eq!(s[0].id().as_deref(), Some("x1"));
    assert_eq!(s[1].gold(), None);
    assert_eq!(s[1].answers(), ["solo"]);
    assert_eq!(s[1].id(), None);
}

#[test]
fn unknown_fields_survive_a_round_trip() {
    let d = tmp_dir("roundtrip");
    let original = json!([{
        "id": "rt-1",
        "question": "Who?",
        "docs": [{"title": "A", "text": "Alpha.", "url": "https://example.org/a", "score": 0.5},
                 {"title": "B", "text": "Beta."}],
        "gold": 0,
        "answers": ["Alpha", "alpha"],
        "needle": {"text": "Alpha.", "depth": 0.25, "tags": [1, 2]},
        "output": "Alpha."
    }]);
    let p = write(&d, "in.json", original.to_string().as_bytes());
    let samples = load_samples(&p).unwrap();
    assert_eq!(
        samples[0].docs[0].extra["url"],
        json!("https://example.org/a")
    );
    assert_eq!(samples[0].extra["needle"]["depth"], json!(0.25));
    let written = serde_json::to_value(&samples).unwrap();
    assert_eq!(written, original, "serialised samples equal the input");
    let p2 = write(
        &d,
        "out.json",
        serde_json::to_string_pretty(&samples).unwrap().as_bytes(),
    );
    assert_eq!(load_samples(&p2).unwrap(), samples);
    // serde's own Deserialize agrees with the loader.
    let via_serde: Vec<Sample> = serde_json::from_value(original).unwrap();
    assert_eq!(via_serde, samples);
}

#[test]
fn missing_path_and_directory() {
    let err = load_samples(Path::new("/nonexistent/headscope/sample.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/headscope/sample.json") && err.contains("no such file"),
        "{err}"
    );
    let d = tmp_dir("isdir");
    let err = load_samples(&d).unwrap_err().to_string();
    assert!(
        err.contains(&d.display().to_string()) && err.contains("directory"),
        "{err}"
    );
}

#[test]
fn non_utf8_says_byte_offset() {
    let bytes = b"[{\"question\": \"caf\xe9?\", \"docs\": [{\"text\": \"x\"}]}]";
    let err = load_err("utf8", bytes);
    assert!(
        err.contains("UTF-8") && err.contains("byte offset 18") && err.contains("0xE9"),
        "{err}"
    );
}

#[test]
fn malformed_json_says_line_and_column() {
    let err = load_err(
        "malformed",
        b"{\"question\": \"q\",\n \"docs\": [ {\"title\": \"a\" \"text\": \"b\"} ]}",
    );
    assert!(err.contains("line 2, column 26"), "{err}");
    let err = load_err("trailing", format!("[{ONE}]\nxyz").as_bytes());
    assert!(err.contains("line 2, column 1"), "{err}");
    let err = load_err("unterminated", b"[{\"question\": \"q\",\n\"docs\": [");
    assert!(err.contains("invalid JSON at line 2"), "{err}");
}

#[test]
fn malformed_jsonl_says_which_line() {
    let text = format!("{ONE}\n{TWO}\n\n{{\"question\": \"q\" \"docs\": []}}\n{ONE}\n");
    let err = load_err("badjsonl", text.as_bytes());
    assert!(err.contains("JSONL line 4, column 18"), "{err}");
    let err = load_err("arrayline", format!("{ONE}\n[1, 2]\n").as_bytes());
    assert!(
        err.contains("JSONL line 2") && err.contains("found a list"),
        "{err}"
    );
    let text = format!("{ONE}\n{{\"docs\": [{{\"text\": \"x\"}}]}}\n");
    let err = load_err("jsonlnoq", text.as_bytes());
    assert!(
        err.contains("sample 1 (line 2)") && err.contains("missing `question`"),
        "{err}"
    );
}

#[test]
fn empty_inputs() {
    assert!(load_err("empty", b"").contains("empty"));
    assert!(load_err("blank", b"  \n\n ").contains("empty"));
    assert!(load_err("bomonly", "\u{feff}".as_bytes()).contains("empty"));
    assert!(load_err("emptylist", b"[]").contains("no samples"));
    let err = load_err("scalar", b"42");
    assert!(err.contains("found a number"), "{err}");
}

#[test]
fn bad_samples_say_which_and_what() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "noq",
            r#"[{"question": "q", "docs": [{"text": "x"}]}, {"docs": [{"text": "x"}]}]"#,
            &["sample 1", "missing `question`"],
        ),
        (
            "emptyq",
            r#"{"question": "   ", "docs": [{"text": "x"}]}"#,
            &["sample 0", "`question` is empty"],
        ),
        (
            "numq",
            r#"{"question": 3, "docs": [{"text": "x"}]}"#,
            &["sample 0", "`question` must be a string, not a number"],
        ),
        (
            "nodocs",
            r#"{"question": "q"}"#,
            &["sample 0", "missing `docs`"],
        ),
        (
            "emptydocs",
            r#"{"question": "q", "docs": []}"#,
            &["sample 0", "`docs` is empty"],
        ),
        (
            "strdocs",
            r#"{"question": "q", "docs": "x"}"#,
            &["`docs` must be a list"],
        ),
        (
            "notext",
            r#"[{"question": "q", "docs": [{"text": "x"}]}, {"question": "q", "docs": [{"text": "x"}, {"title": "t"}]}]"#,
            &["sample 1", "docs[1]", "missing `text`"],
        ),
        (
            "numtext",
            r#"{"question": "q", "docs": [{"text": 5}]}"#,
            &["docs[0]", "`text` must be a string"],
        ),
        (
            "strdoc",
            r#"{"question": "q", "docs": ["just text"]}"#,
            &["docs[0]", "expected an object"],
        ),
        (
            "badtitle",
            r#"{"question": "q", "docs": [{"title": ["a"], "text": "x"}]}"#,
            &["docs[0]", "`title` must be a string"],
        ),
        (
            "notobj",
            r#"[{"question": "q", "docs": [{"text": "x"}]}, "oops"]"#,
            &["sample 1", "found a string"],
        ),
        (
            "goldrange",
            r#"{"question": "q", "docs": [{"text": "x"}], "gold": 5}"#,
            &["`gold` is 5", "only 1 documents"],
        ),
        (
            "goldneg",
            r#"{"question": "q", "docs": [{"text": "x"}], "gold": -1}"#,
            &["`gold` must be a 0-based document index"],
        ),
        (
            "goldstr",
            r#"{"question": "q", "docs": [{"text": "x"}], "gold": "x"}"#,
            &["`gold` must be a 0-based document index", "a string"],
        ),
        (
            "output",
            r#"{"question": "q", "docs": [{"text": "x"}], "output": 1}"#,
            &["`output` must be a string"],
        ),
    ];
    for (name, text, needles) in cases {
        let err = load_err(name, text.as_bytes());
        for n in *needles {
            assert!(err.contains(n), "{name}: {err:?} lacks {n:?}");
        }
    }
    // A null title is an empty title.
    let d = tmp_dir("nulltitle");
    let s = load_samples(&write(
        &d,
        "s.json",
        br#"{"question": "q", "docs": [{"title": null, "text": "x"}]}"#,
    ))
    .unwrap();
    assert_eq!(s[0].docs[0].title, "");
}

// ------------------------------------------------------------------------------------------------
// Prompts and spans
// ------------------------------------------------------------------------------------------------

#[test]
fn mirage_prompt_text_and_spans() {
    let tok = tiny_tokenizer();
    let s = sample();
    let p = RagPrompt::build(
        &s,
        &PromptStyle::Mirage.into(),
        &ChatTemplate::chatml(),
        &tok,
    )
    .unwrap();
    let expected_msg = "Document [1](Title: Millbrook): Millbrook is a village in the east of Calden County. It is known for its wool market. The village has no river.\n\
        Document [2](Title: Harrowgate): Harrowgate is a small market town. The River Verrin flows through the town, and Dr. Moss built its bridge in 1742.\n\
        Document [3](Title: ): Calden County is rural; its café is famous. Its largest town is Eastwick.\n\n\
        Which river flows through Harrowgate?";
    assert_eq!(p.user_message, expected_msg);
    assert_eq!(
        p.text,
        format!("<|im_start|>user\n{expected_msg}<|im_end|>\n<|im_start|>assistant\n")
    );
    assert_eq!(
        p.text,
        ChatTemplate::chatml()
            .render(&[ChatMessage::user(expected_msg)], true)
            .unwrap()
    );
    assert_eq!(p.ids, tok.encode(p.text.as_str(), false).unwrap().get_ids());
    check_spans(&p, &s, &tok);

    // Whole lines, header included; sentences as split.
    assert_eq!(
        p.span_text(&p.docs[1]),
        "Document [2](Title: Harrowgate): Harrowgate is a small market town. The River Verrin flows through the town, and Dr. Moss built its bridge in 1742."
    );
    let sent: Vec<&str> = p.sentences[1].iter().map(|x| p.span_text(x)).collect();
    assert_eq!(
        sent,
        [
            "Harrowgate is a small market town.",
            "The River Verrin flows through the town, and Dr. Moss built its bridge in 1742."
        ]
    );
    assert_eq!(
        p.sentences.iter().map(Vec::len).collect::<Vec<_>>(),
        [3, 2, 2]
    );

    // The token rule: the ".\n" token straddling doc 1's end and the separator is doc 1's last
    // token; the " The" token starting a sentence belongs to that sentence.
    let last = p.docs[0].tokens.end - 1;
    assert_eq!(
        &p.text[p.token_offsets[last].0..p.token_offsets[last].1],
        ".\n"
    );
    assert_eq!(p.sentences[0][2].tokens.end, p.docs[0].tokens.end);
    let first = p.sentences[1][1].tokens.start;
    assert_eq!(
        &p.text[p.token_offsets[first].0..p.token_offsets[first].1],
        " The"
    );
    // ".\n\n" after the last document belongs to it too, and the question's tokens start after.
    let last = p.docs[2].tokens.end - 1;
    assert_eq!(
        &p.text[p.token_offsets[last].0..p.token_offsets[last].1],
        ".\n\n"
    );
    assert_eq!(p.question.tokens.start, p.docs[2].tokens.end);

    // Sources.
    assert_eq!(p.sources(Granularity::Document), p.docs);
    assert_eq!(p.sources(Granularity::Sentence).len(), 7);
    assert_eq!(p.source_labels(Granularity::Sentence)[3], "D2.S1");
    assert_eq!(s.source_count(Granularity::Sentence), 7);
}

#[test]
fn context_query_prompt_text_and_spans() {
    let tok = tiny_tokenizer();
    let s = sample();
    let p = RagPrompt::build(
        &s,
        &PromptStyle::ContextQuery.into(),
        &ChatTemplate::chatml(),
        &tok,
    )
    .unwrap();
    let expected_msg = "Context: Millbrook\nMillbrook is a village in the east of Calden County. It is known for its wool market. The village has no river.\n\n\
        Harrowgate\nHarrowgate is a small market town. The River Verrin flows through the town, and Dr. Moss built its bridge in 1742.\n\n\
        Calden County is rural; its café is famous. Its largest town is Eastwick.\n\n\
        Query: Which river flows through Harrowgate?";
    assert_eq!(p.user_message, expected_msg);
    check_spans(&p, &s, &tok);
    assert_eq!(
        p.span_text(&p.docs[2]),
        "Calden County is rural; its café is famous. Its largest town is Eastwick."
    );
    assert!(p
        .span_text(&p.docs[0])
        .starts_with("Millbrook\nMillbrook is"));
}

#[test]
fn other_templates_and_tokenizer_offsets() {
    let tok = tiny_tokenizer();
    let s = sample();
    // Llama 3 and Gemma trim the message; the builder trims texts itself, so it is found.
    for t in [ChatTemplate::llama3(), ChatTemplate::gemma()] {
        for style in PromptStyle::ALL {
            let p = RagPrompt::build(&s, &style.into(), &t, &tok).unwrap();
            check_spans(&p, &s, &tok);
        }
    }
}

#[test]
fn template_that_changes_the_message_is_an_error() {
    let tok = tiny_tokenizer();
    let t = ChatTemplate::new(
        "{% for m in messages %}{{ m.content | upper }}{% endfor %}",
        None,
        None,
    );
    let err = RagPrompt::build(&sample(), &PromptStyle::Mirage.into(), &t, &tok)
        .unwrap_err()
        .to_string();
    assert!(err.contains("changed the user message"), "{err}");
}

#[test]
fn leave_out_documents() {
    let tok = tiny_tokenizer();
    let s = sample();
    let t = ChatTemplate::chatml();
    let p = RagPrompt::build_with_sources(
        &s,
        &PromptStyle::Mirage.into(),
        &t,
        &tok,
        &[true, false, true],
        Granularity::Document,
    )
    .unwrap();
    assert!(p.user_message.contains("Document [1](Title: Millbrook)"));
    assert!(!p.user_message.contains("Document [2]"));
    assert!(!p.user_message.contains("Harrowgate is a small"));
    assert!(
        p.user_message.contains("\nDocument [3](Title: ): Calden"),
        "original numbers kept"
    );
    assert!(p.docs[1].chars.is_empty() && p.docs[1].tokens.is_empty());
    assert_eq!(p.docs[1].chars.start, p.docs[0].chars.end);
    assert!(p.sentences[1]
        .iter()
        .all(|x| x.chars.is_empty() && x.tokens.is_empty()));
    assert_eq!(p.span_text(&p.docs[2]), "Document [3](Title: ): Calden County is rural; its café is famous. Its largest town is Eastwick.");
    check_spans(&p, &s, &tok);

    // The same via the prompt; all kept equals the full prompt.
    let full = RagPrompt::build(&s, &PromptStyle::Mirage.into(), &t, &tok).unwrap();
    let again = full
        .without_sources(&s, &t, &tok, &[true, true, true], Granularity::Document)
        .unwrap();
    assert_eq!(again, full);

    // Every document removed.
    let none = RagPrompt::build_with_sources(
        &s,
        &PromptStyle::Mirage.into(),
        &t,
        &tok,
        &[false; 3],
        Granularity::Document,
    )
    .unwrap();
    assert_eq!(none.user_message, "Which river flows through Harrowgate?");
    check_spans(&none, &s, &tok);
    let none = RagPrompt::build_with_sources(
        &s,
        &PromptStyle::ContextQuery.into(),
        &t,
        &tok,
        &[false; 3],
        Granularity::Document,
    )
    .unwrap();
    assert_eq!(
        none.user_message,
        "Context: \n\nQuery: Which river flows through Harrowgate?"
    );
    check_spans(&none, &s, &tok);

    // Context-query: the remaining documents are joined as before.
    let cq = RagPrompt::build_with_sources(
        &s,
        &PromptStyle::ContextQuery.into(),
        &t,
        &tok,
        &[false, true, true],
        Granularity::Document,
    )
    .unwrap();
    assert!(cq
        .user_message
        .starts_with("Context: Harrowgate\nHarrowgate is"));
    assert!(cq.user_message.contains("in 1742.\n\nCalden County"));
    check_spans(&cq, &s, &tok);

    let err = RagPrompt::build_with_sources(
        &s,
        &PromptStyle::Mirage.into(),
        &t,
        &tok,
        &[true],
        Granularity::Document,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("1 entries") && err.to_string().contains("3 documents"),
        "{err}"
    );
}

#[test]
fn leave_out_sentences() {
    let tok = tiny_tokenizer();
    let s = sample();
    let t = ChatTemplate::chatml();
    let full = RagPrompt::build(&s, &PromptStyle::Mirage.into(), &t, &tok).unwrap();
    let all: Vec<String> = full
        .sources(Granularity::Sentence)
        .iter()
        .map(|x| full.span_text(x).to_string())
        .collect();
    assert_eq!(all.len(), 7);
    for style in PromptStyle::ALL {
        for drop in 0..all.len() {
            let mut keep = vec![true; all.len()];
            keep[drop] = false;
            let p = RagPrompt::build_with_sources(
                &s,
                &style.into(),
                &t,
                &tok,
                &keep,
                Granularity::Sentence,
            )
            .unwrap();
            check_spans(&p, &s, &tok);
            assert!(
                !p.user_message.contains(all[drop].as_str()),
                "{style} drop {drop}: {}",
                p.user_message
            );
            let srcs = p.sources(Granularity::Sentence);
            for (k, text) in all.iter().enumerate() {
                if k == drop {
                    assert!(srcs[k].chars.is_empty() && srcs[k].tokens.is_empty());
                } else {
                    assert_eq!(
                        p.span_text(&srcs[k]),
                        text,
                        "{style} drop {drop}, sentence {k}"
                    );
                }
            }
        }
    }
    // Dropping the middle sentence keeps the original separator before the next kept one.
    let p = RagPrompt::build_with_sources(
        &s,
        &PromptStyle::Mirage.into(),
        &t,
        &tok,
        &[true, false, true, true, true, true, true],
        Granularity::Sentence,
    )
    .unwrap();
    assert!(p.user_message.starts_with("Document [1](Title: Millbrook): Millbrook is a village in the east of Calden County. The village has no river.\nDocument [2]"));
    // Every sentence of a document removed: the header stays.
    let p = RagPrompt::build_with_sources(
        &s,
        &PromptStyle::Mirage.into(),
        &t,
        &tok,
        &[false, false, false, true, true, true, true],
        Granularity::Sentence,
    )
    .unwrap();
    assert!(p
        .user_message
        .starts_with("Document [1](Title: Millbrook): \nDocument [2]"));
    check_spans(&p, &s, &tok);
    // ...and in context-query style an untitled document with nothing left disappears.
    let p = RagPrompt::build_with_sources(
        &s,
        &PromptStyle::ContextQuery.into(),
        &t,
        &tok,
        &[true, true, true, true, true, false, false],
        Granularity::Sentence,
    )
    .unwrap();
    assert!(
        p.user_message
            .ends_with("in 1742.\n\nQuery: Which river flows through Harrowgate?"),
        "{}",
        p.user_message
    );
    check_spans(&p, &s, &tok);
    let err = RagPrompt::build_with_sources(
        &s,
        &PromptStyle::Mirage.into(),
        &t,
        &tok,
        &[true; 3],
        Granularity::Sentence,
    )
    .unwrap_err();
    assert!(err.to_string().contains("7 sentences"), "{err}");
}

#[test]
fn degenerate_samples_do_not_panic() {
    let tok = tiny_tokenizer();
    let t = ChatTemplate::chatml();
    let s = Sample::new("", vec![Document::new("", ""), Document::new("T", "   ")]);
    for style in PromptStyle::ALL {
        let p = RagPrompt::build(&s, &style.into(), &t, &tok).unwrap();
        assert!(p.question.tokens.is_empty());
        assert!(p.sentences.iter().all(Vec::is_empty));
        let _ = p.sources(Granularity::Sentence);
        let p =
            RagPrompt::build_with_sources(&s, &style.into(), &t, &tok, &[], Granularity::Sentence)
                .unwrap();
        assert_eq!(p.docs.len(), 2);
    }
}

// ------------------------------------------------------------------------------------------------
// The shipped samples
// ------------------------------------------------------------------------------------------------

fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples")
}

/// SmolLM2's tokenizer and chat template, read from the GGUF's metadata, when the model is there.
fn smollm2() -> Option<(Tokenizer, ChatTemplate)> {
    let cache = std::env::var_os("HEADSCOPE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/headscope")
        });
    let path = cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut f = std::fs::File::open(&path).ok()?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).ok()?;
    let md = &content.metadata;
    let tok = headscope::engine::tokenizer::tokenizer_from_gguf(md).ok()?;
    let src = md.get("tokenizer.chat_template")?.to_string().ok()?.clone();
    Some((tok, ChatTemplate::new(src, None, Some("<|im_end|>".into()))))
}

#[test]
fn shipped_samples_are_well_formed() {
    let dir = samples_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_stem().is_some_and(|s| s != "question")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{} samples", files.len());
    let model = smollm2();
    if model.is_none() {
        eprintln!("note: SmolLM2 GGUF missing; prompt lengths estimated from characters");
    }
    let mut by_name: HashMap<String, Sample> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for f in &files {
        let mut v = load_samples(f).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.len(), 1, "{}", f.display());
        let s = v.remove(0);
        let name = f.display().to_string();
        let id = s.id().unwrap_or_else(|| panic!("{name}: no id"));
        assert!(ids.insert(id), "{name}: duplicate id");
        assert!(
            (3..=5).contains(&s.docs.len()),
            "{name}: {} docs",
            s.docs.len()
        );
        let gold = s.gold().unwrap_or_else(|| panic!("{name}: no gold"));
        let answers = s.answers();
        assert!(!answers.is_empty(), "{name}: no answers");
        let lower = |x: &str| x.to_lowercase();
        assert!(
            lower(&s.docs[gold].text).contains(&lower(&answers[0])),
            "{name}: the gold document does not state {:?}",
            answers[0]
        );
        for (j, d) in s.docs.iter().enumerate() {
            assert!(!d.title.is_empty(), "{name}: doc {j} has no title");
            let n = split_sentences(&d.text).len();
            assert!((2..=4).contains(&n), "{name}: doc {j} has {n} sentences");
            if j != gold {
                assert!(
                    !lower(&d.text).contains(&lower(&answers[0])),
                    "{name}: distractor {j} states the answer"
                );
            }
        }
        match &model {
            Some((tok, template)) => {
                let p = RagPrompt::build(&s, &PromptStyle::Mirage.into(), template, tok).unwrap();
                eprintln!("{name}: {} tokens", p.ids.len());
                assert!(p.ids.len() < 600, "{name}: {} tokens", p.ids.len());
                check_spans(&p, &s, tok);
                let p =
                    RagPrompt::build(&s, &PromptStyle::ContextQuery.into(), template, tok).unwrap();
                check_spans(&p, &s, tok);
            }
            None => {
                let chars: usize = s
                    .docs
                    .iter()
                    .map(|d| d.text.len() + d.title.len() + 30)
                    .sum::<usize>()
                    + s.question.len();
                assert!(chars < 2200, "{name}: {chars} characters");
            }
        }
        by_name.insert(f.file_stem().unwrap().to_string_lossy().into_owned(), s);
    }

    // all.jsonl holds every sample, one per line, in file-name order.
    let all = load_samples(&dir.join("all.jsonl")).unwrap();
    let mut names: Vec<&String> = by_name.keys().collect();
    names.sort();
    let expected: Vec<Sample> = names.iter().map(|n| by_name[*n].clone()).collect();
    assert_eq!(all, expected);
    let lines = std::fs::read_to_string(dir.join("all.jsonl")).unwrap();
    assert_eq!(
        lines.lines().filter(|l| !l.trim().is_empty()).count(),
        expected.len()
    );

    // question.json (the default sample) is a copy of one of them.
    let q = load_samples(&dir.join("question.json")).unwrap();
    assert_eq!(q.len(), 1);
    assert!(
        by_name.values().any(|s| *s == q[0]),
        "question.json is not a copy of a sample"
    );
}
