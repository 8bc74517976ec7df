//! Decoding one token at a time with a KV cache: each layer's keys and values of the tokens
//! seen so far stay on the GPU, so a new token costs one row through every layer.

use super::block::{self, post_attention, pre_attention, LayerActs};
use super::Gpt;
use crate::gpu::{Category, Dispatch, Gpu, GpuBuffer, GpuError, Recorder};
use crate::kernels::encoder::EncoderParams;
use crate::kernels::matmul::{Dims, Matmul};
use crate::kernels::{attention, layernorm, Dtype, Tensor};

struct Layer {
    k_cache: Tensor, // (n_positions, C)
    v_cache: Tensor, // (n_positions, C)
    /// This token's activations (N = 1).
    acts: LayerActs,
    /// ln_1 and the qkv matmul
    pre: Vec<Dispatch>,
    /// attention over the cache
    attn: Dispatch,
    /// c_proj, residual, ln_2, MLP, residual
    post: Vec<Dispatch>,
}

/// A batch-1 model that reads the parameters of a `Gpt` and keeps a KV cache.
pub struct Decoder {
    c: u32,
    nh: u32,
    v: usize,
    max_t: usize,
    /// Tokens seen so far; the next one goes to this position.
    pub pos: usize,
    token: GpuBuffer,
    encode: Dispatch,
    /// The embedding dequantizes wte (its uniform is quant.wgsl's).
    quant_embed: bool,
    layers: Vec<Layer>,
    head: Vec<Dispatch>,
    logits: Tensor,
    // Per-token activations, kept for the dispatches that bind them.
    _keep: Vec<Tensor>,
}

impl Gpt {
    /// A decoder over this model's parameters (shared, not copied).
    pub fn decoder(&self, gpu: &Gpu) -> Result<Decoder, GpuError> {
        self.refresh_fake_quant(gpu)?;
        let cfg = &self.config;
        let (c, v, nh, max_t) = (cfg.n_embd as u32, cfg.vocab_size as u32, cfg.n_head as u32, cfg.n_positions as u32);
        let act = self.precision.act();
        let f = |len: u32| Tensor::new(gpu, Category::Activations, len as u64, act);
        let top = self.weights("");
        let mm = Matmul::new(gpu);
        let lin = |out: u32, inp: u32| Dims::linear(1, out, inp);
        let token = gpu.pool.storage(Category::Activations, 16)?;
        let x0 = f(c)?;
        let encode = block::embed(gpu, x0.v(), &token, &top, (v, 1, 1, c), max_t)?;
        let mut keep = vec![x0.clone()];
        let mut layers = Vec::new();
        let mut x = x0;
        for l in 0..cfg.n_layer {
            let w = self.weights(format!("h.{l}."));
            let acts = LayerActs::new(gpu, 1, c as usize, cfg.mlp(), 1, act)?;
            let (k_cache, v_cache) = (f(max_t * c)?, f(max_t * c)?);
            let pre = pre_attention(gpu, &mm, &w, &x, &acts, 1, c)?;
            let attn = attention::decode(gpu, acts.atty.v(), acts.qkv.v(), k_cache.v(), v_cache.v(), max_t, c, nh)?;
            let post = post_attention(gpu, &mm, &w, &x, &acts, 1, (c, cfg.mlp() as u32))?;
            keep.push(x);
            x = acts.residual3.clone();
            layers.push(Layer { k_cache, v_cache, acts, pre, attn, post });
        }
        let stats = Tensor::new(gpu, Category::Activations, 2, Dtype::F32)?;
        let (lnf, logits) = (f(c)?, f(v)?);
        let (lw, lb) = (top.master("ln_f.weight"), top.master("ln_f.bias"));
        let mut head = vec![layernorm::forward(gpu, lnf.v(), stats.v(), x.v(), lw, lb, 1, c)?];
        head.extend(block::linear(&mm, gpu, logits.v(), lnf.v(), &top, "wte", false, lin(v, c))?);
        keep.extend([x, lnf, stats]);
        Ok(Decoder {
            c,
            nh,
            v: v as usize,
            max_t: max_t as usize,
            pos: 0,
            token,
            encode,
            quant_embed: self.quant.as_ref().is_some_and(|q| q.tensors.contains_key("wte.weight")),
            layers,
            head,
            logits,
            _keep: keep,
        })
    }
}

impl Decoder {
    /// Feeds one token at position `pos` and returns the logits (V) for the next one.
    pub fn next(&mut self, gpu: &Gpu, token: u32) -> Result<Vec<f32>, GpuError> {
        if self.pos >= self.max_t {
            return Err(GpuError::Unsupported(format!("the KV cache holds {} positions (n_positions)", self.max_t)));
        }
        let (pos, c) = (self.pos as u32, self.c);
        gpu.write(&self.token, 0, &[token]);
        if self.quant_embed {
            self.encode.write_uniform(gpu, &crate::kernels::quant::embed_params(1, 1, c, pos));
        } else {
            self.encode.write_uniform(gpu, &EncoderParams { n: 1, t: 1, c, _unused: 0, pos0: pos, _pad: [0; 3] });
        }
        for l in &self.layers {
            attention::set_decode_len(gpu, &l.attn, pos + 1, c, self.nh)?;
        }
        let mut rec = Recorder::new(gpu);
        rec.dispatch(&self.encode);
        let row = self.logits.dtype.bytes() * c as u64;
        for l in &self.layers {
            rec.run(&l.pre);
            // Append this token's k and v to the cache.
            rec.copy(&l.acts.qkv.buf, row, &l.k_cache.buf, pos as u64 * row, row);
            rec.copy(&l.acts.qkv.buf, 2 * row, &l.v_cache.buf, pos as u64 * row, row);
            rec.dispatch(&l.attn);
            rec.run(&l.post);
        }
        rec.run(&self.head);
        rec.submit()?;
        self.pos += 1;
        super::read_as_f32(gpu, &self.logits, 0, self.v)
    }

    /// Positions the cache holds.
    pub fn capacity(&self) -> usize {
        self.max_t
    }
}
