//! wgtrain: a training engine for language models, written as WGSL compute shaders on wgpu.

#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod browser;
pub mod check;
pub mod compress;
pub mod data;
pub mod demo;
pub mod dist;
pub mod formats;
pub mod gpu;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod parallel;
// The loss curve as a PNG file (plotters' bitmap backend): native only; the page draws its own.
#[cfg(not(target_arch = "wasm32"))]
pub mod plot;
pub mod reference;
pub mod rng;
// The training command's loop (files, signals, MPI): native only; the browser build drives
// the model and optimizer from its own async loop.
#[cfg(not(target_arch = "wasm32"))]
pub mod train;
pub mod tune;

pub use gpu::{Gpu, GpuError};
