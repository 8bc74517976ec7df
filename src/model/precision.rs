//! Which precision a run trains in: f32, or mixed f16 (f16 activations and matmul weights
//! over f32 masters), and what `--precision auto` picks on an adapter.

use crate::gpu::Gpu;
use crate::kernels::Dtype;

/// The precision a model trains and runs in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Mixed: f16 activations, activation gradients and matmul weights (the optimizer's f16
    /// copy of the f32 masters); f32 statistics, reductions, parameter gradients, optimizer.
    F16,
}

impl Precision {
    /// The element type of activations and their gradients.
    pub fn act(self) -> Dtype {
        match self {
            Precision::F32 => Dtype::F32,
            Precision::F16 => Dtype::F16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

/// `--precision`: f32, f16, or auto (f16 where the adapter has fast f16 matrix units).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionChoice {
    #[default]
    F32,
    F16,
    Auto,
}

impl PrecisionChoice {
    /// The precision to run in on `gpu`, and for `auto` a line saying what it picked and why.
    /// `f16` on an adapter without SHADER_F16 is refused, naming what is missing.
    pub fn resolve(self, gpu: &Gpu) -> Result<(Precision, Option<String>), String> {
        let f16 = gpu.device.features().contains(wgpu::Features::SHADER_F16);
        let picked = match self {
            PrecisionChoice::F32 => Ok((Precision::F32, None)),
            PrecisionChoice::F16 if f16 => Ok((Precision::F16, None)),
            PrecisionChoice::F16 => Err(format!(
                "--precision f16: {} has no SHADER_F16 (f16 in shaders), so it cannot run f16 kernels: use --precision f32",
                gpu.name()
            )),
            PrecisionChoice::Auto => Ok(match f16_matrix_units(gpu) {
                Some(units) if f16 => {
                    (Precision::F16, Some(format!("precision auto: f16 ({} has {units})", gpu.name())))
                }
                _ => (
                    Precision::F32,
                    Some(format!("precision auto: f32 ({} has no f16 matrix units)", gpu.name())),
                ),
            }),
        }?;
        // Only a run that will be f16 builds the probe kernel.
        if picked.0 == Precision::F16 {
            if let Err(e) = probe_f16(gpu) {
                let line = format!(
                    "warning: {} lists SHADER_F16 but its driver rejects an f16 kernel ({e}); running in f32",
                    gpu.name()
                );
                return Ok((Precision::F32, Some(line)));
            }
        }
        Ok(picked)
    }
}

/// The adapter's fast f16 matrix units, described, if it has them (`gpu::f16_matrix_units`).
pub fn f16_matrix_units(gpu: &Gpu) -> Option<String> {
    crate::gpu::f16_matrix_units(&gpu.adapter)
}

/// Builds one f16 kernel (the elementwise copy from f32 to f16 storage): some drivers list
/// SHADER_F16 and still reject `enable f16` at pipeline creation.
fn probe_f16(gpu: &Gpu) -> Result<(), crate::GpuError> {
    use crate::gpu::{Shader, Slot};
    const SLOTS: &[Slot] = &[Slot::Storage, Slot::ReadOnly, Slot::ReadOnly, Slot::Uniform];
    let kernel = crate::gpu::Kernel::new(Shader::Elementwise, "copy", SLOTS).with_half(0b001);
    gpu.pipeline(kernel, &[]).map(drop)
}
