//! One Rust file per shader file: typed uniforms and functions that build dispatches.

pub mod attention;
pub mod checksum;
pub mod classifier;
pub mod elementwise;
pub mod encoder;
pub mod gelu;
pub mod layernorm;
pub mod matmul;

use crate::gpu::{Dispatch, GpuBuffer, GpuError, Kernel};

/// Where a tensor starts: a buffer and an element offset into it.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub buf: &'a wgpu::Buffer,
    /// In f32 elements from the start of the buffer.
    pub offset: u64,
}

impl<'a> View<'a> {
    pub fn at(buf: &'a wgpu::Buffer, offset: u64) -> Self {
        Self { buf, offset }
    }
}

impl<'a> From<&'a GpuBuffer> for View<'a> {
    fn from(b: &'a GpuBuffer) -> Self {
        Self { buf: b, offset: 0 }
    }
}

impl<'a> From<&'a wgpu::Buffer> for View<'a> {
    fn from(buf: &'a wgpu::Buffer) -> Self {
        Self { buf, offset: 0 }
    }
}

impl<'a> View<'a> {
    /// Binds `len` f32 elements from the view. Its start must sit on the adapter's offset
    /// alignment (activation and parameter layouts keep every tensor on 64 elements), and the
    /// span must fit one binding.
    pub fn binding(self, gpu: &crate::Gpu, len: u64) -> Result<wgpu::BufferBinding<'a>, GpuError> {
        let offset = 4 * self.offset;
        let size = (4 * len.max(1)).next_multiple_of(4);
        let align = gpu.limits.min_storage_buffer_offset_alignment as u64;
        if !offset.is_multiple_of(align) {
            return Err(GpuError::Misaligned { offset, align });
        }
        if offset + size > self.buf.size() {
            return Err(GpuError::OutOfBounds {
                what: "tensor view",
                elements: self.offset + len,
                capacity: self.buf.size() / 4,
            });
        }
        if size > gpu.max_binding() {
            return Err(GpuError::BindingTooLarge { requested: size, max: gpu.max_binding() });
        }
        Ok(wgpu::BufferBinding { buffer: self.buf, offset, size: wgpu::BufferSize::new(size) })
    }
}

/// One dispatch of `kernel` over `bindings` (in binding order, the uniform last, made from
/// `params`).
pub(crate) fn dispatch<P: bytemuck::Pod>(
    gpu: &crate::Gpu,
    kernel: Kernel,
    bindings: &[wgpu::BufferBinding],
    params: &P,
    groups: [u32; 3],
) -> Result<Dispatch, GpuError> {
    dispatch_with(gpu, kernel, &[], bindings, params, groups)
}

/// `dispatch` of a pipeline specialized by override `constants`.
pub(crate) fn dispatch_with<P: bytemuck::Pod>(
    gpu: &crate::Gpu,
    kernel: Kernel,
    constants: &[(&'static str, f64)],
    bindings: &[wgpu::BufferBinding],
    params: &P,
    groups: [u32; 3],
) -> Result<Dispatch, GpuError> {
    let pipeline = gpu.pipeline(kernel, constants)?;
    let uniform = gpu.pool.uniform(&gpu.queue, params)?;
    let mut all = bindings.to_vec();
    all.push(uniform.as_entire_buffer_binding());
    let bind_group = gpu.bind_group(&pipeline, &all);
    Ok(Dispatch { pipeline, bind_group, groups, label: kernel.entry, _uniform: Some(uniform) })
}

/// A grid of `n` workgroups: along x up to the adapter's limit, the rest along y (kernels
/// index with workgroup_id.x + workgroup_id.y · num_workgroups.x).
pub(crate) fn grid(gpu: &crate::Gpu, n: u32) -> [u32; 3] {
    let x = n.clamp(1, gpu.limits.max_compute_workgroups_per_dimension);
    [x, n.div_ceil(x).max(1), 1]
}
