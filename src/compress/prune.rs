//! Gradual magnitude pruning during training (Zhu & Gupta 2017): at every --prune-every
//! steps from --prune-start to --prune-end, the linear weights of smallest magnitude are
//! masked until the sparsity reaches s_t = S·(1 − (1 − (t−N)/(M−N))³). The k-th smallest |w|
//! is found exactly on the GPU (kernels::prune); the mask lives in the arena, and the fused
//! optimizer update zeroes the pruned weights and their moments (shaders/optim.wgsl).

use std::cell::Cell;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::export::is_linear_weight;
use crate::gpu::{Category, Dispatch, Gpu, GpuBuffer, GpuError, Readback, Recorder};
use crate::kernels::prune::{self, Pass, SelectBuffers, BINS, SEL_WORDS};
use crate::kernels::View;
use crate::optim::ParamArena;

/// Where weights are ranked against each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PruneScope {
    /// All the linear weights together.
    #[default]
    Global,
    /// Each tensor on its own, at the same sparsity.
    Layer,
}

/// The pruning flags of `wgtrain train`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct PruneFlags {
    /// Gradual magnitude pruning of the linear weights to this sparsity (0 ≤ S < 1).
    #[arg(long)]
    pub prune_to: Option<f64>,
    /// First step of the schedule (default: 10% of --steps).
    #[arg(long)]
    pub prune_start: Option<u64>,
    /// Step at which the sparsity reaches --prune-to (default: 75% of --steps).
    #[arg(long)]
    pub prune_end: Option<u64>,
    /// Steps between pruning events (default: 1% of --steps, at least 1).
    #[arg(long)]
    pub prune_every: Option<u64>,
    /// Rank weights over all linear weights (global) or within each tensor (layer).
    #[arg(long, value_enum, default_value = "global")]
    #[serde(default)]
    pub prune_scope: PruneScope,
}

/// The cubic schedule: sparsity `to` from step `start` to `end`, a pruning event every
/// `every` steps (and at `end`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PruneSchedule {
    pub to: f64,
    pub start: u64,
    pub end: u64,
    pub every: u64,
}

impl PruneSchedule {
    /// The schedule the flags ask for in a run of `steps` steps (None without --prune-to).
    pub fn from_flags(f: &PruneFlags, steps: u64) -> Result<Option<Self>, String> {
        let Some(to) = f.prune_to else {
            if f.prune_start.is_some() || f.prune_end.is_some() || f.prune_every.is_some() {
                return Err("--prune-start, --prune-end and --prune-every need --prune-to".into());
            }
            return Ok(None);
        };
        if !(0.0..1.0).contains(&to) {
            return Err(format!("--prune-to {to}: give a sparsity from 0 up to (not including) 1, such as 0.5"));
        }
        let frac = |x: f64| (x * steps as f64).round() as u64;
        let start = f.prune_start.unwrap_or(frac(0.10));
        let end = f.prune_end.unwrap_or(frac(0.75));
        let every = f.prune_every.unwrap_or(frac(0.01)).max(1);
        if f.prune_every == Some(0) {
            return Err("--prune-every must be positive".into());
        }
        if start >= end || end > steps {
            return Err(format!(
                "--prune-start {start} and --prune-end {end}: the schedule needs start < end ≤ --steps {steps}"
            ));
        }
        Ok(Some(Self { to, start, end, every }))
    }

    /// s_t, the sparsity at step t.
    pub fn target(&self, t: u64) -> f64 {
        if t <= self.start {
            return 0.0;
        }
        if t >= self.end {
            return self.to;
        }
        let x = (t - self.start) as f64 / (self.end - self.start) as f64;
        self.to * (1.0 - (1.0 - x).powi(3))
    }

    /// Whether step t prunes: every `every` steps from `start`, and at `end`.
    pub fn due(&self, t: u64) -> bool {
        t > self.start && t <= self.end && ((t - self.start).is_multiple_of(self.every) || t == self.end)
    }
}

/// The fraction of `total` linear weights pruned, from a readback of the selection's slots.
pub fn sparsity(sel: &[u32], total: u64) -> f64 {
    let pruned: u64 = sel.chunks(SEL_WORDS as usize).map(|c| c[3] as u64).sum();
    pruned as f64 / total.max(1) as f64
}

/// The GPU side of pruning: the selection's buffers and its dispatches over the linear
/// weights, one slot per ranking group (one for global, one per tensor for layer).
pub struct Pruner {
    /// (first arena element, elements) of each linear weight, with its slot.
    tensors: Vec<(u64, u64, u32)>,
    /// Linear weights per slot.
    slot_numel: Vec<u64>,
    hist: GpuBuffer,
    sel: GpuBuffer,
    mask: GpuBuffer,
    ops: Vec<Dispatch>,
    /// Set by `arm` for the next step to record.
    armed: Cell<bool>,
}

impl Pruner {
    /// Gives `arena` a mask that keeps everything (before the optimizer is built: it binds
    /// the mask) and prepares the dispatches.
    pub fn new(gpu: &Gpu, arena: &mut ParamArena, scope: PruneScope) -> Result<Self, GpuError> {
        let words = arena.table.len.div_ceil(32);
        let mask = gpu.pool.storage_from(&gpu.queue, Category::Parameters, &vec![u32::MAX; words as usize])?;
        arena.mask = Some(mask.clone());
        let linear = arena.table.tensors.iter().filter(|t| is_linear_weight(&t.name));
        let tensors: Vec<(u64, u64, u32)> = linear
            .enumerate()
            .map(|(i, t)| (t.offset, t.numel(), if scope == PruneScope::Layer { i as u32 } else { 0 }))
            .collect();
        let slots = tensors.iter().map(|t| t.2 as usize + 1).max().unwrap_or(1);
        let mut slot_numel = vec![0; slots];
        tensors.iter().for_each(|t| slot_numel[t.2 as usize] += t.1);
        let hist = gpu.pool.storage(Category::Scratch, 4 * BINS)?;
        let sel = gpu.pool.storage(Category::Scratch, 4 * SEL_WORDS * slots as u64)?;
        let mut rec = Recorder::new(gpu);
        rec.clear(&hist, 0, hist.size());
        rec.submit()?;
        let mut p = Self { tensors, slot_numel, hist, sel, mask, ops: Vec::new(), armed: Cell::new(false) };
        p.ops = p.build(gpu, &arena.params)?;
        Ok(p)
    }

    /// Each slot in turn: its tensors' high halves, the bin, their low halves, the threshold,
    /// the mask. A slot's selection leaves the histogram zero for the next.
    fn build(&self, gpu: &Gpu, params: &wgpu::Buffer) -> Result<Vec<Dispatch>, GpuError> {
        let b = SelectBuffers { mask: &self.mask, hist: &self.hist, sel: &self.sel };
        let mut ops = Vec::new();
        for slot in 0..self.slot_numel.len() as u32 {
            let mine: Vec<_> = self.tensors.iter().filter(|t| t.2 == slot).collect();
            let pass = |pass| -> Result<Vec<Dispatch>, GpuError> {
                let each = |&&(off, len, _): &&(u64, u64, u32)| {
                    prune::tensor_pass(gpu, pass, b, View::at(params, off), len, off / 32, slot)
                };
                mine.iter().map(each).collect()
            };
            ops.extend(pass(Pass::HistHigh)?);
            ops.push(prune::select(gpu, true, b, slot)?);
            ops.extend(pass(Pass::HistLow)?);
            ops.push(prune::select(gpu, false, b, slot)?);
            ops.extend(pass(Pass::Apply)?);
        }
        Ok(ops)
    }

    /// Slots of the selection (a readback of that many × SEL_WORDS u32 gets the counts).
    pub fn slots(&self) -> usize {
        self.slot_numel.len()
    }

    /// GPU memory of the mask and the selection.
    pub fn bytes(&self) -> u64 {
        self.mask.size() + self.hist.size() + self.sel.size()
    }

    /// Linear weights in all.
    pub fn total(&self) -> u64 {
        self.slot_numel.iter().sum()
    }

    /// Makes the next recorded step prune to `sparsity`: at least that fraction of each
    /// slot's weights, the smallest in magnitude.
    pub fn arm(&self, gpu: &Gpu, sparsity: f64) {
        let sel: Vec<u32> = self
            .slot_numel
            .iter()
            .flat_map(|&n| [((sparsity * n as f64).floor() as u64).min(n) as u32, 0, 0, 0])
            .collect();
        gpu.write(&self.sel, 0, &sel);
        self.armed.set(true);
    }

    /// Records the selection and the new mask, if armed, and the copy of each slot's count
    /// of pruned weights into `counts`; the step's update then zeroes what the mask prunes.
    /// True when it recorded.
    pub fn record(&self, rec: &mut Recorder, counts: &mut Readback) -> bool {
        if !self.armed.replace(false) {
            return false;
        }
        rec.run(&self.ops);
        counts.record(rec, &self.sel, 0);
        true
    }

    /// The mask's words, for a checkpoint.
    pub fn read_mask(&self, gpu: &Gpu) -> Result<Vec<u32>, GpuError> {
        gpu.read(&self.mask, 0, (self.mask.size() / 4) as usize)
    }

    /// Writes the mask into `path` (little-endian u32, a bit per arena element).
    pub fn save(&self, gpu: &Gpu, path: &Path) -> anyhow::Result<()> {
        let words = self.read_mask(gpu)?;
        std::fs::write(path, bytemuck::cast_slice::<u32, u8>(&words))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Loads a mask `save` wrote, and returns its sparsity of the linear weights.
    pub fn load(&self, gpu: &Gpu, path: &Path) -> anyhow::Result<f64> {
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}; a pruning run's checkpoint holds its mask there", path.display()))?;
        if bytes.len() as u64 != self.mask.size() {
            anyhow::bail!(
                "{}: {} bytes, where this model's mask has {}; the checkpoint is of another model",
                path.display(),
                bytes.len(),
                self.mask.size()
            );
        }
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
        gpu.write(&self.mask, 0, &words);
        Ok(self.mask_sparsity(&words))
    }

    /// The fraction of linear weights whose bit in `words` is clear.
    pub fn mask_sparsity(&self, words: &[u32]) -> f64 {
        let mut pruned = 0u64;
        for &(off, len, _) in &self.tensors {
            pruned += (off..off + len).filter(|&e| words[(e / 32) as usize] >> (e % 32) & 1 == 0).count() as u64;
        }
        pruned as f64 / self.total().max(1) as f64
    }
}
