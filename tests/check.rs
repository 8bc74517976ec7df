//! `wgtrain check` on the test adapter: every row passes, and a variant broken on purpose
//! (WGTRAIN_CORRUPT: its kernels add 1 to the first output of each dispatch) fails its rows,
//! named, with exit status 1.

use std::process::Command;

use crate::common::gpu;

fn check(corrupt: Option<&str>) -> (i32, Vec<serde_json::Value>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wgtrain"));
    cmd.args(["check", "--quick", "--dtypes", "f32", "--json"]).env_remove("WGTRAIN_CORRUPT");
    if let Some(name) = corrupt {
        cmd.env("WGTRAIN_CORRUPT", name);
    }
    let out = cmd.output().expect("wgtrain runs");
    let rows = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    (out.status.code().unwrap_or(-1), rows, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn check_passes_here_and_fails_a_variant_broken_on_purpose() {
    if gpu().is_none() {
        return;
    }
    let (code, rows, err) = check(None);
    assert_eq!(code, 0, "{err}");
    let kernels: Vec<&str> = rows.iter().map(|r| r["kernel"].as_str().unwrap()).collect();
    for k in ["matmul forward", "matmul backward_input", "matmul backward_weight", "attention", "layernorm"] {
        assert!(kernels.contains(&k), "no {k} row: {kernels:?}");
    }
    assert!(rows.iter().all(|r| r["pass"] == true), "{rows:?}");
    let bad = "reg4x4-wg8x8";
    let (code, rows, err) = check(Some(bad));
    assert_eq!(code, 1, "{err}");
    let failed: Vec<_> = rows.iter().filter(|r| r["pass"] == false).collect();
    assert_eq!(failed.len(), 3, "one row per product: {failed:?}");
    assert!(failed.iter().all(|r| r["variant"] == bad), "{failed:?}");
    assert!(err.contains(&format!("the first matmul forward {bad}")), "{err}");
}

/// `wgtrain train` (the default run, one step) with its own tuning cache in `cache`, and
/// WGTRAIN_CORRUPT set to `corrupt`: the exit status, stdout and stderr.
fn train(cache: &std::path::Path, corrupt: Option<&str>) -> (i32, String, String) {
    let out = cache.join("out");
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wgtrain"));
    cmd.args(["train", "--steps", "1", "--out"]).arg(&out).env("WGTRAIN_CACHE_DIR", cache);
    cmd.env_remove("WGTRAIN_CORRUPT");
    if let Some(name) = corrupt {
        cmd.env("WGTRAIN_CORRUPT", name);
    }
    let o = cmd.output().expect("wgtrain runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (o.status.code().unwrap_or(-1), text(&o.stdout), text(&o.stderr))
}

/// The first run of `train` on an adapter checks the variants it is about to use and records
/// them in the tuning cache; the next run checks nothing; a variant broken on purpose stops the
/// run before its first step, named, with exit status 1.
#[test]
fn train_checks_its_variants_once_and_refuses_a_broken_one() {
    if gpu().is_none() {
        return;
    }
    let cache = std::env::temp_dir().join(format!("wgtrain-check-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let (code, out, err) = train(&cache, None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kernel variants against the CPU reference on this adapter: all pass"), "{out}");
    let file = std::fs::read_to_string(cache.join("tune.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&file).unwrap();
    let checked: Vec<String> = json["adapters"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|a| a["checked"].as_array().cloned().unwrap_or_default())
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    for k in ["matmul forward", "matmul backward_input", "matmul backward_weight", "attention", "layernorm"] {
        assert!(checked.iter().any(|l| l.starts_with(k)), "no {k} in the cache's checked list: {checked:?}");
    }
    let (code, out, err) = train(&cache, None);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("kernel variants against"), "a second run checked again: {out}");
    // "matmul forward VARIANT f32": the variant the run's forward uses.
    let forward = checked.iter().find(|l| l.starts_with("matmul forward")).unwrap();
    let bad = forward.split(' ').nth(2).unwrap();
    let (code, _, err) = train(&cache, Some(bad));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!(" {bad} f32 computes wrong values")), "{err}");
    assert!(!cache.join("out").exists(), "a refused run made its --out");
    let _ = std::fs::remove_dir_all(&cache);
}
