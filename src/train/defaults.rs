//! The default run: the model config `wgtrain train` picks when given no --config or --init
//! (a small model on a CPU adapter, a larger one on a real GPU), and the training settings
//! that come from a config's `[train]` table unless a flag sets them.

use std::path::{Path, PathBuf};

use crate::gpu::Gpu;
use crate::model::config::{ConfigError, TrainDefaults};

/// The small byte-level model: under a minute on a 2-core software adapter.
pub const DEFAULT_CONFIG: &str = "models/default.toml";
/// nanoGPT's Shakespeare character model (6 layers, 6 heads, 384 channels, T 256), sized for
/// about two minutes on an H100-class GPU.
pub const GPU_DEFAULT_CONFIG: &str = "models/gpu-default.toml";

/// Settings when neither a flag nor the config's `[train]` table gives one.
pub const BUILT_IN: Settings =
    Settings { batch_size: 4, seq_len: 128, steps: 160, lr: 2e-3, warmup: 10, eval_every: 40 };

/// The training settings a config may carry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub batch_size: usize,
    pub seq_len: usize,
    pub steps: u64,
    pub lr: f64,
    pub warmup: u64,
    pub eval_every: u64,
}

impl Settings {
    /// Each field from `flags` if set, else from `table`, else from `BUILT_IN`.
    pub fn resolve(flags: &TrainDefaults, table: &TrainDefaults) -> Settings {
        let b = BUILT_IN;
        Settings {
            batch_size: flags.batch_size.or(table.batch_size).unwrap_or(b.batch_size),
            seq_len: flags.seq_len.or(table.seq_len).unwrap_or(b.seq_len),
            steps: flags.steps.or(table.steps).unwrap_or(b.steps),
            lr: flags.lr.or(table.lr).unwrap_or(b.lr),
            warmup: flags.warmup.or(table.warmup).unwrap_or(b.warmup),
            eval_every: flags.eval_every.or(table.eval_every).unwrap_or(b.eval_every),
        }
    }
}

/// A file under models/: here if it exists, else in the source tree the binary was built from.
pub fn model_file(name: &str) -> PathBuf {
    let here = PathBuf::from(name);
    if here.exists() {
        here
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
    }
}

/// The config of the default run on `gpu`, and why it was chosen.
pub fn default_config(gpu: &Gpu) -> (PathBuf, String) {
    match gpu.info.device_type {
        wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu => (
            model_file(GPU_DEFAULT_CONFIG),
            format!("no --config or --init, and {} is a real GPU ({:?})", gpu.info.name, gpu.info.device_type),
        ),
        other => (
            model_file(DEFAULT_CONFIG),
            format!("no --config or --init, and {} is a {other:?} adapter, so the small run", gpu.info.name),
        ),
    }
}

/// --config, or the adapter's default run (said on stdout) when neither --config nor --init is
/// given, with the config's [train] table (none with --init alone: its config.json has none).
pub fn run_config(
    gpu: &Gpu,
    config: Option<PathBuf>,
    init: bool,
) -> Result<(Option<PathBuf>, TrainDefaults), ConfigError> {
    let config = match (config, init) {
        (None, false) => {
            let (path, why) = default_config(gpu);
            // On stderr: a command's stdout may be JSON (bench train --json).
            eprintln!("config: {} ({why})", path.display());
            Some(path)
        }
        (c, _) => c,
    };
    let table = match &config {
        Some(p) if !init || p.extension().is_some_and(|e| e == "toml") => TrainDefaults::load(p)?,
        _ => TrainDefaults::default(),
    };
    Ok((config, table))
}
