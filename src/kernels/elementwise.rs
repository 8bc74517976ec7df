//! Elementwise kernels (shaders/elementwise.wgsl): the copy that sets the bandwidth ceiling,
//! and an unfused AdamW built from them, one dispatch per operation and tensor, the way a
//! generic framework runs it. Both exist for benchmarks.

use super::Dtype;
use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError, Kernel, Shader, Slot};

/// Mirrors `struct Params` in shaders/elementwise.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ElementwiseParams {
    pub n: u32,
    pub grid_x: u32,
    pub s0: f32,
    pub s1: f32,
}

const SLOTS: &[Slot] = &[Slot::Storage, Slot::ReadOnly, Slot::ReadOnly, Slot::Uniform];
/// vec4 elements one workgroup covers (PER_GROUP in the shader).
const PER_GROUP: u32 = 4096;

/// A window of a buffer: elements offset..offset + len of `dtype`, offset a multiple of 64.
#[derive(Clone, Copy)]
pub struct Span<'a> {
    pub buf: &'a wgpu::Buffer,
    pub offset: u64,
    pub len: u64,
    pub dtype: Dtype,
}

impl<'a> Span<'a> {
    /// f32 elements offset..offset + len.
    pub fn new(buf: &'a wgpu::Buffer, offset: u64, len: u64) -> Self {
        Self { buf, offset, len, dtype: Dtype::F32 }
    }

    /// The whole buffer as f32.
    pub fn whole(buf: &'a GpuBuffer) -> Self {
        Self::whole_as(buf, Dtype::F32)
    }

    /// The whole buffer as `dtype`.
    pub fn whole_as(buf: &'a GpuBuffer, dtype: Dtype) -> Self {
        let buf: &'a wgpu::Buffer = buf;
        Self { buf, offset: 0, len: buf.size() / dtype.bytes(), dtype }
    }

    /// The first `len` elements of the span.
    pub fn first(self, len: u64) -> Self {
        Self { len, ..self }
    }

    fn binding(self) -> wgpu::BufferBinding<'a> {
        let eb = self.dtype.bytes();
        let bytes = eb * self.len.next_multiple_of(4);
        wgpu::BufferBinding { buffer: self.buf, offset: eb * self.offset, size: wgpu::BufferSize::new(bytes) }
    }
}

/// One elementwise dispatch: y = op(y, x1, x2) over y's span. Inputs an op does not read are
/// None (a buffer can't be bound writable and read-only in one dispatch).
pub fn op<'a>(
    gpu: &'a Gpu,
    entry: &'static str,
    y: Span<'a>,
    x1: Option<Span<'a>>,
    x2: Option<Span<'a>>,
    s0: f32,
    s1: f32,
) -> Result<Dispatch, GpuError> {
    let n = y.len.div_ceil(4) as u32;
    let max = gpu.limits.max_compute_workgroups_per_dimension;
    let groups = n.div_ceil(PER_GROUP).max(1);
    let gx = groups.min(max);
    let params = ElementwiseParams { n, grid_x: gx, s0, s1 };
    let half = super::dtype_mask([Some(y), x1, x2].map(|s| s.map(|s| s.dtype)));
    let pipeline = gpu.pipeline(Kernel::new(Shader::Elementwise, entry, SLOTS).with_half(half), &[])?;
    let uniform = gpu.pool.uniform(&gpu.queue, &params)?;
    let input = |x: Option<Span<'a>>| x.map_or(gpu.dummy.as_entire_buffer_binding(), Span::binding);
    let bindings = [y.binding(), input(x1), input(x2), uniform.as_entire_buffer_binding()];
    let bind_group = gpu.bind_group(&pipeline, &bindings);
    Ok(Dispatch { pipeline, bind_group, groups: [gx, groups.div_ceil(gx), 1], label: entry, _uniform: Some(uniform) })
}

/// y = x · mask (`add`: y += that), the mask drawn from the key in `key` (four words,
/// reference::dropout::Key) and the adapter's `salt` (below 2²⁴).
pub fn dropout<'a>(
    gpu: &'a Gpu,
    y: Span<'a>,
    x: Span<'a>,
    key: &'a wgpu::Buffer,
    salt: u32,
    add: bool,
) -> Result<Dispatch, GpuError> {
    let entry = if add { "dropout_add" } else { "dropout" };
    op(gpu, entry, y, Some(x), Some(Span::new(key, 0, 4)), salt as f32, 0.0)
}

/// dst = src over dst's span, converting between the spans' element types.
pub fn copy(gpu: &Gpu, dst: Span, src: Span) -> Result<Dispatch, GpuError> {
    op(gpu, "copy", dst, Some(src), None, 0.0, 0.0)
}

/// Residual forward: out = a + b.
pub fn add<'a>(gpu: &'a Gpu, out: Span<'a>, a: Span<'a>, b: Span<'a>) -> Result<Dispatch, GpuError> {
    op(gpu, "add", out, Some(a), Some(b), 0.0, 0.0)
}

/// dst += src (residual backward, and the two uses of a tied weight).
pub fn accumulate<'a>(gpu: &'a Gpu, dst: Span<'a>, src: Span<'a>) -> Result<Dispatch, GpuError> {
    op(gpu, "accumulate", dst, Some(src), None, 0.0, 0.0)
}
