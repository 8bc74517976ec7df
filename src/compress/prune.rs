//! Gradual magnitude pruning during training (Zhu & Gupta 2017): at every --prune-every
//! steps from --prune-start to --prune-end, the linear weights of smallest magnitude are
//! masked until the sparsity reaches s_t = S·(1 − (1 − (t−N)/(M−N))³). The k-th smallest |w|
//! is found exactly on the GPU (kernels::prune); the mask lives in the arena, and the fused
//! optimizer update zeroes the pruned weights and their moments (shaders/optim.wgsl). This
//! module holds the schedule; the mask and its dispatches are the model's (`model::prune`).

use serde::{Deserialize, Serialize};

use crate::kernels::prune::SEL_WORDS;
pub use crate::model::prune::PruneScope;

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
