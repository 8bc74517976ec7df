//! Llama-architecture GGUF files (llama.cpp's convert_hf_to_gguf layout): the config from and
//! to the llama.* metadata, llama.cpp's tensor names, and the rows of Q and K put back in HF's
//! order on import and in llama.cpp's on export.
//!
//! llama.cpp's converter permutes each head's rows of q_proj and k_proj for its own RoPE,
//! which pairs element 2i with 2i+1: HF row h·d + a·d/2 + j (a ∈ {0, 1}, j < d/2) becomes row
//! h·d + 2j + a. wgtrain's RoPE pairs i with i + d/2 as HF does, so the rows go back on import
//! and are permuted again on export.
//! A row is whole blocks of the tensor's type, so the permutation moves bytes and quantized
//! weights stay quantized.

use super::export::{meta_usize, GgufModel, Loaded};
use super::{Arch, GptConfig};
use crate::formats::gguf::{Gguf, Value, Writer};

/// llama.cpp's name of a wgtrain (HF Llama) parameter.
pub fn gguf_name(name: &str) -> String {
    let top = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    let parts = [
        ("input_layernorm.", "attn_norm."),
        ("self_attn.q_proj.", "attn_q."),
        ("self_attn.k_proj.", "attn_k."),
        ("self_attn.v_proj.", "attn_v."),
        ("self_attn.o_proj.", "attn_output."),
        ("post_attention_layernorm.", "ffn_norm."),
        ("mlp.gate_proj.", "ffn_gate."),
        ("mlp.up_proj.", "ffn_up."),
        ("mlp.down_proj.", "ffn_down."),
    ];
    super::export::rename(name, &top, "model.layers.", &parts)
}

/// The rows of a (heads·d, ·) weight of `row_len` elements each (bytes of a quantized row,
/// or f32 values) between llama.cpp's order and HF's: `to_hf` undoes the converter's
/// permutation, else applies it.
pub fn permute_rows<T: Copy + Default>(data: &[T], row_len: usize, heads: usize, to_hf: bool) -> Vec<T> {
    let rows = data.len() / row_len.max(1);
    let d = rows / heads.max(1);
    let mut out = vec![T::default(); data.len()];
    for h in 0..heads {
        for a in 0..2 {
            for j in 0..d / 2 {
                let (hf, ggml) = (h * d + a * (d / 2) + j, h * d + 2 * j + a);
                let (to, from) = if to_hf { (hf, ggml) } else { (ggml, hf) };
                out[to * row_len..][..row_len].copy_from_slice(&data[from * row_len..][..row_len]);
            }
        }
    }
    out
}

/// How many heads a parameter's rows hold, when llama.cpp permutes them: n_head for q_proj,
/// n_kv_head for k_proj.
pub(crate) fn permuted_heads(config: &GptConfig, name: &str) -> Option<usize> {
    if name.ends_with("self_attn.q_proj.weight") {
        Some(config.n_head)
    } else if name.ends_with("self_attn.k_proj.weight") {
        Some(config.kv_heads())
    } else {
        None
    }
}

/// Puts the rows of q_proj and k_proj of `values` (in table order) in llama.cpp's order,
/// for export.
pub fn to_ggml_order(config: &GptConfig, values: &mut [Vec<f32>]) {
    for ((name, shape), v) in config.parameter_specs().iter().zip(values.iter_mut()) {
        if let Some(heads) = permuted_heads(config, name) {
            *v = permute_rows(v, shape[1], heads, false);
        }
    }
}

/// The llama.* metadata of `config`.
pub(crate) fn write_meta(w: &mut Writer, config: &GptConfig) {
    let u = |x: usize| Value::U32(x as u32);
    super::export::shape_meta(w, "llama", config);
    w.meta("llama.attention.head_count_kv", u(config.kv_heads()));
    w.meta("llama.attention.key_length", u(config.head_size()));
    w.meta("llama.attention.value_length", u(config.head_size()));
    w.meta("llama.rope.dimension_count", u(config.head_size()));
    w.meta("llama.rope.freq_base", Value::F32(config.theta() as f32));
    w.meta("llama.attention.layer_norm_rms_epsilon", Value::F32(config.norm_eps()));
    w.meta("llama.vocab_size", u(config.vocab_size));
}

/// The config of a llama-architecture file: its sizes, θ, epsilon, and a head tied to
/// token_embd when the file has no output.weight.
fn config(g: &Gguf) -> Result<GptConfig, String> {
    let embd = g.tensor("token_embd.weight").ok_or_else(|| "no token_embd.weight".to_string())?;
    let (n_embd, n_head) = (meta_usize(g, "llama.embedding_length")?, meta_usize(g, "llama.attention.head_count")?);
    let head_dim = g.get("llama.attention.key_length").and_then(Value::as_u64).map(|v| v as usize);
    let config = GptConfig {
        arch: Arch::Llama,
        n_inner: Some(meta_usize(g, "llama.feed_forward_length")?),
        n_kv_head: Some(meta_usize(g, "llama.attention.head_count_kv").unwrap_or(n_head)),
        head_dim: head_dim.filter(|&d| d * n_head != n_embd),
        rope_theta: Some(g.get("llama.rope.freq_base").and_then(Value::as_f64).unwrap_or(10_000.0)),
        rms_norm_eps: Some(shortest(
            g.get("llama.attention.layer_norm_rms_epsilon").and_then(Value::as_f64).unwrap_or(1e-5),
        )),
        tie_word_embeddings: Some(g.tensor("output.weight").is_none()),
        ..GptConfig::gpt2(
            meta_usize(g, "llama.block_count")?,
            n_head,
            n_embd,
            embd.dims.get(1).copied().unwrap_or(0) as usize,
            meta_usize(g, "llama.context_length")?,
        )
    };
    config.validate()?;
    if let Some(s) = g.get("llama.rope.scaling.type").and_then(Value::as_str).filter(|s| *s != "none") {
        return Err(format!("llama.rope.scaling.type is {s}; wgtrain runs plain RoPE"));
    }
    if config.n_layer > g.tensors.len() / 9 {
        return Err(format!("block_count {} needs more tensors than the file's {}", config.n_layer, g.tensors.len()));
    }
    Ok(config)
}

/// The shortest decimal that an f32 metadata value reads back as (1e-5, not 9.99999974e-6).
fn shortest(v: f64) -> f64 {
    format!("{}", v as f32).parse().unwrap_or(v)
}

/// Reads a llama-architecture GGUF into a model: every tensor the config needs, with the
/// shape it needs, q_proj and k_proj rows in HF's order.
pub fn from_gguf(g: &Gguf) -> Result<GgufModel, String> {
    let config = config(g)?;
    let mut tensors: Vec<Loaded> = super::export::read_tensors(g, &config, gguf_name)?;
    for t in &mut tensors {
        if let Some(heads) = permuted_heads(&config, &t.name) {
            t.bytes = permute_rows(&t.bytes, t.qtype.bytes_for(t.shape[1]), heads, true);
        }
    }
    super::export::finish_model(g, config, tensors)
}
