//! LayerNorm as the runtime calls it: `kernels::layernorm` in the variant the run's tuning
//! picks for the shape (`tune::choose_layernorm`). Everything else of the kernels' module is
//! re-exported as it is.

pub use crate::kernels::layernorm::*;

use crate::gpu::{Dispatch, Gpu, GpuError};
use crate::kernels::View;

/// out (N, C) = layernorm(inp) · weight + bias; stats (N, 2) = (mean, rstd) per row, in the
/// variant the tuning table picks.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    gpu: &Gpu,
    out: View,
    stats: View,
    inp: View,
    weight: View,
    bias: View,
    n: u32,
    c: u32,
) -> Result<Dispatch, GpuError> {
    let v = super::choose_layernorm(gpu, n, c, inp.dtype)?;
    forward_with(gpu, v, out, stats, inp, weight, bias, n, c)
}

/// dinp (N, C) += the input gradient; dweight (C) += Σ dout·norm and dbias (C) += Σ dout.
/// Two dispatches: per row, then per 32 channels. In the variant the tuning table picks.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    dinp: View,
    dweight: View,
    dbias: View,
    dout: View,
    inp: View,
    stats: View,
    weight: View,
    n: u32,
    c: u32,
) -> Result<Vec<Dispatch>, GpuError> {
    let v = super::choose_layernorm(gpu, n, c, inp.dtype)?;
    backward_with(gpu, v, dinp, dweight, dbias, dout, inp, stats, weight, n, c)
}
