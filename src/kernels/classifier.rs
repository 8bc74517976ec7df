//! Fused classifier (shaders/classifier.wgsl): per-row cross-entropy loss, and the logits'
//! gradient written over the logits.

use super::{dispatch, grid, half_mask, View};
use crate::gpu::{Dispatch, Gpu, GpuError, Kernel, Shader, Slot};

/// Mirrors `struct Params` in shaders/classifier.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ClassifierParams {
    pub n: u32,
    pub v: u32,
    pub vp: u32,
    pub grad: u32,
    pub dloss: f32,
    pub accumulate: u32,
    pub _pad: [u32; 2],
}

const SLOTS: &[Slot] = &[Slot::Storage, Slot::Storage, Slot::ReadOnly, Slot::ReadOnly, Slot::Uniform];

/// losses (N) = cross-entropy of logits (N, Vp)[:, :V] against targets (N); with `dloss`
/// (Some(1/N) for a mean loss), the logits become dlogits, and the losses are added to what
/// `losses` holds (a step's micro-batches sum there). Rows of length `vp` ≥ `v`. The
/// gradient is also multiplied by the loss scale in `scale`[0] (None: 1).
#[allow(clippy::too_many_arguments)]
pub fn forward_backward(
    gpu: &Gpu,
    logits: View,
    losses: View,
    targets: &wgpu::Buffer,
    n: u32,
    v: u32,
    vp: u32,
    dloss: Option<f32>,
    scale: Option<&wgpu::Buffer>,
) -> Result<Dispatch, GpuError> {
    let b = [
        logits.binding(gpu, n as u64 * vp as u64)?,
        losses.binding(gpu, n as u64)?,
        View::from(targets).binding(gpu, n as u64)?,
        View::from(scale.unwrap_or(&gpu.ones)).binding(gpu, 1)?,
    ];
    let grad = dloss.is_some() as u32;
    let p = ClassifierParams { n, v, vp, grad, dloss: dloss.unwrap_or(0.0), accumulate: grad, _pad: [0; 2] };
    let kernel =
        Kernel::new(Shader::Classifier, "classifier_forward_backward", SLOTS).with_half(half_mask(&[Some(logits)]));
    dispatch(gpu, kernel, &b, &p, grid(gpu, n))
}
