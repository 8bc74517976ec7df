//! The setup phase: data, model, optimizer and --out made ready for the loop, from fresh
//! flags or a checkpoint. Every refusal happens here, before the first step.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::args::{check_args, model_config};
use super::model_load::{build_model, frozen_bytes, load_teacher, load_weights};
use super::state::{checkpoints, holds_run, Progress, RunState};
use super::TrainArgs;
use crate::compress::prune::PruneSchedule;
use crate::data::tokenizer::Tokenizer;
use crate::data::{self, Loader};
use crate::dist::Dist;
use crate::gpu::Gpu;
use crate::kernels::distill::Kd;
use crate::model::prune::Pruner;
use crate::model::quantized::base_tensors;
use crate::model::{Gpt, GptConfig, Precision, PrecisionChoice};
use crate::optim::{OptimConfig, Optimizer, OptimizerKind, Schedule};
use crate::parallel::Parallel;
use crate::tune::Pin;

/// A pruning run's checkpoint file of the mask.
pub(super) const PRUNE_MASK: &str = "prune_mask.bin";

/// Everything the loop's phases work on.
pub(super) struct Session<'g> {
    pub gpu: &'g Gpu,
    pub dist: &'g Dist,
    pub a: TrainArgs,
    pub config: GptConfig,
    pub gpt: Gpt,
    pub opt: Optimizer,
    /// The data-parallel exchange, with several ranks.
    pub par: Option<Parallel>,
    pub loader: Loader,
    pub val: Option<Loader>,
    pub schedule: Schedule,
    pub tok: Tokenizer,
    /// False for a token file with no tokenizer.json: `tok` is then only a guess (bytes).
    pub tok_known: bool,
    /// The first step to run (0, or the checkpoint's).
    pub first: u64,
    /// Early stopping and the numerical guard, carried by checkpoints.
    pub progress: Progress,
    /// Gradual pruning's schedule (the model holds its mask).
    pub prune: Option<PruneSchedule>,
    /// The sparsity the mask had when the run (re)started.
    pub sparsity: f64,
}

impl<'g> Session<'g> {
    pub fn new(
        gpu: &'g Gpu,
        a: &TrainArgs,
        resume: Option<&(PathBuf, RunState)>,
        dist: &'g Dist,
    ) -> anyhow::Result<Self> {
        check_args(a, dist.size)?;
        let mut a = a.clone();
        let precision = resolve_precision(gpu, &mut a, dist)?;
        let a = &a;
        let data = load_data(a)?;
        let config = vocab(a, resume.map(|r| r.0.as_path()), &data, dist.is_root())?;
        // On every rank, before any rank waits on another (build_model's tuning exchange).
        // A resumed LoRA run's adapters are the checkpoint's (its adapter_config.json), not
        // whatever --lora-adapter's directory holds now.
        let lora = match resume {
            Some((ckpt, _)) if a.lora.on() => {
                Some(crate::model::lora::read_peft_config(ckpt).map_err(|e| anyhow::anyhow!("--resume {e}"))?)
            }
            _ => a.lora.config(&config)?,
        };
        if a.seq_len > config.n_positions {
            bail!("--seq-len {} exceeds the model's n_positions {}", a.seq_len, config.n_positions);
        }
        if a.kd.teacher.is_some() && data.train.1.is_some() {
            bail!("--teacher: distillation runs on every position; --data holds masked examples (train.mask)");
        }
        let (loader, val) = loaders(a, data.train, data.val, dist.size, config.vocab_size)?;
        if let Some(n) = loader.longer_than(a.seq_len).filter(|&n| n > 0 && dist.is_root()) {
            println!(
                "note: {n} examples are longer than --seq-len {} + 1 tokens: their rows keep the first {0}",
                a.seq_len
            );
        }
        prepare_tuning(gpu, a, resume.map(|r| &r.1), dist)?;
        // A LoRA run's frozen base, in the form --lora-base asks for.
        let base = match (&lora, &a.init) {
            (Some(_), Some(init)) => {
                Some(base_tensors(&config, super::init::tensors(init, &config)?, a.lora.lora_base))
            }
            _ => None,
        };
        let mut gpt = build_model(gpu, a, (&config, lora, base.as_deref()), precision, dist)?;
        let prune = PruneSchedule::from_flags(&a.prune, a.steps).map_err(anyhow::Error::msg)?;
        if prune.is_some() {
            gpt.prune = Some(Pruner::new(gpu, &mut gpt.arena, a.prune.prune_scope)?);
        }
        if let Some(dir) = &a.kd.teacher {
            let teacher = load_teacher(gpu, dir, a, &config, &data.tokenizer)?;
            let kd = Kd { temperature: a.kd.kd_temperature, weight: a.kd.kd_weight };
            gpt.distill_from(gpu, teacher, kd).map_err(|e| anyhow::anyhow!("--teacher {}: {e}", dir.display()))?;
        }
        check_kernels(gpu, dist)?;
        load_weights(gpu, &gpt, a, resume.map(|r| r.0.as_path()), (&config, base))?;
        let par =
            (dist.size > 1).then(|| Parallel::new(gpu, &gpt, dist, a.zero == 1, a.optimizer == OptimizerKind::Lamb));
        let mut opt = optimizer(gpu, a, &gpt, par.as_ref(), dist)?;
        opt.loss_scale = a.loss_scale_for(precision);
        opt.stochastic = a.stochastic_rounding;
        opt.set_loss_scale(gpu, opt.loss_scale.initial(), 0);
        let schedule =
            Schedule { kind: a.schedule, lr_max: a.lr, warmup: a.warmup, steps: a.steps, min_lr_frac: a.min_lr_frac };
        let progress = Progress { best_val: f32::INFINITY, stale: 0, early_stopped: false, skips: 0 };
        let mut s = Session {
            gpu,
            dist,
            a: a.clone(),
            config,
            gpt,
            opt,
            par,
            loader,
            val,
            schedule,
            tok: data.tokenizer,
            tok_known: data.known,
            first: 0,
            progress,
            prune,
            sparsity: 0.0,
        };
        if let Some((ckpt, state)) = resume {
            s.restore(ckpt, state)?;
        }
        if s.gpt.arena.half.is_some() {
            s.write_half_copy()?;
        }
        if a.patience > 0 && s.val.is_none() {
            bail!(
                "--patience needs validation data longer than one batch: pass --val-data (or train on the bundled corpus)"
            );
        }
        if a.val_data.is_some() && a.data.is_none() {
            bail!("--val-data goes with --data; the bundled corpus brings its own validation split");
        }
        Ok(s)
    }

    /// Continues from a checkpoint: optimizer state, data position, step and loop state.
    fn restore(&mut self, ckpt: &Path, state: &RunState) -> anyhow::Result<()> {
        self.opt.load(self.gpu, &ckpt.join("optimizer.safetensors"))?;
        self.loader.restore(state.loader.clone()).map_err(|e| anyhow::anyhow!("--resume {}: {e}", ckpt.display()))?;
        self.first = state.step;
        if self.first >= self.a.steps {
            bail!("--resume {}: the run already took its {} steps", ckpt.display(), self.a.steps);
        }
        if state.early_stopped {
            bail!(
                "--resume {}: the run stopped early at step {} (--patience); nothing to continue",
                ckpt.display(),
                self.first
            );
        }
        self.progress.best_val = state.best_val.unwrap_or(f32::INFINITY);
        self.progress.stale = state.stale;
        self.progress.skips = state.skips;
        if let Some((scale, clean)) = state.loss_scale {
            self.opt.set_loss_scale(self.gpu, scale, clean);
        }
        if let Some(p) = &self.gpt.prune {
            self.sparsity = p.load(self.gpu, &ckpt.join(PRUNE_MASK))?;
        }
        Ok(())
    }

    /// The f16 copy of the loaded parameters, as the last update would have rounded them (its
    /// step's seed, for stochastic rounding). Under ZeRO-1 each rank rounds its shard and the
    /// shards are gathered.
    fn write_half_copy(&mut self) -> anyhow::Result<()> {
        let mut rec = crate::gpu::Recorder::new(self.gpu);
        self.opt.record_half_copy(self.gpu, &mut rec);
        match self.par.as_mut().filter(|p| p.zero) {
            Some(p) => {
                p.record_shard_params(&mut rec, &self.gpt, self.dist);
                let index = rec.submit()?;
                p.gather_params(self.gpu, &self.gpt, self.dist, index)?;
            }
            None => {
                rec.submit()?;
            }
        }
        Ok(())
    }

    /// Tokens per optimizer step over every rank.
    pub fn tokens_per_step(&self) -> u64 {
        (self.gpt.b * self.gpt.t * self.a.grad_accum * self.dist.size) as u64
    }

    /// Rank 0's first lines: the model, the batch, and how the ranks share it.
    pub fn announce(&self) {
        if !self.dist.is_root() {
            return;
        }
        let (c, a) = (&self.config, &self.a);
        let per = self.gpt.micro_per_submit();
        let split = if a.grad_accum > per {
            format!(" ({} micro-batches per submit, {} submits per step)", per, a.grad_accum.div_ceil(per))
        } else {
            String::new()
        };
        let params = match &self.gpt.lora {
            Some(l) => format!(
                "{:.2}M parameters frozen{}, LoRA rank {} (α {}) on {} layers ({}): {} trainable",
                self.config.parameter_specs().iter().map(|(_, s)| s.iter().product::<usize>()).sum::<usize>() as f64
                    / 1e6,
                frozen_bytes(&self.gpt),
                l.cfg.rank,
                l.cfg.alpha,
                l.cfg.targeted(c).map_or(0, |t| t.len()),
                l.cfg.targets.join(", "),
                self.gpt.arena.table.numel()
            ),
            None => format!("{:.2}M parameters", self.gpt.arena.table.numel() as f64 / 1e6),
        };
        println!(
            "model: {} layers, {} heads, {} channels, vocab {}, {params}; batch {} × {} × {} accum{split}; {} steps on {}",
            c.n_layer,
            c.n_head,
            c.n_embd,
            c.vocab_size,
            a.batch_size,
            a.seq_len,
            a.grad_accum,
            a.steps,
            self.gpu.name()
        );
        if let Some(p) = &self.par {
            let how = if p.zero {
                "ZeRO-1: gradients reduce-scattered, optimizer state sharded, parameters all-gathered".to_string()
            } else {
                format!("gradients all-reduced in {} buckets as the backward completes them", p.buckets().len())
            };
            println!("{} ranks, global batch {} × {}; {how}", self.dist.size, a.batch_size * self.dist.size, a.seq_len);
        }
    }
}

/// Tokens, with the examples of masked data.
type TokenData = (Vec<u32>, Option<data::Examples>);

/// Training and validation tokens, and the tokenizer that made them.
struct Data {
    train: TokenData,
    val: TokenData,
    tokenizer: Tokenizer,
    /// The tokenizer.json it came from; None for the bundled corpus and bare token files.
    tokenizer_file: Option<PathBuf>,
    /// False for a token file with no tokenizer.json beside it.
    known: bool,
}

/// --data as a directory made by `wgtrain prepare` (train.bin, val.bin, tokenizer.json), or a
/// token file (with a tokenizer.json beside it, if any), or the bundled corpus.
fn load_data(a: &TrainArgs) -> anyhow::Result<Data> {
    let Some(path) = &a.data else {
        let (train, val) = data::bundled_corpus()?;
        let (train, val) = ((train, None), (val, None));
        return Ok(Data { train, val, tokenizer: Tokenizer::byte(), tokenizer_file: None, known: true });
    };
    let (train_path, val_path, dir) = match data::prepared_files(path)? {
        Some((train, val)) => (train, a.val_data.clone().or(val), path.clone()),
        None => (path.clone(), a.val_data.clone(), path.parent().map(Path::to_path_buf).unwrap_or_default()),
    };
    let file = dir.join("tokenizer.json");
    let tokenizer_file = file.is_file().then_some(file);
    let tokenizer = Tokenizer::for_dir(&dir).map_err(|e| anyhow::anyhow!("--data: {e}"))?;
    let val = val_path.as_ref().map(|p| data::sft::read_token_data(p)).transpose()?.unwrap_or_default();
    let known = tokenizer_file.is_some();
    Ok(Data { train: data::sft::read_token_data(&train_path)?, val, tokenizer, tokenizer_file, known })
}

/// The model's config, its vocabulary checked against the data's tokenizer: a fresh model
/// takes the tokenizer's size; weights from elsewhere must have been made for it.
fn vocab(a: &TrainArgs, resume: Option<&Path>, data: &Data, root: bool) -> anyhow::Result<GptConfig> {
    // A LoRA checkpoint holds the adapters only: the architecture is --init's.
    let mut config = match resume {
        Some(ckpt) if !a.lora.on() => GptConfig::load(&ckpt.join("config.json"))?,
        _ => model_config(a)?,
    };
    let Some(src) = &data.tokenizer_file else { return Ok(config) };
    let (have, need) = (config.vocab_size, data.tokenizer.vocab_size);
    if resume.is_none() && a.init.is_none() && have != need {
        if root {
            println!("vocab_size {have} -> {need}, from {}", src.display());
        }
        config.vocab_size = need;
    } else if have < need {
        bail!(
            "the model's vocab_size {have} is smaller than the {need} tokens of {}; use a model made for this tokenizer",
            src.display()
        );
    }
    // Weights made for another tokenizer would read every id as another token.
    if let Some(init) = a.init.as_ref().filter(|_| resume.is_none()) {
        if let Some((t, theirs)) = super::init::tokenizer(init)? {
            if !t.same_ids(&data.tokenizer) {
                bail!(
                    "--init {}: its tokenizer ({}) gives tokens other ids than {}; prepare the data with it \
                     (--tokenizer {})",
                    init.display(),
                    theirs.display(),
                    src.display(),
                    theirs.display()
                );
            }
        }
    }
    Ok(config)
}

/// The training loader and, when the validation data holds more than one batch, its loader.
/// Every rank reads the global batch (b rows per rank) and keeps its own rows.
fn loaders(
    a: &TrainArgs,
    train: TokenData,
    val: TokenData,
    world: usize,
    vocab_size: usize,
) -> anyhow::Result<(Loader, Option<Loader>)> {
    let (b, t) = (a.batch_size, a.seq_len);
    let loader = Loader::of(train, b * world, t, !a.no_shuffle, a.seed).map_err(|e| anyhow::anyhow!("--data: {e}"))?;
    let val = Loader::of(val, b * world, t, false, 0).ok().filter(|v| v.batches() > 0);
    let max_tok = loader.max_token().max(val.as_ref().map_or(0, Loader::max_token));
    if max_tok as usize >= vocab_size {
        bail!("--data holds token id {max_tok}, but the model's vocab_size is {vocab_size}");
    }
    Ok((loader, val))
}

/// Sets up the matmul tuning table before the model is built: a resumed run pins the choices
/// it recorded; otherwise rank 0 (or the only rank) tunes unless --no-tune, and under MPI the
/// other ranks take rank 0's choices, sent once it has built its model.
fn prepare_tuning(gpu: &Gpu, a: &TrainArgs, resumed: Option<&RunState>, dist: &Dist) -> anyhow::Result<()> {
    let mut t = gpu.tuning.lock().unwrap();
    t.tune = !a.no_tune;
    match resumed.map(|r| &r.tuning) {
        Some(Some(choices)) => t.pin(choices).map_err(|e| anyhow::anyhow!("--resume: {e}"))?,
        // A run from before autotuning ran the baseline everywhere.
        Some(None) => {
            t.tune = false;
            t.baselines = true;
        }
        None => {}
    }
    if dist.size > 1 && !dist.is_root() {
        drop(t);
        let choices: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&dist.string_from_root(String::new()))?;
        let mut t = gpu.tuning.lock().unwrap();
        t.pin(&choices).map_err(|e| anyhow::anyhow!("rank 0's tuning: {e}"))?;
        t.tune = false;
    }
    Ok(())
}

/// Checks the kernel variants the model was built with against the CPU reference where they
/// were never verified on this adapter (`gpu::tuning::preflight`), so a driver that computes
/// one wrongly stops the run before it trains a wrong model.
fn check_kernels(gpu: &Gpu, dist: &Dist) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let rows = crate::gpu::tuning::preflight(gpu)?;
    if let Some(bad) = rows.iter().find(|r| !r.pass) {
        bail!(
            "{}: kernel {} computes wrong values here (worst error {:.3e} times its bound, against the CPU \
             reference); `wgtrain check` lists every variant",
            gpu.name(),
            bad.label,
            bad.worst
        );
    }
    if !rows.is_empty() && dist.is_root() {
        let ms = start.elapsed().as_secs_f64() * 1e3;
        println!(
            "checked {} kernel variants against the CPU reference on this adapter: all pass ({ms:.0} ms)",
            rows.len()
        );
    }
    Ok(())
}

/// The optimizer over the whole arena, or this rank's ZeRO-1 shard of it.
fn optimizer(gpu: &Gpu, a: &TrainArgs, gpt: &Gpt, par: Option<&Parallel>, dist: &Dist) -> anyhow::Result<Optimizer> {
    let ocfg = OptimConfig {
        kind: a.optimizer,
        beta1: a.beta1,
        beta2: a.beta2,
        eps: a.eps,
        weight_decay: a.weight_decay,
        momentum: a.momentum,
        grad_clip: a.grad_clip,
    };
    Ok(match par {
        Some(p) if p.zero => {
            let (lo, hi) = p.shards[dist.rank];
            Optimizer::new_shard(gpu, &gpt.arena, ocfg, None, lo..hi)?
        }
        _ => Optimizer::new(gpu, &gpt.arena, ocfg, None)?,
    })
}

/// Resolves --precision on this adapter (auto once: the run saves what it chose, so a resumed
/// run keeps it) and says what auto picked.
fn resolve_precision(gpu: &Gpu, a: &mut TrainArgs, dist: &Dist) -> anyhow::Result<Precision> {
    let (p, note) = a.precision.resolve(gpu).map_err(anyhow::Error::msg)?;
    if let (Some(line), true) = (note, dist.is_root()) {
        println!("{line}");
    }
    a.precision = match p {
        Precision::F32 => PrecisionChoice::F32,
        Precision::F16 => PrecisionChoice::F16,
    };
    Ok(p)
}

/// Makes --out ready on rank 0 and opens metrics.jsonl (a sink on the other ranks): a fresh
/// run refuses an --out holding a run unless --force, which clears it; a resumed run drops
/// whatever came after its checkpoint.
pub(super) fn open_out(s: &Session, resume: Option<&RunState>) -> anyhow::Result<Box<dyn Write>> {
    let a = &s.a;
    if !s.dist.is_root() {
        return Ok(Box::new(std::io::sink()));
    }
    if resume.is_none() && !a.force && holds_run(&a.out) {
        bail!(
            "--out {} already holds a run (metrics.jsonl or checkpoints): pass --resume {} to continue it, or --force to start over",
            a.out.display(),
            a.out.display()
        );
    }
    if resume.is_none() && a.force && a.out.is_dir() {
        // Start over: the old run's checkpoints, best model and curves go.
        for (_, p) in checkpoints(&a.out)? {
            std::fs::remove_dir_all(&p).with_context(|| p.display().to_string())?;
        }
        for name in ["best", "loss.png"] {
            let p = a.out.join(name);
            let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        }
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("--out {}", a.out.display()))?;
    let tok_path = a.out.join("tokenizer.json");
    if s.tok_known {
        s.tok.save(&tok_path).map_err(anyhow::Error::msg)?;
    } else {
        // A token file of unknown origin: no tokenizer is saved, and none of an earlier run
        // may pass for this one's.
        let _ = std::fs::remove_file(&tok_path);
    }
    if resume.is_none() {
        save_chat(a)?;
    }
    let metrics_path = a.out.join("metrics.jsonl");
    if let Some(state) = resume {
        truncate_after(&a.out, &metrics_path, state.step)?;
    }
    // A fresh run starts metrics.jsonl anew; a resumed one appends.
    let metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(resume.is_some())
        .write(true)
        .truncate(resume.is_none())
        .open(&metrics_path)
        .with_context(|| metrics_path.display().to_string())?;
    Ok(Box::new(metrics))
}

/// The resumed timeline replaces whatever came after its checkpoint: metrics lines and later
/// checkpoints.
fn truncate_after(out: &Path, metrics_path: &Path, step: u64) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(metrics_path).unwrap_or_default();
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s < step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(metrics_path, kept).with_context(|| metrics_path.display().to_string())?;
    for (s, p) in checkpoints(out)? {
        if s > step {
            std::fs::remove_dir_all(&p).with_context(|| p.display().to_string())?;
        }
    }
    Ok(())
}

/// The chat template of --init's model (and its turn's end) into --out's
/// tokenizer_config.json, which every checkpoint copies; none from an earlier run stays.
fn save_chat(a: &TrainArgs) -> anyhow::Result<()> {
    let file = a.out.join("tokenizer_config.json");
    let _ = std::fs::remove_file(&file);
    let Some(init) = &a.init else { return Ok(()) };
    if let Some((template, eos)) = super::init::chat(init)? {
        crate::data::chat::save_template(&a.out, &template, eos.as_deref()).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}
