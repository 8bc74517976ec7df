//! One transformer block of GPT-2: its activations, where its dispatches read their
//! parameters, and the dispatches of its forward and backward.
//!
//! Under mixed precision the activations and their gradients are f16 (`Dtype::F16`), the
//! matmuls read the f16 copy of their weights, and LayerNorm reads its f32 master weights;
//! statistics, softmax and every reduction are f32 inside the kernels, and parameter
//! gradients accumulate in the f32 arena.

use super::quantized::QuantWeights;
use super::Cmd;
use crate::gpu::{Category, Dispatch, Gpu, GpuError};
use crate::kernels::matmul::{Dims, Matmul};
use crate::kernels::quant::{self as qk, QView};
use crate::kernels::{attention, elementwise, encoder, gelu, layernorm, Dtype, Tensor, View};
use crate::optim::ParamArena;

/// Activations of one layer, each (N, ·) with N = B·T.
pub(super) struct LayerActs {
    pub ln1: Tensor,       // (N, C)
    pub ln1_stats: Tensor, // (N, 2) f32
    pub qkv: Tensor,       // (N, 3C)
    pub atty: Tensor,      // (N, C)
    pub lse: Tensor,       // (B, NH, T) f32
    pub attproj: Tensor,   // (N, C)
    pub residual2: Tensor, // (N, C)
    pub ln2: Tensor,       // (N, C)
    pub ln2_stats: Tensor, // (N, 2) f32
    pub fch: Tensor,       // (N, 4C)
    pub fch_gelu: Tensor,  // (N, 4C)
    pub fcproj: Tensor,    // (N, C)
    pub residual3: Tensor, // (N, C)
}

impl LayerActs {
    /// A layer's activations in `act` for `n` rows of `c` channels (and `lse` for the
    /// attention).
    pub fn new(gpu: &Gpu, n: usize, c: usize, hidden: usize, lse: usize, act: Dtype) -> Result<Self, GpuError> {
        let t = |len: usize| Tensor::new(gpu, Category::Activations, len as u64, act);
        let f = |len: usize| Tensor::new(gpu, Category::Activations, len as u64, Dtype::F32);
        Ok(Self {
            ln1: t(n * c)?,
            ln1_stats: f(2 * n)?,
            qkv: t(3 * n * c)?,
            atty: t(n * c)?,
            lse: f(lse)?,
            attproj: t(n * c)?,
            residual2: t(n * c)?,
            ln2: t(n * c)?,
            ln2_stats: f(2 * n)?,
            fch: t(n * hidden)?,
            fch_gelu: t(n * hidden)?,
            fcproj: t(n * c)?,
            residual3: t(n * c)?,
        })
    }
}

/// The backward's working buffers, shared by every layer: activation gradients in the
/// activations' type, the attention's D in f32.
pub(super) struct Scratch {
    pub dresidual: Tensor, // (N, C)
    pub dbuf: Tensor,      // (N, C)
    pub dqkv: Tensor,      // (N, 3C)
    pub dfch: Tensor,      // (N, F)
    pub dfch_gelu: Tensor, // (N, F)
    pub dattn: Tensor,     // (B, NH, T) f32
}

impl Scratch {
    pub fn new(gpu: &Gpu, n: usize, c: usize, f: usize, bht: usize, act: Dtype) -> Result<Self, GpuError> {
        let t = |len: usize| Tensor::new(gpu, Category::Activations, len as u64, act);
        Ok(Self {
            dresidual: t(n * c)?,
            dbuf: t(n * c)?,
            dqkv: t(3 * n * c)?,
            dfch: t(n * f)?,
            dfch_gelu: t(n * f)?,
            dattn: Tensor::new(gpu, Category::Activations, bht as u64, Dtype::F32)?,
        })
    }
}

/// Where dispatches find the parameters named `prefix` + name: f32 masters, the matmuls'
/// operands (the f16 copy when the arena has one, or quantized weights), and the gradients.
pub(super) struct Weights<'a> {
    pub arena: &'a ParamArena,
    pub prefix: String,
    pub quant: Option<&'a QuantWeights>,
}

/// A linear layer's weight as the forward reads it.
pub(super) enum Linear<'a> {
    Dense(View<'a>),
    Quant(QView<'a>),
}

impl<'a> Weights<'a> {
    pub fn new(arena: &'a ParamArena, prefix: impl Into<String>, quant: Option<&'a QuantWeights>) -> Self {
        Self { arena, prefix: prefix.into(), quant }
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
            if crate::compress::export::is_linear_weight(&format!("{}{name}", self.prefix)) {
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
/// quantized) and its bias (`layer`.bias, when `bias`).
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
) -> Result<Vec<Dispatch>, GpuError> {
    let b = bias.then(|| w.mm(&format!("{layer}.bias")));
    match w.linear(&format!("{layer}.weight")) {
        Linear::Dense(wv) => mm.forward(out, inp, wv, b, dims),
        Linear::Quant(q) => qk::forward(gpu, out, inp, q, b, dims.m),
    }
}

/// out (N, C) = wte[tokens] + wpe[pos0 + n % T], wte dense or quantized; binds `wpe_rows`
/// rows of wpe.
#[allow(clippy::too_many_arguments)]
pub(super) fn embed(
    gpu: &Gpu,
    out: View,
    tokens: &wgpu::Buffer,
    w: &Weights,
    (v, n, t, c): (u32, u32, u32, u32),
    wpe_rows: u32,
) -> Result<Dispatch, GpuError> {
    let wpe = w.master("wpe.weight");
    match w.linear("wte.weight") {
        Linear::Quant(q) => qk::embed(gpu, out, tokens, q, wpe, n, t, wpe_rows),
        Linear::Dense(_) => encoder::forward(gpu, out, tokens, w.master("wte.weight"), wpe, v, n, t, c, wpe_rows),
    }
}

/// Sizes of the batch a block runs on.
#[derive(Clone, Copy)]
pub(super) struct Shape {
    pub b: u32,
    pub t: u32,
    pub c: u32,
    pub nh: u32,
    /// MLP hidden channels (n_inner).
    pub f: u32,
}

impl Shape {
    pub fn n(&self) -> u32 {
        self.b * self.t
    }
}

/// A block's layers before the attention: ln_1 and the fused qkv matmul.
pub(super) fn pre_attention(
    gpu: &Gpu,
    mm: &Matmul,
    w: &Weights,
    input: &Tensor,
    a: &LayerActs,
    n: u32,
    c: u32,
) -> Result<Vec<Dispatch>, GpuError> {
    let ln = |name: &str| w.master(name);
    let mut d =
        vec![layernorm::forward(gpu, a.ln1.v(), a.ln1_stats.v(), input.v(), ln("ln_1.weight"), ln("ln_1.bias"), n, c)?];
    d.extend(linear(mm, gpu, a.qkv.v(), a.ln1.v(), w, "attn.c_attn", true, Dims::linear(n, 3 * c, c))?);
    Ok(d)
}

/// A block's layers after the attention: c_proj, the residual, ln_2, the MLP, the residual.
pub(super) fn post_attention(
    gpu: &Gpu,
    mm: &Matmul,
    w: &Weights,
    input: &Tensor,
    a: &LayerActs,
    n: u32,
    (c, f): (u32, u32),
) -> Result<Vec<Dispatch>, GpuError> {
    let nc = n as u64 * c as u64;
    let lin = Dims::linear;
    let mut d = linear(mm, gpu, a.attproj.v(), a.atty.v(), w, "attn.c_proj", true, lin(n, c, c))?;
    d.push(elementwise::add(gpu, a.residual2.span(nc), input.span(nc), a.attproj.span(nc))?);
    let ln = |name: &str| w.master(name);
    d.push(layernorm::forward(
        gpu,
        a.ln2.v(),
        a.ln2_stats.v(),
        a.residual2.v(),
        ln("ln_2.weight"),
        ln("ln_2.bias"),
        n,
        c,
    )?);
    d.extend(linear(mm, gpu, a.fch.v(), a.ln2.v(), w, "mlp.c_fc", true, lin(n, f, c))?);
    d.push(gelu::forward(gpu, a.fch_gelu.v(), a.fch.v(), n * f)?);
    d.extend(linear(mm, gpu, a.fcproj.v(), a.fch_gelu.v(), w, "mlp.c_proj", true, lin(n, c, f))?);
    d.push(elementwise::add(gpu, a.residual3.span(nc), a.residual2.span(nc), a.fcproj.span(nc))?);
    Ok(d)
}

/// A whole block's forward: pre-attention, attention, post-attention.
pub(super) fn forward(
    gpu: &Gpu,
    mm: &Matmul,
    w: &Weights,
    input: &Tensor,
    a: &LayerActs,
    s: Shape,
) -> Result<Vec<Dispatch>, GpuError> {
    let mut d = pre_attention(gpu, mm, w, input, a, s.n(), s.c)?;
    d.push(attention::forward(gpu, a.atty.v(), a.lse.v(), a.qkv.v(), s.b, s.t, s.c, s.nh)?);
    d.extend(post_attention(gpu, mm, w, input, a, s.n(), (s.c, s.f))?);
    Ok(d)
}

/// A block's backward, from dresidual (the gradient of its output) back to dresidual (that
/// of its input), adding its parameters' gradients into the arena.
pub(super) fn backward(
    gpu: &Gpu,
    mm: &Matmul,
    w: &Weights,
    input: &Tensor,
    a: &LayerActs,
    d: &Scratch,
    s: Shape,
) -> Result<Vec<Cmd>, GpuError> {
    let (n, c, f) = (s.n(), s.c, s.f);
    let lin = Dims::linear;
    let g = |name: &str| w.grad(name);
    let mut back: Vec<Cmd> = Vec::new();
    let mut run = |ops: Vec<Dispatch>| back.extend(ops.into_iter().map(Cmd::Run));
    // residual3 = residual2 + fcproj: both get dresidual.
    let (pw, pb) = (g("mlp.c_proj.weight"), Some(g("mlp.c_proj.bias")));
    run(mm.backward(
        d.dfch_gelu.v(),
        pw,
        pb,
        d.dresidual.v(),
        a.fch_gelu.v(),
        w.mm("mlp.c_proj.weight"),
        lin(n, c, f),
    )?);
    back.push(Cmd::Zero(d.dfch.buf.clone()));
    back.push(Cmd::Run(gelu::backward(gpu, d.dfch.v(), a.fch.v(), d.dfch_gelu.v(), n * f)?));
    let mut run = |ops: Vec<Dispatch>| back.extend(ops.into_iter().map(Cmd::Run));
    let (fw, fb) = (g("mlp.c_fc.weight"), Some(g("mlp.c_fc.bias")));
    run(mm.backward(d.dbuf.v(), fw, fb, d.dfch.v(), a.ln2.v(), w.mm("mlp.c_fc.weight"), lin(n, f, c))?);
    let (lw, lb) = (g("ln_2.weight"), g("ln_2.bias"));
    let ln2_w = w.master("ln_2.weight");
    run(layernorm::backward(gpu, d.dresidual.v(), lw, lb, d.dbuf.v(), a.residual2.v(), a.ln2_stats.v(), ln2_w, n, c)?);
    // residual2 = residual + attproj.
    let (aw, ab) = (g("attn.c_proj.weight"), Some(g("attn.c_proj.bias")));
    run(mm.backward(d.dbuf.v(), aw, ab, d.dresidual.v(), a.atty.v(), w.mm("attn.c_proj.weight"), lin(n, c, c))?);
    let (dqkv, dattn) = (d.dqkv.v(), d.dattn.v());
    run(attention::backward(gpu, dqkv, dattn, d.dbuf.v(), a.atty.v(), a.qkv.v(), a.lse.v(), s.b, s.t, c, s.nh)?);
    let (qw, qb) = (g("attn.c_attn.weight"), Some(g("attn.c_attn.bias")));
    run(mm.backward(d.dbuf.v(), qw, qb, d.dqkv.v(), a.ln1.v(), w.mm("attn.c_attn.weight"), lin(n, 3 * c, c))?);
    let (lw, lb) = (g("ln_1.weight"), g("ln_1.bias"));
    let ln1_w = w.master("ln_1.weight");
    run(layernorm::backward(gpu, d.dresidual.v(), lw, lb, d.dbuf.v(), input.v(), a.ln1_stats.v(), ln1_w, n, c)?);
    Ok(back)
}
