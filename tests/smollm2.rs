//! The real pretrained model, SmolLM2-135M-Instruct (Q4_1 GGUF, fetched by
//! scripts/fetch_smollm2.sh into the cache directory, or at WGTRAIN_SMOLLM2): its tokenizer
//! gives transformers' ids, its greedy continuations of fixed prompts equal transformers' in
//! float32 on the same dequantized weights (tests/fixtures/smollm2_greedy.json, from
//! scripts/make_smollm2_fixture.py), and it evaluates the bundled plays. The tests run when the
//! file is there; under WGTRAIN_REQUIRE_MODEL=1 (CI) a missing file fails them.

use wgtrain::gpu::Recorder;
use wgtrain::model::{Gpt, Precision};

use crate::common::gpu;

fn model() -> Option<wgtrain::model::export::GgufModel> {
    let path = wgtrain::compress::smollm2_path().filter(|p| p.is_file());
    let Some(path) = path else {
        let required = std::env::var("WGTRAIN_REQUIRE_MODEL").is_ok_and(|v| v == "1");
        assert!(!required, "WGTRAIN_REQUIRE_MODEL=1 and no SmolLM2 file: run scripts/fetch_smollm2.sh");
        eprintln!("skipping: no SmolLM2 file (scripts/fetch_smollm2.sh fetches it)");
        return None;
    };
    Some(wgtrain::model::export::read_gpt2(&path).unwrap())
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Prompt ids and 16 greedy tokens per prompt, exactly; the decoder's logits are f32 sums of
/// dequantized weights in another order than PyTorch's, and no case has a near tie.
#[test]
fn smollm2_greedy_continuations_equal_transformers() {
    let Some(gpu) = gpu() else { return };
    let Some(m) = model() else { return };
    assert_eq!((m.config.n_layer, m.config.kv_heads(), m.config.vocab_size), (30, 3, 49152));
    let fx: serde_json::Value = serde_json::from_str(include_str!("fixtures/smollm2_greedy.json")).unwrap();
    let gpt = Gpt::from_gguf(gpu, &m, 1, 1, Precision::F32).unwrap();
    for case in fx["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let got_ids = m.tokenizer.encode(prompt).unwrap();
        assert_eq!(got_ids, ids(&case["prompt_ids"]), "prompt ids of {prompt:?}");
        let mut dec = gpt.decoder(gpu).unwrap();
        let mut logits = Vec::new();
        for &t in &got_ids {
            logits = dec.next(gpu, t).unwrap();
        }
        let mut out = Vec::new();
        for _ in 0..ids(&case["greedy"]).len() {
            let next = wgtrain::train::pick(&logits, 0.0, 1, &mut wgtrain::reference::Rng::new(0));
            out.push(next);
            logits = dec.next(gpu, next).unwrap();
        }
        assert_eq!(out, ids(&case["greedy"]), "greedy continuation of {prompt:?}: {:?}", m.tokenizer.decode(&out));
    }
}

/// Two batches of 128 tokens of the plays (bytes 20,000 to 40,000 of Macbeth), tokenized with
/// the model's tokenizer, evaluate to transformers' float32 losses on the same dequantized
/// weights (4.61375 and 4.22695 nats per token, measured with torch 2.15; a uniform guess over
/// 49,152 tokens is 10.8), within 2e-3.
#[test]
fn smollm2_evaluates_the_plays() {
    let Some(gpu) = gpu() else { return };
    let Some(m) = model() else { return };
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/shakespeare/macbeth_gut.txt")).unwrap();
    let tokens = m.tokenizer.encode(&text[20_000..40_000]).unwrap();
    let t = 128;
    let gpt = Gpt::from_gguf(gpu, &m, 1, t, Precision::F32).unwrap();
    for (k, want) in [4.61375f32, 4.22695].into_iter().enumerate() {
        let row = &tokens[k * t..][..t + 1];
        gpt.upload_batch(gpu, 0, &row[..t], &row[1..]);
        let mut rec = Recorder::new(gpu);
        gpt.record_eval(&mut rec);
        rec.submit().unwrap();
        let loss = gpt.read_eval_loss(gpu).unwrap();
        eprintln!("smollm2 loss on macbeth batch {k}: {loss}");
        assert!((loss - want).abs() < 2e-3, "batch {k}: loss {loss}, transformers {want}");
    }
}

/// The chat conversations of tests/fixtures/sft_golden.json tokenize with the model's own
/// tokenizer, turn by turn as `prepare --format chat` cuts them, into transformers' ids of
/// `apply_chat_template(..., tokenize=True)`: no piece boundary changes a token.
#[test]
fn smollm2_tokenizes_chat_turns_as_transformers() {
    use wgtrain::data::chat::Message;
    use wgtrain::data::sft_prepare::chat_pieces;
    let Some(m) = model() else { return };
    let fx: serde_json::Value = serde_json::from_str(include_str!("fixtures/sft_golden.json")).unwrap();
    let chat = &fx["chat"];
    let (template, eos) = (chat["template"].as_str().unwrap(), chat["eos_token"].as_str().unwrap());
    assert_eq!(m.chat_template.as_deref(), Some(template), "the GGUF's template is the fixture's");
    let mut checked = 0;
    for case in chat["cases"].as_array().unwrap() {
        let want = ids(&case["ids"]);
        assert_eq!(m.tokenizer.encode(case["text"].as_str().unwrap()).unwrap(), want, "whole text");
        if case["add_generation_prompt"].as_bool().unwrap() {
            continue;
        }
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let pieces = chat_pieces(template, eos, &messages).unwrap();
        let got: Vec<u32> = pieces.iter().flat_map(|(p, _)| m.tokenizer.encode(p).unwrap()).collect();
        assert_eq!(got, want, "turn by turn: {:?}", pieces);
        checked += 1;
    }
    assert!(checked >= 2, "the fixture has conversations to cut");
}
