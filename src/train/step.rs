//! One optimizer step, as `wgtrain train` runs it and `wgtrain bench train` times it.
//!
//! A step is one submit where its K micro-batches fit (`Gpt::micro_per_submit`); past that it
//! is split into submits of that many micro-batches, at most two of them in flight, so that
//! memory stays the same whatever K. Between those submits the step can be stopped (a signal):
//! its partial gradients are dropped and nothing is updated.

use crate::data::Loader;
use crate::dist::Dist;
use crate::gpu::{Gpu, Readback, Recorder, StepTimer};
use crate::model::Gpt;
use crate::optim::Optimizer;
use crate::parallel::Parallel;

/// What a step copies out for its log: the losses (B·T floats, summed over the step's
/// micro-batches) and, where the adapter has timestamps, the step's GPU time.
pub struct Probes {
    pub losses: Readback,
    pub timer: Option<StepTimer>,
    /// With pruning, the counts of pruned weights of the steps that pruned (a step that did
    /// not prune records nothing, and its submit maps nothing).
    pub pruned: Option<Readback>,
    /// With masked data: the targets the step being recorded counts, over all its
    /// micro-batches and ranks.
    pub counted: Option<u64>,
}

impl Probes {
    pub fn new(gpu: &Gpu, gpt: &Gpt) -> Self {
        let pruned = gpt.prune.as_ref().map(|p| {
            Readback::new(gpu, 4 * crate::kernels::prune::SEL_WORDS * p.slots() as u64, "pruned counts readback")
        });
        Self { losses: gpt.loss_readback(gpu), timer: StepTimer::new(gpu), pruned, counted: None }
    }

    /// `new` with no GPU timer (whose readback would add a wait to timed steps).
    pub fn without_timer(gpu: &Gpu, gpt: &Gpt) -> Self {
        Self { timer: None, ..Self::new(gpu, gpt) }
    }

    /// After the step's last submit.
    pub fn submitted_at(&mut self, index: wgpu::SubmissionIndex) {
        if let Some(t) = &mut self.timer {
            t.submitted_at(index.clone());
        }
        if let Some(p) = &mut self.pruned {
            p.submitted_at(Some(index.clone()));
        }
        self.losses.submitted_at(Some(index));
    }

    /// The model's pruning, when a step is due to prune: before the update, which zeroes
    /// what the new mask prunes.
    fn record_prune(&mut self, rec: &mut Recorder, gpt: &Gpt) {
        if let (Some(p), Some(counts)) = (&gpt.prune, &mut self.pruned) {
            p.record(rec, counts);
        }
    }

    fn start(&self, rec: &mut Recorder) {
        if let Some(t) = &self.timer {
            t.start(rec);
        }
    }
}

/// Runs one step: uploads each micro-batch (this rank's rows of each global batch) into the
/// model's slots, records forward and backward, the copy of the losses into `losses` and the
/// update, with the step's `probes`; returns the last submit. With several MPI ranks the last micro-batches' backward
/// and the gradient exchange go first, in submits of their own, and ZeRO-1 gathers the updated
/// parameters after. `stop` is asked between the submits of a split step; when it says yes,
/// the step ends there (None).
#[allow(clippy::too_many_arguments)]
pub fn run_step(
    gpu: &Gpu,
    gpt: &Gpt,
    opt: &mut Optimizer,
    mut par: Option<&mut Parallel>,
    dist: &Dist,
    loader: &mut Loader,
    (step, lr): (u64, f32),
    probes: &mut Probes,
    stop: &dyn Fn() -> bool,
) -> anyhow::Result<Option<wgpu::SubmissionIndex>> {
    let (k, per) = (gpt.accum(), gpt.micro_per_submit());
    probes.counted = loader.masked().then(|| loader.counted_ahead(k));
    if let Some(c) = probes.counted {
        gpt.set_counted(gpu, c, (k * gpt.b * gpt.t * dist.size) as u64);
    }
    let mut done = 0;
    let mut in_flight = None;
    while k - done > per {
        gpt.seed_dropout(gpu, [step, done as u64, dist.rank as u64]);
        upload(gpu, gpt, dist, loader, per);
        let mut rec = Recorder::new(gpu);
        if done == 0 {
            probes.start(&mut rec);
            gpt.record_zero(&mut rec);
        }
        (0..per).for_each(|slot| gpt.record_micro(&mut rec, slot));
        let index = rec.submit()?;
        if let Some(prev) = in_flight.replace(index) {
            gpu.wait_for(prev)?;
        }
        done += per;
        if stop() {
            return Ok(None);
        }
    }
    let last = k - done;
    gpt.seed_dropout(gpu, [step, done as u64, dist.rank as u64]);
    upload(gpu, gpt, dist, loader, last);
    if let Some(p) = par.as_deref_mut() {
        if done == 0 && probes.timer.is_some() {
            let mut rec = Recorder::new(gpu);
            probes.start(&mut rec);
            rec.submit()?;
        }
        // Submits of its own, before this step's last recorder exists.
        p.forward_backward(gpu, gpt, dist, last, done == 0)?;
        if p.zero {
            p.global_norm(gpu, opt, dist, lr)?;
        }
    }
    let mut rec = Recorder::new(gpu);
    if par.is_none() {
        if done == 0 {
            probes.start(&mut rec);
            gpt.record_zero(&mut rec);
        }
        (0..last).for_each(|slot| gpt.record_micro(&mut rec, slot));
    }
    gpt.record_losses(&mut rec, &mut probes.losses);
    probes.record_prune(&mut rec, gpt);
    match par.as_deref_mut() {
        Some(p) if p.zero => {
            opt.record_update(&mut rec, true);
            p.record_shard_params(&mut rec, gpt, dist);
        }
        _ => opt.record_step(gpu, &mut rec, lr, true),
    }
    if let Some(t) = &mut probes.timer {
        t.end(&mut rec);
    }
    let index = rec.submit()?;
    if let Some(p) = par.filter(|p| p.zero) {
        p.gather_params(gpu, gpt, dist, index.clone())?;
    }
    Ok(Some(index))
}

/// Uploads the next `micros` global batches' rows of this rank into slots 0..micros, in one
/// write.
fn upload(gpu: &Gpu, gpt: &Gpt, dist: &Dist, loader: &mut Loader, micros: usize) {
    let rows = gpt.b * gpt.t;
    let mine = dist.rank * rows..(dist.rank + 1) * rows;
    let mut words = Vec::with_capacity(2 * rows * micros);
    for _ in 0..micros {
        let (x, y) = loader.next_batch();
        words.extend_from_slice(&x[mine.clone()]);
        words.extend_from_slice(&y[mine.clone()]);
    }
    gpt.upload_slots(gpu, &words);
}
