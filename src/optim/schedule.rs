//! Learning-rate schedules. The lr of a step goes to the shaders in a uniform, so a schedule
//! never recompiles anything.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Constant,
    /// Linear warmup, then cosine decay to lr_min.
    Cosine,
    /// Linear warmup, then linear decay to lr_min.
    Linear,
}

/// lr(s) for steps s = 0, 1, …, steps − 1. With lr_min = lr_max · min_lr_frac:
/// - s < warmup: lr_max · (s + 1) / warmup
/// - cosine: lr_min + ½(1 + cos(π·p))(lr_max − lr_min), p = (s − warmup) / (steps − warmup)
/// - linear: lr_min + (1 − p)(lr_max − lr_min)
/// - constant: lr_max (after the warmup, if any)
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub lr_max: f64,
    pub warmup: u64,
    pub steps: u64,
    pub min_lr_frac: f64,
}

impl Schedule {
    /// `wgtrain train`'s --min-lr-frac: the decay ends at a tenth of the peak.
    pub const MIN_LR_FRAC: f64 = 0.1;

    pub fn constant(lr: f64) -> Self {
        Self { kind: ScheduleKind::Constant, lr_max: lr, warmup: 0, steps: 1, min_lr_frac: 0.0 }
    }

    pub fn lr(&self, s: u64) -> f64 {
        if s < self.warmup {
            return self.lr_max * (s + 1) as f64 / self.warmup as f64;
        }
        let lr_min = self.lr_max * self.min_lr_frac;
        let span = self.steps.saturating_sub(self.warmup).max(1);
        let p = ((s - self.warmup) as f64 / span as f64).min(1.0);
        match self.kind {
            ScheduleKind::Constant => self.lr_max,
            ScheduleKind::Cosine => lr_min + 0.5 * (1.0 + (std::f64::consts::PI * p).cos()) * (self.lr_max - lr_min),
            ScheduleKind::Linear => lr_min + (1.0 - p) * (self.lr_max - lr_min),
        }
    }
}
