//! Tokenizers: tokenizer.json, or built from GGUF metadata.
//!
//! GGUF files carry their vocabulary in the `tokenizer.ggml.*` metadata keys. For byte-level BPE
//! (`tokenizer.ggml.model == "gpt2"`: Qwen2/2.5, Llama 3, SmolLM2, GPT-2) we rebuild the
//! Hugging Face pipeline that the original `tokenizer.json` had. The pre-tokenizer is not stored
//! in the file, only a name for it (`tokenizer.ggml.pre`), so it is chosen from an explicit table
//! and an unknown name is an error: a wrong pre-tokenizer silently changes token boundaries.
//!
//! The tokenizers built here have no post-processor: nothing (no BOS) is added when encoding.
//! Chat templates write BOS themselves; encode with `add_special_tokens = false`.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::{Error, Result};

/// Llama 3 pre-tokenizer regex (llama.cpp `llama-vocab.cpp`, HF Llama-3 tokenizer.json).
pub const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2 pre-tokenizer regex: Llama 3's, but every digit is its own piece.
pub const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.ggml.pre` values we know how to rebuild.
pub const SUPPORTED_PRE: &[&str] = &[
    "qwen2",
    "deepseek-r1-qwen",
    "llama-bpe",
    "llama3",
    "llama-v3",
    "smaug-bpe",
    "smollm",
    "starcoder",
    "gpt-2",
    "gpt2",
    "default",
];

// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_UNKNOWN: i64 = 2;
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Load a Hugging Face `tokenizer.json`.
pub fn load_tokenizer_json(path: &Path) -> Result<Tokenizer> {
    if !path.is_file() {
        return Err(Error::Tokenizer(format!(
            "{}: no such file",
            path.display()
        )));
    }
    Tokenizer::from_file(path)
        .map_err(|e| Error::Tokenizer(format!("cannot load {}: {e}", path.display())))
}

fn meta<'a>(metadata: &'a HashMap<String, Value>, key: &str) -> Option<&'a Value> {
    metadata.get(key)
}

fn meta_str<'a>(metadata: &'a HashMap<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match meta(metadata, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(v) => Err(Error::Tokenizer(format!(
            "GGUF metadata `{key}` is not a string: {}",
            short_debug(v)
        ))),
    }
}

fn value_as_i64(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => i64::try_from(*x).ok()?,
        Value::I64(x) => *x,
        _ => return None,
    })
}

fn meta_id(metadata: &HashMap<String, Value>, key: &str) -> Result<Option<u32>> {
    match meta(metadata, key) {
        None => Ok(None),
        Some(v) => match value_as_i64(v) {
            // llama.cpp writes -1 (as a signed value) for "no such token".
            Some(x) if x < 0 => Ok(None),
            Some(x) => u32::try_from(x).map(Some).map_err(|_| {
                Error::Tokenizer(format!("GGUF metadata `{key}` = {x} is not a token id"))
            }),
            None => Err(Error::Tokenizer(format!(
                "GGUF metadata `{key}` is not an integer: {}",
                short_debug(v)
            ))),
        },
    }
}

fn meta_bool(metadata: &HashMap<String, Value>, key: &str) -> Option<bool> {
    match meta(metadata, key) {
        Some(Value::Bool(b)) => Some(*b),
        Some(v) => value_as_i64(v).map(|x| x != 0),
        None => None,
    }
}

fn meta_strings(metadata: &HashMap<String, Value>, key: &str) -> Result<Vec<String>> {
    let v = meta(metadata, key)
        .ok_or_else(|| Error::Tokenizer(format!("GGUF metadata has no `{key}`")))?;
    let Value::Array(items) = v else {
        return Err(Error::Tokenizer(format!(
            "GGUF metadata `{key}` is not an array"
        )));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.clone()),
            other => Err(Error::Tokenizer(format!(
                "GGUF metadata `{key}`[{i}] is not a string: {}",
                short_debug(other)
            ))),
        })
        .collect()
}

fn short_debug(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("array of {} values", a.len()),
        Value::String(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

/// How the text is cut into pieces before BPE, per `tokenizer.ggml.pre`.
struct PrePipeline {
    nfc: bool,
    pre_tokenizer: PreTokenizerWrapper,
    ignore_merges: bool,
}

fn split_then_byte_level(regex: &str) -> Result<PreTokenizerWrapper> {
    let split = Split::new(
        SplitPattern::Regex(regex.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| Error::Tokenizer(format!("bad pre-tokenizer regex: {e}")))?;
    Ok(Sequence::new(vec![
        split.into(),
        ByteLevel::new(false, false, false).into(),
    ])
    .into())
}

fn pre_pipeline(pre: Option<&str>) -> Result<PrePipeline> {
    let supported = SUPPORTED_PRE.join(", ");
    let Some(pre) = pre else {
        return Err(Error::Tokenizer(format!(
            "GGUF metadata has no `tokenizer.ggml.pre`, so the pre-tokenizer is unknown; supported: {supported}. \
             Use a model folder with tokenizer.json instead"
        )));
    };
    Ok(match pre {
        "qwen2" | "deepseek-r1-qwen" => PrePipeline {
            nfc: true,
            pre_tokenizer: split_then_byte_level(QWEN2_REGEX)?,
            ignore_merges: false,
        },
        "llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" => PrePipeline {
            nfc: false,
            pre_tokenizer: split_then_byte_level(LLAMA3_REGEX)?,
            ignore_merges: true,
        },
        // SmolLM/StarCoder tokenizer.json: Digits(individual) + ByteLevel with the GPT-2 regex.
        "smollm" | "starcoder" => PrePipeline {
            nfc: false,
            pre_tokenizer: Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, false, true).into(),
            ])
            .into(),
            ignore_merges: false,
        },
        "gpt-2" | "gpt2" | "default" => PrePipeline {
            nfc: false,
            pre_tokenizer: ByteLevel::new(false, false, true).into(),
            ignore_merges: false,
        },
        other => {
            return Err(Error::Tokenizer(format!(
                "unsupported GGUF pre-tokenizer `tokenizer.ggml.pre` = {other:?}; supported: {supported}. \
                 Use a model folder with tokenizer.json instead"
            )))
        }
    })
}

/// Build a tokenizer from GGUF metadata (`Content::metadata`).
pub fn tokenizer_from_gguf(metadata: &HashMap<String, Value>) -> Result<Tokenizer> {
    let model = meta_str(metadata, "tokenizer.ggml.model")?
        .ok_or_else(|| Error::Tokenizer("GGUF metadata has no `tokenizer.ggml.model`".into()))?;
    match model {
        "gpt2" => bpe_from_gguf(metadata),
        "llama" => Err(Error::Tokenizer(
            "this GGUF has a SentencePiece tokenizer (`tokenizer.ggml.model` = \"llama\"), which is not \
             supported yet; use a model folder with tokenizer.json instead"
                .into(),
        )),
        other => Err(Error::Tokenizer(format!(
            "unsupported GGUF tokenizer model `tokenizer.ggml.model` = {other:?}; only \"gpt2\" (byte-level BPE) \
             is supported; use a model folder with tokenizer.json instead"
        ))),
    }
}

fn bpe_from_gguf(metadata: &HashMap<String, Value>) -> Result<Tokenizer> {
    // Check the pre-tokenizer first: it is the most likely thing to be unsupported.
    let pipeline = pre_pipeline(meta_str(metadata, "tokenizer.ggml.pre")?)?;

    let tokens = meta_strings(metadata, "tokenizer.ggml.tokens")?;
    if tokens.is_empty() {
        return Err(Error::Tokenizer(
            "GGUF metadata `tokenizer.ggml.tokens` is empty".into(),
        ));
    }
    let mut vocab = Vocab::default();
    for (id, tok) in tokens.iter().enumerate() {
        // Keep the first id of a duplicated string.
        vocab.entry(tok.clone()).or_insert(id as u32);
    }
    let merges = meta_strings(metadata, "tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| Error::Tokenizer(format!("GGUF merge {i} ({m:?}) is not \"a b\"")))
        })
        .collect::<Result<Vec<_>>>()?;

    let ignore_merges =
        meta_bool(metadata, "tokenizer.ggml.ignore_merges").unwrap_or(pipeline.ignore_merges);
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| Error::Tokenizer(format!("cannot build BPE from GGUF vocabulary: {e}")))?;

    let mut tok = Tokenizer::new(bpe);
    if pipeline.nfc {
        tok.with_normalizer(Some(NFC))
            .map_err(|e| Error::Tokenizer(format!("cannot set normalizer: {e}")))?;
    }
    tok.with_pre_tokenizer(Some(pipeline.pre_tokenizer));
    tok.with_decoder(Some(ByteLevelDecoder::default()));

    // Special and user-defined tokens, so that markup like `<|im_start|>` in the text encodes to
    // its single id (the BPE model alone would spell it out byte by byte).
    let mut special_ids: Vec<u32> = Vec::new();
    let mut user_ids: Vec<u32> = Vec::new();
    if let Some(v) = meta(metadata, "tokenizer.ggml.token_type") {
        let Value::Array(types) = v else {
            return Err(Error::Tokenizer(
                "GGUF metadata `tokenizer.ggml.token_type` is not an array".into(),
            ));
        };
        for (id, t) in types.iter().enumerate().take(tokens.len()) {
            match value_as_i64(t) {
                Some(TOKEN_TYPE_CONTROL) | Some(TOKEN_TYPE_UNKNOWN) => special_ids.push(id as u32),
                Some(TOKEN_TYPE_USER_DEFINED) => user_ids.push(id as u32),
                _ => {}
            }
        }
    }
    for key in [
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.unk_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.pad_token_id",
        "tokenizer.ggml.seperator_token_id",
        "tokenizer.ggml.sep_token_id",
    ] {
        if let Some(id) = meta_id(metadata, key)? {
            if (id as usize) < tokens.len() {
                special_ids.push(id);
            }
        }
    }
    let mut seen = HashSet::new();
    let specials: Vec<AddedToken> = special_ids
        .iter()
        .filter(|id| seen.insert(**id))
        .filter(|id| vocab_id_is_canonical(&tok, &tokens, **id))
        .map(|id| AddedToken::from(tokens[*id as usize].clone(), true).normalized(false))
        .collect();
    let users: Vec<AddedToken> = user_ids
        .iter()
        .filter(|id| seen.insert(**id))
        .filter(|id| vocab_id_is_canonical(&tok, &tokens, **id))
        .map(|id| AddedToken::from(tokens[*id as usize].clone(), false).normalized(false))
        .collect();
    if !specials.is_empty() {
        tok.add_special_tokens(specials)
            .map_err(|e| Error::Tokenizer(format!("cannot add special tokens: {e}")))?;
    }
    if !users.is_empty() {
        tok.add_tokens(users)
            .map_err(|e| Error::Tokenizer(format!("cannot add user-defined tokens: {e}")))?;
    }
    Ok(tok)
}

/// True when `id` is the id the BPE vocabulary gives its string (not a later duplicate, and not
/// empty), so registering it as an added token keeps that id.
fn vocab_id_is_canonical(tok: &Tokenizer, tokens: &[String], id: u32) -> bool {
    let s = &tokens[id as usize];
    !s.is_empty() && tok.token_to_id(s) == Some(id)
}

/// The special tokens the engine needs: BOS/EOS for chat templates, EOS/EOT to stop generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<(u32, String)>,
    pub eos: Option<(u32, String)>,
    /// End-of-turn token (`tokenizer.ggml.eot_token_id`), e.g. `<|eot_id|>`, `<|im_end|>`.
    pub eot: Option<(u32, String)>,
    pub unk: Option<(u32, String)>,
    pub pad: Option<(u32, String)>,
    /// Whether llama.cpp would prepend BOS (`tokenizer.ggml.add_bos_token`). Informational: the
    /// tokenizer itself never adds it.
    pub add_bos: bool,
}

/// Token strings that end a turn (or the text) in the chat formats we know: llama.cpp's list of
/// end-of-generation markers, plus Llama 3's `<|end_of_text|>`.
const END_OF_TURN_STRINGS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eom_id|>",
    "<EOT>",
    "<|end▁of▁sentence|>",
];

/// The ids generation stops on: the declared ones (EOS ids from config.json,
/// generation_config.json or GGUF metadata, and the GGUF end-of-turn id) plus every token of the
/// vocabulary whose string is a known end-of-turn marker (`<|im_end|>`, `<|eot_id|>`,
/// `<end_of_turn>`, `<|endoftext|>`, ...; found by string, as llama.cpp does). Sorted, without
/// duplicates. The engine's loader and [`SpecialTokens::stop_ids`] both use it.
pub fn stop_ids(declared: impl IntoIterator<Item = u32>, tok: &Tokenizer) -> Vec<u32> {
    let markers = END_OF_TURN_STRINGS
        .iter()
        .filter_map(|m| tok.token_to_id(m));
    let mut ids: Vec<u32> = declared.into_iter().chain(markers).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl SpecialTokens {
    /// Look up BOS/EOS by their strings (from tokenizer_config.json) in a tokenizer.
    pub fn from_strings(tok: &Tokenizer, bos: Option<&str>, eos: Option<&str>) -> Self {
        let find =
            |s: Option<&str>| s.and_then(|s| tok.token_to_id(s).map(|id| (id, s.to_string())));
        SpecialTokens {
            bos: find(bos),
            eos: find(eos),
            ..Default::default()
        }
    }

    /// Ids on which generation should stop: EOS, EOT and the vocabulary's end-of-turn markers
    /// ([`stop_ids`]).
    pub fn stop_ids(&self, tok: &Tokenizer) -> Vec<u32> {
        let declared = [&self.eos, &self.eot]
            .into_iter()
            .filter_map(|t| t.as_ref().map(|(id, _)| *id));
        stop_ids(declared, tok)
    }
}

/// Read BOS/EOS/EOT/UNK/PAD from GGUF metadata; strings come from `tok`.
pub fn special_tokens_from_gguf(
    metadata: &HashMap<String, Value>,
    tok: &Tokenizer,
) -> Result<SpecialTokens> {
    let get = |keys: &[&str]| -> Result<Option<(u32, String)>> {
        for key in keys {
            if let Some(id) = meta_id(metadata, key)? {
                let s = tok.id_to_token(id).ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "GGUF metadata `{key}` = {id} is outside the vocabulary"
                    ))
                })?;
                return Ok(Some((id, s)));
            }
        }
        Ok(None)
    };
    Ok(SpecialTokens {
        bos: get(&["tokenizer.ggml.bos_token_id"])?,
        eos: get(&["tokenizer.ggml.eos_token_id"])?,
        eot: get(&["tokenizer.ggml.eot_token_id"])?,
        unk: get(&[
            "tokenizer.ggml.unknown_token_id",
            "tokenizer.ggml.unk_token_id",
        ])?,
        pad: get(&[
            "tokenizer.ggml.padding_token_id",
            "tokenizer.ggml.pad_token_id",
        ])?,
        add_bos: meta_bool(metadata, "tokenizer.ggml.add_bos_token").unwrap_or(false),
    })
}

/// Encode `text` without adding special tokens (special-token markup present in the text is still
/// recognised). Returns the ids and, per token, a byte range `start..end` into `text`.
///
/// Offsets semantics: ranges are byte offsets into the original `text` (before any normalizer),
/// always on `char` boundaries, so `&text[start..end]` never panics. A token that covers only part
/// of a multi-byte character is given that whole character, so two neighbouring tokens that split
/// one character both cover it (their ranges overlap by that character); otherwise ranges are
/// contiguous and non-overlapping, and `&text[start..end]` equals the token's decoded text.
/// Starts and ends are non-decreasing.
#[allow(clippy::type_complexity)] // the signature the engine asked for
pub fn encode_with_offsets(tok: &Tokenizer, text: &str) -> Result<(Vec<u32>, Vec<(usize, usize)>)> {
    let enc = tok
        .encode(text, false)
        .map_err(|e| Error::Tokenizer(format!("cannot encode text: {e}")))?;
    let ids = enc.get_ids().to_vec();
    let mut offsets: Vec<(usize, usize)> = Vec::with_capacity(ids.len());
    let mut prev_start = 0usize;
    let mut prev_end = 0usize;
    for &(s, e) in enc.get_offsets() {
        // Defensive: clamp into the text, snap outwards to char boundaries, keep monotone.
        let mut s = s.min(text.len());
        let mut e = e.min(text.len()).max(s);
        while !text.is_char_boundary(s) {
            s -= 1;
        }
        while !text.is_char_boundary(e) {
            e += 1;
        }
        s = s.max(prev_start);
        e = e.max(prev_end).max(s);
        offsets.push((s, e));
        prev_start = s;
        prev_end = e;
    }
    Ok((ids, offsets))
}

/// GPT-2's byte-to-unicode table: the character each byte becomes in a byte-level BPE vocabulary
/// (useful to build vocabularies in tests and to read raw tokens).
pub fn byte_level_alphabet() -> Vec<char> {
    let mut bytes: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = bytes.clone();
    let mut next = 0;
    for b in 0..256u32 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + next);
            next += 1;
        }
    }
    let mut table = vec![' '; 256];
    for (b, c) in bytes.iter().zip(chars) {
        table[*b as usize] = char::from_u32(c).expect("code points below 512 are valid chars");
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bl(s: &str) -> String {
        let t = byte_level_alphabet();
        s.bytes().map(|b| t[b as usize]).collect()
    }

    const SPECIALS: &[&str] = &["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

    /// A tiny byte-level vocabulary: 3 control tokens, the 256 byte symbols, then `merges`
    /// (given in plain text, converted to byte-level symbols).
    fn metadata(pre: Option<&str>, merges: &[(&str, &str)]) -> HashMap<String, Value> {
        let merges: Vec<(String, String)> = merges.iter().map(|(a, b)| (bl(a), bl(b))).collect();
        metadata_bl(pre, &merges)
    }

    /// Same, with merges already in byte-level symbols.
    fn metadata_bl(pre: Option<&str>, merges: &[(String, String)]) -> HashMap<String, Value> {
        let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        tokens.extend(byte_level_alphabet().into_iter().map(|c| c.to_string()));
        let mut merge_strs = Vec::new();
        for (a, b) in merges {
            let merged = format!("{a}{b}");
            if !tokens.contains(&merged) {
                tokens.push(merged);
            }
            merge_strs.push(format!("{a} {b}"));
        }
        let mut types = vec![Value::I32(3); SPECIALS.len()];
        types.resize(tokens.len(), Value::I32(1));
        let mut m = HashMap::new();
        m.insert(
            "tokenizer.ggml.model".to_string(),
            Value::String("gpt2".into()),
        );
        if let Some(pre) = pre {
            m.insert("tokenizer.ggml.pre".to_string(), Value::String(pre.into()));
        }
        m.insert(
            "tokenizer.ggml.tokens".to_string(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        );
        m.insert(
            "tokenizer.ggml.merges".to_string(),
            Value::Array(merge_strs.into_iter().map(Value::String).collect()),
        );
        m.insert("tokenizer.ggml.token_type".to_string(), Value::Array(types));
        m.insert("tokenizer.ggml.bos_token_id".to_string(), Value::U32(1));
        m.insert("tokenizer.ggml.eos_token_id".to_string(), Value::U32(2));
        m
    }

    const DIGIT_MERGES: &[(&str, &str)] = &[("1", "2"), ("12", "3"), ("4", "5"), ("3", "4")];

    fn tokens_of(tok: &Tokenizer, text: &str) -> Vec<String> {
        let (ids, _) = encode_with_offsets(tok, text).unwrap();
        ids.iter()
            .map(|id| tok.decode(&[*id], false).unwrap())
            .collect()
    }

    #[test]
    fn smollm_splits_every_digit() {
        let tok = tokenizer_from_gguf(&metadata(Some("smollm"), DIGIT_MERGES)).unwrap();
        assert_eq!(tokens_of(&tok, "12345"), ["1", "2", "3", "4", "5"]);
    }

    #[test]
    fn qwen2_single_digits_llama_bpe_groups_of_three() {
        let qwen = tokenizer_from_gguf(&metadata(Some("qwen2"), DIGIT_MERGES)).unwrap();
        assert_eq!(tokens_of(&qwen, "12345"), ["1", "2", "3", "4", "5"]);
        let llama = tokenizer_from_gguf(&metadata(Some("llama-bpe"), DIGIT_MERGES)).unwrap();
        assert_eq!(tokens_of(&llama, "12345"), ["123", "45"]);
        // GPT-2's regex keeps a digit run together: " ?\p{N}+".
        let gpt2 = tokenizer_from_gguf(&metadata(Some("gpt2"), DIGIT_MERGES)).unwrap();
        assert_eq!(tokens_of(&gpt2, "12345"), ["123", "45"]);
    }

    #[test]
    fn merges_apply_across_a_space_in_byte_level() {
        let tok =
            tokenizer_from_gguf(&metadata(Some("smollm"), &[(" ", "w"), (" w", "o")])).unwrap();
        assert_eq!(tokens_of(&tok, "a wo"), ["a", " wo"]);
    }

    #[test]
    fn special_tokens_encode_to_single_ids() {
        for pre in ["smollm", "qwen2", "llama-bpe", "gpt2"] {
            let tok = tokenizer_from_gguf(&metadata(Some(pre), &[])).unwrap();
            let (ids, offs) = encode_with_offsets(&tok, "<|im_start|>user\nhi<|im_end|>").unwrap();
            assert_eq!(ids[0], 1, "{pre}");
            assert_eq!(*ids.last().unwrap(), 2, "{pre}");
            assert_eq!(offs[0], (0, 12), "{pre}");
            assert_eq!(*offs.last().unwrap(), (19, 29), "{pre}");
            // Nothing is added around the text.
            let (ids, _) = encode_with_offsets(&tok, "hi").unwrap();
            assert_eq!(ids.len(), 2, "{pre}");
            assert_eq!(
                tok.decode(&[1, 2], false).unwrap(),
                "<|im_start|><|im_end|>"
            );
        }
    }

    #[test]
    fn user_defined_tokens_are_whole_but_not_special() {
        let mut md = metadata(Some("qwen2"), &[]);
        let Some(Value::Array(tokens)) = md.get_mut("tokenizer.ggml.tokens") else {
            unreachable!()
        };
        tokens.push(Value::String("<think>".into()));
        let id = (tokens.len() - 1) as u32;
        let Some(Value::Array(types)) = md.get_mut("tokenizer.ggml.token_type") else {
            unreachable!()
        };
        types.push(Value::I32(4));
        let tok = tokenizer_from_gguf(&md).unwrap();
        let (ids, offs) = encode_with_offsets(&tok, "a<think>b").unwrap();
        assert_eq!(ids.len(), 3);
        assert_eq!((ids[1], offs[1]), (id, (1, 8)));
        // Kept when special tokens are skipped; control tokens are dropped.
        assert_eq!(tok.decode(&[1, id, 2], true).unwrap(), "<think>");
    }

    #[test]
    fn special_tokens_from_metadata() {
        let md = metadata(Some("smollm"), &[]);
        let tok = tokenizer_from_gguf(&md).unwrap();
        let sp = special_tokens_from_gguf(&md, &tok).unwrap();
        assert_eq!(sp.bos, Some((1, "<|im_start|>".to_string())));
        assert_eq!(sp.eos, Some((2, "<|im_end|>".to_string())));
        assert_eq!(sp.eot, None);
        assert_eq!(sp.stop_ids(&tok), vec![0, 2]);
    }

    #[test]
    fn unknown_or_missing_pre_is_an_error() {
        let err = tokenizer_from_gguf(&metadata(Some("mystery-pre"), &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"mystery-pre\""), "{err}");
        assert!(err.contains("smollm") && err.contains("qwen2"), "{err}");
        let err = tokenizer_from_gguf(&metadata(None, &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokenizer.ggml.pre"), "{err}");
    }

    #[test]
    fn spm_and_other_models_are_errors() {
        let mut md = metadata(Some("default"), &[]);
        md.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
        let err = tokenizer_from_gguf(&md).unwrap_err().to_string();
        assert!(
            err.contains("SentencePiece") && err.contains("tokenizer.json"),
            "{err}"
        );
        md.insert("tokenizer.ggml.model".into(), Value::String("bert".into()));
        let err = tokenizer_from_gguf(&md).unwrap_err().to_string();
        assert!(err.contains("\"bert\""), "{err}");
    }

    fn assert_offsets_round_trip(tok: &Tokenizer, text: &str) {
        let (ids, offs) = encode_with_offsets(tok, text).unwrap();
        assert_eq!(ids.len(), offs.len());
        assert_eq!(offs.first().map(|o| o.0), Some(0), "{text:?}");
        assert_eq!(offs.last().map(|o| o.1), Some(text.len()), "{text:?}");
        for (i, (id, &(s, e))) in ids.iter().zip(&offs).enumerate() {
            let piece = tok.decode(&[*id], false).unwrap();
            if !piece.contains('\u{FFFD}') {
                assert_eq!(&text[s..e], piece, "token {i} of {text:?}");
                if i > 0 {
                    assert_eq!(offs[i - 1].1, s, "token {i} of {text:?}: gap or overlap");
                }
            }
        }
        // The whole text decodes back.
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }

    #[test]
    fn offsets_round_trip_ascii_multibyte_and_specials() {
        let t = byte_level_alphabet();
        let b = |bytes: &[u8]| -> String { bytes.iter().map(|x| t[*x as usize]).collect() };
        let e_acute = "é".as_bytes();
        let ri = "日".as_bytes();
        let merges = vec![
            (bl("h"), bl("e")),
            (bl("he"), bl("l")),
            (bl(" "), bl("w")),
            (b(&e_acute[..1]), b(&e_acute[1..])),
            (bl("é"), bl("t")),
            (b(&ri[..1]), b(&ri[1..2])),
            (b(&ri[..2]), b(&ri[2..])),
        ];
        for pre in ["smollm", "qwen2", "llama-bpe", "gpt2"] {
            let tok = tokenizer_from_gguf(&metadata_bl(Some(pre), &merges)).unwrap();
            assert_eq!(tokens_of(&tok, "été"), ["ét", "é"], "{pre}");
            assert_offsets_round_trip(&tok, "hello world, 12345!");
            assert_offsets_round_trip(&tok, "été à Zürich: 日本語 😀 ok");
            assert_offsets_round_trip(&tok, "<|im_start|>user\ncafé 日本<|im_end|>\n");
        }
    }

    #[test]
    fn offsets_of_a_token_splitting_a_character() {
        // "é" is C3 A9; merge "h" with the first byte only, so the character is split.
        let t = byte_level_alphabet();
        let tok = tokenizer_from_gguf(&metadata_bl(
            Some("smollm"),
            &[(bl("h"), t[0xC3].to_string())],
        ))
        .unwrap();
        let text = "hé!";
        let (ids, offs) = encode_with_offsets(&tok, text).unwrap();
        assert_eq!(ids.len(), 3, "{ids:?}");
        // "h"+C3 and A9 both cover the whole "é"; "!" follows.
        assert_eq!(offs, vec![(0, 3), (1, 3), (3, 4)]);
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }

    #[test]
    fn nfc_normalizer_offsets_point_into_original_text() {
        // "e" + combining acute (3 bytes) is NFC-normalised to "é" (2 bytes) by qwen2.
        let tok = tokenizer_from_gguf(&metadata(Some("qwen2"), &[])).unwrap();
        let text = "cafe\u{301} x";
        let (ids, offs) = encode_with_offsets(&tok, text).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), "café x");
        assert_eq!(offs.last().unwrap().1, text.len());
        for &(s, e) in &offs {
            assert!(text.is_char_boundary(s) && text.is_char_boundary(e) && s <= e);
        }
    }
}
