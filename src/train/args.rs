//! The run's arguments: what `wgtrain train` takes, checked before anything is loaded.

use std::path::PathBuf;

use anyhow::bail;

use super::defaults::{model_file, DEFAULT_CONFIG};
use crate::kernels::Dtype;
use crate::model::{GptConfig, PrecisionChoice};
use crate::optim::{LossScale, OptimizerKind, ScheduleKind};

/// Everything `wgtrain train` takes; see the CLI for each flag's meaning and default. Saved in
/// every checkpoint, so `--resume` needs no other flag.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TrainArgs {
    pub config: Option<PathBuf>,
    pub init: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub val_data: Option<PathBuf>,
    pub batch_size: usize,
    pub seq_len: usize,
    pub steps: u64,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub schedule: ScheduleKind,
    pub warmup: u64,
    pub min_lr_frac: f64,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub momentum: f32,
    pub grad_clip: f32,
    pub grad_accum: usize,
    pub no_shuffle: bool,
    pub seed: u64,
    pub eval_every: u64,
    pub val_batches: usize,
    pub out: PathBuf,
    pub sample_tokens: usize,
    /// Save a checkpoint every N steps (0: only at the end and on Ctrl-C).
    pub save_every: u64,
    /// Checkpoints kept in --out (the oldest go first).
    pub keep: usize,
    /// Consecutive skipped steps (non-finite loss or gradient norm) before the run stops.
    pub max_skips: u64,
    /// Stop after this many evaluations without a val-loss improvement of at least
    /// `min_delta` (0: never). The best checkpoint is kept as out/best.
    #[serde(default)]
    pub patience: u64,
    #[serde(default)]
    pub min_delta: f32,
    /// Start over in an --out that already holds a run.
    #[serde(default)]
    pub force: bool,
    /// ZeRO stage with several MPI ranks: 0 (replicated optimizer state) or 1 (sharded).
    #[serde(default)]
    pub zero: u8,
    /// Skip autotuning: every matmul runs the adapter type's built-in default variant.
    #[serde(default)]
    pub no_tune: bool,
    /// With several MPI ranks, compare a checksum of every rank's parameters every N steps
    /// (0: never).
    #[serde(default = "hundred")]
    pub check_replicas: u64,
    /// f32, f16 (mixed precision) or auto; a run resolves auto once and saves what it chose.
    #[serde(default)]
    pub precision: PrecisionChoice,
    /// The loss scale: None is dynamic under f16 and 1 under f32.
    #[serde(default)]
    pub loss_scale: Option<LossScale>,
    /// Round the f16 weight copies stochastically instead of to nearest even.
    #[serde(default)]
    pub stochastic_rounding: bool,
    /// The element type of the checkpoints' model.safetensors.
    #[serde(default)]
    pub save_dtype: Dtype,
    /// Quantization-aware training for this block format; the run ends with model.gguf.
    #[serde(default)]
    pub qat: Option<crate::formats::QType>,
    /// Gradual magnitude pruning.
    #[serde(default)]
    pub prune: crate::compress::prune::PruneFlags,
    /// Knowledge distillation.
    #[serde(default)]
    pub kd: KdFlags,
    /// LoRA fine-tuning.
    #[serde(default)]
    pub lora: LoraFlags,
}

/// The LoRA flags of `wgtrain train`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize, clap::Args)]
pub struct LoraFlags {
    /// Train low-rank adapters of this rank on the --init model, whose weights stay frozen
    /// (no gradients, no optimizer state); the run saves peft's adapter_model.safetensors.
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// α: the adapters' output is scaled by α / rank (default 8, as peft's).
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// Comma-separated module names (peft's suffix match: c_attn, c_proj, c_fc, attn.c_proj;
    /// q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj) or all-linear. Default:
    /// c_attn for GPT-2, q_proj,v_proj for Llama.
    #[arg(long)]
    pub lora_targets: Option<String>,
    /// Dropout on each adapter's input while training (peft's lora_dropout; default 0). Masks
    /// are drawn per micro-batch from --seed and the step, so a resumed run draws the same.
    #[arg(long)]
    pub lora_dropout: Option<f64>,
    /// Continue training this LoRA adapter directory (peft's or wgtrain's) on --init: its
    /// rank, α and targets, and its weights (--adapter picks the GPU).
    #[arg(long)]
    pub lora_adapter: Option<PathBuf>,
    /// How the frozen base is held: keep (a GGUF file's block-quantized weights stay so on the
    /// GPU, dequantized inside the matmuls: QLoRA; a checkpoint stays f32), f32 (all
    /// dequantized), or q8_0|q4_0|q4_1 (the linear weights quantized on loading).
    #[arg(long, value_enum, default_value_t)]
    #[serde(default)]
    pub lora_base: crate::model::quantized::BaseFormat,
}

impl LoraFlags {
    /// The adapters the flags ask for on `config` (None: a full fine-tune).
    pub fn config(&self, config: &GptConfig) -> anyhow::Result<Option<crate::model::lora::LoraConfig>> {
        use crate::model::lora::{read_peft_config, LoraConfig};
        if let Some(dir) = &self.lora_adapter {
            if self.lora_rank.is_some() || self.lora_alpha.is_some() || self.lora_targets.is_some() {
                bail!("--lora-adapter {}: its adapter_config.json sets rank, alpha and targets; drop the other --lora-* flags", dir.display());
            }
            let mut cfg = read_peft_config(dir).map_err(|e| anyhow::anyhow!("--lora-adapter {e}"))?;
            cfg.dropout = self.dropout()?.unwrap_or(cfg.dropout);
            return Ok(Some(cfg));
        }
        let Some(rank) = self.lora_rank else {
            if self.lora_alpha.is_some() || self.lora_targets.is_some() || self.lora_dropout.is_some() {
                bail!("--lora-alpha, --lora-targets and --lora-dropout need --lora-rank (or --lora-adapter)");
            }
            return Ok(None);
        };
        let alpha = self.lora_alpha.unwrap_or(8.0);
        if rank == 0 || !(alpha > 0.0 && alpha.is_finite()) {
            bail!("--lora-rank {rank} --lora-alpha {alpha}: both must be positive");
        }
        let targets = match &self.lora_targets {
            Some(list) => list.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect(),
            None => LoraConfig::default_targets(config),
        };
        let lora = LoraConfig { rank, alpha, targets, dropout: self.dropout()?.unwrap_or(0.0) };
        lora.targeted(config).map_err(anyhow::Error::msg)?;
        Ok(Some(lora))
    }

    /// --lora-dropout, checked: 0 ≤ p < 1.
    fn dropout(&self) -> anyhow::Result<Option<f64>> {
        match self.lora_dropout {
            Some(p) if !(0.0..1.0).contains(&p) => bail!("--lora-dropout must be at least 0 and below 1, got {p}"),
            p => Ok(p),
        }
    }

    pub fn on(&self) -> bool {
        self.lora_rank.is_some() || self.lora_adapter.is_some()
    }
}

/// The distillation flags of `wgtrain train`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, clap::Args)]
pub struct KdFlags {
    /// Distill from this model (a checkpoint directory or a GGUF file, made for the data's
    /// tokenizer): the loss is (1 − W)·CE + W·T²·KL(teacher ‖ student) at temperature T.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// T, the softmaxes' temperature in the KD term.
    #[arg(long, default_value_t = 2.0)]
    pub kd_temperature: f32,
    /// W, the KD term's weight (0: plain cross-entropy; 1: KD alone).
    #[arg(long, default_value_t = 0.5)]
    pub kd_weight: f32,
}

impl Default for KdFlags {
    fn default() -> Self {
        Self { teacher: None, kd_temperature: 2.0, kd_weight: 0.5 }
    }
}

impl TrainArgs {
    /// The loss scale the run uses: --loss-scale, else dynamic under f16 and none under f32.
    pub fn loss_scale_for(&self, precision: crate::model::Precision) -> LossScale {
        self.loss_scale.unwrap_or(match precision {
            crate::model::Precision::F16 => LossScale::Dynamic,
            crate::model::Precision::F32 => LossScale::Fixed(1.0),
        })
    }
}

fn hundred() -> u64 {
    100
}

/// Refuses flags no run can take, at once and naming the flag. `world` is the number of ranks.
pub(super) fn check_args(a: &TrainArgs, world: usize) -> anyhow::Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be positive");
    }
    if a.zero > 1 {
        bail!("--zero {}: stages 0 (replicated optimizer state) and 1 (sharded) exist", a.zero);
    }
    if a.seq_len == 0 {
        bail!("--seq-len must be positive");
    }
    if a.steps == 0 {
        bail!("--steps must be positive");
    }
    if !(a.lr > 0.0 && a.lr.is_finite()) {
        bail!("--lr must be a positive number, got {}", a.lr);
    }
    if a.grad_accum == 0 {
        bail!("--grad-accum must be positive");
    }
    // Token positions within a step are counted in u32 on the GPU and in the loader.
    let tokens = (a.grad_accum as u128) * (a.batch_size as u128) * (a.seq_len as u128) * world as u128;
    if tokens > u32::MAX as u128 {
        bail!(
            "--grad-accum {} × --batch-size {} × --seq-len {}{} = {tokens} tokens per step, past the 2^32 a step can \
             index: lower --grad-accum",
            a.grad_accum,
            a.batch_size,
            a.seq_len,
            if world > 1 { format!(" × {world} ranks") } else { String::new() }
        );
    }
    if a.grad_clip < 0.0 {
        bail!("--grad-clip must be 0 (off) or positive");
    }
    crate::compress::prune::PruneSchedule::from_flags(&a.prune, a.steps).map_err(anyhow::Error::msg)?;
    let kd = &a.kd;
    if !(kd.kd_temperature > 0.0 && kd.kd_temperature.is_finite()) {
        bail!("--kd-temperature must be a positive number, got {}", kd.kd_temperature);
    }
    if !(0.0..=1.0).contains(&kd.kd_weight) {
        bail!("--kd-weight must be between 0 and 1, got {}", kd.kd_weight);
    }
    if kd.teacher.is_none() && *kd != KdFlags::default() {
        bail!("--kd-temperature and --kd-weight need --teacher");
    }
    if a.lora.on() {
        if a.init.is_none() {
            bail!("--lora-rank and --lora-adapter train adapters on a pretrained model: pass --init DIR|FILE.gguf");
        }
        if a.qat.is_some() || a.prune.prune_to.is_some() {
            bail!(
                "--lora-rank trains adapters over frozen weights: --qat and --prune-to change those weights; drop them"
            );
        }
    } else if a.lora.lora_base != Default::default() {
        bail!("--lora-base sets how a LoRA run holds its frozen base: it needs --lora-rank or --lora-adapter");
    }
    Ok(())
}

/// The architecture: the checkpoint's config with --init (a GGUF's metadata, a directory's
/// config.json, or --config beside a single .safetensors file), else --config, else
/// models/default.toml.
pub(super) fn model_config(a: &TrainArgs) -> anyhow::Result<GptConfig> {
    if let Some(init) = &a.init {
        return super::init::config(init, a.config.as_deref());
    }
    let path = a.config.clone().unwrap_or_else(|| model_file(DEFAULT_CONFIG));
    Ok(GptConfig::load(&path)?)
}
