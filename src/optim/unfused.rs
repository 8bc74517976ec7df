//! The unfused AdamW baseline of `wgtrain bench optim`: torch's single-tensor path as
//! elementwise kernels, against which the fused update is measured.

use super::ParamTable;
use crate::gpu::{Category, Dispatch, Gpu, GpuBuffer, GpuError};
use crate::kernels::elementwise::{self, Span};

/// One AdamW step (torch.optim.AdamW's single-tensor path) as five elementwise dispatches per
/// tensor: θ·=(1−lr·λ); m lerp g; v = β2·v + (1−β2)·g²; d = √v/√bc2 + ε; θ += −(lr/bc1)·m/d.
/// Returns the dispatches and the scratch buffer for d that they use.
#[allow(clippy::too_many_arguments)]
pub fn adamw_unfused(
    gpu: &Gpu,
    table: &ParamTable,
    params: &wgpu::Buffer,
    grads: &wgpu::Buffer,
    m: &wgpu::Buffer,
    v: &wgpu::Buffer,
    lr: f32,
    (beta1, beta2, eps, weight_decay): (f32, f32, f32, f32),
    t: i32,
) -> Result<(Vec<Dispatch>, GpuBuffer), GpuError> {
    let largest = table.tensors.iter().map(|t| t.numel()).max().unwrap_or(1);
    let denom = gpu.pool.storage(Category::Scratch, 4 * largest.next_multiple_of(4))?;
    let bc1 = 1.0 - (beta1 as f64).powi(t);
    let bc2_sqrt = (1.0 - (beta2 as f64).powi(t)).sqrt();
    let mut ops = Vec::new();
    for tensor in &table.tensors {
        let span = |buf| Span::new(buf, tensor.offset, tensor.numel());
        let (p, g, mm, vv) = (span(params), span(grads), span(m), span(v));
        let d = Span::new(&denom, 0, tensor.numel());
        let wd = if tensor.decay { weight_decay } else { 0.0 };
        ops.push(elementwise::op(gpu, "scale", p, None, None, 1.0 - lr * wd, 0.0)?);
        ops.push(elementwise::op(gpu, "lerp", mm, Some(g), None, 1.0 - beta1, 0.0)?);
        ops.push(elementwise::op(gpu, "mul_addcmul", vv, Some(g), None, beta2, 1.0 - beta2)?);
        ops.push(elementwise::op(gpu, "sqrt_div_add", d, Some(vv), None, bc2_sqrt as f32, eps)?);
        ops.push(elementwise::op(gpu, "addcdiv", p, Some(mm), Some(d), -(lr as f64 / bc1) as f32, 0.0)?);
    }
    Ok((ops, denom))
}
