//! Token + position embedding (shaders/encoder.wgsl). The wte gradient uses the batch's
//! positions grouped by token, built on the host from the tokens it uploads.

use super::{dispatch, grid, View};
use crate::gpu::{Category, Dispatch, Gpu, GpuBuffer, GpuError, Kernel, Shader, Slot};

/// Mirrors `struct Params` in shaders/encoder.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct EncoderParams {
    pub n: u32,
    pub t: u32,
    pub c: u32,
    pub buckets: u32,
    /// Position of the first row: 0, or the decoding position.
    pub pos0: u32,
    pub _pad: [u32; 3],
}

const SLOTS: &[Slot] = &[Slot::Storage, Slot::ReadOnly, Slot::ReadOnly, Slot::ReadOnly, Slot::ReadOnly, Slot::Uniform];
const WG: u32 = 256;

fn kernel(entry: &'static str) -> Kernel {
    Kernel { shader: Shader::Encoder, entry, slots: SLOTS }
}

/// A batch's positions grouped by token, for the wte gradient: (token, first, count) per
/// distinct token, and the positions themselves, ascending within each token.
pub struct Buckets {
    pub buckets: Vec<[u32; 4]>,
    pub positions: Vec<u32>,
}

impl Buckets {
    pub fn new(tokens: &[u32]) -> Self {
        let mut order: Vec<u32> = (0..tokens.len() as u32).collect();
        order.sort_by_key(|&i| (tokens[i as usize], i));
        let mut buckets: Vec<[u32; 4]> = Vec::new();
        for (k, &pos) in order.iter().enumerate() {
            let tok = tokens[pos as usize];
            match buckets.last_mut() {
                Some(b) if b[0] == tok => b[2] += 1,
                _ => buckets.push([tok, k as u32, 1, 0]),
            }
        }
        Self { buckets, positions: order }
    }
}

/// GPU copies of a batch's tokens and buckets, sized for batches of up to `n` positions and
/// rewritten for every batch.
pub struct TokenBuffers {
    /// (N) token ids
    pub tokens: GpuBuffer,
    /// (N) positions grouped by token
    pub positions: GpuBuffer,
    /// (N) buckets; the slots past the batch's distinct tokens hold count 0
    pub buckets: GpuBuffer,
    n: usize,
}

impl TokenBuffers {
    pub fn new(gpu: &Gpu, n: usize) -> Result<Self, GpuError> {
        let alloc = |bytes| gpu.pool.storage(Category::Activations, bytes);
        Ok(Self { tokens: alloc(4 * n as u64)?, positions: alloc(4 * n as u64)?, buckets: alloc(16 * n as u64)?, n })
    }

    /// Uploads a batch of exactly N tokens.
    pub fn upload(&self, gpu: &Gpu, tokens: &[u32]) {
        assert_eq!(tokens.len(), self.n, "a batch fills every position");
        let mut b = Buckets::new(tokens);
        b.buckets.resize(self.n, [0; 4]);
        gpu.write(&self.tokens, 0, tokens);
        gpu.write(&self.positions, 0, &b.positions);
        gpu.write(&self.buckets, 0, &b.buckets);
    }
}

/// out (B·T, C) = wte[tokens] + wpe[pos0 + t], binding `wpe_rows` rows of wpe (n_positions
/// for a decoder that moves pos0 along; T otherwise).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    gpu: &Gpu,
    out: View,
    tokens: &wgpu::Buffer,
    wte: View,
    wpe: View,
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
        gpu.dummy.as_entire_buffer_binding(),
        wte.binding(gpu, vc)?,
        wpe.binding(gpu, tc)?,
    ];
    let p = EncoderParams { n, t, c, buckets: 0, pos0: 0, _pad: [0; 3] };
    dispatch(gpu, kernel("encoder_forward"), &b, &p, grid(gpu, (nc as u32).div_ceil(WG)))
}

/// dwte (V, C) += dout gathered by token; dwpe (T, C) += Σ_b dout. Built once; each step's
/// `TokenBuffers::upload` supplies the grouping (one workgroup per bucket slot, empty slots
/// return at once).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    dwte: View,
    dwpe: View,
    dout: View,
    batch: &TokenBuffers,
    v: u32,
    n: u32,
    t: u32,
    c: u32,
) -> Result<Vec<Dispatch>, GpuError> {
    let (nc, vc, tc) = (n as u64 * c as u64, v as u64 * c as u64, t as u64 * c as u64);
    let p = EncoderParams { n, t, c, buckets: n, pos0: 0, _pad: [0; 3] };
    let dummy = || gpu.dummy.as_entire_buffer_binding();
    let wte_b = [
        dwte.binding(gpu, vc)?,
        View::from(&*batch.positions).binding(gpu, n as u64)?,
        View::from(&*batch.buckets).binding(gpu, 4 * n as u64)?,
        dout.binding(gpu, nc)?,
        dummy(),
    ];
    let wpe_b = [dwpe.binding(gpu, tc)?, dummy(), dummy(), dout.binding(gpu, nc)?, dummy()];
    Ok(vec![
        dispatch(gpu, kernel("encoder_backward_wte"), &wte_b, &p, grid(gpu, n))?,
        dispatch(gpu, kernel("encoder_backward_wpe"), &wpe_b, &p, grid(gpu, (tc as u32).div_ceil(WG)))?,
    ])
}
