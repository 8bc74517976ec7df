//! Model compression: a model quantized into GGUF for llama.cpp (`quantize`), one-shot and
//! structured pruning, LoRA adapters merged into their base; the block formats and the GGUF
//! file itself are `formats`', the model's GGUF names `model::export`'s.
//!
//! Layer: above model; uses gpu, formats, data, kernels, optim and model. train uses it.

pub mod oneshot;
pub mod prune;
pub mod structured;

use std::path::{Path, PathBuf};

use crate::data::tokenizer::Tokenizer;
use crate::formats::quant;
pub use crate::formats::QType;
use crate::model::export::{self, Format};
use crate::model::llama_gguf;
use crate::model::{checkpoint, GptConfig};

/// What `quantize` did: each tensor's type, the ones kept unquantized and why, the sizes.
pub struct QuantizeReport {
    pub out: PathBuf,
    pub planned: Vec<export::Planned>,
    pub gguf_bytes: u64,
    pub f32_bytes: u64,
}

/// A model to compress, in f32: its config, weights (table order), tokenizer and chat
/// template (with the text of its end-of-turn token) when it has one.
pub struct Source {
    pub config: GptConfig,
    pub values: Vec<Vec<f32>>,
    pub tok: Tokenizer,
    pub chat: Option<(String, Option<String>)>,
}

/// A model as it is stored: `Source` with its tensors in their file's types (a GGUF file's
/// blocks as they are, a checkpoint's f32).
pub struct Base {
    pub config: GptConfig,
    pub tensors: Vec<export::Loaded>,
    pub tok: Tokenizer,
    pub chat: Option<(String, Option<String>)>,
}

/// An HF checkpoint directory (config.json, model.safetensors, tokenizer.json), or a GGUF
/// file or `wgtrain quantize` directory, dequantized.
pub fn load_source(path: &Path) -> Result<Source, String> {
    let b = load_base(path)?;
    let values = b.tensors.iter().map(|t| quant::dequantize(&t.bytes, t.qtype)).collect();
    Ok(Source { config: b.config, values, tok: b.tok, chat: b.chat })
}

/// `load_source`'s model with its tensors as stored.
pub fn load_base(path: &Path) -> Result<Base, String> {
    if let Some(file) = gguf_path(path) {
        let m = export::read_gpt2(&file)?;
        let eos = m.eos.map(|id| m.tokenizer.decode(&[id]));
        let chat = m.chat_template.map(|t| (t, eos));
        return Ok(Base { config: m.config, tensors: m.tensors, tok: m.tokenizer, chat });
    }
    let config = GptConfig::load(&path.join("config.json")).map_err(|e| e.to_string())?;
    let values = checkpoint::load_hf(&path.join("model.safetensors"), &config).map_err(|e| e.to_string())?;
    let tok = Tokenizer::for_dir(path)?;
    let chat = crate::data::chat::chat_in_dir(path)?;
    let tensors = crate::model::quantized::f32_tensors(&config, values);
    Ok(Base { config, tensors, tok, chat })
}

/// A model's config, f32 weights (table order) and tokenizer, as `load_source` reads them.
pub fn load_dir(dir: &Path) -> Result<(GptConfig, Vec<Vec<f32>>, Tokenizer), String> {
    load_source(dir).map(|s| (s.config, s.values, s.tok))
}

/// `wgtrain merge`: the model in `base` (an HF directory or a GGUF file, in f32) with the LoRA
/// adapter in `adapter` merged into its weights, written to `out` as an HF checkpoint with the
/// base's tokenizer and chat template. Returns the number of merged layers.
pub fn merge_adapter(base: &Path, adapter: &Path, out: &Path) -> Result<usize, String> {
    use crate::model::lora;
    let Source { config, mut values, tok, chat } =
        load_source(base).map_err(|e| format!("--model {}: {e}", base.display()))?;
    let cfg = lora::read_peft_config(adapter).map_err(|e| format!("--lora-adapter {e}"))?;
    let specs = lora::adapter_specs(&config, &cfg).map_err(|e| format!("--lora-adapter {}: {e}", adapter.display()))?;
    let table = crate::optim::ParamTable::new(specs);
    let ad = lora::load_peft(&adapter.join(lora::ADAPTER_FILE), &config, &table).map_err(|e| e.to_string())?;
    lora::merge(&config, &cfg, &mut values, (&table, &ad));
    checkpoint::save_hf(out, &config, &values).map_err(|e| e.to_string())?;
    tok.save(&out.join("tokenizer.json"))?;
    save_chat(out, &chat)?;
    Ok(table.tensors.len() / 2)
}

/// Writes the chat template of `chat` beside a model in `out` (tokenizer_config.json).
fn save_chat(out: &Path, chat: &Option<(String, Option<String>)>) -> Result<(), String> {
    match chat {
        Some((t, e)) => crate::data::chat::save_template(out, t, e.as_deref()),
        None => Ok(()),
    }
}

/// `wgtrain quantize`: `model` (a checkpoint directory) into `out`/model.gguf in `format`,
/// beside its config.json, tokenizer.json and the chat template's tokenizer_config.json.
pub fn quantize(model: &Path, format: Format, out: &Path) -> Result<QuantizeReport, String> {
    let Source { config, mut values, tok, chat } = load_source(model)?;
    if config.arch == crate::model::Arch::Llama {
        llama_gguf::to_ggml_order(&config, &mut values);
    }
    let eos = chat.as_ref().and_then(|(_, e)| tok.token_id(e.as_deref()?));
    let planned = export::plan(&config, format);
    let data = export::encode(&planned, &values);
    let chat_template = chat.as_ref().map(|(t, _)| t.as_str());
    let header = export::Header { config: &config, tok: &tok, chat_template, eos, qtype: format.qtype };
    let report = write_dir(out, &header, &planned, &data)?;
    save_chat(out, &chat)?;
    Ok(report)
}

/// Writes `out`/model.gguf, config.json and tokenizer.json.
pub fn write_dir(
    out: &Path,
    header: &export::Header,
    planned: &[export::Planned],
    data: &[Vec<u8>],
) -> Result<QuantizeReport, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("--out {}: {e}", out.display()))?;
    let gguf_bytes = export::write_model(&out.join("model.gguf"), header, planned, data)?;
    let json = serde_json::to_string_pretty(&header.config.to_hf_json()).expect("json");
    std::fs::write(out.join("config.json"), json).map_err(|e| format!("{}: {e}", out.display()))?;
    header.tok.save(&out.join("tokenizer.json"))?;
    let f32_bytes = 4 * planned.iter().map(|p| p.shape.iter().product::<usize>() as u64).sum::<u64>();
    Ok(QuantizeReport { out: out.to_path_buf(), planned: planned.to_vec(), gguf_bytes, f32_bytes })
}

/// Where SmolLM2-135M-Instruct's GGUF is (scripts/fetch_smollm2.sh puts it there):
/// WGTRAIN_SMOLLM2, else the cache directory's SmolLM2-135M-Instruct.Q4_1.gguf.
pub fn smollm2_path() -> Option<PathBuf> {
    match std::env::var_os("WGTRAIN_SMOLLM2").filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => crate::gpu::cache_dir().map(|d| d.join("SmolLM2-135M-Instruct.Q4_1.gguf")),
    }
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

/// What `wgtrain prune` takes.
#[derive(Clone, Debug, clap::Args)]
pub struct PruneArgs {
    /// Checkpoint directory (config.json, model.safetensors), or a GGUF file (dequantized).
    #[arg(long)]
    pub model: PathBuf,
    /// Unstructured: zero this fraction of the linear weights (0 ≤ S < 1).
    #[arg(long)]
    pub to: Option<f64>,
    /// How --to ranks the weights.
    #[arg(long, value_enum, default_value = "magnitude")]
    pub method: oneshot::Method,
    /// Magnitude's ranking: over all linear weights (global) or within each tensor (layer).
    /// Wanda always ranks within each output row.
    #[arg(long, value_enum)]
    pub scope: Option<prune::PruneScope>,
    /// Structured: keep this fraction of each MLP's hidden channels, the most important on
    /// the calibration tokens, and write the smaller dense model (config n_inner).
    #[arg(long)]
    pub keep_mlp: Option<f64>,
    /// Structured, Llama: keep this many query heads per layer, the same number for each
    /// key/value head (a multiple of n_kv_head); with --keep-mlp, both are cut.
    #[arg(long)]
    pub keep_heads: Option<usize>,
    /// Calibration tokens for wanda and structured pruning: an llm.c token file or a `wgtrain
    /// prepare` directory (its train.bin).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Calibration batches of --batch-size × --seq-len tokens.
    #[arg(long, default_value_t = 16)]
    pub calib_batches: usize,
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// The model's n_positions by default.
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// The pruned model's directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite a model already in --out.
    #[arg(long)]
    pub force: bool,
}

/// What `prune` did.
#[derive(Debug)]
pub struct PruneReport {
    /// Linear weights zeroed, of all linear weights (unstructured).
    pub zeroed: u64,
    pub linear: u64,
    /// Parameters before and after (structured).
    pub params: (u64, u64),
    /// MLP hidden channels before and after.
    pub mlp: (usize, usize),
    /// Query heads per layer before and after.
    pub heads: (usize, usize),
    pub config: GptConfig,
}

/// `wgtrain prune`: the model in `a.model`, pruned as `a` says, into `a.out`.
pub fn prune_model(gpu: &crate::Gpu, a: &PruneArgs) -> Result<PruneReport, String> {
    check_prune_args(a)?;
    if !a.force && a.out.join("model.safetensors").exists() {
        return Err(format!(
            "--out {}: holds a model.safetensors already; pick another directory or pass --force",
            a.out.display()
        ));
    }
    let Source { config, mut values, tok, chat } =
        load_source(&a.model).map_err(|e| format!("--model {}: {e}", a.model.display()))?;
    if let Some(k) = a.keep_heads {
        structured::check_keep_heads(&config, k).map_err(|e| format!("{e} ({})", a.model.display()))?;
    }
    let table = crate::optim::ParamTable::new(config.parameter_specs());
    let linear = table.tensors.iter().filter(|t| export::is_linear_weight(&t.name)).map(|t| t.numel()).sum();
    let (before, mlp, heads) = (table.numel(), config.mlp(), config.n_head);
    let mut zeroed = 0;
    let config = match a.to {
        Some(s) if a.method == oneshot::Method::Magnitude => {
            zeroed = oneshot::magnitude(&table, &mut values, s, a.scope.unwrap_or_default());
            config
        }
        Some(s) => {
            let sums = calibrate(gpu, a, &tok, &config, &values)?;
            zeroed = oneshot::wanda(&table, &mut values, s, &sums)?;
            config
        }
        None => {
            let sums = calibrate(gpu, a, &tok, &config, &values)?;
            let (small, v) = cut(a, &config, &table, values, &sums);
            values = v;
            small
        }
    };
    checkpoint::save_hf(&a.out, &config, &values).map_err(|e| e.to_string())?;
    tok.save(&a.out.join("tokenizer.json"))?;
    save_chat(&a.out, &chat)?;
    let after = crate::optim::ParamTable::new(config.parameter_specs()).numel();
    Ok(PruneReport {
        zeroed,
        linear,
        params: (before, after),
        mlp: (mlp, config.mlp()),
        heads: (heads, config.n_head),
        config,
    })
}

/// Structured pruning: the heads (--keep-heads) and the MLP channels (--keep-mlp) that `a`
/// asks to keep, both scored on the same calibration of the whole model.
fn cut(
    a: &PruneArgs,
    config: &GptConfig,
    table: &crate::optim::ParamTable,
    values: Vec<Vec<f32>>,
    sums: &oneshot::ChannelSums,
) -> (GptConfig, Vec<Vec<f32>>) {
    let mlp = a.keep_mlp.map(|f| {
        let keep = ((f * config.mlp() as f64).round() as usize).clamp(1, config.mlp());
        (keep, structured::channel_importance(config, table, &values, sums))
    });
    let heads = a.keep_heads.map(|k| (k, structured::head_importance(config, table, &values, sums)));
    let (mut config, mut values) = (config.clone(), values);
    if let Some((keep, imp)) = heads {
        (config, values) = structured::keep_heads(&config, &values, &imp, keep);
    }
    if let Some((keep, imp)) = mlp {
        (config, values) = structured::keep_mlp(&config, &values, &imp, keep);
    }
    (config, values)
}

/// The calibration forward of `values` on --data's batches.
fn calibrate(
    gpu: &crate::Gpu,
    a: &PruneArgs,
    tok: &Tokenizer,
    config: &GptConfig,
    values: &[Vec<f32>],
) -> Result<oneshot::ChannelSums, String> {
    let t = a.seq_len.unwrap_or(config.n_positions);
    if t == 0 || t > config.n_positions || a.batch_size == 0 {
        return Err(format!("--batch-size and --seq-len must be positive, --seq-len at most {}", config.n_positions));
    }
    let mut loader = calibration_loader(a, tok, config, a.batch_size, t)?;
    oneshot::channel_sums(gpu, config, values, (&mut loader, a.batch_size, t), a.calib_batches)
        .map_err(|e| e.to_string())
}

fn check_prune_args(a: &PruneArgs) -> Result<(), String> {
    let structured = a.keep_mlp.is_some() || a.keep_heads.is_some();
    match (a.to, a.keep_mlp) {
        _ if a.to.is_some() == structured => {
            return Err(
                "give --to S (unstructured) or --keep-mlp F / --keep-heads K (structured), not both kinds".into()
            )
        }
        (Some(s), _) if !(0.0..1.0).contains(&s) => {
            return Err(format!("--to {s}: give a sparsity from 0 up to (not including) 1"))
        }
        (_, Some(f)) if !(f > 0.0 && f <= 1.0) => return Err(format!("--keep-mlp {f}: give a fraction in (0, 1]")),
        _ => {}
    }
    if a.method == oneshot::Method::Wanda && a.scope.is_some() {
        return Err("--scope is magnitude's: wanda ranks within each output row".into());
    }
    if (structured || a.method == oneshot::Method::Wanda) && a.data.is_none() {
        return Err(
            "wanda, --keep-mlp and --keep-heads score with activations: pass --data (calibration tokens)".into()
        );
    }
    if a.calib_batches == 0 {
        return Err("--calib-batches must be positive".into());
    }
    Ok(())
}

/// The calibration batches: --data's tokens (a prepared directory's train.bin), whose
/// tokenizer, if it has one beside it, must be the model's.
fn calibration_loader(
    a: &PruneArgs,
    tok: &Tokenizer,
    config: &GptConfig,
    b: usize,
    t: usize,
) -> Result<crate::data::Loader, String> {
    let data = a.data.as_ref().expect("check_prune_args");
    let (file, dir) = match crate::data::prepared_files(data).map_err(|e| format!("--data: {e}"))? {
        Some((train, _)) => (train, data.clone()),
        None => (data.clone(), data.parent().map(Path::to_path_buf).unwrap_or_default()),
    };
    let theirs = dir.join("tokenizer.json");
    if theirs.is_file() && !Tokenizer::from_file(&theirs, None)?.same_ids(tok) {
        return Err(format!("--data: {} gives tokens other ids than the model's tokenizer", theirs.display()));
    }
    let tokens = crate::data::read_tokens(&file).map_err(|e| format!("--data: {e}"))?;
    if let Some(&max) = tokens.iter().max().filter(|&&m| m as usize >= config.vocab_size) {
        return Err(format!(
            "--data {}: token id {max} is past the model's vocab_size {}",
            file.display(),
            config.vocab_size
        ));
    }
    crate::data::Loader::new(tokens, b, t, false, 0).map_err(|e| format!("--data {}: {e}", file.display()))
}
