//! The tuner's check of a candidate before it may be timed: its outputs on random operands
//! against a trusted variant's on the same operands, so that a kernel that a driver computes
//! wrongly is dropped, with a warning naming it, instead of winning.

use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError, Recorder};
use crate::kernels::Dtype;
use crate::rng::Rng;

/// One output compared: its buffer, element type and length.
pub(super) type Output<'a> = (&'a GpuBuffer, Dtype, usize);

/// What every candidate's outputs must match: those of `reference`'s run.
pub(super) struct Verify<'a> {
    /// The trusted variant (the kernel from before autotuning, which the reference tests check
    /// on every CI adapter).
    pub reference: String,
    /// The outputs; each run starts them from zero.
    pub outputs: Vec<Output<'a>>,
    /// Their values after the reference's run.
    want: Vec<Vec<f32>>,
}

impl<'a> Verify<'a> {
    pub fn new(reference: impl ToString, outputs: Vec<Output<'a>>) -> Self {
        Self { reference: reference.to_string(), outputs, want: Vec::new() }
    }

    /// Runs the reference's dispatches once and keeps their outputs.
    pub fn prime(&mut self, gpu: &Gpu, ops: &[Dispatch]) -> Result<(), GpuError> {
        self.want = run_once(gpu, ops, &self.outputs)?;
        Ok(())
    }

    /// None where `ops` give the reference's outputs (within the difference of summing in
    /// another order: 1e-3 relative in f32, 1e-2 in f16, at least 1e-3 absolute), else where
    /// they differ most.
    pub fn mismatch(&self, gpu: &Gpu, ops: &[Dispatch]) -> Result<Option<String>, GpuError> {
        let got = run_once(gpu, ops, &self.outputs)?;
        for (i, ((g, w), (_, dtype, _))) in got.iter().zip(&self.want).zip(&self.outputs).enumerate() {
            let tol = if *dtype == Dtype::F16 { 1e-2 } else { 1e-3 };
            let bad = g.iter().zip(w).enumerate().find(|(_, (g, w))| !((*g - *w).abs() <= tol * (1.0 + w.abs())));
            if let Some((e, (g, w))) = bad {
                return Ok(Some(format!("output {i} element {e}: {g} where the reference has {w}")));
            }
        }
        Ok(None)
    }
}

fn run_once(gpu: &Gpu, ops: &[Dispatch], outputs: &[Output]) -> Result<Vec<Vec<f32>>, GpuError> {
    let mut rec = Recorder::new(gpu);
    for (buf, _, _) in outputs {
        rec.clear(buf, 0, buf.size());
    }
    rec.run(ops);
    rec.submit()?;
    gpu.wait()?;
    outputs
        .iter()
        .map(|&(buf, dtype, len)| match dtype {
            Dtype::F16 => gpu.read_f16(buf, 0, len),
            Dtype::F32 => gpu.read::<f32>(buf, 0, len),
        })
        .collect()
}

/// Fills the first `len` elements of `buf` with uniform values in [-1, 1) as `dtype`.
pub(super) fn fill(gpu: &Gpu, buf: &GpuBuffer, dtype: Dtype, len: usize, seed: u64) {
    let values = Rng::new(seed).vec(len);
    match dtype {
        Dtype::F32 => gpu.write(buf, 0, &values),
        Dtype::F16 => gpu.write_f16(buf, &values),
    }
}
