//! Chat templates (minijinja with Hugging Face semantics) and built-in fallbacks.
//!
//! Rendering follows `transformers`' `apply_chat_template`: Jinja with `trim_blocks` and
//! `lstrip_blocks`, Python string/dict methods (`.strip()`, `.startswith()`, `.items()`, ...),
//! `raise_exception(msg)`, a `tojson` that matches Python's `json.dumps` (separators `", "` and
//! `": "`, non-ASCII kept), `strftime_now(fmt)`, and the context variables `messages`,
//! `add_generation_prompt`, `bos_token`, `eos_token` (plus `tools = none`, `documents = none`).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, ValueKind};
use minijinja::{Environment, ErrorKind, Value};
use serde::Serialize;

use crate::{Error, Result};

/// One turn of a conversation.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A Jinja chat template with the BOS/EOS strings it may refer to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatTemplate {
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

/// ChatML (Qwen, SmolLM, ...), without a default system prompt.
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Llama 3 instruct (as in Meta's tokenizer_config.json).
const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

/// Gemma (2/3) turns. Unlike Gemma 2's own template, which raises on a system message, a system
/// message is folded into the first user turn (as Gemma 3's template does).
const GEMMA: &str = "{{ bos_token }}{% if messages and messages[0]['role'] == 'system' %}{% set first_user_prefix = messages[0]['content'] | trim + '\\n\\n' %}{% set loop_messages = messages[1:] %}{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}";

impl ChatTemplate {
    pub fn new(source: impl Into<String>, bos: Option<String>, eos: Option<String>) -> Self {
        ChatTemplate {
            source: source.into(),
            bos_token: bos,
            eos_token: eos,
        }
    }

    /// Replace the BOS/EOS strings (e.g. with those of the loaded tokenizer).
    pub fn with_special_tokens(mut self, bos: Option<String>, eos: Option<String>) -> Self {
        self.bos_token = bos;
        self.eos_token = eos;
        self
    }

    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// Read the template from a Hugging Face `tokenizer_config.json`. `chat_template` may be a
    /// string or a list of `{name, template}` (the one named "default" is used). When the config
    /// has no `chat_template`, a `chat_template.jinja` next to it is used (newer `transformers`
    /// save it there). `Ok(None)` when there is no template at all.
    pub fn from_tokenizer_config(path: &Path) -> Result<Option<ChatTemplate>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Template(format!("{}: invalid JSON: {e}", path.display())))?;
        let bos = special_token_string(config.get("bos_token"));
        let eos = special_token_string(config.get("eos_token"));

        let source = match config.get("chat_template") {
            None | Some(serde_json::Value::Null) => {
                let jinja = path.with_file_name("chat_template.jinja");
                if jinja.is_file() {
                    std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?
                } else {
                    return Ok(None);
                }
            }
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(items)) => {
                let mut names = Vec::new();
                let mut found = None;
                for item in items {
                    let name = item.get("name").and_then(|n| n.as_str()).unwrap_or("");
                    names.push(name.to_string());
                    if name == "default" {
                        found = item
                            .get("template")
                            .and_then(|t| t.as_str())
                            .map(str::to_string);
                        if found.is_none() {
                            return Err(Error::Template(format!(
                                "{}: chat_template \"default\" has no string `template`",
                                path.display()
                            )));
                        }
                    }
                }
                found.ok_or_else(|| {
                    Error::Template(format!(
                        "{}: chat_template is a list without a \"default\" entry (names: {})",
                        path.display(),
                        names.join(", ")
                    ))
                })?
            }
            Some(other) => {
                return Err(Error::Template(format!(
                "{}: chat_template must be a string or a list of {{name, template}}, not {other}",
                path.display()
            )))
            }
        };
        Ok(Some(ChatTemplate::new(source, bos, eos)))
    }

    /// ChatML: `<|im_start|>role\ncontent<|im_end|>\n`; EOS `<|im_end|>`, no BOS.
    pub fn chatml() -> Self {
        Self::new(CHATML, None, Some("<|im_end|>".into()))
    }

    /// Llama 3 instruct; BOS `<|begin_of_text|>`, EOS `<|eot_id|>`.
    pub fn llama3() -> Self {
        Self::new(
            LLAMA3,
            Some("<|begin_of_text|>".into()),
            Some("<|eot_id|>".into()),
        )
    }

    /// Gemma turns (`<start_of_turn>user\n...<end_of_turn>\n`); BOS `<bos>`, EOS `<eos>`.
    pub fn gemma() -> Self {
        Self::new(GEMMA, Some("<bos>".into()), Some("<eos>".into()))
    }

    /// A built-in by name: "chatml", "llama3", "gemma".
    pub fn builtin(name: &str) -> Option<Self> {
        match name {
            "chatml" => Some(Self::chatml()),
            "llama3" | "llama-3" => Some(Self::llama3()),
            "gemma" | "gemma2" | "gemma3" => Some(Self::gemma()),
            _ => None,
        }
    }

    /// Fallback for a model without a template: `gemma*` → Gemma, `llama3` → Llama 3,
    /// anything else (qwen2, llama = SmolLM, ...) → ChatML.
    pub fn builtin_for_arch(arch: &str) -> Self {
        match arch {
            "gemma" | "gemma2" | "gemma3" => Self::gemma(),
            "llama3" => Self::llama3(),
            _ => Self::chatml(),
        }
    }

    /// Render the conversation to the prompt text.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);

        let template = env
            .template_from_str(&self.source)
            .map_err(template_error)?;
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_object(OrderedMap(vec![
                    ("role".to_string(), Value::from(m.role.as_str())),
                    ("content".to_string(), Value::from(m.content.as_str())),
                ]))
            })
            .collect();
        let ctx = minijinja::context! {
            messages => Value::from(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
            tools => Value::from(()),
            documents => Value::from(()),
        };
        template.render(ctx).map_err(template_error)
    }
}

/// `bos_token`/`eos_token` in tokenizer_config.json: a string, `{"content": ...}`, or null.
fn special_token_string(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

fn template_error(e: minijinja::Error) -> Error {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let _ = write!(msg, ": {s}");
        source = s.source();
    }
    Error::Template(msg)
}

/// A map that keeps insertion order (like a Python dict), so that `tojson` and `.items()`
/// see `role` before `content` as in Python.
#[derive(Debug)]
struct OrderedMap(Vec<(String, Value)>);

impl Object for OrderedMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(
            self.0
                .iter()
                .map(|(k, _)| Value::from(k.as_str()))
                .collect(),
        )
    }
}

fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("raise_exception: {msg}"),
    ))
}

/// `tojson(value, indent=None, ensure_ascii=False, sort_keys=False)` as in transformers: Python
/// `json.dumps` output (`", "`/`": "` separators, or `","` + newlines with an indent).
fn tojson(
    value: &Value,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<Value> = match indent {
        Some(i) => Some(i),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => {
            if let Some(s) = v.as_str() {
                Some(s.to_string())
            } else {
                let n = i64::try_from(v)?;
                Some(" ".repeat(n.max(0) as usize))
            }
        }
    };
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let _separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let opts = JsonOpts {
        indent,
        ensure_ascii,
        sort_keys,
    };
    let mut out = String::new();
    write_json(&mut out, value, &opts, 0)?;
    Ok(Value::from_safe_string(out))
}

struct JsonOpts {
    indent: Option<String>,
    ensure_ascii: bool,
    sort_keys: bool,
}

fn newline_indent(out: &mut String, opts: &JsonOpts, level: usize) {
    if let Some(ind) = &opts.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(ind);
        }
    }
}

fn write_json(
    out: &mut String,
    v: &Value,
    opts: &JsonOpts,
    level: usize,
) -> std::result::Result<(), minijinja::Error> {
    let item_sep = if opts.indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if v.is_integer() {
                let _ = write!(out, "{v}");
            } else {
                let f = f64::try_from(v.clone())?;
                if f.is_nan() {
                    out.push_str("NaN");
                } else if f.is_infinite() {
                    out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
                } else if f.fract() == 0.0 && f.abs() < 1e16 {
                    let _ = write!(out, "{f:.1}");
                } else {
                    let _ = write!(out, "{f}");
                }
            }
        }
        ValueKind::String => write_json_str(out, v.as_str().unwrap_or_default(), opts.ensure_ascii),
        ValueKind::Map => {
            let mut pairs: Vec<(Value, Value)> = Vec::new();
            for key in v.try_iter()? {
                let val = v.get_item(&key)?;
                pairs.push((key, val));
            }
            if opts.sort_keys {
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if pairs.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (k, val)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline_indent(out, opts, level + 1);
                match k.as_str() {
                    Some(s) => write_json_str(out, s, opts.ensure_ascii),
                    None => write_json_str(out, &k.to_string(), opts.ensure_ascii),
                }
                out.push_str(": ");
                write_json(out, val, opts, level + 1)?;
            }
            newline_indent(out, opts, level);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline_indent(out, opts, level + 1);
                write_json(out, item, opts, level + 1)?;
            }
            newline_indent(out, opts, level);
            out.push(']');
        }
        _ => write_json_str(out, &v.to_string(), opts.ensure_ascii),
    }
    Ok(())
}

fn write_json_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && !c.is_ascii() => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `strftime_now(fmt)`: the current UTC time formatted with the common strftime directives
/// (`%Y %y %m %d %e %B %b %h %A %a %H %I %M %S %p %j %F %T %D %%`).
fn strftime_now(fmt: String) -> std::result::Result<Value, minijinja::Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime_utc(&fmt, secs).map(Value::from)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Civil date from days since 1970-01-01 (proleptic Gregorian): (year, month 1..=12, day 1..=31).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn strftime_utc(fmt: &str, secs: i64) -> std::result::Result<String, minijinja::Error> {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (sod / 3600, (sod / 60) % 60, sod % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let is_leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[(m - 1) as usize] + d + u32::from(is_leap && m > 2);
    let h12 = if hh % 12 == 0 { 12 } else { hh % 12 };

    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = chars.next() else {
            out.push('%');
            break;
        };
        let _ = match spec {
            'Y' => write!(out, "{y}"),
            'y' => write!(out, "{:02}", y.rem_euclid(100)),
            'm' => write!(out, "{m:02}"),
            'd' => write!(out, "{d:02}"),
            'e' => write!(out, "{d:>2}"),
            'B' => write!(out, "{}", MONTHS[(m - 1) as usize]),
            'b' | 'h' => write!(out, "{}", &MONTHS[(m - 1) as usize][..3]),
            'A' => write!(out, "{}", WEEKDAYS[weekday]),
            'a' => write!(out, "{}", &WEEKDAYS[weekday][..3]),
            'H' => write!(out, "{hh:02}"),
            'I' => write!(out, "{h12:02}"),
            'M' => write!(out, "{mm:02}"),
            'S' => write!(out, "{ss:02}"),
            'p' => write!(out, "{}", if hh < 12 { "AM" } else { "PM" }),
            'j' => write!(out, "{yday:03}"),
            'F' => write!(out, "{y}-{m:02}-{d:02}"),
            'T' => write!(out, "{hh:02}:{mm:02}:{ss:02}"),
            'D' => write!(out, "{m:02}/{d:02}/{:02}", y.rem_euclid(100)),
            '%' => write!(out, "%"),
            other => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: unsupported directive %{other}"),
                ))
            }
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tokenizer.chat_template` of SmolLM2-135M-Instruct (GGUF metadata).
    const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    /// A Qwen3-style template: namespace, `[::-1]`, `.startswith`/`.endswith`, `.split`,
    /// `.lstrip`, whitespace control and block trimming.
    const QWEN_STYLE: &str = r#"{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role == "assistant" %}
        {%- set content = message.content.split('</think>')[-1].lstrip('\n') %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
last={{ ns.last_query_index }}"#;

    fn user(s: &str) -> ChatMessage {
        ChatMessage::user(s)
    }

    #[test]
    fn chatml_one_user_message() {
        let out = ChatTemplate::chatml().render(&[user("Hi")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = ChatTemplate::chatml().render(&[user("Hi")], false).unwrap();
        assert_eq!(out, "<|im_start|>user\nHi<|im_end|>\n");
    }

    #[test]
    fn smollm_template_inserts_default_system_prompt() {
        let t = ChatTemplate::new(
            SMOLLM2_TEMPLATE,
            Some("<|im_start|>".into()),
            Some("<|im_end|>".into()),
        );
        let out = t.render(&[user("What is 2+2?")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = t
            .render(&[ChatMessage::system("Be brief."), user("Hi")], false)
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn raise_exception_fails_with_its_message() {
        let t = ChatTemplate::new(
            "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}ok",
            None,
            None,
        );
        let err = t.render(&[ChatMessage::system("x")], true).unwrap_err();
        assert!(matches!(err, Error::Template(_)));
        assert!(
            err.to_string().contains("System role not supported"),
            "{err}"
        );
        assert_eq!(t.render(&[user("x")], true).unwrap(), "ok");
    }

    #[test]
    fn qwen_style_template_with_python_methods() {
        let t = ChatTemplate::new(QWEN_STYLE, None, Some("<|im_end|>".into()));
        let msgs = [
            ChatMessage::system("sys"),
            user("q1"),
            ChatMessage::assistant("<think>hmm</think>\n\nA1"),
            user("<tool_response>r</tool_response>"),
        ];
        let out = t.render(&msgs, true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n\
             <|im_start|>user\n<tool_response>r</tool_response><|im_end|>\n<|im_start|>assistant\nlast=1"
        );
    }

    #[test]
    fn trim_and_lstrip_blocks_like_hf() {
        let src = "{% for m in messages %}\n  {% if m.role == 'user' %}\n[{{ m.content }}]\n  {% endif %}\n{% endfor %}\n";
        let t = ChatTemplate::new(src, None, None);
        assert_eq!(
            t.render(&[user("a"), user("b")], false).unwrap(),
            "[a]\n[b]\n"
        );
    }

    #[test]
    fn tojson_items_and_context_vars() {
        let src = "{{ messages[0] | tojson }}|{{ messages | tojson(indent=2) }}|{% for k, v in messages[0].items() %}{{ k }}={{ v }};{% endfor %}|{{ bos_token }}{{ eos_token }}|{{ tools is none }}|{{ {'b': [1, 2.0, none, true], 'a': 'é\"'} | tojson }}|{{ 'é' | tojson(ensure_ascii=true) }}";
        let t = ChatTemplate::new(src, Some("<s>".into()), Some("</s>".into()));
        let out = t.render(&[user("hi <there> & 'you'")], false).unwrap();
        let expected = [
            r#"{"role": "user", "content": "hi <there> & 'you'"}"#,
            "[\n  {\n    \"role\": \"user\",\n    \"content\": \"hi <there> & 'you'\"\n  }\n]",
            "role=user;content=hi <there> & 'you';",
            "<s></s>",
            "True", // Python-style rendering of booleans, as Jinja2 does
            r#"{"b": [1, 2.0, null, true], "a": "é\""}"#,
            r#""\u00e9""#,
        ]
        .join("|");
        // minijinja's own map literal may not keep insertion order; accept either order there.
        if out != expected {
            let alt = expected.replace(
                r#"{"b": [1, 2.0, null, true], "a": "é\""}"#,
                r#"{"a": "é\"", "b": [1, 2.0, null, true]}"#,
            );
            assert_eq!(out, alt);
        }
    }

    #[test]
    fn builtins_render() {
        let msgs = [
            ChatMessage::system("S"),
            user(" Hi "),
            ChatMessage::assistant("Yo"),
        ];
        assert_eq!(
            ChatTemplate::llama3().render(&msgs[1..2], true).unwrap(),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(
            ChatTemplate::gemma().render(&msgs, true).unwrap(),
            "<bos><start_of_turn>user\nS\n\nHi<end_of_turn>\n<start_of_turn>model\nYo<end_of_turn>\n<start_of_turn>model\n"
        );
        assert_eq!(
            ChatTemplate::builtin_for_arch("gemma2"),
            ChatTemplate::gemma()
        );
        assert_eq!(
            ChatTemplate::builtin_for_arch("qwen2"),
            ChatTemplate::chatml()
        );
        assert_eq!(
            ChatTemplate::builtin_for_arch("llama"),
            ChatTemplate::chatml()
        );
        assert_eq!(
            ChatTemplate::builtin_for_arch("llama3"),
            ChatTemplate::llama3()
        );
    }

    #[test]
    fn strftime_formats() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        let t = 1_722_000_000 - 1_722_000_000 % 86_400 + 13 * 3600 + 5 * 60 + 9;
        assert_eq!(strftime_utc("%d %b %Y", t).unwrap(), "26 Jul 2024");
        assert_eq!(
            strftime_utc("%A %B %e, %H:%M:%S %p %j %%", t).unwrap(),
            "Friday July 26, 13:05:09 PM 208 %"
        );
        assert_eq!(strftime_utc("%F", 0).unwrap(), "1970-01-01");
        assert_eq!(
            strftime_utc("%F %a", 951_782_400).unwrap(),
            "2000-02-29 Tue"
        );
        let t = ChatTemplate::new("{{ strftime_now('%Y') | length }}", None, None);
        assert_eq!(t.render(&[], false).unwrap(), "4");
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("headscope-chat-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn tokenizer_config_list_picks_default() {
        let dir = temp_dir("list");
        let path = dir.join("tokenizer_config.json");
        let cfg = serde_json::json!({
            "bos_token": {"content": "<s>", "lstrip": false},
            "eos_token": "</s>",
            "chat_template": [
                {"name": "tool_use", "template": "TOOLS"},
                {"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}{{ eos_token }}"},
            ]
        });
        std::fs::write(&path, cfg.to_string()).unwrap();
        let t = ChatTemplate::from_tokenizer_config(&path).unwrap().unwrap();
        assert_eq!(t.bos_token(), Some("<s>"));
        assert_eq!(t.eos_token(), Some("</s>"));
        assert_eq!(t.render(&[user("x")], true).unwrap(), "<s>x</s>");

        // A plain string.
        std::fs::write(
            &path,
            r#"{"chat_template": "A{{ messages|length }}", "eos_token": null}"#,
        )
        .unwrap();
        let t = ChatTemplate::from_tokenizer_config(&path).unwrap().unwrap();
        assert_eq!(t.eos_token(), None);
        assert_eq!(t.render(&[user("x")], true).unwrap(), "A1");

        // A list without "default".
        std::fs::write(
            &path,
            r#"{"chat_template": [{"name": "rag", "template": "R"}]}"#,
        )
        .unwrap();
        let err = ChatTemplate::from_tokenizer_config(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("default") && err.contains("rag"), "{err}");

        // None at all, then chat_template.jinja next to it.
        std::fs::write(&path, r#"{"eos_token": "</s>"}"#).unwrap();
        assert!(ChatTemplate::from_tokenizer_config(&path)
            .unwrap()
            .is_none());
        std::fs::write(dir.join("chat_template.jinja"), "J{{ eos_token }}").unwrap();
        let t = ChatTemplate::from_tokenizer_config(&path).unwrap().unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "J</s>");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
