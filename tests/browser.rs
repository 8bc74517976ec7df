//! The page's run (`wgtrain::browser::Run`, here natively, where its awaits wait for the GPU)
//! is `wgtrain train`'s: the same losses step by step and the same trained weights; its saved
//! model reloads; and `wgtrain serve-web` serves the page's files and nothing outside them.
//! The page itself runs in headless Chromium in CI (scripts/web-test.sh).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use pollster::block_on;
use wgtrain::browser::{Run, Spec};
use wgtrain::model::checkpoint;

use crate::common::{assert_close, gpu};
use crate::train::losses;

const STEPS: u64 = 5;

fn spec<'a>(config: &'a str, corpus: &'a [u8], resume: Option<(&'a str, &'a [u8])>) -> Spec<'a> {
    Spec { config, config_name: "web-test.toml", resume, corpus, steps: Some(STEPS) }
}

#[test]
fn browser_run_matches_train_and_its_saved_model_reloads() {
    let Some(gpu) = gpu() else { return };
    let config = std::fs::read_to_string(wgtrain::train::model_file("models/web-test.toml")).unwrap();
    let corpus = wgtrain::data::bundled_bytes().unwrap();
    let mut run = Run::new(gpu, &spec(&config, &corpus, None)).unwrap();
    let mut got = Vec::new();
    while !run.done() {
        got.push(block_on(run.step(gpu)).unwrap().loss);
    }
    let dir = std::env::temp_dir().join(format!("wgtrain-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_wgtrain"))
        .args(["--no-tune", "train", "--config", "models/web-test.toml", "--steps", &STEPS.to_string()])
        .args(["--sample-tokens", "0", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want: Vec<f32> = losses(&dir.join("metrics.jsonl")).iter().map(|&(_, l)| l).collect();
    // The same kernels on the same adapter, but for variants this process's tuning may pick.
    assert_close("losses", &got, &want, 0.0, 1e-5);
    let (bytes, json) = block_on(run.save(gpu)).unwrap();
    let cfg = wgtrain::model::GptConfig::parse(&json, true, "config.json").unwrap();
    let saved = checkpoint::parse_hf(&bytes, Path::new("page"), &cfg).unwrap();
    let trained = checkpoint::load_hf(&dir.join("model.safetensors"), &cfg).unwrap();
    assert_close("weights", &saved.concat(), &trained.concat(), 1e-6, 1e-4);
    let val = block_on(run.val_loss(gpu, 2)).unwrap().expect("the plays' last 5% hold a batch");
    let mut resumed = Run::new(gpu, &spec(&config, &corpus, Some((&json, &bytes)))).unwrap();
    assert_eq!(block_on(resumed.val_loss(gpu, 2)).unwrap(), Some(val), "the reloaded model's val loss");
    let text = block_on(run.sample(gpu, "ROMEO:", 20, (1.0, 40, 7))).unwrap();
    // 20 bytes, decoded lossily: a byte past ASCII may take more than one in the text.
    assert!((1..=20).contains(&text.chars().count()), "{text:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// GET `path` from `addr`: the status code and the body.
fn get(addr: &str, path: &str) -> (u32, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a header");
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap();
    (code, all[split + 4..].to_vec())
}

#[test]
fn serve_web_serves_the_page_the_plays_and_configs_and_nothing_outside() {
    let dir = std::env::temp_dir().join(format!("wgtrain-site-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bin = env!("CARGO_BIN_EXE_wgtrain");
    let missing = Command::new(bin).args(["serve-web", "--dir"]).arg(&dir).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("no built page there") && err.contains("make web"), "{err}");
    std::fs::create_dir_all(dir.join("pkg")).unwrap();
    std::fs::write(dir.join("index.html"), "<p>page</p>").unwrap();
    std::fs::write(dir.join("pkg/a.wasm"), [0, 97, 115, 109]).unwrap();
    let mut server = Command::new(bin)
        .args(["serve-web", "--addr", "127.0.0.1:0", "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut line).unwrap();
    let addr = line.split("http://").nth(1).and_then(|r| r.split('/').next()).unwrap_or_else(|| panic!("{line}"));
    assert_eq!(get(addr, "/"), (200, b"<p>page</p>".to_vec()));
    assert_eq!(get(addr, "/pkg/a.wasm?v=1"), (200, vec![0, 97, 115, 109]));
    assert_eq!(get(addr, "/corpus.txt"), (200, wgtrain::data::bundled_bytes().unwrap()));
    let (code, toml) = get(addr, "/models/web-test.toml");
    assert!(code == 200 && String::from_utf8_lossy(&toml).contains("n_embd = 32"), "{code}");
    for bad in ["/../Cargo.toml", "/models/../Cargo.toml", "/models/x.json", "/pkg/../../Cargo.toml", "/nothing"] {
        assert_eq!(get(addr, bad).0, 404, "{bad}");
    }
    server.kill().unwrap();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
