//! Knowledge distillation: the fused KD kernel against PyTorch (tests/fixtures/kd_golden.json,
//! from scripts/make_kd_fixture.py), its limits (W = 0 is the classifier, a teacher equal to
//! the student adds nothing), and `train --teacher` end to end.

use wgtrain::gpu::{Category, Recorder};
use wgtrain::kernels::distill::{forward_backward_within, DistillIo, Kd};
use wgtrain::kernels::{classifier, View};
use wgtrain::model::{Gpt, GptConfig};
use wgtrain::Gpu;

use crate::common::{assert_close, builds, gpu};

/// Pads past V, which the kernel must neither read nor leave unwritten.
const PAD: usize = 3;

struct Out {
    loss: Vec<f32>,
    ce: Vec<f32>,
    kd: Vec<f32>,
    grad: Vec<f32>,
}

/// The kernel on (n, v) student and teacher logits: the losses and parts start at 0.25 (the
/// kernel adds to them), the pads at NaN.
fn run_kd(gpu: &Gpu, nv: (usize, usize), z: &[f32], u: &[f32], y: &[u32], kd: Kd) -> Out {
    run_kd_within(gpu, nv, z, u, y, kd, gpu.max_binding())
}

/// `run_kd` in windows of rows whose logits fit `limit` bytes.
fn run_kd_within(gpu: &Gpu, (n, v): (usize, usize), z: &[f32], u: &[f32], y: &[u32], kd: Kd, limit: u64) -> Out {
    let vp = v + PAD;
    let pad = |x: &[f32]| -> Vec<f32> { x.chunks(v).flat_map(|r| r.iter().copied().chain([f32::NAN; PAD])).collect() };
    let store = |x: &[f32]| gpu.pool.storage_from(&gpu.queue, Category::Scratch, x).unwrap();
    let (logits, teacher) = (store(&pad(z)), store(&pad(u)));
    let (losses, parts) = (store(&vec![0.25; n]), store(&vec![0.25; 2 * n]));
    let targets = gpu.pool.storage_from(&gpu.queue, Category::Scratch, y).unwrap();
    let io = DistillIo {
        logits: View::from(&logits),
        teacher: View::from(&teacher),
        losses: View::from(&losses),
        parts: View::from(&parts),
        targets: &targets,
        scale: None,
    };
    let shape = (n as u32, v as u32, vp as u32);
    let ops = forward_backward_within(gpu, &io, shape, kd, Some(1.0 / n as f32), limit).unwrap();
    let mut rec = Recorder::new(gpu);
    ops.iter().for_each(|d| rec.dispatch(d));
    rec.submit().unwrap();
    let less = |x: Vec<f32>| x.into_iter().map(|a| a - 0.25).collect::<Vec<f32>>();
    let parts = less(gpu.read(&parts, 0, 2 * n).unwrap());
    let g: Vec<f32> = gpu.read(&logits, 0, n * vp).unwrap();
    assert!(g.chunks(vp).all(|r| r[v..].iter().all(|&x| x == 0.0)), "the pads' gradient is 0");
    Out {
        loss: less(gpu.read(&losses, 0, n).unwrap()),
        ce: parts[..n].to_vec(),
        kd: parts[n..].to_vec(),
        grad: g.chunks(vp).flat_map(|r| r[..v].to_vec()).collect(),
    }
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn the_kd_loss_and_its_gradient_match_pytorch() {
    let text = std::fs::read_to_string("tests/fixtures/kd_golden.json").unwrap();
    let f: serde_json::Value = serde_json::from_str(&text).unwrap();
    let (n, v) = (f["n"].as_u64().unwrap() as usize, f["v"].as_u64().unwrap() as usize);
    let (z, u) = (floats(&f["student"]), floats(&f["teacher"]));
    let y: Vec<u32> = f["targets"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    for gpu in builds() {
        for c in f["cases"].as_array().unwrap() {
            let kd = Kd {
                temperature: c["temperature"].as_f64().unwrap() as f32,
                weight: c["weight"].as_f64().unwrap() as f32,
            };
            let o = run_kd(gpu, (n, v), &z, &u, &y, kd);
            let what = format!("{kd:?} ({})", gpu.checked_shaders);
            assert_close(&format!("loss {what}"), &o.loss, &floats(&c["loss"]), 2e-5, 2e-5);
            assert_close(&format!("ce {what}"), &o.ce, &floats(&c["ce"]), 2e-5, 2e-5);
            assert_close(&format!("kd {what}"), &o.kd, &floats(&c["kd"]), 2e-5, 2e-5);
            assert_close(&format!("grad {what}"), &o.grad, &floats(&c["grad"]), 1e-6, 1e-4);
        }
    }
}

/// At W = 0 the objective and gradient are the classifier's; with the teacher equal to the
/// student the KD term is 0, and at W = 1 so is the gradient.
#[test]
fn at_w0_it_is_the_cross_entropy_and_a_copy_of_the_student_teaches_nothing() {
    let (n, v) = (5, 301);
    let mut rng = wgtrain::reference::Rng::new(9);
    let z: Vec<f32> = (0..n * v).map(|_| rng.uniform() * 8.0 - 4.0).collect();
    let u: Vec<f32> = (0..n * v).map(|_| rng.uniform() * 8.0 - 4.0).collect();
    let y: Vec<u32> = (0..n).map(|i| (i * 67 % v) as u32).collect();
    for gpu in builds() {
        let o = run_kd(gpu, (n, v), &z, &u, &y, Kd { temperature: 2.0, weight: 0.0 });
        assert_close("W=0 loss is ce", &o.loss, &o.ce, 0.0, 0.0);
        // The classifier on the same rows.
        let logits = gpu.pool.storage_from(&gpu.queue, Category::Scratch, &z).unwrap();
        let losses = gpu.pool.storage_from(&gpu.queue, Category::Scratch, &vec![0.0f32; n]).unwrap();
        let targets = gpu.pool.storage_from(&gpu.queue, Category::Scratch, &y).unwrap();
        let (nu, vu) = (n as u32, v as u32);
        let rows = classifier::Rows {
            logits: View::from(&logits),
            losses: View::from(&losses),
            targets: View::from(&targets),
            n: nu,
            v: vu,
            vp: vu,
            norm: None,
        };
        let ops = classifier::forward_backward(gpu, rows, Some(1.0 / n as f32), None).unwrap();
        let mut rec = Recorder::new(gpu);
        ops.iter().for_each(|d| rec.dispatch(d));
        rec.submit().unwrap();
        assert_close("W=0 ce", &o.ce, &gpu.read::<f32>(&losses, 0, n).unwrap(), 1e-6, 1e-6);
        assert_close("W=0 grad", &o.grad, &gpu.read::<f32>(&logits, 0, n * v).unwrap(), 1e-7, 1e-5);

        let same = run_kd(gpu, (n, v), &z, &z, &y, Kd { temperature: 3.0, weight: 1.0 });
        assert!(same.kd.iter().all(|&k| k.abs() < 1e-6), "teacher = student: kd {:?}", same.kd);
        assert!(same.grad.iter().all(|&g| g.abs() < 1e-7), "teacher = student at W=1: no gradient");
    }
}

/// Past one binding's worth of logits the rows run in windows of 128: 389 rows in windows of
/// 128 give the same losses, parts and gradient as one dispatch over all of them.
#[test]
fn kd_windows_give_what_one_dispatch_gives() {
    let (n, v) = (389, 37);
    let mut rng = wgtrain::reference::Rng::new(5);
    let z: Vec<f32> = (0..n * v).map(|_| rng.uniform() * 8.0 - 4.0).collect();
    let u: Vec<f32> = (0..n * v).map(|_| rng.uniform() * 8.0 - 4.0).collect();
    let y: Vec<u32> = (0..n).map(|i| (i * 13 % v) as u32).collect();
    let kd = Kd { temperature: 2.0, weight: 0.6 };
    for gpu in builds() {
        let whole = run_kd(gpu, (n, v), &z, &u, &y, kd);
        let row = 4 * (v + PAD) as u64;
        let windows = run_kd_within(gpu, (n, v), &z, &u, &y, kd, 130 * row);
        assert_eq!((whole.loss, whole.ce, whole.kd), (windows.loss, windows.ce, windows.kd));
        assert_eq!(whole.grad, windows.grad);
    }
}

/// A model directory of random weights for `cfg`.
fn model_dir(gpu: &'static Gpu, dir: &std::path::Path, cfg: &GptConfig, seed: u64) {
    let gpt = Gpt::new(gpu, cfg.clone(), 1, 1, 1).unwrap();
    gpt.init(gpu, seed);
    wgtrain::model::checkpoint::save_hf(dir, cfg, &gpt.read_params(gpu).unwrap()).unwrap();
}

/// `train --teacher`: metrics log the objective with ce and kd (loss = (1−W)·ce + W·kd); a
/// student started from the teacher's weights has kd 0 at its first step; a teacher of
/// another vocabulary or a weight past 1 is refused.
#[test]
fn train_with_a_teacher_logs_ce_and_kd_and_checks_the_teacher() {
    let Some(gpu) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("wgtrain-distill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tokens: Vec<u32> = (0..3000).map(|i| ((i * 7 + i / 11) % 17) as u32).collect();
    wgtrain::data::write_tokens(&dir.join("train.bin"), &tokens).unwrap();
    std::fs::write(dir.join("tiny.toml"), "n_layer = 1\nn_head = 2\nn_embd = 16\nvocab_size = 17\nn_positions = 16\n")
        .unwrap();
    let teacher = GptConfig { n_inner: Some(40), ..GptConfig::gpt2(2, 4, 24, 17, 16) };
    model_dir(gpu, &dir.join("teacher"), &teacher, 3);
    let kd = wgtrain::train::KdFlags { teacher: Some(dir.join("teacher")), kd_temperature: 1.5, kd_weight: 0.3 };
    let a = wgtrain::train::TrainArgs { steps: 3, grad_accum: 2, kd: kd.clone(), ..crate::train::args(&dir) };
    assert_eq!(wgtrain::train::train(gpu, &a).unwrap(), None);
    let lines = |p: std::path::PathBuf| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(p).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|v: &serde_json::Value| v["loss"].is_number())
            .collect()
    };
    let steps = lines(a.out.join("metrics.jsonl"));
    assert_eq!(steps.len(), 3);
    for s in &steps {
        let (loss, ce, kd) = (s["loss"].as_f64().unwrap(), s["ce"].as_f64().unwrap(), s["kd"].as_f64().unwrap());
        assert!(kd > 0.0 && ce > 0.0, "{s}");
        assert!((loss - (0.7 * ce + 0.3 * kd)).abs() < 1e-5 * loss, "{s}");
    }

    // The teacher's own weights as the student (--init): nothing to learn from it at step 0.
    let kd1 = wgtrain::train::KdFlags { kd_weight: 1.0, ..kd.clone() };
    let copy = wgtrain::train::TrainArgs {
        config: None,
        init: Some(dir.join("teacher")),
        kd: kd1,
        out: dir.join("copy"),
        steps: 1,
        ..crate::train::args(&dir)
    };
    assert_eq!(wgtrain::train::train(gpu, &copy).unwrap(), None);
    let first = &lines(copy.out.join("metrics.jsonl"))[0];
    assert!(first["kd"].as_f64().unwrap().abs() < 1e-6 && first["loss"].as_f64().unwrap().abs() < 1e-6, "{first}");

    let other = GptConfig { vocab_size: 19, ..teacher };
    model_dir(gpu, &dir.join("other"), &other, 4);
    let bad = |kd: wgtrain::train::KdFlags| {
        let a = wgtrain::train::TrainArgs { kd, out: dir.join("bad"), force: true, ..crate::train::args(&dir) };
        wgtrain::train::train(gpu, &a).unwrap_err().to_string()
    };
    let err = bad(wgtrain::train::KdFlags { teacher: Some(dir.join("other")), ..kd.clone() });
    assert!(err.contains("--teacher") && err.contains("tokenizer"), "{err}");
    assert!(bad(wgtrain::train::KdFlags { kd_weight: 1.5, ..kd.clone() }).contains("--kd-weight"));
    let none = wgtrain::train::KdFlags { teacher: None, kd_temperature: 4.0, kd_weight: 0.5 };
    assert!(bad(none).contains("need --teacher"));
    std::fs::remove_dir_all(&dir).ok();
}
