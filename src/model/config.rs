//! GPT-2 model configuration: models/*.toml, or an HF config.json.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The six numbers that define a GPT-2.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block; n_embd / n_head is the head size (at most 64).
    pub n_head: usize,
    /// Channels C.
    pub n_embd: usize,
    /// Tokens V.
    pub vocab_size: usize,
    /// Longest sequence T the position embedding covers.
    pub n_positions: usize,
    /// MLP hidden channels (HF GPT-2's n_inner); None: 4·n_embd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_inner: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {why}")]
    Read { path: String, why: String },
    #[error("{path}: {why}; fix the config")]
    Invalid { path: String, why: String },
}

/// A config file's optional `[train]` table: the training settings of the run the model is
/// made for. Flags override each one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainDefaults {
    pub batch_size: Option<usize>,
    pub seq_len: Option<usize>,
    pub steps: Option<u64>,
    pub lr: Option<f64>,
    pub warmup: Option<u64>,
    pub eval_every: Option<u64>,
}

impl TrainDefaults {
    /// The `[train]` table of models/X.toml; none in an HF config.json.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        if path.extension().is_some_and(|e| e == "json") {
            return Ok(Self::default());
        }
        Self::parse(&read(path)?, &p)
    }

    /// The `[train]` table of a models/X.toml's text; `p` names the file.
    pub fn parse(text: &str, p: &str) -> Result<Self, ConfigError> {
        let (_, train) = split_toml(text, p)?;
        let Some(train) = train else { return Ok(Self::default()) };
        train.try_into().map_err(|e: toml::de::Error| ConfigError::Read {
            path: p.to_string(),
            why: format!("[train]: {}", e.message()),
        })
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Read { path: path.display().to_string(), why: e.to_string() })
}

/// A models/X.toml's text as its model table and its `[train]` table; `p` names the file.
fn split_toml(text: &str, p: &str) -> Result<(toml::Table, Option<toml::Value>), ConfigError> {
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| ConfigError::Read { path: p.to_string(), why: e.message().to_string() })?;
    let train = table.remove("train");
    Ok((table, train))
}

/// The fields of an HF GPT2Config that shape the model. The others that would change it are
/// checked by `refuse_unsupported`; the rest (dropout, ids, summary heads) don't change what
/// the model computes in eval or what wgtrain trains.
#[derive(Deserialize)]
struct HfConfig {
    n_layer: usize,
    n_head: usize,
    n_embd: usize,
    vocab_size: usize,
    n_positions: usize,
    #[serde(default)]
    n_inner: Option<usize>,
}

/// An HF config.json field whose value this GPT-2 can't honour, named with what it holds.
fn refuse_unsupported(v: &serde_json::Value) -> Result<(), String> {
    let is = |key: &str, ok: &dyn Fn(&serde_json::Value) -> bool| v.get(key).is_none_or(|x| x.is_null() || ok(x));
    let checks: [(&str, bool, &str); 7] = [
        ("model_type", is("model_type", &|x| x == "gpt2"), "gpt2"),
        (
            "activation_function",
            is("activation_function", &|x| x == "gelu_new" || x == "gelu_pytorch_tanh"),
            "gelu_new (GELU's tanh form)",
        ),
        (
            "layer_norm_epsilon",
            is("layer_norm_epsilon", &|x| x.as_f64().is_some_and(|e| (e - 1e-5).abs() < 1e-12)),
            "1e-5",
        ),
        ("tie_word_embeddings", is("tie_word_embeddings", &|x| x == true), "true (the LM head is wte)"),
        ("scale_attn_weights", is("scale_attn_weights", &|x| x == true), "true"),
        ("scale_attn_by_inverse_layer_idx", is("scale_attn_by_inverse_layer_idx", &|x| x == false), "false"),
        ("add_cross_attention", is("add_cross_attention", &|x| x == false), "false"),
    ];
    match checks.iter().find(|c| !c.1) {
        Some((key, _, want)) => {
            Err(format!("{key} is {}, which wgtrain's GPT-2 does not run: it needs {want}", v[key]))
        }
        None => Ok(()),
    }
}

impl GptConfig {
    /// Reads models/X.toml, or config.json (HF GPT2Config) when the name ends in .json.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let json = path.extension().is_some_and(|e| e == "json");
        Self::parse(&read(path)?, json, &path.display().to_string())
    }

    /// `load` of a file's text: TOML, or an HF config.json when `json`; `p` names the file.
    pub fn parse(text: &str, json: bool, p: &str) -> Result<Self, ConfigError> {
        let read_err = |why: String| ConfigError::Read { path: p.to_string(), why };
        let cfg = if json {
            let raw: serde_json::Value = serde_json::from_str(text).map_err(|e| read_err(e.to_string()))?;
            refuse_unsupported(&raw).map_err(|why| ConfigError::Invalid { path: p.to_string(), why })?;
            let hf: HfConfig = serde_json::from_value(raw).map_err(|e| read_err(e.to_string()))?;
            Self {
                n_layer: hf.n_layer,
                n_head: hf.n_head,
                n_embd: hf.n_embd,
                vocab_size: hf.vocab_size,
                n_positions: hf.n_positions,
                n_inner: hf.n_inner,
            }
        } else {
            let (model, _) = split_toml(text, p)?;
            model.try_into().map_err(|e: toml::de::Error| read_err(e.message().to_string()))?
        };
        cfg.validate().map_err(|why| ConfigError::Invalid { path: p.to_string(), why })?;
        Ok(cfg)
    }

    /// Checks what the kernels need.
    pub fn validate(&self) -> Result<(), String> {
        let nonzero = [
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_embd", self.n_embd),
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_inner", self.mlp()),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!("n_embd {} is not divisible by n_head {}", self.n_embd, self.n_head));
        }
        let hs = self.n_embd / self.n_head;
        if hs > crate::kernels::attention::HS_MAX as usize {
            return Err(format!("head size n_embd/n_head = {hs} exceeds {}", crate::kernels::attention::HS_MAX));
        }
        Ok(())
    }

    /// MLP hidden channels: n_inner, 4·n_embd by default.
    pub fn mlp(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// The HF config.json for this model (GPT2LMHeadModel).
    pub fn to_hf_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_embd": self.n_embd,
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_ctx": self.n_positions,
            "n_inner": self.n_inner,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5,
            "tie_word_embeddings": true,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
        })
    }

    /// Trainable parameters, in HF GPT-2 naming and wgtrain's layout: matmul weights are
    /// (out, in), the transpose of HF's Conv1D (in, out). The LM head is wte (tied).
    pub fn parameter_specs(&self) -> Vec<(String, Vec<usize>)> {
        let (c, v, t, f) = (self.n_embd, self.vocab_size, self.n_positions, self.mlp());
        let mut specs = vec![("wte.weight".to_string(), vec![v, c]), ("wpe.weight".to_string(), vec![t, c])];
        for l in 0..self.n_layer {
            let h = |s: &str| format!("h.{l}.{s}");
            specs.extend([
                (h("ln_1.weight"), vec![c]),
                (h("ln_1.bias"), vec![c]),
                (h("attn.c_attn.weight"), vec![3 * c, c]),
                (h("attn.c_attn.bias"), vec![3 * c]),
                (h("attn.c_proj.weight"), vec![c, c]),
                (h("attn.c_proj.bias"), vec![c]),
                (h("ln_2.weight"), vec![c]),
                (h("ln_2.bias"), vec![c]),
                (h("mlp.c_fc.weight"), vec![f, c]),
                (h("mlp.c_fc.bias"), vec![f]),
                (h("mlp.c_proj.weight"), vec![c, f]),
                (h("mlp.c_proj.bias"), vec![c]),
            ]);
        }
        specs.push(("ln_f.weight".to_string(), vec![c]));
        specs.push(("ln_f.bias".to_string(), vec![c]));
        specs
    }
}
