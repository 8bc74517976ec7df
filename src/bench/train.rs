//! `wgtrain bench train`: warm training steps on synthetic tokens through the step function
//! training uses, with tokens/s, achieved TFLOP/s, MFU against the adapter's FP32 peak, and
//! each kernel's share of the step where the adapter has timestamps.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::data::Loader;
use crate::dist::Dist;
use crate::gpu::Category;
use crate::gpu::Gpu;
use crate::model::{Gpt, GptConfig, Precision};
use crate::optim::{LossScale, OptimConfig, Optimizer};
use crate::reference::Rng;
use crate::train::{run_step, Probes};

/// What `bench train --json` prints.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainBench {
    pub tokens_per_s: f64,
    pub ms_per_step: f64,
    /// Useful work: (6·N + 12·L·T·C) FLOPs per token, N the parameters less the position
    /// embedding (as nanoGPT and PaLM count).
    pub tflops: f64,
    /// tflops over the adapter's peak in this precision (FP32, or dense f16 with f32
    /// accumulate); None when the peak is unknown.
    pub mfu: Option<f64>,
    /// f32 or f16.
    pub precision: String,
    /// Most GPU memory the run's buffers held at once.
    pub peak_bytes: u64,
    /// Activations and their gradients (and the batch's tokens).
    pub activation_bytes: u64,
    pub params: u64,
    pub adapter: String,
    /// Share of the timed GPU time per kernel; empty without timestamp queries.
    pub kernels: BTreeMap<String, f64>,
}

/// Steps run before timing: the first builds pipelines and fills the caches.
const WARMUP: u64 = 2;

/// Times `steps` AdamW steps at batch `b` × `t` in `precision` after the warm-up, then (with
/// a profiler on `gpu`) two more with timestamps for the kernel shares. `peak` overrides the
/// table's peak in TFLOP/s.
pub fn train(
    gpu: &Gpu,
    config: GptConfig,
    (b, t): (usize, usize),
    steps: u64,
    peak: Option<f64>,
    precision: Precision,
) -> anyhow::Result<TrainBench> {
    anyhow::ensure!(steps > 0, "--steps must be positive");
    gpu.pool.reset_peak();
    let gpt = Gpt::with_precision(gpu, config.clone(), b, t, 1, precision)?;
    gpt.init(gpu, 1);
    let mut opt = Optimizer::new(gpu, &gpt.arena, OptimConfig::adamw(), None)?;
    if precision == Precision::F16 {
        opt.loss_scale = LossScale::Dynamic;
        opt.set_loss_scale(gpu, LossScale::INITIAL, 0);
    }
    let mut rec = crate::gpu::Recorder::new(gpu);
    opt.record_half_copy(gpu, &mut rec);
    rec.submit()?;
    let mut rng = Rng::new(7);
    let total = (WARMUP + steps + 2) as usize * b * t + 1;
    let tokens: Vec<u32> = (0..total).map(|_| (rng.next_u64() % config.vocab_size as u64) as u32).collect();
    let mut loader = Loader::new(tokens, b, t, false, 0).map_err(anyhow::Error::msg)?;
    // No timer: its readback would add a wait to the timed steps.
    let mut probes = Probes::without_timer(gpu, &gpt);
    let dist = Dist::single();
    // One step as training takes it: submit, then read the previous step's loss and norm.
    let mut step = |opt: &mut Optimizer| -> anyhow::Result<()> {
        let index = run_step(gpu, &gpt, opt, None, &dist, &mut loader, (0, 1e-4), &mut probes, &|| false)?
            .expect("a step that nothing stops ends with its update");
        probes.losses.take::<f32>(gpu)?;
        opt.grad_norm(gpu)?;
        probes.submitted_at(index.clone());
        opt.submitted_at(index);
        Ok(())
    };
    gpu.profiling_paused.store(true, Ordering::Relaxed);
    for _ in 0..WARMUP {
        step(&mut opt)?;
    }
    gpu.wait()?;
    let started = Instant::now();
    for _ in 0..steps {
        step(&mut opt)?;
    }
    gpu.wait()?;
    let secs = started.elapsed().as_secs_f64() / steps as f64;
    gpu.profiling_paused.store(false, Ordering::Relaxed);
    let mut kernels = BTreeMap::new();
    if let Some(p) = &gpu.profiler {
        p.lock().unwrap().reset();
        for _ in 0..2 {
            step(&mut opt)?;
        }
        gpu.wait()?;
        kernels = p.lock().unwrap().shares();
    }
    let wpe = gpt.arena.table.get("wpe.weight").map_or(0, |t| t.shape.iter().product::<usize>() as u64);
    let params = gpt.arena.table.numel();
    let (l, c) = (config.n_layer as f64, config.n_embd as f64);
    let flops_per_token = 6.0 * (params - wpe) as f64 + 12.0 * l * t as f64 * c;
    let tokens_per_s = (b * t) as f64 / secs;
    let tflops = flops_per_token * tokens_per_s / 1e12;
    let peak = peak.or_else(|| match precision {
        Precision::F32 => peak_tflops(&gpu.info.name),
        Precision::F16 => peak_f16_tflops(&gpu.info.name),
    });
    let stats = gpu.pool.stats();
    let activation_bytes = stats.live.iter().filter(|(c, _)| *c == Category::Activations).map(|(_, b)| b).sum();
    Ok(TrainBench {
        tokens_per_s,
        ms_per_step: secs * 1e3,
        tflops,
        mfu: peak.map(|p| tflops / p),
        precision: precision.name().to_string(),
        peak_bytes: stats.peak,
        activation_bytes,
        params,
        adapter: gpu.name(),
        kernels,
    })
}

/// FP32 peaks in TFLOP/s (non-tensor, boost clock, the largest configuration of each SKU),
/// matched in order against the lowercased adapter name: the more specific names first.
const PEAKS: &[(&[&str], f64)] = &[
    (&["h100", "pcie"], 51.2),
    (&["h100"], 66.9),
    (&["h200"], 66.9),
    (&["a100"], 19.5),
    (&["rtx 5090"], 104.8),
    (&["rtx 5080"], 56.3),
    (&["rtx 5070 ti"], 43.9),
    (&["rtx 5070"], 30.9),
    (&["rtx 5060 ti"], 23.7),
    (&["rtx 5060"], 19.2),
    (&["rtx 4090"], 82.6),
    (&["rtx 4080 super"], 52.2),
    (&["rtx 4080"], 48.7),
    (&["rtx 4070 ti super"], 44.1),
    (&["rtx 4070 ti"], 40.1),
    (&["rtx 4070 super"], 35.5),
    (&["rtx 4070"], 29.1),
    (&["rtx 4060 ti"], 22.1),
    (&["rtx 4060"], 15.1),
    (&["rtx 3090 ti"], 40.0),
    (&["rtx 3090"], 35.6),
    (&["rtx 3080 ti"], 34.1),
    (&["rtx 3080"], 29.8),
    (&["rtx 3070 ti"], 21.7),
    (&["rtx 3070"], 20.3),
    (&["rtx 3060 ti"], 16.2),
    (&["rtx 3060"], 12.7),
    (&["rtx 3050"], 9.1),
    (&["rx 7900 xtx"], 61.4),
    (&["rx 7900 xt"], 51.5),
    (&["rx 7900 gre"], 46.0),
    (&["arc", "a770"], 19.7),
    (&["arc", "b580"], 13.7),
    (&["m1 ultra"], 21.2),
    (&["m1 max"], 10.4),
    (&["m1 pro"], 5.2),
    (&["apple m1"], 2.6),
    (&["m2 ultra"], 27.2),
    (&["m2 max"], 13.6),
    (&["m2 pro"], 6.8),
    (&["apple m2"], 3.6),
    (&["m3 ultra"], 28.4),
    (&["m3 max"], 16.4),
    (&["m3 pro"], 7.4),
    (&["apple m3"], 4.1),
    (&["m4 max"], 18.4),
    (&["m4 pro"], 9.2),
    (&["apple m4"], 4.3),
];

/// Dense f16 peaks with f32 accumulation in TFLOP/s (tensor cores, no sparsity), for the
/// adapters whose f16 matrix units wgtrain can reach; matched as `PEAKS`.
const F16_PEAKS: &[(&[&str], f64)] = &[
    (&["h100", "pcie"], 756.0),
    (&["h100"], 989.4),
    (&["h200"], 989.4),
    (&["a100"], 312.0),
    (&["rtx 5090"], 209.5),
    (&["rtx 4090"], 165.2),
    (&["rtx 4080"], 97.5),
    (&["rtx 3090"], 35.6),
    (&["rx 7900 xtx"], 122.8),
];

/// The dense f16 (f32 accumulate) peak of a known adapter, by name.
pub fn peak_f16_tflops(adapter_name: &str) -> Option<f64> {
    lookup(F16_PEAKS, adapter_name)
}

/// The FP32 peak of a known adapter, by name.
pub fn peak_tflops(adapter_name: &str) -> Option<f64> {
    lookup(PEAKS, adapter_name)
}

/// The first entry of `table` whose words all appear in the lowercased adapter name.
fn lookup(table: &[(&[&str], f64)], adapter_name: &str) -> Option<f64> {
    let name = adapter_name.to_lowercase();
    table.iter().find(|(words, _)| words.iter().all(|w| name.contains(w))).map(|(_, p)| *p)
}
