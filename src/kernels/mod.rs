//! One Rust file per shader file: typed uniforms and functions that build dispatches.
//!
//! Layer: above gpu; uses gpu, formats (QType) and data (the IGNORE target). Each call runs
//! the variant it is given: choosing one is `crate::tune`'s, above.

pub mod attention;
pub mod checksum;
pub mod classifier;
pub mod distill;
pub mod elementwise;
pub mod encoder;
pub mod fake_quant;
pub mod gelu;
pub mod layernorm;
pub mod matmul;
pub mod prune;
pub mod quant;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;

use crate::gpu::{Category, Dispatch, GpuBuffer, GpuError, Kernel, Slot};

/// The element type of a tensor in a buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    F32,
    F16,
}

impl Dtype {
    pub const fn bytes(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }
}

/// A buffer holding `dtype` elements from its start: an activation, a gradient.
#[derive(Clone)]
pub struct Tensor {
    pub buf: GpuBuffer,
    pub dtype: Dtype,
}

impl Tensor {
    /// Room for `len` elements, rounded up to whole 16 bytes (a vec4 of f32, two of f16).
    pub fn new(gpu: &crate::Gpu, category: Category, len: u64, dtype: Dtype) -> Result<Self, GpuError> {
        let bytes = (dtype.bytes() * len.max(1)).next_multiple_of(16);
        Ok(Self { buf: gpu.pool.storage(category, bytes)?, dtype })
    }

    pub fn v(&self) -> View<'_> {
        View::typed(&self.buf, self.dtype)
    }

    /// The first `len` elements, for the elementwise kernels.
    pub fn span(&self, len: u64) -> elementwise::Span<'_> {
        elementwise::Span::whole_as(&self.buf, self.dtype).first(len)
    }
}

/// Where a tensor starts: a buffer, an element offset into it, and its element type.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub buf: &'a wgpu::Buffer,
    /// In elements of `dtype` from the start of the buffer.
    pub offset: u64,
    pub dtype: Dtype,
}

impl<'a> View<'a> {
    pub fn at(buf: &'a wgpu::Buffer, offset: u64) -> Self {
        Self { buf, offset, dtype: Dtype::F32 }
    }

    /// The same buffer and type from element `offset`.
    pub fn at_offset(self, offset: u64) -> Self {
        Self { offset, ..self }
    }

    /// The same place read as elements of `dtype`.
    pub fn of(self, dtype: Dtype) -> Self {
        Self { dtype, ..self }
    }

    /// The whole of `buf` as `dtype` elements.
    pub fn typed(buf: &'a wgpu::Buffer, dtype: Dtype) -> Self {
        Self { buf, offset: 0, dtype }
    }

    /// Elements the buffer holds from the view's start.
    pub fn capacity(&self) -> u64 {
        (self.buf.size() / self.dtype.bytes()).saturating_sub(self.offset)
    }
}

/// What a builder of several dispatches returns.
pub type Dispatches = Result<Vec<Dispatch>, GpuError>;

/// Two writable bindings, five read-only ones and the uniform: the slots of the attention and
/// LayerNorm kernels.
pub(crate) const SLOTS_2W_5R: &[Slot] = &[
    Slot::Storage,
    Slot::Storage,
    Slot::ReadOnly,
    Slot::ReadOnly,
    Slot::ReadOnly,
    Slot::ReadOnly,
    Slot::ReadOnly,
    Slot::Uniform,
];

/// The kernel mask of f16 bindings (bit i for binding i) of views given in binding order
/// (None for a binding that is not a tensor view).
pub fn half_mask(views: &[Option<View>]) -> u8 {
    dtype_mask(views.iter().map(|v| v.map(|v| v.dtype)))
}

/// The kernel mask of the bindings of element types given in binding order (None: not a
/// tensor), for views and spans alike.
pub fn dtype_mask(dtypes: impl IntoIterator<Item = Option<Dtype>>) -> u8 {
    dtypes.into_iter().enumerate().fold(0, |m, (i, d)| if d == Some(Dtype::F16) { m | (1 << i) } else { m })
}

impl<'a> From<&'a GpuBuffer> for View<'a> {
    fn from(b: &'a GpuBuffer) -> Self {
        Self::at(b, 0)
    }
}

impl<'a> From<&'a wgpu::Buffer> for View<'a> {
    fn from(buf: &'a wgpu::Buffer) -> Self {
        Self::at(buf, 0)
    }
}

impl<'a> View<'a> {
    /// Binds `len` elements from the view. Its start must sit on the adapter's offset
    /// alignment (activation and parameter layouts keep every tensor on 64 elements), and the
    /// span must fit one binding.
    pub fn binding(self, gpu: &crate::Gpu, len: u64) -> Result<wgpu::BufferBinding<'a>, GpuError> {
        let eb = self.dtype.bytes();
        let offset = eb * self.offset;
        let size = (eb * len.max(1)).next_multiple_of(4);
        let align = gpu.limits.min_storage_buffer_offset_alignment as u64;
        if !offset.is_multiple_of(align) {
            return Err(GpuError::Misaligned { offset, align });
        }
        if offset + size > self.buf.size() {
            return Err(GpuError::OutOfBounds {
                what: "tensor view",
                elements: self.offset + len,
                capacity: self.buf.size() / eb,
            });
        }
        if size > gpu.max_binding() {
            return Err(GpuError::BindingTooLarge { requested: size, max: gpu.max_binding() });
        }
        Ok(wgpu::BufferBinding { buffer: self.buf, offset, size: wgpu::BufferSize::new(size) })
    }
}

/// Rows of one window of a row-wise product: all `m`, or a multiple of 128 whose rows of
/// `row_bytes` fit `limit` bytes (128 rows keep every window's offset on 256 bytes for
/// elements of 2 bytes or more).
pub(crate) fn window_rows(limit: u64, m: u32, row_bytes: u64) -> Result<u32, GpuError> {
    let fit = limit / row_bytes.max(1);
    if fit >= m as u64 {
        return Ok(m);
    }
    let rows = fit / 128 * 128;
    if rows == 0 {
        return Err(GpuError::BindingTooLarge { requested: 128 * row_bytes, max: limit });
    }
    Ok(rows as u32)
}

/// `v` moved on by `rows` rows of `width` elements (a window's start).
pub(crate) fn skip(v: View, rows: u32, width: u32) -> View {
    v.at_offset(v.offset + rows as u64 * width as u64)
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

/// The override that sizes a cooperative-matrix kernel's workgroup (matmul_coop.wgsl,
/// attention_coop.wgsl): the largest subgroup, so a workgroup is one subgroup, or several that
/// compute the same.
pub(crate) fn coop_sg(gpu: &crate::Gpu) -> (&'static str, f64) {
    ("SG", gpu.info.subgroup_max_size.clamp(1, 128) as f64)
}

/// A grid of `n` workgroups: along x up to the adapter's limit, the rest along y (kernels
/// index with workgroup_id.x + workgroup_id.y · num_workgroups.x).
pub(crate) fn grid(gpu: &crate::Gpu, n: u32) -> [u32; 3] {
    let x = n.clamp(1, gpu.limits.max_compute_workgroups_per_dimension);
    [x, n.div_ceil(x).max(1), 1]
}
