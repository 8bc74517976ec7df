//! Matmul of a linear layer (shaders/matmul.wgsl): typed uniforms and the dispatches that run
//! it, split into windows when an operand is larger than one storage binding may be. Each
//! product runs the variant the caller names (`crate::tune::matmul` picks it by shape).
//!
//! Layout: inp (Z, M, K), W (N, K) as torch.nn.Linear, out (Z, M, N), bias (N), all row-major
//! f32. `Dims::shared_weight` says one W serves the whole batch (a linear layer); otherwise
//! each batch entry has its own (Z, N, K) slice (batched products such as attention's).

mod variant;

use crate::kernels::Dispatches;
use std::sync::Arc;

pub use variant::{runs_on, split_lanes, Product, Variant};

use super::{half_mask, View};
use crate::gpu::Shader::Matmul as M;
use crate::gpu::{Dispatch, Gpu, GpuError, Kernel, Pipeline, Slot};

/// Mirrors `struct Params` in shaders/matmul.wgsl. Offsets and strides count elements.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub accumulate: u32,
    pub off_out: u32,
    pub off_a: u32,
    pub off_b: u32,
    pub off_bias: u32,
    pub ld_out: u32,
    pub ld_a: u32,
    pub ld_b: u32,
    pub has_bias: u32,
    pub batch_out: u32,
    pub batch_a: u32,
    pub batch_b: u32,
    pub _pad: u32,
}

/// Sizes of one product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Z: batch entries.
    pub batch: u32,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    /// One W (and bias) for every batch entry.
    pub shared_weight: bool,
}

impl Dims {
    /// A linear layer over `m` rows: one shared weight.
    pub fn linear(m: u32, n: u32, k: u32) -> Self {
        Self { batch: 1, m, n, k, shared_weight: true }
    }

    /// Multiply-adds of one product, times two.
    pub fn flops(&self) -> f64 {
        2.0 * self.batch as f64 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

const SLOTS: &[Slot] = &[Slot::Storage, Slot::ReadOnly, Slot::ReadOnly, Slot::ReadOnly, Slot::Uniform];
const fn kernel(entry: &'static str) -> Kernel {
    Kernel::new(M, entry, SLOTS)
}
const FORWARD: Kernel = kernel("matmul_forward");
const BACKWARD_INPUT: Kernel = kernel("matmul_backward_input");
const BACKWARD_WEIGHT: Kernel = kernel("matmul_backward_weight");
const BACKWARD_BIAS: Kernel = kernel("matmul_backward_bias");
const NAIVE: Kernel = kernel("matmul_naive");
const TILED: Kernel = kernel("matmul_tiled");
/// The cooperative-matrix kernel on fragments of `frag` (8 or 16) on a side.
fn coop_kernel(frag: u32) -> Kernel {
    let shader = if frag == 8 { crate::gpu::Shader::MatmulCoop8 } else { crate::gpu::Shader::MatmulCoop };
    Kernel::new(shader, "matmul_coop", SLOTS)
}
const SPLIT: Kernel = Kernel::new(crate::gpu::Shader::MatmulSplit, "matmul_forward_split", SLOTS);
const LANES: Kernel = Kernel::new(crate::gpu::Shader::MatmulLanes, "matmul_lanes", SLOTS);

/// Columns per workgroup of matmul_backward_bias (FOLD_COLS in shaders/prelude/fold.wgsl).
const BIAS_COLS: u32 = 32;

/// The two dimensions a product can be split along when its windows are too large.
#[derive(Clone, Copy, PartialEq)]
enum Axis {
    M,
    N,
    K,
}

/// One operand as the shader sees it: rows along one axis, columns along another.
struct Operand<'a> {
    view: View<'a>,
    rows: Axis,
    cols: Axis,
    /// Leading dimension: elements between rows.
    ld: u64,
    /// Elements between batch entries (0: shared).
    batch: u64,
}

/// A rectangle of the problem: batches z0..z1, and ranges along M and N.
#[derive(Clone, Copy)]
struct Chunk {
    z: (u64, u64),
    m: (u64, u64),
    n: (u64, u64),
}

/// Builds matmul dispatches on one GPU, in one variant (`crate::tune::matmul::Matmul` picks
/// it per product and shape).
pub struct Matmul<'g> {
    gpu: &'g Gpu,
    /// The variant of every product; a forward-only variant runs the backward products as
    /// the baseline (`Variant::for_product`).
    pub variant: Variant,
    /// Largest window bound at once, in bytes: the adapter's limit unless lowered (tests lower
    /// it to exercise the windowing at small sizes).
    pub binding_limit: u64,
}

impl<'g> Matmul<'g> {
    pub fn with_variant(gpu: &'g Gpu, variant: Variant) -> Self {
        Self { gpu, variant, binding_limit: gpu.max_binding() }
    }

    /// The variant that runs `product`.
    fn at(&self, product: Product) -> Option<Variant> {
        Some(self.variant.for_product(product))
    }

    /// out (Z, M, N) = inp (Z, M, K) · W (N, K)ᵀ + bias (N).
    pub fn forward(&self, out: View, inp: View, w: View, bias: Option<View>, d: Dims) -> Dispatches {
        self.forward_with(FORWARD, self.at(Product::Forward), out, inp, w, bias, d)
    }

    /// out (Z, M, N) += inp (Z, M, K) · W (N, K)ᵀ: a second product into one output (LoRA).
    pub fn forward_add(&self, out: View, inp: View, w: View, d: Dims) -> Dispatches {
        let (d, ops) = forward_operands(out, inp, w, d);
        self.build(FORWARD, self.at(Product::Forward), d, &ops, None, true, None)
    }

    /// dinp (Z, M, K) = dout (Z, M, N) · W (N, K), or += with `add` (one input read by several
    /// layers).
    pub fn backward_input(&self, dinp: View, dout: View, w: View, d: Dims, add: bool) -> Dispatches {
        let (d, zs) = flatten(d);
        let ops = [
            dense(dinp, Axis::M, Axis::K, d, zs),
            dense(dout, Axis::M, Axis::N, d, zs),
            dense(w, Axis::N, Axis::K, d, zs),
        ];
        // Chunks after the first along N add to what the first wrote.
        self.build(BACKWARD_INPUT, self.at(Product::BackwardInput), d, &ops, None, add, Some(Axis::N))
    }

    /// dW (N, K) += dout (Z, M, N)ᵀ · inp (Z, M, K); per batch entry unless the weight is shared.
    pub fn backward_weight(&self, dw: View, dout: View, inp: View, d: Dims) -> Dispatches {
        let (d, zs) = flatten(d);
        let ops = [
            dense(dw, Axis::N, Axis::K, d, zs),
            dense(dout, Axis::M, Axis::N, d, zs),
            dense(inp, Axis::M, Axis::K, d, zs),
        ];
        self.build(BACKWARD_WEIGHT, self.at(Product::BackwardWeight), d, &ops, None, true, None)
    }

    /// dbias (N) += column sums of dout (Z·M, N).
    pub fn backward_bias(&self, dbias: View, dout: View, d: Dims) -> Dispatches {
        let d = Dims { batch: 1, m: d.batch * d.m, k: 1, shared_weight: true, ..d };
        let n = d.n as u64;
        let ops = [operand(dbias, Axis::K, Axis::N, 0, 0), operand(dout, Axis::M, Axis::N, n, 0)];
        self.build(BACKWARD_BIAS, None, d, &ops, None, true, None)
    }

    /// The baseline: out = inp · Wᵀ + bias with one thread per output and no blocking.
    pub fn naive(&self, out: View, inp: View, w: View, bias: Option<View>, d: Dims) -> Dispatches {
        self.forward_with(NAIVE, None, out, inp, w, bias, d)
    }

    /// The forward product's operands, for the tiled kernel or the naive one.
    #[allow(clippy::too_many_arguments)]
    fn forward_with(
        &self,
        kernel: Kernel,
        variant: Option<Variant>,
        out: View,
        inp: View,
        w: View,
        bias: Option<View>,
        d: Dims,
    ) -> Dispatches {
        let (d, ops) = forward_operands(out, inp, w, d);
        self.build(kernel, variant, d, &ops, bias, false, None)
    }

    /// Plans the chunks, then makes one dispatch per chunk. `variant` is None for the kernels
    /// that have none (bias, naive).
    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        kernel: Kernel,
        variant: Option<Variant>,
        d: Dims,
        ops: &[Operand],
        bias: Option<View>,
        accumulate: bool,
        reduce_split: Option<Axis>,
    ) -> Dispatches {
        for op in ops.iter().chain(bias.map(|b| operand(b, Axis::K, Axis::N, 0, 0)).iter()) {
            check_bounds(op, d)?;
        }
        if d.batch == 0 || d.m == 0 || d.n == 0 || d.k == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let job = Job { kernel, variant, d, lanes: split_lanes(self.gpu).unwrap_or(8) };
        for c in self.plan(&job, ops)? {
            let acc = accumulate || (reduce_split == Some(Axis::N) && c.n.0 > 0);
            out.push(self.dispatch(&job, ops, bias, acc, c)?);
        }
        Ok(out)
    }

    /// Splits the problem so that every operand's window fits one binding and every grid fits
    /// the adapter's workgroup limit: the whole batch at once if it fits, else one batch entry
    /// at a time, split along N, then along M.
    fn plan(&self, job: &Job, ops: &[Operand]) -> Result<Vec<Chunk>, GpuError> {
        let (kernel, d) = (job.kernel, job.d);
        let (m, n, z) = (d.m as u64, d.n as u64, d.batch as u64);
        let limit = self.window_elems();
        let max_groups = self.gpu.limits.max_compute_workgroups_per_dimension as u64;
        let (rows_per_group, cols_per_group) = job.group_extent();
        let grid_y_axis = if kernel == BACKWARD_WEIGHT { Axis::N } else { Axis::M };
        let whole = Chunk { z: (0, z), m: (0, m), n: (0, n) };
        let fits = |c: &Chunk| ops.iter().all(|op| span(op, c, d) <= limit);
        let grid_ok = |c: &Chunk| {
            let along = |ax: Axis| if ax == Axis::M { c.m.1 - c.m.0 } else { c.n.1 - c.n.0 };
            along(grid_y_axis).div_ceil(rows_per_group) <= max_groups
                && c.z.1 - c.z.0 <= max_groups
                && (kernel != FORWARD && kernel != NAIVE || along(Axis::N).div_ceil(cols_per_group) <= max_groups)
        };
        if fits(&whole) && grid_ok(&whole) {
            return Ok(vec![whole]);
        }
        // Rows along N per chunk: what the N-row operands allow, a multiple of 4 so that column
        // offsets into N-wide rows keep their alignment.
        let mut n_step = n;
        for op in ops.iter().filter(|o| o.rows == Axis::N) {
            n_step = n_step.min(rows_that_fit(op, d, n, limit)?);
        }
        if ops.iter().any(|o| o.rows == Axis::K && o.cols == Axis::N) {
            n_step = n_step.min(limit);
        }
        if grid_y_axis == Axis::N {
            n_step = n_step.min(max_groups.saturating_mul(rows_per_group));
        }
        if n_step < n && n_step >= 4 {
            n_step -= n_step % 4;
        }
        let mut m_step = m;
        for op in ops.iter().filter(|o| o.rows == Axis::M) {
            m_step = m_step.min(rows_that_fit(op, d, n_step, limit)?);
        }
        if grid_y_axis == Axis::M {
            m_step = m_step.min(max_groups.saturating_mul(rows_per_group));
        }
        let mut chunks = Vec::new();
        for zi in 0..z {
            for n0 in (0..n).step_by(n_step as usize) {
                for m0 in (0..m).step_by(m_step as usize) {
                    chunks.push(Chunk {
                        z: (zi, zi + 1),
                        m: (m0, (m0 + m_step).min(m)),
                        n: (n0, (n0 + n_step).min(n)),
                    });
                }
            }
        }
        Ok(chunks)
    }

    /// Elements one window may span, after room for aligning its start down.
    fn window_elems(&self) -> u64 {
        let align = self.gpu.limits.min_storage_buffer_offset_alignment as u64;
        self.binding_limit.saturating_sub(align + 32) / 4
    }

    fn dispatch(
        &self,
        job: &Job,
        ops: &[Operand],
        bias: Option<View>,
        acc: bool,
        c: Chunk,
    ) -> Result<Dispatch, GpuError> {
        let mut bindings = Vec::with_capacity(5);
        let mut offs = [0u32; 3];
        for (i, op) in ops.iter().enumerate() {
            let (lo, hi) = elements(op, &c, job.d);
            let (window, shift) = self.window(op.view, lo, hi)?;
            bindings.push(window);
            offs[i] = shift;
        }
        if ops.len() == 2 {
            // backward_bias binds no weight.
            bindings.push(self.dummy());
            offs[2] = 0;
        }
        let mut off_bias = 0;
        match bias {
            Some(b) => {
                let (window, shift) = self.window(b, b.offset + c.n.0, b.offset + c.n.1)?;
                bindings.push(window);
                off_bias = shift;
            }
            None => bindings.push(self.dummy()),
        }
        let ld = |i: usize| ops.get(i).map_or(0, |o| o.ld as u32);
        let stride = |i: usize| ops.get(i).map_or(0, |o| o.batch as u32);
        let params = MatmulParams {
            m: (c.m.1 - c.m.0) as u32,
            n: (c.n.1 - c.n.0) as u32,
            k: job.d.k,
            accumulate: acc as u32,
            off_out: offs[0],
            off_a: offs[1],
            off_b: offs[2],
            off_bias,
            ld_out: ld(0),
            ld_a: ld(1),
            ld_b: ld(2),
            has_bias: bias.is_some() as u32,
            batch_out: stride(0),
            batch_a: stride(1),
            batch_b: stride(2),
            _pad: 0,
        };
        let aligned = [params.off_a, params.off_b, params.ld_a, params.ld_b].iter().all(|x| x % 4 == 0);
        let mut views: Vec<Option<View>> = ops.iter().map(|o| Some(o.view)).collect();
        views.resize(3, None);
        views.push(bias);
        let pipeline = self.pipeline(job, aligned, half_mask(&views))?;
        let groups = job.grid(&params, (c.z.1 - c.z.0) as u32);
        let uniform = self.gpu.pool.uniform(&self.gpu.queue, &params)?;
        bindings.push(uniform.as_entire_buffer_binding());
        let bind_group = self.gpu.bind_group(&pipeline, &bindings);
        Ok(Dispatch { pipeline, bind_group, groups, label: job.kernel.entry, _uniform: Some(uniform) })
    }

    /// The pipeline of `job`'s variant, with the bindings of mask `half` in f16; corrupting its
    /// output where `Gpu::corrupt` names the variant.
    fn pipeline(&self, job: &Job, aligned: bool, half: u8) -> Result<Arc<Pipeline>, GpuError> {
        let (kernel, mut constants) = self.pipeline_of(job, aligned, half)?;
        if job.variant.is_some_and(|v| self.gpu.corrupt.as_deref() == Some(v.to_string().as_str())) {
            constants.push(("CORRUPT", 1.0));
        }
        self.gpu.pipeline(kernel, &constants)
    }

    /// The kernel and override constants of `job`'s variant.
    fn pipeline_of(&self, job: &Job, aligned: bool, half: u8) -> Result<(Kernel, Vec<(&'static str, f64)>), GpuError> {
        let kernel = job.kernel.with_half(half);
        match (job.variant, job.product()) {
            (Some(v @ Variant::Reg { .. }), Some(p)) => {
                let mut constants = v.constants(p);
                constants.push(("ALIGNED", aligned as u8 as f64));
                Ok((kernel, constants))
            }
            (Some(v @ Variant::Tiled { .. }), Some(p)) => Ok((TILED.with_half(half), v.constants(p))),
            (Some(v @ Variant::Lanes { .. }), Some(p)) => {
                let Some(lanes) = split_lanes(self.gpu) else {
                    let why = format!("matmul variant {v}: needs subgroups of one size, 4 to 64 lanes");
                    return Err(GpuError::Unsupported(why));
                };
                let mut constants = v.constants(p);
                constants.push(("LANES", lanes as f64));
                Ok((LANES.with_half(half), constants))
            }
            (Some(v @ Variant::Coop { frag }), Some(p)) => {
                if half & 0b110 != 0b110 || !self.gpu.coop_matrix {
                    return Err(GpuError::Unsupported(format!(
                        "matmul variant {v}: needs f16 operands on a device with cooperative matrices"
                    )));
                }
                let mut constants = v.constants(p);
                constants.push(super::coop_sg(self.gpu));
                Ok((coop_kernel(frag).with_half(half), constants))
            }
            (Some(v @ Variant::Split { .. }), Some(Product::Forward)) => {
                let lanes = split_lanes(self.gpu)
                    .ok_or_else(|| GpuError::Unsupported(format!("matmul variant {v}: needs subgroups of one size")))?;
                let mut constants = v.constants(Product::Forward);
                constants.push(("KL", lanes as f64));
                Ok((SPLIT.with_half(half), constants))
            }
            _ if job.kernel == NAIVE => Ok((kernel, vec![("WG_X", 8.0), ("WG_Y", 8.0)])),
            _ => Ok((kernel, Vec::new())),
        }
    }

    fn dummy(&self) -> wgpu::BufferBinding<'g> {
        self.gpu.dummy.as_entire_buffer_binding()
    }

    /// Binds elements lo..hi of `view`'s buffer: the start is aligned down to the adapter's
    /// offset alignment and the end up to a vec4, plus one more vec4 where the buffer has it
    /// (the unaligned loads read the vec4 after an element's). Returns the window and where lo
    /// lands in it.
    fn window<'a>(&self, view: View<'a>, lo: u64, hi: u64) -> Result<(wgpu::BufferBinding<'a>, u32), GpuError> {
        let align = self.gpu.limits.min_storage_buffer_offset_alignment as u64;
        let eb = view.dtype.bytes();
        let start = (lo * eb) / align * align;
        let end = ((hi * eb).next_multiple_of(4 * eb) + 4 * eb).min(view.buf.size());
        let size = end - start;
        if size > self.binding_limit {
            return Err(GpuError::BindingTooLarge { requested: size, max: self.binding_limit });
        }
        let binding = wgpu::BufferBinding { buffer: view.buf, offset: start, size: wgpu::BufferSize::new(size) };
        Ok((binding, (lo - start / eb) as u32))
    }
}

/// One product to plan: its kernel (the register-blocked entry point, which names it) and the
/// variant that computes it.
struct Job {
    kernel: Kernel,
    variant: Option<Variant>,
    d: Dims,
    /// The device's subgroup width, which sets a lane-parallel workgroup's columns.
    lanes: u32,
}

impl Job {
    fn product(&self) -> Option<Product> {
        Product::ALL.into_iter().find(|p| p.entry() == self.kernel.entry)
    }

    /// Output rows and columns one workgroup covers, for the grid.
    fn group_extent(&self) -> (u64, u64) {
        match (self.kernel, self.variant) {
            (NAIVE, _) => (8, 8),
            (BACKWARD_BIAS, _) => (u64::MAX, BIAS_COLS as u64),
            (_, Some(v)) => (v.extent(self.lanes).0 as u64, v.extent(self.lanes).1 as u64),
            (_, None) => unreachable!("every product has a variant"),
        }
    }

    /// Workgroups: x along the output's columns, y along its rows, z over batch entries.
    fn grid(&self, p: &MatmulParams, z: u32) -> [u32; 3] {
        let (rows, cols) = self.group_extent();
        let (rows, cols) = (rows.min(u32::MAX as u64) as u32, cols as u32);
        match self.kernel {
            FORWARD | NAIVE => [p.n.div_ceil(cols), p.m.div_ceil(rows), z],
            BACKWARD_INPUT => [p.k.div_ceil(cols), p.m.div_ceil(rows), z],
            BACKWARD_WEIGHT => [p.k.div_ceil(cols), p.n.div_ceil(rows), z],
            _ => [p.n.div_ceil(BIAS_COLS), 1, 1],
        }
    }
}

/// The forward product's operands over the flattened dims: out (M, N), inp (M, K), W (N, K).
fn forward_operands<'a>(out: View<'a>, inp: View<'a>, w: View<'a>, d: Dims) -> (Dims, [Operand<'a>; 3]) {
    let (d, zs) = flatten(d);
    (d, [dense(out, Axis::M, Axis::N, d, zs), dense(inp, Axis::M, Axis::K, d, zs), dense(w, Axis::N, Axis::K, d, zs)])
}

/// A linear layer's batch folds into M: with one weight, batch entries are just more rows.
fn flatten(d: Dims) -> (Dims, u64) {
    if d.shared_weight && d.batch > 1 {
        (Dims { batch: 1, m: d.batch * d.m, ..d }, 0)
    } else {
        (d, 1)
    }
}

/// A whole (rows, cols) matrix of the product over flattened dims `d`, rows `cols` long: an
/// activation (M rows) with `zs` batch strides (0 when flattened), or the weight (N rows),
/// shared by the batch or one per entry.
fn dense(view: View, rows: Axis, cols: Axis, d: Dims, zs: u64) -> Operand {
    let len = |ax: Axis| match ax {
        Axis::M => d.m as u64,
        Axis::N => d.n as u64,
        Axis::K => d.k as u64,
    };
    let batch = match rows {
        Axis::N if d.shared_weight => 0,
        Axis::N => len(Axis::N) * len(cols),
        _ => zs * len(rows) * len(cols),
    };
    operand(view, rows, cols, len(cols), batch)
}

fn operand(view: View, rows: Axis, cols: Axis, ld: u64, batch: u64) -> Operand {
    Operand { view, rows, cols, ld, batch }
}

fn extent(ax: Axis, c: &Chunk, d: Dims) -> (u64, u64) {
    match ax {
        Axis::M => c.m,
        Axis::N => c.n,
        Axis::K => (0, d.k as u64),
    }
}

/// Element range lo..hi of `op` that chunk `c` touches.
fn elements(op: &Operand, c: &Chunk, d: Dims) -> (u64, u64) {
    let (r0, r1) = if op.rows == Axis::K { (0, 1) } else { extent(op.rows, c, d) };
    let (c0, c1) = extent(op.cols, c, d);
    let lo = op.view.offset + c.z.0 * op.batch + r0 * op.ld + c0;
    let hi = op.view.offset + (c.z.1 - 1) * op.batch + (r1 - 1) * op.ld + c1;
    (lo, hi)
}

fn span(op: &Operand, c: &Chunk, d: Dims) -> u64 {
    let (lo, hi) = elements(op, c, d);
    hi - lo
}

/// How many rows of `op` fit one window when its columns span `width` (along N) or K.
fn rows_that_fit(op: &Operand, d: Dims, n_width: u64, limit: u64) -> Result<u64, GpuError> {
    let width = if op.cols == Axis::N { n_width } else { d.k as u64 };
    if width > limit {
        return Err(GpuError::BindingTooLarge { requested: width * 4, max: limit * 4 });
    }
    Ok(((limit - width) / op.ld.max(1) + 1).max(1))
}

fn check_bounds(op: &Operand, d: Dims) -> Result<(), GpuError> {
    let (m, n, z) = (d.m as u64, d.n as u64, d.batch as u64);
    let whole = Chunk { z: (0, z.max(1)), m: (0, m.max(1)), n: (0, n.max(1)) };
    let (_, hi) = elements(op, &whole, d);
    let capacity = op.view.buf.size() / op.view.dtype.bytes();
    if hi > capacity {
        return Err(GpuError::OutOfBounds { what: "matmul operand", elements: hi, capacity });
    }
    Ok(())
}
