//! What `--init` starts a run from: an HF checkpoint (a directory with config.json and
//! model.safetensors, or a .safetensors file with a config beside it) or a GGUF file (a
//! .gguf, or a directory from `wgtrain quantize`), whose tensors dequantize into the f32
//! masters; its tokenizer checks the data's, and its chat template goes beside the run.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::data::tokenizer::Tokenizer;
use crate::formats::quant;
use crate::model::export::{self, GgufModel};
use crate::model::{checkpoint, GptConfig};

/// The GGUF file of an `--init` that names one.
fn gguf(init: &Path) -> Option<PathBuf> {
    crate::compress::gguf_path(init)
}

fn read_gguf(path: &Path) -> anyhow::Result<GgufModel> {
    export::read_gpt2(path).map_err(|e| anyhow::anyhow!("--init {e}"))
}

/// The model's config: the GGUF's metadata, a directory's config.json, or `config` (else
/// config.json) beside a single .safetensors file.
pub(super) fn config(init: &Path, config: Option<&Path>) -> anyhow::Result<GptConfig> {
    if let Some(path) = gguf(init) {
        return Ok(read_gguf(&path)?.config);
    }
    if init.is_dir() {
        return Ok(GptConfig::load(&init.join("config.json"))?);
    }
    let cfg = config.map_or_else(|| init.with_file_name("config.json"), Path::to_path_buf);
    GptConfig::load(&cfg)
        .with_context(|| format!("--init {} is a file: its config comes from {}", init.display(), cfg.display()))
}

/// The parameters in table order, in f32.
pub(super) fn weights(init: &Path, config: &GptConfig) -> anyhow::Result<Vec<Vec<f32>>> {
    if let Some(path) = gguf(init) {
        let m = read_gguf(&path)?;
        return Ok(m.tensors.iter().map(|t| quant::dequantize(&t.bytes, t.qtype)).collect());
    }
    let file = if init.is_dir() { init.join("model.safetensors") } else { init.to_path_buf() };
    Ok(checkpoint::load_hf(&file, config)?)
}

/// The parameters as tensors in table order: a GGUF file's as it stores them (block-quantized
/// ones too), an HF checkpoint's in f32.
pub(super) fn tensors(init: &Path, config: &GptConfig) -> anyhow::Result<Vec<export::Loaded>> {
    if let Some(path) = gguf(init) {
        return Ok(read_gguf(&path)?.tensors);
    }
    Ok(crate::model::quantized::f32_tensors(config, weights(init, config)?))
}

/// The tokenizer the weights were made for, where `--init` says: the GGUF's, or a
/// tokenizer.json beside the weights. None when neither is there.
pub(super) fn tokenizer(init: &Path) -> anyhow::Result<Option<(Tokenizer, PathBuf)>> {
    if let Some(path) = gguf(init) {
        let beside = path.with_file_name("tokenizer.json");
        if !beside.is_file() {
            return Ok(Some((read_gguf(&path)?.tokenizer, path)));
        }
    }
    let file = if init.is_dir() { init.join("tokenizer.json") } else { init.with_file_name("tokenizer.json") };
    if !file.is_file() {
        return Ok(None);
    }
    let t = Tokenizer::from_file(&file, None).map_err(anyhow::Error::msg)?;
    Ok(Some((t, file)))
}

/// The chat template and the text of the token that ends a turn, from the GGUF's metadata or
/// an HF directory's tokenizer_config.json.
pub(super) fn chat(init: &Path) -> anyhow::Result<Option<(String, Option<String>)>> {
    if let Some(path) = gguf(init) {
        let m = read_gguf(&path)?;
        let eos = m.eos.map(|id| m.tokenizer.decode(&[id]));
        return Ok(m.chat_template.map(|t| (t, eos)));
    }
    let dir = if init.is_dir() { init.to_path_buf() } else { init.parent().unwrap_or(Path::new(".")).to_path_buf() };
    crate::data::chat::chat_in_dir(&dir).map_err(anyhow::Error::msg)
}
