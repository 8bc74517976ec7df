//! Shared test helpers: the one GPU every test uses, and a comparison that says where it failed.

use std::sync::OnceLock;

use wgtrain::Gpu;

/// The adapter for GPU tests. None (the test returns early) when there is none, unless
/// WGTRAIN_REQUIRE_ADAPTER=1, where a missing adapter fails the test.
pub fn gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    match GPU.get_or_init(|| Gpu::from_env().map_err(|e| e.to_string())) {
        Ok(gpu) => Some(gpu),
        Err(e) if require_adapter() => panic!("WGTRAIN_REQUIRE_ADAPTER=1 and no adapter: {e}"),
        Err(e) => {
            eprintln!("skipping GPU test: {e}");
            None
        }
    }
}

/// The default (trusted) build and the checked one (naga's bounds clamping and loop bounding
/// kept): reference tests run every kernel in both, so a kernel whose result depends on an
/// out-of-range access differs in one of them. The checked build also flips the choice of
/// subgroup reductions (where the adapter has SUBGROUP), so the reductions run both ways.
/// Empty without an adapter, as `gpu()` skips.
pub fn builds() -> Vec<&'static Gpu> {
    static CHECKED: OnceLock<Result<Gpu, String>> = OnceLock::new();
    let Some(trusted) = gpu() else { return Vec::new() };
    let choice = wgtrain::gpu::AdapterChoice::from_env();
    let open = || {
        let mut g = Gpu::with_checks(&choice, true)?;
        g.subgroups = !trusted.subgroups && g.device.features().contains(wgpu::Features::SUBGROUP);
        Ok::<_, wgtrain::GpuError>(g)
    };
    match CHECKED.get_or_init(|| open().map_err(|e| e.to_string())) {
        Ok(checked) => {
            assert!(!trusted.checked_shaders || checked.checked_shaders);
            vec![trusted, checked]
        }
        Err(e) => panic!("the adapter opened once but not a second time, for checked shaders: {e}"),
    }
}

/// Each build of `builds()` paired with each of `variants`.
pub fn builds_with<V: Copy>(variants: &'static [V]) -> Vec<(&'static Gpu, V)> {
    builds().into_iter().flat_map(|g| variants.iter().map(move |&v| (g, v))).collect()
}

pub fn require_adapter() -> bool {
    std::env::var("WGTRAIN_REQUIRE_ADAPTER").is_ok_and(|v| v == "1")
}

/// Fails unless |got - want| <= atol + rtol·|want| everywhere. NaN anywhere in `got` fails,
/// so outputs pre-filled with NaN catch elements a kernel never wrote.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut bad = 0usize;
    let mut worst: Option<(usize, f32)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = atol + rtol * w.abs();
        let err = (g - w).abs();
        let excess = if err.is_nan() { f32::INFINITY } else { err / tol };
        // NaN compares false both ways: it counts as a failure.
        if err.is_nan() || err > tol {
            bad += 1;
        }
        if worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    if bad > 0 {
        let (i, _) = worst.unwrap();
        let lo = i.saturating_sub(2);
        let hi = (i + 3).min(got.len());
        panic!(
            "{what}: {bad} of {} elements outside |got - want| <= {atol:e} + {rtol:e}·|want|; \
             worst at {i}: got {}, want {}, diff {:e}; got[{lo}..{hi}] = {:?}, want = {:?}",
            got.len(),
            got[i],
            want[i],
            (got[i] - want[i]).abs(),
            &got[lo..hi],
            &want[lo..hi]
        );
    }
}

/// A model from an HF checkpoint against a golden fixture (scripts/make_{gpt2,llama}_fixture.py):
/// logits |d| <= 2e-6 + 1e-5·|want|, the loss within 1e-5, every gradient (in HF's layout,
/// `to_hf`) |d| <= 1e-7 + 1e-4·|want|, and the losses of 10 AdamW steps within 1e-5.
pub fn matches_golden(
    gpu: &Gpu,
    tag: &str,
    config: &wgtrain::model::GptConfig,
    fx: &serde_json::Value,
    dir: &std::path::Path,
    to_hf: fn(&str, &[usize], &[f32]) -> Vec<f32>,
) {
    use wgtrain::gpu::Recorder;
    use wgtrain::model::{checkpoint, Gpt};
    use wgtrain::optim::{OptimConfig, Optimizer};
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    let tokens = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    };
    let (b, t) = (fx["B"].as_u64().unwrap() as usize, fx["T"].as_u64().unwrap() as usize);
    let gpt = Gpt::new(gpu, config.clone(), b, t, 1).unwrap();
    gpt.write_params(gpu, &checkpoint::load_hf(&dir.join("model.safetensors"), config).unwrap());
    gpt.upload_batch(gpu, 0, &tokens(&fx["inputs"]), &tokens(&fx["targets"]));
    let mut rec = Recorder::new(gpu);
    gpt.record_eval(&mut rec);
    rec.submit().unwrap();
    assert_close(&format!("{tag} logits"), &gpt.read_logits(gpu).unwrap(), &floats(&fx["logits"]), 2e-6, 1e-5);
    let want_loss = fx["loss"].as_f64().unwrap() as f32;
    let loss = gpt.read_eval_loss(gpu).unwrap();
    assert!((loss - want_loss).abs() < 1e-5, "{tag} eval loss {loss} vs {want_loss}");

    let mut rec = Recorder::new(gpu);
    gpt.record_forward_backward(&mut rec);
    rec.submit().unwrap();
    let loss = gpt.read_loss(gpu).unwrap();
    assert!((loss - want_loss).abs() < 1e-5, "{tag} train loss {loss} vs {want_loss}");
    let grads = gpt.read_grads(gpu).unwrap();
    assert_eq!(gpt.arena.table.tensors.len(), fx["grads"].as_object().unwrap().len(), "{tag}: parameter count");
    for (tensor, g) in gpt.arena.table.tensors.iter().zip(&grads) {
        let want = floats(&fx["grads"][&tensor.name]);
        let got = to_hf(&tensor.name, &tensor.shape, g);
        assert_close(&format!("{tag} grad {}", tensor.name), &got, &want, 1e-7, 1e-4);
    }

    // 10 AdamW steps on the same batch; each loss is computed before its step's update.
    let lr = fx["lr"].as_f64().unwrap() as f32;
    let cfg = OptimConfig { weight_decay: fx["weight_decay"].as_f64().unwrap() as f32, ..OptimConfig::adamw() };
    let mut opt = Optimizer::new(gpu, &gpt.arena, cfg, None).unwrap();
    for (i, want) in floats(&fx["losses"]).iter().enumerate() {
        let mut rec = Recorder::new(gpu);
        gpt.record_forward_backward(&mut rec);
        opt.record_step(gpu, &mut rec, lr, false);
        rec.submit().unwrap();
        let loss = gpt.read_loss(gpu).unwrap();
        assert!((loss - want).abs() < 1e-5, "{tag} step {i}: loss {loss} vs PyTorch {want}");
    }
}

/// Decoding the fixture's first row with the KV cache gives the logits the full forward gives
/// at every position. Tolerance: the same sums in another grouping, |d| <= 1e-5 + 1e-4·|want|.
pub fn decoding_matches_forward(
    gpu: &Gpu,
    tag: &str,
    config: &wgtrain::model::GptConfig,
    fx: &serde_json::Value,
    dir: &std::path::Path,
) {
    use wgtrain::gpu::Recorder;
    use wgtrain::model::{checkpoint, Gpt};
    let (t, v) = (fx["T"].as_u64().unwrap() as usize, config.vocab_size);
    let gpt = Gpt::new(gpu, config.clone(), 1, t, 1).unwrap();
    gpt.write_params(gpu, &checkpoint::load_hf(&dir.join("model.safetensors"), config).unwrap());
    let row: Vec<u32> = fx["inputs"].as_array().unwrap()[..t].iter().map(|x| x.as_u64().unwrap() as u32).collect();
    gpt.upload_batch(gpu, 0, &row, &row);
    let mut rec = Recorder::new(gpu);
    gpt.record_eval(&mut rec);
    rec.submit().unwrap();
    let full = gpt.read_logits(gpu).unwrap();
    let mut dec = gpt.decoder(gpu).unwrap();
    for (i, &tok) in row.iter().enumerate() {
        let got = dec.next(gpu, tok).unwrap();
        assert_close(&format!("{tag} decode position {i}"), &got, &full[i * v..][..v], 1e-5, 1e-4);
    }
    assert_eq!(dec.pos(0), t);
    // A prefill of the first p tokens, by a model of their length over the same weights or by
    // the T-token model (the rest is padding), fills the cache as feeding them one by one
    // does: the next positions' logits are the same.
    for p in [2, t - 3] {
        let short = gpt.sharing(gpu, 1, p).unwrap();
        for pre in [&short, &gpt] {
            let mut dec = gpt.decoder(gpu).unwrap();
            pre.prefill(gpu, &mut dec, &row[..p]).unwrap();
            assert_eq!(dec.pos(0), p);
            for (i, &tok) in row.iter().enumerate().skip(p) {
                let got = dec.next(gpu, tok).unwrap();
                let what = format!("{tag} after a prefill of {p} by T {}, position {i}", pre.t);
                assert_close(&what, &got, &full[i * v..][..v], 1e-5, 1e-4);
            }
            assert!(pre.prefill(gpu, &mut dec, &row[..1]).is_err(), "a prefill starts an empty cache");
        }
        assert!(short.prefill(gpu, &mut gpt.decoder(gpu).unwrap(), &row[..p + 1]).is_err(), "past its T");
    }
    // Three rows at three positions decode together (prefilled at once by a model of B 3: one
    // to 2, one to T − 4, one left empty): each row's logits are the full forward's at its
    // own position.
    let starts = [2, 0, t - 4];
    let mut multi = gpt.decoder_rows(gpu, starts.len()).unwrap();
    let prefill = gpt.sharing(gpu, starts.len(), t).unwrap();
    prefill.prefill_rows(gpu, &mut multi, &starts.map(|p| &row[..p])).unwrap();
    for step in 0..3 {
        let got = multi.next_rows(gpu, &starts.map(|p| row[p + step])).unwrap();
        for (b, &p) in starts.iter().enumerate() {
            let what = format!("{tag} row {b} of 3 at position {}", p + step);
            assert_close(&what, &got[b * v..][..v], &full[(p + step) * v..][..v], 1e-5, 1e-4);
        }
    }
    assert_eq!((0..3).map(|b| multi.pos(b)).collect::<Vec<_>>(), starts.map(|p| p + 3));
}
