//! wgtrain: a training engine for language models, written as WGSL compute shaders on wgpu.

pub mod bench;
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
pub mod plot;
pub mod reference;
pub mod rng;
pub mod train;
pub mod tune;

pub use gpu::{Gpu, GpuError};
