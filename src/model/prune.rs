//! The model's pruning mask (gradual magnitude pruning, `compress::prune` schedules it): one bit
//! per arena element, bound by the fused optimizer update, which zeroes the pruned weights and
//! their moments; the k-th smallest |w| of the linear weights is found exactly on the GPU
//! (kernels::prune).

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
