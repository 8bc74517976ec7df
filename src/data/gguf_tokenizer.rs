//! A tokenizer in a GGUF file's metadata (tokenizer.ggml.*), as llama.cpp writes and reads
//! it: read back into a `Tokenizer` (`of_file`, `from_gguf`) and written beside a model's
//! tensors (`write_meta`).

use std::path::Path;

use super::tokenizer::{Kind, Tokenizer};
use crate::formats::gguf::{Gguf, Value, Writer};

/// The tokenizer metadata: GPT-2's tokenizer model with every id's token (ids the tokenizer
/// lacks become unused `[PAD<id>]`), its pre-tokenizer, the merges (a byte-level vocabulary
/// gets one that never applies, since llama.cpp wants at least one), the end-of-text and
/// special tokens as control tokens, the end-of-text as bos and `eos` (else it) as eos.
pub fn write_meta(w: &mut Writer, tok: &Tokenizer, vocab_size: usize, eos: Option<u32>) -> Result<(), String> {
    let (tokens, mut merges) = tok.vocab_and_merges();
    if merges.is_empty() {
        // Bytes 0 and 1 (NUL and SOH): cleaning removes both from the text.
        let c = super::tokenizer::byte_char;
        merges.push((c(0).to_string(), c(1).to_string()));
    }
    let text = |i: usize| tokens.get(i).cloned().flatten();
    let names: Vec<Value> =
        (0..vocab_size).map(|i| Value::Str(text(i).unwrap_or_else(|| format!("[PAD{i}]")))).collect();
    let mut control = tok.special_ids();
    if tok.kind != Kind::Byte {
        control.push(tok.eot);
    }
    let types: Vec<Value> = (0..vocab_size)
        .map(|i| {
            let ty = match text(i) {
                None => 5,
                Some(_) if control.contains(&(i as u32)) => 3,
                Some(_) => 1,
            };
            Value::I32(ty)
        })
        .collect();
    w.meta("tokenizer.ggml.model", Value::Str("gpt2".into()));
    w.meta("tokenizer.ggml.pre", Value::Str(tok.gguf_pre()?.into()));
    w.meta("tokenizer.ggml.tokens", Value::Array(names));
    w.meta("tokenizer.ggml.token_type", Value::Array(types));
    w.meta(
        "tokenizer.ggml.merges",
        Value::Array(merges.into_iter().map(|(a, b)| Value::Str(format!("{a} {b}"))).collect()),
    );
    w.meta("tokenizer.ggml.bos_token_id", Value::U32(tok.eot));
    w.meta("tokenizer.ggml.eos_token_id", Value::U32(eos.unwrap_or(tok.eot)));
    w.meta("tokenizer.ggml.add_bos_token", Value::Bool(false));
    Ok(())
}

/// The tokenizer of the GGUF file at `path` (`prepare --tokenizer FILE.gguf`).
pub fn of_file(path: &Path) -> Result<Tokenizer, String> {
    let g = Gguf::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    of_gguf(&g).map_err(|e| format!("{}: {e}", path.display()))
}

/// The tokenizer of a GGUF file already read.
pub fn of_gguf(g: &Gguf) -> Result<Tokenizer, String> {
    let n = g.get("tokenizer.ggml.tokens").and_then(Value::as_array).map_or(256, |t| t.len());
    from_gguf(g, n)
}

/// The tokenizer a GGUF file holds (bytes when it holds none).
pub fn from_gguf(g: &Gguf, vocab_size: usize) -> Result<Tokenizer, String> {
    let Some(list) = g.get("tokenizer.ggml.tokens").and_then(Value::as_array) else { return Ok(Tokenizer::byte()) };
    let tokens: Vec<String> = list.iter().map(|v| v.as_str().unwrap_or("").to_string()).collect();
    if tokens.len() != vocab_size {
        return Err(format!("{} tokens in tokenizer.ggml.tokens, {vocab_size} rows in token_embd", tokens.len()));
    }
    // Unused padding ids stand for nothing.
    let used = tokens.iter().rposition(|t| !t.starts_with("[PAD")).map_or(0, |i| i + 1);
    let merges: Vec<(String, String)> = g
        .get("tokenizer.ggml.merges")
        .and_then(Value::as_array)
        .unwrap_or(&[])
        .iter()
        .filter_map(|v| v.as_str()?.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect();
    let eot = g.get("tokenizer.ggml.eos_token_id").and_then(Value::as_u64).unwrap_or(0) as u32;
    let pre = g.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("gpt-2");
    let types = g.get("tokenizer.ggml.token_type").and_then(Value::as_array).unwrap_or(&[]);
    let control: Vec<u32> =
        types.iter().enumerate().filter(|(_, t)| t.as_u64() == Some(3)).map(|(i, _)| i as u32).collect();
    // The tokenizers crate panics on some inputs: a malformed file is an error instead.
    std::panic::catch_unwind(|| Tokenizer::from_gguf_parts(&tokens[..used], &merges, eot, pre, &control))
        .map_err(|_| "the tokenizers crate could not build its tokenizer".to_string())?
}
