//! RMSNorm (shaders/rmsnorm.wgsl), Llama's norm: forward saving 1/rms per row, and backward
//! into the input (+=) and the weight (+=). No bias.

use super::Dispatches;
use super::{dispatch, grid, half_mask, View};
use crate::gpu::{Dispatch, Gpu, GpuError, Kernel, Shader, Slot};

/// Mirrors `struct Params` in shaders/rmsnorm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RmsNormParams {
    pub n: u32,
    pub c: u32,
    pub eps: f32,
    pub _pad: u32,
}

const SLOTS: &[Slot] = &[Slot::Storage, Slot::Storage, Slot::ReadOnly, Slot::ReadOnly, Slot::ReadOnly, Slot::Uniform];

const fn kernel(entry: &'static str) -> Kernel {
    Kernel::new(Shader::RmsNorm, entry, SLOTS)
}

/// out (N, C) = x / √(mean(x²) + eps) · weight; rstd (N) f32 = 1/√(mean(x²) + eps).
pub fn forward(
    gpu: &Gpu,
    out: View,
    rstd: View,
    inp: View,
    weight: View,
    (n, c): (u32, u32),
    eps: f32,
) -> Result<Dispatch, GpuError> {
    let nc = n as u64 * c as u64;
    let b = [
        out.binding(gpu, nc)?,
        rstd.binding(gpu, n as u64)?,
        inp.binding(gpu, nc)?,
        gpu.dummy.as_entire_buffer_binding(),
        weight.binding(gpu, c as u64)?,
    ];
    let p = RmsNormParams { n, c, eps, _pad: 0 };
    let half = half_mask(&[Some(out), None, Some(inp)]);
    dispatch(gpu, kernel("rmsnorm_forward").with_half(half), &b, &p, grid(gpu, n))
}

/// dinp (N, C) += the input gradient; dweight (C) f32 += Σ_rows dout·x·rstd. Two dispatches:
/// per row, then per 32 channels.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    dinp: View,
    dweight: View,
    dout: View,
    inp: View,
    rstd: View,
    weight: View,
    (n, c): (u32, u32),
) -> Dispatches {
    let (nc, n64, c64) = (n as u64 * c as u64, n as u64, c as u64);
    let p = RmsNormParams { n, c, eps: 0.0, _pad: 0 };
    let rows = [
        dinp.binding(gpu, nc)?,
        rstd.binding(gpu, n64)?,
        inp.binding(gpu, nc)?,
        dout.binding(gpu, nc)?,
        weight.binding(gpu, c64)?,
    ];
    let params = [
        dweight.binding(gpu, c64)?,
        rstd.binding(gpu, n64)?,
        inp.binding(gpu, nc)?,
        dout.binding(gpu, nc)?,
        gpu.dummy.as_entire_buffer_binding(),
    ];
    let half = half_mask(&[Some(dinp), None, Some(inp), Some(dout)]);
    let params_kernel = kernel("rmsnorm_backward_params").with_half(half_mask(&[None, None, Some(inp), Some(dout)]));
    Ok(vec![
        dispatch(gpu, kernel("rmsnorm_backward").with_half(half), &rows, &p, grid(gpu, n))?,
        dispatch(gpu, params_kernel, &params, &p, [c.div_ceil(32), 1, 1])?,
    ])
}
