//! Decoding one token at a time with a KV cache: each layer's keys and values of the tokens
//! seen so far stay on the GPU, so a new token costs one row through every layer.

use super::{span, Gpt};
use crate::gpu::{Category, Dispatch, Gpu, GpuBuffer, GpuError, Recorder};
use crate::kernels::elementwise;
use crate::kernels::encoder::{self, EncoderParams};
use crate::kernels::matmul::{Dims, Matmul};
use crate::kernels::{attention, gelu, layernorm};

struct Layer {
    k_cache: GpuBuffer, // (n_positions, C)
    v_cache: GpuBuffer, // (n_positions, C)
    qkv: GpuBuffer,     // (1, 3C)
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
    layers: Vec<Layer>,
    head: Vec<Dispatch>,
    logits: GpuBuffer,
    // Parameters and per-token activations, kept for the dispatches that bind them.
    _keep: Vec<GpuBuffer>,
}

impl Gpt {
    /// A decoder over this model's parameters (shared, not copied).
    pub fn decoder(&self, gpu: &Gpu) -> Result<Decoder, GpuError> {
        let cfg = &self.config;
        let (c, v, nh, max_t) = (
            cfg.n_embd as u32,
            cfg.vocab_size as u32,
            cfg.n_head as u32,
            cfg.n_positions as u32,
        );
        let f = |len: u32| gpu.pool.storage(Category::Activations, 4 * len as u64);
        let params = &self.arena.params;
        let mm = Matmul::new(gpu);
        let lin = |out: u32, inp: u32| Dims::linear(1, out, inp);
        let token = gpu.pool.storage(Category::Activations, 16)?;
        let x0 = f(c)?;
        let encode = encoder::forward(
            gpu,
            (&x0).into(),
            &token,
            self.p(params, "wte.weight"),
            self.p(params, "wpe.weight"),
            v,
            1,
            1,
            c,
            max_t,
        )?;
        let mut keep = vec![params.clone(), x0.clone()];
        let mut layers = Vec::new();
        let mut x = x0;
        for l in 0..cfg.n_layer {
            let w = |s: &str| self.p(params, &format!("h.{l}.{s}"));
            let (ln1, stats, qkv, atty, attproj, res2, ln2) = (f(c)?, f(2)?, f(3 * c)?, f(c)?, f(c)?, f(c)?, f(c)?);
            let (fch, fch_gelu, fcproj, res3) = (f(4 * c)?, f(4 * c)?, f(c)?, f(c)?);
            let (k_cache, v_cache) = (f(max_t * c)?, f(max_t * c)?);
            let mut pre = vec![layernorm::forward(
                gpu,
                (&ln1).into(),
                (&stats).into(),
                (&x).into(),
                w("ln_1.weight"),
                w("ln_1.bias"),
                1,
                c,
            )?];
            pre.extend(mm.forward(
                (&qkv).into(),
                (&ln1).into(),
                w("attn.c_attn.weight"),
                Some(w("attn.c_attn.bias")),
                lin(3 * c, c),
            )?);
            let attn = attention::decode(
                gpu,
                (&atty).into(),
                (&qkv).into(),
                (&k_cache).into(),
                (&v_cache).into(),
                max_t,
                c,
                nh,
            )?;
            let mut post = mm.forward(
                (&attproj).into(),
                (&atty).into(),
                w("attn.c_proj.weight"),
                Some(w("attn.c_proj.bias")),
                lin(c, c),
            )?;
            post.push(elementwise::add(gpu, span(&res2, c), span(&x, c), span(&attproj, c))?);
            post.push(layernorm::forward(
                gpu,
                (&ln2).into(),
                (&stats).into(),
                (&res2).into(),
                w("ln_2.weight"),
                w("ln_2.bias"),
                1,
                c,
            )?);
            post.extend(mm.forward(
                (&fch).into(),
                (&ln2).into(),
                w("mlp.c_fc.weight"),
                Some(w("mlp.c_fc.bias")),
                lin(4 * c, c),
            )?);
            post.push(gelu::forward(gpu, (&fch_gelu).into(), (&fch).into(), 4 * c)?);
            post.extend(mm.forward(
                (&fcproj).into(),
                (&fch_gelu).into(),
                w("mlp.c_proj.weight"),
                Some(w("mlp.c_proj.bias")),
                lin(c, 4 * c),
            )?);
            post.push(elementwise::add(gpu, span(&res3, c), span(&res2, c), span(&fcproj, c))?);
            keep.extend([x.clone(), ln1, stats, atty, attproj, res2, ln2, fch, fch_gelu, fcproj]);
            layers.push(Layer {
                k_cache,
                v_cache,
                qkv,
                pre,
                attn,
                post,
            });
            x = res3;
        }
        let (lnf, stats, logits) = (f(c)?, f(2)?, f(v)?);
        let mut head = vec![layernorm::forward(
            gpu,
            (&lnf).into(),
            (&stats).into(),
            (&x).into(),
            self.p(params, "ln_f.weight"),
            self.p(params, "ln_f.bias"),
            1,
            c,
        )?];
        head.extend(mm.forward(
            (&logits).into(),
            (&lnf).into(),
            self.p(params, "wte.weight"),
            None,
            lin(v, c),
        )?);
        keep.extend([x, lnf, stats]);
        Ok(Decoder {
            c,
            nh,
            v: v as usize,
            max_t: max_t as usize,
            pos: 0,
            token,
            encode,
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
            return Err(GpuError::Unsupported(format!(
                "the KV cache holds {} positions (n_positions)",
                self.max_t
            )));
        }
        let (pos, c) = (self.pos as u32, self.c);
        gpu.write(&self.token, 0, &[token]);
        self.encode.write_uniform(
            gpu,
            &EncoderParams {
                n: 1,
                t: 1,
                c,
                buckets: 0,
                pos0: pos,
                _pad: [0; 3],
            },
        );
        for l in &self.layers {
            attention::set_decode_len(gpu, &l.attn, pos + 1, c, self.nh)?;
        }
        let mut rec = Recorder::new(gpu);
        rec.dispatch(&self.encode);
        let row = 4 * c as u64;
        for l in &self.layers {
            rec.run(&l.pre);
            // Append this token's k and v to the cache.
            rec.copy(&l.qkv, row, &l.k_cache, pos as u64 * row, row);
            rec.copy(&l.qkv, 2 * row, &l.v_cache, pos as u64 * row, row);
            rec.dispatch(&l.attn);
            rec.run(&l.post);
        }
        rec.run(&self.head);
        rec.submit()?;
        self.pos += 1;
        gpu.read(&self.logits, 0, self.v)
    }

    /// Positions the cache holds.
    pub fn capacity(&self) -> usize {
        self.max_t
    }
}
