//! Fused optimizers against the CPU reference over several steps, with clipping on and off, split
//! into windows, against PyTorch's golden values, and through a save/load of their state.
//!
//! Tolerance: parameters, moments and gradients are O(1) and one step moves a parameter by
//! about lr; the GPU and the reference differ only in the rounding of sqrt, division and the
//! order of the norm sums, so |gpu − cpu| <= 2e-6 + 1e-5·|cpu| holds with room to spare.

use wgtrain::gpu::Recorder;
use wgtrain::optim::{
    OptimConfig, Optimizer, OptimizerKind, ParamArena, ParamTable, Schedule, ScheduleKind, StateError,
};
use wgtrain::reference::optim::RefOptim;
use wgtrain::reference::Rng;
use wgtrain::Gpu;

use crate::common::{assert_close, builds, gpu};

const ATOL: f32 = 2e-6;
const RTOL: f32 = 1e-5;

/// 35 tensors: sizes 1, 3 and 1000003 among 2-D weights and 1-D biases of awkward sizes.
fn awkward_table() -> ParamTable {
    let mut specs: Vec<(String, Vec<usize>)> =
        vec![("one".into(), vec![1]), ("three".into(), vec![3]), ("big".into(), vec![1000003])];
    for i in 0..20 {
        specs.push((format!("h.{i}.weight"), vec![7 * i + 1, i % 5 + 3]));
    }
    for i in 0..10 {
        specs.push((format!("h.{i}.bias"), vec![13 * i + 5]));
    }
    specs.push(("wte.weight".into(), vec![61, 67]));
    specs.push(("ln_f.weight".into(), vec![4097]));
    ParamTable::new(specs)
}

fn random_tensors(table: &ParamTable, rng: &mut Rng) -> Vec<Vec<f32>> {
    table.tensors.iter().map(|t| rng.vec(t.numel() as usize)).collect()
}

/// Runs `steps` steps on the GPU and on the reference from the same start, comparing the
/// parameters and the reported gradient norm after each.
fn check_steps(gpu: &Gpu, table: ParamTable, cfg: OptimConfig, steps: usize, binding_limit: Option<u64>, lr: f32) {
    let mut rng = Rng::new(42);
    let mut params = random_tensors(&table, &mut rng);
    let decay: Vec<bool> = table.tensors.iter().map(|t| t.decay).collect();
    let sizes: Vec<usize> = table.tensors.iter().map(|t| t.numel() as usize).collect();
    let arena = ParamArena::new(gpu, table.clone(), false).unwrap();
    gpu.write(&arena.params, 0, &table.pack(&params));
    let mut opt = Optimizer::new(gpu, &arena, cfg.clone(), binding_limit).unwrap();
    if binding_limit.is_some() {
        assert!(opt.windows() > 1, "the binding limit must split the arena");
    }
    let mut reference = RefOptim::new(cfg.clone(), &sizes);
    for step in 1..=steps {
        let grads = random_tensors(&table, &mut rng);
        gpu.write(&arena.grads, 0, &table.pack(&grads));
        let mut rec = Recorder::new(gpu);
        opt.record_step(gpu, &mut rec, lr, true);
        rec.submit().unwrap();
        opt.submitted();
        let want_norm = reference.step(&mut params, &grads, &decay, lr);
        let norm = opt.grad_norm(gpu).unwrap().expect("norm was requested");
        let tag = format!("{:?} clip={} step {step}", cfg.kind, cfg.grad_clip);
        assert!(((norm as f64 - want_norm) / want_norm).abs() < 1e-5, "{tag}: grad norm {norm} vs {want_norm}");
        let got = table.unpack(&gpu.read::<f32>(&arena.params, 0, table.len as usize).unwrap());
        for (i, t) in table.tensors.iter().enumerate() {
            assert_close(&format!("{tag} {}", t.name), &got[i], &params[i], ATOL, RTOL);
        }
    }
}

fn configs() -> Vec<OptimConfig> {
    let adamw = OptimConfig { weight_decay: 0.1, ..OptimConfig::adamw() };
    let lamb = OptimConfig { weight_decay: 0.01, ..OptimConfig::lamb() };
    let sgd = OptimConfig { weight_decay: 0.01, ..OptimConfig::sgd() };
    vec![adamw, lamb, sgd]
}

#[test]
fn fused_updates_match_reference_without_clipping() {
    for gpu in builds() {
        for cfg in configs() {
            check_steps(gpu, awkward_table(), cfg, 3, None, 1e-2);
        }
    }
}

#[test]
fn fused_updates_match_reference_with_clipping() {
    // The gradients' global norm is about 600, so a clip of 100 scales every step.
    for gpu in builds() {
        for cfg in configs() {
            check_steps(gpu, awkward_table(), OptimConfig { grad_clip: 100.0, ..cfg }, 3, None, 1e-2);
        }
    }
}

#[test]
fn fused_updates_split_into_windows_match_reference() {
    // A 256 KiB binding limit splits the arena into windows of a few chunks each.
    for gpu in builds() {
        let table = ParamTable::new((0..31).map(|i| (format!("t{i}"), vec![i * 97 + 1, 7])));
        for cfg in configs() {
            check_steps(gpu, table.clone(), OptimConfig { grad_clip: 10.0, ..cfg }, 2, Some(256 << 10), 1e-2);
        }
    }
}

#[test]
fn sgd_without_momentum_matches_reference() {
    for gpu in builds() {
        let cfg = OptimConfig { momentum: 0.0, weight_decay: 0.1, ..OptimConfig::sgd() };
        check_steps(gpu, awkward_table(), cfg, 2, None, 0.1);
    }
}

#[test]
fn weight_decay_only_on_tensors_of_two_or_more_dimensions() {
    let table = ParamTable::new([("w", vec![2, 3]), ("b", vec![3]), ("ln", vec![5]), ("e", vec![4, 1, 2])]);
    let decay: Vec<bool> = table.tensors.iter().map(|t| t.decay).collect();
    assert_eq!(decay, [true, false, false, true]);
    assert!(table.tensors.iter().all(|t| t.offset % 64 == 0));
}

#[test]
fn schedules_follow_their_formulas() {
    let cos = Schedule { kind: ScheduleKind::Cosine, lr_max: 1.0, warmup: 10, steps: 110, min_lr_frac: 0.1 };
    assert_eq!(cos.lr(0), 0.1);
    assert_eq!(cos.lr(9), 1.0);
    assert!((cos.lr(10) - 1.0).abs() < 1e-12);
    assert!((cos.lr(60) - 0.55).abs() < 1e-12, "halfway: lr_min + (lr_max − lr_min)/2");
    assert!((cos.lr(110) - 0.1).abs() < 1e-12);
    let lin = Schedule { kind: ScheduleKind::Linear, ..cos };
    assert!((lin.lr(35) - (0.1 + 0.75 * 0.9)).abs() < 1e-12);
    assert_eq!(Schedule::constant(3e-4).lr(1000), 3e-4);
    let warm = Schedule { kind: ScheduleKind::Constant, warmup: 4, ..cos };
    assert_eq!((warm.lr(1), warm.lr(4)), (0.5, 1.0));
}

#[test]
fn state_round_trip_resumes_bitwise() {
    let Some(gpu) = gpu() else { return };
    let table = ParamTable::new([("w", vec![33, 17]), ("b", vec![17])]);
    let dir = std::env::temp_dir().join(format!("wgtrain-optim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for cfg in configs() {
        let mut rng = Rng::new(3);
        let init = table.pack(&random_tensors(&table, &mut rng));
        let grads: Vec<Vec<f32>> = (0..3).map(|_| table.pack(&random_tensors(&table, &mut rng))).collect();
        let run = |opt: &mut Optimizer, arena: &ParamArena, g: &[f32]| {
            gpu.write(&arena.grads, 0, g);
            let mut rec = Recorder::new(gpu);
            opt.record_step(gpu, &mut rec, 1e-2, false);
            rec.submit().unwrap();
        };
        let a = ParamArena::new(gpu, table.clone(), false).unwrap();
        gpu.write(&a.params, 0, &init);
        let mut oa = Optimizer::new(gpu, &a, cfg.clone(), None).unwrap();
        run(&mut oa, &a, &grads[0]);
        run(&mut oa, &a, &grads[1]);
        let path = dir.join(format!("{}.safetensors", cfg.kind.name()));
        oa.save(gpu, &path).unwrap();
        // A second run resumes from the saved state and the first run's parameters.
        let b = ParamArena::new(gpu, table.clone(), false).unwrap();
        gpu.write(&b.params, 0, &gpu.read::<f32>(&a.params, 0, table.len as usize).unwrap());
        let mut ob = Optimizer::new(gpu, &b, cfg.clone(), None).unwrap();
        ob.load(gpu, &path).unwrap();
        assert_eq!(ob.step, 2);
        run(&mut oa, &a, &grads[2]);
        run(&mut ob, &b, &grads[2]);
        let pa: Vec<f32> = gpu.read(&a.params, 0, table.len as usize).unwrap();
        let pb: Vec<f32> = gpu.read(&b.params, 0, table.len as usize).unwrap();
        assert!(pa.iter().zip(&pb).all(|(x, y)| x.to_bits() == y.to_bits()), "{:?}: resumed step differs", cfg.kind);
    }
    // State of one optimizer does not load into another.
    let arena = ParamArena::new(gpu, table.clone(), false).unwrap();
    let mut sgd = Optimizer::new(gpu, &arena, OptimConfig::sgd(), None).unwrap();
    let err = sgd.load(gpu, &dir.join("lamb.safetensors")).unwrap_err();
    assert!(matches!(err, StateError::Mismatch { .. }), "{err}");
    let err = sgd.load(gpu, &dir.join("missing.safetensors")).unwrap_err();
    assert!(matches!(err, StateError::Io { .. }) && err.to_string().contains("missing.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn optimizer_kind_names_are_stable() {
    assert_eq!(OptimizerKind::Adamw.name(), "adamw");
    assert_eq!(OptimizerKind::Lamb.name(), "lamb");
    assert_eq!(OptimizerKind::Sgd.name(), "sgd");
}

/// PyTorch's results (tests/fixtures/optim_golden.json, from scripts/make_optim_fixtures.py):
/// torch.optim.AdamW and SGD, LAMB written in torch ops, with and without clip_grad_norm_.
/// Tolerance as above; torch's lerp and addcdiv round in a slightly different order.
#[test]
fn fused_updates_match_pytorch_golden_values() {
    for gpu in builds() {
        let text = include_str!("fixtures/optim_golden.json");
        let golden: serde_json::Value = serde_json::from_str(text).unwrap();
        let floats = |v: &serde_json::Value| -> Vec<f32> {
            v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
        };
        let cases = golden["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 6);
        for case in cases {
            let cfg: OptimConfig = serde_json::from_value(case["config"].clone()).unwrap();
            let tensors = case["tensors"].as_array().unwrap();
            let table = ParamTable::new(tensors.iter().map(|t| {
                let shape = t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
                (t["name"].as_str().unwrap().to_string(), shape)
            }));
            let init: Vec<Vec<f32>> = tensors.iter().map(|t| floats(&t["init"])).collect();
            let arena = ParamArena::new(gpu, table.clone(), false).unwrap();
            gpu.write(&arena.params, 0, &table.pack(&init));
            let mut opt = Optimizer::new(gpu, &arena, cfg.clone(), None).unwrap();
            let lrs = floats(&case["lrs"]);
            for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
                let grads: Vec<Vec<f32>> = step["grads"].as_array().unwrap().iter().map(floats).collect();
                gpu.write(&arena.grads, 0, &table.pack(&grads));
                let mut rec = Recorder::new(gpu);
                opt.record_step(gpu, &mut rec, lrs[i], true);
                rec.submit().unwrap();
                opt.submitted();
                let tag = format!("{:?} clip={} step {}", cfg.kind, cfg.grad_clip, i + 1);
                let norm = opt.grad_norm(gpu).unwrap().unwrap() as f64;
                let want = step["grad_norm"].as_f64().unwrap();
                assert!(((norm - want) / want).abs() < 1e-5, "{tag}: grad norm {norm} vs torch {want}");
                let got = table.unpack(&gpu.read::<f32>(&arena.params, 0, table.len as usize).unwrap());
                let want: Vec<Vec<f32>> = step["params"].as_array().unwrap().iter().map(floats).collect();
                for (j, t) in table.tensors.iter().enumerate() {
                    assert_close(&format!("{tag} {}", t.name), &got[j], &want[j], ATOL, RTOL);
                }
            }
        }
    }
}

/// Regression: the optimizer once let its tensor-range and partial-sum buffers drop back into
/// the pool while its bind groups still used them; the next buffers of that size went to other
/// owners (seen on an H200 as corrupted LAMB steps and bias gradients in parallel tests).
#[test]
fn optimizer_buffers_stay_out_of_the_pool_while_bound() {
    let Some(gpu) = gpu() else { return };
    let table = ParamTable::new([("w", vec![5, 7]), ("b", vec![7]), ("ln", vec![3])]);
    let cfg = OptimConfig { grad_clip: 1.0, weight_decay: 0.01, ..OptimConfig::lamb() };
    let mut rng = Rng::new(9);
    let mut params = random_tensors(&table, &mut rng);
    let grads = random_tensors(&table, &mut rng);
    let arena = ParamArena::new(gpu, table.clone(), false).unwrap();
    gpu.write(&arena.params, 0, &table.pack(&params));
    gpu.write(&arena.grads, 0, &table.pack(&grads));
    let mut opt = Optimizer::new(gpu, &arena, cfg.clone(), None).unwrap();
    // Take the small storage buffers the pool has free and fill them with NaN: had the
    // optimizer given any of its own back, this would overwrite it.
    let squatters: Vec<_> = (0..16)
        .map(|_| gpu.pool.storage_from(&gpu.queue, wgtrain::gpu::Category::Scratch, &[f32::NAN; 64]).unwrap())
        .collect();
    let mut rec = Recorder::new(gpu);
    opt.record_step(gpu, &mut rec, 1e-2, false);
    rec.submit().unwrap();
    let decay: Vec<bool> = table.tensors.iter().map(|t| t.decay).collect();
    let sizes: Vec<usize> = table.tensors.iter().map(|t| t.numel() as usize).collect();
    RefOptim::new(cfg, &sizes).step(&mut params, &grads, &decay, 1e-2);
    let got = table.unpack(&gpu.read::<f32>(&arena.params, 0, table.len as usize).unwrap());
    for (i, t) in table.tensors.iter().enumerate() {
        assert_close(&format!("lamb {}", t.name), &got[i], &params[i], ATOL, RTOL);
    }
    drop(squatters);
}

/// The norm can be asked for on every step and read only now and then: an unread norm gives
/// its readback slot up instead of blocking the copy two steps later.
#[test]
fn grad_norm_requested_every_step_reads_the_latest() {
    let Some(gpu) = gpu() else { return };
    let table = ParamTable::new([("w", vec![9, 11]), ("b", vec![11])]);
    let arena = ParamArena::new(gpu, table.clone(), false).unwrap();
    let mut opt = Optimizer::new(gpu, &arena, OptimConfig::adamw(), None).unwrap();
    let mut rng = Rng::new(11);
    let mut want = 0.0;
    for _ in 0..5 {
        let grads = random_tensors(&table, &mut rng);
        want = wgtrain::reference::optim::global_norm(&grads);
        gpu.write(&arena.grads, 0, &table.pack(&grads));
        let mut rec = Recorder::new(gpu);
        opt.record_step(gpu, &mut rec, 1e-3, true);
        rec.submit().unwrap();
        opt.submitted();
    }
    let norm = opt.grad_norm(gpu).unwrap().expect("requested") as f64;
    assert!(((norm - want) / want).abs() < 1e-5, "{norm} vs {want}");
    assert_eq!(opt.grad_norm(gpu).unwrap(), None, "each norm is read once");
}

/// Padding after a tensor never reaches a norm, whatever it holds.
#[test]
fn padding_garbage_stays_out_of_the_norms() {
    let Some(gpu) = gpu() else { return };
    let table = ParamTable::new([("w", vec![3, 5]), ("b", vec![7])]); // 15 and 7: both end mid-vec4
    let cfg = OptimConfig { grad_clip: 1.0, ..OptimConfig::lamb() };
    let mut rng = Rng::new(12);
    let mut params = random_tensors(&table, &mut rng);
    let grads = random_tensors(&table, &mut rng);
    let arena = ParamArena::new(gpu, table.clone(), false).unwrap();
    let fill = |v: &[Vec<f32>]| {
        let mut flat = vec![1e30f32; table.len as usize];
        for (t, x) in table.tensors.iter().zip(v) {
            flat[t.offset as usize..][..x.len()].copy_from_slice(x);
        }
        flat
    };
    gpu.write(&arena.params, 0, &fill(&params));
    gpu.write(&arena.grads, 0, &fill(&grads));
    let mut opt = Optimizer::new(gpu, &arena, cfg.clone(), None).unwrap();
    let mut rec = Recorder::new(gpu);
    opt.record_step(gpu, &mut rec, 1e-2, true);
    rec.submit().unwrap();
    opt.submitted();
    let decay: Vec<bool> = table.tensors.iter().map(|t| t.decay).collect();
    let want_norm = RefOptim::new(cfg, &[15, 7]).step(&mut params, &grads, &decay, 1e-2);
    let norm = opt.grad_norm(gpu).unwrap().unwrap() as f64;
    assert!(((norm - want_norm) / want_norm).abs() < 1e-5, "{norm} vs {want_norm}");
    let got = table.unpack(&gpu.read::<f32>(&arena.params, 0, table.len as usize).unwrap());
    for (i, t) in table.tensors.iter().enumerate() {
        assert_close(&format!("lamb {}", t.name), &got[i], &params[i], ATOL, RTOL);
    }
}

/// The numerical guard: a NaN or an infinity in any gradient leaves every parameter as it was,
/// the norm reads back non-finite, and the next finite step updates as usual.
#[test]
fn non_finite_gradients_skip_the_update() {
    let Some(gpu) = gpu() else { return };
    let table = ParamTable::new([("w", vec![9, 11]), ("b", vec![11])]);
    for cfg in configs() {
        for bad in [f32::NAN, f32::INFINITY] {
            let mut rng = Rng::new(21);
            let arena = ParamArena::new(gpu, table.clone(), false).unwrap();
            gpu.write(&arena.params, 0, &table.pack(&random_tensors(&table, &mut rng)));
            let mut opt = Optimizer::new(gpu, &arena, cfg.clone(), None).unwrap();
            let step = |grads: &[f32], opt: &mut Optimizer| {
                gpu.write(&arena.grads, 0, grads);
                let mut rec = Recorder::new(gpu);
                opt.record_step(gpu, &mut rec, 1e-2, true);
                rec.submit().unwrap();
                opt.submitted();
                let norm = opt.grad_norm(gpu).unwrap().unwrap();
                (norm, gpu.read::<f32>(&arena.params, 0, table.len as usize).unwrap())
            };
            let good = table.pack(&random_tensors(&table, &mut rng));
            let (_, p1) = step(&good, &mut opt);
            let mut poisoned = table.pack(&random_tensors(&table, &mut rng));
            poisoned[table.tensors[1].offset as usize + 3] = bad;
            let (norm, p2) = step(&poisoned, &mut opt);
            assert!(!norm.is_finite(), "{:?}: norm {norm}", cfg.kind);
            assert!(
                p1.iter().zip(&p2).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{:?} {bad}: the update was not skipped",
                cfg.kind
            );
            let (norm, p3) = step(&good, &mut opt);
            assert!(norm.is_finite() && p3 != p2, "{:?}: the step after a skip updates", cfg.kind);
        }
    }
}
