//! `wgtrain train` end to end on a small model: metrics, checkpoint, and a falling loss.

use wgtrain::data;
use wgtrain::model::{checkpoint, GptConfig};
use wgtrain::optim::{OptimizerKind, ScheduleKind};
use wgtrain::train::{train, TrainArgs};

use crate::common::gpu;

#[test]
fn train_writes_metrics_and_a_checkpoint_that_reloads() {
    let Some(gpu) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("wgtrain-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A repeating 17-token pattern: easy to learn, so the loss must fall quickly.
    let tokens: Vec<u32> = (0..4000).map(|i| ((i * 7) % 17) as u32).collect();
    data::write_tokens(&dir.join("train.bin"), &tokens).unwrap();
    data::write_tokens(&dir.join("val.bin"), &tokens[..1000]).unwrap();
    std::fs::write(dir.join("tiny.toml"), "n_layer = 1\nn_head = 2\nn_embd = 16\nvocab_size = 17\nn_positions = 16\n")
        .unwrap();
    let out = dir.join("run");
    let args = TrainArgs {
        config: Some(dir.join("tiny.toml")),
        init: None,
        data: Some(dir.join("train.bin")),
        val_data: Some(dir.join("val.bin")),
        batch_size: 3,
        seq_len: 13,
        steps: 30,
        optimizer: OptimizerKind::Adamw,
        lr: 1e-2,
        schedule: ScheduleKind::Cosine,
        warmup: 3,
        min_lr_frac: 0.1,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        momentum: 0.9,
        grad_clip: 1.0,
        grad_accum: 2,
        no_shuffle: false,
        seed: 7,
        eval_every: 10,
        val_batches: 2,
        out: out.clone(),
        sample_tokens: 0,
    };
    train(gpu, &args).unwrap();
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let steps: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("loss").is_some()).collect();
    let evals: Vec<f64> = lines.iter().filter_map(|l| l.get("val_loss")).map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(steps.len(), 30);
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s["step"].as_u64(), Some(i as u64));
        for key in ["loss", "lr", "grad_norm", "ms", "tokens_per_s"] {
            assert!(s[key].as_f64().is_some_and(f64::is_finite), "step {i} {key}: {s}");
        }
    }
    let first = steps[0]["loss"].as_f64().unwrap();
    assert!((first - (17f64).ln()).abs() < 0.3, "starts near ln 17: {first}");
    assert_eq!(evals.len(), 3);
    assert!(evals[2] < 0.5 * first, "val loss falls: {evals:?} from {first}");
    let config = GptConfig::load(&out.join("config.json")).unwrap();
    assert_eq!(config.vocab_size, 17);
    assert_eq!(
        checkpoint::load_hf(&out.join("model.safetensors"), &config).unwrap().len(),
        config.parameter_specs().len()
    );
    assert!(out.join("optimizer.safetensors").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn train_rejects_bad_input_with_the_flag_named() {
    let Some(gpu) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("wgtrain-train-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    data::write_tokens(&dir.join("big.bin"), &(0..300).collect::<Vec<u32>>()).unwrap();
    std::fs::write(dir.join("tiny.toml"), "n_layer = 1\nn_head = 2\nn_embd = 16\nvocab_size = 17\nn_positions = 16\n")
        .unwrap();
    let base = TrainArgs {
        config: Some(dir.join("tiny.toml")),
        init: None,
        data: Some(dir.join("big.bin")),
        val_data: None,
        batch_size: 2,
        seq_len: 8,
        steps: 2,
        optimizer: OptimizerKind::Adamw,
        lr: 1e-3,
        schedule: ScheduleKind::Constant,
        warmup: 0,
        min_lr_frac: 0.0,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.0,
        momentum: 0.0,
        grad_clip: 0.0,
        grad_accum: 1,
        no_shuffle: true,
        seed: 1,
        eval_every: 0,
        val_batches: 1,
        out: dir.join("run"),
        sample_tokens: 0,
    };
    let err = |a: TrainArgs| train(gpu, &a).unwrap_err().to_string();
    assert!(err(base.clone()).contains("token id 299"), "{}", err(base.clone()));
    assert!(err(TrainArgs { seq_len: 17, ..base.clone() }).contains("--seq-len 17"));
    assert!(err(TrainArgs { batch_size: 0, ..base.clone() }).contains("--batch-size"));
    assert!(err(TrainArgs { lr: 0.0, ..base.clone() }).contains("--lr"));
    std::fs::write(dir.join("odd.toml"), "n_layer = 1\nn_head = 3\nn_embd = 16\nvocab_size = 17\nn_positions = 16\n")
        .unwrap();
    let e = err(TrainArgs { config: Some(dir.join("odd.toml")), ..base.clone() });
    assert!(e.contains("odd.toml") && e.contains("not divisible by n_head"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
