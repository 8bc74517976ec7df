//! `wgtrain prepare`: raw text → cleaned, deduplicated, tokenized train.bin / val.bin.
//!
//! A reader thread streams documents in batches of a few MB through a bounded channel. Each
//! batch is cleaned and fingerprinted in parallel, judged for duplicates in input order, then
//! tokenized in parallel and written in order, so the output does not depend on the thread
//! count. Memory holds two batches in flight plus the dedup index (~0.9 KB per kept document);
//! a text file is one document and is read whole. A trained BPE needs the kept text twice: the
//! first pass spools it to a file in the output directory, trains, then tokenizes the spool.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::Instant;

use rayon::prelude::*;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use super::dedup::{Dedup, Fingerprint, Verdict, SHINGLE_WORDS, SLOTS};
use super::tokenizer::{Kind, Tokenizer};
use super::{HEADER_INTS, MAGIC_U16, MAGIC_U32};
use crate::reference::Rng;

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
}

impl std::str::FromStr for TokenizerChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "byte" => TokenizerChoice::Byte,
            "gpt2" => TokenizerChoice::Gpt2,
            "bpe" => TokenizerChoice::Bpe,
            f if f.ends_with(".json") => TokenizerChoice::File(f.into()),
            other => return Err(format!("{other:?}: expected byte, gpt2, bpe or a tokenizer .json file")),
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

struct Input {
    path: PathBuf,
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
    if let TokenizerChoice::Bpe = a.tokenizer {
        super::tokenizer::check_bpe_size(a.vocab_size)?;
    }
    if !(0.0..1.0).contains(&a.val_fraction) {
        return Err(format!("--val-fraction {}: expected a number in [0, 1)", a.val_fraction));
    }
    if let Some(j) = a.near_dup_threshold.filter(|j| !(*j > 0.0 && *j <= 1.0)) {
        return Err(format!("--near-dup-threshold {j}: expected a Jaccard similarity in (0, 1]"));
    }
    let inputs = list_inputs(&a.inputs, &a.out)?;
    std::fs::create_dir_all(&a.out).map_err(|e| format!("--out {}: {e}", a.out.display()))?;
    if a.out.join("train.bin").exists() && !a.force {
        return Err(format!("--out {}: already holds train.bin; pass --force to replace it", a.out.display()));
    }
    // Tokenizers that need no pass over the data are ready before reading it.
    let mut tokenizer = match &a.tokenizer {
        TokenizerChoice::Byte => Some(Tokenizer::byte()),
        TokenizerChoice::Gpt2 => Some(Tokenizer::gpt2()),
        TokenizerChoice::File(p) => {
            Some(Tokenizer::from_file(p, a.eot.as_deref()).map_err(|e| format!("--tokenizer {e}"))?)
        }
        TokenizerChoice::Bpe => None,
    };

    let total: u64 = inputs.iter().map(|i| i.size).sum();
    let mut stats = Stats {
        min_chars: a.min_chars,
        near_dup_threshold: a.near_dup_threshold,
        val_fraction: a.val_fraction,
        seed: a.seed,
        ..Default::default()
    };
    let mut dedup = a.near_dup_threshold.map(Dedup::new).unwrap_or_else(|| Dedup::new(1.0));
    stats.minhash = a.near_dup_threshold.map(|_| MinhashShape {
        slots: SLOTS,
        bands: dedup.bands,
        rows: dedup.rows,
        shingle_words: SHINGLE_WORDS,
    });
    let bar = progress_bar(total, a.progress, "reading");

    let spool_path = a.out.join(".prepare-spool.tmp");
    let mut writer: Option<Writer> = None;
    let mut spool = None;
    match &tokenizer {
        Some(t) => writer = Some(Writer::new(&a.out, wide(t), a.val_fraction, a.seed)?),
        None => {
            let f = File::create(&spool_path).map_err(|e| format!("{}: {e}", spool_path.display()))?;
            spool = Some(BufWriter::new(f));
        }
    }

    let rx = spawn_reader(&inputs);
    for batch in rx {
        let batch = batch?;
        let bytes: u64 = batch.iter().map(|r| r.bytes.len() as u64).sum();
        let cleaned: Vec<Cleaned> = batch.par_iter().map(|r| clean(r, &inputs, a)).collect();
        let mut kept = Vec::new();
        for (raw, c) in batch.iter().zip(cleaned) {
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
                    Verdict::Unique => kept.push(text),
                },
            }
        }
        stats.bytes_in += bytes;
        stats.documents_out += kept.len() as u64;
        match (&mut writer, &mut spool) {
            (Some(w), _) => w.write_batch(tokenizer.as_ref().expect("set with the writer"), &kept, &mut stats)?,
            (None, Some(s)) => {
                for text in &kept {
                    s.write_all(&(text.len() as u64).to_le_bytes())
                        .and_then(|_| s.write_all(text.as_bytes()))
                        .map_err(|e| format!("{}: {e}", spool_path.display()))?;
                }
            }
            (None, None) => unreachable!(),
        }
        bar.inc(bytes);
    }
    bar.finish_and_clear();

    if let Some(s) = spool.take() {
        let spooled = s.into_inner().map_err(|e| format!("{}: {e}", spool_path.display()))?;
        drop(spooled);
        if a.progress {
            eprintln!("training a {}-token BPE on {} documents", a.vocab_size, stats.documents_out);
        }
        let docs = SpoolReader::open(&spool_path)?;
        let t = Tokenizer::train_bpe(a.vocab_size, docs)?;
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
            w.write_batch(&t, &batch, &mut stats)?;
            bar.inc(bytes as u64);
        }
        bar.finish_and_clear();
        std::fs::remove_file(&spool_path).ok();
        tokenizer = Some(t);
        writer = Some(w);
    }
    let tokenizer = tokenizer.expect("a tokenizer by now");
    writer.expect("a writer by now").finish()?;
    tokenizer.save(&a.out.join("tokenizer.json"))?;

    stats.tokenizer = Some(tokenizer.kind);
    stats.vocab_size = tokenizer.vocab_size;
    stats.eot = tokenizer.eot;
    stats.token_bytes = if wide(&tokenizer) { 4 } else { 2 };
    stats.seconds = t0.elapsed().as_secs_f64();
    stats.mb_per_s = stats.bytes_in as f64 / 1e6 / stats.seconds.max(1e-9);
    let json = serde_json::to_string_pretty(&stats).expect("stats serialize");
    let (path, tmp) = (a.out.join("stats.json"), a.out.join("stats.json.tmp"));
    std::fs::write(&tmp, json + "\n").map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(stats)
}

/// Extensions of compressed files, which prepare does not read.
const COMPRESSED: [&str; 6] = ["gz", "bz2", "xz", "zst", "zip", "7z"];

/// Files named by --input, and in directories (walked in name order, hidden entries and
/// `out` skipped) the .txt, .text, .jsonl, .ndjson and .json files.
fn list_inputs(paths: &[PathBuf], out_dir: &Path) -> Result<Vec<Input>, String> {
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

fn wide(t: &Tokenizer) -> bool {
    t.vocab_size > 65535
}

/// train.bin and val.bin being written, and the split.
struct Writer {
    train: TokenFile,
    val: TokenFile,
    split: Split,
    next_doc: u64,
}

impl Writer {
    fn new(out: &Path, wide: bool, val_fraction: f64, seed: u64) -> Result<Self, String> {
        Ok(Writer {
            train: TokenFile::create(&out.join("train.bin"), wide)?,
            val: TokenFile::create(&out.join("val.bin"), wide)?,
            split: Split::new(val_fraction, seed),
            next_doc: 0,
        })
    }

    /// Tokenizes `docs` in parallel and appends them in order, each after the end-of-text.
    fn write_batch(&mut self, tok: &Tokenizer, docs: &[String], stats: &mut Stats) -> Result<(), String> {
        let ids: Vec<Result<Vec<u32>, String>> = docs.par_iter().map(|d| tok.encode(d)).collect();
        for ids in ids {
            let ids = ids?;
            let val = self.split.is_val(self.next_doc);
            self.next_doc += 1;
            let (file, docs, tokens) = if val {
                (&mut self.val, &mut stats.val_documents, &mut stats.val_tokens)
            } else {
                (&mut self.train, &mut stats.train_documents, &mut stats.train_tokens)
            };
            file.push(&[tok.eot])?;
            file.push(&ids)?;
            *docs += 1;
            *tokens += 1 + ids.len() as u64;
        }
        Ok(())
    }

    fn finish(self) -> Result<(), String> {
        self.train.finish()?;
        self.val.finish()
    }
}

/// A token file written as it goes: a zero header, the tokens, then the real header, the
/// whole under a temporary name renamed into place at the end.
struct TokenFile {
    path: PathBuf,
    tmp: PathBuf,
    w: BufWriter<File>,
    count: u64,
    wide: bool,
}

impl TokenFile {
    fn create(path: &Path, wide: bool) -> Result<Self, String> {
        let tmp = path.with_extension("bin.tmp");
        let f = File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(&[0u8; 4 * HEADER_INTS]).map_err(|e| format!("{}: {e}", tmp.display()))?;
        Ok(TokenFile { path: path.into(), tmp, w, count: 0, wide })
    }

    fn push(&mut self, ids: &[u32]) -> Result<(), String> {
        if self.count + ids.len() as u64 > i32::MAX as u64 {
            return Err(format!(
                "{}: more than {} tokens, the int32 count of llm.c's header; prepare the input in parts",
                self.path.display(),
                i32::MAX
            ));
        }
        let mut buf = Vec::with_capacity(ids.len() * 4);
        for &t in ids {
            if self.wide {
                buf.extend(t.to_le_bytes());
            } else {
                buf.extend((t as u16).to_le_bytes());
            }
        }
        self.count += ids.len() as u64;
        self.w.write_all(&buf).map_err(|e| format!("{}: {e}", self.tmp.display()))
    }

    fn finish(mut self) -> Result<(), String> {
        let err = |e: std::io::Error| format!("{}: {e}", self.tmp.display());
        let count = i32::try_from(self.count).map_err(|_| {
            format!(
                "{}: {} tokens exceed the int32 count of llm.c's header; split the input",
                self.path.display(),
                self.count
            )
        })?;
        let mut header = [0i32; HEADER_INTS];
        header[0] = if self.wide { MAGIC_U32 } else { MAGIC_U16 };
        header[1] = if self.wide { 7 } else { 1 };
        header[2] = count;
        self.w.flush().map_err(err)?;
        let mut f = self.w.into_inner().map_err(|e| format!("{}: {e}", self.tmp.display()))?;
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.write_all(bytemuck::cast_slice(&header)))
            .and_then(|_| f.sync_all())
            .map_err(err)?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

/// The seeded document split. Documents go in blocks of about 1/f (or 1/(1 − f)); block b
/// sends ⌊(b+1)·B·f + u⌋ − ⌊b·B·f + u⌋ of its B documents, at seeded positions, to val. The
/// val share is f to within one document at every point of the stream, small corpora included.
struct Split {
    f: f64,
    block: u64,
    u: f64,
    seed: u64,
    current: Option<(u64, Vec<bool>)>,
}

impl Split {
    fn new(f: f64, seed: u64) -> Self {
        let m = f.min(1.0 - f);
        let block = if m > 0.0 { (1.0 / m).round().clamp(1.0, 1e6) as u64 } else { 1 };
        let u = (Rng::new(seed ^ 0x5b17).next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        Split { f, block, u, seed, current: None }
    }

    fn is_val(&mut self, doc: u64) -> bool {
        if self.f <= 0.0 {
            return false;
        }
        let (b, p) = (doc / self.block, (doc % self.block) as usize);
        if self.current.as_ref().is_none_or(|(cb, _)| *cb != b) {
            let n = self.block as f64;
            let k = ((b + 1) as f64 * n * self.f + self.u).floor() - (b as f64 * n * self.f + self.u).floor();
            let mut rng = Rng::new(self.seed ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut order: Vec<usize> = (0..self.block as usize).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
            let mut chosen = vec![false; self.block as usize];
            for &i in &order[..(k as usize).min(order.len())] {
                chosen[i] = true;
            }
            self.current = Some((b, chosen));
        }
        self.current.as_ref().unwrap().1[p]
    }
}

/// The spooled documents of a BPE run, read back one at a time.
struct SpoolReader {
    r: BufReader<File>,
}

impl SpoolReader {
    fn open(path: &Path) -> Result<Self, String> {
        let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(SpoolReader { r: BufReader::with_capacity(1 << 20, f) })
    }
}

impl Iterator for SpoolReader {
    type Item = String;
    fn next(&mut self) -> Option<String> {
        let mut len = [0u8; 8];
        self.r.read_exact(&mut len).ok()?;
        let mut buf = vec![0u8; u64::from_le_bytes(len) as usize];
        self.r.read_exact(&mut buf).ok()?;
        // The spool holds only text that was valid UTF-8 when written.
        String::from_utf8(buf).ok()
    }
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
