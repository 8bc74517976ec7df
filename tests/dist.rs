//! Data parallelism. In one process: ZeRO-1 shards and their optimizers, state merging,
//! gradient buckets and the cut backward. Through mpirun (feature `mpi`): 2 ranks × B against
//! 1 rank × 2B, with and without ZeRO-1, and a resume on another number of ranks.

use wgtrain::gpu::Recorder;
use wgtrain::model::{Gpt, GptConfig};
use wgtrain::optim::{OptimConfig, Optimizer, ParamArena, ParamTable};
use wgtrain::reference::Rng;

use crate::common::gpu;

fn table() -> ParamTable {
    let mut specs: Vec<(String, Vec<usize>)> = vec![("wte.weight".into(), vec![67, 13]), ("one".into(), vec![1])];
    for i in 0..7 {
        specs.push((format!("h.{i}.weight"), vec![5 * i + 3, 11]));
        specs.push((format!("h.{i}.bias"), vec![5 * i + 3]));
    }
    specs.push(("big".into(), vec![20011]));
    ParamTable::new(specs)
}

#[test]
fn shards_are_contiguous_balanced_runs_of_whole_tensors() {
    let t = table();
    for n in [1, 2, 3, 5, 16, 40] {
        let bounds = t.shard_bounds(n);
        assert_eq!(bounds.len(), n + 1);
        assert_eq!((bounds[0], bounds[n]), (0, t.tensors.len()));
        assert!(bounds.windows(2).all(|w| w[0] <= w[1]), "{n}: {bounds:?}");
        // No shard holds more than 1/n of the elements plus one tensor.
        let biggest = t.tensors.iter().map(|x| x.numel()).max().unwrap();
        for (r, (lo, hi)) in t.whole_tensor_ranges(n).into_iter().enumerate() {
            let sub = t.pieces(lo, hi);
            assert_eq!(sub.tensors.len(), bounds[r + 1] - bounds[r], "{n} shards: shard {r} holds whole tensors");
            let numel: u64 = sub.numel();
            assert!(numel <= t.numel() / n as u64 + biggest, "{n} shards: shard {r} holds {numel}");
            for (s, full) in sub.tensors.iter().zip(&t.tensors[bounds[r]..]) {
                assert_eq!((s.offset + lo, &s.name), (full.offset, &full.name));
            }
        }
    }
}

#[test]
fn element_shards_cut_tensors_into_pieces_that_tile_the_arena() {
    let t = table();
    for n in [1, 2, 3, 7, 16] {
        let ranges = t.balanced_ranges(n);
        assert_eq!((ranges[0].0, ranges[n - 1].1), (0, t.len));
        assert!(ranges.windows(2).all(|w| w[0].1 == w[1].0), "{n}: contiguous");
        assert!(ranges.iter().all(|(lo, hi)| lo % 64 == 0 && lo <= hi));
        // Balanced to within one alignment block, whatever the tensor sizes.
        let size = |r: &(u64, u64)| r.1 - r.0;
        assert!(ranges.iter().map(size).max().unwrap() - ranges.iter().map(size).min().unwrap() <= 64 + t.len % 64);
        let mut covered = 0;
        for &(lo, hi) in &ranges {
            let p = t.pieces(lo, hi);
            for piece in &p.tensors {
                let (name, start) =
                    piece.name.split_once('#').map_or((piece.name.as_str(), 0), |(a, b)| (a, b.parse().unwrap()));
                let whole = t.get(name).unwrap();
                assert_eq!(lo + piece.offset, whole.offset + start, "{}", piece.name);
                assert_eq!(piece.decay, whole.decay);
                covered += piece.numel();
            }
        }
        assert_eq!(covered, t.numel(), "{n} shards cover every element once");
    }
}

/// Shard optimizers over one arena take the same step as one optimizer over all of it, bit
/// for bit (no clipping: the norm is each shard's own), and their saved states merge into the
/// whole optimizer's file. AdamW and SGD shard by elements (tensors cut in pieces), LAMB by
/// whole tensors.
#[test]
fn shard_optimizers_step_like_the_whole_and_merge_their_state() {
    let Some(gpu) = gpu() else { return };
    let t = table();
    let mut rng = Rng::new(5);
    let init = t.pack(&t.tensors.iter().map(|x| rng.vec(x.numel() as usize)).collect::<Vec<_>>());
    let grads: Vec<Vec<f32>> =
        (0..3).map(|_| t.pack(&t.tensors.iter().map(|x| rng.vec(x.numel() as usize)).collect::<Vec<_>>())).collect();
    for cfg in [OptimConfig::adamw(), OptimConfig::lamb(), OptimConfig::sgd()] {
        let cfg = OptimConfig { grad_clip: 0.0, ..cfg };
        let whole = ParamArena::new(gpu, t.clone(), false).unwrap();
        let split = ParamArena::new(gpu, t.clone(), false).unwrap();
        gpu.write(&whole.params, 0, &init);
        gpu.write(&split.params, 0, &init);
        let mut one = Optimizer::new(gpu, &whole, cfg.clone(), None).unwrap();
        let ranges: Vec<(u64, u64)> = if cfg.kind == wgtrain::optim::OptimizerKind::Lamb {
            t.whole_tensor_ranges(3)
        } else {
            t.balanced_ranges(3)
        };
        let mut shards: Vec<Optimizer> = ranges
            .iter()
            .map(|&(lo, hi)| Optimizer::new_shard(gpu, &split, cfg.clone(), None, lo..hi).unwrap())
            .collect();
        if cfg.kind != wgtrain::optim::OptimizerKind::Lamb {
            assert!(shards.iter().any(|s| s.table.tensors.iter().any(|x| x.name.contains('#'))), "pieces exist");
        }
        // Each shard pads its end to 64 elements, at most 2 moments × 4 bytes each.
        assert!(shards.iter().map(Optimizer::state_bytes).sum::<u64>() <= one.state_bytes() + 3 * 64 * 8);
        for g in &grads {
            gpu.write(&whole.grads, 0, g);
            gpu.write(&split.grads, 0, g);
            let mut rec = Recorder::new(gpu);
            one.record_step(gpu, &mut rec, 1e-2, false);
            for s in &mut shards {
                s.record_step(gpu, &mut rec, 1e-2, false);
            }
            rec.submit().unwrap();
        }
        let a: Vec<f32> = gpu.read(&whole.params, 0, t.len as usize).unwrap();
        let b: Vec<f32> = gpu.read(&split.params, 0, t.len as usize).unwrap();
        let same = t.tensors.iter().all(|x| {
            let r = x.offset as usize..(x.offset + x.numel()) as usize;
            a[r.clone()].iter().zip(&b[r]).all(|(p, q)| p.to_bits() == q.to_bits())
        });
        assert!(same, "{:?}: sharded update differs", cfg.kind);
        let parts: Vec<Vec<u8>> = shards.iter().map(|s| s.to_bytes(gpu).unwrap()).collect();
        let merged = Optimizer::merge(&parts, &t).unwrap();
        let whole_bytes = one.to_bytes(gpu).unwrap();
        let tensors = |bytes: &[u8]| {
            let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
            let mut v: Vec<(String, Vec<u8>)> = st.tensors().into_iter().map(|(n, t)| (n, t.data().to_vec())).collect();
            v.sort();
            v
        };
        assert_eq!(tensors(&merged), tensors(&whole_bytes), "{:?}: merged state", cfg.kind);
        // And the whole file loads back into shards: the next step agrees again.
        let path =
            std::env::temp_dir().join(format!("wgtrain-merged-{}-{:?}.safetensors", std::process::id(), cfg.kind));
        Optimizer::write_bytes(&path, &merged).unwrap();
        for (s, &(lo, hi)) in shards.iter_mut().zip(&ranges) {
            let mut fresh = Optimizer::new_shard(gpu, &split, cfg.clone(), None, lo..hi).unwrap();
            fresh.load(gpu, &path).unwrap();
            assert!(
                tensors(&fresh.to_bytes(gpu).unwrap()) == tensors(&s.to_bytes(gpu).unwrap()),
                "{:?}: shard reloaded",
                cfg.kind
            );
        }
        std::fs::remove_file(&path).ok();
    }
}

/// With clipping, a shard's norm is partial: `set_norm` with the global norm gives the
/// whole optimizer's step.
#[test]
fn shards_clip_with_the_global_norm() {
    let Some(gpu) = gpu() else { return };
    let t = table();
    let mut rng = Rng::new(9);
    let init = t.pack(&t.tensors.iter().map(|x| rng.vec(x.numel() as usize)).collect::<Vec<_>>());
    let g = t.pack(&t.tensors.iter().map(|x| rng.vec(x.numel() as usize)).collect::<Vec<_>>());
    let cfg = OptimConfig { grad_clip: 0.5, ..OptimConfig::adamw() };
    let whole = ParamArena::new(gpu, t.clone(), false).unwrap();
    let split = ParamArena::new(gpu, t.clone(), false).unwrap();
    for arena in [&whole, &split] {
        gpu.write(&arena.params, 0, &init);
        gpu.write(&arena.grads, 0, &g);
    }
    let mut one = Optimizer::new(gpu, &whole, cfg.clone(), None).unwrap();
    let mut rec = Recorder::new(gpu);
    one.record_step(gpu, &mut rec, 1e-2, true);
    rec.submit().unwrap();
    one.submitted();
    let norm = one.grad_norm(gpu).unwrap().unwrap();
    for (lo, hi) in t.balanced_ranges(2) {
        let mut s = Optimizer::new_shard(gpu, &split, cfg.clone(), None, lo..hi).unwrap();
        let mut rec = Recorder::new(gpu);
        s.record_norm(gpu, &mut rec, 1e-2);
        rec.submit().unwrap();
        s.set_norm(gpu, norm);
        let mut rec = Recorder::new(gpu);
        s.record_update(&mut rec, false);
        rec.submit().unwrap();
    }
    let a: Vec<f32> = gpu.read(&whole.params, 0, t.len as usize).unwrap();
    let b: Vec<f32> = gpu.read(&split.params, 0, t.len as usize).unwrap();
    crate::common::assert_close("clipped shards", &b, &a, 1e-7, 1e-6);
}

fn tiny() -> GptConfig {
    GptConfig::gpt2(5, 2, 12, 37, 9)
}

#[test]
fn buckets_tile_the_arena_from_the_top_down() {
    let Some(gpu) = gpu() else { return };
    let gpt = Gpt::new(gpu, tiny(), 2, 9, 1).unwrap();
    let len = gpt.arena.table.len;
    for cap in [0, 1, 4 * 1000, 4 * 3000, u64::MAX] {
        let b = gpt.grad_buckets(cap);
        assert_eq!(b[0].hi, len, "cap {cap}: the first bucket holds the top");
        assert_eq!(b.last().unwrap().lo, 0);
        assert_eq!(b.last().unwrap().after_layer, None);
        assert!(b.windows(2).all(|w| w[0].lo == w[1].hi), "cap {cap}: {b:?}");
        assert!(b.windows(2).all(|w| w[0].after_layer > w[1].after_layer || w[1].after_layer.is_none()));
        if cap == 0 {
            assert_eq!(b.len(), 5, "one bucket per layer, the bottom one with the embeddings");
        }
        if cap == u64::MAX {
            assert_eq!(b.len(), 1);
        }
    }
}

/// The backward cut at bucket boundaries, submitted piece by piece, computes the same
/// gradients as in one submit, bit for bit.
#[test]
fn cut_backward_equals_the_whole_backward() {
    let Some(gpu) = gpu() else { return };
    for accum in [1, 2] {
        let gpt = Gpt::new(gpu, tiny(), 2, 9, accum).unwrap();
        gpt.init(gpu, 3);
        let mut rng = Rng::new(1);
        for k in 0..accum {
            let x: Vec<u32> = (0..18).map(|_| (rng.next_u64() % 37) as u32).collect();
            let y: Vec<u32> = (0..18).map(|_| (rng.next_u64() % 37) as u32).collect();
            gpt.upload_batch(gpu, k, &x, &y);
        }
        let mut rec = Recorder::new(gpu);
        gpt.record_forward_backward(&mut rec);
        rec.submit().unwrap();
        let want = gpt.read_grads(gpu).unwrap();
        let buckets = gpt.grad_buckets(0);
        let mut cuts = Vec::new();
        let mut at_cut = Vec::new();
        gpt.record_forward_backward_cut(gpu, accum, true, &buckets, |rec, j| {
            cuts.push(j);
            rec.submit().unwrap();
            // What a rank sends: the bucket as it stands at its cut.
            let b = &buckets[j];
            at_cut.push(gpu.read::<f32>(&gpt.arena.grads, b.lo, (b.hi - b.lo) as usize).unwrap());
        });
        assert_eq!(cuts, (0..buckets.len()).collect::<Vec<_>>());
        // Nothing after a cut writes into its bucket: each equals the final gradients.
        let end: Vec<f32> = gpu.read(&gpt.arena.grads, 0, gpt.arena.table.len as usize).unwrap();
        for (b, got) in buckets.iter().zip(&at_cut) {
            let want = &end[b.lo as usize..b.hi as usize];
            assert!(
                got.iter().zip(want).all(|(x, y)| x.to_bits() == y.to_bits()),
                "accum {accum}: {b:?} changed after its cut"
            );
        }
        let got = gpt.read_grads(gpu).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()), "accum {accum}: tensor {i} differs");
        }
    }
}

#[cfg(not(feature = "mpi"))]
#[test]
fn launched_by_mpirun_without_the_feature_is_an_error() {
    // What mpirun sets in each rank's environment.
    let r = wgtrain::dist::Dist::from_lookup(|k| (k == "OMPI_COMM_WORLD_SIZE").then(|| "2".to_string()));
    let err = r.err().expect("an error without the mpi feature");
    assert!(err.contains("--features mpi"), "{err}");
}

#[cfg(not(feature = "mpi"))]
#[test]
fn mpi_tests_are_built_when_required() {
    assert!(
        std::env::var("WGTRAIN_REQUIRE_MPI").as_deref() != Ok("1"),
        "WGTRAIN_REQUIRE_MPI=1 but this build lacks --features mpi: the mpirun tests did not run"
    );
}

#[cfg(feature = "mpi")]
mod mpirun {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use crate::common::gpu;

    /// Open MPI on one machine, as root too (CI runs as root).
    const OMPI_ENV: [(&str, &str); 3] =
        [("OMPI_ALLOW_RUN_AS_ROOT", "1"), ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"), ("OMPI_MCA_btl", "self,vader")];

    fn mpirun() -> Option<PathBuf> {
        let found = std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).map(|d| d.join("mpirun")).find(|f| f.is_file()));
        if found.is_none() {
            assert!(
                std::env::var("WGTRAIN_REQUIRE_MPI").as_deref() != Ok("1"),
                "WGTRAIN_REQUIRE_MPI=1 and no mpirun on PATH: install openmpi-bin"
            );
            eprintln!("skipping: no mpirun");
        }
        found
    }

    /// The tuning cache of the spawned runs (rank 0 tunes, the others take its choices), kept
    /// out of the user's cache directory.
    fn tune_cache() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("wgtrain-mpi-tune-{}", std::process::id()))
    }

    /// `wgtrain train` on `ranks` ranks (1: no mpirun) with `extra` flags into dir/out.
    fn train(mpirun: &Path, dir: &Path, ranks: usize, out: &str, extra: &[&str]) -> String {
        let bin = env!("CARGO_BIN_EXE_wgtrain");
        let mut cmd = if ranks == 1 {
            Command::new(bin)
        } else {
            let mut c = Command::new(mpirun);
            c.args(["-n", &ranks.to_string(), "--oversubscribe", bin]);
            c
        };
        cmd.arg("train")
            .args(["--config", dir.join("tiny.toml").to_str().unwrap(), "--seq-len", "16", "--steps", "6"])
            .args(["--eval-every", "2", "--val-batches", "2", "--sample-tokens", "0", "--warmup", "2"])
            .args(["--out", dir.join(out).to_str().unwrap()])
            .args(extra)
            .envs(OMPI_ENV)
            .env("WGTRAIN_CACHE_DIR", tune_cache())
            .env("WGTRAIN_BUCKET_BYTES", "1")
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{ranks} ranks {extra:?} failed:\n{text}");
        text
    }

    /// A fresh directory for one test's runs, with tiny.toml: `layers` blocks of 2 heads, 16
    /// channels, byte vocab, T 16.
    fn run_dir(name: &str, layers: usize) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("wgtrain-mpi-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let toml = format!("n_layer = {layers}\nn_head = 2\nn_embd = 16\nvocab_size = 256\nn_positions = 16\n");
        std::fs::write(dir.join("tiny.toml"), toml).unwrap();
        dir
    }

    /// (step, loss or val_loss, grad_norm) lines of a run.
    fn metrics(path: &Path) -> Vec<(u64, f64, f64)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let loss = v["loss"].as_f64().or(v["val_loss"].as_f64()).unwrap();
                (v["step"].as_u64().unwrap(), loss, v["grad_norm"].as_f64().unwrap_or(-1.0))
            })
            .collect()
    }

    fn assert_same(what: &str, got: &[(u64, f64, f64)], want: &[(u64, f64, f64)]) {
        assert_eq!(got.len(), want.len(), "{what}: lines");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.0, w.0, "{what}: steps");
            // fp32 sums in another order: losses to 1e-5, norms to 1e-4 (relative).
            assert!((g.1 - w.1).abs() <= 1e-5 * w.1.abs().max(1.0), "{what}: step {} loss {} vs {}", g.0, g.1, w.1);
            assert!((g.2 - w.2).abs() <= 1e-4 * w.2.abs().max(1.0), "{what}: step {} norm {} vs {}", g.0, g.2, w.2);
        }
    }

    #[test]
    fn two_ranks_of_b_match_one_rank_of_2b_and_resume_on_another_count() {
        if gpu().is_none() {
            return;
        }
        let Some(mpirun) = mpirun() else { return };
        let dir = run_dir("dp", 3);
        train(&mpirun, &dir, 1, "one", &["--batch-size", "4"]);
        // Tiny buckets: several submits, all-reduces while the GPU goes on, per-bucket writes.
        let text = train(&mpirun, &dir, 2, "dp", &["--batch-size", "2", "--save-every", "3"]);
        assert!(text.contains("2 ranks, global batch 4") && text.contains("in 3 buckets"), "{text}");
        let text = train(&mpirun, &dir, 2, "zero", &["--batch-size", "2", "--zero", "1", "--save-every", "3"]);
        assert!(text.contains("rank 0: ") && text.contains("rank 1: ") && text.contains("shard: elements"), "{text}");
        let one = metrics(&dir.join("one/metrics.jsonl"));
        assert_eq!(one.len(), 6 + 3, "6 steps and 3 evaluations, written once");
        assert_same("2 ranks", &metrics(&dir.join("dp/metrics.jsonl")), &one);
        assert_same("2 ranks, ZeRO-1", &metrics(&dir.join("zero/metrics.jsonl")), &one);

        // The ZeRO-1 checkpoint after step 3 resumes on 1 rank and on 4 ranks (batch 1 each),
        // and both continue the 1-rank run.
        for (ranks, name) in [(1, "r1"), (4, "r4")] {
            let run = dir.join(name);
            std::fs::create_dir_all(&run).unwrap();
            let from = dir.join("zero/ckpt-00000003");
            let to = run.join("ckpt-00000003");
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(&from).unwrap() {
                let f = f.unwrap().path();
                std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
            }
            let kept: String = std::fs::read_to_string(dir.join("zero/metrics.jsonl"))
                .unwrap()
                .lines()
                .filter(|l| l.contains("\"step\":0") || l.contains("\"step\":1") || l.contains("\"step\":2"))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(run.join("metrics.jsonl"), kept).unwrap();
            let bin = env!("CARGO_BIN_EXE_wgtrain");
            let mut cmd = if ranks == 1 { Command::new(bin) } else { Command::new(&mpirun) };
            if ranks > 1 {
                cmd.args(["-n", "4", "--oversubscribe", bin]);
            }
            let out = cmd
                .args(["train", "--resume", run.to_str().unwrap()])
                .envs(OMPI_ENV)
                .env("WGTRAIN_CACHE_DIR", tune_cache())
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "resume on {ranks}:\n{text}");
            assert!(text.contains(&format!("resuming a 2-rank run on {ranks} ranks")), "{text}");
            assert_same(&format!("resumed on {ranks}"), &metrics(&run.join("metrics.jsonl")), &one);
        }
    }

    /// LoRA under data parallelism: only the adapters' gradients are all-reduced (in buckets,
    /// a layer without adapters closing none) or sharded (ZeRO-1), and 2 ranks of B match 1
    /// rank of 2B.
    #[test]
    fn lora_on_two_ranks_matches_one_rank() {
        if gpu().is_none() {
            return;
        }
        let Some(mpirun) = mpirun() else { return };
        let dir = run_dir("lora", 3);
        train(&mpirun, &dir, 1, "base", &["--batch-size", "4"]);
        let base = dir.join("base");
        // Layer 1 gets no adapter.
        let lora =
            ["--init", base.to_str().unwrap(), "--lora-rank", "2", "--lora-targets", "h.0.attn.c_attn,h.2.mlp.c_fc"];
        let flags = |b: &'static str, extra: &[&'static str]| {
            let mut v = lora.to_vec();
            v.extend(["--batch-size", b]);
            v.extend(extra);
            v
        };
        train(&mpirun, &dir, 1, "one", &flags("4", &[]));
        let text = train(&mpirun, &dir, 2, "dp", &flags("2", &[]));
        assert!(text.contains("2 ranks, global batch 4") && text.contains("in 2 buckets"), "{text}");
        train(&mpirun, &dir, 2, "zero", &flags("2", &["--zero", "1"]));
        let one = metrics(&dir.join("one/metrics.jsonl"));
        assert_same("LoRA on 2 ranks", &metrics(&dir.join("dp/metrics.jsonl")), &one);
        assert_same("LoRA on 2 ranks, ZeRO-1", &metrics(&dir.join("zero/metrics.jsonl")), &one);
        assert!(dir.join("dp/adapter_model.safetensors").is_file());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The job's exit status once it ends; it is killed and the test fails after `secs`.
    fn wait_within(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
        let t0 = std::time::Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if t0.elapsed().as_secs() >= secs {
                child.kill().ok();
                panic!("the ranks did not stop within {secs} s of the signal");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// mpirun's children named wgtrain: the ranks.
    fn ranks_of(mpirun_pid: u32) -> Vec<i32> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            // pid (comm) state ppid ...: the comm may hold spaces, so split after its ')'.
            let (head, tail) = stat.rsplit_once(')').unwrap_or(("", ""));
            let ppid: u32 = tail.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
            if ppid == mpirun_pid && head.contains("(wgtrain") {
                out.push(pid);
            }
        }
        out
    }

    #[test]
    fn a_signal_to_one_rank_stops_every_rank_at_one_step_with_a_checkpoint() {
        if gpu().is_none() {
            return;
        }
        let Some(mpirun) = mpirun() else { return };
        let dir = run_dir("signal", 1);
        let out = dir.join("run");
        let log = std::fs::File::create(dir.join("log.txt")).unwrap();
        let mut child = Command::new(&mpirun)
            .args(["-n", "2", "--oversubscribe", env!("CARGO_BIN_EXE_wgtrain"), "train"])
            .args(["--config", dir.join("tiny.toml").to_str().unwrap(), "--seq-len", "16", "--batch-size", "2"])
            .args(["--steps", "1000000", "--eval-every", "0", "--sample-tokens", "0"])
            .args(["--out", out.to_str().unwrap()])
            .envs(OMPI_ENV)
            .env("WGTRAIN_CACHE_DIR", tune_cache())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let lines = || std::fs::read_to_string(out.join("metrics.jsonl")).map_or(0, |t| t.lines().count());
        let t0 = std::time::Instant::now();
        while lines() < 3 {
            assert!(t0.elapsed().as_secs() < 120, "no steps logged in 120 s");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let ranks = ranks_of(child.id());
        assert_eq!(ranks.len(), 2, "mpirun's ranks: {ranks:?}");
        // One rank alone gets the signal; both must stop after the same step.
        unsafe { libc::kill(*ranks.iter().max().unwrap(), libc::SIGINT) };
        let status = wait_within(&mut child, 60);
        let text = std::fs::read_to_string(dir.join("log.txt")).unwrap();
        assert!(!status.success(), "mpirun reports the ranks' exit 130:\n{text}");
        let stopped: Vec<&str> = text.lines().filter(|l| l.starts_with("stopped by a signal after step")).collect();
        assert_eq!(stopped.len(), 1, "rank 0 alone reports the stop:\n{text}");
        let step: u64 = stopped[0].split_whitespace().nth(6).unwrap().trim_end_matches(';').parse().unwrap();
        let ckpt = out.join(format!("ckpt-{:08}", step + 1));
        assert!(ckpt.join("optimizer.safetensors").is_file(), "{} holds the checkpoint:\n{text}", ckpt.display());
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
        assert_eq!(last["step"].as_u64(), Some(step), "metrics end at the step the ranks stopped after");
    }

    /// A rank whose parameters drift from the others' (here: it was given another --lr, as a
    /// misconfigured or faulty rank would) stops the run at the next replica check, with a
    /// message naming the rank and the step; the checkpoint before it was of agreeing ranks.
    #[test]
    fn a_drifting_rank_stops_the_run_at_the_replica_check() {
        if gpu().is_none() {
            return;
        }
        let Some(mpirun) = mpirun() else { return };
        let dir = run_dir("drift", 1);
        let out = dir.join("run");
        let bin = env!("CARGO_BIN_EXE_wgtrain");
        let config = dir.join("tiny.toml");
        let rank = |lr: &'static str| -> Vec<String> {
            let args = [
                "-n",
                "1",
                bin,
                "train",
                "--config",
                config.to_str().unwrap(),
                "--seq-len",
                "16",
                "--batch-size",
                "2",
                "--steps",
                "20",
                "--eval-every",
                "0",
                "--sample-tokens",
                "0",
                "--save-every",
                "4",
                "--check-replicas",
                "6",
                "--warmup",
                "0",
                "--lr",
                lr,
                "--out",
                out.to_str().unwrap(),
            ];
            args.iter().map(|s| s.to_string()).collect()
        };
        // MPMD: one program line per rank, the same but for rank 1's learning rate.
        let out_run = Command::new(&mpirun)
            .arg("--oversubscribe")
            .args(rank("1e-3"))
            .arg(":")
            .args(rank("2e-3"))
            .envs(OMPI_ENV)
            .env("WGTRAIN_CACHE_DIR", tune_cache())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out_run.stdout).to_string() + &String::from_utf8_lossy(&out_run.stderr);
        assert!(!out_run.status.success(), "{text}");
        // The first checkpoint (after step 3) is checked first and finds the drift.
        assert!(text.contains("replicas drifted by step 3") && text.contains("rank 1 differ"), "{text}");
        assert!(!out.join("ckpt-00000004").exists(), "no checkpoint of drifted replicas");
    }

    /// A signal to the ranks while they set up (before any step) ends each at once with 143
    /// and "nothing to save", and with it the mpirun job.
    #[test]
    fn a_signal_before_the_first_step_ends_every_rank_at_once() {
        if gpu().is_none() {
            return;
        }
        let Some(mpirun) = mpirun() else { return };
        let dir = std::env::temp_dir().join(format!("wgtrain-mpi-early-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("log.txt")).unwrap();
        // The default model: setup (data, pipelines) takes a while on lavapipe.
        let mut child = Command::new(&mpirun)
            .args(["-n", "2", "--oversubscribe", env!("CARGO_BIN_EXE_wgtrain"), "train", "--no-tune"])
            .args(["--out", dir.join("run").to_str().unwrap(), "--sample-tokens", "0"])
            .envs(OMPI_ENV)
            .env("WGTRAIN_CACHE_DIR", tune_cache())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        let ranks = loop {
            let r = ranks_of(child.id());
            if r.len() == 2 {
                break r;
            }
            assert!(t0.elapsed().as_secs() < 30, "mpirun started no ranks");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        // Past each rank's signal watcher (the first thing main does), before MPI and the
        // adapter are up.
        std::thread::sleep(std::time::Duration::from_millis(100));
        for r in &ranks {
            unsafe { libc::kill(*r, libc::SIGTERM) };
        }
        let status = wait_within(&mut child, 10);
        let text = std::fs::read_to_string(dir.join("log.txt")).unwrap();
        assert!(!status.success(), "{text}");
        assert_eq!(text.matches("nothing to save").count(), 2, "both ranks said so:\n{text}");
        assert!(
            !dir.join("run/metrics.jsonl").exists()
                || std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap().is_empty()
        );
    }

    /// A step split into several submits (30 micro-batches of a 1-layer model: about 12 per
    /// submit) on 2 ranks, plain and ZeRO-1, matches the same split step on 1 rank of twice
    /// the batch.
    #[test]
    fn split_steps_on_two_ranks_match_one_rank() {
        if gpu().is_none() {
            return;
        }
        let Some(mpirun) = mpirun() else { return };
        let dir = run_dir("split", 1);
        let text = train(&mpirun, &dir, 1, "one", &["--batch-size", "4", "--grad-accum", "30"]);
        assert!(text.contains("submits per step"), "the step is split:\n{text}");
        train(&mpirun, &dir, 2, "two", &["--batch-size", "2", "--grad-accum", "30"]);
        train(&mpirun, &dir, 2, "zero", &["--batch-size", "2", "--grad-accum", "30", "--zero", "1"]);
        let one = metrics(&dir.join("one/metrics.jsonl"));
        assert_same("split steps on 2 ranks, ZeRO-1", &metrics(&dir.join("zero/metrics.jsonl")), &one);
        assert_same(
            "split steps on 2 ranks",
            &metrics(&dir.join("two/metrics.jsonl")),
            &metrics(&dir.join("one/metrics.jsonl")),
        );
    }

    /// Mixed precision on 2 ranks under ZeRO-1: each rank rounds its shard's f16 copy and the
    /// copies are gathered with the parameters. It tracks 1 rank of twice the batch in f16
    /// (f32 gradient sums in another order can move an f16 rounding: losses to 1e-3).
    #[test]
    fn f16_zero1_on_two_ranks_tracks_one_rank() {
        if gpu().is_none() {
            return;
        }
        let Some(mpirun) = mpirun() else { return };
        let dir = run_dir("f16", 2);
        let f16 = ["--precision", "f16"];
        train(&mpirun, &dir, 1, "one", &[&f16[..], &["--batch-size", "4"]].concat());
        train(&mpirun, &dir, 2, "zero", &[&f16[..], &["--batch-size", "2", "--zero", "1"]].concat());
        let (got, want) = (metrics(&dir.join("zero/metrics.jsonl")), metrics(&dir.join("one/metrics.jsonl")));
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g.1 - w.1).abs() <= 1e-3 * w.1.abs(), "f16 ZeRO-1: step {} loss {} vs {}", g.0, g.1, w.1);
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
