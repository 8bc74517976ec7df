//! File and block formats, with no GPU and no model in them: ggml's quantized blocks (QType and
//! their codecs, bit-compatible with llama.cpp) and the GGUF reader and writer.
//!
//! Layer: uses nothing else in the crate; kernels, data, model and compress read it.

pub mod gguf;
pub mod quant;

pub use quant::QType;
