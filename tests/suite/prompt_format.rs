//! Prompt formats: an instruction before the question, user-message templates
//! (`--prompt-template`), their spans (exact, also in leave-out prompts), their errors, and the
//! flags end to end.

use std::path::PathBuf;
use std::process::Command;

use headscope::analysis::{no_progress, qrhead, Subject};
use headscope::engine::{ChatTemplate, GenerationConfig};
use headscope::prompt::{
    load_samples, Granularity, PromptFormat, PromptStyle, RagPrompt, UserTemplate,
    SHORT_ANSWER_INSTRUCTION,
};
use serde_json::Value;

use crate::common;
use crate::prompt::{check_spans, sample, tiny_tokenizer};

const DOCS_MIRAGE: &str = "Document [1](Title: Millbrook): Millbrook is a village in the east of Calden County. It is known for its wool market. The village has no river.\n\
    Document [2](Title: Harrowgate): Harrowgate is a small market town. The River Verrin flows through the town, and Dr. Moss built its bridge in 1742.\n\
    Document [3](Title: ): Calden County is rural; its café is famous. Its largest town is Eastwick.";

/// Titles, `loop.index` (counting written documents) and `doc.index` (the sample's numbers).
const NUMBERED: &str = "{% for doc in docs %}\n{{ loop.index }}. [{{ doc.index }}] {{ doc.title }}: {{ doc.text }}\n{% endfor %}\n\nQ: {{ question }}";

fn template(name: &str, source: &str) -> UserTemplate {
    UserTemplate::new(name, source).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn build(format: &PromptFormat) -> RagPrompt {
    RagPrompt::build(
        &sample(),
        format,
        &ChatTemplate::chatml(),
        &tiny_tokenizer(),
    )
    .unwrap()
}

fn leave_out(format: &PromptFormat, keep: &[bool], g: Granularity) -> RagPrompt {
    RagPrompt::build_with_sources(
        &sample(),
        format,
        &ChatTemplate::chatml(),
        &tiny_tokenizer(),
        keep,
        g,
    )
    .unwrap()
}

fn texts(p: &RagPrompt) -> (Vec<&str>, Vec<Vec<&str>>) {
    let docs = p.docs.iter().map(|s| p.span_text(s)).collect();
    let sents = p
        .sentences
        .iter()
        .map(|d| d.iter().map(|s| p.span_text(s)).collect())
        .collect();
    (docs, sents)
}

fn template_err(source: &str) -> String {
    let err = UserTemplate::new("bad.jinja", source)
        .expect_err("expected the template to be refused")
        .to_string();
    assert!(
        err.contains("bad.jinja"),
        "does not name the template: {err}"
    );
    err
}

#[test]
fn instruction_goes_before_the_question_in_mirage_style() {
    let plain = build(&PromptStyle::Mirage.into());
    let format =
        PromptFormat::from(PromptStyle::Mirage).with_instruction("  Answer in one word.\n");
    let p = build(&format);
    assert_eq!(
        p.user_message,
        format!("{DOCS_MIRAGE}\n\nAnswer in one word.\nWhich river flows through Harrowgate?")
    );
    check_spans(&p, &sample(), &tiny_tokenizer());
    // Documents and sentences are the same text as without the instruction; the question is
    // exactly the question; everything before the question's line is the plain prompt's.
    assert_eq!(texts(&p), texts(&plain));
    assert_eq!(
        p.span_text(&p.question),
        "Which river flows through Harrowgate?"
    );
    assert!(p
        .text
        .starts_with(&plain.text[..plain.question.chars.start]));
    assert_eq!(p.docs, plain.docs);
    // Without documents the instruction and the question are the message.
    let none = leave_out(&format, &[false; 3], Granularity::Document);
    assert_eq!(
        none.user_message,
        "Answer in one word.\nWhich river flows through Harrowgate?"
    );
    assert!(none.docs.iter().all(|d| d.chars.is_empty()));
}

#[test]
fn instruction_goes_before_the_query_in_context_query_style() {
    let plain = build(&PromptStyle::ContextQuery.into());
    let format = PromptFormat::from(PromptStyle::ContextQuery).with_instruction("Be brief.");
    let p = build(&format);
    let (head, question) = plain.user_message.split_once("\n\nQuery: ").unwrap();
    assert_eq!(
        p.user_message,
        format!("{head}\n\nBe brief.\nQuery: {question}")
    );
    check_spans(&p, &sample(), &tiny_tokenizer());
    assert_eq!(texts(&p), texts(&plain));
    assert_eq!(p.span_text(&p.question), question);
}

#[test]
fn no_instruction_is_the_plain_prompt() {
    for style in PromptStyle::ALL {
        let plain = build(&style.into());
        for format in [
            PromptFormat::from(style).with_instruction("  \n"),
            PromptFormat {
                style,
                ..PromptFormat::default()
            },
        ] {
            let p = build(&format);
            assert_eq!((&p.text, &p.ids), (&plain.text, &plain.ids));
            assert_eq!((&p.docs, &p.sentences), (&plain.docs, &plain.sentences));
            assert_eq!(p.question, plain.question);
        }
        // The prompt's JSON keeps `style` alone; an instruction is added only when given.
        let json = serde_json::to_value(&plain).unwrap();
        assert_eq!(json["style"], style.name());
        assert!(json.get("instruction").is_none() && json.get("template").is_none());
        let p = build(&PromptFormat::from(style).with_instruction("Be brief."));
        assert_eq!(
            serde_json::to_value(&p).unwrap()["instruction"],
            "Be brief."
        );
    }
    assert_eq!(PromptFormat::default(), PromptStyle::Mirage.into());
}

#[test]
fn user_template_with_titles_and_loop_index() {
    let format =
        PromptFormat::from(PromptStyle::Mirage).with_template(template("n.jinja", NUMBERED));
    let p = build(&format);
    assert_eq!(
        p.user_message,
        "1. [1] Millbrook: Millbrook is a village in the east of Calden County. It is known for its wool market. The village has no river.\n\
         2. [2] Harrowgate: Harrowgate is a small market town. The River Verrin flows through the town, and Dr. Moss built its bridge in 1742.\n\
         3. [3] : Calden County is rural; its café is famous. Its largest town is Eastwick.\n\n\
         Q: Which river flows through Harrowgate?"
    );
    check_spans(&p, &sample(), &tiny_tokenizer());
    let (docs, sents) = texts(&p);
    // A document's span runs from its title (written right before the text) to its text's end.
    assert_eq!(
        docs[0],
        "Millbrook: Millbrook is a village in the east of Calden County. It is known for its wool market. The village has no river."
    );
    assert_eq!(
        docs[2],
        "Calden County is rural; its café is famous. Its largest town is Eastwick."
    );
    assert_eq!(
        sents[1],
        [
            "Harrowgate is a small market town.",
            "The River Verrin flows through the town, and Dr. Moss built its bridge in 1742."
        ]
    );
    assert_eq!(
        p.span_text(&p.question),
        "Which river flows through Harrowgate?"
    );
    // The format travels with the prompt (leave-out prompts reuse it).
    assert_eq!(p.format, format);
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["template"]["source"], NUMBERED);
}

#[test]
fn user_template_sees_the_instruction() {
    let source = "{% for d in docs %}{{ d.text }}\n{% endfor %}{% if instruction %}[{{ instruction }}]\n{% endif %}{{ question }}";
    let t = template("i.jinja", source);
    let with = build(
        &PromptFormat::default()
            .with_template(t.clone())
            .with_instruction("Be brief."),
    );
    assert!(with
        .user_message
        .ends_with("Eastwick.\n[Be brief.]\nWhich river flows through Harrowgate?"));
    let without = build(&PromptFormat::default().with_template(t));
    assert!(without
        .user_message
        .ends_with("Eastwick.\nWhich river flows through Harrowgate?"));
    check_spans(&with, &sample(), &tiny_tokenizer());
}

#[test]
fn templates_escape_nothing() {
    // minijinja HTML-escapes templates named *.html by default; a prompt must stay verbatim.
    let mut s = sample();
    s.question = "Is <b> & \"c\" ok?".into();
    let format = PromptFormat::default().with_template(template("p.html", NUMBERED));
    let tok = tiny_tokenizer();
    let p = RagPrompt::build(&s, &format, &ChatTemplate::chatml(), &tok).unwrap();
    assert!(p.user_message.ends_with("Q: Is <b> & \"c\" ok?"));
    check_spans(&p, &s, &tok);
}

#[test]
fn leave_out_documents_with_a_template() {
    let format = PromptFormat::default().with_template(template("n.jinja", NUMBERED));
    let full = build(&format);
    let all = leave_out(&format, &[true; 3], Granularity::Document);
    assert_eq!((&all.text, &all.docs), (&full.text, &full.docs));

    let p = leave_out(&format, &[true, false, true], Granularity::Document);
    // Left out of `docs`: `loop.index` counts the written ones, `doc.index` keeps the numbers.
    assert!(
        p.user_message.contains("\n2. [3] : Calden County"),
        "{}",
        p.user_message
    );
    assert!(!p.user_message.contains("Harrowgate is a small"));
    check_spans(&p, &sample(), &tiny_tokenizer());
    // The removed document: empty, where it would have been (after document 1).
    let end = p.docs[0].chars.end;
    assert_eq!(p.docs[1].chars, end..end);
    assert!(p.docs[1].tokens.is_empty());
    assert!(p.sentences[1].iter().all(|s| s.chars == (end..end)));
    assert_eq!(texts(&p).0[2], texts(&full).0[2]);

    let first_gone = leave_out(&format, &[false, true, true], Granularity::Document);
    let start = first_gone.docs[1].chars.start;
    assert_eq!(first_gone.docs[0].chars, start..start);
    check_spans(&first_gone, &sample(), &tiny_tokenizer());
}

#[test]
fn leave_out_sentences_with_a_template() {
    let format = PromptFormat::default().with_template(template("n.jinja", NUMBERED));
    let keep = [true, false, true, false, false, true, true];
    let p = leave_out(&format, &keep, Granularity::Sentence);
    check_spans(&p, &sample(), &tiny_tokenizer());
    let (docs, sents) = texts(&p);
    assert_eq!(
        docs[0],
        "Millbrook: Millbrook is a village in the east of Calden County. The village has no river."
    );
    assert_eq!(
        sents[0],
        [
            "Millbrook is a village in the east of Calden County.",
            "",
            "The village has no river."
        ]
    );
    // Every sentence of document 2 removed: its span is its title, its sentences empty after it.
    assert_eq!(docs[1], "Harrowgate");
    let end = p.docs[1].chars.end;
    assert!(p.sentences[1].iter().all(|s| s.chars == (end..end)));
    assert!(p.user_message.contains("\n2. [2] Harrowgate: \n"));
    // Nothing removed: the full prompt.
    let all = leave_out(&format, &[true; 7], Granularity::Sentence);
    assert_eq!(all.text, build(&format).text);
}

#[test]
fn template_errors_are_clear() {
    let err = template_err("{% for d in docs %}{{ d.text }}\n{% endfor %}");
    assert!(err.contains("does not write the question"), "{err}");
    let err = template_err("{{ docs[0].text }}\n{{ question }}");
    assert!(err.contains("document 2's text"), "{err}");
    let err =
        template_err("{{ question }}{% for d in docs %}{{ d.text }}{% endfor %}{{ question }}");
    assert!(err.contains("more than once"), "{err}");
    let err = template_err("{% for d in docs %}{{ d.text | upper }}{% endfor %}{{ question }}");
    assert!(err.contains("filter"), "{err}");
    let err = template_err("{% for d in docs %}{{ d.text }}{{ question }}");
    assert!(err.contains("syntax"), "{err}");
    let err = template_err("{% for d in docs %}{{ d.body }}{% endfor %}{{ question }}");
    assert!(err.contains("undefined"), "{err}");
    let err = template_err("\u{E000}{{ question }}{% for d in docs %}{{ d.text }}{% endfor %}");
    assert!(err.contains("U+E000"), "{err}");
    let err = UserTemplate::load(std::path::Path::new("/nonexistent/headscope/t.jinja"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/headscope/t.jinja"), "{err}");
}

#[test]
fn shipped_template_writes_short_answer_prompts() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/templates/short-answer.jinja");
    let t = UserTemplate::load(&path).unwrap();
    let tok = tiny_tokenizer();
    let p = build(&PromptFormat::default().with_template(t.clone()));
    assert!(
        p.user_message
            .starts_with("Document [1]\nMillbrook\nMillbrook is a village"),
        "{}",
        p.user_message
    );
    assert!(p
        .user_message
        .contains("\n\nDocument [3]\nCalden County is rural"));
    assert!(p.user_message.ends_with(&format!(
        "Eastwick.\n\n{SHORT_ANSWER_INSTRUCTION}\nQuestion: Which river flows through Harrowgate?"
    )));
    check_spans(&p, &sample(), &tok);
    let p = build(
        &PromptFormat::default()
            .with_template(t.clone())
            .with_instruction("One word."),
    );
    assert!(p
        .user_message
        .contains("Eastwick.\n\nOne word.\nQuestion: "));
    // Every shipped sample.
    let samples =
        load_samples(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/question.json"))
            .unwrap();
    let format = PromptFormat::default().with_template(t);
    for s in &samples {
        let p = RagPrompt::build(s, &format, &ChatTemplate::chatml(), &tok).unwrap();
        check_spans(&p, s, &tok);
    }
}

#[test]
fn qrhead_null_query_keeps_the_instruction_in_the_prefix() {
    let (engine, base) = common::fixture_subject("qwen2");
    let gold = base.sample.gold().unwrap();
    let prepare = |format: &PromptFormat| {
        Subject::prepare(
            &engine,
            base.sample.clone(),
            format,
            &GenerationConfig::default(),
            false,
            |_| true,
        )
        .unwrap()
    };
    for style in PromptStyle::ALL {
        let format = PromptFormat::from(style).with_instruction(SHORT_ANSWER_INSTRUCTION);
        let subject = prepare(&format);
        assert!(subject
            .prompt
            .user_message
            .contains(SHORT_ANSWER_INSTRUCTION));
        let q = qrhead::qrhead(&engine, &subject, gold, &mut no_progress).unwrap();
        assert!(q.scores.iter().flatten().all(|v| v.is_finite()));
    }
    // A template that asks before the documents leaves nothing to score: a clear error.
    let first = template(
        "first.jinja",
        "{{ question }}\n{% for d in docs %}{{ d.text }}\n{% endfor %}",
    );
    let subject = prepare(&PromptFormat::default().with_template(first));
    let err = qrhead::qrhead(&engine, &subject, gold, &mut no_progress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("after the question"), "{err}");
}

/// `headscope run --json -` on the tiny fixture with both flags: the prompt has them, the JSON
/// records them (bad template files: `bad_input::bad_prompt_template_files`).
#[test]
fn run_records_instruction_and_template() {
    let model = common::fixture_with_context("qwen2", 512);
    let sample =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analysis/sample.json");
    let template =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/templates/short-answer.jinja");
    let out = Command::new(env!("CARGO_BIN_EXE_headscope"))
        .args(["run", "--model"])
        .arg(&model)
        .arg(&sample)
        .args([
            "--max-new-tokens",
            "2",
            "--json",
            "-",
            "--instruction",
            "Name the city.",
        ])
        .arg("--prompt-template")
        .arg(&template)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["instruction"], "Name the city.");
    assert_eq!(
        json["prompt_template"],
        std::fs::read_to_string(&template).unwrap()
    );
    let text = json["prompt_text"].as_str().unwrap();
    assert!(
        text.contains("Name the city.\nQuestion: What is the capital of Veskar?"),
        "{text}"
    );
    let q = &json["question_span"]["chars"];
    let (a, b) = (
        q[0].as_u64().unwrap() as usize,
        q[1].as_u64().unwrap() as usize,
    );
    assert_eq!(&text[a..b], "What is the capital of Veskar?");
}
