//! A GPT-2 from a GGUF file: its block-quantized weights stay quantized in one buffer of u32
//! words (`QuantWeights`), read by the dequantizing kernels; every other tensor (F32, or F16
//! widened) goes into a parameter arena that holds only those.

use std::collections::HashMap;

use super::{Gpt, Precision};
use crate::compress::export::GgufModel;
use crate::compress::quant::{self, QType};
use crate::gpu::{Category, Gpu, GpuBuffer, GpuError};
use crate::kernels::quant::QView;
use crate::optim::ParamTable;

/// Quantized tensors in one buffer, each at a multiple of 64 words.
#[derive(Clone)]
pub struct QuantWeights {
    pub words: GpuBuffer,
    /// name → (first word, type, rows, row length)
    pub tensors: HashMap<String, (u64, QType, u32, u32)>,
}

impl QuantWeights {
    /// The block-quantized tensors of `model`, uploaded.
    pub fn upload(gpu: &Gpu, model: &GgufModel) -> Result<Option<Self>, GpuError> {
        let mut words: Vec<u32> = Vec::new();
        let mut tensors = HashMap::new();
        for t in model.tensors.iter().filter(|t| t.qtype.is_block()) {
            let (rows, cols) = (t.shape[0] as u32, *t.shape.last().unwrap() as u32);
            words.resize(words.len().next_multiple_of(64), 0);
            tensors.insert(t.name.clone(), (words.len() as u64, t.qtype, rows, cols));
            words.extend(quant::gpu_words(&t.bytes, t.qtype));
        }
        if tensors.is_empty() {
            return Ok(None);
        }
        let buf = gpu.pool.storage_from(&gpu.queue, Category::Parameters, &words)?;
        Ok(Some(Self { words: buf, tensors }))
    }

    pub fn view(&self, name: &str) -> Option<QView<'_>> {
        let &(offset, qtype, rows, cols) = self.tensors.get(name)?;
        Some(QView { buf: &self.words, offset, qtype, rows, cols })
    }

    pub fn bytes(&self) -> u64 {
        self.words.size()
    }
}

impl Gpt {
    /// A model for evaluation and sampling at batches of `b` × `t` from a GGUF file's
    /// tensors: quantized weights on the GPU as they are, the rest in f32 (and their f16 copy
    /// under `precision` F16).
    pub fn from_gguf(gpu: &Gpu, model: &GgufModel, b: usize, t: usize, precision: Precision) -> Result<Self, GpuError> {
        let quant = QuantWeights::upload(gpu, model)?;
        let dense: Vec<_> = model.tensors.iter().filter(|t| !t.qtype.is_block()).collect();
        let table = ParamTable::new(dense.iter().map(|t| (t.name.clone(), t.shape.clone())));
        let gpt = Gpt::for_inference(gpu, model.config.clone(), b, t, precision, table, quant)?;
        let values: Vec<Vec<f32>> = dense.iter().map(|t| quant::dequantize(&t.bytes, t.qtype)).collect();
        gpt.write_params(gpu, &values);
        gpt.write_half_params(gpu)?;
        Ok(gpt)
    }
}
