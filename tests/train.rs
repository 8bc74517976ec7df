//! `wgtrain train` end to end on a small model: metrics, checkpoint, and a falling loss.

use wgtrain::data;
use wgtrain::model::{checkpoint, GptConfig};
use wgtrain::optim::{OptimizerKind, ScheduleKind};
use wgtrain::train::{resume, train, TrainArgs};

use crate::common::gpu;

/// The flags the tests share: a tiny model (dir/tiny.toml) on dir/train.bin, 2 constant-lr
/// AdamW steps of 2 × 8 tokens, in order, into dir/run. Each test sets what it is about.
pub fn args(dir: &std::path::Path) -> TrainArgs {
    TrainArgs {
        config: Some(dir.join("tiny.toml")),
        init: None,
        data: Some(dir.join("train.bin")),
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
        save_every: 0,
        keep: 3,
        max_skips: 5,
        patience: 0,
        min_delta: 0.0,
        force: false,
        zero: 0,
        // The shared test GPU runs the default variants; tests/tune.rs tunes GPUs of its own.
        no_tune: true,
        check_replicas: 100,
        precision: Default::default(),
        loss_scale: None,
        stochastic_rounding: false,
        save_dtype: Default::default(),
        qat: None,
        prune: Default::default(),
        kd: Default::default(),
        lora: Default::default(),
    }
}

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
        val_data: Some(dir.join("val.bin")),
        batch_size: 3,
        seq_len: 13,
        steps: 30,
        lr: 1e-2,
        schedule: ScheduleKind::Cosine,
        warmup: 3,
        min_lr_frac: 0.1,
        weight_decay: 0.1,
        momentum: 0.9,
        grad_clip: 1.0,
        grad_accum: 2,
        no_shuffle: false,
        seed: 7,
        eval_every: 10,
        val_batches: 2,
        out: out.clone(),
        ..args(&dir)
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
    // Setup apart from the first step's time; the GPU's time where there are timestamps.
    assert!(steps[0]["setup_ms"].as_f64().is_some_and(|x| x > 0.0), "{}", steps[0]);
    assert!(steps[1..].iter().all(|s| s.get("setup_ms").is_none()));
    if gpu.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
        for s in &steps {
            let (g, ms) = (s["gpu_ms"].as_f64().unwrap(), s["ms"].as_f64().unwrap());
            assert!(g > 0.0 && g.is_finite(), "{s}");
            assert!(g < 10.0 * ms + 50.0, "GPU time {g} ms against a step of {ms} ms: {s}");
        }
    }
    // The plot: a PNG of tens of kilobytes, not a raw raster.
    let png = std::fs::read(out.join("loss.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!((5_000..200_000).contains(&png.len()), "loss.png is {} bytes", png.len());
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
    let base = TrainArgs { data: Some(dir.join("big.bin")), ..args(&dir) };
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

pub fn losses(path: &std::path::Path) -> Vec<(u64, f32)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap() as f32))
        .collect()
}

/// A run stopped after 5 of 10 steps and resumed from its checkpoint gives, for steps 5..9,
/// the same losses bit for bit as the run that never stopped.
#[test]
fn resume_continues_bitwise() {
    let Some(gpu) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("wgtrain-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tokens: Vec<u32> = (0..5000).map(|i| ((i * 13 + i / 7) % 23) as u32).collect();
    data::write_tokens(&dir.join("train.bin"), &tokens).unwrap();
    std::fs::write(dir.join("tiny.toml"), "n_layer = 2\nn_head = 2\nn_embd = 16\nvocab_size = 23\nn_positions = 16\n")
        .unwrap();
    let args = TrainArgs {
        batch_size: 3,
        seq_len: 11,
        steps: 10,
        lr: 5e-3,
        schedule: ScheduleKind::Cosine,
        warmup: 2,
        min_lr_frac: 0.1,
        weight_decay: 0.1,
        momentum: 0.9,
        grad_clip: 1.0,
        grad_accum: 2,
        no_shuffle: false,
        seed: 3,
        out: dir.join("whole"),
        save_every: 5,
        ..args(&dir)
    };
    assert_eq!(train(gpu, &args).unwrap(), None);
    let whole = losses(&dir.join("whole/metrics.jsonl"));
    assert_eq!(whole.len(), 10);
    // The stopped run: the step-5 checkpoint, and metrics that (as after a crash) ran on past
    // it; resuming must replace those later lines, not append after them.
    let cut = dir.join("cut");
    std::fs::create_dir_all(&cut).unwrap();
    std::fs::copy(dir.join("whole/metrics.jsonl"), cut.join("metrics.jsonl")).unwrap();
    let from = dir.join("whole/ckpt-00000005");
    std::fs::create_dir_all(cut.join("ckpt-00000005")).unwrap();
    for f in ["config.json", "model.safetensors", "optimizer.safetensors", "state.json"] {
        std::fs::copy(from.join(f), cut.join("ckpt-00000005").join(f)).unwrap();
    }
    assert_eq!(resume(gpu, &cut).unwrap(), None);
    let resumed = losses(&cut.join("metrics.jsonl"));
    assert_eq!(resumed.len(), 10, "metrics.jsonl keeps steps 0..4 and gets 5..9 once");
    for (a, b) in whole.iter().zip(&resumed) {
        assert_eq!(a.0, b.0);
        assert_eq!(a.1.to_bits(), b.1.to_bits(), "step {}: {} vs resumed {}", a.0, a.1, b.1);
    }
    // --keep 3: ckpt-5 and ckpt-10 in the whole run; a resume past the end is an error.
    assert!(dir.join("whole/ckpt-00000010").exists());
    let err = resume(gpu, &dir.join("whole")).unwrap_err().to_string();
    assert!(err.contains("already took its 10 steps"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A run whose loss turns non-finite skips those updates, logs them, and stops after
/// --max-skips of them in a row with a message.
#[test]
fn non_finite_run_skips_then_stops() {
    let Some(gpu) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("wgtrain-nan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tokens: Vec<u32> = (0..3000).map(|i| (i % 17) as u32).collect();
    data::write_tokens(&dir.join("train.bin"), &tokens).unwrap();
    std::fs::write(dir.join("tiny.toml"), "n_layer = 1\nn_head = 2\nn_embd = 16\nvocab_size = 17\nn_positions = 16\n")
        .unwrap();
    let args = TrainArgs {
        steps: 40,
        optimizer: OptimizerKind::Sgd,
        lr: 1e30, // the first update sends the parameters to infinity
        max_skips: 3,
        ..args(&dir)
    };
    let err = train(gpu, &args).unwrap_err().to_string();
    assert!(err.contains("non-finite") && err.contains("--lr"), "{err}");
    let metrics = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    assert!(metrics.lines().filter(|l| l.contains("\"skipped\":true")).count() >= 4, "{metrics}");
    assert!(metrics.lines().count() < 40, "stopped early");
    std::fs::remove_dir_all(&dir).ok();
}

/// Early stopping keeps the best checkpoint; an --out that holds a run needs --resume or --force.
#[test]
fn early_stopping_and_an_occupied_out() {
    let Some(gpu) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("wgtrain-early-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tokens: Vec<u32> = (0..3000).map(|i| ((i * 5) % 17) as u32).collect();
    data::write_tokens(&dir.join("train.bin"), &tokens).unwrap();
    std::fs::write(dir.join("tiny.toml"), "n_layer = 1\nn_head = 2\nn_embd = 16\nvocab_size = 17\nn_positions = 16\n")
        .unwrap();
    let args = TrainArgs {
        val_data: Some(dir.join("train.bin")),
        steps: 30,
        grad_clip: 1.0,
        eval_every: 3,
        // Nothing improves by 100: the second evaluation already counts as stale.
        patience: 1,
        min_delta: 100.0,
        ..args(&dir)
    };
    assert_eq!(train(gpu, &args).unwrap(), None);
    let steps = losses(&dir.join("run/metrics.jsonl"));
    assert_eq!(steps.len(), 6, "stopped at the second evaluation (step 5)");
    assert!(dir.join("run/best/state.json").exists() && dir.join("run/best/model.safetensors").exists());
    let err = train(gpu, &args).unwrap_err().to_string();
    assert!(err.contains("already holds a run") && err.contains("--force"), "{err}");
    assert_eq!(train(gpu, &TrainArgs { force: true, ..args }).unwrap(), None);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn train_on_a_prepared_directory_takes_its_tokenizer() {
    use wgtrain::data::prepare::{prepare, PrepareArgs, TokenizerChoice};
    use wgtrain::data::tokenizer::Tokenizer;
    let Some(gpu) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("wgtrain-train-prepared-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare");
    let prep = PrepareArgs {
        inputs: vec![corpus.join("macbeth_gut.txt"), corpus.join("othello_gut.txt"), corpus.join("hamlet_gut.txt")],
        out: dir.join("data"),
        tokenizer: TokenizerChoice::Bpe,
        vocab_size: 300,
        field: "text".into(),
        min_chars: 0,
        near_dup_threshold: Some(0.8),
        val_fraction: 0.34,
        seed: 1,
        eot: None,
        force: false,
        progress: false,
    };
    prepare(&prep).unwrap();
    // tiny.toml says vocab 17: a fresh model takes the data's 300 instead.
    std::fs::write(dir.join("tiny.toml"), "n_layer = 1\nn_head = 2\nn_embd = 16\nvocab_size = 17\nn_positions = 16\n")
        .unwrap();
    let a = TrainArgs { data: Some(dir.join("data")), eval_every: 1, sample_tokens: 5, ..args(&dir) };
    assert_eq!(train(gpu, &a).unwrap(), None);
    let ckpt = dir.join("run/ckpt-00000002");
    assert_eq!(GptConfig::load(&ckpt.join("config.json")).unwrap().vocab_size, 300);
    for d in [&ckpt, &dir.join("run")] {
        assert_eq!(
            std::fs::read(d.join("tokenizer.json")).unwrap(),
            std::fs::read(dir.join("data/tokenizer.json")).unwrap(),
            "{} holds the data's tokenizer",
            d.display()
        );
    }
    assert_eq!(Tokenizer::for_dir(&ckpt).unwrap().vocab_size, 300);
    // val.bin was used: val lines are in the metrics.
    let metrics = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    assert!(metrics.contains("val_loss"), "{metrics}");
    // Initializing from that checkpoint with a bigger tokenizer is refused.
    let wide = TrainArgs { init: Some(ckpt.clone()), data: Some(dir.join("big")), out: dir.join("run2"), ..a.clone() };
    let mut big = prep.clone();
    big.out = dir.join("big");
    big.vocab_size = 400;
    prepare(&big).unwrap();
    let err = format!("{:#}", train(gpu, &wide).unwrap_err());
    assert!(err.contains("vocab_size 300") && err.contains("tokenizer.json"), "{err}");
}

#[test]
fn config_train_table_gives_defaults_that_flags_override() {
    use wgtrain::model::config::TrainDefaults;
    use wgtrain::train::defaults::{Settings, BUILT_IN};
    let dir = std::env::temp_dir().join(format!("wgtrain-train-table-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.toml");
    let model = "n_layer = 1\nn_head = 1\nn_embd = 8\nvocab_size = 256\nn_positions = 16\n";
    std::fs::write(&path, format!("{model}\n[train]\nbatch_size = 3\nsteps = 7\n")).unwrap();
    assert_eq!(GptConfig::load(&path).unwrap().n_embd, 8, "the model table still loads beside [train]");
    let table = TrainDefaults::load(&path).unwrap();
    let s = Settings::resolve(&TrainDefaults { steps: Some(2), ..Default::default() }, &table);
    assert_eq!((s.batch_size, s.steps, s.seq_len, s.lr), (3, 2, BUILT_IN.seq_len, BUILT_IN.lr));
    std::fs::write(&path, format!("{model}\n[train]\nstpes = 3\n")).unwrap();
    let e = TrainDefaults::load(&path).unwrap_err().to_string();
    assert!(e.contains("m.toml") && e.contains("stpes"), "{e}");
}

#[test]
fn bundled_default_runs_load() {
    use wgtrain::model::config::TrainDefaults;
    use wgtrain::train::defaults::{model_file, DEFAULT_CONFIG, GPU_DEFAULT_CONFIG};
    let cpu = TrainDefaults::load(&model_file(DEFAULT_CONFIG)).unwrap();
    assert_eq!((cpu.batch_size, cpu.seq_len, cpu.steps), (Some(16), Some(64), Some(420)));
    let gpu = model_file(GPU_DEFAULT_CONFIG);
    let c = GptConfig::load(&gpu).unwrap();
    assert_eq!((c.n_layer, c.n_head, c.n_embd, c.n_positions), (6, 6, 384, 256));
    assert_eq!(TrainDefaults::load(&gpu).unwrap().seq_len, Some(256));
}
