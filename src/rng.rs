//! The runtime's seeded randomness: a SplitMix64 generator (initial weights, shuffles, sampling)
//! and the dropout key whose hash the shaders draw masks from (prelude/hash.wgsl): element e of
//! a tensor is kept when hash(seed ^ salt, e) >= threshold, and then scaled by 1 / (1 − p).
//!
//! Layer: the bottom, beside gpu; it uses no other module. data, model and train use it, and
//! the reference oracle draws its test data from it.

/// A small deterministic generator (SplitMix64): no extra crate, and the same numbers on every
/// machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

/// The shaders' hash of (seed, element), bit for bit.
pub fn hash(seed: u32, e: u32) -> u32 {
    let s = e.wrapping_mul(747796405).wrapping_add(2891336453).wrapping_add(seed.wrapping_mul(2654435769));
    let w = ((s >> ((s >> 28) + 4)) ^ s).wrapping_mul(277803737);
    (w >> 22) ^ w
}

/// One micro-batch's dropout: its seed, the keep threshold and the scale of kept elements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Key {
    pub seed: u32,
    pub threshold: u32,
    pub scale: f32,
}

impl Key {
    /// Dropout of probability `p` (0 ≤ p < 1) with `seed`.
    pub fn new(seed: u32, p: f64) -> Self {
        let threshold = (p * 4294967296.0).min(u32::MAX as f64) as u32;
        Self { seed, threshold, scale: (1.0 / (1.0 - p)) as f32 }
    }

    /// Keeps everything as it is (evaluation).
    pub const OFF: Key = Key { seed: 0, threshold: 0, scale: 1.0 };

    /// The key as the shader reads it: four words of f32 bits.
    pub fn words(self) -> [u32; 4] {
        [self.seed, self.threshold, self.scale.to_bits(), 0]
    }

    /// The factor of element `e` under adapter `salt`: 0 or the scale.
    pub fn factor(self, salt: u32, e: usize) -> f32 {
        if hash(self.seed ^ salt, e as u32) >= self.threshold {
            self.scale
        } else {
            0.0
        }
    }
}
