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
