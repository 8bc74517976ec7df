//! Structured pruning of a Llama (`wgtrain prune --keep-heads K --keep-mlp F`): grouped query
//! heads and SwiGLU channels cut out into a smaller dense model whose logits are the full
//! model's with the dropped parts' output columns zeroed.

use wgtrain::compress::PruneArgs;
use wgtrain::model::{checkpoint, Arch, GptConfig};
use wgtrain::optim::ParamTable;

use crate::common::gpu;
use crate::prune::{logits, model_dir, prune_cli};

/// 6 query heads on 2 KV heads of size 6 (not C / n_head), MLP 36, vocab 29, untied.
fn tiny_llama() -> GptConfig {
    GptConfig {
        arch: Arch::Llama,
        n_kv_head: Some(2),
        head_dim: Some(6),
        n_inner: Some(36),
        tie_word_embeddings: Some(false),
        ..GptConfig::gpt2(2, 6, 20, 29, 16)
    }
}

/// Zeroes the columns [j·w, (j+1)·w) of every row of a matrix `cols` wide.
fn zero_columns(m: &mut [f32], cols: usize, j: usize, w: usize) {
    m.chunks_mut(cols).for_each(|row| row[j * w..(j + 1) * w].fill(0.0));
}

/// Which blocks of `len` of `full` appear in `kept`, by index.
fn kept_blocks(full: &[f32], kept: &[f32], len: usize) -> Vec<usize> {
    (0..full.len() / len).filter(|&j| kept.chunks(len).any(|k| k == &full[j * len..(j + 1) * len])).collect()
}

#[test]
fn llama_heads_and_mlp_channels_are_cut_by_importance() {
    let Some(gpu) = gpu() else { return };
    let cfg = tiny_llama();
    let dir = model_dir(gpu, "llama-structured", &cfg);
    let (_, mut values, _) = wgtrain::compress::load_dir(&dir.join("model")).unwrap();
    let table = ParamTable::new(cfg.parameter_specs());
    let at = |l: usize, s: &str| table.index(&format!("model.layers.{l}.{s}.weight")).unwrap();
    // Head 1 of layer 0 and channel 5 of layer 1 carry nothing: they must be the ones to go.
    zero_columns(&mut values[at(0, "self_attn.o_proj")], 36, 1, 6);
    zero_columns(&mut values[at(1, "mlp.down_proj")], 36, 5, 1);
    checkpoint::save_hf(&dir.join("model"), &cfg, &values).unwrap();

    let a = PruneArgs { keep_heads: Some(4), keep_mlp: Some(0.5), ..prune_cli(&dir, "small") };
    let r = wgtrain::compress::prune_model(gpu, &a).unwrap();
    assert_eq!((r.heads, r.mlp), ((6, 4), (36, 18)));
    let small = GptConfig::load(&dir.join("small/config.json")).unwrap();
    assert_eq!((small.n_head, small.head_size(), small.kv_heads(), small.mlp()), (4, 6, 2, 18));
    let (q, mlp) = (2 * 6 * 20 * 2, 18 * 20 * 3);
    assert_eq!(r.params.0 - r.params.1, 2 * (q + mlp) as u64, "q rows and o columns, gate/up rows and down columns");
    let (_, pruned, _) = wgtrain::compress::load_dir(&dir.join("small")).unwrap();

    let mut masked = values.clone();
    for l in 0..2 {
        let heads = kept_blocks(&values[at(l, "self_attn.q_proj")], &pruned[at(l, "self_attn.q_proj")], 120);
        assert_eq!(heads.len(), 4);
        assert_eq!(heads.iter().filter(|&&h| h < 3).count(), 2, "layer {l}: two query heads per KV head: {heads:?}");
        if l == 0 {
            assert!(!heads.contains(&1), "the silent head 1 was kept: {heads:?}");
        }
        (0..6)
            .filter(|h| !heads.contains(h))
            .for_each(|h| zero_columns(&mut masked[at(l, "self_attn.o_proj")], 36, h, 6));
        let chans = kept_blocks(&values[at(l, "mlp.gate_proj")], &pruned[at(l, "mlp.gate_proj")], 20);
        assert_eq!(chans.len(), 18);
        if l == 1 {
            assert!(!chans.contains(&5), "the silent channel 5 was kept");
        }
        (0..36)
            .filter(|j| !chans.contains(j))
            .for_each(|j| zero_columns(&mut masked[at(l, "mlp.down_proj")], 36, j, 1));
    }
    let x: Vec<u32> = (0..11).map(|i| (i * 5 % 29) as u32).collect();
    let (a, b) = (logits(gpu, &small, &pruned, &x), logits(gpu, &cfg, &masked, &x));
    crate::common::assert_close("pruned vs masked logits", &a, &b, 1e-5, 1e-4);

    // The GGUF export keeps head_dim 6 beside n_head 4 (llama.*.key_length).
    let format = wgtrain::model::export::Format { qtype: wgtrain::formats::QType::F32, embeddings: true };
    wgtrain::compress::quantize(&dir.join("small"), format, &dir.join("gguf")).unwrap();
    let m = wgtrain::model::export::read_gpt2(&dir.join("gguf/model.gguf")).unwrap();
    assert_eq!((m.config.n_head, m.config.head_size()), (4, 6));
    std::fs::remove_dir_all(&dir).ok();
}

/// --keep-heads names what it can take: a multiple of n_kv_head up to n_head, Llama only.
#[test]
fn keep_heads_refuses_what_it_cannot_cut() {
    let Some(gpu) = gpu() else { return };
    let dir = model_dir(gpu, "llama-heads-bad", &tiny_llama());
    for k in [0, 3, 8] {
        let e = wgtrain::compress::prune_model(gpu, &PruneArgs { keep_heads: Some(k), ..prune_cli(&dir, "x") });
        assert!(e.unwrap_err().contains("give one of 2, 4, 6"), "--keep-heads {k}");
    }
    let both = PruneArgs { keep_heads: Some(2), to: Some(0.5), ..prune_cli(&dir, "x") };
    assert!(wgtrain::compress::prune_model(gpu, &both).unwrap_err().contains("not both"));
    let gpt2 = model_dir(gpu, "gpt2-heads", &GptConfig::gpt2(1, 2, 16, 29, 16));
    let e = wgtrain::compress::prune_model(gpu, &PruneArgs { keep_heads: Some(1), ..prune_cli(&gpt2, "x") });
    assert!(e.unwrap_err().contains("Llama"));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&gpt2).ok();
}
