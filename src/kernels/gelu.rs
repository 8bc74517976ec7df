//! GELU, tanh approximation (shaders/gelu.wgsl): forward, and backward accumulating into dinp.

use super::{dispatch, grid, half_mask, View};
use crate::gpu::{Dispatch, Gpu, GpuError, Kernel, Shader, Slot};

/// Mirrors `struct Params` in shaders/gelu.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GeluParams {
    pub n: u32,
    pub _pad: [u32; 3],
}

const SLOTS: &[Slot] = &[Slot::Storage, Slot::ReadOnly, Slot::ReadOnly, Slot::Uniform];
/// Elements per workgroup (PER_GROUP in the shader).
const PER_GROUP: u32 = 4096;

fn kernel(entry: &'static str) -> Kernel {
    Kernel::new(Shader::Gelu, entry, SLOTS)
}

/// out (N) = gelu(inp).
pub fn forward(gpu: &Gpu, out: View, inp: View, n: u32) -> Result<Dispatch, GpuError> {
    let b = [out.binding(gpu, n as u64)?, inp.binding(gpu, n as u64)?, gpu.dummy.as_entire_buffer_binding()];
    let k = kernel("gelu_forward").with_half(half_mask(&[Some(out), Some(inp)]));
    dispatch(gpu, k, &b, &GeluParams { n, _pad: [0; 3] }, grid(gpu, n.div_ceil(PER_GROUP)))
}

/// dinp (N) += gelu'(inp) · dout.
pub fn backward(gpu: &Gpu, dinp: View, inp: View, dout: View, n: u32) -> Result<Dispatch, GpuError> {
    let b = [dinp.binding(gpu, n as u64)?, inp.binding(gpu, n as u64)?, dout.binding(gpu, n as u64)?];
    let k = kernel("gelu_backward").with_half(half_mask(&[Some(dinp), Some(inp), Some(dout)]));
    dispatch(gpu, k, &b, &GeluParams { n, _pad: [0; 3] }, grid(gpu, n.div_ceil(PER_GROUP)))
}
