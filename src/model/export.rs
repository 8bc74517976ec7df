//! GPT-2 and Llama in GGUF as llama.cpp names them: which tensor goes where in which type
//! (`plan`), the file with its metadata and tokenizer (`write_model`), and a file read back into
//! a config, tensors in wgtrain's naming and a tokenizer (`read_gpt2`, which reads both).
//!
//! wgtrain keeps matmul weights (out, in) row-major: ggml's dims [in, out], rows of `in`
//! elements, so blocks run along the input features and the weights go in untransposed.

use std::path::Path;

use super::{Arch, GptConfig};
use crate::data::tokenizer::Tokenizer;
use crate::formats::gguf::{Gguf, Value, Writer};
use crate::formats::quant::{self, QType};

/// What `wgtrain quantize` makes of a model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Format {
    /// The type of every linear weight (and of the embedding and an untied LM head with
    /// `embeddings`).
    pub qtype: QType,
    /// wte too: the embedding lookup and the tied LM head then dequantize its rows.
    pub embeddings: bool,
}

/// One tensor of the file: its names, wgtrain shape, type, and why it is not in the format's
/// type, if it is not.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub name: String,
    pub gguf: String,
    pub shape: Vec<usize>,
    pub qtype: QType,
    pub note: Option<String>,
}

/// The blocks' linear layers' weights (GPT-2's c_attn, c_proj, c_fc; Llama's q/k/v/o and
/// gate/up/down projections): what QAT fake-quantizes and quantization quantizes.
pub fn is_linear_weight(name: &str) -> bool {
    let gpt2 = name.contains(".c_attn.") || name.contains(".c_proj.") || name.contains(".c_fc.");
    let llama = name.starts_with("model.layers.") && name.ends_with("_proj.weight");
    name.ends_with(".weight") && (gpt2 || llama)
}

/// llama.cpp's name of a wgtrain (HF GPT-2) parameter.
pub fn gguf_name(name: &str) -> String {
    let top = [
        ("wte.weight", "token_embd.weight"),
        ("wpe.weight", "position_embd.weight"),
        ("ln_f.weight", "output_norm.weight"),
        ("ln_f.bias", "output_norm.bias"),
    ];
    let parts = [
        ("ln_1.", "attn_norm."),
        ("attn.c_attn.", "attn_qkv."),
        ("attn.c_proj.", "attn_output."),
        ("ln_2.", "ffn_norm."),
        ("mlp.c_fc.", "ffn_up."),
        ("mlp.c_proj.", "ffn_down."),
    ];
    rename(name, &top, "h.", &parts)
}

/// A parameter's name in llama.cpp's naming: a whole-name match in `top`, or a layer's tensor
/// (after `layer_prefix` and the layer number) as blk.N. and its part renamed by `parts`.
pub(crate) fn rename(name: &str, top: &[(&str, &str)], layer_prefix: &str, parts: &[(&str, &str)]) -> String {
    if let Some((_, g)) = top.iter().find(|(n, _)| *n == name) {
        return g.to_string();
    }
    let Some(rest) = name.strip_prefix(layer_prefix) else { return name.to_string() };
    let (layer, tail) = rest.split_once('.').unwrap_or((rest, ""));
    let (from, to) = parts.iter().find(|(f, _)| tail.starts_with(f)).copied().unwrap_or(("", ""));
    format!("blk.{layer}.{to}{}", &tail[from.len()..])
}

/// Every parameter of `config` in the file, in table order: linear weights (and wte with
/// `embeddings`) in the format's type unless their rows are not whole blocks, the rest f32.
pub fn plan(config: &GptConfig, format: Format) -> Vec<Planned> {
    config
        .parameter_specs()
        .into_iter()
        .map(|(name, shape)| {
            let head = name == config.embedding() || name == "lm_head.weight";
            let wanted = is_linear_weight(&name) || (format.embeddings && head);
            let row = *shape.last().unwrap_or(&0);
            let (qtype, note) = if !wanted {
                (QType::F32, None)
            } else if format.qtype.is_block() && !row.is_multiple_of(quant::QK) {
                (QType::F32, Some(format!("rows of {row} are not whole blocks of {}: kept f32", quant::QK)))
            } else {
                (format.qtype, None)
            };
            Planned { gguf: name_in_gguf(config)(&name), name, shape, qtype, note }
        })
        .collect()
}

/// llama.cpp's naming of `config`'s architecture.
pub fn name_in_gguf(config: &GptConfig) -> fn(&str) -> String {
    match config.arch {
        Arch::Gpt2 => gguf_name,
        Arch::Llama => super::llama_gguf::gguf_name,
    }
}

/// ggml's dims of a wgtrain shape: reversed (the row length first).
pub(crate) fn ggml_dims(shape: &[usize]) -> Vec<u64> {
    shape.iter().rev().map(|&d| d as u64).collect()
}

/// The GGUF file type of a format (llama.cpp's `llama_ftype`).
fn file_type(q: QType) -> u32 {
    match q {
        QType::F32 => 0,
        QType::F16 => 1,
        QType::Q4_0 => 2,
        QType::Q4_1 => 3,
        QType::Q8_0 => 7,
    }
}

/// The bytes of each planned tensor, encoded on the CPU from wgtrain-layout values.
pub fn encode(planned: &[Planned], values: &[Vec<f32>]) -> Vec<Vec<u8>> {
    planned.iter().zip(values).map(|(p, v)| quant::quantize(v, p.qtype)).collect()
}

/// What a GGUF file says besides its tensors.
pub struct Header<'a> {
    pub config: &'a GptConfig,
    pub tok: &'a Tokenizer,
    /// tokenizer.chat_template.
    pub chat_template: Option<&'a str>,
    /// The token that ends a chat turn, where it is not the end-of-text.
    pub eos: Option<u32>,
    /// general.file_type: the type most tensors are in.
    pub qtype: QType,
}

/// Writes model.gguf at `path` (through a synced temporary file): the architecture's metadata,
/// the tokenizer, then each planned tensor with its bytes. Returns the file's size.
pub fn write_model(path: &Path, h: &Header, planned: &[Planned], data: &[Vec<u8>]) -> Result<u64, String> {
    let mut w = Writer::default();
    let config = h.config;
    let arch = match config.arch {
        Arch::Gpt2 => "gpt2",
        Arch::Llama => "llama",
    };
    w.meta("general.architecture", Value::Str(arch.into()));
    w.meta("general.name", Value::Str(format!("wgtrain {arch}")));
    w.meta("general.file_type", Value::U32(file_type(h.qtype)));
    match config.arch {
        Arch::Gpt2 => gpt2_meta(&mut w, config),
        Arch::Llama => super::llama_gguf::write_meta(&mut w, config),
    }
    crate::data::gguf_tokenizer::write_meta(&mut w, h.tok, config.vocab_size, h.eos)?;
    if let Some(t) = h.chat_template {
        w.meta("tokenizer.chat_template", Value::Str(t.into()));
    }
    for (p, bytes) in planned.iter().zip(data) {
        w.tensor(&p.gguf, ggml_dims(&p.shape), p.qtype, bytes.clone());
    }
    let bytes = w.bytes();
    let tmp = path.with_extension("gguf.tmp");
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    std::fs::write(&tmp, &bytes).map_err(|e| io(&tmp, e))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    Ok(bytes.len() as u64)
}

/// The gpt2.* metadata of `config`.
fn gpt2_meta(w: &mut Writer, config: &GptConfig) {
    shape_meta(w, "gpt2", config);
    w.meta("gpt2.attention.layer_norm_epsilon", Value::F32(1e-5));
}

/// The sizes every architecture's metadata starts with, under `arch`.
pub(crate) fn shape_meta(w: &mut Writer, arch: &str, config: &GptConfig) {
    let sizes = [
        ("context_length", config.n_positions),
        ("embedding_length", config.n_embd),
        ("feed_forward_length", config.mlp()),
        ("block_count", config.n_layer),
        ("attention.head_count", config.n_head),
    ];
    for (key, x) in sizes {
        w.meta(&format!("{arch}.{key}"), Value::U32(x as u32));
    }
}

/// A tensor of a GGUF model in wgtrain's naming and shape, its bytes in ggml's layout.
pub struct Loaded {
    pub name: String,
    pub shape: Vec<usize>,
    pub qtype: QType,
    pub bytes: Vec<u8>,
}

/// A GPT-2 read from a GGUF file.
pub struct GgufModel {
    pub config: GptConfig,
    /// In table order (`GptConfig::parameter_specs`).
    pub tensors: Vec<Loaded>,
    pub tokenizer: Tokenizer,
    /// tokenizer.chat_template, where the file has one.
    pub chat_template: Option<String>,
    /// tokenizer.ggml.eos_token_id: where a chat turn ends.
    pub eos: Option<u32>,
}

pub(crate) fn meta_usize(g: &Gguf, key: &str) -> Result<usize, String> {
    g.get(key).and_then(Value::as_u64).map(|v| v as usize).ok_or_else(|| format!("no integer {key}"))
}

/// Reads a gpt2-architecture GGUF: the config from its metadata (the vocabulary from
/// token_embd), every tensor the config needs with the shape it needs, and its tokenizer.
/// LayerNorms, biases and wpe must be F32 or F16; block formats need whole blocks per row.
pub fn read_gpt2(path: &Path) -> Result<GgufModel, String> {
    let g = Gguf::read(path)?;
    from_gguf(&g).map_err(|e| format!("{}: {e}", path.display()))
}

/// `read_gpt2` of a parsed file.
pub fn from_gguf(g: &Gguf) -> Result<GgufModel, String> {
    let arch = g.get("general.architecture").and_then(Value::as_str).unwrap_or("");
    if arch == "llama" {
        return super::llama_gguf::from_gguf(g);
    }
    if arch != "gpt2" {
        return Err(format!("architecture {arch:?}; wgtrain reads gpt2 and llama"));
    }
    let embd = g.tensor("token_embd.weight").ok_or_else(|| "no token_embd.weight".to_string())?;
    let n_embd = meta_usize(g, "gpt2.embedding_length")?;
    let ff = meta_usize(g, "gpt2.feed_forward_length").unwrap_or(4 * n_embd);
    let config = GptConfig {
        n_inner: (ff != 4 * n_embd).then_some(ff),
        ..GptConfig::gpt2(
            meta_usize(g, "gpt2.block_count")?,
            meta_usize(g, "gpt2.attention.head_count")?,
            n_embd,
            embd.dims.get(1).copied().unwrap_or(0) as usize,
            meta_usize(g, "gpt2.context_length")?,
        )
    };
    config.validate()?;
    if config.n_layer > g.tensors.len() / 12 {
        return Err(format!("block_count {} needs more tensors than the file's {}", config.n_layer, g.tensors.len()));
    }
    let tensors = read_tensors(g, &config, gguf_name)?;
    finish_model(g, config, tensors)
}

/// Every tensor `config` needs from `g`, found by its llama.cpp name (`gguf_name`) and with
/// the dims the config needs. Only linear weights, the embedding and a separate LM head may be
/// block-quantized; the rest must be F32 or F16.
pub(crate) fn read_tensors(g: &Gguf, config: &GptConfig, gguf_name: fn(&str) -> String) -> Result<Vec<Loaded>, String> {
    let mut tensors = Vec::new();
    for (name, shape) in config.parameter_specs() {
        let gname = gguf_name(&name);
        let t = g.tensor(&gname).ok_or_else(|| format!("no tensor {gname}"))?;
        if t.dims != ggml_dims(&shape) {
            return Err(format!("{gname} has dims {:?}, the config needs {:?}", t.dims, ggml_dims(&shape)));
        }
        let may_block = is_linear_weight(&name) || name == config.embedding() || name == "lm_head.weight";
        if t.qtype.is_block() && !may_block {
            return Err(format!("{gname} is {}; wgtrain reads it as F32 or F16", t.qtype.name()));
        }
        tensors.push(Loaded { name, shape, qtype: t.qtype, bytes: g.data(t).to_vec() });
    }
    Ok(tensors)
}

/// The model of `config` and its `tensors`, with the tokenizer, chat template and eos of `g`'s
/// metadata.
pub(crate) fn finish_model(g: &Gguf, config: GptConfig, tensors: Vec<Loaded>) -> Result<GgufModel, String> {
    let tokenizer = crate::data::gguf_tokenizer::from_gguf(g, config.vocab_size)?;
    let chat_template = g.get("tokenizer.chat_template").and_then(Value::as_str).map(str::to_string);
    let eos = g.get("tokenizer.ggml.eos_token_id").and_then(Value::as_u64).map(|v| v as u32);
    Ok(GgufModel { tokenizer, config, tensors, chat_template, eos })
}
