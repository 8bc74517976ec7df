//! Running a built GPT-2: uploading micro-batches into the token slots, recording forward
//! and backward (whole, or cut at gradient buckets), reading losses, logits and parameters.

use super::{Bucket, Gpt, GptConfig, Precision, SUBMIT_DISPATCHES, SUBMIT_MICRO_BATCHES};
use crate::gpu::{Gpu, GpuError, Recorder};
use crate::kernels::elementwise::{self, Span};
use crate::kernels::Dtype;
use crate::rng::Rng;

impl Gpt {
    /// Uploads micro-batch `k`'s inputs and targets (B·T tokens each) into slot `k` of the
    /// next submit (`k < micro_per_submit()`). Staged on the queue: it lands before the next
    /// submit, after the ones before it.
    pub fn upload_batch(&self, gpu: &Gpu, k: usize, inputs: &[u32], targets: &[u32]) {
        let n = self.b * self.t;
        assert!(k < self.n_slots, "slot {k} of {}", self.n_slots);
        assert!(inputs.len() == n && targets.len() == n, "a batch fills every position");
        gpu.write(&self.slots, (2 * n * k) as u64, inputs);
        gpu.write(&self.slots, (2 * n * k + n) as u64, targets);
    }

    /// Sets the classifier's gradient factor for a step of masked data that counts `counted`
    /// of its `positions` targets: the mean loss is then over the counted ones (PyTorch's
    /// cross-entropy with ignore_index), whatever the micro-batches and ranks hold.
    pub fn set_counted(&self, gpu: &Gpu, counted: u64, positions: u64) {
        gpu.write(&self.micro.norm, 0, &[positions as f32 / counted.max(1) as f32]);
    }

    /// Uploads the next submit's micro-batches at once: `words` holds, for slots 0, 1, …,
    /// each slot's B·T inputs then its B·T targets. One staging copy per submit.
    pub fn upload_slots(&self, gpu: &Gpu, words: &[u32]) {
        let n = self.b * self.t;
        assert!(words.len().is_multiple_of(2 * n) && words.len() / (2 * n) <= self.n_slots, "whole slots that fit");
        gpu.write(&self.slots, 0, words);
    }

    /// The least memory the activations and gradient scratch can take, in bytes: every tensor
    /// the forward keeps for the backward, the logits, and the backward's working buffers.
    pub fn activation_bytes(&self) -> u64 {
        Self::activation_bytes_for(&self.config, self.b, self.t, self.n_slots, self.precision)
    }

    /// `activation_bytes` of a model not built yet, with `slots` micro-batches' tokens per
    /// submit (at most `SUBMIT_MICRO_BATCHES`), in `precision`.
    pub fn activation_bytes_for(config: &GptConfig, b: usize, t: usize, slots: usize, precision: Precision) -> u64 {
        let Ok(s) = super::block::Shape::new(config, b, t) else { return 0 };
        let (b, t) = (b as u64, t as u64);
        let (c, v, nh, l) =
            (config.n_embd as u64, config.vocab_size as u64, config.n_head as u64, config.n_layer as u64);
        let (n, f, q, qkv) = (b * t, config.mlp() as u64, s.q() as u64, s.attn.qkv.len);
        // SwiGLU keeps up (N, F), and its gradient needs a buffer of that size.
        let up = if config.arch == super::Arch::Llama { n * f } else { 0 };
        let act = precision.act().bytes();
        // ln1, attproj, residual2, ln2, fcproj, residual3; atty; qkv; fch, (up,) fch_gelu; 2 stats; lse
        let layer = act * (6 * n * c + n * q + qkv + 2 * n * f + up) + 4 * (4 * n + b * nh * t);
        // encoded, lnf, logits; lnf stats; the batch's tokens, positions, targets, losses; the
        // slots' inputs and targets
        let global = act * (2 * n * c + n * v) + 4 * (2 * n + 4 * n + slots.min(SUBMIT_MICRO_BATCHES) as u64 * 2 * n);
        // dresidual, dbuf, dqkv, dfch, (dup,) dfch_gelu; the attention's D
        let scratch = act * (n * c + n * c.max(q) + qkv + 2 * n * f + up) + 4 * b * nh * t;
        l * layer + global + scratch
    }

    /// Micro-batches per optimizer step (K).
    pub fn accum(&self) -> usize {
        self.accum
    }

    /// Micro-batches one submit holds: K, or fewer where K micro-batches would exceed
    /// `SUBMIT_MICRO_BATCHES` or about `SUBMIT_DISPATCHES` dispatches.
    pub fn micro_per_submit(&self) -> usize {
        self.n_slots
    }

    pub(super) fn micro_per_submit_for(dispatches: usize) -> usize {
        (SUBMIT_DISPATCHES / dispatches.max(1)).clamp(1, SUBMIT_MICRO_BATCHES)
    }

    /// Records zeroing the gradients and the losses the micro-batches add up: a step's start.
    /// Under QAT it starts with the fake quantization of the weights.
    pub fn record_zero(&self, rec: &mut Recorder) {
        if let Some(q) = &self.qat {
            q.record(rec);
        }
        rec.clear(&self.arena.grads, 0, self.arena.grads.size());
        rec.clear(&self.micro.losses, 0, self.micro.losses.size());
        if let Some(d) = &self.distill {
            rec.clear(&d.parts, 0, d.parts.size());
        }
    }

    /// Records copying slot `k`'s tokens and targets into the batch buffers.
    pub(super) fn record_inputs(&self, rec: &mut Recorder, k: usize) {
        let bytes = 4 * (self.b * self.t) as u64;
        rec.copy(&self.slots, 2 * bytes * k as u64, &self.micro.tokens.tokens, 0, bytes);
        rec.copy(&self.slots, 2 * bytes * k as u64 + bytes, &self.micro.targets, 0, bytes);
        self.record_dropout_key(rec, Some(k));
    }

    /// `record_inputs` of slot 0 for a forward without dropout (evaluation, prefill).
    pub(super) fn record_eval_inputs(&self, rec: &mut Recorder) {
        self.record_inputs(rec, 0);
        self.record_dropout_key(rec, None);
    }

    /// Records slot `k`'s forward, up to its loss and dlogits.
    fn record_micro_forward(&self, rec: &mut Recorder, k: usize) {
        self.record_inputs(rec, k);
        if let Some(d) = &self.distill {
            d.record_teacher(rec, &self.micro.tokens.tokens);
        }
        let [encode, classify, _] = &self.edges;
        encode.iter().chain(&self.body).chain(classify).for_each(|cmd| cmd.record(rec));
    }

    /// Records slot `k`'s forward and backward; the gradients and losses add to the step's.
    pub fn record_micro(&self, rec: &mut Recorder, k: usize) {
        self.record_micro_forward(rec, k);
        self.back.iter().chain(&self.edges[2]).for_each(|cmd| cmd.record(rec));
    }

    /// Records a whole step's forward and backward in one submit (K ≤ `micro_per_submit`):
    /// zeroing, then every slot's micro-batch. The gradients sum over micro-batches; each loss
    /// is scaled so that they average.
    pub fn record_forward_backward(&self, rec: &mut Recorder) {
        assert!(self.accum <= self.n_slots, "{} micro-batches in one submit of {} slots", self.accum, self.n_slots);
        self.record_zero(rec);
        (0..self.accum).for_each(|k| self.record_micro(rec, k));
    }

    /// Gradient buckets for data parallelism, in the order the backward completes them: the
    /// top layers with ln_f first, the bottom ones with wte and wpe last (wte also takes the LM
    /// head's gradient, so it is complete only at the end). Each bucket is a run of whole
    /// layers, closed once it holds `cap_bytes`, and a contiguous range of the arena.
    pub fn grad_buckets(&self, cap_bytes: u64) -> Vec<Bucket> {
        let table = &self.arena.table;
        // A LoRA arena may hold no tensor of some layer: it closes no bucket.
        let layer_start = |l: usize| {
            let prefix = self.config.layer_prefix(l);
            table.tensors.iter().filter(|t| t.name.starts_with(&prefix)).map(|t| t.offset).min()
        };
        let mut out = Vec::new();
        let mut hi = table.len;
        for l in (1..self.acts.len()).rev() {
            let Some(lo) = layer_start(l) else { continue };
            if 4 * (hi - lo) >= cap_bytes {
                out.push(Bucket { lo, hi, after_layer: Some(l) });
                hi = lo;
            }
        }
        out.push(Bucket { lo: 0, hi, after_layer: None });
        out
    }

    /// The forward and backward of slots 0..`micros` (after zeroing, when `zero`: the step's
    /// first submit) in several recorders: the last micro-batch's backward is cut where each
    /// of `buckets` (from `grad_buckets`) is complete, and `at(rec, j)` gets the recorder of
    /// everything up to there, to copy bucket j out and submit. The next recorder is made only
    /// after that (a profiling recorder holds a lock until its submit).
    pub fn record_forward_backward_cut<'g>(
        &self,
        gpu: &'g Gpu,
        micros: usize,
        zero: bool,
        buckets: &[Bucket],
        mut at: impl FnMut(Recorder<'g>, usize),
    ) {
        let mut rec = Recorder::new(gpu);
        if zero {
            self.record_zero(&mut rec);
        }
        (0..micros - 1).for_each(|k| self.record_micro(&mut rec, k));
        self.record_micro_forward(&mut rec, micros - 1);
        let mut from = 0;
        for (j, bucket) in buckets.iter().enumerate() {
            let to = bucket.after_layer.map_or(self.back.len(), |l| self.back_marks[l]);
            self.back[from..to].iter().for_each(|cmd| cmd.record(&mut rec));
            from = to;
            if bucket.after_layer.is_none() {
                self.edges[2].iter().for_each(|cmd| cmd.record(&mut rec));
            }
            at(rec, j);
            if j + 1 == buckets.len() {
                return;
            }
            rec = Recorder::new(gpu);
        }
    }

    /// Each linear weight's input in the forward, with its channels: layer l's first norm
    /// output (the input projections), attention output (its output projection), second norm
    /// output (c_fc; gate and up) and activation output (the down projection).
    pub fn linear_inputs(&self) -> Vec<(String, &crate::kernels::Tensor, u32)> {
        let (c, f) = (self.config.n_embd as u32, self.config.mlp() as u32);
        let (names, q) = (self.config.names(), (self.config.n_head * self.config.head_size()) as u32);
        let mut out = Vec::new();
        for (l, a) in self.acts.iter().enumerate() {
            let name = |s: &str| format!("{}{s}.weight", self.config.layer_prefix(l));
            out.extend(names.qkv.iter().map(|s| (name(s), &a.ln1, c)));
            out.push((name(names.proj), &a.atty, q));
            out.extend(names.gate.iter().chain([&names.up]).map(|s| (name(s), &a.ln2, c)));
            out.push((name(names.down), &a.fch_gelu, f));
        }
        out
    }

    /// Records the forward and the loss (no gradient) of slot 0.
    pub fn record_eval(&self, rec: &mut Recorder) {
        if let Some(q) = &self.qat {
            q.record(rec);
        }
        self.record_eval_inputs(rec);
        self.edges[0].iter().chain(&self.body).chain(&self.eval_classify).for_each(|cmd| cmd.record(rec));
    }

    /// Records copying the step's per-position losses (summed over its micro-batches) into
    /// `readback` (made with `loss_readback`), to read after the submit without stalling.
    /// With distillation the cross-entropy and KD parts follow: 3·B·T floats.
    pub fn record_losses(&self, rec: &mut Recorder, readback: &mut crate::gpu::Readback) {
        let bytes = 4 * (self.b * self.t) as u64;
        match &self.distill {
            Some(d) => readback.record_parts(rec, &[(&*self.micro.losses, 0, bytes), (&*d.parts, 0, 2 * bytes)]),
            None => readback.record_parts(rec, &[(&*self.micro.losses, 0, bytes)]),
        }
    }

    /// A readback sized for one step's losses: B·T floats whatever K, times 3 when distilling.
    pub fn loss_readback(&self, gpu: &Gpu) -> crate::gpu::Readback {
        let parts = if self.distill.is_some() { 3 } else { 1 };
        crate::gpu::Readback::new(gpu, 4 * parts * (self.b * self.t) as u64, "losses readback")
    }

    /// The step's mean loss from its per-position sums over K micro-batches.
    pub fn mean_loss(&self, summed: &[f32]) -> f32 {
        (summed.iter().map(|&x| x as f64).sum::<f64>() / (summed.len() * self.accum).max(1) as f64) as f32
    }

    /// Reads the step's losses and returns their mean over every micro-batch (waits for the GPU).
    pub fn read_loss(&self, gpu: &Gpu) -> Result<f32, GpuError> {
        Ok(self.mean_loss(&gpu.read::<f32>(&self.micro.losses, 0, self.b * self.t)?))
    }

    /// The mean loss of the evaluation forward.
    pub fn read_eval_loss(&self, gpu: &Gpu) -> Result<f32, GpuError> {
        Ok((self.read_eval_sum(gpu)? / (self.b * self.t) as f64) as f32)
    }

    /// The per-position losses of the evaluation forward (0 where the target is IGNORE).
    pub fn read_eval_losses(&self, gpu: &Gpu) -> Result<Vec<f32>, GpuError> {
        gpu.read::<f32>(&self.micro.losses, 0, self.b * self.t)
    }

    /// The summed loss and the counted targets of the first `batches` batches of `val` (at
    /// least one, at most all), each batch's rows `mine` (a rank's share) through the
    /// evaluation forward, one submit and one awaited read per batch.
    pub async fn eval_batches(
        &self,
        gpu: &Gpu,
        val: &mut crate::data::Loader,
        batches: usize,
        mine: std::ops::Range<usize>,
    ) -> Result<(f64, u64), GpuError> {
        val.pos = 0;
        let (mut sum, mut counted) = (0.0, 0u64);
        for _ in 0..batches.clamp(1, val.batches()) {
            let (x, y) = val.next_batch();
            // Masked data: the mean over the targets that count (the global batch's).
            counted += y.iter().filter(|&&t| t != crate::data::IGNORE).count() as u64;
            self.upload_batch(gpu, 0, &x[mine.clone()], &y[mine.clone()]);
            let mut rec = Recorder::new(gpu);
            self.record_eval(&mut rec);
            rec.submit()?;
            let losses: Vec<f32> = gpu.read_async(&self.micro.losses, 0, self.b * self.t).await?;
            sum += losses.iter().map(|&x| x as f64).sum::<f64>();
        }
        Ok((sum, counted))
    }

    /// The summed loss of the evaluation forward (positions whose target is IGNORE add 0).
    pub fn read_eval_sum(&self, gpu: &Gpu) -> Result<f64, GpuError> {
        Ok(gpu.read::<f32>(&self.micro.losses, 0, self.b * self.t)?.iter().map(|&x| x as f64).sum())
    }

    /// The logits (B·T, V) of the last forward. Valid after `record_eval`; after a training
    /// step the buffer holds dlogits.
    pub fn read_logits(&self, gpu: &Gpu) -> Result<Vec<f32>, GpuError> {
        super::read_as_f32(gpu, &self.logits, 0, self.b * self.t * self.config.vocab_size)
    }

    /// Logits of one position (row `r` of B·T) after `record_eval`.
    pub fn read_logits_row(&self, gpu: &Gpu, r: usize) -> Result<Vec<f32>, GpuError> {
        let v = self.config.vocab_size;
        super::read_as_f32(gpu, &self.logits, (r * v) as u64, v)
    }

    /// Writes parameters given per tensor in table order (wgtrain layout).
    pub fn write_params(&self, gpu: &Gpu, values: &[Vec<f32>]) {
        gpu.write(&self.arena.params, 0, &self.arena.table.pack(values));
    }

    /// Writes the f16 copy of the parameters (mixed precision without an optimizer: eval and
    /// sample), converting on the GPU window by window; nothing in f32. Training has its
    /// optimizer round them instead (`Optimizer::record_half_copy`).
    pub fn write_half_params(&self, gpu: &Gpu) -> Result<(), GpuError> {
        write_half(gpu, &self.arena)
    }

    pub fn read_params(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>, GpuError> {
        Ok(self.arena.table.unpack(&gpu.read::<f32>(&self.arena.params, 0, self.arena.table.len as usize)?))
    }

    /// `read_params` awaiting the read (the page's save).
    pub async fn read_params_async(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>, GpuError> {
        Ok(self.arena.table.unpack(&gpu.read_async::<f32>(&self.arena.params, 0, self.arena.table.len as usize).await?))
    }

    pub fn read_grads(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>, GpuError> {
        Ok(self.arena.table.unpack(&gpu.read::<f32>(&self.arena.grads, 0, self.arena.table.len as usize)?))
    }

    /// GPT-2's initialization, seeded: weights and embeddings normal(0, 0.02), the residual
    /// projections (attn.c_proj, mlp.c_proj) scaled by 1/√(2·n_layer), biases 0, norm weights
    /// 1. Llama's is HF's: normal(0, 0.02) for every matrix, norm weights 1.
    pub fn init(&self, gpu: &Gpu, seed: u64) {
        let mut rng = Rng::new(seed);
        let proj_std = 0.02 / (2.0 * self.config.n_layer as f64).sqrt();
        let values: Vec<Vec<f32>> = self
            .arena
            .table
            .tensors
            .iter()
            .map(|t| {
                let n = t.numel() as usize;
                if t.shape.len() == 1 && t.name.ends_with(".weight") {
                    vec![1.0; n]
                } else if t.shape.len() == 1 {
                    vec![0.0; n]
                } else {
                    let std = if t.name.ends_with("c_proj.weight") { proj_std } else { 0.02 };
                    (0..n).map(|_| (normal(&mut rng) * std) as f32).collect()
                }
            })
            .collect();
        self.write_params(gpu, &values);
    }
}

/// Writes `arena`'s f16 copy (if it has one) from its f32 parameters, on the GPU window by
/// window.
pub(super) fn write_half(gpu: &Gpu, arena: &crate::optim::ParamArena) -> Result<(), GpuError> {
    let Some(half) = &arena.half else { return Ok(()) };
    // Windows of a multiple of 256 elements: both views start on any offset alignment.
    let step = (gpu.max_binding() / 4 / 256 * 256).max(256);
    let mut rec = Recorder::new(gpu);
    let mut ops = Vec::new();
    for lo in (0..arena.table.len).step_by(step as usize) {
        let len = step.min(arena.table.len - lo);
        let dst = Span { buf: half, offset: lo, len, dtype: Dtype::F16 };
        ops.push(elementwise::copy(gpu, dst, Span::new(&arena.params, lo, len))?);
    }
    rec.run(&ops);
    rec.submit()?;
    Ok(())
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut Rng) -> f64 {
    let u1 = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = ((rng.next_u64() >> 11) as f64) / (1u64 << 53) as f64;
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
