//! Tokenizers: tokenizer.json, or built from GGUF metadata.
