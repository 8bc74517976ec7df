//! GPT-2: parameters in the optimizer's arena, activations in buffers allocated once for
//! (B, T), forward as a flat list of layer calls and backward as its mirror, all recorded into
//! one submit per optimizer step.
//!
//! Gradient accumulation costs no memory and no setup per micro-batch: the K micro-batches of
//! a step run one after another through the same buffers and dispatches. Their token ids and
//! targets wait in `slots` (8 bytes a token), each copied into the batch buffers on the GPU
//! before its forward; their losses sum on the GPU. A submit holds at most
//! `SUBMIT_MICRO_BATCHES` micro-batches and about `SUBMIT_DISPATCHES` dispatches: past that a
//! step is split into several submits (`micro_per_submit`).

pub mod checkpoint;
pub mod config;
pub mod decode;

pub use config::{ConfigError, GptConfig};

use crate::gpu::{Category, Dispatch, Gpu, GpuBuffer, GpuError, Recorder};
use crate::kernels::elementwise::{self, Span};
use crate::kernels::encoder::{self, TokenBuffers};
use crate::kernels::matmul::{Dims, Matmul};
use crate::kernels::{attention, classifier, gelu, layernorm, View};
use crate::optim::{ParamArena, ParamTable};
use crate::reference::Rng;

/// One command of a step: a dispatch, or zeroing a buffer that a backward kernel adds into.
pub enum Cmd {
    Run(Dispatch),
    Zero(GpuBuffer),
}

impl Cmd {
    fn record(&self, rec: &mut Recorder) {
        match self {
            Cmd::Run(d) => rec.dispatch(d),
            Cmd::Zero(b) => rec.clear(b, 0, b.size()),
        }
    }
}

/// A range of the gradient arena (elements lo..hi) that is complete after layer
/// `after_layer`'s backward (None: at the end of the backward).
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    pub lo: u64,
    pub hi: u64,
    pub after_layer: Option<usize>,
}

/// Activations of one layer, each (N, ·) with N = B·T.
struct LayerActs {
    ln1: GpuBuffer,       // (N, C)
    ln1_stats: GpuBuffer, // (N, 2)
    qkv: GpuBuffer,       // (N, 3C)
    atty: GpuBuffer,      // (N, C)
    lse: GpuBuffer,       // (B, NH, T)
    attproj: GpuBuffer,   // (N, C)
    residual2: GpuBuffer, // (N, C)
    ln2: GpuBuffer,       // (N, C)
    ln2_stats: GpuBuffer, // (N, 2)
    fch: GpuBuffer,       // (N, 4C)
    fch_gelu: GpuBuffer,  // (N, 4C)
    fcproj: GpuBuffer,    // (N, C)
    residual3: GpuBuffer, // (N, C)
}

/// Buffers of the micro-batch being run: its tokens (and their order by token, for the wte
/// gradient), targets, and the losses a step's micro-batches add up.
struct Micro {
    tokens: TokenBuffers,
    targets: GpuBuffer, // (N) u32
    losses: GpuBuffer,  // (N), summed over the step's micro-batches
}

/// Most micro-batches one submit holds.
pub const SUBMIT_MICRO_BATCHES: usize = 64;
/// About the most dispatches one submit holds, where a micro-batch has many (deep models).
pub const SUBMIT_DISPATCHES: usize = 512;

/// A GPT-2 ready to run forward and backward at batch B and sequence length T.
pub struct Gpt {
    pub config: GptConfig,
    pub arena: ParamArena,
    pub b: usize,
    pub t: usize,
    acts: Vec<LayerActs>,
    encoded: GpuBuffer,   // (N, C)
    lnf: GpuBuffer,       // (N, C)
    lnf_stats: GpuBuffer, // (N, 2)
    logits: GpuBuffer,    // (N, V), dlogits after the classifier
    micro: Micro,
    /// Micro-batches per optimizer step (K).
    accum: usize,
    /// Token ids and targets of up to `n_slots` micro-batches, (S, 2, N) u32: slot k holds
    /// inputs at 8·N·k bytes and targets 4·N bytes after.
    slots: GpuBuffer,
    n_slots: usize,
    /// The forward from the embedding's output to the logits.
    body: Vec<Cmd>,
    /// The backward from dlogits to the embedding's output gradient.
    back: Vec<Cmd>,
    /// back_marks[l]: where in `back` layer l's gradients are complete.
    back_marks: Vec<usize>,
    /// The embedding, the classifier (loss and dlogits), the embedding's backward: the
    /// dispatches that read the micro-batch's tokens or targets.
    edges: [Vec<Cmd>; 3],
    /// The classifier without the gradient, for evaluation.
    eval_classify: Vec<Cmd>,
    // Gradient scratch, kept alive for the dispatches that bind it.
    _scratch: Vec<GpuBuffer>,
}

impl Gpt {
    /// Allocates parameters (zero) and activations for batches of `b` rows of `t` tokens, with
    /// `accum` micro-batches per optimizer step, and builds every dispatch.
    pub fn new(gpu: &Gpu, config: GptConfig, b: usize, t: usize, accum: usize) -> Result<Self, GpuError> {
        config.validate().map_err(GpuError::Unsupported)?;
        if t > config.n_positions || b == 0 || t == 0 {
            return Err(GpuError::Unsupported(format!(
                "a batch of {b} × {t} tokens does not fit this model (n_positions {})",
                config.n_positions
            )));
        }
        let table = ParamTable::new(config.parameter_specs());
        let arena = ParamArena::new(gpu, table)?;
        let (c, v, nh) = (config.n_embd, config.vocab_size, config.n_head);
        let n = b * t;
        let f = |len: usize| gpu.pool.storage(Category::Activations, 4 * len as u64);
        let acts = (0..config.n_layer).map(|_| LayerActs::new(gpu, n, c, b * nh * t)).collect::<Result<Vec<_>, _>>()?;
        let micro = Micro {
            tokens: TokenBuffers::new(gpu, n)?,
            targets: gpu.pool.storage(Category::Activations, 4 * n as u64)?,
            losses: f(n)?,
        };
        let mut gpt = Self {
            encoded: f(n * c)?,
            lnf: f(n * c)?,
            lnf_stats: f(2 * n)?,
            logits: f(n * v)?,
            config,
            arena,
            b,
            t,
            acts,
            micro,
            accum: accum.max(1),
            // Sized once the dispatches are known.
            slots: f(1)?,
            n_slots: 0,
            body: Vec::new(),
            back: Vec::new(),
            back_marks: Vec::new(),
            edges: Default::default(),
            eval_classify: Vec::new(),
            _scratch: Vec::new(),
        };
        gpt.build(gpu)?;
        gpt.n_slots = gpt.accum.min(Self::micro_per_submit_for(gpt.body.len() + gpt.back.len()));
        gpt.slots = gpu.pool.storage(Category::Activations, 8 * (n * gpt.n_slots) as u64)?;
        Ok(gpt)
    }

    /// A parameter's view in an arena buffer (parameters or gradients).
    fn p<'a>(&self, buf: &'a GpuBuffer, name: &str) -> View<'a> {
        let t = self.arena.table.get(name).unwrap_or_else(|| panic!("parameter {name} is in the table"));
        View::at(buf, t.offset)
    }

    fn build(&mut self, gpu: &Gpu) -> Result<(), GpuError> {
        let (b, t) = (self.b as u32, self.t as u32);
        let (c, v, nh) = (self.config.n_embd as u32, self.config.vocab_size as u32, self.config.n_head as u32);
        let n = b * t;
        let nu = n as usize;
        let cu = c as usize;
        let f = |len: usize| gpu.pool.storage(Category::Activations, 4 * len as u64);
        let dresidual = f(nu * cu)?;
        let dbuf = f(nu * cu)?;
        let dqkv = f(3 * nu * cu)?;
        let dfch = f(4 * nu * cu)?;
        let dfch_gelu = f(4 * nu * cu)?;
        let dattn = f((b * nh * t) as usize)?;
        let mm = Matmul::new(gpu);
        let (params, grads) = (&self.arena.params, &self.arena.grads);
        let lin = |m: u32, out: u32, inp: u32| Dims::linear(m, out, inp);
        let dloss = 1.0 / (n as f32 * self.accum as f32);

        // Forward up to the logits, shared by every micro-batch but for the encoder.
        let mut body: Vec<Cmd> = Vec::new();
        for (l, a) in self.acts.iter().enumerate() {
            let w = |s: &str| self.p(params, &format!("h.{l}.{s}"));
            let residual = if l == 0 { &self.encoded } else { &self.acts[l - 1].residual3 };
            body.extend(pre_attention(gpu, &mm, &w, residual, a, n, c)?.into_iter().map(Cmd::Run));
            body.push(Cmd::Run(attention::forward(
                gpu,
                (&a.atty).into(),
                (&a.lse).into(),
                (&a.qkv).into(),
                b,
                t,
                c,
                nh,
            )?));
            body.extend(post_attention(gpu, &mm, &w, residual, a, n, c)?.into_iter().map(Cmd::Run));
        }
        let last = self.acts.last().map_or(&self.encoded, |a| &a.residual3);
        body.push(Cmd::Run(layernorm::forward(
            gpu,
            (&self.lnf).into(),
            (&self.lnf_stats).into(),
            last.into(),
            self.p(params, "ln_f.weight"),
            self.p(params, "ln_f.bias"),
            n,
            c,
        )?));
        let wte = self.p(params, "wte.weight");
        body.extend(
            mm.forward((&self.logits).into(), (&self.lnf).into(), wte, None, lin(n, v, c))?.into_iter().map(Cmd::Run),
        );

        // Backward from dlogits (written by the classifier), mirroring the forward.
        let mut back: Vec<Cmd> = vec![Cmd::Zero(dresidual.clone())];
        back.extend(
            mm.backward(
                (&dbuf).into(),
                self.p(grads, "wte.weight"),
                None,
                (&self.logits).into(),
                (&self.lnf).into(),
                wte,
                lin(n, v, c),
            )?
            .into_iter()
            .map(Cmd::Run),
        );
        back.extend(
            layernorm::backward(
                gpu,
                (&dresidual).into(),
                self.p(grads, "ln_f.weight"),
                self.p(grads, "ln_f.bias"),
                (&dbuf).into(),
                last.into(),
                (&self.lnf_stats).into(),
                self.p(params, "ln_f.weight"),
                n,
                c,
            )?
            .into_iter()
            .map(Cmd::Run),
        );
        let mut marks = vec![0; self.acts.len()];
        for (l, a) in self.acts.iter().enumerate().rev() {
            let w = |s: &str| self.p(params, &format!("h.{l}.{s}"));
            let g = |s: &str| self.p(grads, &format!("h.{l}.{s}"));
            let residual = if l == 0 { &self.encoded } else { &self.acts[l - 1].residual3 };
            // residual3 = residual2 + fcproj: both get dresidual.
            back.extend(
                mm.backward(
                    (&dfch_gelu).into(),
                    g("mlp.c_proj.weight"),
                    Some(g("mlp.c_proj.bias")),
                    (&dresidual).into(),
                    (&a.fch_gelu).into(),
                    w("mlp.c_proj.weight"),
                    lin(n, c, 4 * c),
                )?
                .into_iter()
                .map(Cmd::Run),
            );
            back.push(Cmd::Zero(dfch.clone()));
            back.push(Cmd::Run(gelu::backward(gpu, (&dfch).into(), (&a.fch).into(), (&dfch_gelu).into(), 4 * n * c)?));
            back.extend(
                mm.backward(
                    (&dbuf).into(),
                    g("mlp.c_fc.weight"),
                    Some(g("mlp.c_fc.bias")),
                    (&dfch).into(),
                    (&a.ln2).into(),
                    w("mlp.c_fc.weight"),
                    lin(n, 4 * c, c),
                )?
                .into_iter()
                .map(Cmd::Run),
            );
            back.extend(
                layernorm::backward(
                    gpu,
                    (&dresidual).into(),
                    g("ln_2.weight"),
                    g("ln_2.bias"),
                    (&dbuf).into(),
                    (&a.residual2).into(),
                    (&a.ln2_stats).into(),
                    w("ln_2.weight"),
                    n,
                    c,
                )?
                .into_iter()
                .map(Cmd::Run),
            );
            // residual2 = residual + attproj.
            back.extend(
                mm.backward(
                    (&dbuf).into(),
                    g("attn.c_proj.weight"),
                    Some(g("attn.c_proj.bias")),
                    (&dresidual).into(),
                    (&a.atty).into(),
                    w("attn.c_proj.weight"),
                    lin(n, c, c),
                )?
                .into_iter()
                .map(Cmd::Run),
            );
            back.extend(
                attention::backward(
                    gpu,
                    (&dqkv).into(),
                    (&dattn).into(),
                    (&dbuf).into(),
                    (&a.atty).into(),
                    (&a.qkv).into(),
                    (&a.lse).into(),
                    b,
                    t,
                    c,
                    nh,
                )?
                .into_iter()
                .map(Cmd::Run),
            );
            back.extend(
                mm.backward(
                    (&dbuf).into(),
                    g("attn.c_attn.weight"),
                    Some(g("attn.c_attn.bias")),
                    (&dqkv).into(),
                    (&a.ln1).into(),
                    w("attn.c_attn.weight"),
                    lin(n, 3 * c, c),
                )?
                .into_iter()
                .map(Cmd::Run),
            );
            back.extend(
                layernorm::backward(
                    gpu,
                    (&dresidual).into(),
                    g("ln_1.weight"),
                    g("ln_1.bias"),
                    (&dbuf).into(),
                    residual.into(),
                    (&a.ln1_stats).into(),
                    w("ln_1.weight"),
                    n,
                    c,
                )?
                .into_iter()
                .map(Cmd::Run),
            );
            marks[l] = back.len();
        }

        let mb = &self.micro;
        let encode = encoder::forward(
            gpu,
            (&self.encoded).into(),
            &mb.tokens.tokens,
            wte,
            self.p(params, "wpe.weight"),
            v,
            n,
            t,
            c,
            t,
        )?;
        let classify = |dloss| {
            classifier::forward_backward(gpu, (&self.logits).into(), (&mb.losses).into(), &mb.targets, n, v, v, dloss)
        };
        let encode_back = encoder::backward(
            gpu,
            self.p(grads, "wte.weight"),
            self.p(grads, "wpe.weight"),
            (&dresidual).into(),
            &mb.tokens,
            v,
            n,
            t,
            c,
        )?;
        let edges = [
            vec![Cmd::Run(encode)],
            vec![Cmd::Run(classify(Some(dloss))?)],
            encode_back.into_iter().map(Cmd::Run).collect(),
        ];
        self.eval_classify = vec![Cmd::Run(classify(None)?)];
        self.edges = edges;
        self.body = body;
        self.back = back;
        self.back_marks = marks;
        self._scratch = vec![dresidual, dbuf, dqkv, dfch, dfch_gelu, dattn];
        Ok(())
    }
}

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
        Self::activation_bytes_for(&self.config, self.b, self.t, self.n_slots)
    }

    /// `activation_bytes` of a model not built yet, with `slots` micro-batches' tokens per
    /// submit (at most `SUBMIT_MICRO_BATCHES`).
    pub fn activation_bytes_for(config: &GptConfig, b: usize, t: usize, slots: usize) -> u64 {
        let (b, t) = (b as u64, t as u64);
        let (c, v, nh, l) =
            (config.n_embd as u64, config.vocab_size as u64, config.n_head as u64, config.n_layer as u64);
        let n = b * t;
        // ln1, atty, attproj, residual2, ln2, fcproj, residual3; qkv; fch, fch_gelu; 2 stats; lse
        let layer = 7 * n * c + 3 * n * c + 8 * n * c + 4 * n + b * nh * t;
        // encoded, lnf, lnf stats, logits; the batch's tokens, positions, targets, losses; the
        // slots' inputs and targets
        let global = 2 * n * c + 2 * n + n * v + 4 * n + slots.min(SUBMIT_MICRO_BATCHES) as u64 * 2 * n;
        // dresidual, dbuf, dqkv, dfch, dfch_gelu, the attention's D
        let scratch = 2 * n * c + 3 * n * c + 8 * n * c + b * nh * t;
        4 * (l * layer + global + scratch)
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

    fn micro_per_submit_for(dispatches: usize) -> usize {
        (SUBMIT_DISPATCHES / dispatches.max(1)).clamp(1, SUBMIT_MICRO_BATCHES)
    }

    /// Records zeroing the gradients and the losses the micro-batches add up: a step's start.
    pub fn record_zero(&self, rec: &mut Recorder) {
        rec.clear(&self.arena.grads, 0, self.arena.grads.size());
        rec.clear(&self.micro.losses, 0, self.micro.losses.size());
    }

    /// Records copying slot `k`'s tokens and targets into the batch buffers.
    fn record_inputs(&self, rec: &mut Recorder, k: usize) {
        let bytes = 4 * (self.b * self.t) as u64;
        rec.copy(&self.slots, 2 * bytes * k as u64, &self.micro.tokens.tokens, 0, bytes);
        rec.copy(&self.slots, 2 * bytes * k as u64 + bytes, &self.micro.targets, 0, bytes);
    }

    /// Records slot `k`'s forward, up to its loss and dlogits.
    fn record_micro_forward(&self, rec: &mut Recorder, k: usize) {
        self.record_inputs(rec, k);
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
        let layer_start = |l: usize| {
            let prefix = format!("h.{l}.");
            table.tensors.iter().filter(|t| t.name.starts_with(&prefix)).map(|t| t.offset).min().unwrap_or(0)
        };
        let mut out = Vec::new();
        let mut hi = table.len;
        for l in (1..self.acts.len()).rev() {
            let lo = layer_start(l);
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

    /// Records the forward and the loss (no gradient) of slot 0.
    pub fn record_eval(&self, rec: &mut Recorder) {
        self.record_inputs(rec, 0);
        self.edges[0].iter().chain(&self.body).chain(&self.eval_classify).for_each(|cmd| cmd.record(rec));
    }

    /// Records copying the step's per-position losses (summed over its micro-batches) into
    /// `readback` (made with `loss_readback`), to read after the submit without stalling.
    pub fn record_losses(&self, rec: &mut Recorder, readback: &mut crate::gpu::Readback) {
        readback.record_parts(rec, &[(&*self.micro.losses, 0, 4 * (self.b * self.t) as u64)]);
    }

    /// A readback sized for one step's losses: B·T floats, whatever K.
    pub fn loss_readback(&self, gpu: &Gpu) -> crate::gpu::Readback {
        crate::gpu::Readback::new(gpu, 4 * (self.b * self.t) as u64, "losses readback")
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
        let losses = gpu.read::<f32>(&self.micro.losses, 0, self.b * self.t)?;
        Ok((losses.iter().map(|&x| x as f64).sum::<f64>() / losses.len() as f64) as f32)
    }

    /// The logits (B·T, V) of the last forward. Valid after `record_eval`; after a training
    /// step the buffer holds dlogits.
    pub fn read_logits(&self, gpu: &Gpu) -> Result<Vec<f32>, GpuError> {
        gpu.read(&self.logits, 0, self.b * self.t * self.config.vocab_size)
    }

    /// Logits of one position (row `r` of B·T) after `record_eval`.
    pub fn read_logits_row(&self, gpu: &Gpu, r: usize) -> Result<Vec<f32>, GpuError> {
        let v = self.config.vocab_size;
        gpu.read(&self.logits, (r * v) as u64, v)
    }

    /// Writes parameters given per tensor in table order (wgtrain layout).
    pub fn write_params(&self, gpu: &Gpu, values: &[Vec<f32>]) {
        gpu.write(&self.arena.params, 0, &self.arena.table.pack(values));
    }

    pub fn read_params(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>, GpuError> {
        Ok(self.arena.table.unpack(&gpu.read::<f32>(&self.arena.params, 0, self.arena.table.len as usize)?))
    }

    pub fn read_grads(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>, GpuError> {
        Ok(self.arena.table.unpack(&gpu.read::<f32>(&self.arena.grads, 0, self.arena.table.len as usize)?))
    }

    /// GPT-2's initialization, seeded: weights and embeddings normal(0, 0.02), the residual
    /// projections (attn.c_proj, mlp.c_proj) scaled by 1/√(2·n_layer), biases 0, LayerNorm
    /// weights 1.
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
                if t.name.contains("ln_") && t.name.ends_with(".weight") {
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

impl LayerActs {
    /// A layer's activations for `n` rows of `c` channels (and `lse` for the attention).
    fn new(gpu: &Gpu, n: usize, c: usize, lse: usize) -> Result<Self, GpuError> {
        let f = |len: usize| gpu.pool.storage(Category::Activations, 4 * len.max(1) as u64);
        Ok(Self {
            ln1: f(n * c)?,
            ln1_stats: f(2 * n)?,
            qkv: f(3 * n * c)?,
            atty: f(n * c)?,
            lse: f(lse)?,
            attproj: f(n * c)?,
            residual2: f(n * c)?,
            ln2: f(n * c)?,
            ln2_stats: f(2 * n)?,
            fch: f(4 * n * c)?,
            fch_gelu: f(4 * n * c)?,
            fcproj: f(n * c)?,
            residual3: f(n * c)?,
        })
    }
}

/// A block's layers before the attention: ln_1 and the fused qkv matmul.
fn pre_attention<'a>(
    gpu: &Gpu,
    mm: &Matmul,
    w: &dyn Fn(&str) -> View<'a>,
    input: &GpuBuffer,
    a: &LayerActs,
    n: u32,
    c: u32,
) -> Result<Vec<Dispatch>, GpuError> {
    let lin = Dims::linear;
    let mut d = vec![layernorm::forward(
        gpu,
        (&a.ln1).into(),
        (&a.ln1_stats).into(),
        input.into(),
        w("ln_1.weight"),
        w("ln_1.bias"),
        n,
        c,
    )?];
    d.extend(mm.forward(
        (&a.qkv).into(),
        (&a.ln1).into(),
        w("attn.c_attn.weight"),
        Some(w("attn.c_attn.bias")),
        lin(n, 3 * c, c),
    )?);
    Ok(d)
}

/// A block's layers after the attention: c_proj, the residual, ln_2, the MLP, the residual.
fn post_attention<'a>(
    gpu: &Gpu,
    mm: &Matmul,
    w: &dyn Fn(&str) -> View<'a>,
    input: &GpuBuffer,
    a: &LayerActs,
    n: u32,
    c: u32,
) -> Result<Vec<Dispatch>, GpuError> {
    let lin = Dims::linear;
    let mut d = mm.forward(
        (&a.attproj).into(),
        (&a.atty).into(),
        w("attn.c_proj.weight"),
        Some(w("attn.c_proj.bias")),
        lin(n, c, c),
    )?;
    d.push(elementwise::add(gpu, span(&a.residual2, n * c), span(input, n * c), span(&a.attproj, n * c))?);
    d.push(layernorm::forward(
        gpu,
        (&a.ln2).into(),
        (&a.ln2_stats).into(),
        (&a.residual2).into(),
        w("ln_2.weight"),
        w("ln_2.bias"),
        n,
        c,
    )?);
    d.extend(mm.forward(
        (&a.fch).into(),
        (&a.ln2).into(),
        w("mlp.c_fc.weight"),
        Some(w("mlp.c_fc.bias")),
        lin(n, 4 * c, c),
    )?);
    d.push(gelu::forward(gpu, (&a.fch_gelu).into(), (&a.fch).into(), 4 * n * c)?);
    d.extend(mm.forward(
        (&a.fcproj).into(),
        (&a.fch_gelu).into(),
        w("mlp.c_proj.weight"),
        Some(w("mlp.c_proj.bias")),
        lin(n, c, 4 * c),
    )?);
    d.push(elementwise::add(gpu, span(&a.residual3, n * c), span(&a.residual2, n * c), span(&a.fcproj, n * c))?);
    Ok(d)
}

/// The first `len` elements of a buffer.
fn span(buf: &GpuBuffer, len: u32) -> Span<'_> {
    Span { buf, offset: 0, len: len as u64 }
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut Rng) -> f64 {
    let u1 = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = ((rng.next_u64() >> 11) as f64) / (1u64 << 53) as f64;
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
