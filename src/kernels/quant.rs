//! Linear layers and the embedding over block-quantized weights (shaders/quant.wgsl): the
//! weights stay in ggml's blocks (as `compress::quant::gpu_words` lays them out) and the
//! kernels dequantize what they read.

use super::Dispatches;
use super::{dispatch_with, grid, half_mask, window_rows, View};
use crate::formats::QType;
use crate::gpu::{Dispatch, Gpu, GpuError, Kernel, Shader, Slot};

/// Mirrors `struct Params` in shaders/quant.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct QuantParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub has_bias: u32,
    pub off_q: u32,
    pub t: u32,
    pub pos0: u32,
    pub c: u32,
}

const SLOTS: &[Slot] = &[Slot::Storage, Slot::ReadOnly, Slot::ReadOnly, Slot::ReadOnly, Slot::ReadOnly, Slot::Uniform];
const TILE: u32 = 32;
const WG: u32 = 256;

/// A quantized weight (rows, cols) in a buffer of u32 words: `offset` words from the start
/// (a multiple of 64, so it binds at any offset alignment), rows of cols/32 blocks.
#[derive(Clone, Copy, Debug)]
pub struct QView<'a> {
    pub buf: &'a wgpu::Buffer,
    pub offset: u64,
    pub qtype: QType,
    pub rows: u32,
    pub cols: u32,
}

impl<'a> QView<'a> {
    pub fn words(&self) -> u64 {
        self.rows as u64 * (self.cols / TILE) as u64 * self.qtype.gpu_words() as u64
    }

    fn binding(&self, gpu: &Gpu) -> Result<wgpu::BufferBinding<'a>, GpuError> {
        View::at(self.buf, self.offset).binding(gpu, self.words())
    }

    fn constants(&self) -> [(&'static str, f64); 1] {
        [("FMT", self.qtype.shader_code() as f64)]
    }
}

/// Rows per thread of qmatmul_rows.
const ROWS: u32 = 4;

/// qmatmul_rows (a thread per column, no workgroup memory) where the product has fewer rows
/// than a tile (decoding); the tiled kernel otherwise. On lavapipe (AMD EPYC, 2 cores) the
/// rows kernel decodes 4.3× faster than the tiled one and evaluates (M = 512) 0.71× as fast.
fn rows_variant(m: u32) -> bool {
    m < TILE
}

/// out (M, N) = inp (M, K) · deq(w) (N, K)ᵀ + bias (N), K a multiple of 32; split along M
/// into windows where out or inp would exceed one binding.
pub fn forward(gpu: &Gpu, out: View, inp: View, w: QView, bias: Option<View>, m: u32) -> Dispatches {
    forward_variant(gpu, out, inp, w, bias, m, rows_variant(m))
}

/// `forward` through qmatmul_rows (`rows_kernel`) or the tiled qmatmul_forward.
pub fn forward_variant(
    gpu: &Gpu,
    out: View,
    inp: View,
    w: QView,
    bias: Option<View>,
    m: u32,
    rows_kernel: bool,
) -> Dispatches {
    let (n, k) = (w.rows, w.cols);
    check(&w)?;
    let bias_b = match bias {
        Some(b) => b.binding(gpu, n as u64)?,
        None => gpu.dummy.as_entire_buffer_binding(),
    };
    let entry = if rows_kernel { "qmatmul_rows" } else { "qmatmul_forward" };
    let kernel = Kernel::new(Shader::Quant, entry, SLOTS).with_half(half_mask(&[Some(out), Some(inp)]));
    let mut constants = w.constants().to_vec();
    if rows_kernel {
        constants.push(("ROWS", ROWS as f64));
    }
    let p = QuantParams { n, k, has_bias: bias.is_some() as u32, ..Default::default() };
    let groups = |mm: u32| match rows_kernel {
        true => [n.div_ceil(64), mm.div_ceil(ROWS), 1],
        false => [n.div_ceil(TILE), mm.div_ceil(TILE), 1],
    };
    let call = Call { kernel, constants: &constants, p, groups: &groups };
    windowed(gpu, call, [out, inp], [n, k], w, bias_b, m)
}

/// dinp (M, K) = dout (M, N) · deq(w) (N, K), or += with `add`: the input gradient through a
/// frozen quantized weight; split along M as `forward`.
pub fn backward_input(gpu: &Gpu, dinp: View, dout: View, w: QView, m: u32, add: bool) -> Dispatches {
    let (n, k) = (w.rows, w.cols);
    check(&w)?;
    let kernel =
        Kernel::new(Shader::Quant, "qmatmul_backward_input", SLOTS).with_half(half_mask(&[Some(dinp), Some(dout)]));
    let constants = w.constants();
    let p = QuantParams { n, k, has_bias: add as u32, ..Default::default() };
    let groups = |mm: u32| [k / TILE, mm.div_ceil(TILE), 1];
    let call = Call { kernel, constants: &constants, p, groups: &groups };
    windowed(gpu, call, [dinp, dout], [k, n], w, gpu.dummy.as_entire_buffer_binding(), m)
}

/// A weight the kernels take: rows of whole blocks, in a format they decode.
fn check(w: &QView) -> Result<(), GpuError> {
    if !w.cols.is_multiple_of(TILE) || w.qtype.shader_code() == u32::MAX {
        return Err(GpuError::Unsupported(format!("a {} weight of rows of {}", w.qtype.name(), w.cols)));
    }
    Ok(())
}

/// One kernel of a product over a quantized weight, its uniform but for m, and its grid for m rows.
struct Call<'a> {
    kernel: Kernel,
    constants: &'a [(&'static str, f64)],
    p: QuantParams,
    groups: &'a dyn Fn(u32) -> [u32; 3],
}

/// `call` over windows of rows of out (M, widths[0]) and inp (M, widths[1]), as many rows
/// each as one binding holds.
fn windowed(
    gpu: &Gpu,
    call: Call,
    [out, inp]: [View; 2],
    [wo, wi]: [u32; 2],
    w: QView,
    bias: wgpu::BufferBinding,
    m: u32,
) -> Dispatches {
    let row_bytes = (wo as u64 * out.dtype.bytes()).max(wi as u64 * inp.dtype.bytes());
    let rows = window_rows(gpu.max_binding(), m, row_bytes)?;
    let mut ops = Vec::new();
    for m0 in (0..m).step_by(rows as usize) {
        let mm = rows.min(m - m0);
        let o = out.at_offset(out.offset + m0 as u64 * wo as u64);
        let a = inp.at_offset(inp.offset + m0 as u64 * wi as u64);
        let b = [
            o.binding(gpu, mm as u64 * wo as u64)?,
            a.binding(gpu, mm as u64 * wi as u64)?,
            w.binding(gpu)?,
            bias.clone(),
            gpu.dummy.as_entire_buffer_binding(),
        ];
        let p = QuantParams { m: mm, ..call.p };
        ops.push(dispatch_with(gpu, call.kernel, call.constants, &b, &p, (call.groups)(mm))?);
    }
    Ok(ops)
}

/// out (N, K) = deq(w): the weight in `out`'s type, for a dense product.
pub fn dequantize(gpu: &Gpu, out: View, w: QView) -> Result<Dispatch, GpuError> {
    check(&w)?;
    let len = w.rows as u64 * w.cols as u64;
    let dummy = gpu.dummy.as_entire_buffer_binding();
    let b = [out.binding(gpu, len)?, dummy.clone(), w.binding(gpu)?, dummy.clone(), dummy];
    let kernel = Kernel::new(Shader::Quant, "qdequantize", SLOTS).with_half(half_mask(&[Some(out)]));
    let p = QuantParams { n: w.rows, k: w.cols, ..Default::default() };
    dispatch_with(gpu, kernel, &w.constants(), &b, &p, grid(gpu, len.div_ceil(WG as u64) as u32))
}

/// The uniform of `embed` for rows at positions pos0 + (m % t).
pub fn embed_params(m: u32, t: u32, c: u32, pos0: u32) -> QuantParams {
    QuantParams { m, t, c, pos0, has_bias: 1, ..Default::default() }
}

/// out (M, C) = deq(wte)[tokens] + wpe[pos0 + m % T], binding `wpe_rows` rows of wpe; no
/// wpe (None) for Llama.
#[allow(clippy::too_many_arguments)]
pub fn embed(
    gpu: &Gpu,
    out: View,
    tokens: &wgpu::Buffer,
    wte: QView,
    wpe: Option<View>,
    m: u32,
    t: u32,
    wpe_rows: u32,
) -> Result<Dispatch, GpuError> {
    let c = wte.cols;
    let wpe_b = match wpe {
        Some(w) => w.binding(gpu, wpe_rows.max(t) as u64 * c as u64)?,
        None => gpu.dummy.as_entire_buffer_binding(),
    };
    let b = [
        out.binding(gpu, m as u64 * c as u64)?,
        gpu.dummy.as_entire_buffer_binding(),
        wte.binding(gpu)?,
        wpe_b,
        View::from(tokens).binding(gpu, m as u64)?,
    ];
    let kernel = Kernel::new(Shader::Quant, "qembed_forward", SLOTS).with_half(half_mask(&[Some(out)]));
    let groups = grid(gpu, (m * c).div_ceil(WG));
    let p = QuantParams { has_bias: wpe.is_some() as u32, ..embed_params(m, t, c, 0) };
    dispatch_with(gpu, kernel, &wte.constants(), &b, &p, groups)
}
