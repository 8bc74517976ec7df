//! Magnitude pruning's GPU side (shaders/prune.wgsl): the exact k-th smallest |w| of a set of
//! tensors by a two-pass radix select, the prune mask it leaves, and the per-channel sums of
//! squares of an activation that Wanda and structured pruning score with.

use super::{dispatch, grid, View};
use crate::gpu::{Dispatch, Gpu, GpuError, Kernel, Shader, Slot};

/// Mirrors `struct Params` in shaders/prune.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PruneParams {
    pub off: u32,
    pub len: u32,
    pub slot: u32,
    pub mask_off: u32,
    pub cols: u32,
    pub _pad: [u32; 3],
}

/// Bins of the histogram (H in the shader), which the slots share one after another.
pub const BINS: u64 = 65536;
/// u32 of each slot's selection state: k, the high bin, the threshold, the pruned count.
pub const SEL_WORDS: u64 = 4;

const SLOTS: &[Slot] = &[Slot::ReadOnly, Slot::Storage, Slot::Storage, Slot::Storage, Slot::Uniform];
const WG: u32 = 256;

/// The buffers of a selection: the arena's mask (a bit per element), the histogram (BINS)
/// u32, zero between selections, and the slots' states (S, SEL_WORDS) u32.
#[derive(Clone, Copy)]
pub struct SelectBuffers<'a> {
    pub mask: &'a wgpu::Buffer,
    pub hist: &'a wgpu::Buffer,
    pub sel: &'a wgpu::Buffer,
}

/// A pass over one tensor of `len` weights at `w`, whose mask starts at word `mask_word`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pass {
    /// Counts the high halves of |w|'s bits into the histogram.
    HistHigh,
    /// Counts the low halves of those in the bin select_high chose.
    HistLow,
    /// Clears the mask bits of the weights at or under the threshold; counts the zero bits.
    Apply,
}

pub fn tensor_pass(
    gpu: &Gpu,
    pass: Pass,
    b: SelectBuffers,
    w: View,
    len: u64,
    mask_word: u64,
    slot: u32,
) -> Result<Dispatch, GpuError> {
    let (entry, threads) = match pass {
        Pass::HistHigh => ("hist_high", len),
        Pass::HistLow => ("hist_low", len),
        Pass::Apply => ("apply", len.div_ceil(32)),
    };
    let bindings = [w.binding(gpu, len)?, whole(b.mask), whole(b.hist), whole(b.sel)];
    let p = PruneParams { len: len as u32, slot, mask_off: mask_word as u32, ..Default::default() };
    dispatch(gpu, kernel(entry), &bindings, &p, grid(gpu, (threads as u32).div_ceil(WG)))
}

/// One workgroup choosing slot `slot`'s high bin (`high`) or its threshold, from the
/// histogram the passes before it filled; it leaves the histogram zero.
pub fn select(gpu: &Gpu, high: bool, b: SelectBuffers, slot: u32) -> Result<Dispatch, GpuError> {
    let entry = if high { "select_high" } else { "select_low" };
    let bindings = [whole(&gpu.dummy), whole(b.mask), whole(b.hist), whole(b.sel)];
    let p = PruneParams { slot, ..Default::default() };
    dispatch(gpu, kernel(entry), &bindings, &p, [1, 1, 1])
}

/// out[j] += Σ_i x[i, j]² over the (rows, cols) f32 activation `x`, into the f32 `out`
/// (cols).
pub fn channel_sumsq(gpu: &Gpu, out: View, x: View, rows: u32, cols: u32) -> Result<Dispatch, GpuError> {
    let len = rows as u64 * cols as u64;
    let bindings = [x.binding(gpu, len)?, out.binding(gpu, cols as u64)?, whole(&gpu.dummy_rw), whole(&gpu.dummy_rw)];
    let p = PruneParams { len: len as u32, cols, ..Default::default() };
    dispatch(gpu, kernel("channel_sumsq"), &bindings, &p, grid(gpu, cols.div_ceil(WG)))
}

fn kernel(entry: &'static str) -> Kernel {
    Kernel::new(Shader::Prune, entry, SLOTS)
}

fn whole(b: &wgpu::Buffer) -> wgpu::BufferBinding<'_> {
    b.as_entire_buffer_binding()
}
