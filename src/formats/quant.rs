//! ggml's block formats, bit-compatible with llama.cpp: blocks of 32 weights along a row.
//!
//!   Q8_0  f16 d, 32 × i8 q            d = amax / 127, q = round(x / d) (half away from 0)
//!   Q4_0  f16 d, 16 bytes of nibbles  d = x_amax / −8 (signed), q = trunc(x / d + 8.5)
//!   Q4_1  f16 d, f16 m, 16 bytes      d = (max − min) / 15, m = min, q = trunc((x − m) / d + 0.5)
//!
//! In Q4_* byte i holds element i in its low nibble and element i + 16 in its high one. The
//! quotients use the f32 d (1/d is computed once, as ggml does); the stored d is its f16. The
//! dequantized values are d·q, d·(q − 8) and d·q + m in f32; each product of an f16 and a
//! small integer is exact, so a GPU that fuses the multiply-add gets the same bits.
//!
//! On the GPU a block is whole u32 words (`gpu_words`): word 0 holds d (low half) and m (high
//! half, Q4_1; 0 otherwise), the rest the block's quants as ggml stores them: 9 words for
//! Q8_0, 5 for Q4_0 and Q4_1.

use half::f16;

/// Weights per block.
pub const QK: usize = 32;

/// A tensor type of a GGUF file that wgtrain writes and reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum QType {
    F32,
    F16,
    Q8_0,
    Q4_0,
    Q4_1,
}

impl QType {
    /// ggml's type id (`enum ggml_type`).
    pub fn ggml_id(self) -> u32 {
        match self {
            QType::F32 => 0,
            QType::F16 => 1,
            QType::Q4_0 => 2,
            QType::Q4_1 => 3,
            QType::Q8_0 => 8,
        }
    }

    pub fn from_ggml(id: u32) -> Option<Self> {
        [QType::F32, QType::F16, QType::Q4_0, QType::Q4_1, QType::Q8_0].into_iter().find(|q| q.ggml_id() == id)
    }

    pub fn name(self) -> &'static str {
        match self {
            QType::F32 => "f32",
            QType::F16 => "f16",
            QType::Q8_0 => "q8_0",
            QType::Q4_0 => "q4_0",
            QType::Q4_1 => "q4_1",
        }
    }

    /// A block format (not a plain float type).
    pub fn is_block(self) -> bool {
        matches!(self, QType::Q8_0 | QType::Q4_0 | QType::Q4_1)
    }

    /// Elements per block (1 for the float types).
    pub fn block_len(self) -> usize {
        if self.is_block() {
            QK
        } else {
            1
        }
    }

    /// Bytes per block in ggml's layout.
    pub fn block_bytes(self) -> usize {
        match self {
            QType::F32 => 4,
            QType::F16 => 2,
            QType::Q8_0 => 34,
            QType::Q4_0 => 18,
            QType::Q4_1 => 20,
        }
    }

    /// u32 words per block on the GPU (block formats only).
    pub fn gpu_words(self) -> usize {
        match self {
            QType::Q8_0 => 9,
            _ => 5,
        }
    }

    /// The code the shaders know the format by (`QFMT_*` in shaders/quant.wgsl).
    pub fn shader_code(self) -> u32 {
        match self {
            QType::Q8_0 => 0,
            QType::Q4_0 => 1,
            QType::Q4_1 => 2,
            _ => u32::MAX,
        }
    }

    /// Bytes of a tensor of `n` elements (`n` a multiple of the block length).
    pub fn bytes_for(self, n: usize) -> usize {
        n / self.block_len() * self.block_bytes()
    }
}

/// round() of C: half away from zero (as f32::round).
fn round_away(x: f32) -> f32 {
    x.round()
}

fn inverse(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    out.extend(f16::from_f32(d).to_le_bytes());
    out.extend(x.iter().map(|&v| round_away(v * id) as i8 as u8));
}

/// Packs 32 nibbles: byte i = q[i] | q[i + 16] << 4.
fn pack_nibbles(q: &[u8; QK], out: &mut Vec<u8>) {
    out.extend((0..QK / 2).map(|i| q[i] | (q[i + QK / 2] << 4)));
}

fn quantize_q4_0(x: &[f32], out: &mut Vec<u8>) {
    // The element of largest magnitude, the first of equals, with its sign.
    let max = x.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let d = max / -8.0;
    let id = inverse(d);
    let mut q = [0u8; QK];
    for (qi, &v) in q.iter_mut().zip(x) {
        *qi = ((v * id + 8.5).trunc() as u8).min(15);
    }
    out.extend(f16::from_f32(d).to_le_bytes());
    pack_nibbles(&q, out);
}

fn quantize_q4_1(x: &[f32], out: &mut Vec<u8>) {
    let (min, max) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let d = (max - min) / 15.0;
    let id = inverse(d);
    let mut q = [0u8; QK];
    for (qi, &v) in q.iter_mut().zip(x) {
        *qi = (((v - min) * id + 0.5).trunc() as u8).min(15);
    }
    out.extend(f16::from_f32(d).to_le_bytes());
    out.extend(f16::from_f32(min).to_le_bytes());
    pack_nibbles(&q, out);
}

/// `x` in ggml's layout of `q` (`x.len()` a multiple of the block length). f16 rounds to
/// nearest even.
pub fn quantize(x: &[f32], q: QType) -> Vec<u8> {
    assert!(x.len().is_multiple_of(q.block_len()), "{} values are not whole {} blocks", x.len(), q.name());
    let mut out = Vec::with_capacity(q.bytes_for(x.len()));
    match q {
        QType::F32 => out.extend(x.iter().flat_map(|v| v.to_le_bytes())),
        QType::F16 => out.extend(x.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes())),
        QType::Q8_0 => x.chunks_exact(QK).for_each(|b| quantize_q8_0(b, &mut out)),
        QType::Q4_0 => x.chunks_exact(QK).for_each(|b| quantize_q4_0(b, &mut out)),
        QType::Q4_1 => x.chunks_exact(QK).for_each(|b| quantize_q4_1(b, &mut out)),
    }
    out
}

fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The inverse of `quantize`: the values the file stands for.
pub fn dequantize(bytes: &[u8], q: QType) -> Vec<f32> {
    let mut out = Vec::with_capacity(bytes.len() / q.block_bytes() * q.block_len());
    for b in bytes.chunks_exact(q.block_bytes()) {
        match q {
            QType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            QType::F16 => out.push(half_at(b, 0)),
            QType::Q8_0 => {
                let d = half_at(b, 0);
                out.extend(b[2..].iter().map(|&v| d * (v as i8) as f32));
            }
            QType::Q4_0 | QType::Q4_1 => {
                let (d, m, qs) = if q == QType::Q4_0 {
                    (half_at(b, 0), 0.0, &b[2..])
                } else {
                    (half_at(b, 0), half_at(b, 2), &b[4..])
                };
                let value = |n: u8| if q == QType::Q4_0 { d * (n as i32 - 8) as f32 } else { d * n as f32 + m };
                out.extend(qs.iter().map(|&v| value(v & 15)));
                out.extend(qs.iter().map(|&v| value(v >> 4)));
            }
        }
    }
    out
}

/// ggml blocks of a block format as the GPU reads them: each block in `q.gpu_words()` words,
/// d (and m) in word 0, the quants after.
pub fn gpu_words(bytes: &[u8], q: QType) -> Vec<u32> {
    assert!(q.is_block());
    let quants_at = if q == QType::Q4_1 { 4 } else { 2 };
    let mut out = Vec::with_capacity(bytes.len() / q.block_bytes() * q.gpu_words());
    for b in bytes.chunks_exact(q.block_bytes()) {
        let m = if q == QType::Q4_1 { u16::from_le_bytes([b[2], b[3]]) } else { 0 };
        out.push(u16::from_le_bytes([b[0], b[1]]) as u32 | (m as u32) << 16);
        out.extend(b[quants_at..].chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])));
    }
    out
}

/// The inverse of `gpu_words`: ggml's bytes of GPU blocks.
pub fn ggml_bytes(words: &[u32], q: QType) -> Vec<u8> {
    let mut out = Vec::with_capacity(words.len() / q.gpu_words() * q.block_bytes());
    for w in words.chunks_exact(q.gpu_words()) {
        out.extend((w[0] as u16).to_le_bytes());
        if q == QType::Q4_1 {
            out.extend(((w[0] >> 16) as u16).to_le_bytes());
        }
        out.extend(w[1..].iter().flat_map(|x| x.to_le_bytes()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_away_from_zero() {
        for (x, r) in [(0.5, 1.0), (-0.5, -1.0), (1.49, 1.0), (2.5, 3.0), (-2.5, -3.0), (0.0, 0.0), (126.99, 127.0)] {
            assert_eq!(round_away(x), r, "{x}");
        }
    }

    #[test]
    fn gpu_words_round_trip() {
        let x: Vec<f32> = (0..96).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
        for q in [QType::Q8_0, QType::Q4_0, QType::Q4_1] {
            let bytes = quantize(&x, q);
            let words = gpu_words(&bytes, q);
            assert_eq!(words.len(), 3 * q.gpu_words());
            assert_eq!(ggml_bytes(&words, q), bytes, "{q:?}");
        }
    }
}
