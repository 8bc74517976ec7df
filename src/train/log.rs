//! The run's log: metrics.jsonl (one line per step and per evaluation), the progress bar or
//! plain lines, and loss.png.
//!
//! A step's line has `ms`, the wall time from the previous step's results to this one's (the
//! GPU's pace once the queue is full; the first step's excludes setup), `setup_ms` on the
//! run's first step (loading, pipelines, tuning), and `gpu_ms` where the adapter has
//! timestamps: the GPU's time from the step's first command to its last.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use super::Probes;
use crate::dist::Dist;
use crate::gpu::Gpu;
use crate::optim::Optimizer;

/// metrics.jsonl, loss.png, the progress bar, and the step whose results are in flight.
pub(super) struct Log<'d> {
    /// Rank 0's metrics.jsonl; a sink on the other ranks.
    pub metrics: Box<dyn Write>,
    pub train: Vec<(u64, f32)>,
    pub val: Vec<(u64, f32)>,
    pub lr: Vec<(u64, f64)>,
    pub png: PathBuf,
    /// loss.png's title: the --out folder and the parameter count.
    pub title: String,
    /// The step's losses and GPU time, read after the next step is submitted.
    pub probes: Probes,
    /// Micro-batches per step: the losses read back are sums over them.
    pub accum: usize,
    /// Milliseconds from the start of the run to its first step (loading, building the
    /// pipelines, tuning), logged with step `first` and not counted in its `ms`.
    pub setup_ms: Option<f64>,
    /// (step, lr, counted targets of masked data) of the step whose losses and grad norm are
    /// in flight.
    pub pending: Option<(u64, f64, Option<u64>)>,
    /// When the last logged step's results came back: a step's time runs from there to its
    /// own results, the GPU's pace once the queue is full.
    pub last_done: Instant,
    /// Tokens per optimizer step.
    pub tokens: u64,
    pub bar: indicatif::ProgressBar,
    pub last_loss: f32,
    /// Consecutive steps whose update the GPU skipped (non-finite gradients).
    pub skips: u64,
    /// Rank 0 prints and draws; every rank computes.
    pub root: bool,
    /// The ranks, to average the loss over.
    pub dist: &'d Dist,
    /// Milliseconds of MPI work in the pending step, and of it the training thread waited.
    pub comm: Option<(f64, f64)>,
    /// With pruning: the fraction of linear weights pruned, as the last pruning step left it.
    pub sparsity: Option<f64>,
    /// Linear weights the sparsity counts over.
    prune_total: Option<u64>,
    /// The losses read back hold ce and kd after the objective.
    distilled: bool,
}

impl<'d> Log<'d> {
    /// The log of session `s`, writing into `metrics`.
    pub fn new(s: &super::setup::Session<'d>, metrics: Box<dyn Write>) -> Self {
        let root = s.dist.is_root();
        let log = Log {
            metrics,
            train: Vec::new(),
            val: Vec::new(),
            lr: Vec::new(),
            png: s.a.out.join("loss.png"),
            title: format!(
                "{}: {} parameters",
                s.a.out.file_name().map_or("run".into(), |n| n.to_string_lossy()),
                crate::plot::human(s.gpt.arena.table.numel() as f64)
            ),
            probes: Probes::new(s.gpu, &s.gpt),
            accum: s.gpt.accum(),
            setup_ms: None,
            pending: None,
            last_done: Instant::now(),
            tokens: s.tokens_per_step(),
            bar: if root { progress_bar(s.a.steps) } else { indicatif::ProgressBar::hidden() },
            last_loss: f32::NAN,
            skips: s.progress.skips,
            root,
            dist: s.dist,
            comm: None,
            sparsity: s.gpt.prune.as_ref().map(|_| s.sparsity),
            prune_total: s.gpt.prune.as_ref().map(|p| p.total()),
            distilled: s.gpt.distill.is_some(),
        };
        log.bar.set_position(s.first);
        log
    }

    /// Prints a line above the progress bar (rank 0 only).
    pub fn say(&self, line: String) {
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
    pub fn flush(&mut self, gpu: &Gpu, opt: &mut Optimizer) -> anyhow::Result<()> {
        let Some((step, lr, counted)) = self.pending.take() else {
            return Ok(());
        };
        let all: Vec<f32> = self.probes.losses.take(gpu)?.unwrap_or_default();
        // The objective's per-position sums, then with distillation those of ce and kd.
        let rows = all.len() / if self.distilled { 3 } else { 1 };
        // Masked data: the mean over the step's counted targets (the ranks' means average).
        let per = counted.map_or((rows * self.accum) as f64, |c| c as f64 / self.dist.size as f64).max(1.0);
        let mean = |xs: &[f32]| xs.iter().map(|&x| x as f64).sum::<f64>() / per;
        let mut loss = mean(&all[..rows]) as f32;
        let parts = self.distilled.then(|| (mean(&all[rows..2 * rows]), mean(&all[2 * rows..])));
        let gpu_ms = match &mut self.probes.timer {
            Some(t) => t.take_ms(gpu)?,
            None => None,
        };
        if self.dist.size > 1 {
            // Equal batches on every rank: the global mean is the mean of the ranks' means.
            loss = self.dist.mean(loss as f64) as f32;
        }
        let parts =
            parts.map(|(ce, kd)| if self.dist.size > 1 { (self.dist.mean(ce), self.dist.mean(kd)) } else { (ce, kd) });
        let sc = opt.step_scalars(gpu)?;
        let norm = sc.map_or(f32::NAN, |s| s.norm);
        // The GPU skipped this update (a non-finite norm: a non-finite loss makes the gradients
        // non-finite too); the bias corrections of the steps recorded since count it, so take
        // it back for the next ones. Under dynamic loss scaling an overflow halves the scale
        // and is expected: it counts toward --max-skips only once the scale has come down to 1.
        let skipped = sc.map_or(!norm.is_finite(), |s| s.skipped);
        let scale = sc.map_or(1.0, |s| s.loss_scale);
        if skipped {
            let expected = opt.loss_scale == crate::optim::LossScale::Dynamic && scale >= 1.0;
            if !expected {
                self.skips += 1;
            }
            opt.step = opt.step.saturating_sub(1);
        } else {
            self.skips = 0;
        }
        let ms = self.last_done.elapsed().as_secs_f64() * 1e3;
        self.last_done = Instant::now();
        let tps = self.tokens as f64 / (ms / 1e3);
        let mut line = serde_json::json!({ "step": step, "loss": loss, "lr": lr, "grad_norm": norm, "ms": ms, "tokens_per_s": tps });
        if let Some(g) = gpu_ms {
            line["gpu_ms"] = g.into();
        }
        if let Some(s) = self.setup_ms.take() {
            line["setup_ms"] = s.into();
        }
        if skipped {
            line["skipped"] = true.into();
        }
        if opt.loss_scale != crate::optim::LossScale::Fixed(1.0) {
            line["loss_scale"] = scale.into();
        }
        if let Some((ce, kd)) = parts {
            line["ce"] = ce.into();
            line["kd"] = kd.into();
        }
        if let Some(sp) = self.take_sparsity(gpu)? {
            line["sparsity"] = sp.into();
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
            self.bar.println(format!(
                "step {step}: loss {loss} grad_norm {norm}: not finite, update skipped (loss scale now {scale})"
            ));
        }
        if self.bar.is_hidden() && self.root {
            println!("step {step}: loss {loss:.4} lr {lr:.3e} grad_norm {norm:.3} {ms:.0} ms {tps:.0} tokens/s");
        }
        Ok(())
    }

    /// The sparsity after the logged step: the counts it read back if it pruned.
    fn take_sparsity(&mut self, gpu: &Gpu) -> anyhow::Result<Option<f64>> {
        if let (Some(counts), Some(total)) = (&mut self.probes.pruned, self.prune_total) {
            if let Some(c) = counts.take::<u32>(gpu)? {
                self.sparsity = Some(crate::compress::prune::sparsity(&c, total));
            }
        }
        Ok(self.sparsity)
    }

    /// Records a validation loss and redraws the curves.
    pub fn val_line(&mut self, step: u64, val: f32) -> anyhow::Result<()> {
        writeln!(self.metrics, "{}", serde_json::json!({ "step": step, "val_loss": val }))?;
        self.metrics.flush()?;
        self.val.push((step, val));
        self.plot()?;
        self.last_done = Instant::now();
        self.say(format!("step {step}: val loss {val:.4}"));
        Ok(())
    }

    /// A resumed run's curves start from the lines metrics.jsonl already holds.
    pub fn reload(&mut self, path: &Path) {
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

    pub fn plot(&self) -> anyhow::Result<()> {
        if !self.root {
            return Ok(());
        }
        let curves = crate::plot::Curves {
            title: &self.title,
            train: &self.train,
            val: &self.val,
            lr: &self.lr,
            tokens_per_step: self.tokens,
        };
        crate::plot::loss_curve(&self.png, &curves)
            .map_err(anyhow::Error::msg)
            .with_context(|| self.png.display().to_string())
    }
}

/// A progress bar on a terminal; hidden (plain line logs instead) elsewhere.
pub(super) fn progress_bar(steps: u64) -> indicatif::ProgressBar {
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
