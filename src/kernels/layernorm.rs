//! LayerNorm (shaders/layernorm.wgsl), eps 1e-5: forward saving (mean, rstd) per row, and
//! backward into the input (+=) and the parameters (+=).

use super::Dispatches;
use super::{dispatch, grid, half_mask, View};
use crate::gpu::{Dispatch, Gpu, GpuError, Kernel, Shader, Slot};

/// Mirrors `struct Params` in shaders/layernorm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LayerNormParams {
    pub n: u32,
    pub c: u32,
    pub _pad: [u32; 2],
}

const SLOTS: &[Slot] = super::SLOTS_2W_5R;

const fn kernel(entry: &'static str) -> Kernel {
    Kernel::new(Shader::Layernorm, entry, SLOTS)
}

/// How the per-row passes (forward, dinp) run: one workgroup per row with tree reductions, or
/// one thread per row (no barriers: CPU adapters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LnVariant {
    Workgroup,
    Rows,
}

impl LnVariant {
    pub const ALL: &'static [LnVariant] = &[LnVariant::Workgroup, LnVariant::Rows];

    pub fn name(self) -> &'static str {
        match self {
            LnVariant::Workgroup => "workgroup",
            LnVariant::Rows => "rows",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.name() == s)
            .ok_or_else(|| format!("{s:?} is not a layernorm variant: workgroup or rows"))
    }

    /// One per-row dispatch over `n` rows.
    fn rows(
        self,
        gpu: &Gpu,
        entry: (&'static str, &'static str),
        half: u8,
        b: &[wgpu::BufferBinding],
        p: &LayerNormParams,
    ) -> Result<Dispatch, GpuError> {
        match self {
            LnVariant::Workgroup => dispatch(gpu, kernel(entry.0).with_half(half), b, p, grid(gpu, p.n)),
            LnVariant::Rows => dispatch(gpu, kernel(entry.1).with_half(half), b, p, grid(gpu, p.n.div_ceil(ROWS_WG))),
        }
    }
}

/// Threads per workgroup of the one-thread-per-row kernels (ROWS_WG in the shader).
const ROWS_WG: u32 = 64;

/// out (N, C) = layernorm(inp) · weight + bias; stats (N, 2) = (mean, rstd) per row, in
/// variant `v`.
#[allow(clippy::too_many_arguments)]
pub fn forward_with(
    gpu: &Gpu,
    v: LnVariant,
    out: View,
    stats: View,
    inp: View,
    weight: View,
    bias: View,
    n: u32,
    c: u32,
) -> Result<Dispatch, GpuError> {
    let (nc, n64, c64) = (n as u64 * c as u64, n as u64, c as u64);
    let dummy = gpu.dummy.as_entire_buffer_binding();
    let b = [
        out.binding(gpu, nc)?,
        stats.binding(gpu, 2 * n64)?,
        inp.binding(gpu, nc)?,
        dummy.clone(),
        dummy,
        weight.binding(gpu, c64)?,
        bias.binding(gpu, c64)?,
    ];
    let p = LayerNormParams { n, c, _pad: [0; 2] };
    let half = half_mask(&[Some(out), None, Some(inp)]);
    v.rows(gpu, ("layernorm_forward", "layernorm_rows_forward"), half, &b, &p)
}

/// dinp (N, C) += the input gradient; dweight (C) += Σ dout·norm and dbias (C) += Σ dout.
/// Two dispatches: per row, then per 32 channels. In variant `v`.
#[allow(clippy::too_many_arguments)]
pub fn backward_with(
    gpu: &Gpu,
    v: LnVariant,
    dinp: View,
    dweight: View,
    dbias: View,
    dout: View,
    inp: View,
    stats: View,
    weight: View,
    n: u32,
    c: u32,
) -> Dispatches {
    let (nc, n64, c64) = (n as u64 * c as u64, n as u64, c as u64);
    let p = LayerNormParams { n, c, _pad: [0; 2] };
    let dummy = || gpu.dummy.as_entire_buffer_binding();
    let rows = [
        dinp.binding(gpu, nc)?,
        dummy_rw(gpu)?,
        inp.binding(gpu, nc)?,
        dout.binding(gpu, nc)?,
        stats.binding(gpu, 2 * n64)?,
        weight.binding(gpu, c64)?,
        dummy(),
    ];
    let params = [
        dweight.binding(gpu, c64)?,
        dbias.binding(gpu, c64)?,
        inp.binding(gpu, nc)?,
        dout.binding(gpu, nc)?,
        stats.binding(gpu, 2 * n64)?,
        dummy(),
        dummy(),
    ];
    let half = half_mask(&[Some(dinp), None, Some(inp), Some(dout)]);
    let params_kernel = kernel("layernorm_backward_params").with_half(half_mask(&[None, None, Some(inp), Some(dout)]));
    Ok(vec![
        v.rows(gpu, ("layernorm_backward", "layernorm_rows_backward"), half, &rows, &p)?,
        dispatch(gpu, params_kernel, &params, &p, [c.div_ceil(32), 1, 1])?,
    ])
}

/// A writable binding nobody writes: the shared dummy can't be bound writable twice in one
/// dispatch, so slots left empty among writable ones take this.
fn dummy_rw(gpu: &Gpu) -> Result<wgpu::BufferBinding<'_>, GpuError> {
    Ok(gpu.dummy_rw.as_entire_buffer_binding())
}
