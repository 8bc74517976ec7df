//! Reliability at scale: gradient accumulation in constant memory, signals at any moment,
//! SIGKILL and a full disk during checkpoints, and the replica checksum.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wgtrain::gpu::Category;
use wgtrain::model::{Gpt, GptConfig};
use wgtrain::reference::{self, Rng};

use crate::common::gpu;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgtrain-rel-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny() -> GptConfig {
    GptConfig::gpt2(2, 2, 16, 37, 16)
}

/// `wgtrain train` with `args`, stdout piped, in the source tree.
fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_wgtrain"))
        .arg("train")
        .args(args)
        .env("WGTRAIN_CACHE_DIR", std::env::temp_dir().join(format!("wgtrain-rel-tune-{}", std::process::id())))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: i32) {
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Waits for the child to exit, for at most `limit`; its exit code (None: a signal).
fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        assert!(t.elapsed() < limit, "the run did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads the child's stdout until a line starting with `prefix`; the time it took.
fn wait_line(child: &mut Child, prefix: &str) -> Duration {
    let t = Instant::now();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    for line in lines.by_ref() {
        if line.unwrap().starts_with(prefix) {
            // Keep draining so the child never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return t.elapsed();
        }
    }
    panic!("the run ended before printing {prefix:?}");
}

/// Peak resident memory of a live process, in bytes.
fn peak_rss(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap();
    kb * 1024
}

/// Buffers and dispatches do not grow with K: a model built for 100,000 micro-batches holds
/// the same activations as one for a single micro-batch, but for the token slots of one
/// submit (8 bytes a token, at most SUBMIT_MICRO_BATCHES of them).
#[test]
fn accumulation_memory_is_constant() {
    if gpu().is_none() {
        return;
    }
    // A device of its own: the shared one's pool counts other tests' buffers too.
    let gpu = &wgtrain::Gpu::from_env().unwrap();
    let (b, t) = (3, 7);
    let live = |k| {
        let before =
            gpu.pool.stats().live.iter().filter(|(c, _)| *c == Category::Activations).map(|x| x.1).sum::<u64>();
        let gpt = Gpt::new(gpu, tiny(), b, t, k).unwrap();
        let after = gpu.pool.stats().live.iter().filter(|(c, _)| *c == Category::Activations).map(|x| x.1).sum::<u64>();
        (after - before, gpt.micro_per_submit())
    };
    let (one, per1) = live(1);
    let (many, per) = live(100_000);
    assert_eq!(per1, 1);
    assert!((1..=wgtrain::model::SUBMIT_MICRO_BATCHES).contains(&per), "{per} micro-batches per submit");
    // The pool rounds each buffer up a little.
    let slots = 8 * (b * t) as u64 * (per as u64 - 1);
    assert!((many - one).abs_diff(slots) <= 256, "only the token slots differ: {} bytes, not {slots}", many - one);
}

/// An impossible step is refused before anything is built.
#[test]
fn impossible_accumulation_is_refused_at_once() {
    let Some(gpu) = gpu() else { return };
    let dir = scratch("impossible");
    let a = wgtrain::train::TrainArgs { grad_accum: 1 << 30, ..crate::train::args(&dir) };
    let t = Instant::now();
    let e = wgtrain::train::train(gpu, &a).unwrap_err().to_string();
    assert!(e.contains("--grad-accum") && e.contains("2^32"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// The checksum kernel against the plain loop, over several windows' worth of awkward sizes.
#[test]
fn checksum_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let mut r = Rng::new(5);
    for n in [1usize, 255, 257, 70_001] {
        let words: Vec<u32> = (0..n).map(|_| r.next_u64() as u32).collect();
        let buf = gpu.pool.storage_from(&gpu.queue, Category::Scratch, &words).unwrap();
        let got = wgtrain::kernels::checksum::checksum(gpu, &buf, n as u64).unwrap();
        assert_eq!(got, reference::checksum::checksum(&words), "n {n}");
        let mut flipped = words.clone();
        flipped[n / 2] ^= 1;
        assert_ne!(reference::checksum::checksum(&flipped), got, "one bit changes it");
    }
}

/// SIGINT or SIGTERM while the run loads and builds its pipelines: it exits within a
/// second with 130 or 143 and says there was nothing to save.
#[test]
fn signal_before_the_first_step_exits_at_once() {
    if gpu().is_none() {
        return;
    }
    for (sig, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let dir = scratch(&format!("early-signal-{sig}"));
        let mut child = spawn(&["--out", dir.join("run").to_str().unwrap(), "--steps", "5", "--no-tune"]);
        // Past the watcher's start (the first thing main does), well before the first step
        // (about 0.5 s in on lavapipe, adapter and pipelines included).
        std::thread::sleep(Duration::from_millis(150));
        signal(&child, sig);
        let t = Instant::now();
        assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), Some(code));
        assert!(t.elapsed() < Duration::from_secs(1), "exited after {:?}", t.elapsed());
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(err.contains("nothing to save"), "{err}");
        assert!(!dir.join("run").join("ckpt-00000000").exists());
    }
}

/// --grad-accum 4096 at B 1, T 16 on the default model: the first micro-batch starts within
/// 10 s, peak host memory stays within 10% of a K=1 run (plus 8 bytes a token), and a SIGINT
/// in the middle of the split step stops it at the next submit, exiting 130, with no
/// checkpoint of a partial step.
#[test]
fn large_accumulation_starts_fast_in_constant_memory_and_stops_between_submits() {
    if gpu().is_none() {
        return;
    }
    let dir = scratch("accum");
    let run = |k: &str, out: &str| {
        let out = dir.join(out);
        let args = ["--batch-size", "1", "--seq-len", "16", "--grad-accum", k, "--steps", "100000", "--no-tune"];
        let mut child = spawn(&[&args[..], &["--out", out.to_str().unwrap(), "--eval-every", "0"]].concat());
        let setup = wait_line(&mut child, "model:");
        // Let it train a while, then read its peak memory and stop it.
        std::thread::sleep(Duration::from_secs(4));
        let rss = peak_rss(&child);
        signal(&child, libc::SIGINT);
        let t = Instant::now();
        let code = wait_exit(&mut child, Duration::from_secs(30));
        (setup, rss, code, t.elapsed(), out)
    };
    // K = 1 first: it also warms the driver's shader cache, as a second run would find it.
    let (_, rss1, code1, _, _) = run("1", "k1");
    assert_eq!(code1, Some(130));
    let (setup, rss, code, stop, out) = run("4096", "k4096");
    assert!(setup < Duration::from_secs(10), "first micro-batch after {setup:?}");
    let allowed = rss1 as f64 * 1.1 + 8.0 * 4096.0 * 16.0;
    eprintln!("peak RSS: K=1 {rss1} bytes, K=4096 {rss} bytes; first micro-batch after {setup:?}");
    assert!((rss as f64) <= allowed, "peak RSS {rss} vs {rss1} at K=1 (allowed {allowed:.0})");
    assert_eq!(code, Some(130));
    assert!(stop < Duration::from_secs(5), "stopped {stop:?} after the signal");
    assert!(wgtrain_checkpoints(&out).is_empty(), "no checkpoint of a partial step");
}

fn wgtrain_checkpoints(out: &Path) -> Vec<String> {
    std::fs::read_dir(out)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ckpt-"))
                .collect()
        })
        .unwrap_or_default()
}

/// (step, loss bits) of a run's metrics.jsonl.
fn loss_bits(out: &Path) -> Vec<(u64, u32)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("loss").is_some())
        .map(|v| (v["step"].as_u64().unwrap(), (v["loss"].as_f64().unwrap() as f32).to_bits()))
        .collect()
}

fn write_tiny_run(dir: &Path) {
    let tokens: Vec<u32> = (0..6000).map(|i| ((i * 13 + i / 7) % 23) as u32).collect();
    wgtrain::data::write_tokens(&dir.join("train.bin"), &tokens).unwrap();
    std::fs::write(dir.join("tiny.toml"), "n_layer = 2\nn_head = 2\nn_embd = 16\nvocab_size = 23\nn_positions = 16\n")
        .unwrap();
}

fn tiny_args<'a>(dir: &'a Path, steps: &'a str) -> Vec<String> {
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    [
        "--config",
        &p("tiny.toml"),
        "--data",
        &p("train.bin"),
        "--batch-size",
        "3",
        "--seq-len",
        "11",
        "--grad-accum",
        "2",
        "--steps",
        steps,
        "--save-every",
        "1",
        "--sample-tokens",
        "0",
        "--eval-every",
        "0",
        "--no-tune",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A run that checkpoints every step, killed with SIGKILL at random moments many times and
/// resumed each time, ends with the uninterrupted run's losses, bit for bit.
#[test]
fn sigkill_at_random_moments_then_resume_is_bitwise() {
    if gpu().is_none() {
        return;
    }
    let dir = scratch("sigkill");
    write_tiny_run(&dir);
    let steps = "200";
    let whole = dir.join("whole");
    let mut child = spawn(
        &[tiny_args(&dir, steps), vec!["--out".into(), whole.to_str().unwrap().into()]]
            .concat()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(wait_exit(&mut child, Duration::from_secs(300)), Some(0));
    let want = loss_bits(&whole);
    assert_eq!(want.len(), 200);
    let cut = dir.join("cut");
    let mut rng = Rng::new(11);
    let mut kills = 0;
    for _ in 0..40 {
        // A kill that lands after the final checkpoint (in the finish phase) leaves a run
        // that took all its steps, which --resume refuses: it is done.
        if wgtrain_checkpoints(&cut).contains(&format!("ckpt-{:08}", want.len())) {
            break;
        }
        let fresh = wgtrain_checkpoints(&cut).is_empty();
        let args: Vec<String> = if fresh {
            [tiny_args(&dir, steps), vec!["--out".into(), cut.to_str().unwrap().into(), "--force".into()]].concat()
        } else {
            vec!["--resume".into(), cut.to_str().unwrap().into()]
        };
        let mut child = spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
        if kills < 8 {
            // Anywhere from setup to the steps and their checkpoints.
            std::thread::sleep(Duration::from_millis(200 + rng.next_u64() % 1200));
            if child.try_wait().unwrap().is_none() {
                signal(&child, libc::SIGKILL);
                kills += 1;
                child.wait().unwrap();
                continue;
            }
        }
        let code = wait_exit(&mut child, Duration::from_secs(300));
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_eq!(code, Some(0), "{err}");
        break;
    }
    assert!(kills >= 4, "only {kills} kills landed before the run finished");
    assert_eq!(loss_bits(&cut), want, "the killed and resumed run's losses");
}

/// A full disk during a checkpoint (a small tmpfs, mounted in a user namespace of its own so
/// that no privilege is needed) stops the run with one line naming the checkpoint, removes the
/// partial copy, and leaves the previous checkpoint to resume from.
#[test]
fn a_full_disk_during_a_checkpoint_keeps_the_previous_one() {
    if gpu().is_none() {
        return;
    }
    let dir = scratch("full");
    write_tiny_run(&dir);
    let whole = dir.join("whole");
    let args = |out: &Path| [tiny_args(&dir, "4"), vec!["--out".into(), out.to_str().unwrap().into()]].concat();
    let mut child = spawn(&args(&whole).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(wait_exit(&mut child, Duration::from_secs(120)), Some(0));
    let cut = dir.join("cut");
    let ckpt = cut.join("ckpt-00000002");
    std::fs::create_dir_all(&ckpt).unwrap();
    let mut held = 0;
    for f in std::fs::read_dir(whole.join("ckpt-00000002")).unwrap().flatten() {
        held += std::fs::copy(f.path(), ckpt.join(f.file_name())).unwrap();
    }
    // Room for the run's copy and the next checkpoint's weights, not for its optimizer state.
    let model = std::fs::metadata(ckpt.join("model.safetensors")).unwrap().len();
    let size = held + model + 16 * 1024;
    let (disk, after) = (dir.join("disk"), dir.join("after"));
    std::fs::create_dir_all(&disk).unwrap();
    let script = format!(
        "set -e; mount -t tmpfs -o size={size} tmpfs {disk}; cp -r {cut} {disk}/cut; \
         if {bin} train --resume {disk}/cut; then exit 3; fi; cp -r {disk}/cut {after}",
        disk = disk.display(),
        cut = cut.display(),
        after = after.display(),
        bin = env!("CARGO_BIN_EXE_wgtrain"),
    );
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("unshare (util-linux) runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    let line = lines[0];
    assert!(line.contains("writing checkpoint") && line.contains("ckpt-00000003"), "{err}");
    assert!(line.contains("No space left") && line.contains("last checkpoint is"), "{err}");
    assert!(line.contains("ckpt-00000002"), "{err}");
    assert!(
        !after.join(".ckpt-00000003.tmp").exists() && !after.join("ckpt-00000003").exists(),
        "partial copy removed"
    );
    // The previous checkpoint still resumes and continues the run exactly.
    let mut child = spawn(&["--resume", after.to_str().unwrap()]);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(120)), Some(0));
    assert_eq!(loss_bits(&after), loss_bits(&whole)[2..], "steps 2 and 3 as in the run that never failed");
}
