//! LoRA fine-tuning of a model (Hu et al. 2021, in peft's conventions): the base weights are
//! frozen, held without gradients or optimizer state, and every targeted linear layer gets
//! two trainable factors, A (r, in) and B (out, r), whose product scaled by α / r adds to its
//! output (kernels::lora). The adapters are the model's `arena`, so the optimizer, clipping
//! and checkpoints see only them; the base lives in `Lora::base`.

use std::collections::HashMap;
use std::path::Path;

use safetensors::SafeTensors;

use super::checkpoint::{self, CheckpointError};
use super::config::GptConfig;
use super::Gpt;
use crate::gpu::{Category, Gpu, GpuError};
use crate::kernels::lora::Adapter;
use crate::kernels::{Dtype, Tensor, View};
use crate::optim::{ParamArena, ParamTable};
use crate::reference::Rng;

/// Which layers get adapters, of what rank, at what scale.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    /// α: the path is scaled by α / rank (peft's default α is 8).
    pub alpha: f64,
    /// Module names, matched as peft matches them: a layer is targeted when its path (after
    /// the layer prefix, as `attn.c_attn`) is a name or ends with `.name`.
    pub targets: Vec<String>,
}

impl LoraConfig {
    /// peft's default targets: c_attn for GPT-2, q_proj and v_proj for Llama.
    pub fn default_targets(config: &GptConfig) -> Vec<String> {
        match config.arch {
            super::Arch::Gpt2 => vec!["c_attn".into()],
            super::Arch::Llama => vec!["q_proj".into(), "v_proj".into()],
        }
    }

    /// The block's linear layers (as `Names::linears` lists them) these targets select;
    /// `all-linear` selects every one. An error names a target that matches nothing.
    pub fn modules(&self, config: &GptConfig) -> Result<Vec<&'static str>, String> {
        let linears = config.names().linears();
        if self.targets.iter().any(|t| t == "all-linear") {
            return Ok(linears);
        }
        let hits = |t: &str, m: &str| m == t || m.ends_with(&format!(".{t}"));
        if let Some(t) = self.targets.iter().find(|t| !linears.iter().any(|m| hits(t, m))) {
            let names: Vec<&str> = linears.iter().map(|m| m.rsplit('.').next().unwrap_or(m)).collect();
            return Err(format!(
                "--lora-targets: {t} matches no linear layer of this model; give some of {} or all-linear",
                names.join(", ")
            ));
        }
        Ok(linears.into_iter().filter(|m| self.targets.iter().any(|t| hits(t, m))).collect())
    }

    pub fn scale(&self) -> f32 {
        (self.alpha / self.rank as f64) as f32
    }
}

/// The adapters' parameters, in table order: per layer and targeted module, `{path}.lora_A.
/// weight` (r, in) then `{path}.lora_B.weight` (out, r), path being the module's full name.
pub fn adapter_specs(config: &GptConfig, lora: &LoraConfig) -> Result<Vec<(String, Vec<usize>)>, String> {
    let modules = lora.modules(config)?;
    let shapes: HashMap<String, Vec<usize>> = config.parameter_specs().into_iter().collect();
    let mut specs = Vec::new();
    for l in 0..config.n_layer {
        for m in &modules {
            let path = format!("{}{m}", config.layer_prefix(l));
            let w = &shapes[&format!("{path}.weight")];
            specs.push((format!("{path}.lora_A.weight"), vec![lora.rank, w[1]]));
            specs.push((format!("{path}.lora_B.weight"), vec![w[0], lora.rank]));
        }
    }
    Ok(specs)
}

/// A wgtrain adapter tensor's name in peft's files: `base_model.model.` and the base model's
/// own path (GPT2LMHeadModel's `transformer.`).
pub fn peft_name(config: &GptConfig, name: &str) -> String {
    match config.arch {
        super::Arch::Gpt2 => format!("base_model.model.transformer.{name}"),
        super::Arch::Llama => format!("base_model.model.{name}"),
    }
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

/// The frozen base and the adapters' scratch: h = s·x·Aᵀ of each adapted layer (kept for the
/// backward) and one dh that the backward reuses.
pub struct Lora {
    pub cfg: LoraConfig,
    /// The base model's parameters, with no gradients.
    pub base: ParamArena,
    h: HashMap<String, Tensor>,
    dh: Tensor,
}

impl Lora {
    /// The adapter of the layer named `path` (its full name, without `.weight`), if it has one.
    pub(super) fn adapter<'a>(&'a self, adapters: &'a ParamArena, path: &str) -> Option<Adapter<'a>> {
        let h = self.h.get(path)?;
        let at = |f: &str| adapters.table.get(&format!("{path}.lora_{f}.weight")).expect("adapter tensors").offset;
        let view = |f: &str| match &adapters.half {
            Some(half) => View::typed(half, Dtype::F16).at_offset(at(f)),
            None => View::at(&adapters.params, at(f)),
        };
        Some(Adapter {
            a: view("A"),
            b: view("B"),
            da: View::at(&adapters.grads, at("A")),
            db: View::at(&adapters.grads, at("B")),
            h: h.v(),
            dh: self.dh.v(),
            rank: self.cfg.rank as u32,
            scale: self.cfg.scale(),
        })
    }
}

impl Gpt {
    /// A model for LoRA fine-tuning: `config`'s weights frozen (write them with
    /// `write_base`), adapters on the layers `lora` targets as the trainable arena, A
    /// Kaiming-uniform from `seed` and B zero, so that it starts as the base.
    pub fn with_lora(
        gpu: &Gpu,
        config: GptConfig,
        (b, t, accum): (usize, usize, usize),
        precision: super::Precision,
        lora: LoraConfig,
        seed: u64,
    ) -> Result<Self, GpuError> {
        if lora.rank == 0 {
            return Err(GpuError::Unsupported("--lora-rank must be positive".into()));
        }
        let specs = adapter_specs(&config, &lora).map_err(GpuError::Unsupported)?;
        let half = precision == super::Precision::F16;
        let base = ParamArena::for_inference(gpu, ParamTable::new(config.parameter_specs()), half)?;
        let arena = ParamArena::new(gpu, ParamTable::new(specs), half)?;
        let rows = (b * t * lora.rank) as u64;
        let act = precision.act();
        let mut h = HashMap::new();
        for spec in arena.table.tensors.iter().filter(|s| s.name.ends_with(".lora_A.weight")) {
            h.insert(
                spec.name.trim_end_matches(".lora_A.weight").to_string(),
                Tensor::new(gpu, Category::Activations, rows, act)?,
            );
        }
        let dh = Tensor::new(gpu, Category::Activations, rows, act)?;
        let lora = Lora { cfg: lora, base, h, dh };
        let mut gpt = Self::alloc(gpu, config, (b, t, accum), precision, arena, None)?;
        gpt.lora = Some(lora);
        gpt.build(gpu, true)?;
        gpt.init_adapters(gpu, seed);
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

    /// Writes the frozen base weights of a LoRA model (in table order), and their f16 copy.
    pub fn write_base(&self, gpu: &Gpu, values: &[Vec<f32>]) -> Result<(), GpuError> {
        let lora = self.lora.as_ref().ok_or_else(|| GpuError::Unsupported("not a LoRA model".into()))?;
        gpu.write(&lora.base.params, 0, &lora.base.table.pack(values));
        super::run::write_half(gpu, &lora.base)
    }

    /// The frozen base weights of a LoRA model, in table order.
    pub fn read_base(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>, GpuError> {
        let lora = self.lora.as_ref().ok_or_else(|| GpuError::Unsupported("not a LoRA model".into()))?;
        Ok(lora.base.table.unpack(&gpu.read::<f32>(&lora.base.params, 0, lora.base.table.len as usize)?))
    }
}
