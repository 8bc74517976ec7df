//! Token + position embedding (shaders/encoder.wgsl). The wte gradient uses the batch's
//! positions ordered by token, which the GPU sorts from the token ids (`encoder_order`).

use super::Dispatches;
use super::{dispatch, grid, half_mask, View};
use crate::gpu::{Category, Dispatch, Gpu, GpuBuffer, GpuError, Kernel, Shader, Slot};

/// Mirrors `struct Params` in shaders/encoder.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct EncoderParams {
    pub n: u32,
    pub t: u32,
    pub c: u32,
    /// 1 adds wpe, 0 none.
    pub wpe: u32,
    /// Position of the first row: 0, or the decoding position.
    pub pos0: u32,
    pub _pad: [u32; 3],
}

const SLOTS: &[Slot] = &[Slot::Storage, Slot::ReadOnly, Slot::Storage, Slot::ReadOnly, Slot::ReadOnly, Slot::Uniform];
const WG: u32 = 256;

fn kernel(entry: &'static str) -> Kernel {
    Kernel::new(Shader::Encoder, entry, SLOTS)
}

/// A batch's token ids and, filled on the GPU by the backward, its positions ordered by
/// (token, position), for batches of `n` positions.
pub struct TokenBuffers {
    /// (N) token ids
    pub tokens: GpuBuffer,
    /// (N) positions ordered by token, then position
    pub positions: GpuBuffer,
    n: usize,
}

impl TokenBuffers {
    pub fn new(gpu: &Gpu, n: usize) -> Result<Self, GpuError> {
        let alloc = |bytes| gpu.pool.storage(Category::Activations, bytes);
        Ok(Self { tokens: alloc(4 * n as u64)?, positions: alloc(4 * n as u64)?, n })
    }

    /// Uploads a batch of exactly N tokens.
    pub fn upload(&self, gpu: &Gpu, tokens: &[u32]) {
        assert_eq!(tokens.len(), self.n, "a batch fills every position");
        gpu.write(&self.tokens, 0, tokens);
    }
}

/// out (B·T, C) = wte[tokens] + wpe[pos0 + t], binding `wpe_rows` rows of wpe (n_positions
/// for a decoder that moves pos0 along; T otherwise); no wpe (None) for Llama.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    gpu: &Gpu,
    out: View,
    tokens: &wgpu::Buffer,
    wte: View,
    wpe: Option<View>,
    v: u32,
    n: u32,
    t: u32,
    c: u32,
    wpe_rows: u32,
) -> Result<Dispatch, GpuError> {
    let (nc, vc, tc) = (n as u64 * c as u64, v as u64 * c as u64, wpe_rows.max(t) as u64 * c as u64);
    let b = [
        out.binding(gpu, nc)?,
        View::from(tokens).binding(gpu, n as u64)?,
        gpu.dummy_rw.as_entire_buffer_binding(),
        wte.binding(gpu, vc)?,
        match wpe {
            Some(w) => w.binding(gpu, tc)?,
            None => gpu.dummy.as_entire_buffer_binding(),
        },
    ];
    let p = EncoderParams { n, t, c, wpe: wpe.is_some() as u32, pos0: 0, _pad: [0; 3] };
    let k = kernel("encoder_forward").with_half(half_mask(&[Some(out), None, None, Some(wte)]));
    dispatch(gpu, k, &b, &p, grid(gpu, (nc as u32).div_ceil(WG)))
}

/// dwte (V, C) += dout gathered by token; dwpe (T, C) += Σ_b dout. Built once: the first
/// dispatch orders the batch's positions by token (one thread per position), the second
/// sums each token's rows (one workgroup per sorted slot; all but a token's first return).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    dwte: View,
    dwpe: Option<View>,
    dout: View,
    batch: &TokenBuffers,
    v: u32,
    n: u32,
    t: u32,
    c: u32,
) -> Dispatches {
    let (nc, vc, tc) = (n as u64 * c as u64, v as u64 * c as u64, t as u64 * c as u64);
    let p = EncoderParams { n, t, c, wpe: dwpe.is_some() as u32, pos0: 0, _pad: [0; 3] };
    let (dummy, dummy_rw) = (|| gpu.dummy.as_entire_buffer_binding(), || gpu.dummy_rw.as_entire_buffer_binding());
    let tokens = || View::from(&*batch.tokens).binding(gpu, n as u64);
    let positions = || View::from(&*batch.positions).binding(gpu, n as u64);
    let order_b = [dummy_rw(), tokens()?, positions()?, dummy(), dummy()];
    let half = half_mask(&[Some(dwte), None, None, Some(dout)]);
    let wte_b = [dwte.binding(gpu, vc)?, tokens()?, positions()?, dout.binding(gpu, nc)?, dummy()];
    let mut ops = vec![
        dispatch(gpu, kernel("encoder_order"), &order_b, &p, grid(gpu, n.div_ceil(WG)))?,
        dispatch(gpu, kernel("encoder_backward_wte").with_half(half), &wte_b, &p, grid(gpu, n))?,
    ];
    if let Some(dwpe) = dwpe {
        let wpe_b = [dwpe.binding(gpu, tc)?, dummy(), dummy_rw(), dout.binding(gpu, nc)?, dummy()];
        let groups = grid(gpu, (tc as u32).div_ceil(WG));
        ops.push(dispatch(gpu, kernel("encoder_backward_wpe").with_half(half), &wpe_b, &p, groups)?);
    }
    Ok(ops)
}
