//! Decoding with a KV cache, one token per row per step: each layer's keys and values of the
//! tokens a row has seen stay on the GPU, so a new token costs one row through every layer.
//! Rows may sit at different positions (a batch of prompts of different lengths): the
//! matmuls, norms and MLPs run over all rows at once, while each row's embedding, RoPE and
//! attention over its own cache run on a copy of its slice, with its own position in their
//! uniforms. Llama's keys enter the cache already rotated (RoPE at the token's position).

use super::block::{self, post_attention, pre_attention, LayerActs, Shape};
use super::{Arch, Gpt};
use crate::gpu::{Category, Dispatch, Gpu, GpuBuffer, GpuError, Recorder};
use crate::kernels::encoder::EncoderParams;
use crate::kernels::rope::{self, RopeParams};
use crate::kernels::{Dtype, Tensor};
use crate::tune::attention;
use crate::tune::matmul::{Dims, Matmul};

/// One row's part of a layer: its cache, its q (and Llama's k) copied out of the batch's qkv
/// for RoPE and the attention, and the attention's output before it goes back to the batch.
struct RowLayer {
    k_cache: Tensor, // (max_t, NKV·HS)
    v_cache: Tensor, // (max_t, NKV·HS)
    q: Tensor,       // (NH·HS)
    k: Tensor,       // (NKV·HS), rotated (Llama)
    att: Tensor,     // (NH·HS)
    /// RoPE on q and k (Llama; none for GPT-2).
    rope: Vec<Dispatch>,
    attn: Dispatch,
}

struct Layer {
    /// The step's activations (N = rows).
    acts: LayerActs,
    /// The first norm and the input projections, over every row (no RoPE).
    pre: Vec<Dispatch>,
    rows: Vec<RowLayer>,
    /// output projection, residual, norm, MLP, residual
    post: Vec<Dispatch>,
}

/// One row's token, its embedding and the position its next token goes to.
struct Row {
    pos: usize,
    token: GpuBuffer,
    encode: Dispatch,
    x: Tensor, // (C)
}

/// A model of `rows` rows that reads the parameters of a `Gpt` and keeps a KV cache per row.
pub struct Decoder {
    shape: Shape,
    /// One row (B 1, T 1): where its q sits in its copy, its RoPE heads.
    one: Shape,
    v: usize,
    max_t: usize,
    /// The embedding dequantizes wte (its uniform is quant.wgsl's).
    quant_embed: bool,
    rows: Vec<Row>,
    /// The embeddings of every row, the first layer's input.
    x0: Tensor,
    layers: Vec<Layer>,
    head: Vec<Dispatch>,
    logits: Tensor, // (rows, V)
    // Per-step activations, kept for the dispatches that bind them.
    _keep: Vec<Tensor>,
}

/// Most positions a decoder's cache holds (a model's n_positions may be far more: SmolLM2's is
/// 8192); `sample` slides its window past it.
pub const DECODE_MAX: usize = 2048;

impl Gpt {
    /// A one-row decoder over this model's parameters (shared, not copied), its cache holding
    /// n_positions or `DECODE_MAX` positions, whichever is fewer.
    pub fn decoder(&self, gpu: &Gpu) -> Result<Decoder, GpuError> {
        self.decoder_rows(gpu, 1)
    }

    /// A decoder of `rows` rows, each with its own cache and position.
    pub fn decoder_rows(&self, gpu: &Gpu, rows: usize) -> Result<Decoder, GpuError> {
        self.refresh_fake_quant(gpu)?;
        let cfg = &self.config;
        let (c, v, max_t) = (cfg.n_embd as u32, cfg.vocab_size as u32, cfg.n_positions.min(DECODE_MAX) as u32);
        let (s, one) = (Shape::new(cfg, rows.max(1), 1)?, Shape::new(cfg, 1, 1)?);
        let act = self.precision.act();
        let widths = [c, one.q(), one.planes()[1].1];
        if act == Dtype::F16 && widths.iter().any(|w| w % 2 == 1) {
            return Err(GpuError::Unsupported(format!(
                "an f16 decoder copies rows of {widths:?} elements: each must be even"
            )));
        }
        let f = |len: u64| Tensor::new(gpu, Category::Activations, len, act);
        let (top, mm) = (self.weights(""), Matmul::new(gpu));
        let mut row_state = Vec::new();
        for _ in 0..s.b {
            let (token, x) = (gpu.pool.storage(Category::Activations, 16)?, f(c as u64)?);
            let encode = block::embed(gpu, x.v(), &token, &top, cfg.embedding(), (v, 1, 1, c), max_t)?;
            row_state.push(Row { pos: 0, token, encode, x });
        }
        let x0 = f(s.b as u64 * c as u64)?;
        let (mut keep, mut layers, mut x) = (Vec::new(), Vec::new(), x0.clone());
        for l in 0..cfg.n_layer {
            let w = self.layer_weights(l);
            let acts = LayerActs::new(gpu, &s, act)?;
            let mut pre = pre_attention(&mm, &w, &x, &acts, &s)?;
            if s.arch == Arch::Llama {
                pre.truncate(pre.len() - 2);
            }
            let rows = (0..s.b).map(|_| self.row_layer(gpu, &w, &one, max_t)).collect::<Result<_, _>>()?;
            let post = post_attention(&mm, &w, &x, &acts, &s)?;
            keep.push(x);
            x = acts.residual3.clone();
            layers.push(Layer { acts, pre, rows, post });
        }
        let stats = Tensor::new(gpu, Category::Activations, 2 * s.b as u64, Dtype::F32)?;
        let (lnf, logits) = (f(s.b as u64 * c as u64)?, f(s.b as u64 * v as u64)?);
        let mut head = vec![block::norm(gpu, &top, &s, cfg.names().norm_f, [lnf.v(), stats.v(), x.v()])?];
        let head_name = cfg.head().trim_end_matches(".weight");
        head.extend(block::linear(&mm, gpu, logits.v(), lnf.v(), &top, head_name, false, Dims::linear(s.b, v, c))?);
        keep.extend([x, lnf, stats]);
        let quant_embed = self.quant.as_ref().is_some_and(|q| q.tensors.contains_key(cfg.embedding()));
        let (v, max_t) = (v as usize, max_t as usize);
        Ok(Decoder { shape: s, one, v, max_t, quant_embed, rows: row_state, x0, layers, head, logits, _keep: keep })
    }

    /// One row's cache, copies and dispatches of a layer.
    fn row_layer(&self, gpu: &Gpu, w: &block::Weights, one: &Shape, max_t: u32) -> Result<RowLayer, GpuError> {
        let f = |len: u64| Tensor::new(gpu, Category::Activations, len, self.precision.act());
        let (q_len, kvd) = (one.q() as u64, one.planes()[1].1 as u64);
        let (k_cache, v_cache) = (f(max_t as u64 * kvd)?, f(max_t as u64 * kvd)?);
        let (q, k, att) = (f(q_len)?, f(kvd)?, f(q_len)?);
        let mut rope = Vec::new();
        if self.config.arch == Arch::Llama {
            let table = w.rope.ok_or_else(|| GpuError::Unsupported("a Llama decoder needs its RoPE table".into()))?;
            rope.push(rope::apply(gpu, q.v(), table, one.rope_heads(0, 0), false)?);
            rope.push(rope::apply(gpu, k.v(), table, one.rope_heads(1, 0), false)?);
        }
        let attn = attention::decode_in(gpu, att.v(), q.v(), [k_cache.v(), v_cache.v()], max_t, &one.attn)?;
        Ok(RowLayer { k_cache, v_cache, q, k, att, rope, attn })
    }
}

impl Decoder {
    /// Feeds one token at row 0's position (a one-row decoder) and returns the logits (V).
    pub fn next(&mut self, gpu: &Gpu, token: u32) -> Result<Vec<f32>, GpuError> {
        self.next_rows(gpu, &[token])
    }

    /// Feeds one token per row, each at its row's position, and returns the logits of every
    /// row (rows × V).
    pub fn next_rows(&mut self, gpu: &Gpu, tokens: &[u32]) -> Result<Vec<f32>, GpuError> {
        pollster::block_on(self.next_rows_async(gpu, tokens))
    }

    /// `next` awaiting the logits instead of blocking (the browser's way).
    pub async fn next_async(&mut self, gpu: &Gpu, token: u32) -> Result<Vec<f32>, GpuError> {
        self.next_rows_async(gpu, &[token]).await
    }

    /// `next_rows` awaiting the logits.
    pub async fn next_rows_async(&mut self, gpu: &Gpu, tokens: &[u32]) -> Result<Vec<f32>, GpuError> {
        self.step(gpu, tokens, true)?;
        super::read_as_f32_async(gpu, &self.logits, 0, self.rows.len() * self.v).await
    }

    /// Feeds one token of a prompt into row 0's cache: the layers only, with neither the LM
    /// head nor a readback (the queue runs ahead until the next `next`).
    pub fn feed(&mut self, gpu: &Gpu, token: u32) -> Result<(), GpuError> {
        self.step(gpu, &[token], false)
    }

    fn step(&mut self, gpu: &Gpu, tokens: &[u32], head: bool) -> Result<(), GpuError> {
        if tokens.len() != self.rows.len() {
            return Err(GpuError::Unsupported(format!(
                "{} tokens for a decoder of {} rows",
                tokens.len(),
                self.rows.len()
            )));
        }
        if self.rows.iter().any(|r| r.pos >= self.max_t) {
            return Err(GpuError::Unsupported(format!("the KV cache holds {} positions (n_positions)", self.max_t)));
        }
        for (r, &t) in tokens.iter().enumerate() {
            self.set_position(gpu, r, t);
        }
        let mut rec = Recorder::new(gpu);
        let bytes = self.logits.dtype.bytes();
        let c = bytes * self.shape.c as u64;
        for (b, row) in self.rows.iter().enumerate() {
            rec.dispatch(&row.encode);
            rec.copy(&row.x.buf, 0, &self.x0.buf, b as u64 * c, c);
        }
        for l in &self.layers {
            rec.run(&l.pre);
            for (b, row) in l.rows.iter().enumerate() {
                self.record_row_attention(&mut rec, l, row, b);
            }
            rec.run(&l.post);
        }
        if head {
            rec.run(&self.head);
        }
        rec.submit()?;
        self.rows.iter_mut().for_each(|r| r.pos += 1);
        Ok(())
    }

    /// Row `b`'s attention in layer `l`: its q and k out of the batch's qkv (RoPE on them for
    /// Llama), k and v appended to its cache at its position, the attention over its cache,
    /// and the output back into the batch's.
    fn record_row_attention(&self, rec: &mut Recorder, l: &Layer, row: &RowLayer, b: usize) {
        let (bytes, qkv, pos) = (self.logits.dtype.bytes(), &self.shape.attn.qkv, self.rows[b].pos as u64);
        let (q_len, kvd) = (bytes * self.one.q() as u64, bytes * self.one.planes()[1].1 as u64);
        let at = |base: u32, stride: u32| bytes * (base as u64 + b as u64 * stride as u64);
        let src = &l.acts.qkv.buf;
        rec.copy(src, at(0, qkv.q_stride), &row.q.buf, 0, q_len);
        if row.rope.is_empty() {
            rec.copy(src, at(qkv.k_base, qkv.kv_stride), &row.k_cache.buf, pos * kvd, kvd);
        } else {
            rec.copy(src, at(qkv.k_base, qkv.kv_stride), &row.k.buf, 0, kvd);
            rec.run(&row.rope);
            rec.copy(&row.k.buf, 0, &row.k_cache.buf, pos * kvd, kvd);
        }
        rec.copy(src, at(qkv.v_base, qkv.kv_stride), &row.v_cache.buf, pos * kvd, kvd);
        rec.dispatch(&row.attn);
        rec.copy(&row.att.buf, 0, &l.acts.atty.buf, b as u64 * q_len, q_len);
    }

    /// Points row `b`'s uniforms at its position for `token`: the embedding's (GPT-2's wpe
    /// row), RoPE's (Llama) and the attention's cache length.
    fn set_position(&self, gpu: &Gpu, b: usize, token: u32) {
        let (row, s) = (&self.rows[b], &self.shape);
        let pos = row.pos as u32;
        gpu.write(&row.token, 0, &[token]);
        if self.quant_embed {
            let p = crate::kernels::quant::QuantParams {
                has_bias: (s.arch == Arch::Gpt2) as u32,
                ..crate::kernels::quant::embed_params(1, 1, s.c, pos)
            };
            row.encode.write_uniform(gpu, &p);
        } else {
            let wpe = (s.arch == Arch::Gpt2) as u32;
            row.encode.write_uniform(gpu, &EncoderParams { n: 1, t: 1, c: s.c, wpe, pos0: pos, _pad: [0; 3] });
        }
        for l in &self.layers {
            let r = &l.rows[b];
            attention::set_decode_len_in(gpu, &r.attn, pos + 1, &self.one.attn);
            for (part, d) in r.rope.iter().enumerate() {
                d.write_uniform(gpu, &RopeParams { heads: self.one.rope_heads(part, pos), inverse: 0 });
            }
        }
    }

    /// Positions the cache holds.
    pub fn capacity(&self) -> usize {
        self.max_t
    }

    /// Rows the decoder runs.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Where row `b`'s next token goes: the tokens it has seen.
    pub fn pos(&self, b: usize) -> usize {
        self.rows[b].pos
    }

    /// Empties row `b`'s cache (its next token goes to position 0).
    pub fn reset(&mut self, b: usize) {
        self.rows[b].pos = 0;
    }
}

impl Gpt {
    /// Feeds the first `tokens` of a prompt (at most T of this model) into row 0 of an empty
    /// `dec` at once (`prefill_rows`).
    pub fn prefill(&self, gpu: &Gpu, dec: &mut Decoder, tokens: &[u32]) -> Result<(), GpuError> {
        self.prefill_rows(gpu, dec, &[tokens])
    }

    /// Feeds prompt j of `prompts` (at most B of them, each at most T tokens) into row j of
    /// `dec`, whose caches those rows start empty: this model's blocks over them (batched
    /// matmuls and the flash attention, in one submit), then every layer's keys and values
    /// of each prompt copied into its row's cache, which feeding each token would have filled
    /// one position at a time.
    pub fn prefill_rows(&self, gpu: &Gpu, dec: &mut Decoder, prompts: &[&[u32]]) -> Result<(), GpuError> {
        let cap = self.t.min(dec.max_t);
        let fits = prompts.len() <= self.b.min(dec.rows.len()) && prompts.iter().all(|p| p.len() <= cap);
        if !fits || dec.rows.iter().take(prompts.len()).any(|r| r.pos != 0) {
            return Err(GpuError::Unsupported(format!(
                "prefill of {} prompts: empty rows of the decoder take up to {} prompts of up to {cap} tokens",
                prompts.len(),
                self.b.min(dec.rows.len())
            )));
        }
        let mut padded = vec![0; self.b * self.t];
        for (j, p) in prompts.iter().enumerate() {
            padded[j * self.t..][..p.len()].copy_from_slice(p);
        }
        // Causal attention: the padding after each prompt changes none of its positions.
        self.upload_batch(gpu, 0, &padded, &vec![0; self.b * self.t]);
        let mut rec = Recorder::new(gpu);
        self.record_eval_inputs(&mut rec);
        // The blocks only: the keys and values are all the cache needs, so no head, no logits.
        self.edges[0].iter().chain(&self.body[..self.blocks_end]).for_each(|cmd| cmd.record(&mut rec));
        let (q, bytes) = (self.shape().attn.qkv, self.logits.dtype.bytes());
        let row = bytes * dec.one.planes()[1].1 as u64;
        for (acts, layer) in self.acts.iter().zip(&dec.layers) {
            for (j, p) in prompts.iter().enumerate().filter(|(_, p)| !p.is_empty()) {
                let (n, first) = (p.len() as u64, (j * self.t) as u64);
                for (base, cache) in [(q.k_base, &layer.rows[j].k_cache), (q.v_base, &layer.rows[j].v_cache)] {
                    let at = |r: u64| bytes * (base as u64 + (first + r) * q.kv_stride as u64);
                    if row == bytes * q.kv_stride as u64 {
                        rec.copy(&acts.qkv.buf, at(0), &cache.buf, 0, n * row);
                    } else {
                        (0..n).for_each(|r| rec.copy(&acts.qkv.buf, at(r), &cache.buf, r * row, row));
                    }
                }
            }
        }
        rec.submit()?;
        prompts.iter().zip(&mut dec.rows).for_each(|(p, r)| r.pos = p.len());
        Ok(())
    }
}
