//! Checksum of a buffer's bits (shaders/checksum.wgsl): two wrapping u32 sums that are the
//! same in any summation order, for comparing the ranks' copies of the parameters.

use super::{dispatch, View};
use crate::gpu::{Category, Gpu, GpuBuffer, GpuError, Kernel, Recorder, Shader, Slot};

/// Mirrors `struct Params` in shaders/checksum.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ChecksumParams {
    pub n: u32,
    pub base: u32,
    pub _pad: [u32; 2],
}

const SLOTS: &[Slot] = &[Slot::Storage, Slot::ReadOnly, Slot::Uniform];
const WG: u32 = 256;
/// Workgroups per window: each thread strides over the window.
const GROUPS: u32 = 256;

/// The checksum of the first `words` u32 of `buf`, computed on the GPU and read back (it
/// waits for the GPU). Windows of at most the adapter's binding size.
pub fn checksum(gpu: &Gpu, buf: &wgpu::Buffer, words: u64) -> Result<[u32; 2], GpuError> {
    let sums: GpuBuffer = gpu.pool.storage(Category::Scratch, 8)?;
    let window = (gpu.max_binding() / 4).min(u32::MAX as u64 / 2) & !63;
    let kernel = Kernel::new(Shader::Checksum, "checksum", SLOTS);
    let mut rec = Recorder::new(gpu);
    rec.clear(&sums, 0, 8);
    let mut ops = Vec::new();
    let mut base = 0;
    while base < words {
        let n = (words - base).min(window);
        let b = [View::from(&*sums).binding(gpu, 2)?, View::at(buf, base).binding(gpu, n)?];
        let p = ChecksumParams { n: n as u32, base: base as u32, _pad: [0; 2] };
        ops.push(dispatch(gpu, kernel, &b, &p, [GROUPS.min((n as u32).div_ceil(WG)).max(1), 1, 1])?);
        base += n;
    }
    rec.run(&ops);
    rec.submit()?;
    let s = gpu.read::<u32>(&sums, 0, 2)?;
    Ok([s[0], s[1]])
}
