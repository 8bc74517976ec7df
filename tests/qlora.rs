//! QLoRA: a LoRA model whose frozen base keeps its linear weights, its embedding and its LM
//! head block-quantized on the GPU trains as the same LoRA model over those weights
//! dequantized into f32. Both paths (the dequantizing forward and the input gradient through
//! a quantized weight) are checked by the logits, the loss, every adapter gradient and three
//! AdamW steps; the quantized words stay bit for bit what they were.

use wgtrain::formats::quant::{self, QType};
use wgtrain::gpu::Recorder;
use wgtrain::model::export::Loaded;
use wgtrain::model::lora::LoraConfig;
use wgtrain::model::quantized::{base_tensors, dense_values, f32_tensors, BaseFormat};
use wgtrain::model::{Arch, Gpt, GptConfig, Precision, QuantWeights};
use wgtrain::optim::{OptimConfig, Optimizer};
use wgtrain::reference::Rng;
use wgtrain::Gpu;

use crate::common::{assert_close, gpu};

/// Seeded values for every parameter of `config`, small enough for a stable forward.
fn values(config: &GptConfig, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let specs = config.parameter_specs();
    specs.iter().map(|(_, s)| rng.vec(s.iter().product()).iter().map(|v| 0.3 * v).collect()).collect()
}

/// `tensors` with the embedding and an untied LM head quantized into `q` as well.
fn quantize_heads(config: &GptConfig, tensors: Vec<Loaded>, q: QType) -> Vec<Loaded> {
    let head = |n: &str| n == config.embedding() || n == "lm_head.weight";
    (tensors.into_iter())
        .map(|t| match head(&t.name) {
            true => Loaded { bytes: quant::quantize(&quant::dequantize(&t.bytes, t.qtype), q), qtype: q, ..t },
            false => t,
        })
        .collect()
}

/// A LoRA model on `tensors` (the quantized ones kept so when `keep`), with seeded adapters.
fn model(gpu: &Gpu, config: &GptConfig, tensors: &[Loaded], keep: bool, (b, t): (usize, usize)) -> Gpt {
    let lora = LoraConfig { rank: 3, alpha: 8.0, targets: vec!["all-linear".into()], dropout: 0.0 };
    let quant = if keep { QuantWeights::upload(gpu, tensors).unwrap() } else { None };
    let gpt = Gpt::with_lora(gpu, (config.clone(), quant), (b, t, 1), Precision::F32, lora, 1).unwrap();
    let dense = if keep {
        dense_values(tensors)
    } else {
        tensors.iter().map(|t| quant::dequantize(&t.bytes, t.qtype)).collect()
    };
    gpt.write_base(gpu, &dense).unwrap();
    // B is zero at peft's init: random adapters make the low-rank path and dA count.
    let mut rng = Rng::new(9);
    let adapters = gpt.arena.table.tensors.iter().map(|s| rng.vec(s.numel() as usize)).collect::<Vec<_>>();
    gpt.write_params(gpu, &adapters);
    gpt
}

fn matches_lora(gpu: &Gpu, config: &GptConfig, linear: BaseFormat, head: QType, (b, t): (usize, usize)) {
    let tensors = base_tensors(config, f32_tensors(config, values(config, 3)), linear);
    let tensors = quantize_heads(config, tensors, head);
    let (q, f) = (model(gpu, config, &tensors, true, (b, t)), model(gpu, config, &tensors, false, (b, t)));
    let words = q.quant.as_ref().expect("quantized weights");
    assert!(words.tensors.len() > 2 * config.n_layer, "the linear weights and the head are quantized");
    let before: Vec<u32> = gpu.read(&words.words, 0, (words.bytes() / 4) as usize).unwrap();
    let v = config.vocab_size as u32;
    let inputs: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 7 + 3) % v).collect();
    let targets: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 5 + 1) % v).collect();
    let what = format!("{:?} {linear:?} head {} at {b} × {t}", config.arch, head.name());
    for g in [&q, &f] {
        g.upload_batch(gpu, 0, &inputs, &targets);
        let mut rec = Recorder::new(gpu);
        g.record_eval(&mut rec);
        rec.submit().unwrap();
    }
    let logits = f.read_logits(gpu).unwrap();
    assert_close(&format!("{what} logits"), &q.read_logits(gpu).unwrap(), &logits, 1e-5, 1e-4);
    let mut opts = [&q, &f].map(|g| Optimizer::new(gpu, &g.arena, OptimConfig::adamw(), None).unwrap());
    for step in 0..3 {
        let mut losses = Vec::new();
        for (g, opt) in [&q, &f].into_iter().zip(&mut opts) {
            let mut rec = Recorder::new(gpu);
            g.record_forward_backward(&mut rec);
            if step > 0 {
                opt.record_step(gpu, &mut rec, 1e-2, false);
            }
            rec.submit().unwrap();
            losses.push(g.read_loss(gpu).unwrap());
        }
        assert!((losses[0] - losses[1]).abs() < 1e-5 * losses[1].abs(), "{what} step {step}: {losses:?}");
        if step == 0 {
            for ((s, gq), gf) in
                f.arena.table.tensors.iter().zip(q.read_grads(gpu).unwrap()).zip(f.read_grads(gpu).unwrap())
            {
                assert_close(&format!("{what} grad {}", s.name), &gq, &gf, 1e-6, 1e-4);
            }
        }
    }
    let after: Vec<u32> = gpu.read(&words.words, 0, before.len()).unwrap();
    assert!(after == before, "{what}: the quantized base changed");
}

/// GPT-2 with a tied head (C 64, MLP 256) and a Llama with an untied one (4 heads on 2 KV
/// heads of 16, MLP 96): every product's K is whole blocks. At 3 × 13 (M 39, a partial tile)
/// the products take the tuner's path (on CPU adapters the dequantized copy and the dense
/// matmul); at 2 × 13 (M 26, under a tile) the fused dequantizing kernels.
#[test]
fn qlora_trains_as_lora_over_the_dequantized_base() {
    let Some(gpu) = gpu() else { return };
    let gpt2 = GptConfig::gpt2(2, 2, 64, 67, 16);
    let llama = GptConfig {
        arch: Arch::Llama,
        n_kv_head: Some(2),
        head_dim: Some(16),
        n_inner: Some(96),
        tie_word_embeddings: Some(false),
        ..GptConfig::gpt2(2, 4, 64, 67, 16)
    };
    for shape in [(3, 13), (2, 13)] {
        matches_lora(gpu, &gpt2, BaseFormat::Q4_1, QType::Q8_0, shape);
        matches_lora(gpu, &llama, BaseFormat::Q4_0, QType::Q4_1, shape);
    }
    matches_lora(gpu, &llama, BaseFormat::Q8_0, QType::Q8_0, (3, 13));
}
