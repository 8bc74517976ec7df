//! `wgtrain prepare --format prompt-completion|chat`: JSONL records of prompts and answers
//! into train.bin / val.bin with their masks (train.mask, val.mask; see `sft`).
//!
//! A prompt-completion record is its prompt's tokens, then its completion's and the
//! end-of-text: the completion and the end-of-text count. A chat record's messages are
//! rendered by the tokenizer's chat template one turn at a time, so that each assistant turn
//! (from its first token to the template's end of turn) is known and counts; the rest (system
//! and user turns, the template's assistant header) does not. The pieces are tokenized apart
//! and joined, so an example's tokens are the concatenation of its pieces'.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::chat::{self, Message};
use super::output::{Split, TokenFile};
use super::prepare::{list_inputs, wide, TokenizerChoice};
use super::sft::{mask_path, MaskFile, COUNTED, START};
use super::tokenizer::Tokenizer;

/// How JSONL records hold an example.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordFormat {
    /// {"prompt": …, "completion": …}
    PromptCompletion,
    /// {"messages": [{"role": …, "content": …}, …]}
    Chat,
}

#[derive(Clone, Debug)]
pub struct SftArgs {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    pub tokenizer: TokenizerChoice,
    pub format: RecordFormat,
    pub val_fraction: f64,
    pub seed: u64,
    pub eot: Option<String>,
    pub force: bool,
}

/// stats.json of masked data.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SftStats {
    pub format: Option<RecordFormat>,
    pub records_in: u64,
    pub malformed: u64,
    pub malformed_examples: Vec<String>,
    pub train_examples: u64,
    pub val_examples: u64,
    pub train_tokens: u64,
    pub val_tokens: u64,
    /// Tokens that count in the loss (as targets), over both files.
    pub counted_tokens: u64,
    pub longest_example: u64,
    pub vocab_size: usize,
    pub eot: u32,
}

/// A chat template and the text of its end-of-turn token.
struct Template {
    text: String,
    eos: String,
}

pub fn prepare_sft(a: &SftArgs) -> Result<SftStats, String> {
    let r = prepare_inner(a);
    if r.is_err() {
        for tmp in ["train.bin.tmp", "val.bin.tmp", "train.mask.tmp", "val.mask.tmp"] {
            let _ = std::fs::remove_file(a.out.join(tmp));
        }
    }
    r
}

fn prepare_inner(a: &SftArgs) -> Result<SftStats, String> {
    if !(0.0..1.0).contains(&a.val_fraction) {
        return Err(format!("--val-fraction {}: expected a number in [0, 1)", a.val_fraction));
    }
    let (tok, template) = tokenizer(a)?;
    let inputs = list_inputs(&a.inputs, &a.out)?;
    std::fs::create_dir_all(&a.out).map_err(|e| format!("--out {}: {e}", a.out.display()))?;
    if a.out.join("train.bin").exists() && !a.force {
        return Err(format!("--out {}: already holds train.bin; pass --force to replace it", a.out.display()));
    }
    let mut stats = SftStats { format: Some(a.format), vocab_size: tok.vocab_size, eot: tok.eot, ..Default::default() };
    let mut files = Files::new(&a.out, wide(&tok))?;
    let mut split = Split::new(a.val_fraction, a.seed);
    for input in &inputs {
        let f = std::fs::File::open(&input.path).map_err(|e| format!("--input {}: {e}", input.path.display()))?;
        for (i, line) in BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| format!("--input {}: {e}", input.path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            stats.records_in += 1;
            let where_ = || format!("{}:{}", input.path.display(), i + 1);
            let pieces = match pieces(&line, a.format, template.as_ref()) {
                Ok(p) => p,
                Err(why) => {
                    stats.malformed += 1;
                    if stats.malformed_examples.len() < 5 {
                        stats.malformed_examples.push(format!("{}: {why}", where_()));
                    }
                    continue;
                }
            };
            let (ids, flags) = encode(&tok, &pieces, a.format).map_err(|e| format!("{}: {e}", where_()))?;
            let val = split.is_val(stats.train_examples + stats.val_examples);
            files.push(val, &ids, &flags, &mut stats)?;
        }
    }
    if stats.train_examples == 0 {
        return Err(format!("--input: no well-formed {:?} record to train on", a.format));
    }
    files.finish()?;
    tok.save(&a.out.join("tokenizer.json")).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(&stats).expect("json");
    std::fs::write(a.out.join("stats.json"), json).map_err(|e| format!("--out {}: {e}", a.out.display()))?;
    Ok(stats)
}

/// The tokenizer of --tokenizer and, for chat records, its chat template.
fn tokenizer(a: &SftArgs) -> Result<(Tokenizer, Option<Template>), String> {
    let (tok, chat) = match &a.tokenizer {
        TokenizerChoice::Byte => (Tokenizer::byte(), None),
        TokenizerChoice::Gpt2 => (Tokenizer::gpt2(), None),
        TokenizerChoice::Bpe => {
            return Err(
                "--tokenizer bpe: records for fine-tuning take a model's tokenizer (a tokenizer.json or a .gguf)"
                    .into(),
            )
        }
        TokenizerChoice::File(p) => {
            let tok = Tokenizer::from_file(p, a.eot.as_deref()).map_err(|e| format!("--tokenizer {e}"))?;
            let dir = p.parent().unwrap_or(Path::new("."));
            (tok, chat::chat_in_dir(dir).map_err(|e| format!("--tokenizer {e}"))?)
        }
        TokenizerChoice::Gguf(p) => {
            let g = crate::formats::gguf::Gguf::read(p).map_err(|e| format!("--tokenizer {e}"))?;
            let tok =
                crate::data::gguf_tokenizer::of_gguf(&g).map_err(|e| format!("--tokenizer {}: {e}", p.display()))?;
            let t = g.get("tokenizer.chat_template").and_then(|v| v.as_str()).map(|t| (t.to_string(), None));
            (tok, t)
        }
    };
    if a.format != RecordFormat::Chat {
        return Ok((tok, None));
    }
    let Some((text, eos)) = chat else {
        return Err(format!(
            "--format chat: --tokenizer {:?} has no chat template (a .gguf's tokenizer.chat_template, or \
             tokenizer_config.json beside a tokenizer.json)",
            a.tokenizer
        ));
    };
    let eos = eos.unwrap_or_else(|| tok.decode(&[tok.eot]));
    Ok((tok, Some(Template { text, eos })))
}

/// A record's text pieces, each with whether it counts.
fn pieces(line: &str, format: RecordFormat, template: Option<&Template>) -> Result<Vec<(String, bool)>, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let field = |k: &str| v.get(k).and_then(|s| s.as_str()).ok_or_else(|| format!("no string field {k:?}"));
    match format {
        RecordFormat::PromptCompletion => {
            Ok(vec![(field("prompt")?.into(), false), (field("completion")?.into(), true)])
        }
        RecordFormat::Chat => {
            let messages: Vec<Message> = v.get("messages").ok_or("no field \"messages\"").and_then(|m| {
                serde_json::from_value(m.clone()).map_err(|_| "\"messages\" is not a list of {role, content}")
            })?;
            let t = template.expect("chat has a template");
            chat_pieces(&t.text, &t.eos, &messages)
        }
    }
}

/// A conversation rendered turn by turn: before each assistant message, the conversation so
/// far with the generation prompt; then with that message. The difference is the turn that
/// counts. The template must render each step as an extension of the one before.
pub fn chat_pieces(template: &str, eos: &str, messages: &[Message]) -> Result<Vec<(String, bool)>, String> {
    if !messages.iter().any(|m| m.role == "assistant") {
        return Err("no assistant message: nothing to learn".into());
    }
    let render = |upto: usize, gen: bool| chat::render(template, &messages[..upto], gen, ("", eos));
    let mut out = Vec::new();
    let mut done = String::new();
    let mut extend = |text: String, counted: bool, done: &mut String| -> Result<(), String> {
        let rest = text.strip_prefix(done.as_str()).ok_or_else(|| {
            "the chat template does not render the conversation turn by turn (a longer conversation changes \
             the text of its start)"
                .to_string()
        })?;
        if !rest.is_empty() {
            out.push((rest.to_string(), counted));
        }
        *done = text;
        Ok(())
    };
    for (i, m) in messages.iter().enumerate() {
        if m.role == "assistant" {
            extend(render(i, true)?, false, &mut done)?;
            extend(render(i + 1, false)?, true, &mut done)?;
        }
    }
    extend(render(messages.len(), false)?, false, &mut done)?;
    Ok(out)
}

/// The example's tokens and flags: the pieces' tokens in turn, then (prompt-completion) the
/// end-of-text, which counts.
fn encode(tok: &Tokenizer, pieces: &[(String, bool)], format: RecordFormat) -> Result<(Vec<u32>, Vec<u8>), String> {
    let (mut ids, mut flags) = (Vec::new(), Vec::new());
    for (text, counted) in pieces {
        let t = tok.encode(text)?;
        flags.extend(std::iter::repeat_n(if *counted { COUNTED } else { 0 }, t.len()));
        ids.extend(t);
    }
    if ids.is_empty() && format == RecordFormat::Chat {
        return Err("the conversation renders to no token".into());
    }
    if format == RecordFormat::PromptCompletion {
        ids.push(tok.eot);
        flags.push(COUNTED);
    }
    flags[0] |= START;
    Ok((ids, flags))
}

/// train.bin / train.mask and val.bin / val.mask being written.
struct Files {
    train: (TokenFile, MaskFile),
    val: (TokenFile, MaskFile),
}

impl Files {
    fn new(out: &Path, wide: bool) -> Result<Self, String> {
        let pair = |name: &str| -> Result<(TokenFile, MaskFile), String> {
            let bin = out.join(name);
            Ok((TokenFile::create(&bin, wide)?, MaskFile::create(mask_path(&bin))?))
        };
        Ok(Self { train: pair("train.bin")?, val: pair("val.bin")? })
    }

    fn push(&mut self, val: bool, ids: &[u32], flags: &[u8], s: &mut SftStats) -> Result<(), String> {
        let ((tokens, mask), examples, count) = if val {
            (&mut self.val, &mut s.val_examples, &mut s.val_tokens)
        } else {
            (&mut self.train, &mut s.train_examples, &mut s.train_tokens)
        };
        tokens.push(ids)?;
        mask.push(flags)?;
        *examples += 1;
        *count += ids.len() as u64;
        s.counted_tokens += flags.iter().filter(|&&f| f & COUNTED != 0).count() as u64;
        s.longest_example = s.longest_example.max(ids.len() as u64);
        Ok(())
    }

    fn finish(self) -> Result<(), String> {
        self.train.0.finish()?;
        self.train.1.finish()?;
        self.val.0.finish()?;
        self.val.1.finish()
    }
}
