//! Block quantization on the GPU (shaders/fake_quant.wgsl): QAT's fake quantization of a
//! weight (quantize, dequantize, in f32) and the blocks themselves, for the export.

use super::{dispatch_with, grid, View};
use crate::formats::QType;
use crate::gpu::{Dispatch, Gpu, GpuError, Kernel, Shader, Slot};

/// Mirrors `struct Params` in shaders/fake_quant.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FakeQuantParams {
    pub blocks: u32,
    pub off_w: u32,
    pub off_out: u32,
    pub off_packed: u32,
    pub write_out: u32,
    pub write_packed: u32,
    pub _pad: [u32; 2],
}

const SLOTS: &[Slot] = &[Slot::Storage, Slot::Storage, Slot::ReadOnly, Slot::Uniform];

/// Over `len` weights of `w` (whole blocks): out = deq(quant(w)) where `out` is given, and
/// the blocks in GPU words (`compress::quant::gpu_words`) into `packed` from its start.
pub fn fake_quant(
    gpu: &Gpu,
    out: Option<View>,
    packed: Option<View>,
    w: View,
    len: u64,
    qtype: QType,
) -> Result<Dispatch, GpuError> {
    if !qtype.is_block() || !len.is_multiple_of(32) {
        return Err(GpuError::Unsupported(format!(
            "{} weights in {}: whole blocks of 32 are quantized",
            len,
            qtype.name()
        )));
    }
    let blocks = len / 32;
    let words = blocks * qtype.gpu_words() as u64;
    let b = [
        match out {
            Some(o) => o.binding(gpu, len)?,
            None => gpu.dummy_rw.as_entire_buffer_binding(),
        },
        match packed {
            Some(p) => p.binding(gpu, words)?,
            None => gpu.dummy_rw.as_entire_buffer_binding(),
        },
        w.binding(gpu, len)?,
    ];
    let p = FakeQuantParams {
        blocks: blocks as u32,
        write_out: out.is_some() as u32,
        write_packed: packed.is_some() as u32,
        ..Default::default()
    };
    let k = Kernel::new(Shader::FakeQuant, "fake_quant", SLOTS);
    dispatch_with(gpu, k, &[("FMT", qtype.shader_code() as f64)], &b, &p, grid(gpu, (blocks as u32).div_ceil(64)))
}
