//! Supervised fine-tuning data: the masked loss against PyTorch's cross-entropy with
//! ignore_index −100 (tests/fixtures/sft_golden.json, scripts/make_sft_fixture.py), the chat
//! template against transformers' apply_chat_template, `prepare --format`, and the loader's
//! one-example rows.

use std::path::{Path, PathBuf};

use wgtrain::data::chat::{render, Message};
use wgtrain::data::sft::{read_token_data, Examples, COUNTED, IGNORE, START};
use wgtrain::data::sft_prepare::{chat_pieces, prepare_sft, RecordFormat, SftArgs};
use wgtrain::data::Loader;
use wgtrain::gpu::Recorder;
use wgtrain::model::{checkpoint, Gpt, GptConfig};

use crate::common::{assert_close, gpu};

fn golden() -> serde_json::Value {
    serde_json::from_str(include_str!("fixtures/sft_golden.json")).unwrap()
}

fn tiny() -> (GptConfig, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2_tiny");
    (GptConfig::load(&dir.join("config.json")).unwrap(), dir)
}

/// PyTorch's labels, −100 read as IGNORE.
fn labels(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().map_or(IGNORE, |l| if l < 0 { IGNORE } else { l as u32 })).collect()
}

/// One step's forward and backward over `x`, `y` as `accum` micro-batches of `b` rows, the
/// classifier renormalized to the counted targets: (mean loss over them, gradients).
fn masked_step(gpu: &wgtrain::Gpu, b: usize, accum: usize, x: &[u32], y: &[u32]) -> (f32, Vec<Vec<f32>>, Gpt) {
    let (config, dir) = tiny();
    let t = x.len() / (b * accum);
    let gpt = Gpt::new(gpu, config.clone(), b, t, accum).unwrap();
    gpt.write_params(gpu, &checkpoint::load_hf(&dir.join("model.safetensors"), &config).unwrap());
    for k in 0..accum {
        let span = k * b * t..(k + 1) * b * t;
        gpt.upload_batch(gpu, k, &x[span.clone()], &y[span]);
    }
    let counted = y.iter().filter(|&&t| t != IGNORE).count() as u64;
    gpt.set_counted(gpu, counted, y.len() as u64);
    let mut rec = Recorder::new(gpu);
    gpt.record_forward_backward(&mut rec);
    rec.submit().unwrap();
    let loss = (gpt.read_eval_sum(gpu).unwrap() / counted.max(1) as f64) as f32;
    (loss, gpt.read_grads(gpu).unwrap(), gpt)
}

/// The loss and every gradient equal PyTorch's with labels of −100, as one batch of 4 rows
/// and as two micro-batches of 2 that count different numbers of targets (row 2 counts none).
/// Tolerances as tests/gpt2.rs's: the loss within 1e-5, gradients 1e-7 + 1e-4·|want|.
#[test]
fn masked_loss_and_gradients_match_pytorch() {
    let Some(gpu) = gpu() else { return };
    let fx = &golden()["masked"];
    let x = labels(&fx["inputs"]);
    let y = labels(&fx["targets"]);
    let want = fx["loss"].as_f64().unwrap() as f32;
    for (b, accum) in [(4, 1), (2, 2)] {
        let (loss, grads, gpt) = masked_step(gpu, b, accum, &x, &y);
        assert!((loss - want).abs() < 1e-5, "B {b} K {accum}: loss {loss} vs PyTorch {want}");
        for (tensor, g) in gpt.arena.table.tensors.iter().zip(&grads) {
            let want: Vec<f32> =
                fx["grads"][&tensor.name].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            let got = crate::gpt2::to_hf(&tensor.name, &tensor.shape, g);
            assert_close(&format!("B {b} K {accum} grad {}", tensor.name), &got, &want, 1e-7, 1e-4);
        }
    }
}

/// A step that counts no target at all: loss 0 and zero gradients, not NaN.
#[test]
fn a_step_with_no_counted_target_is_zero_not_nan() {
    let Some(gpu) = gpu() else { return };
    let x: Vec<u32> = (0..2 * 7).map(|i| (i * 5 % 60) as u32).collect();
    let (loss, grads, _) = masked_step(gpu, 2, 1, &x, &vec![IGNORE; x.len()]);
    assert_eq!(loss, 0.0);
    assert!(grads.iter().flatten().all(|&g| g == 0.0), "every gradient is 0");
}

fn messages(v: &serde_json::Value) -> Vec<Message> {
    serde_json::from_value(v.clone()).unwrap()
}

/// SmolLM2's template renders each conversation as transformers does; turn by turn, the
/// pieces join into that text, and the counted ones are the assistant turns.
#[test]
fn chat_template_renders_as_transformers() {
    let fx = &golden()["chat"];
    let (template, eos) = (fx["template"].as_str().unwrap(), fx["eos_token"].as_str().unwrap());
    for case in fx["cases"].as_array().unwrap() {
        let m = messages(&case["messages"]);
        let gen = case["add_generation_prompt"].as_bool().unwrap();
        let text = render(template, &m, gen, ("", eos)).unwrap();
        assert_eq!(text, case["text"].as_str().unwrap());
        if gen {
            continue;
        }
        let pieces = chat_pieces(template, eos, &m).unwrap();
        assert_eq!(pieces.iter().map(|(p, _)| p.as_str()).collect::<String>(), text);
        let counted: Vec<String> = pieces.iter().filter(|p| p.1).map(|p| p.0.clone()).collect();
        let answers: Vec<String> =
            m.iter().filter(|m| m.role == "assistant").map(|m| format!("{}<|im_end|>\n", m.content)).collect();
        assert_eq!(counted, answers);
    }
    let none = [Message { role: "user".into(), content: "hi".into() }];
    assert!(chat_pieces(template, eos, &none).unwrap_err().contains("no assistant"));
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgtrain-sft-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sft_args(input: PathBuf, out: PathBuf, format: RecordFormat) -> SftArgs {
    SftArgs {
        inputs: vec![input],
        out,
        tokenizer: wgtrain::data::prepare::TokenizerChoice::Byte,
        format,
        val_fraction: 0.0,
        seed: 1,
        eot: None,
        force: false,
    }
}

/// Byte tokens: each example is its prompt's bytes, then its completion's and the
/// end-of-text; the completion and the end-of-text count, the first byte starts it.
/// Malformed records are counted and left out.
#[test]
fn prepare_prompt_completion_masks_the_prompt() {
    let d = temp("pc");
    let input = d.join("pairs.jsonl");
    let lines = [
        r#"{"prompt": "ab", "completion": "XYZ"}"#,
        "not json",
        r#"{"prompt": "q"}"#,
        "",
        r#"{"prompt": "", "completion": "k"}"#,
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();
    let s = prepare_sft(&sft_args(input.clone(), d.join("out"), RecordFormat::PromptCompletion)).unwrap();
    assert_eq!((s.records_in, s.malformed, s.train_examples, s.counted_tokens), (4, 2, 2, 6));
    let (tokens, examples) = read_token_data(&d.join("out/train.bin")).unwrap();
    let eot = s.eot;
    assert_eq!(tokens, [b'a' as u32, b'b' as u32, b'X' as u32, b'Y' as u32, b'Z' as u32, eot, b'k' as u32, eot]);
    let flags = wgtrain::data::sft::read_mask(&d.join("out/train.mask")).unwrap();
    let (c, s0) = (COUNTED, START);
    assert_eq!(flags, [s0, 0, c, c, c, c, s0 | c, c]);
    assert_eq!(examples.unwrap().len(), 2);
    let again = prepare_sft(&sft_args(input, d.join("out"), RecordFormat::PromptCompletion)).unwrap_err();
    assert!(again.contains("--force"), "{again}");
    let chat = prepare_sft(&sft_args(d.join("pairs.jsonl"), d.join("chat"), RecordFormat::Chat)).unwrap_err();
    assert!(chat.contains("no chat template"), "{chat}");
}

/// Examples of distinct tokens (example e holds only e·100 + i): every row holds one
/// example, so no position sees another's tokens; targets count only where the mask says,
/// padding counts nothing, a long example is cut at T + 1, and shuffled epochs visit each
/// example once and resume exactly.
#[test]
fn rows_never_cross_an_example_boundary() {
    let lens = [3usize, 9, 1, 5, 12, 4, 7];
    let (mut tokens, mut flags) = (Vec::new(), Vec::new());
    for (e, &n) in lens.iter().enumerate() {
        for i in 0..n {
            tokens.push((e * 100 + i) as u32);
            flags.push(if i == 0 {
                START
            } else if i >= n / 2 {
                COUNTED
            } else {
                0
            });
        }
    }
    let ex = Examples::from_flags(flags.clone()).unwrap();
    assert_eq!((ex.len(), ex.longer_than(6)), (7, 2));
    let (b, t) = (2, 6);
    let mut l = Loader::with_examples(tokens.clone(), ex.clone(), b, t, true, 3).unwrap();
    let mut seen = vec![0; lens.len()];
    for _ in 0..l.batches() {
        let (x, y) = l.next_batch();
        for r in 0..b {
            let (xr, yr) = (&x[r * t..(r + 1) * t], &y[r * t..(r + 1) * t]);
            let e = xr[0] as usize / 100;
            seen[e] += 1;
            assert!(xr.iter().all(|&v| v as usize / 100 == e), "row {xr:?} holds one example");
            let n = lens[e].min(t + 1);
            for (i, &yi) in yr.iter().enumerate() {
                let counted = i + 1 < n && (i + 1) >= lens[e] / 2;
                assert_eq!(yi, if counted { (e * 100 + i + 1) as u32 } else { IGNORE }, "example {e} target {i}");
            }
        }
    }
    assert_eq!(seen.iter().sum::<usize>(), 6, "3 batches of 2: one example of 7 left for the next epoch");
    assert!(seen.iter().all(|&s| s <= 1), "an epoch takes each example at most once: {seen:?}");
    let st = l.state();
    let ahead = l.counted_ahead(2);
    let (a, b2) = (l.next_batch(), l.next_batch());
    let counted = a.1.iter().chain(&b2.1).filter(|&&y| y != IGNORE).count() as u64;
    assert_eq!(ahead, counted, "counted_ahead counts what the batches then hold");
    l.restore(st).unwrap();
    assert_eq!(l.next_batch(), a, "restored, the loader gives the same batch");
    assert!(Examples::from_flags(vec![0, START]).is_err(), "the first token must start an example");
    assert!(Loader::with_examples(tokens, ex, 8, t, false, 0).is_err(), "7 examples can't fill 8 rows");
}
