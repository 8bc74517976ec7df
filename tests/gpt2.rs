//! GPT-2 end to end against PyTorch + transformers (tests/fixtures/gpt2_tiny, written by
//! scripts/make_gpt2_fixture.py): the HF checkpoint loads, and the logits, the loss, every
//! parameter gradient and the losses of 10 AdamW steps match, as llm.c's test_gpt2 checks.
//! Sizes are awkward on purpose: vocab 67, T 11, head size 5.

use std::path::Path;

use wgtrain::gpu::Recorder;
use wgtrain::model::{checkpoint, Gpt, GptConfig};
use wgtrain::tune::matmul::Variant;

use wgtrain::Gpu;

use crate::common::{assert_close, gpu};

fn fixture() -> (GptConfig, serde_json::Value, std::path::PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2_tiny");
    let config = GptConfig::load(&dir.join("config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(include_str!("fixtures/gpt2_tiny.json")).unwrap();
    (config, json, dir)
}

/// HF's Conv1D weights are (in, out): our (out, in) transposed.
pub fn to_hf(name: &str, shape: &[usize], x: &[f32]) -> Vec<f32> {
    let conv = name.ends_with(".weight") && [".c_attn.", ".c_proj.", ".c_fc."].iter().any(|k| name.contains(k));
    if !conv {
        return x.to_vec();
    }
    let (rows, cols) = (shape[0], shape[1]);
    let mut y = vec![0.0; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            y[c * rows + r] = x[r * cols + c];
        }
    }
    y
}

/// Tolerances, per tensor: logits |d| <= 2e-6 + 1e-5·|want|; the loss within 1e-5; gradients
/// |d| <= 1e-7 + 1e-4·|want| (O(1e-3) to O(1e-1), summed over B·T = 22 positions in another
/// order than PyTorch's); the 10 training losses within 1e-5. On lavapipe every check also
/// passes at a tenth of its tolerance (gradients 1e-7 + 1e-5·|want|); the rest is room for
/// GPUs' faster exp and tanh.
#[test]
fn gpt2_matches_pytorch() {
    let Some(gpu) = gpu() else { return };
    matches_pytorch(gpu);
}

/// The same with the variants the tuner picks, on a GPU of its own with its own cache file.
#[test]
fn gpt2_matches_pytorch_with_tuned_kernels() {
    if gpu().is_none() {
        return;
    }
    let tuned = Gpu::from_env().unwrap();
    let file = std::env::temp_dir().join(format!("wgtrain-gpt2-tune-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&file);
    {
        let mut t = tuned.tuning.lock().unwrap();
        t.tune = true;
        t.thorough = true; // as `wgtrain tune`: every candidate, CPU adapters included
        t.cache_file = Some(file.clone());
    }
    matches_pytorch(&tuned);
    let t = tuned.tuning.lock().unwrap();
    assert!(!t.found.is_empty(), "nothing was tuned");
    eprintln!("tuned: {:?}", t.choices());
}

/// The same with the GPUs' default variant (workgroup tiles) in every matmul.
#[test]
fn gpt2_matches_pytorch_with_tiled_kernels() {
    if gpu().is_none() {
        return;
    }
    let tiled = Gpu::from_env().unwrap();
    tiled.tuning.lock().unwrap().fallback = Some(Variant::GPU[0].to_string());
    matches_pytorch(&tiled);
}

fn matches_pytorch(gpu: &Gpu) {
    let (config, fx, dir) = fixture();
    crate::common::matches_golden(gpu, "gpt2", &config, &fx, &dir, to_hf);
}

#[test]
fn hf_checkpoint_round_trips() {
    let Some(gpu) = gpu() else { return };
    let (config, _, dir) = fixture();
    let params = checkpoint::load_hf(&dir.join("model.safetensors"), &config).unwrap();
    let out = std::env::temp_dir().join(format!("wgtrain-ckpt-{}", std::process::id()));
    checkpoint::save_hf(&out, &config, &params).unwrap();
    let again =
        checkpoint::load_hf(&out.join("model.safetensors"), &GptConfig::load(&out.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(params, again);
    let _ = gpu;
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn checkpoint_that_does_not_match_the_config_is_an_error() {
    let (mut config, _, dir) = fixture();
    config.n_embd = 18;
    let err = checkpoint::load_hf(&dir.join("model.safetensors"), &config).unwrap_err();
    assert!(err.to_string().contains("does not match the model config"), "{err}");
    config.n_embd = 15;
    config.n_layer = 3;
    let err = checkpoint::load_hf(&dir.join("model.safetensors"), &config).unwrap_err();
    assert!(err.to_string().contains("no tensor h.2."), "{err}");
}

/// Decoding with the KV cache gives the logits the full forward gives at every position.
/// Tolerance: the same sums in another grouping, |d| <= 1e-5 + 1e-4·|want|.
#[test]
fn kv_cache_decoding_matches_the_full_forward() {
    let Some(gpu) = gpu() else { return };
    let (config, fx, dir) = fixture();
    crate::common::decoding_matches_forward(gpu, "gpt2", &config, &fx, &dir);
}

/// Gradient accumulation: a batch of 4 rows equals 2 micro-batches of 2 rows (the losses
/// average and the gradients sum to the same values). Tolerance: one f32 sum split in two,
/// |d| <= 1e-7 + 1e-4·|want|.
#[test]
fn two_micro_batches_of_two_equal_one_batch_of_four() {
    let Some(gpu) = gpu() else { return };
    let (config, fx, dir) = fixture();
    let t = fx["T"].as_u64().unwrap() as usize;
    let params = checkpoint::load_hf(&dir.join("model.safetensors"), &config).unwrap();
    let rows: Vec<u32> = (0..4 * (t + 1)).map(|i| ((i * 31 + 7) % config.vocab_size) as u32).collect();
    let (x, y): (Vec<u32>, Vec<u32>) = (0..4)
        .flat_map(|r| (0..t).map(move |i| (r, i)))
        .map(|(r, i)| (rows[r * (t + 1) + i], rows[r * (t + 1) + i + 1]))
        .unzip();
    let run = |b: usize, accum: usize| {
        let gpt = Gpt::new(gpu, config.clone(), b, t, accum).unwrap();
        gpt.write_params(gpu, &params);
        for k in 0..accum {
            let span = k * b * t..(k + 1) * b * t;
            gpt.upload_batch(gpu, k, &x[span.clone()], &y[span]);
        }
        let mut rec = Recorder::new(gpu);
        gpt.record_forward_backward(&mut rec);
        rec.submit().unwrap();
        (gpt.read_loss(gpu).unwrap(), gpt.read_grads(gpu).unwrap(), gpt.arena.table.clone())
    };
    let (loss4, grads4, table) = run(4, 1);
    let (loss22, grads22, _) = run(2, 2);
    assert!((loss4 - loss22).abs() < 1e-6, "loss {loss4} vs {loss22}");
    for (tensor, (a, b)) in table.tensors.iter().zip(grads4.iter().zip(&grads22)) {
        assert_close(&format!("grad {}", tensor.name), b, a, 1e-7, 1e-4);
    }
}
