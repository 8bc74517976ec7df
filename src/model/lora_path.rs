//! A low-rank adapter (LoRA, Hu et al. 2021) on a linear layer, from the tuned matmuls and
//! an elementwise scale: y = x·Wᵀ (+ b) + s·(x·Aᵀ)·Bᵀ with A (r, K), B (N, r) and s = α / r.
//! The base product is the layer's own dispatch; these add the low-rank path to its output
//! and to its input gradient, with no merged copy of W.
//!
//!   forward    h = s·x·Aᵀ (M, r), kept for the backward;  y += h·Bᵀ
//!   backward   dB += dyᵀ·h;  dh = s·dy·B;  dA += dhᵀ·x;  dx += dh·A
//!
//! With dropout (peft's lora_dropout, on the path's input only), x above is xd = x ⊙ mask /
//! (1 − p) in a scratch shared by every adapter: drawn in the forward, drawn again (the same
//! key) in the backward for dA, then the scratch takes dh·A and dx += its masked copy.

use crate::gpu::{Dispatch, Gpu, GpuError};
use crate::kernels::elementwise::{self, Span};
use crate::kernels::View;
use crate::tune::matmul::{Dims, Matmul};

/// One adapter's operands: its two factors and their gradients, and the (M, r) scratch of
/// the low-rank activation h and its gradient dh.
#[derive(Clone, Copy)]
pub struct Adapter<'a> {
    pub a: View<'a>,
    pub b: View<'a>,
    pub da: View<'a>,
    pub db: View<'a>,
    pub h: View<'a>,
    pub dh: View<'a>,
    pub rank: u32,
    /// s = α / r.
    pub scale: f32,
    pub dropout: Option<Dropout<'a>>,
}

/// Dropout on an adapter's input: the micro-batch's key (four words, reference::dropout::Key),
/// this adapter's salt, and an (M, K) scratch for the masked input (padded to a vec4).
#[derive(Clone, Copy)]
pub struct Dropout<'a> {
    pub key: &'a wgpu::Buffer,
    pub salt: u32,
    pub xd: View<'a>,
}

impl Dropout<'_> {
    /// y (+)= x ⊙ mask over M·K elements.
    fn apply(&self, gpu: &Gpu, y: View, x: View, len: u64, add: bool) -> Result<Dispatch, GpuError> {
        let (y, x) = (
            Span { buf: y.buf, offset: y.offset, len, dtype: y.dtype },
            Span { buf: x.buf, offset: x.offset, len, dtype: x.dtype },
        );
        elementwise::dropout(gpu, y, x, self.key, self.salt, add)
    }
}

/// `v` *= s over its first `len` elements.
fn scale(gpu: &Gpu, v: View, len: u64, s: f32) -> Result<Dispatch, GpuError> {
    let span = Span { buf: v.buf, offset: v.offset, len, dtype: v.dtype };
    elementwise::op(gpu, "scale", span, None, None, s, 0.0)
}

/// h = s·x·Aᵀ, then y += h·Bᵀ; `d` is the base layer's (M, N, K).
pub fn forward(mm: &Matmul, gpu: &Gpu, y: View, x: View, ad: &Adapter, d: Dims) -> Result<Vec<Dispatch>, GpuError> {
    let r = ad.rank;
    let mut ops = Vec::new();
    let x = match &ad.dropout {
        Some(dr) => {
            ops.push(dr.apply(gpu, dr.xd, x, d.batch as u64 * d.m as u64 * d.k as u64, false)?);
            dr.xd
        }
        None => x,
    };
    ops.extend(mm.forward(ad.h, x, ad.a, None, Dims { n: r, ..d })?);
    ops.push(scale(gpu, ad.h, d.batch as u64 * d.m as u64 * r as u64, ad.scale)?);
    ops.extend(mm.forward_add(y, ad.h, ad.b, Dims { k: r, ..d })?);
    Ok(ops)
}

/// From dy: the factors' gradients (added to) and dx += the low-rank path's input gradient.
pub fn backward(
    mm: &Matmul,
    gpu: &Gpu,
    dx: View,
    [dy, x]: [View; 2],
    ad: &Adapter,
    d: Dims,
) -> Result<Vec<Dispatch>, GpuError> {
    let r = ad.rank;
    let (through_b, through_a) = (Dims { k: r, ..d }, Dims { n: r, ..d });
    let mut ops = mm.backward_weight(ad.db, dy, ad.h, through_b)?;
    ops.extend(mm.backward_input(ad.dh, dy, ad.b, through_b)?);
    ops.push(scale(gpu, ad.dh, d.batch as u64 * d.m as u64 * r as u64, ad.scale)?);
    let Some(dr) = &ad.dropout else {
        ops.extend(mm.backward_weight(ad.da, ad.dh, x, through_a)?);
        ops.extend(mm.backward_input_add(dx, ad.dh, ad.a, through_a)?);
        return Ok(ops);
    };
    let len = d.batch as u64 * d.m as u64 * d.k as u64;
    ops.push(dr.apply(gpu, dr.xd, x, len, false)?);
    ops.extend(mm.backward_weight(ad.da, ad.dh, dr.xd, through_a)?);
    ops.extend(mm.backward_input(dr.xd, ad.dh, ad.a, through_a)?);
    ops.push(dr.apply(gpu, dx, dr.xd, len, true)?);
    Ok(ops)
}
