//! What `wgtrain prepare` writes as it goes: train.bin and val.bin with the seeded document
//! split, and the spool of a trained BPE's first pass.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::prepare::Stats;
use super::tokenizer::Tokenizer;
use super::{HEADER_INTS, MAGIC_U16, MAGIC_U32};
use crate::rng::Rng;

/// train.bin and val.bin being written, and the split.
pub(super) struct Writer {
    train: TokenFile,
    val: TokenFile,
    split: Split,
    next_doc: u64,
}

impl Writer {
    pub fn new(out: &Path, wide: bool, val_fraction: f64, seed: u64) -> Result<Self, String> {
        Ok(Writer {
            train: TokenFile::create(&out.join("train.bin"), wide)?,
            val: TokenFile::create(&out.join("val.bin"), wide)?,
            split: Split::new(val_fraction, seed),
            next_doc: 0,
        })
    }

    /// Tokenizes `docs` in parallel and appends them in order, each after the end-of-text.
    pub fn write_batch(&mut self, tok: &Tokenizer, docs: &[String], stats: &mut Stats) -> Result<(), String> {
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

    pub fn finish(self) -> Result<(), String> {
        self.train.finish()?;
        self.val.finish()
    }
}

/// A token file written as it goes: a zero header, the tokens, then the real header, the
/// whole under a temporary name renamed into place at the end.
pub(super) struct TokenFile {
    path: PathBuf,
    tmp: PathBuf,
    w: BufWriter<File>,
    count: u64,
    wide: bool,
}

impl TokenFile {
    pub(super) fn create(path: &Path, wide: bool) -> Result<Self, String> {
        let tmp = path.with_extension("bin.tmp");
        let f = File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(&[0u8; 4 * HEADER_INTS]).map_err(|e| format!("{}: {e}", tmp.display()))?;
        Ok(TokenFile { path: path.into(), tmp, w, count: 0, wide })
    }

    pub(super) fn push(&mut self, ids: &[u32]) -> Result<(), String> {
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

    pub(super) fn finish(self) -> Result<(), String> {
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
        seal(self.w, &header, &self.tmp, &self.path)
    }
}

/// Ends a file written under `tmp` after a zero header: writes `header` over it, syncs, and
/// renames it to `path`.
pub(super) fn seal(w: BufWriter<File>, header: &[i32], tmp: &Path, path: &Path) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", tmp.display());
    let mut f = w.into_inner().map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.write_all(bytemuck::cast_slice(header)))
        .and_then(|_| f.sync_all())
        .map_err(err)?;
    std::fs::rename(tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The seeded document split. Documents go in blocks of about 1/f (or 1/(1 − f)); block b
/// sends ⌊(b+1)·B·f + u⌋ − ⌊b·B·f + u⌋ of its B documents, at seeded positions, to val. The
/// val share is f to within one document at every point of the stream, small corpora included.
pub(super) struct Split {
    f: f64,
    block: u64,
    u: f64,
    seed: u64,
    current: Option<(u64, Vec<bool>)>,
}

impl Split {
    pub(super) fn new(f: f64, seed: u64) -> Self {
        let m = f.min(1.0 - f);
        let block = if m > 0.0 { (1.0 / m).round().clamp(1.0, 1e6) as u64 } else { 1 };
        let u = (Rng::new(seed ^ 0x5b17).next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        Split { f, block, u, seed, current: None }
    }

    pub(super) fn is_val(&mut self, doc: u64) -> bool {
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
pub(super) struct SpoolReader {
    r: BufReader<File>,
}

impl SpoolReader {
    pub fn open(path: &Path) -> Result<Self, String> {
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

/// The kept documents of a BPE run's first pass, each as its length (u64) and its bytes.
pub(super) struct Spool {
    pub path: PathBuf,
    w: BufWriter<File>,
}

impl Spool {
    pub fn create(path: PathBuf) -> Result<Self, String> {
        let f = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Spool { path, w: BufWriter::new(f) })
    }

    pub fn write(&mut self, text: &str) -> Result<(), String> {
        self.w
            .write_all(&(text.len() as u64).to_le_bytes())
            .and_then(|_| self.w.write_all(text.as_bytes()))
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// Flushes and closes the spool; returns its path.
    pub fn finish(self) -> Result<PathBuf, String> {
        self.w.into_inner().map_err(|e| format!("{}: {e}", self.path.display()))?;
        Ok(self.path)
    }
}
