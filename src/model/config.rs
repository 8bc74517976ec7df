//! Model configuration, GPT-2 or Llama: models/*.toml, or an HF config.json (model_type gpt2
//! or llama).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The two architectures. They share the block skeleton (norm, attention, residual, norm, MLP,
/// residual) and differ in its parts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// LayerNorm with bias, learned positions, fused qkv with biases, GELU MLP, tied head.
    #[default]
    Gpt2,
    /// RMSNorm, RoPE, grouped-query attention, SwiGLU MLP, no biases, tied or untied head.
    Llama,
}

impl Arch {
    fn is_gpt2(&self) -> bool {
        *self == Arch::Gpt2
    }

    /// The names of a block's parts in this architecture.
    pub fn names(&self) -> &'static Names {
        match self {
            Arch::Gpt2 => &GPT2_NAMES,
            Arch::Llama => &LLAMA_NAMES,
        }
    }
}

/// The numbers that define a model: GPT-2's six, and for Llama its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    /// gpt2 (the default) or llama.
    #[serde(default, skip_serializing_if = "Arch::is_gpt2")]
    pub arch: Arch,
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
    /// MLP hidden channels (HF GPT-2's n_inner, Llama's intermediate_size); None: 4·n_embd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_inner: Option<usize>,
    /// Llama: key/value heads (grouped-query attention); None: n_head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_kv_head: Option<usize>,
    /// Llama: the head size; None: n_embd / n_head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Llama: RoPE's base θ; None: 10,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// Llama: RMSNorm's epsilon; None: 1e-5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rms_norm_eps: Option<f64>,
    /// Llama: the LM head is embed_tokens (true) or a weight of its own (false, the default,
    /// as in HF's LlamaConfig). GPT-2's is always tied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_word_embeddings: Option<bool>,
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

/// The seed of a run's initialization and data order when --seed is not given.
pub const DEFAULT_SEED: u64 = 1337;

/// Settings when neither a flag nor the config's `[train]` table gives one.
pub const BUILT_IN: Settings =
    Settings { batch_size: 4, seq_len: 128, steps: 160, lr: 2e-3, warmup: 10, eval_every: 40 };

/// The training settings a config may carry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub batch_size: usize,
    pub seq_len: usize,
    pub steps: u64,
    pub lr: f64,
    pub warmup: u64,
    pub eval_every: u64,
}

impl Settings {
    /// Each field from `flags` if set, else from `table`, else from `BUILT_IN`.
    pub fn resolve(flags: &TrainDefaults, table: &TrainDefaults) -> Settings {
        let b = BUILT_IN;
        Settings {
            batch_size: flags.batch_size.or(table.batch_size).unwrap_or(b.batch_size),
            seq_len: flags.seq_len.or(table.seq_len).unwrap_or(b.seq_len),
            steps: flags.steps.or(table.steps).unwrap_or(b.steps),
            lr: flags.lr.or(table.lr).unwrap_or(b.lr),
            warmup: flags.warmup.or(table.warmup).unwrap_or(b.warmup),
            eval_every: flags.eval_every.or(table.eval_every).unwrap_or(b.eval_every),
        }
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

/// The fields of an HF LlamaConfig that shape the model; `refuse_unsupported_llama` checks
/// the others that would change it.
#[derive(Deserialize)]
struct HfLlama {
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    hidden_size: usize,
    intermediate_size: usize,
    vocab_size: usize,
    max_position_embeddings: usize,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rms_norm_eps: Option<f64>,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
}

/// An HF LlamaConfig field whose value wgtrain's Llama can't honour.
fn refuse_unsupported_llama(v: &serde_json::Value) -> Result<(), String> {
    let is = |key: &str, ok: &dyn Fn(&serde_json::Value) -> bool| v.get(key).is_none_or(|x| x.is_null() || ok(x));
    let plain_rope = |x: &serde_json::Value| x.get("rope_type").is_none_or(|t| t == "default");
    let checks: [(&str, bool, &str); 5] = [
        ("hidden_act", is("hidden_act", &|x| x == "silu"), "silu"),
        ("attention_bias", is("attention_bias", &|x| x == false), "false"),
        ("mlp_bias", is("mlp_bias", &|x| x == false), "false"),
        ("rope_scaling", is("rope_scaling", &|_| false), "null (plain RoPE)"),
        ("rope_parameters", is("rope_parameters", &plain_rope), "rope_type default (plain RoPE)"),
    ];
    match checks.iter().find(|c| !c.1) {
        Some((key, _, want)) => {
            Err(format!("{key} is {}, which wgtrain's Llama does not run: it needs {want}", v[key]))
        }
        None => Ok(()),
    }
}

impl GptConfig {
    /// A GPT-2 of these sizes (MLP 4·n_embd).
    pub fn gpt2(n_layer: usize, n_head: usize, n_embd: usize, vocab_size: usize, n_positions: usize) -> Self {
        Self {
            arch: Arch::Gpt2,
            n_layer,
            n_head,
            n_embd,
            vocab_size,
            n_positions,
            n_inner: None,
            n_kv_head: None,
            head_dim: None,
            rope_theta: None,
            rms_norm_eps: None,
            tie_word_embeddings: None,
        }
    }

    /// From an HF config.json's value: model_type gpt2 (or none) or llama.
    fn from_hf(raw: serde_json::Value) -> Result<Self, (bool, String)> {
        let invalid = |why: String| (true, why);
        if raw.get("model_type").is_some_and(|t| t == "llama") {
            refuse_unsupported_llama(&raw).map_err(invalid)?;
            // transformers 5 keeps θ in rope_parameters, earlier versions at the top.
            let nested = raw.pointer("/rope_parameters/rope_theta").and_then(|x| x.as_f64());
            let hf: HfLlama = serde_json::from_value(raw).map_err(|e| (false, e.to_string()))?;
            return Ok(Self {
                arch: Arch::Llama,
                n_inner: Some(hf.intermediate_size),
                n_kv_head: hf.num_key_value_heads,
                head_dim: hf.head_dim,
                rope_theta: hf.rope_theta.or(nested),
                rms_norm_eps: hf.rms_norm_eps,
                tie_word_embeddings: hf.tie_word_embeddings,
                ..Self::gpt2(
                    hf.num_hidden_layers,
                    hf.num_attention_heads,
                    hf.hidden_size,
                    hf.vocab_size,
                    hf.max_position_embeddings,
                )
            });
        }
        refuse_unsupported(&raw).map_err(invalid)?;
        let hf: HfConfig = serde_json::from_value(raw).map_err(|e| (false, e.to_string()))?;
        Ok(Self { n_inner: hf.n_inner, ..Self::gpt2(hf.n_layer, hf.n_head, hf.n_embd, hf.vocab_size, hf.n_positions) })
    }

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
            Self::from_hf(raw).map_err(|(invalid, why)| match invalid {
                true => ConfigError::Invalid { path: p.to_string(), why },
                false => read_err(why),
            })?
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
        if self.arch == Arch::Gpt2 {
            let llama_only = [
                ("n_kv_head", self.n_kv_head.is_some()),
                ("head_dim", self.head_dim.is_some()),
                ("rope_theta", self.rope_theta.is_some()),
                ("rms_norm_eps", self.rms_norm_eps.is_some()),
                ("tie_word_embeddings", self.tie_word_embeddings.is_some()),
            ];
            if let Some((name, _)) = llama_only.iter().find(|(_, set)| *set) {
                return Err(format!("{name} is a Llama setting: add arch = \"llama\" or drop it"));
            }
        }
        if self.head_dim.is_none() && !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!("n_embd {} is not divisible by n_head {}", self.n_embd, self.n_head));
        }
        let (hs, kv) = (self.head_size(), self.kv_heads());
        if hs == 0 || hs > crate::kernels::attention::HS_MAX as usize {
            return Err(format!("head size {hs} is not 1 to {}", crate::kernels::attention::HS_MAX));
        }
        if kv == 0 || !self.n_head.is_multiple_of(kv) {
            return Err(format!("n_head {} is not a multiple of n_kv_head {kv}", self.n_head));
        }
        if self.arch == Arch::Llama && !hs.is_multiple_of(2) {
            return Err(format!("RoPE needs an even head size, not {hs}"));
        }
        Ok(())
    }

    /// Key/value heads: n_kv_head, n_head by default.
    pub fn kv_heads(&self) -> usize {
        self.n_kv_head.unwrap_or(self.n_head)
    }

    /// The head size: head_dim, n_embd / n_head by default.
    pub fn head_size(&self) -> usize {
        self.head_dim.unwrap_or(self.n_embd / self.n_head.max(1))
    }

    /// RoPE's θ (10,000 by default).
    pub fn theta(&self) -> f64 {
        self.rope_theta.unwrap_or(10_000.0)
    }

    /// The norms' epsilon: GPT-2's LayerNorm 1e-5, Llama's rms_norm_eps (1e-5 by default).
    pub fn norm_eps(&self) -> f32 {
        self.rms_norm_eps.unwrap_or(1e-5) as f32
    }

    /// Whether the LM head reads the token embedding.
    pub fn tied(&self) -> bool {
        self.arch == Arch::Gpt2 || self.tie_word_embeddings.unwrap_or(false)
    }

    /// The token embedding's name: wte.weight, or model.embed_tokens.weight.
    pub fn embedding(&self) -> &'static str {
        match self.arch {
            Arch::Gpt2 => "wte.weight",
            Arch::Llama => "model.embed_tokens.weight",
        }
    }

    /// The LM head's weight: the embedding when tied, lm_head.weight otherwise.
    pub fn head(&self) -> &'static str {
        if self.tied() {
            self.embedding()
        } else {
            "lm_head.weight"
        }
    }

    /// Where layer l's parameters are named: `h.l.` or `model.layers.l.`.
    pub fn layer_prefix(&self, l: usize) -> String {
        match self.arch {
            Arch::Gpt2 => format!("h.{l}."),
            Arch::Llama => format!("model.layers.{l}."),
        }
    }

    /// The names of a block's parts in this architecture.
    pub fn names(&self) -> &'static Names {
        self.arch.names()
    }

    /// MLP hidden channels: n_inner, 4·n_embd by default.
    pub fn mlp(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// The HF config.json for this model (GPT2LMHeadModel or LlamaForCausalLM).
    pub fn to_hf_json(&self) -> serde_json::Value {
        if self.arch == Arch::Llama {
            return self.llama_hf_json();
        }
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

    fn llama_hf_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "num_hidden_layers": self.n_layer,
            "num_attention_heads": self.n_head,
            "num_key_value_heads": self.kv_heads(),
            "hidden_size": self.n_embd,
            "head_dim": self.head_size(),
            "intermediate_size": self.mlp(),
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.n_positions,
            "rope_theta": self.theta(),
            "rope_parameters": {"rope_type": "default", "rope_theta": self.theta()},
            "rms_norm_eps": self.rms_norm_eps.unwrap_or(1e-5),
            "tie_word_embeddings": self.tied(),
            "hidden_act": "silu",
            "attention_bias": false,
            "mlp_bias": false,
            "attention_dropout": 0.0,
            "torch_dtype": "float32",
        })
    }

    /// Trainable parameters, in HF naming and wgtrain's layout: matmul weights are (out, in)
    /// (for GPT-2 the transpose of HF's Conv1D (in, out)). GPT-2's LM head is wte (tied).
    pub fn parameter_specs(&self) -> Vec<(String, Vec<usize>)> {
        if self.arch == Arch::Llama {
            return self.llama_specs();
        }
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

    /// LlamaForCausalLM's parameters.
    fn llama_specs(&self) -> Vec<(String, Vec<usize>)> {
        let (c, v, f) = (self.n_embd, self.vocab_size, self.mlp());
        let (q, kv) = (self.n_head * self.head_size(), self.kv_heads() * self.head_size());
        let mut specs = vec![("model.embed_tokens.weight".to_string(), vec![v, c])];
        for l in 0..self.n_layer {
            let h = |s: &str| format!("model.layers.{l}.{s}");
            specs.extend([
                (h("input_layernorm.weight"), vec![c]),
                (h("self_attn.q_proj.weight"), vec![q, c]),
                (h("self_attn.k_proj.weight"), vec![kv, c]),
                (h("self_attn.v_proj.weight"), vec![kv, c]),
                (h("self_attn.o_proj.weight"), vec![c, q]),
                (h("post_attention_layernorm.weight"), vec![c]),
                (h("mlp.gate_proj.weight"), vec![f, c]),
                (h("mlp.up_proj.weight"), vec![f, c]),
                (h("mlp.down_proj.weight"), vec![c, f]),
            ]);
        }
        specs.push(("model.norm.weight".to_string(), vec![c]));
        if !self.tied() {
            specs.push(("lm_head.weight".to_string(), vec![v, c]));
        }
        specs
    }
}

/// The names of a block's parts (after the layer prefix), without `.weight`: the two norms,
/// the attention's input projections (GPT-2's one fused c_attn; Llama's q, k, v), its output
/// projection, and the MLP's (up; gate, for SwiGLU; down).
pub struct Names {
    pub norm1: &'static str,
    pub qkv: &'static [&'static str],
    pub proj: &'static str,
    pub norm2: &'static str,
    pub up: &'static str,
    pub gate: Option<&'static str>,
    pub down: &'static str,
    /// The final norm.
    pub norm_f: &'static str,
    /// Linear layers and norms have biases (GPT-2).
    pub bias: bool,
}

impl Names {
    /// Every linear layer of a block, in forward order.
    pub fn linears(&self) -> Vec<&'static str> {
        let mut out = self.qkv.to_vec();
        out.push(self.proj);
        out.extend(self.gate);
        out.extend([self.up, self.down]);
        out
    }
}

const GPT2_NAMES: Names = Names {
    norm1: "ln_1",
    qkv: &["attn.c_attn"],
    proj: "attn.c_proj",
    norm2: "ln_2",
    up: "mlp.c_fc",
    gate: None,
    down: "mlp.c_proj",
    norm_f: "ln_f",
    bias: true,
};

const LLAMA_NAMES: Names = Names {
    norm1: "input_layernorm",
    qkv: &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
    proj: "self_attn.o_proj",
    norm2: "post_attention_layernorm",
    up: "mlp.up_proj",
    gate: Some("mlp.gate_proj"),
    down: "mlp.down_proj",
    norm_f: "model.norm",
    bias: false,
};
