//! Plain-loop CPU references of every kernel: the oracle for tests, the baseline for benches.

pub mod attention;
pub mod checksum;
pub mod classifier;
pub mod dropout;
pub mod encoder;
pub mod gelu;
pub mod layernorm;
pub mod lora;
pub mod matmul;
pub mod optim;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;

/// A small deterministic generator (SplitMix64), so tests and benches need no extra crate and
/// give the same data on every machine.
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
