//! Rotary position embedding (shaders/rope.wgsl), HF's rotate_half convention, in place on
//! the heads of q or k; the backward is the inverse rotation of the gradient.

use super::{dispatch, grid, half_mask, View};
use crate::gpu::{Category, Dispatch, Gpu, GpuBuffer, GpuError, Kernel, Shader, Slot};

/// Mirrors `struct Params` in shaders/rope.wgsl: where the heads are, then the direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RopeParams {
    pub heads: Heads,
    pub inverse: u32,
}

const SLOTS: &[Slot] = &[Slot::Storage, Slot::ReadOnly, Slot::Uniform];

/// cos and sin of position·θ^(−2i/d) for `positions` positions and i < d/2, interleaved, as
/// HF's LlamaRotaryEmbedding makes them: inv_freq and the product in f32, the cosine of
/// that f32 angle.
pub fn table(positions: usize, d: usize, theta: f64) -> Vec<f32> {
    let half = d / 2;
    let inv: Vec<f32> = (0..half).map(|i| (1.0 / theta.powf((2 * i) as f64 / d as f64)) as f32).collect();
    let mut out = Vec::with_capacity(2 * positions * half);
    for pos in 0..positions {
        for &f in &inv {
            let angle = (pos as f32 * f) as f64;
            out.extend([angle.cos() as f32, angle.sin() as f32]);
        }
    }
    out
}

/// The table on the GPU.
pub fn upload_table(gpu: &Gpu, positions: usize, d: usize, theta: f64) -> Result<GpuBuffer, GpuError> {
    gpu.pool.storage_from(&gpu.queue, Category::Parameters, &table(positions, d, theta))
}

/// Where the heads sit: `heads` heads of size `d` from column `col` of rows of `stride`
/// elements; rows of `t` positions from `pos_off`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Heads {
    pub n: u32,
    pub t: u32,
    pub heads: u32,
    pub d: u32,
    pub stride: u32,
    pub col: u32,
    pub pos_off: u32,
}

/// Rotates the heads of `x` in place (`inverse`: the backward's rotation of a gradient).
/// `table` covers positions up to pos_off + t; it is bound whole.
pub fn apply(gpu: &Gpu, x: View, table: &wgpu::Buffer, h: Heads, inverse: bool) -> Result<Dispatch, GpuError> {
    if !h.d.is_multiple_of(2) || h.col + h.heads * h.d > h.stride {
        return Err(GpuError::Unsupported(format!(
            "RoPE over {} heads of size {} from column {} in rows of {}: an even head size inside the row",
            h.heads, h.d, h.col, h.stride
        )));
    }
    // The whole table is bound, so that a decoder can move pos_off along the same dispatch.
    let (need, have) = (2 * (h.pos_off as u64 + h.t as u64) * (h.d / 2) as u64, table.size() / 4);
    if need > have {
        return Err(GpuError::Unsupported(format!(
            "RoPE's table holds {have} values, positions up to {} need {need}",
            h.pos_off + h.t
        )));
    }
    let b = [x.binding(gpu, h.n as u64 * h.stride as u64)?, View::from(table).binding(gpu, have)?];
    let p = RopeParams { heads: h, inverse: inverse as u32 };
    let k = Kernel::new(Shader::Rope, "rope_apply", SLOTS).with_half(half_mask(&[Some(x)]));
    let threads = h.n * h.heads * (h.d / 2);
    dispatch(gpu, k, &b, &p, grid(gpu, threads.div_ceil(256)))
}
