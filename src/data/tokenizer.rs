//! Tokenizers: byte-level, GPT-2's BPE, any HF tokenizer.json, and a byte-level BPE trained on
//! the input. Every one is saved as an HF tokenizer.json, which is what `train`, `eval` and
//! `sample` load back, so a prepared directory or a checkpoint decodes with the tokenizer that
//! made its tokens.
//!
//! Encoding takes the fast path of each kind: bytes map to ids directly, GPT-2 goes through
//! tiktoken-rs (OpenAI's ranks, shipped in the crate), the rest through the HF tokenizers crate.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::models::bpe::{BpeTrainerBuilder, Vocab, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

/// GPT-2's end-of-text token, the one llm.c puts before every document.
pub const ENDOFTEXT: &str = "<|endoftext|>";

/// Tokens looked for, in order, as the end-of-text of a tokenizer.json.
const EOT_NAMES: [&str; 5] = [ENDOFTEXT, "</s>", "<|end_of_text|>", "<eos>", "<|im_end|>"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One token per byte, ids 0..=255; byte 0 separates documents.
    Byte,
    /// OpenAI's GPT-2 (r50k_base), 50257 tokens.
    Gpt2,
    /// Byte-level BPE trained by `prepare --tokenizer bpe`.
    Bpe,
    /// A tokenizer.json given by the user.
    File,
}

pub struct Tokenizer {
    pub kind: Kind,
    hf: tokenizers::Tokenizer,
    tiktoken: Option<tiktoken_rs::CoreBPE>,
    /// The token put before each document. For bytes it is byte 0 (NUL), which cleaning
    /// removes from the text, so it never stands for anything else.
    pub eot: u32,
    pub vocab_size: usize,
}

type Error = String;

impl Tokenizer {
    pub fn byte() -> Self {
        let vocab: Vocab = (0..=255u8).map(|b| (byte_char(b).to_string(), b as u32)).collect();
        let bpe = BPE::builder().vocab_and_merges(vocab, vec![]).build().expect("byte vocabulary");
        let mut hf = tokenizers::Tokenizer::new(bpe);
        hf.with_pre_tokenizer(Some(ByteLevel::new(false, false, false)));
        hf.with_decoder(Some(ByteLevel::new(false, false, false)));
        Tokenizer { kind: Kind::Byte, hf, tiktoken: None, eot: 0, vocab_size: 256 }
    }

    /// GPT-2's BPE. The tokenizer.json it saves is built from the same ranks: token id = rank,
    /// and the merges in rank order, each the pair that BPE over lower ranks splits it into.
    pub fn gpt2() -> Self {
        let core = tiktoken_rs::r50k_base().expect("r50k_base ships with tiktoken-rs");
        let n = 50256u32;
        let tokens: Vec<Vec<u8>> = (0..n).map(|r| core.decode_bytes(&[r]).expect("every rank decodes")).collect();
        let ranks: HashMap<&[u8], u32> = tokens.iter().enumerate().map(|(r, t)| (t.as_slice(), r as u32)).collect();
        let show = |b: &[u8]| b.iter().map(|&x| byte_char(x)).collect::<String>();
        let mut merges = Vec::new();
        for (r, t) in tokens.iter().enumerate() {
            if t.len() > 1 {
                let (a, b) = split_by_lower_ranks(t, r as u32, &ranks);
                merges.push((show(a), show(b)));
            }
        }
        // <|endoftext|> is in the model's vocabulary but not an added token, so that text
        // holding the string encodes as ordinary text in both paths, as llm.c's data has it.
        let mut vocab: Vocab = tokens.iter().enumerate().map(|(r, t)| (show(t), r as u32)).collect();
        vocab.insert(ENDOFTEXT.into(), n);
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().expect("GPT-2 vocabulary");
        let mut hf = tokenizers::Tokenizer::new(bpe);
        hf.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        hf.with_decoder(Some(ByteLevel::new(false, true, true)));
        Tokenizer { kind: Kind::Gpt2, hf, tiktoken: Some(core), eot: n, vocab_size: n as usize + 1 }
    }

    /// A tokenizer.json. Its end-of-text is `eot` if given, else the first of <|endoftext|>,
    /// </s>, <|end_of_text|>, <eos>, <|im_end|> that it holds.
    pub fn from_file(path: &Path, eot: Option<&str>) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_bytes(&bytes, path, eot)
    }

    /// `from_file` of a tokenizer.json's bytes; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path, eot: Option<&str>) -> Result<Self, Error> {
        let bad = |e: &dyn std::fmt::Display| {
            format!("{}: not a tokenizer.json the HF tokenizers crate reads: {e}", path.display())
        };
        // The tokenizers crate panics on some malformed files (found by fuzzing: broken JSON,
        // invalid UTF-8 in a string): check the JSON strictly first, and turn any panic left
        // into an error.
        serde_json::from_slice::<serde_json::Value>(bytes).map_err(|e| bad(&e))?;
        let hf = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(bytes))
            .map_err(|_| bad(&"the tokenizers crate could not read it"))?
            .map_err(|e| bad(&e))?;
        // Ids may have gaps: the model needs the largest one plus one rows.
        let vocab_size = hf.get_vocab(true).values().max().map_or(0, |&m| m as usize + 1);
        let byte_like = vocab_size == 256
            && (0..=255u8).all(|b| hf.id_to_token(b as u32).as_deref() == Some(&byte_char(b).to_string()));
        if byte_like && eot.is_none() {
            return Ok(Tokenizer::byte());
        }
        let eot = match eot {
            Some(name) => {
                hf.token_to_id(name).ok_or_else(|| format!("{}: holds no token {name:?} (--eot)", path.display()))?
            }
            None => EOT_NAMES.iter().find_map(|n| hf.token_to_id(n)).ok_or_else(|| {
                format!(
                    "{}: holds none of {} to put between documents; name one with --eot TOKEN",
                    path.display(),
                    EOT_NAMES.join(" ")
                )
            })?,
        };
        Ok(Tokenizer { kind: Kind::File, hf, tiktoken: None, eot, vocab_size })
    }

    /// The tokenizer of a prepared directory or a checkpoint: its tokenizer.json, or bytes
    /// when there is none.
    pub fn for_dir(dir: &Path) -> Result<Self, Error> {
        let file = dir.join("tokenizer.json");
        if file.is_file() {
            Tokenizer::from_file(&file, None)
        } else {
            Ok(Tokenizer::byte())
        }
    }

    /// Trains a byte-level BPE of `vocab_size` tokens (256 bytes, <|endoftext|> as id 0, and
    /// merges) on `docs`, with GPT-2's pre-tokenizer.
    pub fn train_bpe<I>(vocab_size: usize, docs: I) -> Result<Self, Error>
    where
        I: Iterator<Item = String> + Send,
    {
        check_bpe_size(vocab_size)?;
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from(ENDOFTEXT, true)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        let mut hf = tokenizers::Tokenizer::new(BPE::default());
        hf.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        hf.with_decoder(Some(ByteLevel::new(false, true, true)));
        hf.train(&mut trainer, docs).map_err(|e| format!("training the BPE failed: {e}"))?;
        // "<|endoftext|>" inside a document is text, as with bytes and GPT-2.
        hf.set_encode_special_tokens(true);
        let vocab_size = hf.get_vocab(true).values().max().map_or(0, |&m| m as usize + 1);
        let eot = hf.token_to_id(ENDOFTEXT).ok_or("the trained BPE lost its end-of-text token")?;
        Ok(Tokenizer { kind: Kind::Bpe, hf, tiktoken: None, eot, vocab_size })
    }

    /// Ids of `text`, special-token names included as plain text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        if self.kind == Kind::Byte {
            return Ok(text.bytes().map(u32::from).collect());
        }
        if let Some(t) = &self.tiktoken {
            // `encode` with no special token allowed gives encode_ordinary's ids, but returns
            // the regex engine's backtracking-limit error (long whitespace runs) instead of
            // panicking; the HF tokenizer.json built from the same ranks takes such a text.
            if let Ok((ids, _)) = t.encode(text, &std::collections::HashSet::new()) {
                return Ok(ids);
            }
        }
        self.hf.encode_fast(text, false).map(|e| e.get_ids().to_vec()).map_err(|e| format!("the tokenizer failed: {e}"))
    }

    /// Text of `ids`; bytes that do not form UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        if self.kind == Kind::Byte {
            let bytes: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        if let Some(t) = &self.tiktoken {
            let known: Vec<u32> = ids.iter().copied().filter(|&i| (i as usize) < self.vocab_size).collect();
            return String::from_utf8_lossy(&t.decode_bytes(&known).unwrap_or_default()).into_owned();
        }
        self.hf.decode(ids, false).unwrap_or_default()
    }

    /// The bytes `ids` stand for: exactly, for bytes and tiktoken's GPT-2; the decoded text's
    /// for a tokenizer.json (whose decoder yields text).
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        if self.kind == Kind::Byte {
            return ids.iter().map(|&i| i as u8).collect();
        }
        if let Some(t) = &self.tiktoken {
            let known: Vec<u32> = ids.iter().copied().filter(|&i| (i as usize) < self.vocab_size).collect();
            return t.decode_bytes(&known).unwrap_or_default();
        }
        self.decode(ids).into_bytes()
    }

    /// Writes the tokenizer.json (under a temporary name, then renamed).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let tmp = path.with_extension("json.tmp");
        self.hf.save(&tmp, false).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether `other` maps every token to the same id (the ids in a token file mean the
    /// same text), whatever else differs in the two tokenizer.json files.
    /// The ids of the special added tokens (<|im_start|> …), matched whole in the text.
    pub fn special_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> =
            self.hf.get_added_tokens_decoder().into_iter().filter(|(_, t)| t.special).map(|(id, _)| id).collect();
        ids.sort_unstable();
        ids
    }

    /// llama.cpp's name of the pre-tokenizer (tokenizer.ggml.pre): default for bytes, gpt-2
    /// for GPT-2's byte-level regex, smollm for single digits split off before it.
    pub fn gguf_pre(&self) -> Result<&'static str, Error> {
        if self.kind == Kind::Byte {
            return Ok("default");
        }
        let pre = self.hf.get_pre_tokenizer().map(|p| serde_json::to_value(p).unwrap_or_default());
        let ty = |v: &serde_json::Value| v["type"].as_str().unwrap_or("").to_string();
        match &pre {
            Some(p) if ty(p) == "ByteLevel" => Ok("gpt-2"),
            Some(p) if ty(p) == "Sequence" => {
                let parts = p["pretokenizers"].as_array().cloned().unwrap_or_default();
                let digits = parts.first().is_some_and(|d| ty(d) == "Digits" && d["individual_digits"] == true);
                if parts.len() == 2 && digits && ty(&parts[1]) == "ByteLevel" {
                    Ok("smollm")
                } else {
                    Err(format!("a pre-tokenizer sequence llama.cpp has no name for: {p}"))
                }
            }
            other => Err(format!(
                "the pre-tokenizer {} has no llama.cpp name wgtrain knows (gpt-2, smollm)",
                other.as_ref().map_or("none".to_string(), ty)
            )),
        }
    }

    /// The id of a whole token's text (a control token such as <|im_end|>).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.hf.token_to_id(text)
    }

    pub fn same_ids(&self, other: &Tokenizer) -> bool {
        self.eot == other.eot && self.hf.get_vocab(true) == other.hf.get_vocab(true)
    }
}

impl Tokenizer {
    /// Each id's token text (None for an id no token has) and the BPE merges in rank order,
    /// as GGUF's tokenizer.ggml.tokens and tokenizer.ggml.merges list them.
    pub fn vocab_and_merges(&self) -> (Vec<Option<String>>, Vec<(String, String)>) {
        let mut tokens = vec![None; self.vocab_size];
        for (t, id) in self.hf.get_vocab(true) {
            if let Some(slot) = tokens.get_mut(id as usize) {
                *slot = Some(t);
            }
        }
        let json: serde_json::Value =
            serde_json::from_str(&self.hf.to_string(false).unwrap_or_default()).unwrap_or_default();
        let merges = json["model"]["merges"].as_array().cloned().unwrap_or_default();
        let pair = |m: &serde_json::Value| -> Option<(String, String)> {
            match m {
                serde_json::Value::String(s) => s.split_once(' ').map(|(a, b)| (a.into(), b.into())),
                serde_json::Value::Array(p) => Some((p.first()?.as_str()?.into(), p.get(1)?.as_str()?.into())),
                _ => None,
            }
        };
        (tokens, merges.iter().filter_map(pair).collect())
    }

    /// A byte-level BPE from a GGUF file's token list and merges (GPT-2's pre-tokenizer), with
    /// end-of-text `eot`; bytes when the list is the 256 byte tokens. Merges that join tokens
    /// the list lacks are dropped.
    pub fn from_vocab_merges(tokens: &[String], merges: &[(String, String)], eot: u32) -> Result<Self, Error> {
        Self::from_gguf_parts(tokens, merges, eot, "gpt-2", &[])
    }

    /// `from_vocab_merges` with llama.cpp's pre-tokenizer `pre` (tokenizer.ggml.pre: gpt-2 or
    /// default, or smollm, which splits digits one by one before GPT-2's regex) and the
    /// `control` ids (token type 3: <|im_start|> …) matched whole in the text.
    pub fn from_gguf_parts(
        tokens: &[String],
        merges: &[(String, String)],
        eot: u32,
        pre: &str,
        control: &[u32],
    ) -> Result<Self, Error> {
        let byte_like =
            tokens.len() == 256 && tokens.iter().enumerate().all(|(b, t)| *t == byte_char(b as u8).to_string());
        if byte_like {
            return Ok(Tokenizer::byte());
        }
        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .filter(|(a, b)| vocab.contains_key(a) && vocab.contains_key(b) && vocab.contains_key(&format!("{a}{b}")))
            .cloned()
            .collect();
        let bpe =
            BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| format!("the GGUF tokenizer: {e}"))?;
        let mut hf = tokenizers::Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, true);
        match pre {
            "gpt-2" | "gpt2" | "default" => {
                hf.with_pre_tokenizer(Some(byte_level));
            }
            "smollm" => {
                use tokenizers::pre_tokenizers::{digits::Digits, sequence::Sequence, PreTokenizerWrapper as W};
                hf.with_pre_tokenizer(Some(Sequence::new(vec![
                    W::Digits(Digits::new(true)),
                    W::ByteLevel(byte_level),
                ])));
            }
            other => {
                return Err(format!(
                    "the GGUF tokenizer's pre-tokenizer {other:?} is not one wgtrain knows (gpt-2, default, smollm)"
                ))
            }
        }
        hf.with_decoder(Some(ByteLevel::new(false, true, true)));
        let specials: Vec<AddedToken> = control
            .iter()
            .filter_map(|&id| tokens.get(id as usize))
            .map(|t| AddedToken::from(t.clone(), true))
            .collect();
        hf.add_special_tokens(specials).map_err(|e| format!("the GGUF tokenizer's control tokens: {e}"))?;
        if (eot as usize) >= tokens.len() {
            return Err(format!("the GGUF tokenizer's end-of-text id {eot} is past its {} tokens", tokens.len()));
        }
        // Between documents goes the token a tokenizer.json would give (`from_bytes`), so
        // that a prepared directory's tokenizer.json reads back with the same end-of-text;
        // the file's eos (an instruct model's end of turn) only where it has none of those.
        let eot = EOT_NAMES.iter().find_map(|n| tokens.iter().position(|t| t == n)).map_or(eot, |i| i as u32);
        Ok(Tokenizer { kind: Kind::File, hf, tiktoken: None, eot, vocab_size: tokens.len() })
    }
}

/// Largest --vocab-size of a trained BPE.
pub const MAX_BPE_VOCAB: usize = 1 << 20;

/// A trained BPE needs the 256 bytes and the end-of-text, and no more than MAX_BPE_VOCAB.
pub fn check_bpe_size(n: usize) -> Result<(), Error> {
    if !(257..=MAX_BPE_VOCAB).contains(&n) {
        return Err(format!(
            "--vocab-size {n}: a byte-level BPE needs 257 (256 bytes + end-of-text) to {MAX_BPE_VOCAB} tokens"
        ));
    }
    Ok(())
}

/// GPT-2's printable stand-in for a byte: printable Latin-1 bytes stand for themselves, the
/// others map to U+0100 onward in byte order.
pub fn byte_char(b: u8) -> char {
    let printable = |x: u8| (b'!'..=b'~').contains(&x) || (0xA1..=0xAC).contains(&x) || (0xAE..=0xFF).contains(&x);
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

/// The two tokens BPE joins last to build `token`: merging only ranks below `rank` leaves
/// exactly two parts.
fn split_by_lower_ranks<'a>(token: &'a [u8], rank: u32, ranks: &HashMap<&[u8], u32>) -> (&'a [u8], &'a [u8]) {
    let mut parts: Vec<&[u8]> = (0..token.len()).map(|i| &token[i..i + 1]).collect();
    loop {
        let mut best: Option<(u32, usize)> = None;
        for i in 0..parts.len() - 1 {
            let joined = &token[offset(token, parts[i])..offset(token, parts[i + 1]) + parts[i + 1].len()];
            match ranks.get(joined) {
                Some(&r) if r < rank && best.is_none_or(|(br, _)| r < br) => best = Some((r, i)),
                _ => {}
            }
        }
        let Some((_, i)) = best else { break };
        let start = offset(token, parts[i]);
        let end = offset(token, parts[i + 1]) + parts[i + 1].len();
        parts[i] = &token[start..end];
        parts.remove(i + 1);
    }
    assert_eq!(parts.len(), 2, "GPT-2 token of rank {rank} does not split into two lower-ranked tokens");
    (parts[0], parts[1])
}

fn offset(whole: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}
