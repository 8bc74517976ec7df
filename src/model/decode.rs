//! Decoding one token at a time with a KV cache: each layer's keys and values of the tokens
//! seen so far stay on the GPU, so a new token costs one row through every layer. Llama's keys
//! enter the cache already rotated (RoPE at the token's position).

use super::block::{self, post_attention, pre_attention, LayerActs, Shape};
use super::{Arch, Gpt};
use crate::gpu::{Category, Dispatch, Gpu, GpuBuffer, GpuError, Recorder};
use crate::kernels::attention;
use crate::kernels::encoder::EncoderParams;
use crate::kernels::matmul::{Dims, Matmul};
use crate::kernels::rope::RopeParams;
use crate::kernels::{Dtype, Tensor};

struct Layer {
    k_cache: Tensor, // (n_positions, NKV·HS)
    v_cache: Tensor, // (n_positions, NKV·HS)
    /// This token's activations (N = 1).
    acts: LayerActs,
    /// The first norm and the input projections (Llama: RoPE last, its two dispatches).
    pre: Vec<Dispatch>,
    /// attention over the cache
    attn: Dispatch,
    /// output projection, residual, norm, MLP, residual
    post: Vec<Dispatch>,
}

/// A batch-1 model that reads the parameters of a `Gpt` and keeps a KV cache.
pub struct Decoder {
    shape: Shape,
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

/// Most positions a decoder's cache holds (a model's n_positions may be far more: SmolLM2's is
/// 8192); `sample` slides its window past it.
pub const DECODE_MAX: usize = 2048;

impl Gpt {
    /// A decoder over this model's parameters (shared, not copied), its cache holding
    /// n_positions or `DECODE_MAX` positions, whichever is fewer.
    pub fn decoder(&self, gpu: &Gpu) -> Result<Decoder, GpuError> {
        self.refresh_fake_quant(gpu)?;
        let cfg = &self.config;
        let (c, v, max_t) = (cfg.n_embd as u32, cfg.vocab_size as u32, cfg.n_positions.min(DECODE_MAX) as u32);
        let s = Shape::new(cfg, 1, 1)?;
        let kvd = (s.attn.nkv * s.attn.hs) as u64;
        let act = self.precision.act();
        let f = |len: u64| Tensor::new(gpu, Category::Activations, len, act);
        let top = self.weights("");
        let mm = Matmul::new(gpu);
        let token = gpu.pool.storage(Category::Activations, 16)?;
        let x0 = f(c as u64)?;
        let encode = block::embed(gpu, x0.v(), &token, &top, cfg.embedding(), (v, 1, 1, c), max_t)?;
        let mut keep = vec![x0.clone()];
        let mut layers = Vec::new();
        let mut x = x0;
        for l in 0..cfg.n_layer {
            let w = self.layer_weights(l);
            let acts = LayerActs::new(gpu, &s, act)?;
            let (k_cache, v_cache) = (f(max_t as u64 * kvd)?, f(max_t as u64 * kvd)?);
            let pre = pre_attention(gpu, &mm, &w, &x, &acts, &s)?;
            let caches = [k_cache.v(), v_cache.v()];
            let attn = attention::decode_in(gpu, acts.atty.v(), acts.qkv.v(), caches, max_t, &s.attn)?;
            let post = post_attention(gpu, &mm, &w, &x, &acts, &s)?;
            keep.push(x);
            x = acts.residual3.clone();
            layers.push(Layer { k_cache, v_cache, acts, pre, attn, post });
        }
        let stats = Tensor::new(gpu, Category::Activations, 2, Dtype::F32)?;
        let (lnf, logits) = (f(c as u64)?, f(v as u64)?);
        let mut head = vec![block::norm(gpu, &top, &s, cfg.names().norm_f, [lnf.v(), stats.v(), x.v()])?];
        let head_name = cfg.head().trim_end_matches(".weight");
        head.extend(block::linear(&mm, gpu, logits.v(), lnf.v(), &top, head_name, false, Dims::linear(1, v, c))?);
        keep.extend([x, lnf, stats]);
        Ok(Decoder {
            shape: s,
            v: v as usize,
            max_t: max_t as usize,
            pos: 0,
            token,
            encode,
            quant_embed: self.quant.as_ref().is_some_and(|q| q.tensors.contains_key(cfg.embedding())),
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
        self.step(gpu, token, true)?;
        super::read_as_f32(gpu, &self.logits, 0, self.v)
    }

    /// Feeds one token of a prompt into the cache: the layers only, with neither the LM head
    /// nor a readback (the queue runs ahead until the next `next`).
    pub fn feed(&mut self, gpu: &Gpu, token: u32) -> Result<(), GpuError> {
        self.step(gpu, token, false)
    }

    fn step(&mut self, gpu: &Gpu, token: u32, head: bool) -> Result<(), GpuError> {
        if self.pos >= self.max_t {
            return Err(GpuError::Unsupported(format!("the KV cache holds {} positions (n_positions)", self.max_t)));
        }
        self.set_position(gpu, token);
        let (pos, s) = (self.pos as u64, &self.shape);
        let bytes = self.logits.dtype.bytes();
        let row = bytes * (s.attn.nkv * s.attn.hs) as u64;
        let (k_at, v_at) = (bytes * s.attn.qkv.k_base as u64, bytes * s.attn.qkv.v_base as u64);
        let mut rec = Recorder::new(gpu);
        rec.dispatch(&self.encode);
        for l in &self.layers {
            rec.run(&l.pre);
            // Append this token's k and v to the cache.
            rec.copy(&l.acts.qkv.buf, k_at, &l.k_cache.buf, pos * row, row);
            rec.copy(&l.acts.qkv.buf, v_at, &l.v_cache.buf, pos * row, row);
            rec.dispatch(&l.attn);
            rec.run(&l.post);
        }
        if head {
            rec.run(&self.head);
        }
        rec.submit()?;
        self.pos += 1;
        Ok(())
    }

    /// Points the uniforms at position `pos` for `token`: the embedding's (GPT-2's wpe row),
    /// RoPE's (Llama) and the attention's cache length.
    fn set_position(&self, gpu: &Gpu, token: u32) {
        let (pos, s) = (self.pos as u32, &self.shape);
        gpu.write(&self.token, 0, &[token]);
        let c = s.c;
        if self.quant_embed {
            let p = crate::kernels::quant::QuantParams {
                has_bias: (s.arch == Arch::Gpt2) as u32,
                ..crate::kernels::quant::embed_params(1, 1, c, pos)
            };
            self.encode.write_uniform(gpu, &p);
        } else {
            let wpe = (s.arch == Arch::Gpt2) as u32;
            self.encode.write_uniform(gpu, &EncoderParams { n: 1, t: 1, c, wpe, pos0: pos, _pad: [0; 3] });
        }
        for l in &self.layers {
            attention::set_decode_len_in(gpu, &l.attn, pos + 1, &s.attn);
            if s.arch == Arch::Llama {
                let ropes = &l.pre[l.pre.len() - 2..];
                for (part, d) in ropes.iter().enumerate() {
                    d.write_uniform(gpu, &RopeParams { heads: s.rope_heads(part, pos), inverse: 0 });
                }
            }
        }
    }

    /// Positions the cache holds.
    pub fn capacity(&self) -> usize {
        self.max_t
    }
}

impl Gpt {
    /// Feeds the first `tokens` of a prompt (at most T of this batch-1 model) into an empty
    /// `dec` at once: this model's blocks over them (batched matmuls and the flash attention,
    /// in one submit), then every layer's keys and values copied into the cache, which `feed`
    /// of each token would have filled one row at a time.
    pub fn prefill(&self, gpu: &Gpu, dec: &mut Decoder, tokens: &[u32]) -> Result<(), GpuError> {
        let n = tokens.len();
        if dec.pos != 0 || self.b != 1 || n > self.t.min(dec.max_t) {
            return Err(GpuError::Unsupported(format!(
                "prefill of {n} tokens at position {}: an empty cache takes up to {} at once",
                dec.pos,
                self.t.min(dec.max_t)
            )));
        }
        let mut padded = tokens.to_vec();
        padded.resize(self.t, 0);
        // Causal attention: the padding after the prompt changes none of its positions.
        self.upload_batch(gpu, 0, &padded, &vec![0; self.t]);
        let mut rec = Recorder::new(gpu);
        self.record_eval_inputs(&mut rec);
        // The blocks only: the keys and values are all the cache needs, so no head, no logits.
        self.edges[0].iter().chain(&self.body[..self.blocks_end]).for_each(|cmd| cmd.record(&mut rec));
        let (q, bytes) = (self.shape().attn.qkv, self.logits.dtype.bytes());
        let row = bytes * (dec.shape.attn.nkv * dec.shape.attn.hs) as u64;
        for (acts, layer) in self.acts.iter().zip(&dec.layers) {
            for (base, cache) in [(q.k_base, &layer.k_cache), (q.v_base, &layer.v_cache)] {
                let at = |r: usize| bytes * (base as u64 + r as u64 * q.kv_stride as u64);
                if row == bytes * q.kv_stride as u64 {
                    rec.copy(&acts.qkv.buf, at(0), &cache.buf, 0, n as u64 * row);
                } else {
                    (0..n).for_each(|r| rec.copy(&acts.qkv.buf, at(r), &cache.buf, r as u64 * row, row));
                }
            }
        }
        rec.submit()?;
        dec.pos = n;
        Ok(())
    }
}
