//! Masked data for supervised fine-tuning: which tokens count in the loss, and where each
//! example starts. The mask travels beside the llm.c token file X.bin as X.mask: a header of
//! 256 int32 (magic 20261203, version 1, token count), then one byte per token:
//!
//!   bit 0 (COUNTED): the token is one the model learns to produce (a completion or an
//!                    assistant turn): as a target, it counts in the loss
//!   bit 1 (START):   the token starts an example
//!
//! A row holds one example, padded (`Examples::row`), so that attention never sees another
//! example: no kernel needs a document mask, and an example's positions start at 0 as they
//! do at inference.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{DataError, HEADER_INTS};

/// A target that counts nothing: PyTorch's ignore_index (−100) as the classifier reads it.
pub const IGNORE: u32 = u32::MAX;
pub const COUNTED: u8 = 1;
pub const START: u8 = 2;
const MAGIC_MASK: i32 = 20261203;

/// The mask file beside a token file.
pub fn mask_path(tokens: &Path) -> PathBuf {
    tokens.with_extension("mask")
}

/// The examples of masked data: their token ranges and each token's flags.
#[derive(Clone, Debug)]
pub struct Examples {
    spans: Vec<(usize, usize)>,
    flags: Vec<u8>,
}

impl Examples {
    /// Examples from their tokens' flags; the first token must start one.
    pub fn from_flags(flags: Vec<u8>) -> Result<Self, String> {
        if flags.first().is_some_and(|f| f & START == 0) {
            return Err("its first token starts no example (bit 1 unset)".into());
        }
        let mut starts: Vec<usize> = (0..flags.len()).filter(|&i| flags[i] & START != 0).collect();
        starts.push(flags.len());
        let spans = starts.windows(2).map(|w| (w[0], w[1])).collect();
        Ok(Self { spans, flags })
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Examples longer than `t` + 1 tokens, whose tail a row of T leaves out.
    pub fn longer_than(&self, t: usize) -> usize {
        self.spans.iter().filter(|(s, e)| e - s > t + 1).count()
    }

    /// Appends example `e` as a row of `t` inputs and targets: its first t + 1 tokens shifted
    /// by one, targets IGNORE where the token is not COUNTED; past the example's end the
    /// inputs repeat its last token and the targets are IGNORE.
    pub fn row(&self, tokens: &[u32], e: usize, t: usize, (x, y): (&mut Vec<u32>, &mut Vec<u32>)) {
        let (s, end) = self.spans[e];
        let n = (end - s).min(t + 1);
        let seg = &tokens[s..s + n];
        for i in 0..t {
            x.push(seg[i.min(n - 1)]);
            let counted = i + 1 < n && self.flags[s + i + 1] & COUNTED != 0;
            y.push(if counted { seg[i + 1] } else { IGNORE });
        }
    }
}

/// A token file and, where X.mask lies beside it, its examples.
pub fn read_token_data(path: &Path) -> Result<(Vec<u32>, Option<Examples>), DataError> {
    let tokens = super::read_tokens(path)?;
    let mask = mask_path(path);
    if !mask.is_file() {
        return Ok((tokens, None));
    }
    let format = |why: String| DataError::Format { path: mask.clone(), why };
    let flags = read_mask(&mask)?;
    if flags.len() != tokens.len() {
        return Err(format(format!(
            "holds {} flags for the {} tokens of {}",
            flags.len(),
            tokens.len(),
            path.display()
        )));
    }
    Ok((tokens, Some(Examples::from_flags(flags).map_err(format)?)))
}

/// The flags of a mask file.
pub fn read_mask(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::Io { path: path.into(), why: e.to_string() })?;
    let format = |why: String| DataError::Format { path: path.into(), why };
    if bytes.len() < 4 * HEADER_INTS {
        return Err(format(format!("{} bytes is shorter than the 1024-byte header of a mask file", bytes.len())));
    }
    let header: Vec<i32> = bytemuck::pod_collect_to_vec(&bytes[..4 * HEADER_INTS]);
    if header[0] != MAGIC_MASK || header[1] != 1 {
        return Err(format(format!("magic {} version {}: expected {MAGIC_MASK} version 1", header[0], header[1])));
    }
    let body = &bytes[4 * HEADER_INTS..];
    if usize::try_from(header[2]).ok() != Some(body.len()) {
        return Err(format(format!("the header says {} flags, the file holds {}", header[2], body.len())));
    }
    Ok(body.to_vec())
}

/// A mask file written as it goes, like the token file beside it.
pub(super) struct MaskFile {
    path: PathBuf,
    tmp: PathBuf,
    w: BufWriter<std::fs::File>,
    count: u64,
}

impl MaskFile {
    pub fn create(path: PathBuf) -> Result<Self, String> {
        let tmp = path.with_extension("mask.tmp");
        let f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(&[0u8; 4 * HEADER_INTS]).map_err(|e| format!("{}: {e}", tmp.display()))?;
        Ok(Self { path, tmp, w, count: 0 })
    }

    pub fn push(&mut self, flags: &[u8]) -> Result<(), String> {
        self.count += flags.len() as u64;
        self.w.write_all(flags).map_err(|e| format!("{}: {e}", self.tmp.display()))
    }

    pub fn finish(self) -> Result<(), String> {
        let mut header = [0i32; HEADER_INTS];
        header[..3].copy_from_slice(&[MAGIC_MASK, 1, i32::try_from(self.count).map_err(|_| "too many tokens")?]);
        super::output::seal(self.w, &header, &self.tmp, &self.path)
    }
}
