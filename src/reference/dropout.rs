//! Dropout masks as the shaders draw them (prelude/hash.wgsl, elementwise.wgsl's dropout):
//! element e of a tensor is kept when hash(seed ^ salt, e) >= threshold, and then scaled by
//! 1 / (1 − p); the key is what the host writes for each micro-batch.

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

/// y = x · mask (or y += that with `add`), the mask of `key` and `salt`.
pub fn apply(y: &mut [f32], x: &[f32], key: Key, salt: u32, add: bool) {
    for (e, (y, &x)) in y.iter_mut().zip(x).enumerate() {
        let v = x * key.factor(salt, e);
        *y = if add { *y + v } else { v };
    }
}
