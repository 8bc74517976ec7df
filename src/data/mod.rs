//! Token data: llm.c's token files, the bundled corpus, and the batch loader.
//!
//! Layer: above formats and rng, which it uses; no GPU. Kernels read its IGNORE target.

use std::path::{Path, PathBuf};

pub mod chat;
pub mod dedup;
pub mod gguf_tokenizer;
mod loader;
mod output;
pub mod prepare;
pub mod sft;
pub mod sft_prepare;
pub mod tokenizer;

pub use loader::{Loader, LoaderState};
pub use sft::{Examples, IGNORE};

pub(crate) const MAGIC_U16: i32 = 20240520;
pub(crate) const MAGIC_U32: i32 = 20240801;
pub(crate) const HEADER_INTS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {why}")]
    Io { path: PathBuf, why: String },
    #[error("{path}: {why}")]
    Format { path: PathBuf, why: String },
}

/// Reads an llm.c token file: a header of 256 int32 (magic 20240520, version 1, token count)
/// then uint16 tokens, or magic 20240801, version 7 and uint32 tokens.
pub fn read_tokens(path: &Path) -> Result<Vec<u32>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::Io { path: path.into(), why: e.to_string() })?;
    parse_tokens(&bytes).map_err(|why| DataError::Format { path: path.into(), why })
}

/// The body of `read_tokens`, on bytes.
pub fn parse_tokens(bytes: &[u8]) -> Result<Vec<u32>, String> {
    if bytes.len() < 4 * HEADER_INTS {
        return Err(format!("{} bytes is shorter than the 1024-byte header of a token file", bytes.len()));
    }
    let header: Vec<i32> = bytemuck::pod_collect_to_vec(&bytes[..4 * HEADER_INTS]);
    let (width, version) = match header[0] {
        MAGIC_U16 => (2, 1),
        MAGIC_U32 => (4, 7),
        m => return Err(format!("bad magic number {m}: expected {MAGIC_U16} (uint16 tokens) or {MAGIC_U32} (uint32)")),
    };
    if header[1] != version {
        return Err(format!("magic {} needs version {version}, the header says {}", header[0], header[1]));
    }
    let count = usize::try_from(header[2]).map_err(|_| format!("negative token count {}", header[2]))?;
    let body = &bytes[4 * HEADER_INTS..];
    if body.len() != count * width {
        return Err(format!(
            "the header says {count} tokens ({} bytes), the file holds {} bytes of tokens",
            count * width,
            body.len()
        ));
    }
    Ok(if width == 2 {
        body.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32).collect()
    } else {
        body.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    })
}

/// Writes tokens in llm.c's format: uint16 when every id fits, uint32 otherwise.
pub fn write_tokens(path: &Path, tokens: &[u32]) -> Result<(), DataError> {
    let wide = tokens.iter().any(|&t| t > u16::MAX as u32);
    let mut header = [0i32; HEADER_INTS];
    header[0] = if wide { MAGIC_U32 } else { MAGIC_U16 };
    header[1] = if wide { 7 } else { 1 };
    header[2] = i32::try_from(tokens.len())
        .map_err(|_| DataError::Format { path: path.into(), why: "more tokens than an int32 header counts".into() })?;
    let mut bytes: Vec<u8> = bytemuck::cast_slice(&header).to_vec();
    for &t in tokens {
        if wide {
            bytes.extend(t.to_le_bytes());
        } else {
            bytes.extend((t as u16).to_le_bytes());
        }
    }
    std::fs::write(path, bytes).map_err(|e| DataError::Io { path: path.into(), why: e.to_string() })
}

/// The files of a directory made by `wgtrain prepare`: (train.bin, val.bin if it holds
/// tokens). None when `dir` is not a directory.
pub fn prepared_files(dir: &Path) -> Result<Option<(PathBuf, Option<PathBuf>)>, DataError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let train = dir.join("train.bin");
    if !train.is_file() {
        return Err(DataError::Io {
            path: dir.into(),
            why: "holds no train.bin: give a token file or a directory made by `wgtrain prepare`".into(),
        });
    }
    let val = dir.join("val.bin");
    let has_val = std::fs::metadata(&val).is_ok_and(|m| m.len() > 4 * HEADER_INTS as u64);
    Ok(Some((train, has_val.then_some(val))))
}

/// The bundled corpus (data/shakespeare) as byte-level tokens: (train, val), val being the
/// last 5% of the bytes.
pub fn bundled_corpus() -> Result<(Vec<u32>, Vec<u32>), DataError> {
    Ok(byte_corpus(&bundled_bytes()?))
}

/// The bundled plays' text (data/shakespeare/*_gut.txt in name order, each followed by a
/// blank line): what `bundled_corpus` tokenizes, and what the page trains on.
pub fn bundled_bytes() -> Result<Vec<u8>, DataError> {
    let dir = bundled_dir();
    let io = |why: String| DataError::Io { path: dir.clone(), why };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| io(format!("{e}; run from the repository or pass --data")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with("_gut.txt"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(io("no *_gut.txt plays found; pass --data".into()));
    }
    let mut bytes = Vec::new();
    for f in &files {
        bytes.extend(std::fs::read(f).map_err(|e| DataError::Io { path: f.clone(), why: e.to_string() })?);
        bytes.extend(b"\n\n");
    }
    Ok(bytes)
}

/// A text as byte tokens, split as the bundled corpus is: the first 95% to train on, the rest
/// to validate (the page's corpus, bundled or picked, goes through this too).
pub fn byte_corpus(bytes: &[u8]) -> (Vec<u32>, Vec<u32>) {
    let tokens: Vec<u32> = bytes.iter().map(|&b| b as u32).collect();
    let split = tokens.len() * 95 / 100;
    (tokens[..split].to_vec(), tokens[split..].to_vec())
}

/// data/shakespeare beside the executable's crate, or under the current directory.
fn bundled_dir() -> PathBuf {
    let here = Path::new("data/shakespeare");
    if here.is_dir() {
        return here.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare")
}
