//! Evaluation: the validation loss, for the loop and for `wgtrain eval` (sampling is
//! `model::sample`'s).

use crate::data::Loader;
use crate::dist::Dist;
use crate::gpu::Gpu;
use crate::model::Gpt;

/// Mean loss over `batches` validation batches from the start of the validation data.
pub fn evaluate(gpu: &Gpu, gpt: &Gpt, val: &mut Loader, batches: usize) -> anyhow::Result<f32> {
    evaluate_rows(gpu, gpt, val, batches, &Dist::single())
}

/// `evaluate` over `dist`'s ranks: each takes its rows of the global validation batches,
/// and every rank gets the mean.
pub fn evaluate_rows(gpu: &Gpu, gpt: &Gpt, val: &mut Loader, batches: usize, dist: &Dist) -> anyhow::Result<f32> {
    let rows = gpt.b * gpt.t;
    let mine = dist.rank * rows..(dist.rank + 1) * rows;
    let (sum, counted) = pollster::block_on(gpt.eval_batches(gpu, val, batches, mine))?;
    // Every rank's sum over the same count: their mean times the ranks is the global sum.
    Ok((dist.mean(sum) * dist.size as f64 / counted.max(1) as f64) as f32)
}
