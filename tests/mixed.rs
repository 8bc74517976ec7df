//! Mixed-precision training: f16 against f32 on a pinned run, dynamic loss scaling's overflow
//! path, bitwise resume in f16 with f16 checkpoints, and the refusal on an adapter without f16.

use wgtrain::data;
use wgtrain::gpu::Recorder;
use wgtrain::kernels::Dtype;
use wgtrain::model::{checkpoint, Gpt, GptConfig, Precision, PrecisionChoice};
use wgtrain::optim::{LossScale, OptimConfig, Optimizer, ScheduleKind};
use wgtrain::train::{resume, train, TrainArgs};

use crate::common::gpu;
use crate::train::{args, losses};

/// A run directory with a small model (2 layers, C 32 in 4 heads of 8) and
/// 6000 tokens of a 61-symbol sequence with enough structure to learn and no short period.
pub fn setup(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wgtrain-mixed-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tokens: Vec<u32> = (0..6000u64).map(|i| ((i * 7 + i / 3 + (i * i) % 11) % 61) as u32).collect();
    data::write_tokens(&dir.join("train.bin"), &tokens[..5000]).unwrap();
    data::write_tokens(&dir.join("val.bin"), &tokens[5000..]).unwrap();
    std::fs::write(dir.join("tiny.toml"), "n_layer = 2\nn_head = 4\nn_embd = 32\nvocab_size = 61\nn_positions = 32\n")
        .unwrap();
    dir
}

pub fn pinned(dir: &std::path::Path, precision: PrecisionChoice, out: &str) -> TrainArgs {
    TrainArgs {
        val_data: Some(dir.join("val.bin")),
        batch_size: 4,
        seq_len: 32,
        steps: 30,
        lr: 3e-3,
        schedule: ScheduleKind::Constant,
        grad_clip: 1.0,
        eval_every: 0,
        val_batches: 4,
        out: dir.join(out),
        precision,
        ..args(dir)
    }
}

pub fn val_loss(path: &std::path::Path) -> f32 {
    let text = std::fs::read_to_string(path).unwrap();
    let last = text.lines().rfind(|l| l.contains("val_loss")).expect("a validation line");
    serde_json::from_str::<serde_json::Value>(last).unwrap()["val_loss"].as_f64().unwrap() as f32
}

/// The pinned run in f16 (dynamic loss scaling) against the same run in f32: the loss within
/// 2% (relative) at every one of 30 steps, the final validation loss within 1%.
#[test]
fn f16_training_tracks_f32() {
    let Some(gpu) = gpu() else { return };
    let dir = setup("track");
    assert_eq!(train(gpu, &pinned(&dir, PrecisionChoice::F32, "f32")).unwrap(), None);
    assert_eq!(train(gpu, &pinned(&dir, PrecisionChoice::F16, "f16")).unwrap(), None);
    let (a, b) = (losses(&dir.join("f32/metrics.jsonl")), losses(&dir.join("f16/metrics.jsonl")));
    assert_eq!((a.len(), b.len()), (30, 30));
    assert!(a[29].1 < a[0].1 * 0.8, "the pinned run learns: {} -> {}", a[0].1, a[29].1);
    for (x, y) in a.iter().zip(&b) {
        let rel = ((y.1 - x.1) / x.1).abs();
        assert!(rel <= 0.02, "step {}: f16 loss {} vs f32 {} ({:.2}%)", x.0, y.1, x.1, 100.0 * rel);
    }
    let (va, vb) = (val_loss(&dir.join("f32/metrics.jsonl")), val_loss(&dir.join("f16/metrics.jsonl")));
    assert!(((vb - va) / va).abs() <= 0.01, "final val loss f16 {vb} vs f32 {va}");
    let text = std::fs::read_to_string(dir.join("f16/metrics.jsonl")).unwrap();
    assert!(text.contains("\"loss_scale\":65536"), "f16 lines carry the loss scale");
    std::fs::remove_dir_all(&dir).ok();
}

/// A loss scale too large for f16 overflows the activation gradients: the step is skipped
/// with the parameters (and their f16 copy) bit-identical, and the scale halves; the next
/// clean step counts toward doubling.
#[test]
fn overflow_skips_the_step_and_halves_the_scale() {
    let Some(gpu) = gpu() else { return };
    let cfg = GptConfig::gpt2(1, 2, 16, 37, 8);
    let gpt = Gpt::with_precision(gpu, cfg, 2, 8, 1, Precision::F16).unwrap();
    gpt.init(gpu, 5);
    let mut opt = Optimizer::new(gpu, &gpt.arena, OptimConfig::adamw(), None).unwrap();
    opt.loss_scale = LossScale::Dynamic;
    let step = |opt: &mut Optimizer, scale: f32| {
        opt.set_loss_scale(gpu, scale, 7);
        let tokens: Vec<u32> = (0..16).map(|i| (i * 5 % 37) as u32).collect();
        gpt.upload_batch(gpu, 0, &tokens, &tokens);
        let mut rec = Recorder::new(gpu);
        opt.record_half_copy(gpu, &mut rec);
        gpt.record_forward_backward(&mut rec);
        opt.record_step(gpu, &mut rec, 1e-3, true);
        rec.submit().unwrap();
        opt.submitted();
        opt.step_scalars(gpu).unwrap().unwrap()
    };
    let mut rec = Recorder::new(gpu);
    opt.record_half_copy(gpu, &mut rec);
    rec.submit().unwrap();
    let before = gpu.read::<u32>(&gpt.arena.params, 0, gpt.arena.table.len as usize).unwrap();
    let half_before = gpu.read::<u32>(gpt.arena.half.as_ref().unwrap(), 0, gpt.arena.table.len as usize / 2).unwrap();
    let s = step(&mut opt, 3.0e38);
    assert!(s.skipped && !s.norm.is_finite(), "an overflowing scale skips: {s:?}");
    assert_eq!(s.loss_scale, 1.5e38, "and halves the scale");
    assert_eq!(s.clean_steps, 0);
    assert!(gpu.read::<u32>(&gpt.arena.params, 0, before.len()).unwrap() == before, "parameters untouched");
    let half_after = gpu.read::<u32>(gpt.arena.half.as_ref().unwrap(), 0, half_before.len()).unwrap();
    assert!(half_after == half_before, "f16 copies untouched");
    let s = step(&mut opt, 1024.0);
    assert!(!s.skipped && s.norm.is_finite(), "a sane scale updates: {s:?}");
    assert_eq!((s.loss_scale, s.clean_steps), (1024.0, 8));
    assert!(gpu.read::<u32>(&gpt.arena.params, 0, before.len()).unwrap() != before, "updated");
    // The 2000th clean step in a row doubles the scale.
    let s = step(&mut opt, 1024.0).clean_steps;
    assert_eq!(s, 8, "set_loss_scale restarts the count where told");
    opt.set_loss_scale(gpu, 1024.0, LossScale::GROWTH_INTERVAL - 1);
    let mut rec = Recorder::new(gpu);
    gpt.record_forward_backward(&mut rec);
    opt.record_step(gpu, &mut rec, 1e-3, true);
    rec.submit().unwrap();
    opt.submitted();
    let s = opt.step_scalars(gpu).unwrap().unwrap();
    assert_eq!((s.loss_scale, s.clean_steps), (2048.0, 0), "doubled after 2000 clean steps");
}

/// An f16 run with dynamic loss scaling and f16 checkpoints, stopped at step 5 and resumed,
/// gives the same losses bit for bit; its model.safetensors is f16 and loads as f32 masters.
#[test]
fn f16_resume_continues_bitwise() {
    let Some(gpu) = gpu() else { return };
    let dir = setup("resume");
    let a = TrainArgs {
        steps: 10,
        save_every: 5,
        grad_accum: 2,
        save_dtype: Dtype::F16,
        stochastic_rounding: true,
        val_data: None,
        ..pinned(&dir, PrecisionChoice::F16, "whole")
    };
    assert_eq!(train(gpu, &a).unwrap(), None);
    let whole = losses(&dir.join("whole/metrics.jsonl"));
    let cut = dir.join("cut");
    std::fs::create_dir_all(cut.join("ckpt-00000005")).unwrap();
    std::fs::copy(dir.join("whole/metrics.jsonl"), cut.join("metrics.jsonl")).unwrap();
    let from = dir.join("whole/ckpt-00000005");
    for f in ["config.json", "model.safetensors", "master.safetensors", "optimizer.safetensors", "state.json"] {
        std::fs::copy(from.join(f), cut.join("ckpt-00000005").join(f)).unwrap();
    }
    assert_eq!(resume(gpu, &cut).unwrap(), None);
    let resumed = losses(&cut.join("metrics.jsonl"));
    assert_eq!(resumed.len(), 10);
    for (x, y) in whole.iter().zip(&resumed) {
        assert_eq!(x.1.to_bits(), y.1.to_bits(), "step {}: {} vs resumed {}", x.0, x.1, y.1);
    }
    // model.safetensors holds f16 tensors, which load (for --init) into f32 masters equal to
    // the masters rounded to f16.
    let bytes = std::fs::read(from.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.tensors().iter().all(|(_, v)| v.dtype() == safetensors::Dtype::F16));
    let cfg = GptConfig::load(&from.join("config.json")).unwrap();
    let half = checkpoint::load_hf(&from.join("model.safetensors"), &cfg).unwrap();
    let master = checkpoint::load_hf(&from.join(checkpoint::MASTER), &cfg).unwrap();
    for (h, m) in half.iter().zip(&master) {
        assert_eq!(h, &crate::half::f16ed(m));
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// --precision f16 on a device without SHADER_F16 (WGTRAIN_NO_F16=1 opens it so) stops at
/// once with one line naming what is missing; auto falls back to f32 and says so.
#[test]
fn f16_without_shader_f16_is_refused() {
    if gpu().is_none() {
        return;
    }
    let dir = setup("nof16");
    let exe = env!("CARGO_BIN_EXE_wgtrain");
    let run = |precision: &str| {
        std::process::Command::new(exe)
            .args(["--precision", precision, "train", "--steps", "1", "--sample-tokens", "0", "--batch-size", "1"])
            .arg("--config")
            .arg(dir.join("tiny.toml"))
            .arg("--data")
            .arg(dir.join("train.bin"))
            .args(["--seq-len", "8", "--out"])
            .arg(dir.join(format!("run-{precision}")))
            .env("WGTRAIN_NO_F16", "1")
            .output()
            .unwrap()
    };
    let out = run("f16");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("SHADER_F16") && err.contains("--precision f32"), "{err}");
    let out = run("auto");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("precision auto: f32"), "{said}");
    std::fs::remove_dir_all(&dir).ok();
}
