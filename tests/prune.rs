//! Pruning: the gradual schedule, the GPU's exact magnitude selection, masks that keep pruned
//! weights and their moments at zero through steps and resume, one-shot magnitude and Wanda
//! against plain references, and structured pruning into a smaller model.

use wgtrain::compress::oneshot::{self, Method};
use wgtrain::compress::prune::{PruneFlags, PruneSchedule};
use wgtrain::gpu::{Readback, Recorder};
use wgtrain::model::prune::{PruneScope, Pruner};
use wgtrain::model::{Gpt, GptConfig, Precision};
use wgtrain::optim::{OptimizerKind, ParamTable};
use wgtrain::{compress::PruneArgs, model::export::is_linear_weight};

use crate::common::{builds, gpu};

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("wgtrain-prune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny(n_embd: usize, vocab: usize) -> GptConfig {
    GptConfig::gpt2(2, 2, n_embd, vocab, 16)
}

#[test]
fn the_schedule_is_zhu_and_guptas_cubic() {
    let f = PruneFlags { prune_to: Some(0.8), ..Default::default() };
    let s = PruneSchedule::from_flags(&f, 200).unwrap().unwrap();
    assert_eq!((s.start, s.end, s.every), (20, 150, 2), "defaults: 10%, 75%, 1% of the steps");
    for t in [0u64, 20, 21, 57, 100, 149, 150, 199] {
        let x = ((t.clamp(20, 150) - 20) as f64 / 130.0).min(1.0);
        let want = 0.8 * (1.0 - (1.0 - x).powi(3));
        assert!((s.target(t) - want).abs() < 1e-12, "s_{t} = {} against {want}", s.target(t));
    }
    let events: Vec<u64> = (0..200).filter(|&t| s.due(t)).collect();
    assert_eq!(events.first(), Some(&22));
    assert_eq!(events.last(), Some(&150));
    assert!(events.windows(2).all(|w| w[1] - w[0] == 2));
    let odd = PruneSchedule::from_flags(&PruneFlags { prune_every: Some(7), ..f.clone() }, 200).unwrap().unwrap();
    assert!(odd.due(150) && odd.due(27) && !odd.due(28), "every 7 from 20, and the end");
    let bad = |f: PruneFlags| PruneSchedule::from_flags(&f, 100).unwrap_err();
    assert!(bad(PruneFlags { prune_to: Some(1.0), ..Default::default() }).contains("--prune-to"));
    assert!(bad(PruneFlags { prune_start: Some(5), ..Default::default() }).contains("need --prune-to"));
    let late = PruneFlags { prune_to: Some(0.5), prune_start: Some(80), prune_end: Some(40), ..Default::default() };
    assert!(bad(late).contains("start < end"));
}

/// The linear weights of `values` pruned at sparsity `s` by magnitude, ties with the k-th
/// smallest included (the GPU's rule), per group of tensors.
fn expected_mask(table: &ParamTable, values: &[Vec<f32>], s: f64, scope: PruneScope) -> Vec<Vec<bool>> {
    let linear: Vec<usize> = (0..values.len()).filter(|&i| is_linear_weight(&table.tensors[i].name)).collect();
    let groups: Vec<Vec<usize>> = match scope {
        PruneScope::Global => vec![linear.clone()],
        PruneScope::Layer => linear.iter().map(|&i| vec![i]).collect(),
    };
    let mut pruned: Vec<Vec<bool>> = values.iter().map(|v| vec![false; v.len()]).collect();
    for g in groups {
        let mut all: Vec<f32> = g.iter().flat_map(|&t| values[t].iter().map(|w| w.abs())).collect();
        let k = (s * all.len() as f64).floor() as usize;
        if k == 0 {
            continue;
        }
        all.sort_by(f32::total_cmp);
        let thr = all[k - 1];
        for &t in &g {
            pruned[t] = values[t].iter().map(|w| w.abs() <= thr).collect();
        }
    }
    pruned
}

fn mask_bits(table: &ParamTable, words: &[u32]) -> Vec<Vec<bool>> {
    let bit = |e: u64| words[(e / 32) as usize] >> (e % 32) & 1 == 0;
    table.tensors.iter().map(|t| (t.offset..t.offset + t.numel()).map(bit).collect()).collect()
}

/// The GPU's radix selection prunes exactly the weights at or under the k-th smallest |w|,
/// per scope, and a later, higher sparsity keeps what was pruned.
#[test]
fn the_gpu_selection_prunes_the_smallest_weights() {
    for gpu in builds() {
        for scope in [PruneScope::Global, PruneScope::Layer] {
            let mut gpt = Gpt::new(gpu, tiny(24, 29), 2, 5, 1).unwrap();
            gpt.init(gpu, 7);
            let table = gpt.arena.table.clone();
            let mut values = gpt.read_params(gpu).unwrap();
            // Ties and zeros: a weight equal to another, and some already zero.
            let i = table.index("h.1.mlp.c_fc.weight").unwrap();
            values[i][3] = values[i][5];
            values[i][10..20].fill(0.0);
            gpt.write_params(gpu, &values);
            let pruner = Pruner::new(gpu, &mut gpt.arena, scope).unwrap();
            let mut counts = Readback::new(gpu, 16 * pruner.slots() as u64, "counts");
            let mut last: Vec<bool> = vec![];
            for s in [0.0, 0.37, 0.61] {
                pruner.arm(gpu, s);
                let mut rec = Recorder::new(gpu);
                assert!(pruner.record(&mut rec, &mut counts));
                rec.submit().unwrap();
                counts.submitted();
                let sel: Vec<u32> = counts.take(gpu).unwrap().unwrap();
                let got = mask_bits(&table, &pruner.read_mask(gpu).unwrap());
                let want = expected_mask(&table, &values, s, scope);
                assert_eq!(got, want, "{scope:?} at {s} ({})", gpu.checked_shaders);
                let n: usize = want.iter().flatten().filter(|&&p| p).count();
                let measured = wgtrain::compress::prune::sparsity(&sel, pruner.total());
                assert!((measured - n as f64 / pruner.total() as f64).abs() < 1e-12);
                assert!(last.iter().zip(got.iter().flatten()).all(|(&was, &now)| !was || now), "masks only grow");
                last = got.into_iter().flatten().collect();
            }
            let mut rec = Recorder::new(gpu);
            assert!(!pruner.record(&mut rec, &mut counts), "unarmed, nothing is recorded");
        }
    }
}

/// channel_sumsq adds Σ_i x[i, j]² into what its output held, at awkward sizes.
#[test]
fn channel_sums_of_squares_match_the_cpu() {
    use wgtrain::kernels::{prune::channel_sumsq, View};
    for gpu in builds() {
        for (rows, cols) in [(1u32, 1u32), (7, 13), (37, 300), (5, 257)] {
            let mut rng = wgtrain::reference::Rng::new(rows as u64 * 31 + cols as u64);
            let x: Vec<f32> = (0..rows * cols).map(|_| rng.uniform() * 2.0 - 1.0).collect();
            let init: Vec<f32> = (0..cols).map(|j| j as f32 * 0.25).collect();
            let xb = gpu.pool.storage_from(&gpu.queue, wgtrain::gpu::Category::Scratch, &x).unwrap();
            let out = gpu.pool.storage_from(&gpu.queue, wgtrain::gpu::Category::Scratch, &init).unwrap();
            let op = channel_sumsq(gpu, View::from(&out), View::from(&xb), rows, cols).unwrap();
            let mut rec = Recorder::new(gpu);
            rec.dispatch(&op);
            rec.submit().unwrap();
            let got: Vec<f32> = gpu.read(&out, 0, cols as usize).unwrap();
            let want: Vec<f32> = (0..cols as usize)
                .map(|j| init[j] + (0..rows as usize).map(|i| x[i * cols as usize + j].powi(2)).sum::<f32>())
                .collect();
            crate::common::assert_close(&format!("sumsq {rows}x{cols}"), &got, &want, 1e-5, 1e-5);
        }
    }
}

/// The train flags of a pruning run on a tiny model.
fn prune_args(dir: &std::path::Path, steps: u64, scope: PruneScope) -> wgtrain::train::TrainArgs {
    let tokens: Vec<u32> = (0..5000).map(|i| ((i * 13 + i / 7) % 23) as u32).collect();
    wgtrain::data::write_tokens(&dir.join("train.bin"), &tokens).unwrap();
    std::fs::write(dir.join("tiny.toml"), "n_layer = 2\nn_head = 2\nn_embd = 16\nvocab_size = 23\nn_positions = 16\n")
        .unwrap();
    let prune = PruneFlags {
        prune_to: Some(0.7),
        prune_start: Some(1),
        prune_end: Some(steps - 3),
        prune_every: Some(2),
        prune_scope: scope,
    };
    wgtrain::train::TrainArgs {
        batch_size: 3,
        seq_len: 11,
        steps,
        lr: 5e-3,
        weight_decay: 0.1,
        no_shuffle: false,
        prune,
        ..crate::train::args(dir)
    }
}

/// The checkpoint's linear weights and moments are zero wherever its mask prunes, and the
/// mask prunes --prune-to of them.
fn assert_zero_where_pruned(ckpt: &std::path::Path, cfg: &GptConfig, to: f64) {
    let table = ParamTable::new(cfg.parameter_specs());
    let words: Vec<u32> = bytemuck::pod_collect_to_vec(&std::fs::read(ckpt.join("prune_mask.bin")).unwrap());
    let pruned = mask_bits(&table, &words);
    let params = wgtrain::model::checkpoint::load_hf(&ckpt.join("model.safetensors"), cfg).unwrap();
    let opt = std::fs::read(ckpt.join("optimizer.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&opt).unwrap();
    let (mut n, mut total) = (0, 0);
    for ((t, p), w) in table.tensors.iter().zip(&pruned).zip(&params) {
        for (name, moment) in st.tensors() {
            if name.starts_with(&format!("{}.", t.name)) {
                let m: Vec<f32> = bytemuck::pod_collect_to_vec(moment.data());
                assert!(p.iter().zip(&m).all(|(&p, &x)| !p || x == 0.0), "{name} nonzero where pruned");
            }
        }
        assert!(p.iter().zip(w).all(|(&p, &x)| !p || x == 0.0), "{} nonzero where pruned", t.name);
        if is_linear_weight(&t.name) {
            n += p.iter().filter(|&&p| p).count();
            total += p.len();
        } else {
            assert!(p.iter().all(|&p| !p), "{} is not a linear weight, never pruned", t.name);
        }
    }
    let s = n as f64 / total as f64;
    // At least ⌊to·n⌋ of each ranking group (per tensor in layer scope), ties included.
    assert!(s > to - 0.005 && s < to + 0.01, "sparsity {s} for --prune-to {to}");
}

/// A pruning run stopped at its step-6 checkpoint and resumed gives the same losses bit for
/// bit; every checkpoint keeps pruned weights and moments at zero, under each optimizer.
#[test]
fn pruned_weights_and_moments_stay_zero_through_steps_and_resume() {
    let Some(gpu) = gpu() else { return };
    let dir = tmp("resume");
    let a =
        wgtrain::train::TrainArgs { out: dir.join("whole"), save_every: 6, ..prune_args(&dir, 12, PruneScope::Global) };
    assert_eq!(wgtrain::train::train(gpu, &a).unwrap(), None);
    let cfg = GptConfig::load(&dir.join("whole/config.json")).unwrap();
    assert_zero_where_pruned(&dir.join("whole/ckpt-00000012"), &cfg, 0.7);
    let metrics = std::fs::read_to_string(dir.join("whole/metrics.jsonl")).unwrap();
    let sparsity: Vec<f64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["sparsity"].as_f64())
        .collect();
    assert_eq!(sparsity.len(), 12, "every step logs its sparsity");
    assert!(sparsity[0] == 0.0 && sparsity[11] > 0.69 && sparsity.windows(2).all(|w| w[0] <= w[1]));

    let cut = dir.join("cut");
    let ckpt = cut.join("ckpt-00000006");
    std::fs::create_dir_all(&ckpt).unwrap();
    std::fs::copy(dir.join("whole/metrics.jsonl"), cut.join("metrics.jsonl")).unwrap();
    for f in ["config.json", "model.safetensors", "optimizer.safetensors", "state.json", "prune_mask.bin"] {
        std::fs::copy(dir.join("whole/ckpt-00000006").join(f), ckpt.join(f)).unwrap();
    }
    assert_eq!(wgtrain::train::resume(gpu, &cut).unwrap(), None);
    let (whole, resumed) =
        (crate::train::losses(&dir.join("whole/metrics.jsonl")), crate::train::losses(&cut.join("metrics.jsonl")));
    assert_eq!(whole.len(), resumed.len());
    for (w, r) in whole.iter().zip(&resumed) {
        assert_eq!(w.1.to_bits(), r.1.to_bits(), "step {}: {} vs resumed {}", w.0, w.1, r.1);
    }
    std::fs::remove_file(ckpt.join("prune_mask.bin")).unwrap();
    let err = wgtrain::train::resume(gpu, &ckpt).unwrap_err().to_string();
    assert!(err.contains("prune_mask.bin"), "{err}");

    for kind in [OptimizerKind::Sgd, OptimizerKind::Lamb] {
        let d = tmp(kind.name());
        let a = wgtrain::train::TrainArgs { optimizer: kind, momentum: 0.9, ..prune_args(&d, 8, PruneScope::Layer) };
        assert_eq!(wgtrain::train::train(gpu, &a).unwrap(), None);
        assert_zero_where_pruned(&d.join("run/ckpt-00000008"), &cfg, 0.7);
        std::fs::remove_dir_all(&d).ok();
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A model whose weights are random, in a directory with config.json and model.safetensors,
/// and calibration tokens beside it.
pub fn model_dir(gpu: &'static wgtrain::Gpu, name: &str, cfg: &GptConfig) -> std::path::PathBuf {
    let dir = tmp(name);
    let gpt = Gpt::new(gpu, cfg.clone(), 1, 1, 1).unwrap();
    gpt.init(gpu, 11);
    wgtrain::model::checkpoint::save_hf(&dir.join("model"), cfg, &gpt.read_params(gpu).unwrap()).unwrap();
    let tokens: Vec<u32> = (0..900).map(|i| ((i * 7 + i / 5) % cfg.vocab_size) as u32).collect();
    wgtrain::data::write_tokens(&dir.join("calib.bin"), &tokens).unwrap();
    dir
}

pub fn prune_cli(dir: &std::path::Path, out: &str) -> PruneArgs {
    PruneArgs {
        model: dir.join("model"),
        to: None,
        method: Method::Magnitude,
        scope: None,
        keep_mlp: None,
        keep_heads: None,
        data: Some(dir.join("calib.bin")),
        calib_batches: 3,
        batch_size: 2,
        seq_len: Some(13),
        out: dir.join(out),
        force: false,
    }
}

/// Wanda's activation norms are those of a plain CPU forward (layer 0's ln_1 input is the
/// embedding), and in every row it zeroes the ⌊s·in⌋ weights of lowest |W|·‖X_j‖; one-shot
/// magnitude zeroes exactly the smallest ⌊s·n⌋ weights.
#[test]
fn wanda_and_magnitude_match_plain_references() {
    let Some(gpu) = gpu() else { return };
    let cfg = tiny(20, 31);
    let dir = model_dir(gpu, "wanda", &cfg);
    let (_, values, _) = wgtrain::compress::load_dir(&dir.join("model")).unwrap();
    let table = ParamTable::new(cfg.parameter_specs());
    let tokens = wgtrain::data::read_tokens(&dir.join("calib.bin")).unwrap();
    let mut loader = wgtrain::data::Loader::new(tokens.clone(), 2, 13, false, 0).unwrap();
    let sums = oneshot::channel_sums(gpu, &cfg, &values, (&mut loader, 2, 13), 3).unwrap();
    // The plain reference: ln_1 of wte[token] + wpe[position] over the same 3 batches.
    let (c, v) = (cfg.n_embd, &values);
    let get = |n: &str| &v[table.index(n).unwrap()];
    let mut want = vec![0.0f64; c];
    for row in 0..3 * 2 {
        let x: Vec<f32> = (0..13 * c)
            .map(|i| get("wte.weight")[tokens[row * 13 + i / c] as usize * c + i % c] + get("wpe.weight")[i])
            .collect();
        let mut ln = vec![0.0; 13 * c];
        wgtrain::reference::layernorm::forward(&mut ln, &x, get("h.0.ln_1.weight"), get("h.0.ln_1.bias"), 13, c);
        (0..13 * c).for_each(|i| want[i % c] += (ln[i] as f64).powi(2));
    }
    let got = &sums["h.0.attn.c_attn.weight"];
    assert!(got.iter().zip(&want).all(|(g, w)| (g - w).abs() <= 1e-4 * w.abs().max(1.0)), "{got:?} vs {want:?}");

    let mut pruned = values.clone();
    oneshot::wanda(&table, &mut pruned, 0.45, &sums).unwrap();
    for (t, (w, p)) in table.tensors.iter().zip(values.iter().zip(&pruned)) {
        if !is_linear_weight(&t.name) {
            assert_eq!(w, p);
            continue;
        }
        let cols = t.shape[1];
        let scores: Vec<f64> = (0..w.len()).map(|i| w[i].abs() as f64 * sums[&t.name][i % cols].sqrt()).collect();
        for r in 0..t.shape[0] {
            let row = r * cols..(r + 1) * cols;
            let zeroed: Vec<usize> = row.clone().filter(|&i| p[i] == 0.0).collect();
            assert_eq!(zeroed.len(), (0.45 * cols as f64).floor() as usize, "{} row {r}", t.name);
            let kept_min = row.clone().filter(|&i| p[i] != 0.0).map(|i| scores[i]).fold(f64::INFINITY, f64::min);
            assert!(zeroed.iter().all(|&i| scores[i] <= kept_min), "{} row {r}: a kept weight scores lower", t.name);
        }
    }

    let mut mag = values.clone();
    let n = oneshot::magnitude(&table, &mut mag, 0.5, PruneScope::Global);
    let linear: Vec<f32> = table
        .tensors
        .iter()
        .zip(&values)
        .filter(|(t, _)| is_linear_weight(&t.name))
        .flat_map(|(_, v)| v.iter().map(|x| x.abs()))
        .collect();
    let mut sorted = linear.clone();
    sorted.sort_by(f32::total_cmp);
    assert_eq!(n as usize, linear.len() / 2);
    let zeroed_max = table.tensors.iter().zip(values.iter().zip(&mag)).filter(|(t, _)| is_linear_weight(&t.name));
    for (_, (w, m)) in zeroed_max {
        assert!(w.iter().zip(m).all(|(w, m)| if *m == 0.0 { w.abs() <= sorted[n as usize - 1] } else { m == w }));
    }

    let wanda_cli = PruneArgs { to: Some(0.5), method: Method::Wanda, ..prune_cli(&dir, "w") };
    let r = wgtrain::compress::prune_model(gpu, &wanda_cli).unwrap();
    assert_eq!(r.zeroed, r.linear / 2);
    let bad = PruneArgs { scope: Some(PruneScope::Layer), ..wanda_cli.clone() };
    assert!(wgtrain::compress::prune_model(gpu, &bad).unwrap_err().contains("--scope"));
    let no_data = PruneArgs { data: None, ..wanda_cli };
    assert!(wgtrain::compress::prune_model(gpu, &no_data).unwrap_err().contains("--data"));
    std::fs::remove_dir_all(&dir).ok();
}

/// The logits of `values` under `cfg` on one batch.
pub fn logits(gpu: &wgtrain::Gpu, cfg: &GptConfig, values: &[Vec<f32>], x: &[u32]) -> Vec<f32> {
    let table = ParamTable::new(cfg.parameter_specs());
    let gpt = Gpt::for_inference(gpu, cfg.clone(), 1, x.len(), Precision::F32, table, None).unwrap();
    gpt.write_params(gpu, values);
    crate::compress::eval_logits(gpu, &gpt, x)
}

/// --keep-mlp writes a smaller model whose config says n_inner; its logits are those of the
/// full model with the dropped channels' c_proj columns zeroed, training continues from it,
/// and --keep-mlp 1 changes nothing.
#[test]
fn a_structured_pruned_model_runs_and_its_config_is_consistent() {
    let Some(gpu) = gpu() else { return };
    let cfg = tiny(16, 29);
    let dir = model_dir(gpu, "structured", &cfg);
    let (_, values, _) = wgtrain::compress::load_dir(&dir.join("model")).unwrap();
    let r =
        wgtrain::compress::prune_model(gpu, &PruneArgs { keep_mlp: Some(0.4), ..prune_cli(&dir, "small") }).unwrap();
    assert_eq!(r.mlp, (64, 26));
    let small = GptConfig::load(&dir.join("small/config.json")).unwrap();
    assert_eq!(small.n_inner, Some(26));
    assert_eq!(r.params.1, ParamTable::new(small.parameter_specs()).numel());
    assert_eq!(r.params.0 - r.params.1, 2 * (64 - 26) * (2 * 16 + 1), "c_fc rows and bias, c_proj columns");
    let (_, small_values, _) = wgtrain::compress::load_dir(&dir.join("small")).unwrap();

    // The same model at full width, the dropped channels cut off at c_proj.
    let table = ParamTable::new(cfg.parameter_specs());
    let mut masked = values.clone();
    for l in 0..cfg.n_layer {
        let fc = &values[table.index(&format!("h.{l}.mlp.c_fc.weight")).unwrap()];
        let kept = &small_values[table.index(&format!("h.{l}.mlp.c_fc.weight")).unwrap()];
        let pw = table.index(&format!("h.{l}.mlp.c_proj.weight")).unwrap();
        for j in 0..64 {
            let row = &fc[j * 16..(j + 1) * 16];
            if !kept.chunks(16).any(|k| k == row) {
                (0..16).for_each(|r| masked[pw][r * 64 + j] = 0.0);
            }
        }
    }
    let x: Vec<u32> = (0..11).map(|i| (i * 5 % 29) as u32).collect();
    let (a, b) = (logits(gpu, &small, &small_values, &x), logits(gpu, &cfg, &masked, &x));
    crate::common::assert_close("pruned vs masked logits", &a, &b, 1e-5, 1e-4);

    let a = wgtrain::train::TrainArgs {
        config: None,
        init: Some(dir.join("small")),
        data: Some(dir.join("calib.bin")),
        ..crate::train::args(&dir)
    };
    assert_eq!(wgtrain::train::train(gpu, &a).unwrap(), None);
    assert_eq!(GptConfig::load(&dir.join("run/config.json")).unwrap().n_inner, Some(26));

    let same =
        wgtrain::compress::prune_model(gpu, &PruneArgs { keep_mlp: Some(1.0), ..prune_cli(&dir, "same") }).unwrap();
    assert_eq!(same.params.0, same.params.1);
    let (_, same_values, _) = wgtrain::compress::load_dir(&dir.join("same")).unwrap();
    assert_eq!(same_values, values);
    let again = wgtrain::compress::prune_model(gpu, &PruneArgs { keep_mlp: Some(1.0), ..prune_cli(&dir, "same") });
    assert!(again.unwrap_err().contains("--force"));
    std::fs::remove_dir_all(&dir).ok();
}

/// config.json: n_inner round-trips (null is 4·n_embd), and a field the model can't honour is
/// refused with its name.
#[test]
fn hf_configs_give_n_inner_and_refuse_what_the_model_cannot_run() {
    let base = r#""n_layer": 1, "n_head": 2, "n_embd": 8, "vocab_size": 11, "n_positions": 4"#;
    let parse = |extra: &str| GptConfig::parse(&format!("{{{base}{extra}}}"), true, "config.json");
    assert_eq!(parse(r#", "n_inner": null"#).unwrap().mlp(), 32);
    let c = parse(r#", "n_inner": 20, "resid_pdrop": 0.1"#).unwrap();
    assert_eq!((c.n_inner, c.mlp()), (Some(20), 20));
    let back = GptConfig::parse(&c.to_hf_json().to_string(), true, "config.json").unwrap();
    assert_eq!(back, c);
    for (extra, key) in [
        (r#", "activation_function": "relu""#, "activation_function"),
        (r#", "layer_norm_epsilon": 1e-6"#, "layer_norm_epsilon"),
        (r#", "tie_word_embeddings": false"#, "tie_word_embeddings"),
        (r#", "scale_attn_by_inverse_layer_idx": true"#, "scale_attn_by_inverse_layer_idx"),
        (r#", "model_type": "bert""#, "model_type"),
        (r#", "n_inner": 0"#, "n_inner"),
    ] {
        let err = parse(extra).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains("config.json"), "{extra}: {err}");
    }
    let toml = GptConfig::parse(
        "n_layer = 1\nn_head = 2\nn_embd = 8\nvocab_size = 11\nn_positions = 4\nn_inner = 12\n",
        false,
        "m.toml",
    );
    assert_eq!(toml.unwrap().mlp(), 12);
}
