//! SwiGLU's gating (shaders/swiglu.wgsl): out = silu(gate)·up, and its backward into both
//! inputs' gradients.

use super::{dispatch, grid, half_mask, View};
use crate::gpu::{Dispatch, Gpu, GpuError, Kernel, Shader, Slot};

/// Mirrors `struct Params` in shaders/swiglu.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SwigluParams {
    pub n: u32,
    pub _pad: [u32; 3],
}

const SLOTS: &[Slot] = &[Slot::Storage, Slot::Storage, Slot::ReadOnly, Slot::ReadOnly, Slot::ReadOnly, Slot::Uniform];
const WG: u32 = 256;

/// out (N) = silu(gate)·up.
pub fn forward(gpu: &Gpu, out: View, gate: View, up: View, n: u32) -> Result<Dispatch, GpuError> {
    let len = n as u64;
    let b = [
        out.binding(gpu, len)?,
        gpu.dummy_rw.as_entire_buffer_binding(),
        gate.binding(gpu, len)?,
        up.binding(gpu, len)?,
        gpu.dummy.as_entire_buffer_binding(),
    ];
    let k = Kernel::new(Shader::Swiglu, "swiglu_forward", SLOTS).with_half(half_mask(&[
        Some(out),
        None,
        Some(gate),
        Some(up),
    ]));
    dispatch(gpu, k, &b, &SwigluParams { n, _pad: [0; 3] }, grid(gpu, n.div_ceil(WG)))
}

/// dgate (N) = dout·up·silu'(gate) and dup (N) = dout·silu(gate), both overwritten.
pub fn backward(
    gpu: &Gpu,
    dgate: View,
    dup: View,
    gate: View,
    up: View,
    dout: View,
    n: u32,
) -> Result<Dispatch, GpuError> {
    let len = n as u64;
    let b = [
        dgate.binding(gpu, len)?,
        dup.binding(gpu, len)?,
        gate.binding(gpu, len)?,
        up.binding(gpu, len)?,
        dout.binding(gpu, len)?,
    ];
    let half = half_mask(&[Some(dgate), Some(dup), Some(gate), Some(up), Some(dout)]);
    let k = Kernel::new(Shader::Swiglu, "swiglu_backward", SLOTS).with_half(half);
    dispatch(gpu, k, &b, &SwigluParams { n, _pad: [0; 3] }, grid(gpu, n.div_ceil(WG)))
}
