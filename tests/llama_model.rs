//! Llama end to end against PyTorch + transformers' LlamaForCausalLM
//! (tests/fixtures/llama_tiny_{untied,tied}, written by scripts/make_llama_fixture.py): the
//! HF checkpoint loads, and the logits, the loss, every parameter gradient and the losses of 10
//! AdamW steps match. Sizes are awkward: vocab 67, T 11, head size 6, 3 query heads on 1 KV
//! head, MLP 29; one model with its own lm_head, one tied.

use std::path::{Path, PathBuf};

use wgtrain::model::{checkpoint, Arch, GptConfig};
use wgtrain::Gpu;

use crate::common::gpu;

fn fixture(name: &str) -> (GptConfig, serde_json::Value, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let config = GptConfig::load(&dir.join("config.json")).unwrap();
    let text = std::fs::read_to_string(dir.with_extension("json")).unwrap();
    (config, serde_json::from_str(&text).unwrap(), dir)
}

fn matches_pytorch(gpu: &Gpu, name: &str) {
    let (config, fx, dir) = fixture(name);
    assert_eq!(config.arch, Arch::Llama);
    crate::common::matches_golden(gpu, name, &config, &fx, &dir, |_, _, g| g.to_vec());
}

#[test]
fn llama_untied_matches_pytorch() {
    let Some(gpu) = gpu() else { return };
    matches_pytorch(gpu, "llama_tiny_untied");
}

#[test]
fn llama_tied_matches_pytorch() {
    let Some(gpu) = gpu() else { return };
    matches_pytorch(gpu, "llama_tiny_tied");
}

/// Saving writes LlamaForCausalLM's config.json and names, which load back to the same
/// config and values.
#[test]
fn llama_checkpoint_round_trips() {
    for name in ["llama_tiny_untied", "llama_tiny_tied"] {
        let (config, _, dir) = fixture(name);
        let params = checkpoint::load_hf(&dir.join("model.safetensors"), &config).unwrap();
        let out = std::env::temp_dir().join(format!("wgtrain-llama-ckpt-{name}-{}", std::process::id()));
        checkpoint::save_hf(&out, &config, &params).unwrap();
        let again_cfg = GptConfig::load(&out.join("config.json")).unwrap();
        assert_eq!(again_cfg, config, "{name}: config.json round trip");
        assert_eq!(checkpoint::load_hf(&out.join("model.safetensors"), &again_cfg).unwrap(), params);
        std::fs::remove_dir_all(&out).ok();
    }
}

/// `wgtrain quantize` of a Llama writes the llama.* metadata and q/k rows in llama.cpp's
/// order (head size 6: the permutation moves rows); reading the file back undoes it, so an
/// f32 export returns the same config and values bit for bit, and q8_0 (rows of 13 and 29
/// are not whole blocks) keeps every tensor f32.
#[test]
fn llama_gguf_export_round_trips() {
    use wgtrain::{formats::QType, model::export};
    for name in ["llama_tiny_untied", "llama_tiny_tied"] {
        let (config, _, dir) = fixture(name);
        let params = checkpoint::load_hf(&dir.join("model.safetensors"), &config).unwrap();
        let out = std::env::temp_dir().join(format!("wgtrain-llama-gguf-{name}-{}", std::process::id()));
        let format = export::Format { qtype: QType::F32, embeddings: true };
        wgtrain::compress::quantize(&dir, format, &out).unwrap();
        let m = export::read_gpt2(&out.join("model.gguf")).unwrap();
        // head_dim equal to n_embd / n_head reads back unset.
        assert_eq!(GptConfig { head_dim: config.head_dim, ..m.config.clone() }, config, "{name}: the config");
        let values: Vec<Vec<f32>> =
            m.tensors.iter().map(|t| wgtrain::formats::quant::dequantize(&t.bytes, t.qtype)).collect();
        assert_eq!(values, params, "{name}: the tensors read back");
        let raw = wgtrain::formats::gguf::Gguf::read(&out.join("model.gguf")).unwrap();
        let q = raw.tensor("blk.0.attn_q.weight").unwrap();
        let specs = config.parameter_specs();
        let at = specs.iter().position(|(n, _)| n == "model.layers.0.self_attn.q_proj.weight").unwrap();
        assert_ne!(raw.data(q), bytemuck::cast_slice::<f32, u8>(&params[at]), "{name}: q rows in llama.cpp's order");
        std::fs::remove_dir_all(&out).ok();
    }
}

/// The KV-cache decoder (keys rotated at their positions as they enter the cache, grouped
/// queries) gives the full forward's logits at every position.
#[test]
fn llama_kv_cache_decoding_matches_the_full_forward() {
    let Some(gpu) = gpu() else { return };
    let (config, fx, dir) = fixture("llama_tiny_untied");
    crate::common::decoding_matches_forward(gpu, "llama", &config, &fx, &dir);
}

/// Config errors name the field: a GPT-2 with a Llama-only setting, heads that don't group.
#[test]
fn llama_config_errors_name_the_field() {
    let err = GptConfig::parse(
        "n_layer = 1\nn_head = 2\nn_embd = 8\nvocab_size = 5\nn_positions = 4\nn_kv_head = 1\n",
        false,
        "m.toml",
    )
    .unwrap_err();
    assert!(err.to_string().contains("n_kv_head is a Llama setting"), "{err}");
    let text =
        "arch = \"llama\"\nn_layer = 1\nn_head = 3\nn_kv_head = 2\nn_embd = 12\nvocab_size = 5\nn_positions = 4\n";
    let err = GptConfig::parse(text, false, "m.toml").unwrap_err();
    assert!(err.to_string().contains("n_head 3 is not a multiple of n_kv_head 2"), "{err}");
    let json = r#"{"model_type": "llama", "hidden_act": "gelu", "num_hidden_layers": 1}"#;
    let err = GptConfig::parse(json, true, "config.json").unwrap_err();
    assert!(err.to_string().contains("hidden_act"), "{err}");
}
