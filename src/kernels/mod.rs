//! One Rust file per shader file: typed uniforms and functions that build dispatches.

pub mod elementwise;
pub mod matmul;

use crate::gpu::GpuBuffer;

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
