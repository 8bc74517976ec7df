//! `wgtrain train`'s flags, and the run arguments they resolve to (defaults from the model's
//! config file where a flag is not given).

use std::path::PathBuf;

use wgtrain::gpu::Gpu;
use wgtrain::model::config::TrainDefaults;
use wgtrain::optim::{OptimConfig, OptimizerKind, ScheduleKind};
use wgtrain::train::defaults::Settings;

#[derive(clap::Args)]
pub struct TrainCli {
    /// Model config (models/*.toml or an HF config.json); default models/default.toml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Start from pretrained weights: an HF directory (config.json, model.safetensors), a
    /// .safetensors file, or a GGUF (a .gguf file, or a directory from `wgtrain quantize`), whose
    /// tensors dequantize into f32 masters.
    #[arg(long)]
    init: Option<PathBuf>,
    /// A directory from `wgtrain prepare`, or an llm.c token file; default: the bundled
    /// corpus, byte-level.
    #[arg(long)]
    data: Option<PathBuf>,
    /// llm.c token file for validation.
    #[arg(long)]
    val_data: Option<PathBuf>,
    /// Rows per batch (per rank); default: the config's [train] table, else 4.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Tokens per row; default: the config's [train] table, else 128.
    #[arg(long)]
    seq_len: Option<usize>,
    /// Optimizer steps; default: the config's [train] table, else 160.
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long, value_enum, default_value = "adamw")]
    optimizer: OptimizerKind,
    /// Peak learning rate; default: the config's [train] table, else 2e-3.
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, value_enum, default_value = "cosine")]
    schedule: ScheduleKind,
    /// Warm-up steps; default: the config's [train] table, else 10.
    #[arg(long)]
    warmup: Option<u64>,
    #[arg(long, default_value_t = wgtrain::optim::Schedule::MIN_LR_FRAC)]
    min_lr_frac: f64,
    #[arg(long, default_value_t = OptimConfig::TRAIN.beta1)]
    beta1: f32,
    #[arg(long, default_value_t = OptimConfig::TRAIN.beta2)]
    beta2: f32,
    #[arg(long, default_value_t = OptimConfig::TRAIN.eps)]
    eps: f32,
    #[arg(long, default_value_t = OptimConfig::TRAIN.weight_decay)]
    weight_decay: f32,
    /// SGD's momentum.
    #[arg(long, default_value_t = OptimConfig::TRAIN.momentum)]
    momentum: f32,
    /// Max global gradient norm; 0 is off.
    #[arg(long, default_value_t = OptimConfig::TRAIN.grad_clip)]
    grad_clip: f32,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Read batches in order instead of a seeded shuffle of rows.
    #[arg(long)]
    no_shuffle: bool,
    #[arg(long, default_value_t = wgtrain::model::config::DEFAULT_SEED)]
    seed: u64,
    /// Validate every N steps (and at the end); 0: only at the end. Default: the config's
    /// [train] table, else 40.
    #[arg(long)]
    eval_every: Option<u64>,
    /// Validation batches per evaluation.
    #[arg(long, default_value_t = 4)]
    val_batches: usize,
    #[arg(long, default_value = "runs/default")]
    out: PathBuf,
    /// Save a checkpoint (out/ckpt-NNNNNNNN) every N steps; 0: only at the end and on Ctrl-C.
    #[arg(long, default_value_t = 0)]
    save_every: u64,
    /// Checkpoints to keep in --out.
    #[arg(long, default_value_t = 3)]
    keep: usize,
    /// Consecutive skipped steps (non-finite loss or gradient norm) before the run stops.
    #[arg(long, default_value_t = 5)]
    max_skips: u64,
    /// Stop after this many evaluations without a val-loss gain of --min-delta (0: never);
    /// the best checkpoint is kept as out/best.
    #[arg(long, default_value_t = 0)]
    patience: u64,
    #[arg(long, default_value_t = 0.0)]
    min_delta: f32,
    /// Start over in an --out that already holds a run.
    #[arg(long)]
    force: bool,
    /// With several MPI ranks (mpirun -n N): 1 shards the optimizer state across them (ZeRO-1);
    /// 0 keeps a full copy on every rank.
    #[arg(long, default_value_t = 0)]
    zero: u8,
    /// With several MPI ranks: compare a checksum of every rank's parameters every N steps
    /// and before every checkpoint, stopping the run if they differ; 0: never.
    #[arg(long, default_value_t = 100)]
    check_replicas: u64,
    /// Continue the run in DIR (or from one checkpoint in it) exactly; other flags are ignored.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Tokens of text to sample at the end; 0: none.
    #[arg(long, default_value_t = 200)]
    sample_tokens: usize,
    /// Loss scale: dynamic (GradScaler's: 65536, halved on overflow, doubled after 2000 clean
    /// steps) or a constant. Default: dynamic under --precision f16, none under f32.
    #[arg(long, value_parser = wgtrain::optim::LossScale::parse)]
    loss_scale: Option<wgtrain::optim::LossScale>,
    /// Round the f16 weight copies stochastically instead of to nearest even.
    #[arg(long)]
    stochastic_rounding: bool,
    /// Element type of model.safetensors in checkpoints: f32, or f16 (which transformers loads
    /// with torch_dtype float16). Training state stays f32.
    #[arg(long, value_enum, default_value = "f32")]
    save_dtype: wgtrain::kernels::Dtype,
    /// Quantization-aware training for q8_0, q4_0 or q4_1: the forward reads fake-quantized
    /// linear weights; the run also writes --out/model.gguf, those same blocks.
    #[arg(long, value_enum)]
    qat: Option<wgtrain::formats::QType>,
    #[command(flatten)]
    prune: wgtrain::compress::prune::PruneFlags,
    #[command(flatten)]
    kd: wgtrain::train::KdFlags,
    #[command(flatten)]
    lora: wgtrain::train::LoraFlags,
}

impl TrainCli {
    /// The run's arguments: the config (the adapter's default run when neither --config nor
    /// --init is given, said on stdout) and each setting from its flag, else the config's
    /// [train] table, else the built-in value.
    pub fn into_args(self, gpu: &Gpu) -> anyhow::Result<wgtrain::train::TrainArgs> {
        let flags = TrainDefaults {
            batch_size: self.batch_size,
            seq_len: self.seq_len,
            steps: self.steps,
            lr: self.lr,
            warmup: self.warmup,
            eval_every: self.eval_every,
        };
        let (config, table) = wgtrain::train::defaults::run_config(gpu, self.config.clone(), self.init.is_some())?;
        let s = Settings::resolve(&flags, &table);
        Ok(wgtrain::train::TrainArgs {
            config,
            init: self.init,
            data: self.data,
            val_data: self.val_data,
            batch_size: s.batch_size,
            seq_len: s.seq_len,
            steps: s.steps,
            optimizer: self.optimizer,
            lr: s.lr,
            schedule: self.schedule,
            warmup: s.warmup,
            min_lr_frac: self.min_lr_frac,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
            grad_clip: self.grad_clip,
            grad_accum: self.grad_accum,
            no_shuffle: self.no_shuffle,
            seed: self.seed,
            eval_every: s.eval_every,
            val_batches: self.val_batches,
            out: self.out,
            sample_tokens: self.sample_tokens,
            save_every: self.save_every,
            keep: self.keep,
            max_skips: self.max_skips,
            patience: self.patience,
            min_delta: self.min_delta,
            force: self.force,
            zero: self.zero,
            no_tune: false,
            check_replicas: self.check_replicas,
            precision: Default::default(),
            loss_scale: self.loss_scale,
            stochastic_rounding: self.stochastic_rounding,
            save_dtype: self.save_dtype,
            qat: self.qat,
            prune: self.prune,
            kd: self.kd,
            lora: self.lora,
        })
    }
}
