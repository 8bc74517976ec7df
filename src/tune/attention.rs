//! Attention as the runtime calls it: `kernels::attention` in the variant the run's tuning
//! picks for the shape (`tune::choose_attention`). Everything else of the kernels' module is
//! re-exported as it is.

pub use crate::kernels::attention::*;

use crate::gpu::{Dispatch, Gpu, GpuError};
use crate::kernels::Dispatches;
use crate::kernels::View;

/// out (B, T, C) and lse (B, NH, T) from qkv (B, T, 3C), in the variant the tuning table
/// picks.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    gpu: &Gpu,
    out: View,
    lse: View,
    qkv: View,
    b: u32,
    t: u32,
    c: u32,
    nh: u32,
) -> Result<Dispatch, GpuError> {
    forward_in(gpu, out, lse, qkv, &AttnShape::fused(b, t, c, nh)?)
}

/// `forward` of any shape, grouped-query included, in the tuning table's variant.
pub fn forward_in(gpu: &Gpu, out: View, lse: View, qkv: View, s: &AttnShape) -> Result<Dispatch, GpuError> {
    let v = super::choose_attention(gpu, s.b, s.t, s.c(), s.nh, out.dtype)?;
    forward_shaped(gpu, v, out, lse, qkv, s)
}

/// dqkv (B, T, 3C) = the gradient through attention of any shape (written, not accumulated):
/// dqkv in qkv's layout from `[dout, out, qkv, lse]`, `d` a scratch of B·NH·T floats, in the
/// tuning table's variant.
pub fn backward_in(gpu: &Gpu, dqkv: View, d: View, io: [View; 4], s: &AttnShape) -> Dispatches {
    let v = super::choose_attention(gpu, s.b, s.t, s.c(), s.nh, io[0].dtype)?;
    backward_shaped(gpu, v, dqkv, d, io, s)
}
