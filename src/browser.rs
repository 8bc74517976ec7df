//! The page's training run: a model config (models/*.toml) trained on a text as byte tokens,
//! driven from an async loop, since in the browser a GPU result arrives only on the event loop.
//! One submit per step, as `wgtrain train` records it, and the same seeds, data order,
//! initialization, optimizer and schedule, so that the page's losses are the native run's.
//!
//! Layer: beside train, below the commands; uses gpu, data, model, optim and formats' files.
//! It is compiled natively too, where its awaits wait for the GPU (tests/browser.rs runs it).

use std::path::Path;

use crate::data::tokenizer::Tokenizer;
use crate::data::{byte_corpus, Loader};
use crate::gpu::{Gpu, GpuError, Readback, Recorder};
use crate::model::config::{Settings, TrainDefaults, DEFAULT_SEED};
use crate::model::{checkpoint, sample, Gpt, GptConfig, Precision};
use crate::optim::{OptimConfig, Optimizer, Schedule, ScheduleKind};

/// What a run starts from.
pub struct Spec<'a> {
    /// A models/*.toml: the model, and in its `[train]` table the run's settings.
    pub config: &'a str,
    /// Its name, for errors.
    pub config_name: &'a str,
    /// A saved model to continue from: its config.json and model.safetensors (the page's
    /// download); the settings stay `config`'s.
    pub resume: Option<(&'a str, &'a [u8])>,
    /// The text to train on, as bytes: the first 95% trains, the rest validates.
    pub corpus: &'a [u8],
    /// Steps, in place of the `[train]` table's.
    pub steps: Option<u64>,
}

/// One step's result.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepDone {
    pub step: u64,
    pub loss: f32,
    /// The global gradient norm before clipping.
    pub norm: f32,
    pub lr: f64,
    /// A non-finite loss or norm: the GPU did not update.
    pub skipped: bool,
}

/// A run in progress: the model, its optimizer and data, and the next step. Everything
/// `wgtrain train` takes from a flag is its default here (`OptimConfig::TRAIN`, a cosine
/// schedule to `Schedule::MIN_LR_FRAC`, `DEFAULT_SEED`, f32, one micro-batch per step).
pub struct Run {
    pub config: GptConfig,
    pub settings: Settings,
    gpt: Gpt,
    opt: Optimizer,
    loader: Loader,
    val: Option<Loader>,
    schedule: Schedule,
    losses: Readback,
    /// The next step to run.
    pub step: u64,
    /// Steps in a row the GPU skipped (a non-finite loss or gradient norm).
    skips: u64,
}

/// Skipped steps in a row that end a run (`wgtrain train`'s --max-skips default).
pub const MAX_SKIPS: u64 = 5;

/// The most bytes one `sample` writes.
pub const MAX_SAMPLE: usize = 100_000;

impl Run {
    /// Builds the model and its optimizer for `spec`, initialized as `wgtrain train` does (or
    /// with the saved weights), with the kernel variants `gpu`'s tuning table gives (the page
    /// turns tuning off: timing kernels needs waits the browser has not).
    pub fn new(gpu: &Gpu, spec: &Spec) -> Result<Self, String> {
        let name = spec.config_name;
        let table = TrainDefaults::parse(spec.config, name).map_err(|e| e.to_string())?;
        let flags = TrainDefaults { steps: spec.steps, ..Default::default() };
        let settings = Settings::resolve(&flags, &table);
        if settings.steps == 0 || settings.batch_size == 0 || settings.seq_len == 0 {
            return Err(format!("{name}: steps, batch_size and seq_len must be positive"));
        }
        let config = match spec.resume {
            Some((json, _)) => GptConfig::parse(json, true, "config.json"),
            None => GptConfig::parse(spec.config, false, name),
        }
        .map_err(|e| e.to_string())?;
        let (b, t) = (settings.batch_size, settings.seq_len);
        if t > config.n_positions {
            return Err(format!("{name}: seq_len {t} exceeds the model's n_positions {}", config.n_positions));
        }
        if config.vocab_size < 256 {
            return Err(format!("the model's vocab_size {} is below the 256 byte tokens", config.vocab_size));
        }
        let (train, val) = byte_corpus(spec.corpus);
        let loader = Loader::new(train, b, t, true, DEFAULT_SEED).map_err(|e| format!("the text: {e}"))?;
        let val = Loader::new(val, b, t, false, 0).ok().filter(|v| v.batches() > 0);
        let gpt = Gpt::training(gpu, config.clone(), (b, t, 1), Precision::F32, None).map_err(|e| e.to_string())?;
        match spec.resume {
            Some((_, weights)) => {
                let values = checkpoint::parse_hf(weights, Path::new("model.safetensors"), &config)
                    .map_err(|e| e.to_string())?;
                gpt.write_params(gpu, &values);
            }
            None => gpt.init(gpu, DEFAULT_SEED),
        }
        let opt = Optimizer::new(gpu, &gpt.arena, OptimConfig::TRAIN, None).map_err(|e| e.to_string())?;
        let schedule = Schedule {
            kind: ScheduleKind::Cosine,
            lr_max: settings.lr,
            warmup: settings.warmup,
            steps: settings.steps,
            min_lr_frac: Schedule::MIN_LR_FRAC,
        };
        let losses = gpt.loss_readback(gpu);
        Ok(Self { config, settings, gpt, opt, loader, val, schedule, losses, step: 0, skips: 0 })
    }

    /// True once every step ran.
    pub fn done(&self) -> bool {
        self.step >= self.settings.steps
    }

    /// The model's parameters.
    pub fn parameters(&self) -> u64 {
        self.gpt.arena.table.numel()
    }

    pub fn tokens_per_step(&self) -> u64 {
        (self.gpt.b * self.gpt.t) as u64
    }

    /// Runs the next step: its batch uploaded, forward, backward, the loss copy and the update
    /// in one submit; then awaits its loss and gradient norm. Past `MAX_SKIPS` skipped steps in
    /// a row, an error.
    pub async fn step(&mut self, gpu: &Gpu) -> Result<StepDone, String> {
        let done = self.run_step(gpu).await.map_err(|e| e.to_string())?;
        self.skips = if done.skipped { self.skips + 1 } else { 0 };
        if self.skips > MAX_SKIPS {
            return Err(format!(
                "{} steps in a row had a non-finite loss or gradient norm (up to step {}): stopping; lower the lr",
                self.skips, done.step
            ));
        }
        Ok(done)
    }

    async fn run_step(&mut self, gpu: &Gpu) -> Result<StepDone, GpuError> {
        let (step, lr) = (self.step, self.schedule.lr(self.step));
        let (x, y) = self.loader.next_batch();
        self.gpt.upload_slots(gpu, &[x, y].concat());
        let mut rec = Recorder::new(gpu);
        self.gpt.record_forward_backward(&mut rec);
        self.gpt.record_losses(&mut rec, &mut self.losses);
        self.opt.record_step(gpu, &mut rec, lr as f32, true);
        let index = rec.submit()?;
        self.losses.submitted_at(Some(index.clone()));
        self.opt.submitted_at(index);
        let summed: Vec<f32> = self.losses.take_async(gpu).await?.unwrap_or_default();
        let scalars = self.opt.step_scalars_async(gpu).await?;
        let loss = self.gpt.mean_loss(&summed);
        let norm = scalars.map_or(f32::NAN, |s| s.norm);
        let skipped = scalars.map_or(!norm.is_finite(), |s| s.skipped);
        if skipped {
            // The bias corrections counted the update the GPU skipped: take it back.
            self.opt.step = self.opt.step.saturating_sub(1);
        }
        self.step += 1;
        Ok(StepDone { step, loss, norm, lr, skipped })
    }

    /// The mean loss over the first `batches` validation batches (None: the text's last 5% is
    /// shorter than one batch).
    pub async fn val_loss(&mut self, gpu: &Gpu, batches: usize) -> Result<Option<f32>, GpuError> {
        let Some(val) = &mut self.val else { return Ok(None) };
        let rows = self.gpt.b * self.gpt.t;
        let (sum, counted) = self.gpt.eval_batches(gpu, val, batches, 0..rows).await?;
        Ok(Some((sum / counted.max(1) as f64) as f32))
    }

    /// `n` bytes of text after `prompt`, sampled at `temperature` from the top `top_k`.
    pub async fn sample(
        &self,
        gpu: &Gpu,
        prompt: &str,
        n: usize,
        (temperature, top_k, seed): (f32, usize, u64),
    ) -> anyhow::Result<String> {
        if !(1..=MAX_SAMPLE).contains(&n) {
            anyhow::bail!("the sample's length must be 1 to {MAX_SAMPLE} bytes, got {n}");
        }
        let tok = Tokenizer::byte();
        Ok(sample::sample_async(gpu, &self.gpt, &tok, prompt, n, (temperature, top_k, seed), None).await?.text)
    }

    /// model.safetensors and config.json of the weights now, as `wgtrain train` writes them.
    pub async fn save(&self, gpu: &Gpu) -> Result<(Vec<u8>, String), String> {
        let values = self.gpt.read_params_async(gpu).await.map_err(|e| e.to_string())?;
        checkpoint::hf_bytes(&self.config, &values).map_err(|e| e.to_string())
    }
}
