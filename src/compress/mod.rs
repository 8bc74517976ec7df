//! Model compression: ggml block quantization and the GGUF files llama.cpp reads.

pub mod export;
pub mod gguf;
pub mod quant;

use std::path::{Path, PathBuf};

use crate::data::tokenizer::Tokenizer;
use crate::model::{checkpoint, GptConfig};
use export::Format;
pub use quant::QType;

/// What `quantize` did: each tensor's type, the ones kept unquantized and why, the sizes.
pub struct QuantizeReport {
    pub out: PathBuf,
    pub planned: Vec<export::Planned>,
    pub gguf_bytes: u64,
    pub f32_bytes: u64,
}

/// A model directory's config, f32 weights (table order) and tokenizer.
pub fn load_dir(dir: &Path) -> Result<(GptConfig, Vec<Vec<f32>>, Tokenizer), String> {
    let config = GptConfig::load(&dir.join("config.json")).map_err(|e| e.to_string())?;
    let values = checkpoint::load_hf(&dir.join("model.safetensors"), &config).map_err(|e| e.to_string())?;
    let tok = Tokenizer::for_dir(dir)?;
    Ok((config, values, tok))
}

/// `wgtrain quantize`: `model` (a checkpoint directory) into `out`/model.gguf in `format`,
/// beside its config.json and tokenizer.json.
pub fn quantize(model: &Path, format: Format, out: &Path) -> Result<QuantizeReport, String> {
    let (config, values, tok) = load_dir(model)?;
    let planned = export::plan(&config, format);
    let data = export::encode(&planned, &values);
    write_dir(out, &config, &tok, &planned, &data, format.qtype)
}

/// Writes `out`/model.gguf, config.json and tokenizer.json.
pub fn write_dir(
    out: &Path,
    config: &GptConfig,
    tok: &Tokenizer,
    planned: &[export::Planned],
    data: &[Vec<u8>],
    qtype: QType,
) -> Result<QuantizeReport, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("--out {}: {e}", out.display()))?;
    let gguf_bytes = export::write_gpt2(&out.join("model.gguf"), config, tok, planned, data, qtype)?;
    let json = serde_json::to_string_pretty(&config.to_hf_json()).expect("json");
    std::fs::write(out.join("config.json"), json).map_err(|e| format!("{}: {e}", out.display()))?;
    tok.save(&out.join("tokenizer.json"))?;
    let f32_bytes = 4 * planned.iter().map(|p| p.shape.iter().product::<usize>() as u64).sum::<u64>();
    Ok(QuantizeReport { out: out.to_path_buf(), planned: planned.to_vec(), gguf_bytes, f32_bytes })
}

/// The GGUF file a `--model` names: the .gguf itself, or DIR/model.gguf when DIR holds one
/// and no model.safetensors.
pub fn gguf_path(model: &Path) -> Option<PathBuf> {
    if model.is_file() && model.extension().is_some_and(|e| e == "gguf") {
        return Some(model.to_path_buf());
    }
    let inside = model.join("model.gguf");
    (inside.is_file() && !model.join("model.safetensors").is_file()).then_some(inside)
}
