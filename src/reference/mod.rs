//! Plain-loop CPU references of every kernel: the oracle for tests, the baseline for benches.
//!
//! Not a runtime layer: tests, benches and the demo use it, and no runtime module does. It
//! uses rng, and kernels' and optim's types where a reference takes the same arguments.

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

/// The runtime's generator, which the tests and benches draw their data from too.
pub use crate::rng::Rng;
