//! `wgtrain bench`: kernel timings on the chosen adapter, with the baselines measured in the
//! same run.
//!
//! Layer: the top, beside train (whose step it times); it may use every module, the
//! reference oracle included.

mod report;
mod train;

pub use report::{print_matmul, print_optim, print_train, print_train_pair};
pub use train::{peak_f16_tflops, peak_tflops, train, TrainBench};

use crate::gpu::{Category, Dispatch, Gpu, GpuBuffer, GpuError};
use crate::reference::Rng;
use crate::tune::matmul::{Dims, Matmul, Product, Variant};

/// One timed kernel at one size.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MatmulRow {
    pub kernel: &'static str,
    /// The variant's name; "naive" for the baseline of one thread per output.
    pub variant: String,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    /// Median time of one call.
    pub ms: f64,
    pub gflops: f64,
}

/// Median seconds per run of each op. Each sample records an op `reps` times into one submit,
/// `reps` chosen so that a sample takes about 50 ms, and waits for it. Samples go round-robin
/// over the ops, so a change in the machine's speed during the run touches every op alike.
pub fn time_ops(gpu: &Gpu, ops: &[&[Dispatch]], samples: usize) -> Result<Vec<f64>, GpuError> {
    let run = |op: &[Dispatch], reps: usize| crate::gpu::seconds_per_run(gpu, op, reps);
    // A warm-up run of each op gives a first estimate.
    let reps: Vec<usize> = ops
        .iter()
        .map(|op| run(op, 1).map(|t| ((0.05 / t.max(1e-7)).ceil() as usize).clamp(1, 200)))
        .collect::<Result<_, _>>()?;
    let mut times = vec![Vec::new(); ops.len()];
    for _ in 0..samples.max(1) {
        for (i, op) in ops.iter().enumerate() {
            times[i].push(run(op, reps[i])?);
        }
    }
    Ok(times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect())
}

fn random_buffer(gpu: &Gpu, rng: &mut Rng, len: usize) -> Result<GpuBuffer, GpuError> {
    gpu.pool.storage_from(&gpu.queue, Category::Scratch, &rng.vec(len))
}

/// Times forward and both backward products in every variant, and the naive baseline, at
/// each (M, N, K), round-robin in one run.
pub fn matmul(
    gpu: &Gpu,
    sizes: &[(u32, u32, u32)],
    samples: usize,
    variants: &[Variant],
) -> Result<Vec<MatmulRow>, GpuError> {
    let mut rng = Rng::new(1);
    let mut rows = Vec::new();
    for &(m, n, k) in sizes {
        let d = Dims::linear(m, n, k);
        let (mu, nu, ku) = (m as usize, n as usize, k as usize);
        let inp = random_buffer(gpu, &mut rng, mu * ku)?;
        let w = random_buffer(gpu, &mut rng, nu * ku)?;
        let bias = random_buffer(gpu, &mut rng, nu)?;
        let dout = random_buffer(gpu, &mut rng, mu * nu)?;
        let out = gpu.pool.storage(Category::Scratch, 4 * (mu * nu) as u64)?;
        let dinp = gpu.pool.storage(Category::Scratch, 4 * (mu * ku) as u64)?;
        let dw = random_buffer(gpu, &mut rng, nu * ku)?;
        let mut ops: Vec<(&'static str, String, Vec<Dispatch>)> = Vec::new();
        for &v in variants {
            let mm = Matmul::with_variant(gpu, v);
            let name = v.to_string();
            let fwd = mm.forward((&out).into(), (&inp).into(), (&w).into(), Some((&bias).into()), d)?;
            ops.push((Product::Forward.entry(), name.clone(), fwd));
            if !v.serves(Product::BackwardInput) {
                continue; // a forward-only variant: its backward rows would be the baseline's
            }
            let bi = mm.backward_input((&dinp).into(), (&dout).into(), (&w).into(), d)?;
            ops.push((Product::BackwardInput.entry(), name.clone(), bi));
            let bw = mm.backward_weight((&dw).into(), (&dout).into(), (&inp).into(), d)?;
            ops.push((Product::BackwardWeight.entry(), name, bw));
        }
        let naive = Matmul::new(gpu).naive((&out).into(), (&inp).into(), (&w).into(), Some((&bias).into()), d)?;
        ops.push(("matmul_naive", "naive".into(), naive));
        let refs: Vec<&[Dispatch]> = ops.iter().map(|(.., op)| op.as_slice()).collect();
        for ((kernel, variant, _), s) in ops.iter().zip(time_ops(gpu, &refs, samples)?) {
            let gflops = d.flops() / s / 1e9;
            rows.push(MatmulRow { kernel, variant: variant.clone(), m, n, k, ms: s * 1e3, gflops });
        }
    }
    Ok(rows)
}

/// Parses --variant: `auto` (this adapter's candidates), `all`, or names separated by commas.
/// The baseline is always added, so every row has its ratio.
pub fn parse_variants(gpu: &Gpu, s: &str) -> Result<Vec<Variant>, String> {
    let mut v: Vec<Variant> = match s.trim() {
        "auto" => {
            // Every candidate of some product, at a K where the split-k forward is one.
            let d = Dims::linear(1024, 1024, 1024);
            let mut v = crate::tune::candidates(gpu, Product::Forward, d);
            for x in crate::tune::candidates(gpu, Product::BackwardInput, d) {
                if !v.contains(&x) {
                    v.push(x);
                }
            }
            v
        }
        "all" => Variant::all(),
        list => list
            .split(',')
            .map(|x| Variant::parse(x.trim()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--variant: {e}"))?,
    };
    if !v.contains(&Variant::BASELINE) {
        v.insert(0, Variant::BASELINE);
    }
    Ok(v)
}

/// Parses "MxNxK,MxNxK,...".
pub fn parse_sizes(s: &str) -> Result<Vec<(u32, u32, u32)>, String> {
    s.split(',')
        .map(|item| {
            let v: Vec<u32> = item
                .trim()
                .split(['x', 'X'])
                .map(|x| x.parse::<u32>().ok().filter(|&x| x > 0))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("--sizes: {item:?} is not MxNxK with positive integers, e.g. 1024x1024x1024"))?;
            match v[..] {
                [m, n, k] => Ok((m, n, k)),
                _ => Err(format!("--sizes: {item:?} is not MxNxK, e.g. 1024x1024x1024")),
            }
        })
        .collect()
}

/// One timed optimizer update (or the copy that bounds them all).
#[derive(Clone, Debug, serde::Serialize)]
pub struct OptimRow {
    pub name: &'static str,
    pub params: u64,
    pub tensors: usize,
    pub ms: f64,
    /// bytes_per_param · params / time
    pub gbps: f64,
    /// The least each update must move per parameter: AdamW 28 (read θ, g, m, v; write θ, m,
    /// v), SGD 20 (read θ, g, b; write θ, b), LAMB 40 (its first pass moves AdamW's 28, storing
    /// u where g was; the last reads θ and u and writes θ: 12 more), copy 8.
    pub bytes_per_param: u64,
    pub frac_of_copy: f64,
}

/// `tensors` tensors of about `params` elements in all, of uneven sizes, alternately 2-D and 1-D.
pub fn optim_table(params: u64, tensors: usize) -> crate::optim::ParamTable {
    let mut rng = Rng::new(5);
    let weights: Vec<f64> = (0..tensors).map(|_| 1.0 + 0.8 * rng.uniform() as f64).collect();
    let total: f64 = weights.iter().sum();
    crate::optim::ParamTable::new(weights.iter().enumerate().map(|(i, w)| {
        let n = ((params as f64 * w / total) as usize).max(1);
        let shape = if i % 2 == 0 && n >= 16 { vec![n / 16, 16] } else { vec![n] };
        (format!("t{i}"), shape)
    }))
}

/// Times copy, the fused AdamW, LAMB and SGD updates and an unfused AdamW on one arena.
pub fn optim(gpu: &Gpu, params: u64, tensors: usize, samples: usize) -> Result<Vec<OptimRow>, GpuError> {
    use crate::kernels::elementwise::{self, Span};
    use crate::optim::{OptimConfig, Optimizer, ParamArena};
    let table = optim_table(params, tensors);
    let n = table.numel();
    let arena = ParamArena::new(gpu, table.clone(), false)?;
    let mut rng = Rng::new(6);
    let mut random = || table.pack(&table.tensors.iter().map(|t| rng.vec(t.numel() as usize)).collect::<Vec<_>>());
    gpu.write(&arena.params, 0, &random());
    gpu.write(&arena.grads, 0, &random());
    let dst = gpu.pool.storage(Category::Scratch, arena.params.size())?;
    let copy = vec![elementwise::copy(gpu, Span::whole(&dst), Span::whole(&arena.params))?];
    let lr = 1e-3;
    let mut optimizers = Vec::new();
    for cfg in [OptimConfig::adamw(), OptimConfig::lamb(), OptimConfig::sgd()] {
        let mut opt = Optimizer::new(gpu, &arena, cfg, None)?;
        opt.prepare(gpu, lr);
        optimizers.push(opt);
    }
    let m = gpu.pool.storage(Category::OptimizerState, arena.params.size())?;
    let v = gpu.pool.storage(Category::OptimizerState, arena.params.size())?;
    let c = OptimConfig::adamw();
    let hyper = (c.beta1, c.beta2, c.eps, c.weight_decay);
    let (unfused, _denom) =
        crate::optim::adamw_unfused(gpu, &table, &arena.params, &arena.grads, &m, &v, lr, hyper, 1)?;
    let rows: [(&'static str, u64, &[Dispatch]); 5] = [
        ("copy", 8, &copy),
        ("adamw_fused", 28, optimizers[0].update_dispatches()),
        ("lamb_fused", 40, optimizers[1].update_dispatches()),
        ("sgd_fused", 20, optimizers[2].update_dispatches()),
        ("adamw_unfused", 28, &unfused),
    ];
    let secs = time_ops(gpu, &rows.iter().map(|r| r.2).collect::<Vec<_>>(), samples)?;
    let times: Vec<(&'static str, u64, f64)> = rows.iter().zip(secs).map(|(r, s)| (r.0, r.1, s)).collect();

    let copy_gbps = 8.0 * n as f64 / times[0].2 / 1e9;
    Ok(times
        .into_iter()
        .map(|(name, bytes, s)| {
            let gbps = bytes as f64 * n as f64 / s / 1e9;
            OptimRow {
                name,
                params: n,
                tensors,
                ms: s * 1e3,
                gbps,
                bytes_per_param: bytes,
                frac_of_copy: gbps / copy_gbps,
            }
        })
        .collect())
}
