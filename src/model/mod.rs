//! GPT-2 and Llama: parameters in the optimizer's arena, activations in buffers allocated once for
//! (B, T), forward as a flat list of layer calls and backward as its mirror, all recorded into
//! one submit per optimizer step.
//!
//! Layer: above optim; uses gpu, rng, formats, data, kernels, tune (the tuned matmuls,
//! attention and LayerNorm) and optim. compress and train build on it.
//!
//! Gradient accumulation costs no memory and no setup per micro-batch: the K micro-batches of
//! a step run one after another through the same buffers and dispatches. Their token ids and
//! targets wait in `slots` (8 bytes a token), each copied into the batch buffers on the GPU
//! before its forward; their losses sum on the GPU. A submit holds at most
//! `SUBMIT_MICRO_BATCHES` micro-batches and about `SUBMIT_DISPATCHES` dispatches: past that a
//! step is split into several submits (`micro_per_submit`).

mod backward;
mod block;
pub mod checkpoint;
pub mod config;
pub mod decode;
pub mod distill;
pub mod export;
pub mod llama_gguf;
pub mod lora;
pub mod lora_path;
pub mod precision;
pub mod prune;
pub mod qat;
pub mod quantized;
mod run;
pub mod sample;

pub use config::{Arch, ConfigError, GptConfig};
pub use decode::Decoder;
pub use precision::{Precision, PrecisionChoice};

use crate::gpu::{Category, Dispatch, Gpu, GpuBuffer, GpuError, Recorder};
use crate::kernels::encoder::{self, TokenBuffers};
use crate::kernels::{classifier, Dtype, Tensor};
use crate::optim::{ParamArena, ParamTable};
use crate::tune::matmul::{Dims, Matmul};
use block::{LayerActs, Scratch, Shape, Weights};
pub use quantized::QuantWeights;

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

/// Buffers of the micro-batch being run: its tokens (and their order by token, for the wte
/// gradient), targets, and the losses a step's micro-batches add up.
struct Micro {
    tokens: TokenBuffers,
    targets: GpuBuffer, // (N) u32
    losses: GpuBuffer,  // (N), summed over the step's micro-batches
    /// [0]: the classifier's gradient factor, 1 but for masked data (`Gpt::set_counted`).
    norm: GpuBuffer,
}

/// Most micro-batches one submit holds.
pub const SUBMIT_MICRO_BATCHES: usize = 64;
/// About the most dispatches one submit holds, where a micro-batch has many (deep models).
pub const SUBMIT_DISPATCHES: usize = 512;

/// A GPT-2 or a Llama ready to run forward and backward at batch B and sequence length T.
pub struct Gpt {
    pub config: GptConfig,
    pub arena: ParamArena,
    pub b: usize,
    pub t: usize,
    pub precision: Precision,
    /// Weights kept block-quantized (a model read from GGUF), read by the forward only.
    pub quant: Option<QuantWeights>,
    /// Quantization-aware training: the fake quantization each step starts with.
    pub qat: Option<qat::Qat>,
    /// Magnitude pruning of the linear weights (set before the optimizer is built).
    pub prune: Option<prune::Pruner>,
    /// Knowledge distillation from a teacher (set after the model is built).
    pub distill: Option<distill::Distill>,
    /// LoRA: the frozen base, the arena holding the adapters.
    pub lora: Option<lora::Lora>,
    acts: Vec<LayerActs>,
    /// RoPE's cos/sin table over n_positions (Llama).
    rope: Option<GpuBuffer>,
    encoded: Tensor,   // (N, C)
    lnf: Tensor,       // (N, C)
    lnf_stats: Tensor, // (N, 2) f32
    logits: Tensor,    // (N, V), dlogits after the classifier
    micro: Micro,
    /// Micro-batches per optimizer step (K).
    accum: usize,
    /// Token ids and targets of up to `n_slots` micro-batches, (S, 2, N) u32: slot k holds
    /// inputs at 8·N·k bytes and targets 4·N bytes after.
    slots: GpuBuffer,
    n_slots: usize,
    /// The forward from the embedding's output to the logits.
    body: Vec<Cmd>,
    /// Where in `body` the blocks end (the final norm and the LM head follow).
    blocks_end: usize,
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
    _scratch: Option<Scratch>,
}

impl Gpt {
    /// Allocates parameters (zero) and activations for batches of `b` rows of `t` tokens, with
    /// `accum` micro-batches per optimizer step, and builds every dispatch, in f32.
    pub fn new(gpu: &Gpu, config: GptConfig, b: usize, t: usize, accum: usize) -> Result<Self, GpuError> {
        Self::with_precision(gpu, config, b, t, accum, Precision::F32)
    }

    /// `new` in `precision`: under F16 the arena gets an f16 copy of the parameters, and the
    /// activations and their gradients are f16.
    pub fn with_precision(
        gpu: &Gpu,
        config: GptConfig,
        b: usize,
        t: usize,
        accum: usize,
        precision: Precision,
    ) -> Result<Self, GpuError> {
        Self::training(gpu, config, (b, t, accum), precision, None)
    }

    /// `with_precision`, and with `qat` quantization-aware training in that block format
    /// (an f32 copy of the linear weights, fake-quantized, which the matmuls read).
    pub fn training(
        gpu: &Gpu,
        config: GptConfig,
        (b, t, accum): (usize, usize, usize),
        precision: Precision,
        qat: Option<crate::formats::QType>,
    ) -> Result<Self, GpuError> {
        if let Some(q) = qat {
            qat::check(&config, q).map_err(GpuError::Unsupported)?;
            if precision == Precision::F16 {
                return Err(GpuError::Unsupported("--qat trains in f32: drop --precision f16".into()));
            }
        }
        let table = ParamTable::new(config.parameter_specs());
        let mut arena = ParamArena::new(gpu, table, precision == Precision::F16)?;
        if qat.is_some() {
            arena.fake_quant = Some(gpu.pool.storage(Category::Parameters, 4 * arena.table.len)?);
        }
        let mut gpt = Self::alloc(gpu, config, (b, t, accum), precision, arena, None)?;
        if let Some(q) = qat {
            gpt.qat = Some(qat::Qat::new(gpu, &gpt, q)?);
        }
        gpt.build(gpu, true)?;
        Ok(gpt)
    }

    /// A model that only runs forward (eval, sample): no gradients, no backward. `table` lays
    /// out the parameters the arena holds; the weights in `quant` stay quantized instead.
    pub fn for_inference(
        gpu: &Gpu,
        config: GptConfig,
        b: usize,
        t: usize,
        precision: Precision,
        table: ParamTable,
        quant: Option<QuantWeights>,
    ) -> Result<Self, GpuError> {
        let arena = ParamArena::for_inference(gpu, table, precision == Precision::F16)?;
        let mut gpt = Self::alloc(gpu, config, (b, t, 1), precision, arena, quant)?;
        gpt.build(gpu, false)?;
        Ok(gpt)
    }

    /// A forward-only model of `b` × `t` over this model's weights (the same buffers, not a
    /// copy): a batch-1 model of a prompt's length prefills a decoder's cache.
    pub fn sharing(&self, gpu: &Gpu, b: usize, t: usize) -> Result<Self, GpuError> {
        if self.lora.is_some() {
            return Err(GpuError::Unsupported("a LoRA model's weights are shared by its own decoder only".into()));
        }
        let arena = self.arena.shared();
        let mut gpt = Self::alloc(gpu, self.config.clone(), (b, t, 1), self.precision, arena, self.quant.clone())?;
        gpt.build(gpu, false)?;
        Ok(gpt)
    }

    /// Checks the sizes and allocates the activations; `build` adds the dispatches.
    fn alloc(
        gpu: &Gpu,
        config: GptConfig,
        (b, t, accum): (usize, usize, usize),
        precision: Precision,
        arena: ParamArena,
        quant: Option<QuantWeights>,
    ) -> Result<Self, GpuError> {
        config.validate().map_err(GpuError::Unsupported)?;
        if t > config.n_positions || b == 0 || t == 0 {
            return Err(GpuError::Unsupported(format!(
                "a batch of {b} × {t} tokens does not fit this model (n_positions {})",
                config.n_positions
            )));
        }
        if precision == Precision::F16 && !gpu.device.features().contains(wgpu::Features::SHADER_F16) {
            return Err(GpuError::Unsupported(format!(
                "--precision f16 needs SHADER_F16, which {} does not offer: use --precision f32",
                gpu.info.name
            )));
        }
        let (c, v) = (config.n_embd, config.vocab_size);
        let n = b * t;
        let act = precision.act();
        let t_act = |len: usize| Tensor::new(gpu, Category::Activations, len as u64, act);
        let f = |len: usize| gpu.pool.storage(Category::Activations, 4 * len as u64);
        let shape = Shape::new(&config, b, t)?;
        let acts = (0..config.n_layer).map(|_| LayerActs::new(gpu, &shape, act)).collect::<Result<Vec<_>, _>>()?;
        let quant = quant.map(|q| q.with_scratch(gpu, act)).transpose()?;
        let rope = match config.arch {
            Arch::Llama => {
                Some(crate::kernels::rope::upload_table(gpu, config.n_positions, config.head_size(), config.theta())?)
            }
            Arch::Gpt2 => None,
        };
        let micro = Micro {
            tokens: TokenBuffers::new(gpu, n)?,
            targets: gpu.pool.storage(Category::Activations, 4 * n as u64)?,
            losses: f(n)?,
            norm: gpu.pool.storage_from(&gpu.queue, Category::Activations, &[1.0f32])?,
        };
        Ok(Self {
            encoded: t_act(n * c)?,
            lnf: t_act(n * c)?,
            lnf_stats: Tensor::new(gpu, Category::Activations, 2 * n as u64, Dtype::F32)?,
            logits: t_act(n * v)?,
            config,
            arena,
            quant,
            qat: None,
            prune: None,
            distill: None,
            lora: None,
            b,
            t,
            precision,
            acts,
            rope,
            micro,
            accum: accum.max(1),
            // Sized once the dispatches are known.
            slots: f(1)?,
            n_slots: 0,
            body: Vec::new(),
            blocks_end: 0,
            back: Vec::new(),
            back_marks: Vec::new(),
            edges: Default::default(),
            eval_classify: Vec::new(),
            _scratch: None,
        })
    }

    /// Where the dispatches of the parameters named `prefix` + name find them.
    fn weights(&self, prefix: impl Into<String>) -> Weights<'_> {
        let base = self.lora.as_ref().map_or(&self.arena, |l| &l.base);
        let adapters = self.lora.as_ref().map(|l| (&self.arena, l));
        Weights { rope: self.rope.as_deref(), adapters, ..Weights::new(base, prefix, self.quant.as_ref()) }
    }

    /// Layer l's parameters.
    fn layer_weights(&self, l: usize) -> Weights<'_> {
        self.weights(self.config.layer_prefix(l))
    }

    fn shape(&self) -> Shape {
        Shape::new(&self.config, self.b, self.t).expect("checked at allocation")
    }

    /// The block input of layer `l`: the embedding's output, or the previous block's.
    fn block_input(&self, l: usize) -> &Tensor {
        if l == 0 {
            &self.encoded
        } else {
            &self.acts[l - 1].residual3
        }
    }

    /// Builds the forward's dispatches, and with `train` the backward's; then sizes the
    /// token slots for as many micro-batches as one submit holds.
    fn build(&mut self, gpu: &Gpu, train: bool) -> Result<(), GpuError> {
        let s = self.shape();
        let (n, c, v) = (s.n(), s.c, self.config.vocab_size as u32);
        let mm = Matmul::new(gpu);
        let top = self.weights("");
        let norm_f = self.config.names().norm_f;

        // Forward up to the logits, shared by every micro-batch but for the encoder.
        let mut body: Vec<Cmd> = Vec::new();
        for (l, a) in self.acts.iter().enumerate() {
            let w = self.layer_weights(l);
            body.extend(block::forward(gpu, &mm, &w, self.block_input(l), a, &s)?.into_iter().map(Cmd::Run));
        }
        let blocks_end = body.len();
        let last = self.block_input(self.acts.len());
        body.push(Cmd::Run(block::norm(gpu, &top, &s, norm_f, [self.lnf.v(), self.lnf_stats.v(), last.v()])?));
        let head_name = self.config.head().trim_end_matches(".weight");
        let lin = Dims::linear(n, v, c);
        let head = block::linear(&mm, gpu, self.logits.v(), self.lnf.v(), &top, head_name, false, lin)?;
        body.extend(head.into_iter().map(Cmd::Run));
        let tokens = &self.micro.tokens.tokens;
        let encode = block::embed(gpu, self.encoded.v(), tokens, &top, self.config.embedding(), (v, n, s.t, s.c), s.t)?;
        self.edges[0] = vec![Cmd::Run(encode)];
        self.eval_classify = self.classify(gpu, None)?;
        self.body = body;
        self.blocks_end = blocks_end;
        if train {
            self.build_backward(gpu, &mm)?;
        }
        self.size_slots(gpu, 0)
    }

    /// Sizes the token slots for as many micro-batches as one submit holds, each micro-batch
    /// being the forward and backward and `extra` further dispatches (a teacher's forward).
    fn size_slots(&mut self, gpu: &Gpu, extra: usize) -> Result<(), GpuError> {
        self.n_slots = self.accum.min(Self::micro_per_submit_for(self.body.len() + self.back.len() + extra));
        self.slots = gpu.pool.storage(Category::Activations, 8 * (self.b * self.t * self.n_slots) as u64)?;
        Ok(())
    }

    /// The backward from dlogits (written by the classifier), mirroring the forward, and the
    /// training edges: the classifier with dlogits and the embedding's backward.
    fn build_backward(&mut self, gpu: &Gpu, mm: &Matmul) -> Result<(), GpuError> {
        let s = self.shape();
        let (n, c, v) = (s.n(), s.c, self.config.vocab_size as u32);
        let d = Scratch::new(gpu, &s, self.precision.act())?;
        let top = self.weights("");
        let mut back: Vec<Cmd> = vec![Cmd::Zero(d.dresidual.buf.clone())];
        let (head, io) = (self.config.head().trim_end_matches(".weight"), [d.dbuf.v(), self.logits.v(), self.lnf.v()]);
        let head_back = backward::linear_backward((mm, gpu), &top, (head, false), io, Dims::linear(n, v, c), false)?;
        back.extend(head_back.into_iter().map(Cmd::Run));
        let last = self.block_input(self.acts.len());
        let io = [d.dresidual.v(), d.dbuf.v(), last.v(), self.lnf_stats.v()];
        let ln_back = backward::norm_backward(gpu, &top, &s, self.config.names().norm_f, io)?;
        back.extend(ln_back.into_iter().map(Cmd::Run));
        let mut marks = vec![0; self.acts.len()];
        for (l, a) in self.acts.iter().enumerate().rev() {
            let w = self.layer_weights(l);
            back.extend(backward::backward(gpu, mm, &w, self.block_input(l), a, &d, &s)?);
            marks[l] = back.len();
        }
        let dloss = 1.0 / (n as f32 * self.accum as f32);
        // A frozen embedding (LoRA) has no backward.
        let mut encode_back = Vec::new();
        if !top.frozen() {
            let dwte = top.grad(self.config.embedding());
            let dwpe = top.arena.table.get("wpe.weight").map(|_| top.grad("wpe.weight"));
            let tokens = &self.micro.tokens;
            encode_back = encoder::backward(gpu, dwte, dwpe, d.dresidual.v(), tokens, v, n, s.t, s.c)?;
        }
        self.edges[1] = self.classify(gpu, Some(dloss))?;
        self.edges[2] = encode_back.into_iter().map(Cmd::Run).collect();
        self.back = back;
        self.back_marks = marks;
        self._scratch = Some(d);
        Ok(())
    }

    /// The classifier over the logits: with `dloss`, also dlogits (times the loss scale).
    fn classify(&self, gpu: &Gpu, dloss: Option<f32>) -> Result<Vec<Cmd>, GpuError> {
        let (n, v) = ((self.b * self.t) as u32, self.config.vocab_size as u32);
        let mb = &self.micro;
        let scale = dloss.map(|_| &*self.arena.loss_scale);
        let rows = classifier::Rows {
            logits: self.logits.v(),
            losses: (&mb.losses).into(),
            targets: (&mb.targets).into(),
            n,
            v,
            vp: v,
            norm: Some(&mb.norm),
        };
        Ok(classifier::forward_backward(gpu, rows, dloss, scale)?.into_iter().map(Cmd::Run).collect())
    }
}

/// Reads `len` elements of `t` from element `offset` as f32, whatever its type.
/// Native only: it blocks (natively `read_as_f32_async` is `Gpu::read`'s wait).
pub(crate) fn read_as_f32(gpu: &Gpu, t: &Tensor, offset: u64, len: usize) -> Result<Vec<f32>, GpuError> {
    pollster::block_on(read_as_f32_async(gpu, t, offset, len))
}

/// `read_as_f32` awaiting the read (`Gpu::read_async`).
pub(crate) async fn read_as_f32_async(gpu: &Gpu, t: &Tensor, offset: u64, len: usize) -> Result<Vec<f32>, GpuError> {
    match t.dtype {
        Dtype::F32 => gpu.read_async(&t.buf, offset, len).await,
        Dtype::F16 => gpu.read_f16_async(&t.buf, offset, len).await,
    }
}
