//! One optimizer step, as `wgtrain train` runs it and `wgtrain bench train` times it.

use crate::data::Loader;
use crate::dist::Dist;
use crate::gpu::{Gpu, Readback, Recorder};
use crate::model::Gpt;
use crate::optim::Optimizer;
use crate::parallel::Parallel;

/// Uploads the step's micro-batches (this rank's rows of each global batch), then records
/// forward, backward, the copy of the losses into `losses` and the update into one submit, and
/// returns that submit. With several MPI ranks the backward and the gradient exchange go first,
/// in submits of their own, and ZeRO-1 gathers the updated parameters after.
#[allow(clippy::too_many_arguments)]
pub fn run_step(
    gpu: &Gpu,
    gpt: &Gpt,
    opt: &mut Optimizer,
    mut par: Option<&mut Parallel>,
    dist: &Dist,
    loader: &mut Loader,
    lr: f32,
    losses: &mut Readback,
) -> anyhow::Result<wgpu::SubmissionIndex> {
    let rows = gpt.b * gpt.t;
    for k in 0..gpt.accum() {
        let (x, y) = loader.next_batch();
        let mine = dist.rank * rows..(dist.rank + 1) * rows;
        gpt.upload_batch(gpu, k, &x[mine.clone()], &y[mine]);
    }
    if let Some(p) = par.as_deref_mut() {
        // Submits of its own, before this step's last recorder exists.
        p.forward_backward(gpu, gpt, dist)?;
        if p.zero {
            p.global_norm(gpu, opt, dist, lr)?;
        }
    }
    let mut rec = Recorder::new(gpu);
    if par.is_none() {
        gpt.record_forward_backward(&mut rec);
    }
    gpt.record_losses(&mut rec, losses);
    match par.as_deref_mut() {
        Some(p) if p.zero => {
            opt.record_update(&mut rec, true);
            p.record_shard_params(&mut rec, gpt, dist);
        }
        _ => opt.record_step(gpu, &mut rec, lr, true),
    }
    let index = rec.submit()?;
    if let Some(p) = par.filter(|p| p.zero) {
        p.gather_params(gpu, gpt, dist, index.clone())?;
    }
    Ok(index)
}
