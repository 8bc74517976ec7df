//! LoRA fine-tuning of a model (Hu et al. 2021, in peft's conventions): the base weights are
//! frozen, held without gradients or optimizer state, and every targeted linear layer gets
//! two trainable factors, A (r, in) and B (out, r), whose product scaled by α / r adds to its
//! output (model::lora_path). The adapters are the model's `arena`, so the optimizer, clipping
//! and checkpoints see only them; the base lives in `Lora::base`.

use std::collections::HashMap;
use std::path::Path;

use safetensors::SafeTensors;

use super::block::Weights;
use super::checkpoint::{self, CheckpointError};
use super::config::GptConfig;
use super::lora_path::{Adapter, Dropout};
use super::{Gpt, QuantWeights};
use crate::gpu::{Category, Gpu, GpuBuffer, GpuError};
use crate::kernels::Tensor;
use crate::optim::{ParamArena, ParamTable};
use crate::rng::Key;
use crate::rng::Rng;

/// Which layers get adapters, of what rank, at what scale.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    /// α: the path is scaled by α / rank (peft's default α is 8).
    pub alpha: f64,
    /// Module names, matched as peft matches them: a layer is targeted when its path (after
    /// the layer prefix, as `attn.c_attn`) is a name or ends with `.name`.
    pub targets: Vec<String>,
    /// Dropout on each adapter's input while training (peft's lora_dropout), 0 ≤ p < 1.
    pub dropout: f64,
}

impl LoraConfig {
    /// peft's default targets: c_attn for GPT-2, q_proj and v_proj for Llama.
    pub fn default_targets(config: &GptConfig) -> Vec<String> {
        match config.arch {
            super::Arch::Gpt2 => vec!["c_attn".into()],
            super::Arch::Llama => vec!["q_proj".into(), "v_proj".into()],
        }
    }

    /// The (layer, module) pairs these targets select, matched as peft matches them against
    /// the module's full path in the HF model (`transformer.h.0.attn.c_attn`,
    /// `model.layers.0.self_attn.q_proj`): equal to a target or ending with `.target`.
    /// `all-linear` selects every linear layer of every block. A target that selects nothing
    /// is an error that names it.
    pub fn targeted(&self, config: &GptConfig) -> Result<Vec<(usize, &'static str)>, String> {
        let linears = config.names().linears();
        let all = self.targets.iter().any(|t| t == "all-linear");
        let hits = |t: &str, path: &str| path == t || path.ends_with(&format!(".{t}"));
        let mut out = Vec::new();
        let mut used = vec![all; self.targets.len()];
        for l in 0..config.n_layer {
            for &m in &linears {
                let path = hf_path(config, &format!("{}{m}", config.layer_prefix(l)));
                let mut hit = all;
                for (i, t) in self.targets.iter().enumerate() {
                    if hits(t, &path) {
                        (hit, used[i]) = (true, true);
                    }
                }
                if hit {
                    out.push((l, m));
                }
            }
        }
        if self.targets.is_empty() {
            return Err("--lora-targets: give at least one module name, or all-linear".into());
        }
        if let Some(i) = used.iter().position(|u| !u) {
            let names: Vec<&str> = linears.iter().map(|m| m.rsplit('.').next().unwrap_or(m)).collect();
            return Err(format!(
                "--lora-targets: {} matches no linear layer of this model; give some of {} or all-linear",
                self.targets[i],
                names.join(", ")
            ));
        }
        Ok(out)
    }

    /// The targets as peft's adapter_config.json lists them: all-linear as the module names.
    pub fn target_modules(&self, config: &GptConfig) -> Vec<String> {
        if !self.targets.iter().any(|t| t == "all-linear") {
            return self.targets.clone();
        }
        let mut names: Vec<String> = Vec::new();
        for m in config.names().linears() {
            let name = m.rsplit('.').next().unwrap_or(m).to_string();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    pub fn scale(&self) -> f32 {
        (self.alpha / self.rank as f64) as f32
    }
}

/// The adapters' parameters, in table order: per layer and targeted module, `{path}.lora_A.
/// weight` (r, in) then `{path}.lora_B.weight` (out, r), path being the module's full name.
pub fn adapter_specs(config: &GptConfig, lora: &LoraConfig) -> Result<Vec<(String, Vec<usize>)>, String> {
    let shapes: HashMap<String, Vec<usize>> = config.parameter_specs().into_iter().collect();
    let mut specs = Vec::new();
    for (l, m) in lora.targeted(config)? {
        let path = format!("{}{m}", config.layer_prefix(l));
        let w = &shapes[&format!("{path}.weight")];
        specs.push((format!("{path}.lora_A.weight"), vec![lora.rank, w[1]]));
        specs.push((format!("{path}.lora_B.weight"), vec![w[0], lora.rank]));
    }
    Ok(specs)
}

/// A parameter or module path of wgtrain's as the HF model names it (GPT2LMHeadModel's
/// `transformer.` prefix).
fn hf_path(config: &GptConfig, path: &str) -> String {
    match config.arch {
        super::Arch::Gpt2 => format!("transformer.{path}"),
        super::Arch::Llama => path.to_string(),
    }
}

/// A wgtrain adapter tensor's name in peft's files: `base_model.model.` and the base model's
/// own path (GPT2LMHeadModel's `transformer.`).
pub fn peft_name(config: &GptConfig, name: &str) -> String {
    format!("base_model.model.{}", hf_path(config, name))
}

/// Reads peft's adapter_model.safetensors for the adapters of `table` (in its order).
pub fn load_peft(path: &Path, config: &GptConfig, table: &ParamTable) -> Result<Vec<Vec<f32>>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|e| CheckpointError::Io { path: path.into(), why: e.to_string() })?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| CheckpointError::Format { path: path.into(), why: format!("not a safetensors file ({e})") })?;
    let mismatch = |why: String| CheckpointError::Mismatch { path: path.into(), why };
    let mut out = Vec::new();
    for t in &table.tensors {
        let key = peft_name(config, &t.name);
        let view = st.tensor(&key).map_err(|_| mismatch(format!("no tensor {key}")))?;
        if view.shape() != t.shape.as_slice() {
            return Err(mismatch(format!("{key} is {:?}, the adapter needs {:?}", view.shape(), t.shape)));
        }
        out.push(checkpoint::floats(&view, &key, path)?);
    }
    Ok(out)
}

/// Writes `dir`/adapter_model.safetensors (peft's names) and adapter_config.json, which
/// `peft.PeftModel.from_pretrained(base, dir)` loads; `base` names the base model.
pub fn save_peft(
    dir: &Path,
    config: &GptConfig,
    lora: &LoraConfig,
    (table, values): (&ParamTable, &[Vec<f32>]),
    base: &Path,
) -> Result<(), CheckpointError> {
    let tensors: Vec<(String, Vec<usize>, &[f32])> = table
        .tensors
        .iter()
        .zip(values)
        .map(|(t, v)| (peft_name(config, &t.name), t.shape.clone(), v.as_slice()))
        .collect();
    checkpoint::save_tensors(dir, ADAPTER_FILE, &tensors)?;
    let json = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base.display().to_string(),
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": lora.target_modules(config),
        "fan_in_fan_out": config.arch == super::Arch::Gpt2,
        "bias": "none",
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
    });
    checkpoint::write_synced(dir, ADAPTER_CONFIG, serde_json::to_string_pretty(&json).expect("json").as_bytes())
}

/// Merges adapters into base weights (both in table order): W += s·B·A for every adapted
/// layer, in f64 sums, as peft's merge_and_unload does (its fan_in_fan_out transpose is the
/// HF Conv1D layout, which wgtrain's (out, in) weights already undo).
pub fn merge(
    config: &GptConfig,
    lora: &LoraConfig,
    base: &mut [Vec<f32>],
    (table, adapters): (&ParamTable, &[Vec<f32>]),
) {
    let base_table = ParamTable::new(config.parameter_specs());
    let (s, r) = (lora.scale() as f64, lora.rank);
    for (names, ab) in table.tensors.chunks(2).zip(adapters.chunks(2)) {
        let path = names[0].name.trim_end_matches(".lora_A.weight");
        let at = base_table.index(&format!("{path}.weight")).expect("the adapted weight");
        let (rows, cols) = (base_table.tensors[at].shape[0], base_table.tensors[at].shape[1]);
        let (a, b, w) = (&ab[0], &ab[1], &mut base[at]);
        for o in 0..rows {
            for i in 0..cols {
                let delta: f64 = (0..r).map(|j| b[o * r + j] as f64 * a[j * cols + i] as f64).sum();
                w[o * cols + i] = (w[o * cols + i] as f64 + s * delta) as f32;
            }
        }
    }
}

/// peft's file names in an adapter directory.
pub const ADAPTER_FILE: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// The rank, α and targets of an adapter directory's adapter_config.json.
pub fn read_peft_config(dir: &Path) -> Result<LoraConfig, String> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad =
        |what: &str| format!("{}: {what}; an adapter from peft or `wgtrain train --lora-rank` has it", path.display());
    if v["peft_type"].as_str() != Some("LORA") {
        return Err(bad("peft_type is not LORA"));
    }
    refuse_variants(&v).map_err(|what| format!("{}: {what}, which wgtrain does not apply", path.display()))?;
    let rank = v["r"].as_u64().filter(|&r| r > 0).ok_or_else(|| bad("no positive r"))? as usize;
    let alpha = v["lora_alpha"].as_f64().filter(|a| *a > 0.0).ok_or_else(|| bad("no positive lora_alpha"))?;
    let targets = match &v["target_modules"] {
        serde_json::Value::String(s) if s == "all-linear" => vec![s.clone()],
        serde_json::Value::String(s) => {
            return Err(format!(
                "{}: target_modules {s:?} is a regular expression; give a list of names",
                path.display()
            ))
        }
        serde_json::Value::Array(a) => a.iter().filter_map(|t| t.as_str().map(String::from)).collect(),
        _ => return Err(bad("no target_modules")),
    };
    let dropout = v["lora_dropout"].as_f64().unwrap_or(0.0);
    if !(0.0..1.0).contains(&dropout) {
        return Err(bad("lora_dropout is not in [0, 1)"));
    }
    Ok(LoraConfig { rank, alpha, targets, dropout })
}

/// peft's settings that change what an adapter computes beyond plain LoRA: an adapter that
/// uses one would give other outputs here than in peft, so it is refused, named.
fn refuse_variants(v: &serde_json::Value) -> Result<(), String> {
    let set = |k: &str| match &v[k] {
        serde_json::Value::Null => false,
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Object(o) => !o.is_empty(),
        serde_json::Value::Array(a) => !a.is_empty(),
        _ => true,
    };
    for k in ["use_rslora", "use_dora", "alpha_pattern", "rank_pattern", "modules_to_save", "layers_to_transform"] {
        if set(k) {
            return Err(format!("{k} is set"));
        }
    }
    match v["bias"].as_str() {
        None | Some("none") => Ok(()),
        Some(b) => Err(format!("bias is {b:?} (trained biases)")),
    }
}

/// The frozen base and the adapters' scratch: h = s·x·Aᵀ of each adapted layer (kept for the
/// backward) and one dh that the backward reuses.
pub struct Lora {
    pub cfg: LoraConfig,
    /// The base model's parameters, with no gradients.
    pub base: ParamArena,
    h: HashMap<String, Tensor>,
    dh: Tensor,
    /// Each adapter's salt (its place in the table) for the dropout masks.
    salts: HashMap<String, u32>,
    dropout: Option<DropoutState>,
}

/// Where a training model's dropout draws: a key per token slot (written per submit by
/// `Gpt::seed_dropout`) and one that keeps everything (evaluation) after them; the key of the
/// micro-batch running, copied from its slot's; the masked-input scratch.
struct DropoutState {
    keys: GpuBuffer,
    key: GpuBuffer,
    xd: Tensor,
    seed: u64,
}

/// Where the key that keeps everything sits in `DropoutState::keys`: after every slot's.
const OFF_KEY: u64 = super::SUBMIT_MICRO_BATCHES as u64;

impl Lora {
    /// The adapter of the layer named `path` (its full name, without `.weight`), if it has one.
    pub(super) fn adapter<'a>(&'a self, adapters: &'a ParamArena, path: &str) -> Option<Adapter<'a>> {
        let h = self.h.get(path)?;
        // The factors as any matmul weight is read (the f16 copy under mixed precision).
        let w = Weights::new(adapters, format!("{path}.lora_"), None);
        Some(Adapter {
            a: w.mm("A.weight"),
            b: w.mm("B.weight"),
            da: w.grad("A.weight"),
            db: w.grad("B.weight"),
            h: h.v(),
            dh: self.dh.v(),
            rank: self.cfg.rank as u32,
            scale: self.cfg.scale(),
            dropout: self.dropout.as_ref().map(|d| Dropout { key: &d.key, salt: self.salts[path], xd: d.xd.v() }),
        })
    }

    /// A training model's dropout state (None without dropout): for inputs of up to `rows`
    /// elements, the masks drawn from `seed`.
    fn dropout_state(
        gpu: &Gpu,
        cfg: &LoraConfig,
        rows: u64,
        act: crate::kernels::Dtype,
        seed: u64,
    ) -> Result<Option<DropoutState>, GpuError> {
        if cfg.dropout == 0.0 {
            return Ok(None);
        }
        let keys = gpu.pool.storage(Category::Activations, 16 * (OFF_KEY + 1))?;
        gpu.write(&keys, 4 * OFF_KEY, &Key::OFF.words());
        let key = gpu.pool.storage(Category::Activations, 16)?;
        let xd = Tensor::new(gpu, Category::Activations, rows.next_multiple_of(4), act)?;
        Ok(Some(DropoutState { keys, key, xd, seed }))
    }
}

impl Gpt {
    /// Sets the dropout keys of the next submit's micro-batches from `draw` (the step, the
    /// submit, the rank: anything that differs between submits and is the same on a resumed
    /// run); nothing without dropout.
    pub fn seed_dropout(&self, gpu: &Gpu, draw: [u64; 3]) {
        let Some(d) = self.lora.as_ref().and_then(|l| l.dropout.as_ref().map(|d| (d, l.cfg.dropout))) else { return };
        let (state, p) = d;
        let mut rng = Rng::new(
            state.seed ^ draw[0].wrapping_mul(0x9e37_79b9) ^ draw[1].rotate_left(21) ^ draw[2].rotate_left(42),
        );
        let words: Vec<u32> = (0..self.n_slots).flat_map(|_| Key::new(rng.next_u64() as u32, p).words()).collect();
        gpu.write(&state.keys, 0, &words);
    }

    /// Records making slot `k`'s dropout key the running one (None: the key that keeps
    /// everything, for evaluation).
    pub(super) fn record_dropout_key(&self, rec: &mut crate::gpu::Recorder, k: Option<usize>) {
        if let Some(d) = self.lora.as_ref().and_then(|l| l.dropout.as_ref()) {
            rec.copy(&d.keys, 16 * k.map_or(OFF_KEY, |k| k as u64), &d.key, 0, 16);
        }
    }
}

impl Gpt {
    /// A model for LoRA fine-tuning: `config`'s weights frozen (write them with
    /// `write_base`), adapters on the layers `lora` targets as the trainable arena, A
    /// Kaiming-uniform from `seed` and B zero, so that it starts as the base.
    /// With `quant`, the base's weights that it holds stay block-quantized (QLoRA).
    pub fn with_lora(
        gpu: &Gpu,
        (config, quant): (GptConfig, Option<QuantWeights>),
        (b, t, accum): (usize, usize, usize),
        precision: super::Precision,
        lora: LoraConfig,
        seed: u64,
    ) -> Result<Self, GpuError> {
        let gpt = Self::lora_model(gpu, (config, quant), (b, t, accum), precision, lora, Some(seed))?;
        gpt.init_adapters(gpu, seed);
        // Keys before the first step's own (a caller that never seeds still drops at p).
        gpt.seed_dropout(gpu, [u64::MAX; 3]);
        Ok(gpt)
    }

    /// A forward-only model of `config`'s base with the adapter in `dir` (peft's files), for
    /// eval and sample: write the base with `write_base`.
    pub fn with_adapter(
        gpu: &Gpu,
        (config, quant): (GptConfig, Option<QuantWeights>),
        (b, t): (usize, usize),
        precision: super::Precision,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let lora = read_peft_config(dir).map_err(anyhow::Error::msg)?;
        let gpt = Self::lora_model(gpu, (config, quant), (b, t, 1), precision, lora, None)?;
        let values = load_peft(&dir.join(ADAPTER_FILE), &gpt.config, &gpt.arena.table)?;
        gpt.write_params(gpu, &values);
        gpt.write_half_params(gpu)?;
        Ok(gpt)
    }

    /// The LoRA model's arenas, scratch and dispatches; with `train_seed` the backward too,
    /// its dropout masks drawn from that seed.
    fn lora_model(
        gpu: &Gpu,
        (config, quant): (GptConfig, Option<QuantWeights>),
        (b, t, accum): (usize, usize, usize),
        precision: super::Precision,
        lora: LoraConfig,
        train_seed: Option<u64>,
    ) -> Result<Self, GpuError> {
        let (train, seed) = (train_seed.is_some(), train_seed.unwrap_or(0));
        if lora.rank == 0 {
            return Err(GpuError::Unsupported("--lora-rank must be positive".into()));
        }
        let specs = adapter_specs(&config, &lora).map_err(GpuError::Unsupported)?;
        let half = precision == super::Precision::F16;
        let dense =
            config.parameter_specs().into_iter().filter(|(n, _)| quant.as_ref().is_none_or(|q| q.view(n).is_none()));
        let base = ParamArena::for_inference(gpu, ParamTable::new(dense), half)?;
        let table = ParamTable::new(specs);
        let arena =
            if train { ParamArena::new(gpu, table, half)? } else { ParamArena::for_inference(gpu, table, half)? };
        let rows = (b * t * lora.rank) as u64;
        let act = precision.act();
        let mut h = HashMap::new();
        for spec in arena.table.tensors.iter().filter(|s| s.name.ends_with(".lora_A.weight")) {
            let path = spec.name.trim_end_matches(".lora_A.weight").to_string();
            h.insert(path, Tensor::new(gpu, Category::Activations, rows, act)?);
        }
        let dh = Tensor::new(gpu, Category::Activations, if train { rows } else { 1 }, act)?;
        let salts = (arena.table.tensors.iter().step_by(2).enumerate())
            .map(|(i, t)| (t.name.trim_end_matches(".lora_A.weight").to_string(), i as u32 + 1))
            .collect();
        let widest = arena.table.tensors.iter().step_by(2).map(|t| t.shape[1] as u64).max().unwrap_or(1);
        let state = if train { Lora::dropout_state(gpu, &lora, (b * t) as u64 * widest, act, seed)? } else { None };
        let lora = Lora { cfg: lora, base, h, dh, salts, dropout: state };
        let mut gpt = Self::alloc(gpu, config, (b, t, accum), precision, arena, quant)?;
        gpt.lora = Some(lora);
        gpt.build(gpu, train)?;
        Ok(gpt)
    }

    /// peft's initialization: A ~ U(−1/√in, 1/√in) (kaiming_uniform_ with a = √5), B = 0.
    fn init_adapters(&self, gpu: &Gpu, seed: u64) {
        let mut rng = Rng::new(seed);
        let values: Vec<Vec<f32>> = (self.arena.table.tensors.iter())
            .map(|t| {
                let n = t.numel() as usize;
                if t.name.ends_with(".lora_B.weight") {
                    return vec![0.0; n];
                }
                let bound = 1.0 / (t.shape[1] as f32).sqrt();
                (0..n).map(|_| (2.0 * rng.uniform() - 1.0) * bound).collect()
            })
            .collect();
        self.write_params(gpu, &values);
    }

    /// Writes the frozen base weights of a LoRA model (in table order; those it holds
    /// quantized left out, as `quantized::dense_values` leaves them), and their f16 copy.
    pub fn write_base(&self, gpu: &Gpu, values: &[Vec<f32>]) -> Result<(), GpuError> {
        let lora = self.lora.as_ref().ok_or_else(|| GpuError::Unsupported("not a LoRA model".into()))?;
        gpu.write(&lora.base.params, 0, &lora.base.table.pack(values));
        super::run::write_half(gpu, &lora.base)
    }

    /// The frozen base weights of a LoRA model that it holds in f32, in table order.
    pub fn read_base(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>, GpuError> {
        let lora = self.lora.as_ref().ok_or_else(|| GpuError::Unsupported("not a LoRA model".into()))?;
        Ok(lora.base.table.unpack(&gpu.read::<f32>(&lora.base.params, 0, lora.base.table.len as usize)?))
    }
}
