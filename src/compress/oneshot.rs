//! One-shot pruning of a trained model (`wgtrain prune`): unstructured magnitude or Wanda
//! (Sun et al. 2023: |W_ij|·‖X_j‖₂, compared within each output row), and the calibration
//! that it and structured pruning (super::structured) score with: the activation norms of
//! the model's forward on calibration tokens, summed on the GPU (kernels::prune::channel_sumsq).

use super::prune::PruneScope;
use crate::data::Loader;
use crate::gpu::{Category, Dispatch, Gpu, GpuError, Recorder};
use crate::kernels::{prune::channel_sumsq, View};
use crate::model::export::is_linear_weight;
use crate::model::{Gpt, GptConfig, Precision};
use crate::optim::ParamTable;

/// How unstructured pruning scores a weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// |W|, ranked globally or per tensor (--scope).
    Magnitude,
    /// |W|·‖X_j‖₂ over calibration tokens, ranked within each output row.
    Wanda,
}

/// Per linear weight (by parameter name), the sum over the calibration tokens of the square
/// of each of its input channels.
pub type ChannelSums = std::collections::HashMap<String, Vec<f64>>;

/// Zeroes exactly ⌊s·n⌋ of the linear weights of smallest magnitude, over all of them
/// (global) or in each tensor (layer); ties go by position. Returns the count zeroed.
pub fn magnitude(table: &ParamTable, values: &mut [Vec<f32>], s: f64, scope: PruneScope) -> u64 {
    let linear: Vec<usize> = (0..values.len()).filter(|&i| is_linear_weight(&table.tensors[i].name)).collect();
    let groups: Vec<Vec<usize>> = match scope {
        PruneScope::Global => vec![linear],
        PruneScope::Layer => linear.into_iter().map(|i| vec![i]).collect(),
    };
    let mut zeroed = 0;
    for g in groups {
        let mut all: Vec<(f32, usize, usize)> =
            g.iter().flat_map(|&t| values[t].iter().enumerate().map(move |(j, w)| (w.abs(), t, j))).collect();
        let k = ((s * all.len() as f64).floor() as usize).min(all.len());
        if k == 0 {
            continue;
        }
        all.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        for &(_, t, j) in &all[..k] {
            values[t][j] = 0.0;
        }
        zeroed += k as u64;
    }
    zeroed
}

/// Wanda's score of each weight of an (out, in) matrix: |W_ij|·√(Σ x_j²).
pub fn wanda_scores(w: &[f32], cols: usize, sumsq: &[f64]) -> Vec<f64> {
    w.iter().enumerate().map(|(i, x)| x.abs() as f64 * sumsq[i % cols].sqrt()).collect()
}

/// Zeroes, in every output row of each linear weight, the ⌊s·in⌋ weights of lowest Wanda
/// score (ties by position). Returns the count zeroed.
pub fn wanda(table: &ParamTable, values: &mut [Vec<f32>], s: f64, sums: &ChannelSums) -> Result<u64, String> {
    let mut zeroed = 0;
    for (t, v) in table.tensors.iter().zip(values.iter_mut()) {
        if !is_linear_weight(&t.name) {
            continue;
        }
        let sumsq = sums.get(&t.name).ok_or_else(|| format!("no calibration norms for {}", t.name))?;
        let cols = t.shape[1];
        let scores = wanda_scores(v, cols, sumsq);
        let k = (s * cols as f64).floor() as usize;
        for r in 0..t.shape[0] {
            let mut order: Vec<usize> = (0..cols).collect();
            order.sort_by(|&a, &b| scores[r * cols + a].total_cmp(&scores[r * cols + b]).then(a.cmp(&b)));
            order[..k].iter().for_each(|&j| v[r * cols + j] = 0.0);
            zeroed += k as u64;
        }
    }
    Ok(zeroed)
}

/// The calibration forward: runs `batches` batches of `loader` through `values` in f32 on the
/// GPU and sums the squares of every linear weight's input channels there.
pub fn channel_sums(
    gpu: &Gpu,
    config: &GptConfig,
    values: &[Vec<f32>],
    (loader, b, t): (&mut Loader, usize, usize),
    batches: usize,
) -> Result<ChannelSums, GpuError> {
    let table = ParamTable::new(config.parameter_specs());
    let gpt = Gpt::for_inference(gpu, config.clone(), b, t, Precision::F32, table, None)?;
    gpt.write_params(gpu, values);
    let inputs = gpt.linear_inputs();
    // Each weight's sums on 64 elements, a binding offset every adapter takes.
    let mut offsets = Vec::new();
    let mut total = 0;
    for (_, _, cols) in &inputs {
        offsets.push(total);
        total += (*cols as u64).next_multiple_of(64);
    }
    let acc = gpu.pool.storage(Category::Scratch, 4 * total.max(1))?;
    let rows = (gpt.b * gpt.t) as u32;
    let ops = inputs
        .iter()
        .zip(&offsets)
        .map(|((_, x, cols), &off)| channel_sumsq(gpu, View::at(&acc, off), x.v(), rows, *cols))
        .collect::<Result<Vec<Dispatch>, _>>()?;
    let mut rec = Recorder::new(gpu);
    rec.clear(&acc, 0, acc.size());
    rec.submit()?;
    loader.pos = 0;
    for _ in 0..batches.clamp(1, loader.batches()) {
        let (x, y) = loader.next_batch();
        gpt.upload_batch(gpu, 0, &x, &y);
        let mut rec = Recorder::new(gpu);
        gpt.record_eval(&mut rec);
        rec.run(&ops);
        rec.submit()?;
    }
    let sums: Vec<f32> = gpu.read(&acc, 0, total as usize)?;
    Ok(inputs
        .iter()
        .zip(&offsets)
        .map(|((name, _, cols), &off)| {
            (name.clone(), sums[off as usize..][..*cols as usize].iter().map(|&s| s as f64).collect())
        })
        .collect())
}
