//! A GPT-2 from a GGUF file: its block-quantized weights stay quantized in one buffer of u32
//! words (`QuantWeights`), read by the dequantizing kernels; every other tensor (F32, or F16
//! widened) goes into a parameter arena that holds only those.

use std::collections::HashMap;

use super::export::{self, GgufModel, Loaded};
use super::{Gpt, GptConfig, Precision};
use crate::formats::quant::{self, QType};
use crate::gpu::{Category, Dispatch, Gpu, GpuBuffer, GpuError};
use crate::kernels::quant::{self as qk, QView};
use crate::kernels::{Dtype, Tensor, View};
use crate::optim::ParamTable;
use crate::tune::matmul::{Dims, Matmul, Product};
use crate::tune::QuantPath;

/// Quantized tensors in one buffer, each at a multiple of 64 words.
#[derive(Clone)]
pub struct QuantWeights {
    pub words: GpuBuffer,
    /// name → (first word, type, rows, row length)
    pub tensors: HashMap<String, (u64, QType, u32, u32)>,
    /// Room for the largest weight dequantized that one binding holds, in the activations'
    /// type: the Dequant path's copy (`with_scratch`), shared by every layer in turn.
    scratch: Option<Tensor>,
}

impl QuantWeights {
    /// The block-quantized ones of `tensors`, uploaded (None when there are none).
    pub fn upload(gpu: &Gpu, tensors: &[Loaded]) -> Result<Option<Self>, GpuError> {
        let mut words: Vec<u32> = Vec::new();
        let mut names = HashMap::new();
        for t in tensors.iter().filter(|t| t.qtype.is_block()) {
            let (rows, cols) = (t.shape[0] as u32, *t.shape.last().unwrap() as u32);
            words.resize(words.len().next_multiple_of(64), 0);
            names.insert(t.name.clone(), (words.len() as u64, t.qtype, rows, cols));
            words.extend(quant::gpu_words(&t.bytes, t.qtype));
        }
        if names.is_empty() {
            return Ok(None);
        }
        let buf = gpu.pool.storage_from(&gpu.queue, Category::Parameters, &words)?;
        Ok(Some(Self { words: buf, tensors: names, scratch: None }))
    }

    pub fn view(&self, name: &str) -> Option<QView<'_>> {
        let &(offset, qtype, rows, cols) = self.tensors.get(name)?;
        Some(QView { buf: &self.words, offset, qtype, rows, cols })
    }

    /// What the quantized weights take on the GPU (not the scratch).
    pub fn bytes(&self) -> u64 {
        self.words.size()
    }

    /// These weights with a scratch of type `act` for the Dequant path (kept when there is one).
    pub(super) fn with_scratch(mut self, gpu: &Gpu, act: Dtype) -> Result<Self, GpuError> {
        if self.scratch.as_ref().is_some_and(|t| t.dtype == act) {
            return Ok(self);
        }
        let fits = |&&(_, _, rows, cols): &&(u64, QType, u32, u32)| {
            rows as u64 * cols as u64 * act.bytes() <= gpu.max_binding()
        };
        let len = self.tensors.values().filter(fits).map(|&(_, _, r, c)| r as u64 * c as u64).max().unwrap_or(1);
        self.scratch = Some(Tensor::new(gpu, Category::Activations, len, act)?);
        Ok(self)
    }

    /// The scratch where `q` dequantizes for a product of `m` rows on the Dequant path, if
    /// that is the path: the tuner's choice where the product has a tile's rows (32) and the
    /// copy fits; the fused kernels otherwise (decoding).
    fn dequant_into(
        &self,
        gpu: &Gpu,
        product: Product,
        q: &QView,
        d: Dims,
        act: Dtype,
    ) -> Result<Option<View<'_>>, GpuError> {
        let Some(s) = &self.scratch else { return Ok(None) };
        if d.m < 32 || q.rows as u64 * q.cols as u64 * s.dtype.bytes() > s.buf.size() {
            return Ok(None);
        }
        let path = crate::tune::choose_quant(gpu, product, d, q.qtype, act)?;
        Ok((path == QuantPath::Dequant).then(|| s.v()))
    }

    /// out (M, N) = inp (M, K) · deq(q)ᵀ + bias, on the path `dequant_into` says.
    pub(super) fn forward(
        &self,
        (gpu, mm): (&Gpu, &Matmul),
        [out, inp]: [View; 2],
        q: QView,
        bias: Option<View>,
        d: Dims,
    ) -> Result<Vec<Dispatch>, GpuError> {
        match self.dequant_into(gpu, Product::Forward, &q, d, inp.dtype)? {
            Some(w) => {
                let mut ops = vec![qk::dequantize(gpu, w, q)?];
                ops.extend(mm.forward(out, inp, w, bias, d)?);
                Ok(ops)
            }
            None => qk::forward(gpu, out, inp, q, bias, d.m),
        }
    }

    /// dinp (M, K) (+)= dout (M, N) · deq(q), on the path `dequant_into` says.
    pub(super) fn backward_input(
        &self,
        (gpu, mm): (&Gpu, &Matmul),
        [dinp, dout]: [View; 2],
        q: QView,
        d: Dims,
        add: bool,
    ) -> Result<Vec<Dispatch>, GpuError> {
        match self.dequant_into(gpu, Product::BackwardInput, &q, d, dout.dtype)? {
            Some(w) => {
                let mut ops = vec![qk::dequantize(gpu, w, q)?];
                ops.extend(if add {
                    mm.backward_input_add(dinp, dout, w, d)?
                } else {
                    mm.backward_input(dinp, dout, w, d)?
                });
                Ok(ops)
            }
            None => qk::backward_input(gpu, dinp, dout, q, d.m, add),
        }
    }
}

impl Gpt {
    /// A model for evaluation and sampling at batches of `b` × `t` from a GGUF file's
    /// tensors: quantized weights on the GPU as they are, the rest in f32 (and their f16 copy
    /// under `precision` F16).
    pub fn from_gguf(gpu: &Gpu, model: &GgufModel, b: usize, t: usize, precision: Precision) -> Result<Self, GpuError> {
        let quant = QuantWeights::upload(gpu, &model.tensors)?;
        let dense = model.tensors.iter().filter(|t| !t.qtype.is_block());
        let table = ParamTable::new(dense.map(|t| (t.name.clone(), t.shape.clone())));
        let gpt = Gpt::for_inference(gpu, model.config.clone(), b, t, precision, table, quant)?;
        gpt.write_params(gpu, &dense_values(&model.tensors));
        gpt.write_half_params(gpu)?;
        Ok(gpt)
    }
}

/// How a LoRA run holds its frozen base (`--lora-base`): a GGUF file's block-quantized tensors
/// as they are (`Keep`; an f32 checkpoint stays f32), everything in f32, or the linear weights
/// quantized into a block format on loading (QLoRA over any checkpoint).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum BaseFormat {
    #[default]
    Keep,
    F32,
    Q8_0,
    Q4_0,
    Q4_1,
}

impl BaseFormat {
    fn qtype(self) -> Option<QType> {
        match self {
            BaseFormat::Keep | BaseFormat::F32 => None,
            BaseFormat::Q8_0 => Some(QType::Q8_0),
            BaseFormat::Q4_0 => Some(QType::Q4_0),
            BaseFormat::Q4_1 => Some(QType::Q4_1),
        }
    }
}

/// A model's tensors (table order) in `format`: kept, dequantized to f32, or dequantized and
/// the linear weights whose rows are whole blocks quantized (embeddings stay as `quantize`'s
/// default leaves them, f32).
pub fn base_tensors(config: &GptConfig, tensors: Vec<Loaded>, format: BaseFormat) -> Vec<Loaded> {
    if format == BaseFormat::Keep {
        return tensors;
    }
    let planned = format.qtype().map(|qtype| export::plan(config, export::Format { qtype, embeddings: false }));
    let to = |i: usize| planned.as_ref().map_or(QType::F32, |p| p[i].qtype);
    (tensors.into_iter().enumerate())
        .map(|(i, t)| {
            let qtype = to(i);
            let bytes =
                if t.qtype == qtype { t.bytes } else { quant::quantize(&quant::dequantize(&t.bytes, t.qtype), qtype) };
            Loaded { qtype, bytes, ..t }
        })
        .collect()
}

/// The f32 values (table order) of the tensors that are not block-quantized, which a model
/// with `QuantWeights` keeps in its arena.
pub fn dense_values(tensors: &[Loaded]) -> Vec<Vec<f32>> {
    tensors.iter().filter(|t| !t.qtype.is_block()).map(|t| quant::dequantize(&t.bytes, t.qtype)).collect()
}

/// f32 tensors (table order) as `Loaded` ones.
pub fn f32_tensors(config: &GptConfig, values: Vec<Vec<f32>>) -> Vec<Loaded> {
    (config.parameter_specs().into_iter().zip(values))
        .map(|((name, shape), v)| Loaded { name, shape, qtype: QType::F32, bytes: quant::quantize(&v, QType::F32) })
        .collect()
}
