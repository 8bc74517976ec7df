//! Fused knowledge-distillation loss (shaders/distill.wgsl): per row the cross-entropy, the
//! T²-scaled KL divergence from the teacher's softmax at temperature T, their weighted sum,
//! and the student's logit gradient written over its logits. Rows run in windows where the
//! logits are larger than one storage binding may be, as the classifier's do.

use super::Dispatches;
use super::{dispatch, grid, half_mask, skip, window_rows, View};
use crate::gpu::{Gpu, Kernel, Shader, Slot};

/// Mirrors `struct Params` in shaders/distill.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DistillParams {
    pub n: u32,
    pub v: u32,
    pub vp: u32,
    pub grad: u32,
    pub dloss: f32,
    pub inv_t: f32,
    pub temp: f32,
    pub weight: f32,
    /// Where the kd parts start after the window's first row: the whole batch's N.
    pub stride: u32,
    pub _pad: [u32; 3],
}

const SLOTS: &[Slot] =
    &[Slot::Storage, Slot::ReadOnly, Slot::Storage, Slot::Storage, Slot::ReadOnly, Slot::ReadOnly, Slot::Uniform];

/// The distillation loss's settings: temperature T and weight W of the KD term.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Kd {
    pub temperature: f32,
    pub weight: f32,
}

/// The buffers of one batch: the student's logits (N, vp), overwritten by dlogits with
/// `dloss`; the teacher's (N, vp) f32; the losses (N) and the parts (2, N): ce then kd, each
/// added to. The gradient is also multiplied by the loss scale in `scale`[0] (None: 1).
pub struct DistillIo<'a> {
    pub logits: View<'a>,
    pub teacher: View<'a>,
    pub losses: View<'a>,
    pub parts: View<'a>,
    pub targets: &'a wgpu::Buffer,
    pub scale: Option<&'a wgpu::Buffer>,
}

pub fn forward_backward(gpu: &Gpu, io: &DistillIo, shape: (u32, u32, u32), kd: Kd, dloss: Option<f32>) -> Dispatches {
    forward_backward_within(gpu, io, shape, kd, dloss, gpu.max_binding())
}

/// `forward_backward` in windows of rows whose logits (and the teacher's) fit `limit` bytes.
pub fn forward_backward_within(
    gpu: &Gpu,
    io: &DistillIo,
    (n, v, vp): (u32, u32, u32),
    kd: Kd,
    dloss: Option<f32>,
    limit: u64,
) -> Dispatches {
    let step = window_rows(limit, n, vp as u64 * 4)?;
    let kernel =
        Kernel::new(Shader::Distill, "distill_forward_backward", SLOTS).with_half(half_mask(&[Some(io.logits)]));
    let mut out = Vec::new();
    for r0 in (0..n).step_by(step as usize) {
        let rows = step.min(n - r0) as u64;
        let b = [
            skip(io.logits, r0, vp).binding(gpu, rows * vp as u64)?,
            skip(io.teacher, r0, vp).binding(gpu, rows * vp as u64)?,
            skip(io.losses, r0, 1).binding(gpu, rows)?,
            skip(io.parts, r0, 1).binding(gpu, n as u64 + rows)?,
            skip(View::from(io.targets), r0, 1).binding(gpu, rows)?,
            View::from(io.scale.unwrap_or(&gpu.ones)).binding(gpu, 1)?,
        ];
        let p = DistillParams {
            n: rows as u32,
            v,
            vp,
            grad: dloss.is_some() as u32,
            dloss: dloss.unwrap_or(0.0),
            inv_t: 1.0 / kd.temperature,
            temp: kd.temperature,
            weight: kd.weight,
            stride: n,
            _pad: [0; 3],
        };
        out.push(dispatch(gpu, kernel, &b, &p, grid(gpu, rows as u32))?);
    }
    Ok(out)
}
