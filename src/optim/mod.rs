//! Fused optimizers over the parameter arena: AdamW, LAMB and SGD with momentum, with global
//! gradient-norm clipping on the GPU and learning-rate schedules. Formulas: shaders/optim.wgsl.
//!
//! Layer: above kernels and tune; uses gpu and kernels. Models and the training loop use it.

pub mod arena;
pub mod schedule;
pub mod state;
mod unfused;

use serde::{Deserialize, Serialize};

pub use arena::{ChunkEntry, ParamArena, ParamTable, TensorInfo, CHUNK, TENSOR_ALIGN};
pub use schedule::{Schedule, ScheduleKind};
pub use state::StateError;
pub use unfused::adamw_unfused;

use crate::gpu::{Category, Dispatch, Gpu, GpuBuffer, GpuError, Kernel, Readback, Recorder, Shader, Slot};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// torch.optim.AdamW (Loshchilov & Hutter 2019)
    Adamw,
    /// LAMB (You et al. 2019), as optax.lamb
    Lamb,
    /// torch.optim.SGD with momentum, dampening 0, not Nesterov
    Sgd,
}

impl OptimizerKind {
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Adamw => "adamw",
            OptimizerKind::Lamb => "lamb",
            OptimizerKind::Sgd => "sgd",
        }
    }
}

/// Hyperparameters other than the learning rate, which comes from a Schedule each step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub kind: OptimizerKind,
    /// Adam's β1 and β2 (AdamW, LAMB).
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// λ, on tensors of 2 or more dimensions only. AdamW and LAMB decouple it; SGD adds λθ to g.
    pub weight_decay: f32,
    /// μ of SGD; 0 is plain SGD.
    pub momentum: f32,
    /// Max global gradient norm; 0 turns clipping off.
    pub grad_clip: f32,
}

impl OptimConfig {
    /// `wgtrain train`'s defaults (its flags' and the page's): AdamW with β (0.9, 0.99), ε 1e-8,
    /// λ 0.1, gradient clipping at 1 (nanoGPT's settings for small models); momentum 0.9 if
    /// --optimizer sgd.
    pub const TRAIN: Self = Self {
        kind: OptimizerKind::Adamw,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.1,
        momentum: 0.9,
        grad_clip: 1.0,
    };

    /// torch.optim.AdamW's defaults: β (0.9, 0.999), ε 1e-8, λ 0.01.
    pub fn adamw() -> Self {
        Self {
            kind: OptimizerKind::Adamw,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            momentum: 0.0,
            grad_clip: 0.0,
        }
    }

    /// optax.lamb's defaults: β (0.9, 0.999), ε 1e-6, λ 0.
    pub fn lamb() -> Self {
        Self { kind: OptimizerKind::Lamb, eps: 1e-6, weight_decay: 0.0, ..Self::adamw() }
    }

    /// SGD with momentum 0.9 and no weight decay.
    pub fn sgd() -> Self {
        Self { kind: OptimizerKind::Sgd, momentum: 0.9, weight_decay: 0.0, ..Self::adamw() }
    }
}

/// Mirrors `struct Params` in shaders/optim.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct OptimParams {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub bc1: f32,
    pub bc2: f32,
    pub bc2_sqrt: f32,
    pub momentum: f32,
    pub clip: f32,
    pub first_step: u32,
    pub chunk_base: u32,
    pub n_chunks: u32,
    pub total_chunks: u32,
    pub n_tensors: u32,
    pub write_half: u32,
    pub stochastic: u32,
    pub seed: u32,
    pub half_off: u32,
    pub dynamic: u32,
    pub growth_interval: u32,
    pub masked: u32,
    pub mask_off: u32,
    pub has_v: u32,
}

/// How the loss gradient is scaled before the backward, so that small f16 activation
/// gradients don't flush to zero (torch.amp.GradScaler). The optimizer divides it back out.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossScale {
    /// A constant scale (1: none).
    Fixed(f32),
    /// Starts at 65536, halves on every overflow (a skipped step), doubles after 2000 clean
    /// steps in a row: GradScaler's defaults.
    Dynamic,
}

impl LossScale {
    pub const INITIAL: f32 = 65536.0;
    pub const GROWTH_INTERVAL: u32 = 2000;

    /// `dynamic` or a positive number.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "dynamic" {
            return Ok(LossScale::Dynamic);
        }
        match s.parse::<f32>() {
            Ok(x) if x.is_finite() && x > 0.0 => Ok(LossScale::Fixed(x)),
            _ => Err(format!("--loss-scale {s:?}: give dynamic or a positive number such as 1024")),
        }
    }

    /// The scale of the first step.
    pub fn initial(self) -> f32 {
        match self {
            LossScale::Fixed(x) => x,
            LossScale::Dynamic => Self::INITIAL,
        }
    }
}

impl Default for LossScale {
    fn default() -> Self {
        LossScale::Fixed(1.0)
    }
}

/// What a step left in the optimizer's scalars, read back for its log line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepScalars {
    /// The global norm of the (unscaled) gradients before clipping; not finite when skipped.
    pub norm: f32,
    pub skipped: bool,
    /// The loss scale after the step (halved when it overflowed).
    pub loss_scale: f32,
    /// Clean steps in a row since the scale last changed.
    pub clean_steps: u32,
}

/// param, m, v, grad, chunks, tensors, scalars, partials, uniform, half, prune mask.
const SLOTS: &[Slot] = &[
    Slot::Storage,
    Slot::Storage,
    Slot::Storage,
    Slot::Storage,
    Slot::ReadOnly,
    Slot::ReadOnly,
    Slot::Storage,
    Slot::Storage,
    Slot::Uniform,
    Slot::Storage,
    Slot::ReadOnly,
];
/// Where the LAMB trust ratios start in the scalars (LAMB_RATIOS in the shader).
const LAMB_RATIOS: usize = 8;
/// Floats of the scalars a step reads back: norm, clip factor, skip, loss scale, clean steps.
const STEP_SCALARS: usize = 5;

fn kernel(entry: &'static str) -> Kernel {
    Kernel::new(Shader::Optim, entry, SLOTS)
}

/// A range of chunks that one dispatch updates: the arena elements lo..hi bound as windows.
struct Window {
    lo: u64,
    hi: u64,
    chunk_base: u32,
    n_chunks: u32,
    chunks: GpuBuffer,
    uniform: GpuBuffer,
    /// f16 element of the window's first parameter in its half binding.
    half_off: u32,
}

/// Optimizer state on the GPU and the dispatches of one step, built once.
pub struct Optimizer {
    pub cfg: OptimConfig,
    /// The tensors this optimizer updates, offsets relative to `base`: the whole arena, or a
    /// ZeRO-1 shard of it.
    pub table: ParamTable,
    /// Arena element where `table` starts (0 unless a shard).
    pub base: u64,
    /// Steps taken: t of the bias corrections after the next step is t = step + 1.
    pub step: u64,
    /// The loss scale's policy (its value lives on the GPU, in the scalars).
    pub loss_scale: LossScale,
    /// Stochastic rounding of the f16 copy (when the arena has one).
    pub stochastic: bool,
    /// The arena's loss-scale cell, which each update refreshes from the scalars.
    arena_scale: GpuBuffer,
    /// exp_avg for AdamW and LAMB; the momentum buffer for SGD. (len) f32
    pub(crate) m: GpuBuffer,
    /// exp_avg_sq. (len) f32; AdamW and LAMB only
    pub(crate) v: Option<GpuBuffer>,
    /// [0] the last pre-clip gradient norm, [1] the gradient factor (clip scale / loss scale),
    /// [2] 1 when the last update was skipped (non-finite gradients), [3] the loss scale, [4]
    /// clean steps since it last changed, [8 + t] LAMB trust ratios.
    scalars: GpuBuffer,
    /// Each tensor's (first chunk, chunk count), for LAMB's norms.
    _tensors: GpuBuffer,
    /// Per-chunk sums of squares: gradients, and LAMB's θ and u.
    _partials: GpuBuffer,
    /// The arena's parameters and gradients, which the dispatches bind.
    _arena: [GpuBuffer; 2],
    windows: Vec<Window>,
    /// Clipping: per-window partial sums and the finish.
    norm_ops: Vec<Dispatch>,
    /// The clip factor, the skip flag and the next loss scale, from the norm.
    apply_op: Dispatch,
    /// The update itself.
    update_ops: Vec<Dispatch>,
    /// The f16 copy of every parameter, without an update.
    half_ops: Vec<Dispatch>,
    /// The pre-clip norm of steps recorded with `want_norm`.
    readback: Readback,
    /// The arena has a prune mask, which every update applies.
    masked: bool,
}

impl Optimizer {
    /// Allocates zeroed state for the arena and prepares every dispatch. `binding_limit` caps
    /// the bytes one window binds (None: the adapter's max storage binding).
    pub fn new(gpu: &Gpu, arena: &ParamArena, cfg: OptimConfig, binding_limit: Option<u64>) -> Result<Self, GpuError> {
        Self::new_shard(gpu, arena, cfg, binding_limit, 0..arena.table.len)
    }

    /// An optimizer for arena elements `range` alone (ZeRO-1: each rank updates its shard):
    /// moments are allocated for those elements only (`ParamTable::pieces`), and the
    /// dispatches bind the parameters and gradients from the range's start, a multiple of
    /// TENSOR_ALIGN. LAMB's trust ratios need whole tensors: give it ranges of whole tensors.
    pub fn new_shard(
        gpu: &Gpu,
        arena: &ParamArena,
        cfg: OptimConfig,
        binding_limit: Option<u64>,
        range: std::ops::Range<u64>,
    ) -> Result<Self, GpuError> {
        let table = arena.table.pieces(range.start, range.end);
        let base = if table.tensors.is_empty() { 0 } else { range.start };
        if table.len > u32::MAX as u64 {
            return Err(GpuError::OutOfBounds {
                what: "parameter arena",
                elements: table.len,
                capacity: u32::MAX as u64,
            });
        }
        let bytes = 4 * table.len;
        let zeroed = |cat| -> Result<GpuBuffer, GpuError> {
            let b = gpu.pool.storage(cat, bytes)?;
            let mut rec = Recorder::new(gpu);
            rec.clear(&b, 0, b.size());
            rec.submit()?;
            Ok(b)
        };
        let m = zeroed(Category::OptimizerState)?;
        let v = if cfg.kind == OptimizerKind::Sgd { None } else { Some(zeroed(Category::OptimizerState)?) };

        let chunks = table.chunks();
        let n_tensors = table.tensors.len();
        let mut ranges = vec![[0u32; 2]; n_tensors.max(1)];
        for (i, c) in chunks.iter().enumerate() {
            let r = &mut ranges[c.tensor as usize];
            if r[1] == 0 {
                r[0] = i as u32;
            }
            r[1] += 1;
        }
        let tensors = gpu.pool.storage_from(&gpu.queue, Category::OptimizerState, &ranges)?;
        let mut scalar_init = vec![1.0f32; LAMB_RATIOS + n_tensors];
        scalar_init[..LAMB_RATIOS].copy_from_slice(&[0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        let scalars = gpu.pool.storage_from(&gpu.queue, Category::OptimizerState, &scalar_init)?;
        let partials = gpu.pool.storage(Category::Scratch, 4 * (3 * chunks.len() as u64).max(1))?;
        let limit = binding_limit.unwrap_or(gpu.max_binding()).min(gpu.max_binding());
        let windows = plan_windows(gpu, &chunks, limit, base)?;

        let max_groups = gpu.limits.max_compute_workgroups_per_dimension;
        let bind = |w: &Window, entry: &'static str, groups: [u32; 3]| -> Result<Dispatch, GpuError> {
            let pipeline = gpu.pipeline(kernel(entry), &[])?;
            let range = |b| window(b, w.lo, w.hi);
            let shifted = |b| window(b, base + w.lo, base + w.hi);
            let v_binding = match &v {
                Some(v) => range(v),
                None => gpu.dummy_rw.as_entire_buffer_binding(),
            };
            let bindings = [
                shifted(&arena.params),
                range(&m),
                v_binding,
                shifted(&arena.grads),
                w.chunks.as_entire_buffer_binding(),
                tensors.as_entire_buffer_binding(),
                scalars.as_entire_buffer_binding(),
                partials.as_entire_buffer_binding(),
                w.uniform.as_entire_buffer_binding(),
                match &arena.half {
                    Some(h) => half_window(gpu, h, base + w.lo, base + w.hi),
                    None => gpu.dummy_rw.as_entire_buffer_binding(),
                },
                match &arena.mask {
                    Some(m) => m.as_entire_buffer_binding(),
                    None => gpu.dummy.as_entire_buffer_binding(),
                },
            ];
            let bind_group = gpu.bind_group(&pipeline, &bindings);
            Ok(Dispatch { pipeline, bind_group, groups, label: entry, _uniform: None })
        };
        let per_window = |entry: &'static str| -> Result<Vec<Dispatch>, GpuError> {
            windows.iter().map(|w| bind(w, entry, grid(w.n_chunks, max_groups))).collect()
        };
        let w0 = &windows[0];
        let mut norm_ops = per_window("grad_norm_partials")?;
        norm_ops.push(bind(w0, "grad_norm_finish", [1, 1, 1])?);
        let apply_op = bind(w0, "grad_norm_apply", [1, 1, 1])?;
        let half_ops = if arena.half.is_some() { per_window("half_copy")? } else { Vec::new() };
        let update_ops = match cfg.kind {
            OptimizerKind::Adamw => per_window("adamw_update")?,
            OptimizerKind::Sgd => per_window("sgd_update")?,
            OptimizerKind::Lamb => {
                let mut ops = per_window("lamb_moments")?;
                ops.push(bind(w0, "lamb_norms", grid(n_tensors as u32, max_groups))?);
                ops.extend(per_window("lamb_apply")?);
                ops
            }
        };
        let readback = Readback::new(gpu, 4 * STEP_SCALARS as u64, "grad norm readback");
        Ok(Self {
            cfg,
            table,
            base,
            step: 0,
            loss_scale: LossScale::default(),
            stochastic: false,
            arena_scale: arena.loss_scale.clone(),
            m,
            v,
            scalars,
            _tensors: tensors,
            _partials: partials,
            _arena: [arena.params.clone(), arena.grads.clone()],
            windows,
            norm_ops,
            apply_op,
            update_ops,
            half_ops,
            readback,
            masked: arena.mask.is_some(),
        })
    }

    /// Dispatches of one update: windows × kernels (plus LAMB's norms). For benchmarks.
    pub fn update_dispatches(&self) -> &[Dispatch] {
        &self.update_ops
    }

    /// Number of windows the arena is split into (1 unless it exceeds the binding limit).
    pub fn windows(&self) -> usize {
        self.windows.len()
    }

    /// Writes step t = step + 1's uniforms. The queue applies them before the next submit, so
    /// a submit must hold at most one optimizer step.
    pub fn prepare(&mut self, gpu: &Gpu, lr: f32) {
        self.step += 1;
        self.write_uniforms(gpu, lr);
    }

    /// The uniforms of step t = step with learning rate `lr`.
    fn write_uniforms(&self, gpu: &Gpu, lr: f32) {
        let c = &self.cfg;
        let t = self.step.max(1) as i32;
        let bc1 = 1.0 - (c.beta1 as f64).powi(t);
        let bc2 = 1.0 - (c.beta2 as f64).powi(t);
        let total_chunks: u32 = self.windows.iter().map(|w| w.n_chunks).sum();
        for w in &self.windows {
            let p = OptimParams {
                lr,
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                weight_decay: c.weight_decay,
                bc1: bc1 as f32,
                bc2: bc2 as f32,
                bc2_sqrt: bc2.sqrt() as f32,
                momentum: c.momentum,
                clip: c.grad_clip,
                first_step: (self.step == 1) as u32,
                chunk_base: w.chunk_base,
                n_chunks: w.n_chunks,
                total_chunks,
                n_tensors: self.table.tensors.len() as u32,
                write_half: !self.half_ops.is_empty() as u32,
                stochastic: self.stochastic as u32,
                seed: (self.step as u32).wrapping_mul(0x9e37_79b9) ^ 0x85eb_ca6b,
                half_off: w.half_off,
                dynamic: (self.loss_scale == LossScale::Dynamic) as u32,
                growth_interval: LossScale::GROWTH_INTERVAL,
                masked: self.masked as u32,
                mask_off: (self.base + w.lo) as u32,
                has_v: self.v.is_some() as u32,
            };
            gpu.queue.write_buffer(&w.uniform, 0, bytemuck::bytes_of(&p));
        }
    }

    /// Records one step: the global gradient norm, then the update, which the GPU skips when the
    /// norm is not finite. With `want_norm`, the pre-clip norm is copied out for `grad_norm` to
    /// read after the submit, without stalling the next step (a non-finite norm there means the
    /// step was skipped).
    pub fn record_step(&mut self, gpu: &Gpu, rec: &mut Recorder, lr: f32, want_norm: bool) {
        // The norm runs every step: it drives clipping and the guard that skips the update when
        // the gradients are not finite.
        self.record_norm(gpu, rec, lr);
        self.record_update(rec, want_norm);
    }

    /// The first half of `record_step`: this step's uniforms, and the gradient norm of this
    /// optimizer's tensors into its scalars ([0] norm, [1] clip scale, [2] skip flag).
    pub fn record_norm(&mut self, gpu: &Gpu, rec: &mut Recorder, lr: f32) {
        self.prepare(gpu, lr);
        rec.run(&self.norm_ops);
    }

    /// The second half of `record_step`: from the norm, the clip factor, the skip flag and the
    /// next loss scale; the update, reading them; then the new scale into the arena's cell
    /// for the next backward.
    pub fn record_update(&mut self, rec: &mut Recorder, want_norm: bool) {
        rec.dispatch(&self.apply_op);
        rec.run(&self.update_ops);
        rec.copy(&self.scalars, 12, &self.arena_scale, 0, 4);
        if want_norm {
            self.readback.record(rec, &self.scalars, 0);
        }
    }

    /// Records the f16 copy of every parameter (after they were loaded or written from the
    /// host); nothing without one.
    pub fn record_half_copy(&self, gpu: &Gpu, rec: &mut Recorder) {
        if self.half_ops.is_empty() {
            return;
        }
        self.write_uniforms(gpu, 0.0);
        rec.run(&self.half_ops);
    }

    /// The scalars buffer: [0] the norm, [1] the clip factor, [2] the skip flag, [3] the loss
    /// scale, [4] its clean steps.
    pub fn scalars(&self) -> &wgpu::Buffer {
        &self.scalars
    }

    /// Replaces the norm of the scaled gradients that `record_norm` computed with `norm` (the
    /// global one of a ZeRO-1 run, whose shards each see a part). Lands before the next
    /// submit, whose update derives the clip factor, the skip and the next scale from it.
    pub fn set_norm(&self, gpu: &Gpu, norm: f32) {
        gpu.queue.write_buffer(&self.scalars, 0, bytemuck::bytes_of(&norm));
    }

    /// Sets the loss scale and its count of clean steps (a new run, or a resumed one), here
    /// and in the arena's cell. Lands before the next submit.
    pub fn set_loss_scale(&self, gpu: &Gpu, scale: f32, clean_steps: u32) {
        gpu.queue.write_buffer(&self.scalars, 12, bytemuck::cast_slice(&[scale, clean_steps as f32]));
        gpu.queue.write_buffer(&self.arena_scale, 0, bytemuck::bytes_of(&scale));
    }

    /// The loss scale and its clean steps as the GPU holds them now (waits for the queue).
    pub fn read_loss_scale(&self, gpu: &Gpu) -> Result<(f32, u32), GpuError> {
        let v: Vec<f32> = gpu.read(&self.scalars, 3, 2)?;
        Ok((v[0], v[1] as u32))
    }

    /// Bytes of optimizer state (moments) this optimizer holds on the GPU.
    pub fn state_bytes(&self) -> u64 {
        4 * self.table.len * (1 + u64::from(self.v.is_some()))
    }

    /// Call after submitting a step recorded with `want_norm`: starts mapping its norm.
    pub fn submitted(&mut self) {
        self.readback.submitted();
    }

    /// `submitted`, with the submit's index, so reading the norm waits for that submit alone.
    pub fn submitted_at(&mut self, index: wgpu::SubmissionIndex) {
        self.readback.submitted_at(Some(index));
    }

    /// The pre-clip global gradient norm of the last step recorded with `want_norm` (None if
    /// there was none, or it was read already). Waits for that step only if the GPU has not
    /// finished it yet.
    pub fn grad_norm(&mut self, gpu: &Gpu) -> Result<Option<f32>, GpuError> {
        Ok(self.step_scalars(gpu)?.map(|s| s.norm))
    }

    /// `grad_norm` with the skip flag and the loss scale of that step.
    pub fn step_scalars(&mut self, gpu: &Gpu) -> Result<Option<StepScalars>, GpuError> {
        pollster::block_on(self.step_scalars_async(gpu))
    }

    /// `step_scalars` awaiting the read (the browser's way).
    pub async fn step_scalars_async(&mut self, gpu: &Gpu) -> Result<Option<StepScalars>, GpuError> {
        Ok(self.readback.take_async::<f32>(gpu).await?.map(|v| StepScalars {
            norm: v[0],
            skipped: v[2] != 0.0,
            loss_scale: v[3],
            clean_steps: v[4] as u32,
        }))
    }
}

/// Arena elements lo..hi of the f16 copy as a binding that starts on the adapter's offset
/// alignment (its first element is then `Window::half_off`, see `plan_windows`).
fn half_window<'a>(gpu: &Gpu, buf: &'a wgpu::Buffer, lo: u64, hi: u64) -> wgpu::BufferBinding<'a> {
    let align = gpu.limits.min_storage_buffer_offset_alignment as u64;
    let start = 2 * lo / align * align;
    let end = (2 * hi).next_multiple_of(4).min(buf.size());
    wgpu::BufferBinding { buffer: buf, offset: start, size: wgpu::BufferSize::new(end - start) }
}

/// Elements lo..hi of `buf` as a binding.
fn window(buf: &wgpu::Buffer, lo: u64, hi: u64) -> wgpu::BufferBinding<'_> {
    wgpu::BufferBinding { buffer: buf, offset: 4 * lo, size: wgpu::BufferSize::new(4 * (hi - lo)) }
}

/// x and y of a grid of `n` workgroups: x up to the adapter's limit, the rest along y.
fn grid(n: u32, max: u32) -> [u32; 3] {
    let x = n.clamp(1, max);
    [x, n.div_ceil(x).max(1), 1]
}

/// Groups consecutive chunks into windows no larger than `limit` bytes, and uploads each
/// window's chunk table with starts relative to the window.
fn plan_windows(gpu: &Gpu, chunks: &[ChunkEntry], limit: u64, base: u64) -> Result<Vec<Window>, GpuError> {
    let align = gpu.limits.min_storage_buffer_offset_alignment as u64;
    let half_off = |lo: u64| ((base + lo) - 2 * (base + lo) / align * align / 2) as u32;
    let end = |c: &ChunkEntry| c.start as u64 + (c.len as u64).next_multiple_of(4);
    let mut windows = Vec::new();
    let mut i = 0;
    while i < chunks.len() {
        let lo = chunks[i].start as u64;
        let mut j = i;
        while j < chunks.len() && 4 * (end(&chunks[j]) - lo) <= limit {
            j += 1;
        }
        if j == i {
            return Err(GpuError::BindingTooLarge { requested: 4 * (end(&chunks[i]) - lo), max: limit });
        }
        let hi = end(&chunks[j - 1]);
        let local: Vec<ChunkEntry> =
            chunks[i..j].iter().map(|c| ChunkEntry { start: (c.start as u64 - lo) as u32, ..*c }).collect();
        windows.push(Window {
            lo,
            hi,
            chunk_base: i as u32,
            n_chunks: (j - i) as u32,
            chunks: gpu.pool.storage_from(&gpu.queue, Category::OptimizerState, &local)?,
            uniform: gpu.pool.uniform(&gpu.queue, &OptimParams::default())?,
            half_off: half_off(lo),
        });
        i = j;
    }
    if windows.is_empty() {
        // No trainable element: one empty window keeps the dispatch lists well formed.
        windows.push(Window {
            lo: 0,
            hi: TENSOR_ALIGN,
            chunk_base: 0,
            n_chunks: 0,
            chunks: gpu.pool.storage(Category::OptimizerState, 16)?,
            uniform: gpu.pool.uniform(&gpu.queue, &OptimParams::default())?,
            half_off: half_off(0),
        });
    }
    Ok(windows)
}
