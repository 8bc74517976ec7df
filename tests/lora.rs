//! LoRA's low-rank path (model::lora_path) against the plain-loop reference at awkward sizes and
//! ranks 1, 3 and 8: the forward adds s·(x·Aᵀ)·Bᵀ to the base output and keeps h = s·x·Aᵀ,
//! the backward adds to dA, dB and the input gradient. The scratch h and dh start as NaN.

use wgtrain::gpu::{Category, GpuBuffer, Recorder};
use wgtrain::kernels::View;
use wgtrain::model::lora_path::{self as lora, Adapter};
use wgtrain::reference::dropout::Key;
use wgtrain::reference::{lora as cpu, Rng};
use wgtrain::tune::matmul::{Dims, Matmul};
use wgtrain::Gpu;

use crate::common::{assert_close, builds};

fn upload(gpu: &Gpu, data: &[f32]) -> GpuBuffer {
    gpu.pool.storage_from(&gpu.queue, Category::Scratch, data).unwrap()
}

/// The path at (M, N, K, rank r), with dropout of probability p when given (a key of its own).
fn check(gpu: &Gpu, (m, n, k, r): (usize, usize, usize, usize), seed: u64, p: Option<f64>) {
    let mut rng = Rng::new(seed);
    let (x, a, b) = (rng.vec(m * k), rng.vec(r * k), rng.vec(n * r));
    let (y0, dy, dx0, da0, db0) = (rng.vec(m * n), rng.vec(m * n), rng.vec(m * k), rng.vec(r * k), rng.vec(n * r));
    let s = 8.0 / r as f32;
    let bufs: Vec<GpuBuffer> = [&x, &a, &b, &y0, &dy, &dx0, &da0, &db0].iter().map(|v| upload(gpu, v)).collect();
    let nan = vec![f32::NAN; (m * r).next_multiple_of(4)];
    let (h, dh) = (upload(gpu, &nan), upload(gpu, &nan));
    let v = |i: usize| View::from(&bufs[i]);
    let key = p.map(|p| Key::new(seed as u32 * 7919, p));
    let key_buf = upload(gpu, bytemuck::cast_slice::<u32, f32>(&key.unwrap_or(Key::OFF).words()));
    let xd = upload(gpu, &vec![f32::NAN; (m * k).next_multiple_of(4)]);
    let dropout = key.map(|_| lora::Dropout { key: &key_buf, salt: 5, xd: View::from(&xd) });
    let ad = Adapter {
        a: v(1),
        b: v(2),
        da: v(6),
        db: v(7),
        h: View::from(&h),
        dh: View::from(&dh),
        rank: r as u32,
        scale: s,
        dropout,
    };
    let (mm, d) = (Matmul::new(gpu), Dims::linear(m as u32, n as u32, k as u32));
    let mut ops = lora::forward(&mm, gpu, v(3), v(0), &ad, d).unwrap();
    ops.extend(lora::backward(&mm, gpu, v(5), [v(4), v(0)], &ad, d).unwrap());
    let mut rec = Recorder::new(gpu);
    ops.iter().for_each(|op| rec.dispatch(op));
    rec.submit().unwrap();

    let mask: Option<Vec<f32>> = key.map(|key| (0..m * k).map(|e| key.factor(5, e)).collect());
    let xm: Vec<f32> = match &mask {
        Some(f) => x.iter().zip(f).map(|(x, f)| x * f).collect(),
        None => x.clone(),
    };
    let mut y = y0.clone();
    let h_want = cpu::forward(&mut y, &xm, &a, &b, (m, n, k, r), s);
    let (mut dx, mut da, mut db) = (dx0.clone(), da0.clone(), db0.clone());
    cpu::backward((&mut dx, &mut da, &mut db), &dy, (&x, mask.as_deref()), (&a, &b, &h_want), (m, n, k, r), s);
    if let (Some(f), Some(p)) = (&mask, p) {
        let dropped = f.iter().filter(|&&f| f == 0.0).count() as f64 / f.len() as f64;
        assert!((dropped - p).abs() < 0.1, "dropped {dropped} of the inputs at p {p}");
    }
    let read = |buf: &GpuBuffer, len| gpu.read::<f32>(buf, 0, len).unwrap();
    let what = |t: &str| format!("{t} (M {m} N {n} K {k} rank {r} dropout {p:?}, {})", gpu.checked_shaders);
    assert_close(&what("h"), &read(&h, m * r), &h_want, 1e-5, 1e-5);
    assert_close(&what("y"), &read(&bufs[3], m * n), &y, 1e-5, 1e-5);
    assert_close(&what("dB"), &read(&bufs[7], n * r), &db, 1e-4, 1e-5);
    assert_close(&what("dA"), &read(&bufs[6], r * k), &da, 1e-4, 1e-5);
    assert_close(&what("dx"), &read(&bufs[5], m * k), &dx, 1e-4, 1e-5);
}

#[test]
fn lora_path_matches_the_reference_at_ranks_1_3_8() {
    for gpu in builds() {
        for (i, r) in [1, 3, 8].into_iter().enumerate() {
            check(gpu, (37, 23, 29, r), 40 + i as u64, None);
        }
        check(gpu, (1, 7, 5, 3), 50, None);
        check(gpu, (37, 23, 29, 3), 60, Some(0.3));
        check(gpu, (5, 7, 29, 1), 61, Some(0.1));
    }
}

/// A LoRA model over a fixture base with peft's adapters (tests/fixtures/lora_*, from
/// scripts/make_lora_fixture.py) gives peft's logits, loss, adapter gradients and the losses
/// of 5 AdamW steps over the adapters; the base stays bit for bit what it was.
fn matches_peft(gpu: &Gpu, base: &str, name: &str) {
    use wgtrain::model::lora::{load_peft, peft_name, LoraConfig};
    use wgtrain::model::{checkpoint, Gpt, GptConfig, Precision};
    use wgtrain::optim::{OptimConfig, Optimizer};
    let fix = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fix.join(format!("{name}.json"))).unwrap()).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    let ints = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    };
    let config = GptConfig::load(&fix.join(base).join("config.json")).unwrap();
    let targets = fx["modules"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    let lora = LoraConfig {
        rank: fx["rank"].as_u64().unwrap() as usize,
        alpha: fx["alpha"].as_f64().unwrap(),
        targets,
        dropout: 0.0,
    };
    let (b, t) = (fx["B"].as_u64().unwrap() as usize, fx["T"].as_u64().unwrap() as usize);
    let gpt = Gpt::with_lora(gpu, (config.clone(), None), (b, t, 1), Precision::F32, lora, 1).unwrap();
    let base_values = checkpoint::load_hf(&fix.join(base).join("model.safetensors"), &config).unwrap();
    gpt.write_base(gpu, &base_values).unwrap();
    let adapters = load_peft(&fix.join(name).join("adapter_model.safetensors"), &config, &gpt.arena.table).unwrap();
    gpt.write_params(gpu, &adapters);
    gpt.upload_batch(gpu, 0, &ints(&fx["inputs"]), &ints(&fx["targets"]));
    let mut rec = Recorder::new(gpu);
    gpt.record_eval(&mut rec);
    rec.submit().unwrap();
    assert_close(&format!("{name} logits"), &gpt.read_logits(gpu).unwrap(), &floats(&fx["logits"]), 2e-6, 1e-5);

    let mut rec = Recorder::new(gpu);
    gpt.record_forward_backward(&mut rec);
    rec.submit().unwrap();
    let want_loss = fx["loss"].as_f64().unwrap() as f32;
    let loss = gpt.read_loss(gpu).unwrap();
    assert!((loss - want_loss).abs() < 1e-5, "{name} loss {loss} vs peft's {want_loss}");
    let grads = gpt.read_grads(gpu).unwrap();
    assert_eq!(grads.len(), fx["grads"].as_object().unwrap().len(), "{name}: adapter tensors");
    for (tensor, g) in gpt.arena.table.tensors.iter().zip(&grads) {
        let key = peft_name(&config, &tensor.name);
        // dA goes through two products (dy·B, then with x) scaled by α/r: a small entry that
        // is a difference of larger ones can be 1e-7 off.
        assert_close(&format!("{name} grad {key}"), g, &floats(&fx["grads"][&key]), 5e-7, 1e-4);
    }

    let cfg = OptimConfig { weight_decay: fx["weight_decay"].as_f64().unwrap() as f32, ..OptimConfig::adamw() };
    let mut opt = Optimizer::new(gpu, &gpt.arena, cfg, None).unwrap();
    for (i, want) in floats(&fx["losses"]).iter().enumerate() {
        let mut rec = Recorder::new(gpu);
        gpt.record_forward_backward(&mut rec);
        opt.record_step(gpu, &mut rec, fx["lr"].as_f64().unwrap() as f32, false);
        rec.submit().unwrap();
        let loss = gpt.read_loss(gpu).unwrap();
        assert!((loss - want).abs() < 1e-5, "{name} step {i}: loss {loss} vs peft's {want}");
    }
    assert!(gpt.read_base(gpu).unwrap() == base_values, "{name}: the frozen base changed");

    // The forward-only model of eval and sample, from the adapter directory.
    let eval = Gpt::with_adapter(gpu, (config.clone(), None), (b, t), Precision::F32, &fix.join(name)).unwrap();
    eval.write_base(gpu, &base_values).unwrap();
    eval.upload_batch(gpu, 0, &ints(&fx["inputs"]), &ints(&fx["targets"]));
    let mut rec = Recorder::new(gpu);
    eval.record_eval(&mut rec);
    rec.submit().unwrap();
    assert_close(&format!("{name} eval logits"), &eval.read_logits(gpu).unwrap(), &floats(&fx["logits"]), 2e-6, 1e-5);

    // `wgtrain merge`: W + s·B·A gives the unmerged model's logits.
    let out = std::env::temp_dir().join(format!("wgtrain-lora-merge-{name}-{}", std::process::id()));
    let layers = wgtrain::compress::merge_adapter(&fix.join(base), &fix.join(name), &out).unwrap();
    assert_eq!(layers, gpt.arena.table.tensors.len() / 2);
    let merged = Gpt::new(gpu, config.clone(), b, t, 1).unwrap();
    merged.write_params(gpu, &checkpoint::load_hf(&out.join("model.safetensors"), &config).unwrap());
    merged.upload_batch(gpu, 0, &ints(&fx["inputs"]), &ints(&fx["targets"]));
    let mut rec = Recorder::new(gpu);
    merged.record_eval(&mut rec);
    rec.submit().unwrap();
    assert_close(
        &format!("{name} merged logits"),
        &merged.read_logits(gpu).unwrap(),
        &floats(&fx["logits"]),
        1e-5,
        1e-4,
    );
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn lora_on_gpt2_matches_peft() {
    let Some(gpu) = crate::common::gpu() else { return };
    matches_peft(gpu, "gpt2_tiny", "lora_gpt2");
}

#[test]
fn lora_on_llama_matches_peft() {
    let Some(gpu) = crate::common::gpu() else { return };
    matches_peft(gpu, "llama_tiny_untied", "lora_llama");
}

/// `train --init BASE --lora-rank R` trains only adapters: the run and its checkpoints hold
/// peft's adapter files and no model.safetensors, the adapters moved (B from zero), a run
/// stopped at step 4 and resumed gives the same losses bit for bit, --lora-adapter continues from
/// an adapter, and the flags are checked.
#[test]
fn train_with_lora_saves_adapters_and_resumes_bitwise() {
    use wgtrain::model::lora::{load_peft, read_peft_config, LoraConfig};
    use wgtrain::model::GptConfig;
    use wgtrain::train::{resume, train, LoraFlags, TrainArgs};
    let Some(gpu) = crate::common::gpu() else { return };
    let dir = std::env::temp_dir().join(format!("wgtrain-lora-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2_tiny");
    let tokens: Vec<u32> = (0..3000).map(|i| ((i * 11 + i / 5) % 67) as u32).collect();
    wgtrain::data::write_tokens(&dir.join("train.bin"), &tokens).unwrap();
    // With dropout: its masks, drawn from the seed and the step, must come back on resume.
    let lora = LoraFlags {
        lora_rank: Some(3),
        lora_targets: Some("c_attn,mlp.c_proj".into()),
        lora_dropout: Some(0.1),
        ..Default::default()
    };
    let args = TrainArgs {
        config: None,
        init: Some(base.clone()),
        steps: 8,
        lr: 1e-2,
        save_every: 4,
        lora: lora.clone(),
        out: dir.join("whole"),
        ..crate::train::args(&dir)
    };
    assert_eq!(train(gpu, &args).unwrap(), None);
    let out = dir.join("whole");
    assert!(out.join("adapter_model.safetensors").is_file() && !out.join("model.safetensors").exists());
    assert!(out.join("ckpt-00000004/adapter_model.safetensors").is_file());
    let cfg = read_peft_config(&out).unwrap();
    assert_eq!((cfg.rank, cfg.alpha, cfg.targets.clone()), (3, 8.0, vec!["c_attn".to_string(), "mlp.c_proj".into()]));
    assert_eq!(cfg.dropout, 0.1);
    let config = GptConfig::load(&base.join("config.json")).unwrap();
    let table = wgtrain::optim::ParamTable::new(wgtrain::model::lora::adapter_specs(&config, &cfg).unwrap());
    assert_eq!(table.tensors.len(), 2 * 2 * 2, "A and B of two modules in two layers");
    let trained = load_peft(&out.join("adapter_model.safetensors"), &config, &table).unwrap();
    for (t, v) in table.tensors.iter().zip(&trained) {
        assert!(v.iter().any(|&x| x != 0.0), "{} is all zero", t.name);
    }

    // Resume from step 4: the same losses for steps 4..7.
    let cut = dir.join("cut");
    std::fs::create_dir_all(cut.join("ckpt-00000004")).unwrap();
    std::fs::copy(out.join("metrics.jsonl"), cut.join("metrics.jsonl")).unwrap();
    for f in ["adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors", "state.json"] {
        std::fs::copy(out.join("ckpt-00000004").join(f), cut.join("ckpt-00000004").join(f)).unwrap();
    }
    assert_eq!(resume(gpu, &cut).unwrap(), None);
    let (whole, resumed) =
        (crate::train::losses(&out.join("metrics.jsonl")), crate::train::losses(&cut.join("metrics.jsonl")));
    assert_eq!(whole.len(), 8);
    for (a, b) in whole.iter().zip(&resumed) {
        assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()), "step {}: {} vs resumed {}", a.0, a.1, b.1);
    }

    // --lora-adapter continues from the trained adapter: its first loss is below the base's.
    let more = TrainArgs {
        steps: 1,
        lora: LoraFlags { lora_adapter: Some(out.clone()), ..Default::default() },
        out: dir.join("more"),
        ..args.clone()
    };
    assert_eq!(train(gpu, &more).unwrap(), None);
    let first = crate::train::losses(&dir.join("more/metrics.jsonl"))[0].1;
    assert!(first < whole[0].1, "continued from the adapter: {first} vs the base's {}", whole[0].1);

    let refused = |a: TrainArgs| train(gpu, &a).unwrap_err().to_string();
    let no_init = TrainArgs { init: None, config: Some(dir.join("tiny.toml")), out: dir.join("x"), ..args.clone() };
    std::fs::write(dir.join("tiny.toml"), "n_layer = 1\nn_head = 2\nn_embd = 16\nvocab_size = 67\nn_positions = 16\n")
        .unwrap();
    assert!(refused(no_init).contains("--init"));
    let bad = LoraFlags { lora_rank: Some(2), lora_targets: Some("q_proj".into()), ..Default::default() };
    let e = refused(TrainArgs { lora: bad, out: dir.join("y"), ..args.clone() });
    assert!(e.contains("q_proj matches no linear layer") && e.contains("c_attn"), "{e}");
    let both = LoraFlags { lora_rank: Some(2), lora_adapter: Some(out.clone()), ..Default::default() };
    assert!(
        refused(TrainArgs { lora: both, out: dir.join("z"), ..args.clone() }).contains("drop the other --lora-* flags")
    );
    let _ = LoraConfig::default_targets(&config);
    std::fs::remove_dir_all(&dir).ok();
}

/// Adapters that compute more than plain LoRA (DoRA, rsLoRA, per-layer patterns, trained
/// biases, saved modules, a regex of targets) or have no rank are refused, named; so are empty
/// targets.
#[test]
fn adapter_configs_beyond_plain_lora_are_refused() {
    use wgtrain::model::lora::{read_peft_config, LoraConfig};
    let fix = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fix.join("lora_gpt2/adapter_config.json")).unwrap()).unwrap();
    let dir = std::env::temp_dir().join(format!("wgtrain-lora-configs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let read = |key: &str, value: serde_json::Value| {
        let mut v = good.clone();
        v[key] = value;
        std::fs::write(dir.join("adapter_config.json"), v.to_string()).unwrap();
        read_peft_config(&dir)
    };
    assert_eq!(read("r", 3.into()).unwrap().rank, 3);
    for (key, value, named) in [
        ("use_dora", serde_json::json!(true), "use_dora"),
        ("use_rslora", serde_json::json!(true), "use_rslora"),
        ("alpha_pattern", serde_json::json!({"c_attn": 4}), "alpha_pattern"),
        ("bias", serde_json::json!("lora_only"), "bias"),
        ("modules_to_save", serde_json::json!(["lm_head"]), "modules_to_save"),
        ("target_modules", serde_json::json!(".*attn.*"), "regular expression"),
        ("r", serde_json::json!(0), "positive r"),
    ] {
        let e = read(key, value).unwrap_err();
        assert!(e.contains(named), "{key}: {e}");
    }
    let config = wgtrain::model::GptConfig::load(&fix.join("gpt2_tiny/config.json")).unwrap();
    let none = LoraConfig { rank: 2, alpha: 8.0, targets: Vec::new(), dropout: 0.0 };
    assert!(none.targeted(&config).unwrap_err().contains("at least one"));
    std::fs::remove_dir_all(&dir).ok();
}

/// With dropout the training forward masks the adapters' inputs, evaluation does not: the
/// same adapters give a dropout model and a plain one the same logits, bit for bit, and other
/// training losses; a draw repeats its loss, another draw gives another.
#[test]
fn lora_dropout_masks_training_but_not_evaluation() {
    use wgtrain::model::lora::LoraConfig;
    use wgtrain::model::{checkpoint, Gpt, GptConfig, Precision};
    let Some(gpu) = crate::common::gpu() else { return };
    let fix = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2_tiny");
    let config = GptConfig::load(&fix.join("config.json")).unwrap();
    let base = checkpoint::load_hf(&fix.join("model.safetensors"), &config).unwrap();
    let (b, t) = (2, 9);
    let models = [0.5, 0.0].map(|dropout| {
        let lora = LoraConfig { rank: 3, alpha: 8.0, targets: vec!["all-linear".into()], dropout };
        let gpt = Gpt::with_lora(gpu, (config.clone(), None), (b, t, 1), Precision::F32, lora, 3).unwrap();
        gpt.write_base(gpu, &base).unwrap();
        let mut rng = Rng::new(4);
        gpt.write_params(gpu, &gpt.arena.table.tensors.iter().map(|s| rng.vec(s.numel() as usize)).collect::<Vec<_>>());
        let tokens: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 13 + 2) % 67).collect();
        gpt.upload_batch(gpu, 0, &tokens, &tokens.iter().map(|x| (x + 1) % 67).collect::<Vec<_>>());
        gpt
    });
    let run = |gpt: &Gpt, train: bool| {
        let mut rec = Recorder::new(gpu);
        if train {
            gpt.record_forward_backward(&mut rec);
        } else {
            gpt.record_eval(&mut rec);
        }
        rec.submit().unwrap();
        (gpt.read_loss(gpu).unwrap(), gpt.read_logits(gpu).unwrap())
    };
    let [dropped, plain] = &models;
    assert!(run(dropped, false).1 == run(plain, false).1, "evaluation with dropout differs from without");
    let (draw1, again, base_loss) = (run(dropped, true).0, run(dropped, true).0, run(plain, true).0);
    assert_eq!(draw1.to_bits(), again.to_bits(), "one draw, two losses");
    assert!(draw1 != base_loss, "dropout 0.5 left the training loss at {base_loss}");
    dropped.seed_dropout(gpu, [1, 0, 0]);
    let draw2 = run(dropped, true).0;
    assert!(draw2 != draw1 && draw2.is_finite(), "a new draw gave the same loss {draw1}");
}
