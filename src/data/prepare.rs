//! `wgtrain prepare`: raw text → cleaned, deduplicated, tokenized train.bin / val.bin.
//!
//! A reader thread streams documents in batches of a few MB through a bounded channel. Each
//! batch is cleaned and fingerprinted in parallel, judged for duplicates in input order, then
//! tokenized in parallel and written in order, so the output does not depend on the thread
//! count. Memory holds two batches in flight plus the dedup index (~0.9 KB per kept document);
//! a text file is one document and is read whole. A trained BPE needs the kept text twice: the
//! first pass spools it to a file in the output directory, trains, then tokenizes the spool.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::Instant;

use rayon::prelude::*;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use super::dedup::{Dedup, Fingerprint, Verdict, SHINGLE_WORDS, SLOTS};
use super::output::{Spool, SpoolReader, Writer};
use super::tokenizer::{Kind, Tokenizer};

/// Bytes of raw input per batch.
const BATCH_BYTES: usize = 4 << 20;
/// A text file is one document; past this size it is refused rather than held in memory.
const MAX_DOCUMENT_BYTES: u64 = 256 << 20;
/// Line numbers kept for the report of each kind of skipped record.
const EXAMPLES: usize = 5;

/// What `--tokenizer` names.
#[derive(Clone, Debug)]
pub enum TokenizerChoice {
    Byte,
    Gpt2,
    Bpe,
    File(PathBuf),
    /// The tokenizer a GGUF file's metadata holds.
    Gguf(PathBuf),
}

impl std::str::FromStr for TokenizerChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "byte" => TokenizerChoice::Byte,
            "gpt2" => TokenizerChoice::Gpt2,
            "bpe" => TokenizerChoice::Bpe,
            f if f.ends_with(".json") => TokenizerChoice::File(f.into()),
            f if f.ends_with(".gguf") => TokenizerChoice::Gguf(f.into()),
            other => return Err(format!("{other:?}: expected byte, gpt2, bpe, a tokenizer .json or a .gguf file")),
        })
    }
}

#[derive(Clone, Debug)]
pub struct PrepareArgs {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    pub tokenizer: TokenizerChoice,
    /// Size of a trained BPE.
    pub vocab_size: usize,
    /// The text field of JSONL records.
    pub field: String,
    pub min_chars: usize,
    /// Jaccard similarity from which a document is a near duplicate; None turns it off.
    pub near_dup_threshold: Option<f64>,
    pub val_fraction: f64,
    pub seed: u64,
    /// End-of-text token of a tokenizer.json, when it is not one of the usual names.
    pub eot: Option<String>,
    /// Replace prepared data already in `out`.
    pub force: bool,
    pub progress: bool,
}

/// stats.json.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    pub documents_in: u64,
    pub malformed: u64,
    pub missing_field: u64,
    pub empty: u64,
    pub too_short: u64,
    pub exact_duplicates: u64,
    pub near_duplicates: u64,
    pub documents_out: u64,
    pub train_documents: u64,
    pub val_documents: u64,
    pub train_tokens: u64,
    pub val_tokens: u64,
    pub bytes_in: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    pub tokenizer: Option<Kind>,
    pub vocab_size: usize,
    pub eot: u32,
    pub token_bytes: usize,
    pub malformed_examples: Vec<String>,
    pub missing_field_examples: Vec<String>,
    pub min_chars: usize,
    pub near_dup_threshold: Option<f64>,
    pub minhash: Option<MinhashShape>,
    pub val_fraction: f64,
    pub seed: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct MinhashShape {
    pub slots: usize,
    pub bands: usize,
    pub rows: usize,
    pub shingle_words: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Text,
    Jsonl,
}

pub(super) struct Input {
    pub(super) path: PathBuf,
    format: Format,
    size: u64,
}

/// One record as read: a text file, or a line of a JSONL file.
struct Raw {
    file: usize,
    line: usize,
    bytes: Vec<u8>,
}

enum Cleaned {
    Keep(String, Fingerprint),
    Malformed,
    MissingField,
    Empty,
    TooShort,
}

pub fn prepare(a: &PrepareArgs) -> Result<Stats, String> {
    let r = prepare_inner(a);
    if r.is_err() {
        // Leave no half-written file behind; finished outputs of an earlier run stay.
        for tmp in [".prepare-spool.tmp", "train.bin.tmp", "val.bin.tmp", "tokenizer.json.tmp", "stats.json.tmp"] {
            let _ = std::fs::remove_file(a.out.join(tmp));
        }
    }
    r
}

fn prepare_inner(a: &PrepareArgs) -> Result<Stats, String> {
    let t0 = Instant::now();
    check_args(a)?;
    let inputs = list_inputs(&a.inputs, &a.out)?;
    std::fs::create_dir_all(&a.out).map_err(|e| format!("--out {}: {e}", a.out.display()))?;
    if a.out.join("train.bin").exists() && !a.force {
        return Err(format!("--out {}: already holds train.bin; pass --force to replace it", a.out.display()));
    }
    let mut dedup = a.near_dup_threshold.map(Dedup::new).unwrap_or_else(|| Dedup::new(1.0));
    let mut stats = Stats::for_args(a, &dedup);
    // Tokenizers that need no pass over the data are ready before reading it.
    let mut sink = match known_tokenizer(a)? {
        Some(t) => Sink::Tokens(Box::new((Writer::new(&a.out, wide(&t), a.val_fraction, a.seed)?, t))),
        None => Sink::Spool(Spool::create(a.out.join(".prepare-spool.tmp"))?),
    };
    read_all(a, &inputs, &mut dedup, &mut stats, &mut sink)?;
    let (writer, tokenizer) = match sink {
        Sink::Tokens(wt) => *wt,
        Sink::Spool(spool) => train_and_tokenize(a, spool, &mut stats)?,
    };
    writer.finish()?;
    tokenizer.save(&a.out.join("tokenizer.json"))?;
    write_stats(a, &mut stats, &tokenizer, t0)?;
    Ok(stats)
}

/// Refuses flags no run can take, before anything is read.
fn check_args(a: &PrepareArgs) -> Result<(), String> {
    if let TokenizerChoice::Bpe = a.tokenizer {
        super::tokenizer::check_bpe_size(a.vocab_size)?;
    }
    if !(0.0..1.0).contains(&a.val_fraction) {
        return Err(format!("--val-fraction {}: expected a number in [0, 1)", a.val_fraction));
    }
    if let Some(j) = a.near_dup_threshold.filter(|j| !(*j > 0.0 && *j <= 1.0)) {
        return Err(format!("--near-dup-threshold {j}: expected a Jaccard similarity in (0, 1]"));
    }
    Ok(())
}

/// The tokenizer, where it needs no pass over the data (all but a trained BPE).
fn known_tokenizer(a: &PrepareArgs) -> Result<Option<Tokenizer>, String> {
    Ok(match &a.tokenizer {
        TokenizerChoice::Byte => Some(Tokenizer::byte()),
        TokenizerChoice::Gpt2 => Some(Tokenizer::gpt2()),
        TokenizerChoice::File(p) => {
            Some(Tokenizer::from_file(p, a.eot.as_deref()).map_err(|e| format!("--tokenizer {e}"))?)
        }
        TokenizerChoice::Gguf(p) => {
            Some(crate::data::gguf_tokenizer::of_file(p).map_err(|e| format!("--tokenizer {e}"))?)
        }
        TokenizerChoice::Bpe => None,
    })
}

impl Stats {
    /// Zero counts and the run's settings.
    fn for_args(a: &PrepareArgs, dedup: &Dedup) -> Self {
        Stats {
            min_chars: a.min_chars,
            near_dup_threshold: a.near_dup_threshold,
            val_fraction: a.val_fraction,
            seed: a.seed,
            minhash: a.near_dup_threshold.map(|_| MinhashShape {
                slots: SLOTS,
                bands: dedup.bands,
                rows: dedup.rows,
                shingle_words: SHINGLE_WORDS,
            }),
            ..Default::default()
        }
    }
}

/// Where the first pass puts the documents it keeps: tokenized into train.bin / val.bin, or
/// spooled for a BPE still to be trained.
enum Sink {
    Tokens(Box<(Writer, Tokenizer)>),
    Spool(Spool),
}

impl Sink {
    fn write(&mut self, kept: &[String], stats: &mut Stats) -> Result<(), String> {
        match self {
            Sink::Tokens(wt) => {
                let (w, t) = &mut **wt;
                w.write_batch(t, kept, stats)
            }
            Sink::Spool(s) => kept.iter().try_for_each(|text| s.write(text)),
        }
    }
}

/// The first pass: every input's documents cleaned, counted and deduplicated in input order,
/// the kept ones into `sink`.
fn read_all(
    a: &PrepareArgs,
    inputs: &[Input],
    dedup: &mut Dedup,
    stats: &mut Stats,
    sink: &mut Sink,
) -> Result<(), String> {
    let bar = progress_bar(inputs.iter().map(|i| i.size).sum(), a.progress, "reading");
    for batch in spawn_reader(inputs) {
        let batch = batch?;
        let bytes: u64 = batch.iter().map(|r| r.bytes.len() as u64).sum();
        let cleaned: Vec<Cleaned> = batch.par_iter().map(|r| clean(r, inputs, a)).collect();
        let kept: Vec<String> =
            batch.iter().zip(cleaned).filter_map(|(raw, c)| tally(raw, c, inputs, dedup, stats)).collect();
        stats.bytes_in += bytes;
        stats.documents_out += kept.len() as u64;
        sink.write(&kept, stats)?;
        bar.inc(bytes);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Counts one cleaned document; returns its text when it is kept.
fn tally(raw: &Raw, c: Cleaned, inputs: &[Input], dedup: &mut Dedup, stats: &mut Stats) -> Option<String> {
    stats.documents_in += 1;
    let place = || {
        let p = inputs[raw.file].path.display();
        if inputs[raw.file].format == Format::Jsonl {
            format!("{p}:{}", raw.line)
        } else {
            p.to_string()
        }
    };
    match c {
        Cleaned::Malformed => {
            stats.malformed += 1;
            if stats.malformed_examples.len() < EXAMPLES {
                stats.malformed_examples.push(place());
            }
        }
        Cleaned::MissingField => {
            stats.missing_field += 1;
            if stats.missing_field_examples.len() < EXAMPLES {
                stats.missing_field_examples.push(place());
            }
        }
        Cleaned::Empty => stats.empty += 1,
        Cleaned::TooShort => stats.too_short += 1,
        Cleaned::Keep(text, fp) => match dedup.check(&fp) {
            Verdict::Exact => stats.exact_duplicates += 1,
            Verdict::Near => stats.near_duplicates += 1,
            Verdict::Unique => return Some(text),
        },
    }
    None
}

/// A trained BPE's second pass: trains it on the spool, then tokenizes the spool into
/// train.bin / val.bin in batches, and removes it.
fn train_and_tokenize(a: &PrepareArgs, spool: Spool, stats: &mut Stats) -> Result<(Writer, Tokenizer), String> {
    let spool_path = spool.finish()?;
    if a.progress {
        eprintln!("training a {}-token BPE on {} documents", a.vocab_size, stats.documents_out);
    }
    let t = Tokenizer::train_bpe(a.vocab_size, SpoolReader::open(&spool_path)?)?;
    let mut w = Writer::new(&a.out, wide(&t), a.val_fraction, a.seed)?;
    let size = std::fs::metadata(&spool_path).map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(size, a.progress, "tokenizing");
    let mut docs = SpoolReader::open(&spool_path)?;
    loop {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while bytes < BATCH_BYTES {
            match docs.next() {
                Some(d) => {
                    bytes += d.len() + 8;
                    batch.push(d);
                }
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        w.write_batch(&t, &batch, stats)?;
        bar.inc(bytes as u64);
    }
    bar.finish_and_clear();
    std::fs::remove_file(&spool_path).ok();
    Ok((w, t))
}

/// The tokenizer's figures and the timing into `stats`, then stats.json (through a rename).
fn write_stats(a: &PrepareArgs, stats: &mut Stats, tokenizer: &Tokenizer, t0: Instant) -> Result<(), String> {
    stats.tokenizer = Some(tokenizer.kind);
    stats.vocab_size = tokenizer.vocab_size;
    stats.eot = tokenizer.eot;
    stats.token_bytes = if wide(tokenizer) { 4 } else { 2 };
    stats.seconds = t0.elapsed().as_secs_f64();
    stats.mb_per_s = stats.bytes_in as f64 / 1e6 / stats.seconds.max(1e-9);
    let json = serde_json::to_string_pretty(&stats).expect("stats serialize");
    let (path, tmp) = (a.out.join("stats.json"), a.out.join("stats.json.tmp"));
    std::fs::write(&tmp, json + "\n").map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Extensions of compressed files, which prepare does not read.
const COMPRESSED: [&str; 6] = ["gz", "bz2", "xz", "zst", "zip", "7z"];

/// Files named by --input, and in directories (walked in name order, hidden entries and
/// `out` skipped) the .txt, .text, .jsonl, .ndjson and .json files.
pub(super) fn list_inputs(paths: &[PathBuf], out_dir: &Path) -> Result<Vec<Input>, String> {
    fn walk(p: &Path, named: bool, skip: &Option<PathBuf>, out: &mut Vec<Input>) -> Result<(), String> {
        let meta = std::fs::metadata(p).map_err(|e| format!("--input {}: {e}", p.display()))?;
        let ext = p.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
        if meta.is_dir() {
            if skip.is_some() && std::fs::canonicalize(p).ok() == *skip {
                return Ok(());
            }
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("--input {}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|e| !e.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, false, skip, out)?;
            }
            return Ok(());
        }
        if COMPRESSED.contains(&ext.as_str()) {
            if named {
                return Err(format!("--input {}: compressed files are not read; decompress it first", p.display()));
            }
            return Ok(());
        }
        let format = match ext.as_str() {
            "jsonl" | "ndjson" | "json" => Format::Jsonl,
            "txt" | "text" => Format::Text,
            // In a directory, other files (READMEs, binaries, earlier outputs) are not input.
            _ if !named => return Ok(()),
            _ => Format::Text,
        };
        if format == Format::Text && meta.len() > MAX_DOCUMENT_BYTES {
            return Err(format!(
                "--input {}: {} MB in one text file, which is one document; split it, or give JSONL",
                p.display(),
                meta.len() / 1_000_000
            ));
        }
        out.push(Input { path: p.into(), format, size: meta.len() });
        Ok(())
    }
    if paths.is_empty() {
        return Err("--input: give at least one file or directory".into());
    }
    let skip = std::fs::canonicalize(out_dir).ok();
    let mut out = Vec::new();
    for p in paths {
        walk(p, true, &skip, &mut out)?;
    }
    if out.is_empty() {
        return Err(format!("--input {}: no files found", paths[0].display()));
    }
    Ok(out)
}

/// Reads the inputs on a thread, in batches of about BATCH_BYTES; two batches wait at most.
fn spawn_reader(inputs: &[Input]) -> Receiver<Result<Vec<Raw>, String>> {
    let (tx, rx) = sync_channel(2);
    let files: Vec<(PathBuf, Format)> = inputs.iter().map(|i| (i.path.clone(), i.format)).collect();
    std::thread::spawn(move || {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let push = |raw: Raw, batch: &mut Vec<Raw>, bytes: &mut usize| -> bool {
            *bytes += raw.bytes.len();
            batch.push(raw);
            if *bytes >= BATCH_BYTES {
                *bytes = 0;
                return tx.send(Ok(std::mem::take(batch))).is_ok();
            }
            true
        };
        for (file, (path, format)) in files.iter().enumerate() {
            let fail = |e: std::io::Error| Err(format!("{}: {e}", path.display()));
            let f = match File::open(path) {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.send(fail(e));
                    return;
                }
            };
            match format {
                Format::Text => {
                    let mut bytes_doc = Vec::new();
                    if let Err(e) = BufReader::new(f).read_to_end(&mut bytes_doc) {
                        let _ = tx.send(fail(e));
                        return;
                    }
                    if !push(Raw { file, line: 0, bytes: bytes_doc }, &mut batch, &mut bytes) {
                        return;
                    }
                }
                Format::Jsonl => {
                    let mut r = BufReader::with_capacity(1 << 20, f);
                    let mut line = 0;
                    loop {
                        let mut buf = Vec::new();
                        match r.read_until(b'\n', &mut buf) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) => {
                                let _ = tx.send(fail(e));
                                return;
                            }
                        }
                        line += 1;
                        if buf.iter().all(|b| b.is_ascii_whitespace()) {
                            continue;
                        }
                        if !push(Raw { file, line, bytes: buf }, &mut batch, &mut bytes) {
                            return;
                        }
                    }
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(Ok(batch));
        }
    });
    rx
}

fn clean(raw: &Raw, inputs: &[Input], a: &PrepareArgs) -> Cleaned {
    let text = match inputs[raw.file].format {
        Format::Text => match std::str::from_utf8(&raw.bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => return Cleaned::Malformed,
        },
        Format::Jsonl => match serde_json::from_slice::<serde_json::Value>(&raw.bytes) {
            Err(_) => return Cleaned::Malformed,
            Ok(v) => match v.get(&a.field).and_then(|f| f.as_str()) {
                Some(s) => s.to_owned(),
                None => return Cleaned::MissingField,
            },
        },
    };
    let text = normalize(text);
    if text.trim().is_empty() {
        return Cleaned::Empty;
    }
    if a.min_chars > 0 && text.chars().count() < a.min_chars {
        return Cleaned::TooShort;
    }
    let fp = Fingerprint::new(&text, a.near_dup_threshold.is_some());
    Cleaned::Keep(text, fp)
}

/// A leading byte-order mark removed, line endings to \n, NUL removed (byte-level's
/// document separator), Unicode NFC.
pub fn normalize(mut text: String) -> String {
    if text.starts_with('\u{feff}') {
        text.drain(..3);
    }
    if text.contains('\r') {
        text = text.replace("\r\n", "\n").replace('\r', "\n");
    }
    if text.contains('\0') {
        text.retain(|c| c != '\0');
    }
    if is_nfc_quick(text.chars()) != IsNormalized::Yes {
        text = text.nfc().collect();
    }
    text
}

pub(super) fn wide(t: &Tokenizer) -> bool {
    t.vocab_size > 65535
}

fn progress_bar(total: u64, show: bool, what: &str) -> indicatif::ProgressBar {
    if !show || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("template"),
    );
    bar.set_message(what.to_string());
    bar
}
