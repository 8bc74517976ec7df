//! The training loop: batches in, one submit per optimizer step, metrics and checkpoints out.

pub mod defaults;
mod step;

pub use defaults::{default_config, model_file, DEFAULT_CONFIG};
pub use step::run_step;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::data::tokenizer::Tokenizer;
use crate::data::{self, Loader};
use crate::dist::Dist;
use crate::gpu::{Gpu, Recorder};
use crate::model::{checkpoint, Gpt, GptConfig};
use crate::optim::{OptimConfig, Optimizer, OptimizerKind, Schedule, ScheduleKind};
use crate::parallel::Parallel;
use crate::reference::Rng;

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
}

fn check_args(a: &TrainArgs) -> anyhow::Result<()> {
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
    if a.grad_clip < 0.0 {
        bail!("--grad-clip must be 0 (off) or positive");
    }
    Ok(())
}

/// The architecture: the checkpoint's config with --init (a directory's config.json, or
/// --config beside a single .safetensors file), else --config, else models/default.toml.
fn model_config(a: &TrainArgs) -> anyhow::Result<GptConfig> {
    if let Some(init) = &a.init {
        if init.is_dir() {
            return Ok(GptConfig::load(&init.join("config.json"))?);
        }
        let cfg = a.config.as_ref().map_or_else(|| init.with_file_name("config.json"), Clone::clone);
        return GptConfig::load(&cfg)
            .with_context(|| format!("--init {} is a file: its config comes from {}", init.display(), cfg.display()));
    }
    let path = a.config.clone().unwrap_or_else(|| model_file(DEFAULT_CONFIG));
    Ok(GptConfig::load(&path)?)
}

/// Trains as the flags say and writes metrics.jsonl, the checkpoint and the optimizer state
/// into --out.
/// Returns the exit code to use when a signal stopped the run (130 for SIGINT, 143 for
/// SIGTERM), after the step in flight finished and a checkpoint was saved.
pub fn train(gpu: &Gpu, a: &TrainArgs) -> anyhow::Result<Option<i32>> {
    run(gpu, a, None, &Dist::single())
}

/// `train` as one of `dist`'s ranks: --batch-size rows per rank, rank 0 writing the logs
/// and checkpoints.
pub fn train_dist(gpu: &Gpu, a: &TrainArgs, dist: &Dist) -> anyhow::Result<Option<i32>> {
    run(gpu, a, None, dist)
}

/// Continues the run in `dir` (a run directory, whose newest checkpoint is taken, or one
/// checkpoint directory) with the flags it was started with; metrics.jsonl is appended to.
pub fn resume(gpu: &Gpu, dir: &Path) -> anyhow::Result<Option<i32>> {
    resume_dist(gpu, dir, &Dist::single())
}

/// `resume` as one of `dist`'s ranks. The run may have had another number of ranks: the
/// global batch stays, split over the ranks there are now.
pub fn resume_dist(gpu: &Gpu, dir: &Path, dist: &Dist) -> anyhow::Result<Option<i32>> {
    let ckpt = latest_checkpoint(dir)?;
    let text =
        std::fs::read_to_string(ckpt.join("state.json")).with_context(|| format!("--resume {}", ckpt.display()))?;
    let state: RunState = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("--resume {}: state.json is not a wgtrain checkpoint ({e})", ckpt.display()))?;
    let mut args = state.args.clone();
    args.out = ckpt.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    if state.world != dist.size {
        let global = args.batch_size * state.world;
        if !global.is_multiple_of(dist.size) {
            bail!(
                "--resume {}: the run's global batch is {global} rows ({} ranks × {}), which {} ranks cannot share \
                 evenly; resume with a number of ranks that divides {global}",
                ckpt.display(),
                state.world,
                args.batch_size,
                dist.size
            );
        }
        args.batch_size = global / dist.size;
        if dist.is_root() {
            println!(
                "resuming a {}-rank run on {} ranks: batch {} per rank, the same global batch of {global}",
                state.world, dist.size, args.batch_size
            );
        }
    }
    run(gpu, &args, Some((ckpt, state)), dist)
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

/// What a checkpoint holds beside the model and optimizer files.
#[derive(serde::Serialize, serde::Deserialize)]
struct RunState {
    format: String,
    /// The next step to run.
    step: u64,
    loader: data::LoaderState,
    args: TrainArgs,
    /// Early stopping: the best val loss so far and evaluations since it; set when it stopped.
    /// None until a validation loss exists (JSON has no infinity).
    #[serde(default)]
    best_val: Option<f32>,
    #[serde(default)]
    stale: u64,
    #[serde(default)]
    early_stopped: bool,
    /// Consecutive skipped steps (the numerical guard).
    #[serde(default)]
    skips: u64,
    /// MPI ranks of the run; --batch-size is per rank.
    #[serde(default = "one")]
    world: usize,
    /// The matmul variant of each product and shape class (crate::tune), pinned on --resume so
    /// that it continues bitwise. None in runs from before autotuning, which ran the baseline.
    #[serde(default)]
    tuning: Option<std::collections::BTreeMap<String, String>>,
}

fn one() -> usize {
    1
}

/// Loop state a checkpoint carries besides the model, the optimizer and the data position.
#[derive(Clone, Copy)]
struct Progress {
    best_val: f32,
    stale: u64,
    early_stopped: bool,
    skips: u64,
}

const RUN_FORMAT: &str = "wgtrain-run-1";

/// Whether `dir` has a run's metrics or checkpoints in it.
fn holds_run(dir: &Path) -> bool {
    dir.join("metrics.jsonl").exists() || latest_checkpoint(dir).is_ok()
}

/// `dir` itself if it is a checkpoint, else its newest `ckpt-*`.
fn latest_checkpoint(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.join("state.json").exists() {
        return Ok(dir.to_path_buf());
    }
    let all = checkpoints(dir).with_context(|| format!("--resume {}", dir.display()))?;
    all.last().map(|(_, p)| p.clone()).ok_or_else(|| {
        anyhow::anyhow!("--resume {}: no checkpoint (ckpt-*) in it; start without --resume", dir.display())
    })
}

/// The `ckpt-N` directories in `dir`, by step.
fn checkpoints(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut all: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .filter_map(|p| {
            let step = p.file_name()?.to_str()?.strip_prefix("ckpt-")?.parse().ok()?;
            Some((step, p))
        })
        .collect();
    all.sort();
    Ok(all)
}

/// Training and validation tokens, and the tokenizer that made them.
struct Data {
    train: Vec<u32>,
    val: Vec<u32>,
    tokenizer: Tokenizer,
    /// The tokenizer.json it came from; None for the bundled corpus and bare token files.
    tokenizer_file: Option<PathBuf>,
    /// False for a token file with no tokenizer.json beside it: `tokenizer` is then only a
    /// guess (bytes), used for the end-of-run sample and not saved with the model.
    known: bool,
}

/// --data as a directory made by `wgtrain prepare` (train.bin, val.bin, tokenizer.json), or a
/// token file (with a tokenizer.json beside it, if any), or the bundled corpus.
fn load_data(a: &TrainArgs) -> anyhow::Result<Data> {
    let Some(path) = &a.data else {
        let (train, val) = data::bundled_corpus()?;
        return Ok(Data { train, val, tokenizer: Tokenizer::byte(), tokenizer_file: None, known: true });
    };
    let (train_path, val_path, dir) = match data::prepared_files(path)? {
        Some((train, val)) => (train, a.val_data.clone().or(val), path.clone()),
        None => (path.clone(), a.val_data.clone(), path.parent().map(Path::to_path_buf).unwrap_or_default()),
    };
    let file = dir.join("tokenizer.json");
    let tokenizer_file = file.is_file().then_some(file);
    let tokenizer = Tokenizer::for_dir(&dir).map_err(|e| anyhow::anyhow!("--data: {e}"))?;
    let val = val_path.as_ref().map(|p| data::read_tokens(p)).transpose()?.unwrap_or_default();
    let known = tokenizer_file.is_some();
    Ok(Data { train: data::read_tokens(&train_path)?, val, tokenizer, tokenizer_file, known })
}

/// Writes out/ckpt-NNNNNNNN (next step) atomically: into a temporary directory, then renamed.
/// Keeps the newest `keep`.
#[allow(clippy::too_many_arguments)]
fn save_checkpoint(
    gpu: &Gpu,
    gpt: &Gpt,
    opt: &Optimizer,
    loader: &Loader,
    a: &TrainArgs,
    next: u64,
    progress: Progress,
    dist: &Dist,
) -> anyhow::Result<PathBuf> {
    let dir = save_as(gpu, gpt, opt, loader, a, next, progress, &format!("ckpt-{next:08}"), dist)?;
    if !dist.is_root() {
        return Ok(dir);
    }
    // Keep the newest --keep by step; never the one just written.
    let others: Vec<PathBuf> = checkpoints(&a.out)?.into_iter().map(|(_, p)| p).filter(|p| *p != dir).collect();
    for old in others.iter().take((others.len() + 1).saturating_sub(a.keep.max(1))) {
        std::fs::remove_dir_all(old).with_context(|| old.display().to_string())?;
    }
    Ok(dir)
}

/// The whole optimizer state of a ZeRO-1 run, gathered on rank 0 (None elsewhere, and
/// without ZeRO, where rank 0 holds it all).
fn optimizer_bytes(
    gpu: &Gpu,
    gpt: &Gpt,
    opt: &Optimizer,
    a: &TrainArgs,
    dist: &Dist,
) -> anyhow::Result<Option<Vec<u8>>> {
    if a.zero == 0 || dist.size == 1 {
        return Ok(None);
    }
    let parts = dist.gather_bytes(opt.to_bytes(gpu)?);
    Ok(if dist.is_root() { Some(Optimizer::merge(&parts, &gpt.arena.table)?) } else { None })
}

fn write_optimizer(gpu: &Gpu, opt: &Optimizer, gathered: Option<Vec<u8>>, path: &Path) -> anyhow::Result<()> {
    match gathered {
        Some(bytes) => Optimizer::write_bytes(path, &bytes)?,
        None => opt.save(gpu, path)?,
    }
    Ok(())
}

/// Writes a checkpoint into out/NAME atomically: a temporary directory, then a rename.
#[allow(clippy::too_many_arguments)]
fn save_as(
    gpu: &Gpu,
    gpt: &Gpt,
    opt: &Optimizer,
    loader: &Loader,
    a: &TrainArgs,
    next: u64,
    progress: Progress,
    name: &str,
    dist: &Dist,
) -> anyhow::Result<PathBuf> {
    let dir = a.out.join(name);
    // Collective: a ZeRO-1 optimizer's shards meet on rank 0, which alone writes.
    let opt_bytes = optimizer_bytes(gpu, gpt, opt, a, dist)?;
    if !dist.is_root() {
        return Ok(dir);
    }
    let tmp = a.out.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    checkpoint::save_hf(&tmp, &gpt.config, &gpt.read_params(gpu)?)?;
    // The tokenizer sits beside the weights, as in an HF model directory.
    let tok = a.out.join("tokenizer.json");
    if tok.is_file() {
        std::fs::copy(&tok, tmp.join("tokenizer.json")).with_context(|| tok.display().to_string())?;
    }
    write_optimizer(gpu, opt, opt_bytes, &tmp.join("optimizer.safetensors"))?;
    let state = RunState {
        format: RUN_FORMAT.into(),
        step: next,
        loader: loader.state(),
        args: a.clone(),
        best_val: progress.best_val.is_finite().then_some(progress.best_val),
        stale: progress.stale,
        early_stopped: progress.early_stopped,
        skips: progress.skips,
        world: dist.size,
        tuning: Some(gpu.tuning.lock().unwrap().choices()),
    };
    let path = tmp.join("state.json");
    let mut f = std::fs::File::create(&path).with_context(|| path.display().to_string())?;
    f.write_all(serde_json::to_string(&state)?.as_bytes())?;
    f.sync_all()?;
    // Replace an older copy without a moment where none exists: move it aside first.
    let old = a.out.join(format!(".{name}.old"));
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(&dir, &old).with_context(|| dir.display().to_string())?;
    }
    std::fs::rename(&tmp, &dir).with_context(|| dir.display().to_string())?;
    let _ = std::fs::remove_dir_all(&old);
    if let Ok(d) = std::fs::File::open(&a.out) {
        let _ = d.sync_all();
    }
    Ok(dir)
}

fn run(gpu: &Gpu, a: &TrainArgs, resume: Option<(PathBuf, RunState)>, dist: &Dist) -> anyhow::Result<Option<i32>> {
    let root = dist.is_root();
    check_args(a)?;
    let data = load_data(a)?;
    let mut config = match &resume {
        Some((ckpt, _)) => GptConfig::load(&ckpt.join("config.json"))?,
        None => model_config(a)?,
    };
    if let Some(src) = &data.tokenizer_file {
        let (have, need) = (config.vocab_size, data.tokenizer.vocab_size);
        if resume.is_none() && a.init.is_none() && have != need {
            // A fresh model takes its vocabulary from the data's tokenizer.
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
            let theirs =
                if init.is_dir() { init.join("tokenizer.json") } else { init.with_file_name("tokenizer.json") };
            if theirs.is_file() {
                let t = Tokenizer::from_file(&theirs, None).map_err(anyhow::Error::msg)?;
                if !t.same_ids(&data.tokenizer) {
                    bail!(
                        "--init {}: its tokenizer.json gives tokens other ids than {}; prepare the data with it \
                         (--tokenizer {})",
                        init.display(),
                        src.display(),
                        theirs.display()
                    );
                }
            }
        }
    }
    if a.seq_len > config.n_positions {
        bail!("--seq-len {} exceeds the model's n_positions {}", a.seq_len, config.n_positions);
    }
    let Data { train: train_tokens, val: val_tokens, tokenizer: tok, known: tok_known, .. } = data;
    let (b, t) = (a.batch_size, a.seq_len);
    let mut loader =
        // Every rank reads the global batch (b rows per rank) and keeps its own rows.
        Loader::new(train_tokens, b * dist.size, t, !a.no_shuffle, a.seed).map_err(|e| anyhow::anyhow!("--data: {e}"))?;
    let mut val_loader = if val_tokens.len() > b * dist.size * t {
        Some(Loader::new(val_tokens, b * dist.size, t, false, 0).map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    let max_tok = loader.max_token().max(val_loader.as_ref().map_or(0, Loader::max_token));
    if max_tok as usize >= config.vocab_size {
        bail!("--data holds token id {max_tok}, but the model's vocab_size is {}", config.vocab_size);
    }

    prepare_tuning(gpu, a, resume.as_ref().map(|r| &r.1), dist)?;
    let gpt = Gpt::new(gpu, config.clone(), b, t, a.grad_accum);
    if dist.size > 1 && root {
        // The other ranks wait in prepare_tuning for the choices rank 0 made while building.
        dist.string_from_root(serde_json::to_string(&gpu.tuning.lock().unwrap().choices())?);
    }
    let gpt = gpt.map_err(|e| {
        let params = crate::optim::ParamTable::new(config.parameter_specs()).numel();
        let state = if a.optimizer == OptimizerKind::Sgd { 1 } else { 2 };
        let need = 4 * params * (2 + state) + Gpt::activation_bytes_for(&config, b, t, a.grad_accum);
        match e {
            crate::GpuError::BufferTooLarge { .. } | crate::GpuError::OutOfMemory { .. } => anyhow::anyhow!(
                "{e}; this model at batch {b} × {t} needs about {:.1} MB of GPU memory in all: lower --batch-size \
                 or --seq-len, or use a larger adapter",
                need as f64 / 1e6
            ),
            e => e.into(),
        }
    })?;
    match (&resume, &a.init) {
        (Some((ckpt, _)), _) => gpt.write_params(gpu, &checkpoint::load_hf(&ckpt.join("model.safetensors"), &config)?),
        (None, Some(init)) => {
            let file = if init.is_dir() { init.join("model.safetensors") } else { init.clone() };
            gpt.write_params(gpu, &checkpoint::load_hf(&file, &config)?);
        }
        (None, None) => gpt.init(gpu, a.seed),
    }
    let ocfg = OptimConfig {
        kind: a.optimizer,
        beta1: a.beta1,
        beta2: a.beta2,
        eps: a.eps,
        weight_decay: a.weight_decay,
        momentum: a.momentum,
        grad_clip: a.grad_clip,
    };
    let lamb = a.optimizer == OptimizerKind::Lamb;
    let mut par = (dist.size > 1).then(|| Parallel::new(gpu, &gpt, dist, a.zero == 1, lamb));
    let mut opt = match &par {
        Some(p) if p.zero => {
            let (lo, hi) = p.shards[dist.rank];
            Optimizer::new_shard(gpu, &gpt.arena, ocfg.clone(), None, lo..hi)?
        }
        _ => Optimizer::new(gpu, &gpt.arena, ocfg.clone(), None)?,
    };
    let mut first = 0;
    if let Some((ckpt, state)) = &resume {
        opt.load(gpu, &ckpt.join("optimizer.safetensors"))?;
        loader.restore(state.loader.clone()).map_err(|e| anyhow::anyhow!("--resume {}: {e}", ckpt.display()))?;
        first = state.step;
        if first >= a.steps {
            bail!("--resume {}: the run already took its {} steps", ckpt.display(), a.steps);
        }
        if state.early_stopped {
            bail!(
                "--resume {}: the run stopped early at step {first} (--patience); nothing to continue",
                ckpt.display()
            );
        }
    }
    // (10) Early stopping needs validation data, and --val-data needs --data.
    if a.patience > 0 && val_loader.is_none() {
        bail!(
            "--patience needs validation data longer than one batch: pass --val-data (or train on the bundled corpus)"
        );
    }
    if a.val_data.is_some() && a.data.is_none() {
        bail!("--val-data goes with --data; the bundled corpus brings its own validation split");
    }
    let schedule =
        Schedule { kind: a.schedule, lr_max: a.lr, warmup: a.warmup, steps: a.steps, min_lr_frac: a.min_lr_frac };

    if root && resume.is_none() && !a.force && holds_run(&a.out) {
        bail!(
            "--out {} already holds a run (metrics.jsonl or checkpoints): pass --resume {} to continue it, or --force to start over",
            a.out.display(),
            a.out.display()
        );
    }
    if root && resume.is_none() && a.force && a.out.is_dir() {
        // Start over: the old run's checkpoints, best model and curves go.
        for (_, p) in checkpoints(&a.out)? {
            std::fs::remove_dir_all(&p).with_context(|| p.display().to_string())?;
        }
        for name in ["best", "loss.png"] {
            let p = a.out.join(name);
            let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        }
    }
    let metrics_path = a.out.join("metrics.jsonl");
    // Rank 0 alone writes; the others log into nothing.
    let metrics: Box<dyn Write> = if root {
        std::fs::create_dir_all(&a.out).with_context(|| format!("--out {}", a.out.display()))?;
        let tok_path = a.out.join("tokenizer.json");
        if tok_known {
            tok.save(&tok_path).map_err(anyhow::Error::msg)?;
        } else {
            // A token file of unknown origin: no tokenizer is saved, and none of an earlier
            // run may pass for this one's.
            let _ = std::fs::remove_file(&tok_path);
        }
        if let Some((_, state)) = &resume {
            // (1) The resumed timeline replaces whatever came after its checkpoint: metrics lines
            // and later checkpoints.
            let text = std::fs::read_to_string(&metrics_path).unwrap_or_default();
            let kept: String = text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s < state.step)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(&metrics_path, kept).with_context(|| metrics_path.display().to_string())?;
            for (step, p) in checkpoints(&a.out)? {
                if step > state.step {
                    std::fs::remove_dir_all(&p).with_context(|| p.display().to_string())?;
                }
            }
        }
        // A fresh run starts metrics.jsonl anew; a resumed one appends.
        let metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(resume.is_some())
            .write(true)
            .truncate(resume.is_none())
            .open(&metrics_path)
            .with_context(|| metrics_path.display().to_string())?;
        Box::new(metrics)
    } else {
        Box::new(std::io::sink())
    };
    let interrupt = Arc::new(AtomicBool::new(false));
    let terminate = Arc::new(AtomicBool::new(false));
    // The first signal asks for a clean stop; a second one ends the process at once.
    signal_hook::flag::register_conditional_shutdown(signal_hook::consts::SIGINT, 130, interrupt.clone())?;
    signal_hook::flag::register_conditional_shutdown(signal_hook::consts::SIGTERM, 143, terminate.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupt.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, terminate.clone())?;
    let n_params = gpt.arena.table.numel();
    let tokens_per_step = (b * t * a.grad_accum * dist.size) as u64;
    if root {
        println!(
            "model: {} layers, {} heads, {} channels, vocab {}, {:.2}M parameters; batch {b} × {t} × {} accum; {} steps on {}",
            config.n_layer,
            config.n_head,
            config.n_embd,
            config.vocab_size,
            n_params as f64 / 1e6,
            a.grad_accum,
            a.steps,
            gpu.name()
        );
    }
    if let Some(p) = &par {
        if root {
            println!(
                "{} ranks, global batch {} × {t}; {}",
                dist.size,
                b * dist.size,
                if p.zero {
                    "ZeRO-1: gradients reduce-scattered, optimizer state sharded, parameters all-gathered".to_string()
                } else {
                    format!("gradients all-reduced in {} buckets as the backward completes them", p.buckets().len())
                }
            );
        }
    }
    let mut log = Log {
        metrics,
        train: Vec::new(),
        val: Vec::new(),
        lr: Vec::new(),
        png: a.out.join("loss.png"),
        readback: gpt.loss_readback(gpu),
        pending: None,
        last_done: Instant::now(),
        tokens: tokens_per_step,
        bar: if root { progress_bar(a.steps) } else { indicatif::ProgressBar::hidden() },
        last_loss: f32::NAN,
        skips: 0,
        root,
        dist,
        comm: None,
    };
    if root && resume.is_some() {
        log.reload(&metrics_path);
    }
    let started = Instant::now();
    let (mut best_val, mut stale) =
        resume.as_ref().map_or((f32::INFINITY, 0), |(_, st)| (st.best_val.unwrap_or(f32::INFINITY), st.stale));
    log.skips = resume.as_ref().map_or(0, |(_, st)| st.skips);
    log.bar.set_position(first);
    let mut stopped = None;
    let mut early = false;
    let mut last_step = a.steps;
    let result = (|| -> anyhow::Result<()> {
        for step in first..a.steps {
            let lr = schedule.lr(step);
            let comm_before = dist.comm_time();
            let index =
                step::run_step(gpu, &gpt, &mut opt, par.as_mut(), dist, &mut loader, lr as f32, &mut log.readback)?;
            // While this step runs, log the previous one.
            log.flush(gpu, &mut opt)?;
            log.readback.submitted_at(Some(index.clone()));
            opt.submitted_at(index);
            if let Some(p) = &par {
                log.comm = Some(((dist.comm_time() - comm_before).as_secs_f64() * 1e3, p.wait.as_secs_f64() * 1e3));
            }
            if log.skips > a.max_skips {
                log.bar.finish_and_clear();
                bail!(
                    "{} steps in a row had a non-finite loss or gradient norm (up to step {}); stopping with the \
                 last checkpoint left as it was: lower --lr or set --grad-clip",
                    log.skips,
                    step.saturating_sub(1)
                );
            }
            log.pending = Some((step, lr));
            let eval_now = a.eval_every > 0 && (step + 1) % a.eval_every == 0 || step + 1 == a.steps;
            if let (true, Some(vl)) = (eval_now, val_loader.as_mut()) {
                log.flush(gpu, &mut opt)?;
                // The ranks' mean, and rank 0's copy of it for the decisions below (best
                // checkpoint, early stop), which every rank must take alike.
                let val = dist.from_root(evaluate_rows(gpu, &gpt, vl, a.val_batches, dist)? as f64) as f32;
                log.val_line(step, val)?;
                if val < best_val - a.min_delta {
                    best_val = val;
                    stale = 0;
                    let progress = Progress { best_val, stale, early_stopped: false, skips: log.skips };
                    save_as(gpu, &gpt, &opt, &loader, a, step + 1, progress, "best", dist)?;
                } else {
                    stale += 1;
                }
                if a.patience > 0 && stale >= a.patience && step + 1 < a.steps {
                    log.say(format!(
                        "early stop at step {step}: {stale} evaluations without a val-loss gain of {}",
                        a.min_delta
                    ));
                    early = true;
                }
            }
            let (mut int, mut term) = (interrupt.load(Ordering::Relaxed), terminate.load(Ordering::Relaxed));
            if dist.size > 1 {
                // mpirun forwards signals to every rank, not at the same step: the ranks agree
                // on one step to stop at, so their collectives stay in step.
                let seen = dist.all_reduce_f64(vec![f64::from(u8::from(int)), f64::from(u8::from(term))]);
                (int, term) = (seen[0] > 0.0, seen[1] > 0.0);
            }
            let signal = if int {
                Some(130)
            } else if term {
                Some(143)
            } else {
                None
            };
            // A signal on the last step just lets the run finish normally.
            let signal = signal.filter(|_| step + 1 < a.steps && !early);
            if signal.is_some() || (a.save_every > 0 && (step + 1) % a.save_every == 0 && step + 1 < a.steps && !early)
            {
                log.flush(gpu, &mut opt)?;
                let progress = Progress { best_val, stale, early_stopped: false, skips: log.skips };
                let dir = save_checkpoint(gpu, &gpt, &opt, &loader, a, step + 1, progress, dist)?;
                if let Some(code) = signal {
                    log.bar.finish_and_clear();
                    log.plot()?;
                    log.say(format!("stopped by a signal after step {step}; checkpoint {}", dir.display()));
                    stopped = Some(code);
                    break;
                }
            }
            if early {
                last_step = step + 1;
                break;
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        // Keep what is safe to keep: the metrics written so far and the curves. A checkpoint
        // of a failed step could be inconsistent, so the last good one stays the newest.
        log.bar.finish_and_clear();
        // With several ranks, no collective (the others may not have failed), so no
        // averaged loss to log.
        if dist.size == 1 {
            let _ = log.flush(gpu, &mut opt);
        }
        let _ = log.plot();
        let last = latest_checkpoint(&a.out).map_or("none yet".to_string(), |p| p.display().to_string());
        bail!("{e:#}; training stopped: metrics.jsonl is up to date and the last checkpoint is {last}");
    }
    if stopped.is_some() {
        return Ok(stopped);
    }
    log.flush(gpu, &mut opt)?;
    let progress = Progress { best_val, stale, early_stopped: early, skips: log.skips };
    let final_ckpt = save_checkpoint(gpu, &gpt, &opt, &loader, a, last_step, progress, dist)?;
    log.bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    log.plot()?;

    let stats = gpu.pool.stats();
    let state = match a.optimizer {
        OptimizerKind::Sgd => 1,
        _ => 2,
    };
    if let Some(p) = &par {
        // Memory per rank, gathered on rank 0.
        let live = |c| stats.live.iter().filter(|(k, _)| *k == c).map(|(_, b)| *b).sum::<u64>() as f64 / 1e6;
        let line = format!(
            "rank {}: params {:.1} MB, grads {:.1} MB, optimizer state {:.1} MB ({}), activations {:.1} MB, peak {:.1} MB; \
             host-mappable staging {:.1} MB",
            dist.rank,
            live(crate::gpu::Category::Parameters),
            live(crate::gpu::Category::Gradients),
            opt.state_bytes() as f64 / 1e6,
            if p.zero {
                let (lo, hi) = p.shards[dist.rank];
                format!("shard: elements {lo}..{hi} of {}", gpt.arena.table.len)
            } else {
                "replicated".into()
            },
            live(crate::gpu::Category::Activations),
            stats.peak as f64 / 1e6,
            p.staging_bytes() as f64 / 1e6
        );
        for l in dist.gather_bytes(line.into_bytes()) {
            println!("{}", String::from_utf8_lossy(&l));
        }
    }
    if !root {
        return Ok(None);
    }
    checkpoint::save_hf(&a.out, &config, &gpt.read_params(gpu)?)?;
    let opt_path = a.out.join("optimizer.safetensors");
    if a.zero == 1 && dist.size > 1 {
        // The shards were gathered into the final checkpoint already.
        let from = final_ckpt.join("optimizer.safetensors");
        std::fs::copy(&from, &opt_path).with_context(|| from.display().to_string())?;
    } else {
        opt.save(gpu, &opt_path)?;
    }
    println!(
        "done: {} steps, last loss {:.4}, best val loss {}, {} tokens in {wall:.1} s ({:.0} tokens/s), adapter {}",
        last_step - first,
        log.last_loss,
        if best_val.is_finite() { format!("{best_val:.4}") } else { "n/a (no validation data)".into() },
        tokens_per_step * (last_step - first),
        (tokens_per_step * (last_step - first)) as f64 / wall,
        gpu.name()
    );
    // This rank's optimizer tensors: all of them, or its ZeRO-1 shard.
    let analytic = 4 * gpt.arena.table.numel() * 2 + 4 * opt.table.numel() * state + gpt.activation_bytes();
    println!(
        "GPU memory: peak {:.1} MB allocated; params + grads + optimizer state + activations = {:.1} MB ({:.2}×)",
        stats.peak as f64 / 1e6,
        analytic as f64 / 1e6,
        stats.peak as f64 / analytic as f64
    );
    if a.sample_tokens > 0 && config.vocab_size >= tok.vocab_size {
        let text = sample(gpu, &gpt, &tok, "", a.sample_tokens, 0.8, 40, a.seed)?;
        println!("sample:\n{text}");
    }
    println!("checkpoint: {}", a.out.display());
    Ok(None)
}

/// metrics.jsonl, loss.png, the progress bar, and the step whose results are in flight.
struct Log<'d> {
    /// Rank 0's metrics.jsonl; a sink on the other ranks.
    metrics: Box<dyn Write>,
    train: Vec<(u64, f32)>,
    val: Vec<(u64, f32)>,
    lr: Vec<(u64, f64)>,
    png: PathBuf,
    /// The step's losses, read after the next step is submitted.
    readback: crate::gpu::Readback,
    /// (step, lr) of the step whose losses and grad norm are in flight.
    pending: Option<(u64, f64)>,
    /// When the last logged step's results came back: a step's time runs from there to its
    /// own results, the GPU's pace once the queue is full.
    last_done: Instant,
    /// Tokens per optimizer step.
    tokens: u64,
    bar: indicatif::ProgressBar,
    last_loss: f32,
    /// Consecutive steps whose update the GPU skipped (non-finite gradients).
    skips: u64,
    /// Rank 0 prints and draws; every rank computes.
    root: bool,
    /// The ranks, to average the loss over.
    dist: &'d Dist,
    /// Milliseconds of MPI work in the pending step, and of it the training thread waited.
    comm: Option<(f64, f64)>,
}

impl Log<'_> {
    /// Prints a line above the progress bar (rank 0 only).
    fn say(&self, line: String) {
        if !self.root {
            return;
        }
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Logs the pending step, if any: waits for its results only if the GPU is not done.
    fn flush(&mut self, gpu: &Gpu, opt: &mut Optimizer) -> anyhow::Result<()> {
        let Some((step, lr)) = self.pending.take() else {
            return Ok(());
        };
        let losses: Vec<f32> = self.readback.take(gpu)?.unwrap_or_default();
        let mut loss = (losses.iter().map(|&x| x as f64).sum::<f64>() / losses.len().max(1) as f64) as f32;
        if self.dist.size > 1 {
            // Equal batches on every rank: the global mean is the mean of the ranks' means.
            loss = self.dist.mean(loss as f64) as f32;
        }
        let norm = opt.grad_norm(gpu)?.unwrap_or(f32::NAN);
        // A non-finite norm means the GPU skipped this update; the bias corrections of the
        // steps recorded since count it, so take it back for the next ones.
        // The GPU skips on the norm alone (a non-finite loss makes the gradients non-finite too).
        let skipped = !norm.is_finite();
        if skipped {
            self.skips += 1;
            opt.step = opt.step.saturating_sub(1);
        } else {
            self.skips = 0;
        }
        let ms = self.last_done.elapsed().as_secs_f64() * 1e3;
        self.last_done = Instant::now();
        let tps = self.tokens as f64 / (ms / 1e3);
        let mut line = serde_json::json!({ "step": step, "loss": loss, "lr": lr, "grad_norm": norm, "ms": ms, "tokens_per_s": tps });
        if skipped {
            line["skipped"] = true.into();
        }
        if let Some((busy, wait)) = self.comm.take() {
            line["comm_ms"] = busy.into();
            line["comm_wait_ms"] = wait.into();
        }
        writeln!(self.metrics, "{line}")?;
        self.metrics.flush()?;
        self.train.push((step, loss));
        self.lr.push((step, lr));
        self.last_loss = loss;
        self.bar.set_position(step + 1);
        self.bar.set_message(format!("loss {loss:.4} lr {lr:.2e} {tps:.0} tok/s"));
        if skipped {
            self.bar.println(format!("step {step}: loss {loss} grad_norm {norm}: not finite, update skipped"));
        }
        if self.bar.is_hidden() && self.root {
            println!("step {step}: loss {loss:.4} lr {lr:.3e} grad_norm {norm:.3} {ms:.0} ms {tps:.0} tokens/s");
        }
        Ok(())
    }

    /// Records a validation loss and redraws the curves.
    fn val_line(&mut self, step: u64, val: f32) -> anyhow::Result<()> {
        writeln!(self.metrics, "{}", serde_json::json!({ "step": step, "val_loss": val }))?;
        self.metrics.flush()?;
        self.val.push((step, val));
        self.plot()?;
        self.last_done = Instant::now();
        self.say(format!("step {step}: val loss {val:.4}"));
        Ok(())
    }

    /// A resumed run's curves start from the lines metrics.jsonl already holds.
    fn reload(&mut self, path: &Path) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for v in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
            let Some(step) = v["step"].as_u64() else { continue };
            if let (Some(loss), Some(lr)) = (v["loss"].as_f64(), v["lr"].as_f64()) {
                self.train.push((step, loss as f32));
                self.lr.push((step, lr));
            } else if let Some(val) = v["val_loss"].as_f64() {
                self.val.push((step, val as f32));
            }
        }
    }

    fn plot(&self) -> anyhow::Result<()> {
        if !self.root {
            return Ok(());
        }
        crate::plot::loss_curve(&self.png, &self.train, &self.val, &self.lr)
            .with_context(|| self.png.display().to_string())
    }
}

/// A progress bar on a terminal; hidden (plain line logs instead) elsewhere.
fn progress_bar(steps: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} eta {eta}").expect("valid template"),
    );
    bar
}

/// Mean loss over `batches` validation batches from the start of the validation data.
pub fn evaluate(gpu: &Gpu, gpt: &Gpt, val: &mut Loader, batches: usize) -> anyhow::Result<f32> {
    evaluate_rows(gpu, gpt, val, batches, &Dist::single())
}

/// `evaluate` over `dist`'s ranks: each takes its rows of the global validation batches,
/// and every rank gets the mean.
pub fn evaluate_rows(gpu: &Gpu, gpt: &Gpt, val: &mut Loader, batches: usize, dist: &Dist) -> anyhow::Result<f32> {
    val.pos = 0;
    let mut sum = 0.0;
    let n = batches.clamp(1, val.batches());
    let rows = gpt.b * gpt.t;
    let mine = dist.rank * rows..(dist.rank + 1) * rows;
    for _ in 0..n {
        let (x, y) = val.next_batch();
        gpt.upload_batch(gpu, 0, &x[mine.clone()], &y[mine.clone()]);
        let mut rec = Recorder::new(gpu);
        gpt.record_eval(&mut rec);
        rec.submit()?;
        sum += gpt.read_eval_loss(gpu)? as f64;
    }
    Ok(dist.mean(sum / n as f64) as f32)
}

/// Generates `n` tokens after `prompt` with temperature and top-k sampling, decoding one token
/// at a time with a KV cache, and returns their text. An empty prompt starts from the
/// end-of-text token (a newline for bytes). When the cache is full it starts again from the
/// last half of the text.
#[allow(clippy::too_many_arguments)]
pub fn sample(
    gpu: &Gpu,
    gpt: &Gpt,
    tok: &Tokenizer,
    prompt: &str,
    n: usize,
    temperature: f32,
    top_k: usize,
    seed: u64,
) -> anyhow::Result<String> {
    let v = gpt.config.vocab_size.min(tok.vocab_size);
    let mut rng = Rng::new(seed);
    let mut ctx: Vec<u32> = match (prompt.is_empty(), tok.kind) {
        (true, crate::data::tokenizer::Kind::Byte) => vec![b'\n' as u32],
        (true, _) => vec![tok.eot],
        (false, _) => tok.encode(prompt).map_err(anyhow::Error::msg)?,
    };
    if let Some(&bad) = ctx.iter().find(|&&i| i as usize >= gpt.config.vocab_size) {
        bail!("the prompt encodes to token {bad}, past the model's vocab_size {}", gpt.config.vocab_size);
    }
    let mut dec = gpt.decoder(gpu)?;
    let cap = dec.capacity();
    let mut logits = Vec::new();
    for &tok in &ctx[ctx.len().saturating_sub(cap)..] {
        logits = dec.next(gpu, tok)?;
    }
    let mut out = Vec::new();
    for _ in 0..n {
        // Only ids the tokenizer knows: the model's vocab may be padded past it.
        let next = pick(&logits[..v], temperature, top_k, &mut rng);
        ctx.push(next);
        out.push(next);
        if dec.pos < cap {
            logits = dec.next(gpu, next)?;
        } else {
            dec = gpt.decoder(gpu)?;
            for &tok in &ctx[ctx.len() - cap / 2..] {
                logits = dec.next(gpu, tok)?;
            }
        }
    }
    Ok(tok.decode(&out))
}

/// Samples from softmax(logits / temperature) over the top k; greedy when k is 1 or the
/// temperature 0.
pub fn pick(logits: &[f32], temperature: f32, top_k: usize, rng: &mut Rng) -> u32 {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if top_k == 1 || temperature <= 0.0 {
        return idx[0] as u32;
    }
    idx.truncate(top_k.max(1));
    let m = logits[idx[0]];
    let w: Vec<f64> = idx.iter().map(|&i| (((logits[i] - m) / temperature) as f64).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut r = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
    for (k, &wk) in w.iter().enumerate() {
        r -= wk;
        if r <= 0.0 {
            return idx[k] as u32;
        }
    }
    idx[idx.len() - 1] as u32
}
