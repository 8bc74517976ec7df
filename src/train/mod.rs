//! The training loop: batches in, one submit per optimizer step, metrics and checkpoints out.
//!
//! Layer: the top of the library; it may use every module below it (model, compress, optim,
//! data, parallel, dist, plot, …). Only the commands (main.rs) and the benches sit above.
//!
//! `run` reads as the phases of a run, each in its own file:
//! - setup (setup.rs): data, model, optimizer, --out, from flags or a checkpoint;
//! - step (step.rs): the micro-batches, the gradient exchange with several ranks, the update;
//! - evaluate (eval.rs): the validation loss, the best checkpoint, early stopping;
//! - checkpoint (state.rs): every --save-every steps and on a signal, atomic and durable;
//! - finish (finish.rs): the final checkpoint, the model in --out, the report and a sample.
//!
//! The log (log.rs) and signals (signals.rs) run beside them.

mod args;
pub mod defaults;
mod eval;
mod finish;
mod init;
mod log;
mod model_load;
mod replicas;
mod setup;
pub mod signals;
mod state;
mod step;
pub mod task;
mod tune_run;

pub use crate::model::sample::{argmax, pick, printable, sample, sample_until, Sampled};
pub use args::{KdFlags, LoraFlags, TrainArgs};
pub use defaults::{default_config, model_file, DEFAULT_CONFIG};
pub use eval::{evaluate, evaluate_rows};
pub use step::{run_step, Probes};
pub use tune_run::tune_model;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};

use crate::dist::Dist;
use crate::gpu::Gpu;
use log::Log;
use setup::Session;
use signals::Stop;
use state::{Progress, RunState};

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
    let ckpt = state::latest_checkpoint(dir)?;
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

/// How the loop ended.
enum End {
    /// Every step ran, or early stopping ended the run after `last` steps.
    Done { last: u64, early: bool },
    /// A signal: exit with this code (the checkpoint, if any, is written).
    Signal(i32),
}

fn run(gpu: &Gpu, a: &TrainArgs, resume: Option<(PathBuf, RunState)>, dist: &Dist) -> anyhow::Result<Option<i32>> {
    let stop = Stop::install()?;
    let started = Instant::now();
    let result = phases(gpu, a, resume, dist, stop, started);
    stop.idle();
    result
}

fn phases(
    gpu: &Gpu,
    a: &TrainArgs,
    resume: Option<(PathBuf, RunState)>,
    dist: &Dist,
    stop: &Stop,
    started: Instant,
) -> anyhow::Result<Option<i32>> {
    let mut s = Session::new(gpu, a, resume.as_ref(), dist)?;
    let metrics = setup::open_out(&s, resume.as_ref().map(|r| &r.1))?;
    let mut log = Log::new(&s, metrics);
    if resume.is_some() {
        log.reload(&s.a.out.join("metrics.jsonl"));
    }
    s.announce();
    log.setup_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    log.last_done = Instant::now();
    stop.training();
    let end = match train_loop(&mut s, &mut log, stop) {
        Ok(end) => end,
        Err(e) => return Err(failed(&mut s, &mut log, e)),
    };
    match end {
        End::Signal(code) => Ok(Some(code)),
        End::Done { last, early } => match finish::finish(&mut s, &mut log, last, early, started) {
            Ok(()) => Ok(None),
            Err(e) => Err(failed(&mut s, &mut log, e)),
        },
    }
}

/// The steps, with evaluation, checkpoints and signals between them.
fn train_loop(s: &mut Session, log: &mut Log, stop: &Stop) -> anyhow::Result<End> {
    let steps = s.a.steps;
    for step in s.first..steps {
        if !s.step(step, log, stop)? {
            return Ok(End::Signal(stopped_in_step(s, log, stop, step)?));
        }
        // A signal on the last step just lets the run finish normally.
        let signal = stop.agreed(s.dist).filter(|_| step + 1 < steps);
        let periodic = s.a.save_every > 0 && (step + 1) % s.a.save_every == 0 && step + 1 < steps;
        let evaluating = s.evaluate_due(step);
        // Every checkpoint (best, periodic, on a signal, final) is of replicas that agree.
        if s.replicas_due(step, evaluating || periodic || signal.is_some() || step + 1 == steps) {
            s.check_replicas(step, log)?;
        }
        let early = evaluating && s.evaluate(step, log)?;
        if !early && (signal.is_some() || periodic) {
            let dir = s.checkpoint(step + 1, false, log)?;
            if let Some(code) = signal {
                log.bar.finish_and_clear();
                log.plot()?;
                log.say(format!("stopped by a signal after step {step}; checkpoint {}", dir.display()));
                return Ok(End::Signal(code));
            }
        }
        if early {
            return Ok(End::Done { last: step + 1, early: true });
        }
    }
    Ok(End::Done { last: steps, early: false })
}

/// A signal stopped a step split into several submits: its partial gradients are dropped and
/// the last checkpoint stays the newest. Logs the step before it.
fn stopped_in_step(s: &mut Session, log: &mut Log, stop: &Stop, step: u64) -> anyhow::Result<i32> {
    log.flush(s.gpu, &mut s.opt)?;
    log.bar.finish_and_clear();
    log.plot()?;
    let last = state::latest_checkpoint(&s.a.out).map_or("none yet".to_string(), |p| p.display().to_string());
    log.say(format!(
        "stopped by a signal inside step {step}: its partial accumulation is dropped; the last checkpoint is {last}"
    ));
    Ok(stop.agreed(s.dist).unwrap_or(130))
}

/// Keeps what is safe to keep after an error: the metrics written so far and the curves. A
/// checkpoint of a failed step could be inconsistent, so the last good one stays the newest.
fn failed(s: &mut Session, log: &mut Log, e: anyhow::Error) -> anyhow::Error {
    log.bar.finish_and_clear();
    // With several ranks, no collective (the others may not have failed), so no averaged
    // loss to log.
    if s.dist.size == 1 {
        let _ = log.flush(s.gpu, &mut s.opt);
    }
    let _ = log.plot();
    let last = state::latest_checkpoint(&s.a.out).map_or("none yet".to_string(), |p| p.display().to_string());
    anyhow::anyhow!("{e:#}; training stopped: metrics.jsonl is up to date and the last checkpoint is {last}")
}

impl Session<'_> {
    /// The step phase: submits the step, then logs the previous one while it runs. False
    /// when a signal stopped it between submits.
    fn step(&mut self, step: u64, log: &mut Log, stop: &Stop) -> anyhow::Result<bool> {
        let (gpu, dist) = (self.gpu, self.dist);
        let lr = self.schedule.lr(step);
        if let (Some(sched), Some(p)) = (&self.prune, &self.gpt.prune) {
            if sched.due(step) {
                p.arm(gpu, sched.target(step));
            }
        }
        let comm_before = dist.comm_time();
        let agreed = || stop.agreed(dist).is_some();
        let (gpt, loader) = (&self.gpt, &mut self.loader);
        let Some(index) = run_step(
            gpu,
            gpt,
            &mut self.opt,
            self.par.as_mut(),
            dist,
            loader,
            (step, lr as f32),
            &mut log.probes,
            &agreed,
        )?
        else {
            return Ok(false);
        };
        // While this step runs, log the previous one.
        log.flush(gpu, &mut self.opt)?;
        log.probes.submitted_at(index.clone());
        self.opt.submitted_at(index);
        if let Some(p) = &self.par {
            log.comm = Some(((dist.comm_time() - comm_before).as_secs_f64() * 1e3, p.wait.as_secs_f64() * 1e3));
        }
        if log.skips > self.a.max_skips {
            log.bar.finish_and_clear();
            bail!(
                "{} steps in a row had a non-finite loss or gradient norm (up to step {}); stopping with the \
                 last checkpoint left as it was: lower --lr or set --grad-clip",
                log.skips,
                step.saturating_sub(1)
            );
        }
        log.pending = Some((step, lr, log.probes.counted));
        Ok(true)
    }

    fn evaluate_due(&self, step: u64) -> bool {
        self.val.is_some()
            && (self.a.eval_every > 0 && (step + 1).is_multiple_of(self.a.eval_every) || step + 1 == self.a.steps)
    }

    /// The evaluate phase: the validation loss, the best checkpoint when it improved, and
    /// whether early stopping ends the run here.
    fn evaluate(&mut self, step: u64, log: &mut Log) -> anyhow::Result<bool> {
        let (gpu, dist) = (self.gpu, self.dist);
        log.flush(gpu, &mut self.opt)?;
        let vl = self.val.as_mut().expect("evaluate_due");
        // The ranks' mean, and rank 0's copy of it for the decisions below (best checkpoint,
        // early stop), which every rank must take alike.
        let val = dist.from_root(evaluate_rows(gpu, &self.gpt, vl, self.a.val_batches, dist)? as f64) as f32;
        log.val_line(step, val)?;
        if val < self.progress.best_val - self.a.min_delta {
            self.progress.best_val = val;
            self.progress.stale = 0;
            self.checkpoint(step + 1, true, log)?;
        } else {
            self.progress.stale += 1;
        }
        let a = &self.a;
        let early = a.patience > 0 && self.progress.stale >= a.patience && step + 1 < a.steps;
        if early {
            let (stale, delta) = (self.progress.stale, a.min_delta);
            log.say(format!("early stop at step {step}: {stale} evaluations without a val-loss gain of {delta}"));
        }
        Ok(early)
    }

    /// The checkpoint phase: out/ckpt-NNNNNNNN for step `next` (or out/best), after logging
    /// the step in flight.
    fn checkpoint(&mut self, next: u64, best: bool, log: &mut Log) -> anyhow::Result<PathBuf> {
        log.flush(self.gpu, &mut self.opt)?;
        let progress = Progress { skips: log.skips, ..self.progress };
        if best {
            state::save_as(self, next, progress, "best")
        } else {
            state::save_checkpoint(self, next, progress)
        }
    }
}
