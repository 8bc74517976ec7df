//! Structured pruning (`wgtrain prune --keep-mlp F`, `--keep-heads K`): the least important MLP
//! hidden channels and, for Llama, query heads are cut out, leaving a smaller dense model.
//! Importance is measured on calibration tokens: the root of the summed squares of what the
//! channel or head feeds into the output projection (down_proj / c_proj, o_proj), times the
//! norm of the projection's columns it is multiplied by.

use super::oneshot::ChannelSums;
use crate::model::{Arch, GptConfig};
use crate::optim::ParamTable;

/// Per layer, the importance of each of the `groups` slices of `width` input channels of the
/// linear weight `proj` (out, groups·width): √(Σ_j Σx_j² · ‖W[:, j]‖²) over the slice.
fn slice_importance(
    config: &GptConfig,
    (table, values, sums): (&ParamTable, &[Vec<f32>], &ChannelSums),
    proj: &str,
    (groups, width): (usize, usize),
) -> Vec<Vec<f64>> {
    let cols = groups * width;
    (0..config.n_layer)
        .map(|l| {
            let name = format!("{}{proj}.weight", config.layer_prefix(l));
            let w = &values[table.index(&name).expect("every layer has its projections")];
            let act = &sums[&name];
            let rows = w.len() / cols;
            let column = |j: usize| act[j] * (0..rows).map(|r| (w[r * cols + j] as f64).powi(2)).sum::<f64>();
            (0..groups).map(|g| (g * width..(g + 1) * width).map(column).sum::<f64>().sqrt()).collect()
        })
        .collect()
}

/// Each layer's MLP hidden channels by importance: √(Σ over tokens of the channel's value²)
/// times the norm of its column of the down projection (how much of the output it carries).
pub fn channel_importance(
    config: &GptConfig,
    table: &ParamTable,
    values: &[Vec<f32>],
    sums: &ChannelSums,
) -> Vec<Vec<f64>> {
    slice_importance(config, (table, values, sums), config.names().down, (config.mlp(), 1))
}

/// Each Llama layer's query heads by importance, from o_proj's input (the attention output).
pub fn head_importance(
    config: &GptConfig,
    table: &ParamTable,
    values: &[Vec<f32>],
    sums: &ChannelSums,
) -> Vec<Vec<f64>> {
    slice_importance(config, (table, values, sums), config.names().proj, (config.n_head, config.head_size()))
}

/// The `keep` largest of `importance` (ties to the lower index), in their order.
fn top(importance: &[f64], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..importance.len()).collect();
    order.sort_by(|&a, &b| importance[b].total_cmp(&importance[a]).then(a.cmp(&b)));
    let mut kept = order[..keep].to_vec();
    kept.sort_unstable();
    kept
}

/// The rows `kept` (each `len` long) of a row-major matrix or vector.
fn rows(w: &[f32], kept: &[usize], len: usize) -> Vec<f32> {
    kept.iter().flat_map(|&j| w[j * len..(j + 1) * len].iter().copied()).collect()
}

/// The columns `kept` (each of width `len`) of a row-major matrix with `cols` columns.
fn columns(w: &[f32], cols: usize, kept: &[usize], len: usize) -> Vec<f32> {
    w.chunks(cols).flat_map(|row| kept.iter().flat_map(move |&j| row[j * len..(j + 1) * len].iter().copied())).collect()
}

/// The model with only the `keep` most important hidden channels of each MLP (in their
/// order): the up (and gate) projection's rows and bias and the down projection's columns of
/// those channels; config n_inner = keep.
pub fn keep_mlp(
    config: &GptConfig,
    values: &[Vec<f32>],
    importance: &[Vec<f64>],
    keep: usize,
) -> (GptConfig, Vec<Vec<f32>>) {
    let (c, f, names) = (config.n_embd, config.mlp(), config.names());
    let small = GptConfig { n_inner: Some(keep), ..config.clone() };
    let table = ParamTable::new(config.parameter_specs());
    let mut out = values.to_vec();
    for (l, imp) in importance.iter().enumerate() {
        let kept = top(imp, keep);
        let idx = |s: &str| table.index(&format!("{}{s}", config.layer_prefix(l)));
        for part in names.gate.iter().chain([&names.up]) {
            let w = idx(&format!("{part}.weight")).expect("MLP tensors");
            out[w] = rows(&values[w], &kept, c);
            if let Some(b) = idx(&format!("{part}.bias")) {
                out[b] = rows(&values[b], &kept, 1);
            }
        }
        let down = idx(&format!("{}.weight", names.down)).expect("MLP tensors");
        out[down] = columns(&values[down], f, &kept, 1);
    }
    (small, out)
}

/// Whether `--keep-heads keep` can prune `config`: Llama (GPT-2's head size is its width over
/// its heads), keeping the same number of query heads for each key/value head.
pub fn check_keep_heads(config: &GptConfig, keep: usize) -> Result<(), String> {
    if config.arch != Arch::Llama {
        return Err("--keep-heads: a GPT-2 head's size is n_embd / n_head, so heads can't be dropped; \
                    it prunes Llama models, whose head_dim stands on its own"
            .into());
    }
    let (h, kv) = (config.n_head, config.kv_heads());
    if keep == 0 || keep > h || !keep.is_multiple_of(kv) {
        let options: Vec<String> = (1..=h / kv).map(|g| (g * kv).to_string()).collect();
        return Err(format!(
            "--keep-heads {keep}: each of the {kv} key/value heads keeps as many query heads, so give one of {}",
            options.join(", ")
        ));
    }
    Ok(())
}

/// The Llama model with `keep` query heads per layer: in each group of query heads that share
/// a key/value head, the keep / n_kv_head most important, with their q_proj rows and o_proj
/// columns. Key and value projections stay whole; config n_head = keep, head_dim explicit.
pub fn keep_heads(
    config: &GptConfig,
    values: &[Vec<f32>],
    importance: &[Vec<f64>],
    keep: usize,
) -> (GptConfig, Vec<Vec<f32>>) {
    let (c, hd) = (config.n_embd, config.head_size());
    let (group, kept_per) = (config.n_head / config.kv_heads(), keep / config.kv_heads());
    let small = GptConfig { n_head: keep, head_dim: Some(hd), ..config.clone() };
    let table = ParamTable::new(config.parameter_specs());
    let mut out = values.to_vec();
    for (l, imp) in importance.iter().enumerate() {
        let kept: Vec<usize> = imp
            .chunks(group)
            .enumerate()
            .flat_map(|(g, heads)| top(heads, kept_per).into_iter().map(move |h| g * group + h))
            .collect();
        let idx = |s: &str| table.index(&format!("{}self_attn.{s}.weight", config.layer_prefix(l))).expect("attention");
        let (q, o) = (idx("q_proj"), idx("o_proj"));
        out[q] = rows(&values[q], &kept, hd * c);
        out[o] = columns(&values[o], config.n_head * hd, &kept, hd);
    }
    (small, out)
}
