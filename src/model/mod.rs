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
mod run;

pub use config::{ConfigError, GptConfig};

use crate::gpu::{Category, Dispatch, Gpu, GpuBuffer, GpuError, Recorder};
use crate::kernels::elementwise::{self, Span};
use crate::kernels::encoder::{self, TokenBuffers};
use crate::kernels::matmul::{Dims, Matmul};
use crate::kernels::{attention, classifier, gelu, layernorm, View};
use crate::optim::{ParamArena, ParamTable};

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
