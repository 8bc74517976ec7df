//! Checkpoints: the run state beside the model and optimizer files, written atomically and
//! durably, kept newest first, and found again on --resume.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::setup::Session;
use super::TrainArgs;
use crate::data;
use crate::gpu::Gpu;
use crate::model::checkpoint;
use crate::optim::Optimizer;

/// What a checkpoint holds beside the model and optimizer files.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct RunState {
    pub format: String,
    /// The next step to run.
    pub step: u64,
    pub loader: data::LoaderState,
    pub args: TrainArgs,
    /// Early stopping: the best val loss so far and evaluations since it; set when it stopped.
    /// None until a validation loss exists (JSON has no infinity).
    #[serde(default)]
    pub best_val: Option<f32>,
    #[serde(default)]
    pub stale: u64,
    #[serde(default)]
    pub early_stopped: bool,
    /// Consecutive skipped steps (the numerical guard).
    #[serde(default)]
    pub skips: u64,
    /// MPI ranks of the run; --batch-size is per rank.
    #[serde(default = "one")]
    pub world: usize,
    /// The matmul variant of each product and shape class (crate::tune), pinned on --resume so
    /// that it continues bitwise. None in runs from before autotuning, which ran the baseline.
    #[serde(default)]
    pub tuning: Option<std::collections::BTreeMap<String, String>>,
    /// The loss scale and its clean steps after the checkpoint's last step (None: runs from
    /// before loss scaling, which ran at 1).
    #[serde(default)]
    pub loss_scale: Option<(f32, u32)>,
}

fn one() -> usize {
    1
}

/// Loop state a checkpoint carries besides the model, the optimizer and the data position.
#[derive(Clone, Copy)]
pub(super) struct Progress {
    pub best_val: f32,
    pub stale: u64,
    pub early_stopped: bool,
    pub skips: u64,
}

const RUN_FORMAT: &str = "wgtrain-run-1";

/// Whether `dir` has a run's metrics or checkpoints in it.
pub(super) fn holds_run(dir: &Path) -> bool {
    dir.join("metrics.jsonl").exists() || latest_checkpoint(dir).is_ok()
}

/// `dir` itself if it is a checkpoint, else its newest `ckpt-*`.
pub(super) fn latest_checkpoint(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.join("state.json").exists() {
        return Ok(dir.to_path_buf());
    }
    let all = checkpoints(dir).with_context(|| format!("--resume {}", dir.display()))?;
    all.last().map(|(_, p)| p.clone()).ok_or_else(|| {
        anyhow::anyhow!("--resume {}: no checkpoint (ckpt-*) in it; start without --resume", dir.display())
    })
}

/// The `ckpt-N` directories in `dir`, by step.
pub(super) fn checkpoints(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
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

/// Writes out/ckpt-NNNNNNNN (next step) atomically: into a temporary directory, then renamed.
/// Keeps the newest `keep`.
pub(super) fn save_checkpoint(s: &Session, next: u64, progress: Progress) -> anyhow::Result<PathBuf> {
    let dir = save_as(s, next, progress, &format!("ckpt-{next:08}"))?;
    let a = &s.a;
    if !s.dist.is_root() {
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
fn optimizer_bytes(s: &Session) -> anyhow::Result<Option<Vec<u8>>> {
    let dist = s.dist;
    if s.a.zero == 0 || dist.size == 1 {
        return Ok(None);
    }
    let parts = dist.gather_bytes(s.opt.to_bytes(s.gpu)?);
    Ok(if dist.is_root() { Some(Optimizer::merge(&parts, &s.gpt.arena.table)?) } else { None })
}

fn write_optimizer(gpu: &Gpu, opt: &Optimizer, gathered: Option<Vec<u8>>, path: &Path) -> anyhow::Result<()> {
    match gathered {
        Some(bytes) => Optimizer::write_bytes(path, &bytes)?,
        None => opt.save(gpu, path)?,
    }
    Ok(())
}

/// Writes a checkpoint into out/NAME atomically: a temporary directory, then a rename.
pub(super) fn save_as(s: &Session, next: u64, progress: Progress, name: &str) -> anyhow::Result<PathBuf> {
    let a = &s.a;
    let dir = a.out.join(name);
    // Collective: a ZeRO-1 optimizer's shards meet on rank 0, which alone writes.
    let opt_bytes = optimizer_bytes(s)?;
    if !s.dist.is_root() {
        return Ok(dir);
    }
    let tmp = a.out.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    if let Err(e) = write_files(s, opt_bytes, next, progress, &tmp) {
        // A full disk: free what the partial copy took; the previous checkpoint is untouched.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("writing checkpoint {}", dir.display())));
    }
    // Replace an older copy without a moment where none exists: move it aside first.
    let old = a.out.join(format!(".{name}.old"));
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(&dir, &old).with_context(|| dir.display().to_string())?;
    }
    std::fs::rename(&tmp, &dir).with_context(|| dir.display().to_string())?;
    let _ = std::fs::remove_dir_all(&old);
    // The renames are durable only once the directory holding them is synced.
    sync_dir(&a.out)?;
    Ok(dir)
}

/// The checkpoint's files in `tmp`, each synced, and `tmp` itself.
fn write_files(
    s: &Session,
    opt_bytes: Option<Vec<u8>>,
    next: u64,
    progress: Progress,
    tmp: &Path,
) -> anyhow::Result<()> {
    let (gpu, gpt, a) = (s.gpu, &s.gpt, &s.a);
    save_model(s, tmp)?;
    // The tokenizer sits beside the weights, as in an HF model directory.
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        let file = a.out.join(name);
        if file.is_file() {
            std::fs::copy(&file, tmp.join(name)).with_context(|| file.display().to_string())?;
        }
    }
    write_optimizer(gpu, &s.opt, opt_bytes, &tmp.join("optimizer.safetensors"))?;
    if let Some(p) = &gpt.prune {
        p.save(gpu, &tmp.join(super::setup::PRUNE_MASK))?;
    }
    let state = RunState {
        format: RUN_FORMAT.into(),
        step: next,
        loader: s.loader.state(),
        args: a.clone(),
        best_val: progress.best_val.is_finite().then_some(progress.best_val),
        stale: progress.stale,
        early_stopped: progress.early_stopped,
        skips: progress.skips,
        world: s.dist.size,
        tuning: Some(gpu.tuning.lock().unwrap().choices()),
        loss_scale: Some(s.opt.read_loss_scale(gpu)?),
    };
    let path = tmp.join("state.json");
    let mut f = std::fs::File::create(&path).with_context(|| path.display().to_string())?;
    f.write_all(serde_json::to_string(&state)?.as_bytes()).with_context(|| path.display().to_string())?;
    f.sync_all().with_context(|| path.display().to_string())?;
    sync_dir(tmp)
}

/// The trained weights into `dir`: an HF model (config.json, model.safetensors in
/// --save-dtype, with master.safetensors beside an f16 one), or a LoRA run's peft adapter
/// (adapter_model.safetensors, adapter_config.json naming --init as its base).
pub(super) fn save_model(s: &Session, dir: &Path) -> anyhow::Result<()> {
    let (gpu, gpt, a) = (s.gpu, &s.gpt, &s.a);
    let params = gpt.read_params(gpu)?;
    if let Some(lora) = &gpt.lora {
        let base = a.init.as_deref().unwrap_or(Path::new(""));
        crate::model::lora::save_peft(dir, &gpt.config, &lora.cfg, (&gpt.arena.table, &params), base)?;
        return Ok(());
    }
    checkpoint::save_hf_as(dir, &gpt.config, &params, a.save_dtype)?;
    if a.save_dtype != crate::kernels::Dtype::F32 {
        checkpoint::save_master(dir, &gpt.config, &params)?;
    }
    Ok(())
}

/// fsync of a directory, so that the renames in it survive a power loss.
pub(super) fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing directory {}", dir.display()))
}
