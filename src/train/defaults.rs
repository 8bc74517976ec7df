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

pub use crate::model::config::{Settings, BUILT_IN};

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
