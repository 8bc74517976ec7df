//! Quantization-aware training: before each step's forward (and each evaluation), every
//! linear weight is quantized and dequantized per block on the GPU into the arena's
//! fake-quantized copy, which the matmuls read forward and backward; the gradient goes
//! straight through to the f32 master weights. The run's model.gguf is those same blocks.

use super::export::{self, Format, Planned};
use super::{Gpt, GptConfig};
use crate::formats::quant::{self, QType};
use crate::gpu::{Category, Dispatch, Gpu, GpuError, Recorder};
use crate::kernels::fake_quant::fake_quant;
use crate::kernels::View;

/// The fake quantization of a model's linear weights.
pub struct Qat {
    pub qtype: QType,
    ops: Vec<Dispatch>,
}

impl Qat {
    /// One dispatch per linear weight, from the masters into the arena's copy.
    pub(super) fn new(gpu: &Gpu, gpt: &Gpt, qtype: QType) -> Result<Self, GpuError> {
        let arena = &gpt.arena;
        let fq = arena.fake_quant.as_ref().expect("the arena of a QAT model has its copy");
        let mut ops = Vec::new();
        for t in arena.table.tensors.iter().filter(|t| export::is_linear_weight(&t.name)) {
            let out = View::at(fq, t.offset);
            ops.push(fake_quant(gpu, Some(out), None, View::at(&arena.params, t.offset), t.numel(), qtype)?);
        }
        Ok(Self { qtype, ops })
    }

    pub fn record(&self, rec: &mut Recorder) {
        rec.run(&self.ops);
    }
}

/// QAT needs every linear weight in rows of whole blocks.
pub fn check(config: &GptConfig, qtype: QType) -> Result<(), String> {
    if !qtype.is_block() {
        return Err(format!("--qat {}: QAT trains for q8_0, q4_0 or q4_1", qtype.name()));
    }
    let specs = config.parameter_specs();
    let linear = specs.iter().filter(|(n, _)| export::is_linear_weight(n));
    if let Some((name, shape)) = linear.into_iter().find(|(_, s)| !s[1].is_multiple_of(quant::QK)) {
        return Err(format!(
            "--qat {}: {name} has rows of {}, not a multiple of {}, so they are not whole blocks",
            qtype.name(),
            shape[1],
            quant::QK
        ));
    }
    Ok(())
}

impl Gpt {
    /// Brings the fake-quantized weights up to date with the masters now (for a decoder built
    /// after the last update).
    pub fn refresh_fake_quant(&self, gpu: &Gpu) -> Result<(), GpuError> {
        if let Some(q) = &self.qat {
            let mut rec = Recorder::new(gpu);
            q.record(&mut rec);
            rec.submit()?;
        }
        Ok(())
    }

    /// The model as `wgtrain quantize` lays it out in the QAT format, each linear weight's
    /// blocks as the GPU quantized them (so their values are the fake-quantized ones bit for
    /// bit), every other tensor f32.
    pub fn qat_export(&self, gpu: &Gpu) -> Result<(Vec<Planned>, Vec<Vec<u8>>), GpuError> {
        let qtype = self.qat.as_ref().map_or(QType::F32, |q| q.qtype);
        let planned = export::plan(&self.config, Format { qtype, embeddings: false });
        let values = self.read_params(gpu)?;
        let mut data = Vec::new();
        for ((p, v), t) in planned.iter().zip(&values).zip(&self.arena.table.tensors) {
            if !p.qtype.is_block() {
                data.push(quant::quantize(v, p.qtype));
                continue;
            }
            let words = t.numel() / 32 * p.qtype.gpu_words() as u64;
            let buf = gpu.pool.storage(Category::Activations, 4 * words)?;
            let op = fake_quant(
                gpu,
                None,
                Some(View::from(&buf)),
                View::at(&self.arena.params, t.offset),
                t.numel(),
                p.qtype,
            )?;
            let mut rec = Recorder::new(gpu);
            rec.dispatch(&op);
            rec.submit()?;
            data.push(quant::ggml_bytes(&gpu.read::<u32>(&buf, 0, words as usize)?, p.qtype));
        }
        // Llama's q and k rows in llama.cpp's order: whole rows of blocks move.
        for (p, bytes) in planned.iter().zip(&mut data) {
            if let Some(heads) = crate::model::llama_gguf::permuted_heads(&self.config, &p.name) {
                *bytes = crate::model::llama_gguf::permute_rows(bytes, p.qtype.bytes_for(p.shape[1]), heads, false);
            }
        }
        Ok((planned, data))
    }
}
