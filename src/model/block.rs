//! One transformer block, GPT-2's or Llama's: its activations, where its dispatches read
//! their parameters, and the dispatches of its forward (the backward is in backward.rs). Both
//! architectures run one skeleton: norm, the attention's input projections, attention, the
//! output projection and residual, norm, the MLP, residual. They differ in the parts: LayerNorm
//! or RMSNorm, fused qkv with biases or q, k, v planes rotated by RoPE, GELU or SwiGLU.
//!
//! Under mixed precision the activations and their gradients are f16 (`Dtype::F16`), the
//! matmuls read the f16 copy of their weights, and the norms read their f32 master weights;
//! statistics, softmax and every reduction are f32 inside the kernels, and parameter
//! gradients accumulate in the f32 arena.

use super::config::{Arch, GptConfig, Names};
use super::quantized::QuantWeights;
use crate::gpu::{Category, Dispatch, Gpu, GpuError};
use crate::kernels::layernorm;
use crate::kernels::quant::{self as qk, QView};
use crate::kernels::rope::{self, Heads};
use crate::kernels::Dispatches;
use crate::kernels::{elementwise, encoder, gelu, rmsnorm, swiglu, Dtype, Tensor, View};
use crate::optim::ParamArena;
use crate::tune;
use crate::tune::attention::{self, AttnShape};
use crate::tune::matmul::{Dims, Matmul};

/// Sizes of the batch a block runs on, and its architecture.
#[derive(Clone, Copy)]
pub(super) struct Shape {
    pub b: u32,
    pub t: u32,
    pub c: u32,
    pub nh: u32,
    /// MLP hidden channels (n_inner).
    pub f: u32,
    pub arch: Arch,
    /// The norms' epsilon.
    pub eps: f32,
    pub attn: AttnShape,
}

impl Shape {
    pub fn new(cfg: &GptConfig, b: usize, t: usize) -> Result<Self, GpuError> {
        let (b, t, nh) = (b as u32, t as u32, cfg.n_head as u32);
        let attn = match cfg.arch {
            Arch::Gpt2 => AttnShape::fused(b, t, cfg.n_embd as u32, nh)?,
            Arch::Llama => AttnShape::planes(b, t, nh, cfg.kv_heads() as u32, cfg.head_size() as u32)?,
        };
        let (c, f, eps) = (cfg.n_embd as u32, cfg.mlp() as u32, cfg.norm_eps());
        Ok(Self { b, t, c, nh, f, arch: cfg.arch, eps, attn })
    }

    pub fn n(&self) -> u32 {
        self.b * self.t
    }

    /// Width of the attention's output: NH·HS.
    pub fn q(&self) -> u32 {
        self.attn.c()
    }

    pub fn names(&self) -> &'static Names {
        self.arch.names()
    }

    /// Llama's q, k and v planes of qkv: (first element, width).
    pub fn planes(&self) -> [(u64, u32); 3] {
        let (l, kvd) = (&self.attn.qkv, self.attn.nkv * self.attn.hs);
        [(0, self.q()), (l.k_base as u64, kvd), (l.v_base as u64, kvd)]
    }

    /// Where RoPE finds the heads of plane `part` (0 q, 1 k), positions from `pos_off`.
    pub fn rope_heads(&self, part: usize, pos_off: u32) -> Heads {
        let (heads, width) = if part == 0 { (self.nh, self.q()) } else { (self.attn.nkv, self.planes()[1].1) };
        Heads { n: self.n(), t: self.t, heads, d: self.attn.hs, stride: width, col: 0, pos_off }
    }
}

/// Activations of one layer, each (N, ·) with N = B·T.
pub(super) struct LayerActs {
    pub ln1: Tensor,        // (N, C)
    pub ln1_stats: Tensor,  // (N, 2) f32 (RMSNorm: 1/rms in the first N)
    pub qkv: Tensor,        // the attention's layout (Shape::attn)
    pub atty: Tensor,       // (N, NH·HS)
    pub lse: Tensor,        // (B, NH, T) f32
    pub attproj: Tensor,    // (N, C)
    pub residual2: Tensor,  // (N, C)
    pub ln2: Tensor,        // (N, C)
    pub ln2_stats: Tensor,  // (N, 2) f32
    pub fch: Tensor,        // (N, F): c_fc's output, or SwiGLU's gate
    pub up: Option<Tensor>, // (N, F): SwiGLU's up
    pub fch_gelu: Tensor,   // (N, F): the activation's output
    pub fcproj: Tensor,     // (N, C)
    pub residual3: Tensor,  // (N, C)
}

impl LayerActs {
    /// A layer's activations in `act` for a batch of shape `s`.
    pub fn new(gpu: &Gpu, s: &Shape, act: Dtype) -> Result<Self, GpuError> {
        let t = |len: u64| Tensor::new(gpu, Category::Activations, len, act);
        let f32s = |len: u64| Tensor::new(gpu, Category::Activations, len, Dtype::F32);
        let (n, c, f) = (s.n() as u64, s.c as u64, s.f as u64);
        Ok(Self {
            ln1: t(n * c)?,
            ln1_stats: f32s(2 * n)?,
            qkv: t(s.attn.qkv.len)?,
            atty: t(n * s.q() as u64)?,
            lse: f32s((s.b * s.nh * s.t) as u64)?,
            attproj: t(n * c)?,
            residual2: t(n * c)?,
            ln2: t(n * c)?,
            ln2_stats: f32s(2 * n)?,
            fch: t(n * f)?,
            up: if s.arch == Arch::Llama { Some(t(n * f)?) } else { None },
            fch_gelu: t(n * f)?,
            fcproj: t(n * c)?,
            residual3: t(n * c)?,
        })
    }
}

/// The backward's working buffers, shared by every layer: activation gradients in the
/// activations' type, the attention's D in f32.
pub(super) struct Scratch {
    pub dresidual: Tensor,   // (N, C)
    pub dbuf: Tensor,        // (N, max(C, NH·HS))
    pub dqkv: Tensor,        // qkv's layout
    pub dfch: Tensor,        // (N, F)
    pub dup: Option<Tensor>, // (N, F), SwiGLU's up
    pub dfch_gelu: Tensor,   // (N, F)
    pub dattn: Tensor,       // (B, NH, T) f32
}

impl Scratch {
    pub fn new(gpu: &Gpu, s: &Shape, act: Dtype) -> Result<Self, GpuError> {
        let t = |len: u64| Tensor::new(gpu, Category::Activations, len, act);
        let (n, c, f) = (s.n() as u64, s.c as u64, s.f as u64);
        Ok(Self {
            dresidual: t(n * c)?,
            dbuf: t(n * c.max(s.q() as u64))?,
            dqkv: t(s.attn.qkv.len)?,
            dfch: t(n * f)?,
            dup: if s.arch == Arch::Llama { Some(t(n * f)?) } else { None },
            dfch_gelu: t(n * f)?,
            dattn: Tensor::new(gpu, Category::Activations, (s.b * s.nh * s.t) as u64, Dtype::F32)?,
        })
    }
}

/// Where dispatches find the parameters named `prefix` + name: f32 masters, the matmuls'
/// operands (the f16 copy when the arena has one, or quantized weights), and the gradients.
pub(super) struct Weights<'a> {
    pub arena: &'a ParamArena,
    pub prefix: String,
    pub quant: Option<&'a QuantWeights>,
    /// RoPE's cos/sin table (Llama).
    pub rope: Option<&'a wgpu::Buffer>,
    /// LoRA: the adapters' arena and scratch; `arena` is then the frozen base.
    pub adapters: Option<(&'a ParamArena, &'a super::lora::Lora)>,
}

/// A linear layer's weight as the forward reads it.
pub(super) enum Linear<'a> {
    Dense(View<'a>),
    Quant(QView<'a>),
}

impl<'a> Weights<'a> {
    pub fn new(arena: &'a ParamArena, prefix: impl Into<String>, quant: Option<&'a QuantWeights>) -> Self {
        Self { arena, prefix: prefix.into(), quant, rope: None, adapters: None }
    }

    /// Whether these weights are frozen (a LoRA base): no gradients for them.
    pub fn frozen(&self) -> bool {
        self.adapters.is_some()
    }

    /// The adapter of the linear layer `layer` (without `.weight`), if LoRA targets it.
    pub fn adapter(&self, layer: &str) -> Option<super::lora_path::Adapter<'a>> {
        let (arena, lora) = self.adapters?;
        lora.adapter(arena, &format!("{}{layer}", self.prefix))
    }

    /// A weight of the forward's matmuls: quantized where the model holds it so.
    pub fn linear(&self, name: &str) -> Linear<'a> {
        let full = format!("{}{name}", self.prefix);
        match self.quant.and_then(|q| q.view(&full)) {
            Some(q) => Linear::Quant(q),
            None => Linear::Dense(self.mm(name)),
        }
    }

    fn offset(&self, name: &str) -> u64 {
        let full = format!("{}{name}", self.prefix);
        self.arena.table.get(&full).unwrap_or_else(|| panic!("parameter {full} is in the table")).offset
    }

    /// The f32 master (LayerNorm, embeddings).
    pub fn master(&self, name: &str) -> View<'a> {
        View::at(&self.arena.params, self.offset(name))
    }

    /// A matmul's weight or bias: the f16 copy under mixed precision, the fake-quantized
    /// copy of a linear weight under QAT.
    pub fn mm(&self, name: &str) -> View<'a> {
        if let Some(fq) = &self.arena.fake_quant {
            if crate::model::export::is_linear_weight(&format!("{}{name}", self.prefix)) {
                return View::at(fq, self.offset(name));
            }
        }
        match &self.arena.half {
            Some(h) => View::typed(h, Dtype::F16).at_offset(self.offset(name)),
            None => self.master(name),
        }
    }

    pub fn grad(&self, name: &str) -> View<'a> {
        View::at(&self.arena.grads, self.offset(name))
    }
}

/// out (M, N) = inp (M, K) · W (N, K)ᵀ + bias, W the layer `layer`'s weight (dense or
/// quantized) and its bias (`layer`.bias, when `bias`), plus its LoRA path if it has one.
#[allow(clippy::too_many_arguments)]
pub(super) fn linear(
    mm: &Matmul,
    gpu: &Gpu,
    out: View,
    inp: View,
    w: &Weights,
    layer: &str,
    bias: bool,
    dims: Dims,
) -> Dispatches {
    let b = bias.then(|| w.mm(&format!("{layer}.bias")));
    let mut ops = match w.linear(&format!("{layer}.weight")) {
        Linear::Dense(wv) => mm.forward(out, inp, wv, b, dims)?,
        Linear::Quant(q) => w.quant.expect("a quantized weight").forward((gpu, mm), [out, inp], q, b, dims)?,
    };
    if let Some(ad) = w.adapter(layer) {
        ops.extend(super::lora_path::forward(mm, gpu, out, inp, &ad, dims)?);
    }
    Ok(ops)
}

/// out (N, C) = wte[tokens] (+ wpe[pos0 + n % T] for GPT-2), the token embedding `embedding`
/// dense or quantized; binds `wpe_rows` rows of wpe.
#[allow(clippy::too_many_arguments)]
pub(super) fn embed(
    gpu: &Gpu,
    out: View,
    tokens: &wgpu::Buffer,
    w: &Weights,
    embedding: &str,
    (v, n, t, c): (u32, u32, u32, u32),
    wpe_rows: u32,
) -> Result<Dispatch, GpuError> {
    let wpe = w.arena.table.get("wpe.weight").map(|_| w.master("wpe.weight"));
    match w.linear(embedding) {
        Linear::Quant(q) => qk::embed(gpu, out, tokens, q, wpe, n, t, wpe_rows),
        Linear::Dense(_) => encoder::forward(gpu, out, tokens, w.master(embedding), wpe, v, n, t, c, wpe_rows),
    }
}

/// The norm `name` (LayerNorm with bias, or RMSNorm): out and its statistics from inp.
pub(super) fn norm(
    gpu: &Gpu,
    w: &Weights,
    s: &Shape,
    name: &str,
    [out, stats, inp]: [View; 3],
) -> Result<Dispatch, GpuError> {
    let weight = w.master(&format!("{name}.weight"));
    match s.arch {
        Arch::Gpt2 => {
            let (bias, v) = (w.master(&format!("{name}.bias")), tune::choose_layernorm(gpu, s.n(), s.c, inp.dtype)?);
            layernorm::forward_with(gpu, v, out, stats, inp, weight, bias, s.n(), s.c)
        }
        Arch::Llama => rmsnorm::forward(gpu, out, stats, inp, weight, (s.n(), s.c), s.eps),
    }
}

/// RoPE on the q and k planes of `x` (qkv, or with `inverse` the gradient dqkv).
pub(super) fn rope_qk(gpu: &Gpu, w: &Weights, s: &Shape, x: View, inverse: bool) -> Dispatches {
    let table = w.rope.ok_or_else(|| GpuError::Unsupported("a Llama block needs its RoPE table".into()))?;
    let planes = s.planes();
    (0..2).map(|p| rope::apply(gpu, x.at_offset(x.offset + planes[p].0), table, s.rope_heads(p, 0), inverse)).collect()
}

/// A block's layers before the attention: the first norm and the input projections (GPT-2's
/// fused qkv; Llama's q, k, v planes, then RoPE on q and k; the last two dispatches).
pub(super) fn pre_attention(mm: &Matmul, w: &Weights, input: &Tensor, a: &LayerActs, s: &Shape) -> Dispatches {
    let gpu = mm.gpu();
    let (n, c, names) = (s.n(), s.c, s.names());
    let mut d = vec![norm(gpu, w, s, names.norm1, [a.ln1.v(), a.ln1_stats.v(), input.v()])?];
    if s.arch == Arch::Gpt2 {
        d.extend(linear(mm, gpu, a.qkv.v(), a.ln1.v(), w, names.qkv[0], true, Dims::linear(n, 3 * c, c))?);
        return Ok(d);
    }
    for (name, (at, width)) in names.qkv.iter().zip(s.planes()) {
        d.extend(linear(mm, gpu, a.qkv.v().at_offset(at), a.ln1.v(), w, name, false, Dims::linear(n, width, c))?);
    }
    d.extend(rope_qk(gpu, w, s, a.qkv.v(), false)?);
    Ok(d)
}

/// A block's layers after the attention: the output projection, the residual, the second
/// norm, the MLP, the residual.
pub(super) fn post_attention(mm: &Matmul, w: &Weights, input: &Tensor, a: &LayerActs, s: &Shape) -> Dispatches {
    let gpu = mm.gpu();
    let (n, c, f, names) = (s.n(), s.c, s.f, s.names());
    let nc = n as u64 * c as u64;
    let lin = Dims::linear;
    let mut d = linear(mm, gpu, a.attproj.v(), a.atty.v(), w, names.proj, names.bias, lin(n, c, s.q()))?;
    d.push(elementwise::add(gpu, a.residual2.span(nc), input.span(nc), a.attproj.span(nc))?);
    d.push(norm(gpu, w, s, names.norm2, [a.ln2.v(), a.ln2_stats.v(), a.residual2.v()])?);
    match (names.gate, &a.up) {
        (Some(gate), Some(up)) => {
            d.extend(linear(mm, gpu, a.fch.v(), a.ln2.v(), w, gate, false, lin(n, f, c))?);
            d.extend(linear(mm, gpu, up.v(), a.ln2.v(), w, names.up, false, lin(n, f, c))?);
            d.push(swiglu::forward(gpu, a.fch_gelu.v(), a.fch.v(), up.v(), n * f)?);
        }
        _ => {
            d.extend(linear(mm, gpu, a.fch.v(), a.ln2.v(), w, names.up, true, lin(n, f, c))?);
            d.push(gelu::forward(gpu, a.fch_gelu.v(), a.fch.v(), n * f)?);
        }
    }
    d.extend(linear(mm, gpu, a.fcproj.v(), a.fch_gelu.v(), w, names.down, names.bias, lin(n, c, f))?);
    d.push(elementwise::add(gpu, a.residual3.span(nc), a.residual2.span(nc), a.fcproj.span(nc))?);
    Ok(d)
}

/// A whole block's forward: pre-attention, attention, post-attention.
pub(super) fn forward(gpu: &Gpu, mm: &Matmul, w: &Weights, input: &Tensor, a: &LayerActs, s: &Shape) -> Dispatches {
    let mut d = pre_attention(mm, w, input, a, s)?;
    d.push(attention::forward_in(gpu, a.atty.v(), a.lse.v(), a.qkv.v(), &s.attn)?);
    d.extend(post_attention(mm, w, input, a, s)?);
    Ok(d)
}
