//! Fused classifier (shaders/classifier.wgsl): per-row cross-entropy loss, and the logits'
//! gradient written over the logits. Rows run in windows where the logits are larger than
//! one storage binding may be (B·T·V of a 49,152-token vocabulary passes 128 MiB at B·T 683).

use super::Dispatches;
use super::{dispatch, grid, half_mask, skip, window_rows, View};
use crate::gpu::{Gpu, Kernel, Shader, Slot};

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

const SLOTS: &[Slot] = &[Slot::Storage, Slot::Storage, Slot::ReadOnly, Slot::ReadOnly, Slot::ReadOnly, Slot::Uniform];

/// A target that counts nothing (PyTorch's ignore_index): its row's loss and gradient are 0.
pub const IGNORE: u32 = crate::data::IGNORE;

/// The classifier's rows: logits (N, Vp), of which the first V columns count, with a loss
/// and a target (u32) per row.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub logits: View<'a>,
    pub losses: View<'a>,
    pub targets: View<'a>,
    pub n: u32,
    pub v: u32,
    pub vp: u32,
    /// [0] multiplies the gradient: the step's positions over its counted targets (None: 1).
    pub norm: Option<&'a wgpu::Buffer>,
}

/// losses (N) = cross-entropy of the logits against the targets; with `dloss` (Some(1/N)
/// for a mean loss), the logits become dlogits, and the losses are added to what `losses`
/// holds (a step's micro-batches sum there). The gradient is also multiplied by the loss
/// scale in `scale`[0] (None: 1) and by `rows.norm`[0]. Rows whose target is IGNORE add 0.
pub fn forward_backward(gpu: &Gpu, rows: Rows, dloss: Option<f32>, scale: Option<&wgpu::Buffer>) -> Dispatches {
    forward_backward_within(gpu, rows, dloss, scale, gpu.max_binding())
}

/// `forward_backward` in windows of rows whose logits fit `limit` bytes (tests lower it to
/// exercise the windows at small sizes).
pub fn forward_backward_within(
    gpu: &Gpu,
    r: Rows,
    dloss: Option<f32>,
    scale: Option<&wgpu::Buffer>,
    limit: u64,
) -> Dispatches {
    let step = window_rows(limit, r.n, r.vp as u64 * r.logits.dtype.bytes())?;
    let grad = dloss.is_some() as u32;
    let kernel =
        Kernel::new(Shader::Classifier, "classifier_forward_backward", SLOTS).with_half(half_mask(&[Some(r.logits)]));
    let mut out = Vec::new();
    for r0 in (0..r.n).step_by(step as usize) {
        let n = step.min(r.n - r0);
        let b = [
            skip(r.logits, r0, r.vp).binding(gpu, n as u64 * r.vp as u64)?,
            skip(r.losses, r0, 1).binding(gpu, n as u64)?,
            skip(r.targets, r0, 1).binding(gpu, n as u64)?,
            View::from(scale.unwrap_or(&gpu.ones)).binding(gpu, 1)?,
            View::from(r.norm.unwrap_or(&gpu.ones)).binding(gpu, 1)?,
        ];
        let p =
            ClassifierParams { n, v: r.v, vp: r.vp, grad, dloss: dloss.unwrap_or(0.0), accumulate: grad, _pad: [0; 2] };
        out.push(dispatch(gpu, kernel, &b, &p, grid(gpu, n))?);
    }
    Ok(out)
}
