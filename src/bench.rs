//! `wgtrain bench`: kernel timings on the chosen adapter, with the baselines measured in the
//! same run.

use std::time::Instant;

use crate::gpu::{Category, Dispatch, Gpu, GpuBuffer, GpuError, Recorder};
use crate::kernels::matmul::{Dims, Matmul};
use crate::reference::Rng;

/// One timed kernel at one size.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MatmulRow {
    pub kernel: &'static str,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    /// Median time of one call.
    pub ms: f64,
    pub gflops: f64,
}

/// Median seconds per run of `op`: each sample records the op `reps` times into one submit,
/// with `reps` chosen so a sample takes about 50 ms, and waits for it.
pub fn time_op(gpu: &Gpu, op: &[Dispatch], samples: usize) -> Result<f64, GpuError> {
    let run = |reps: usize| -> Result<f64, GpuError> {
        let t = Instant::now();
        let mut rec = Recorder::new(gpu);
        for _ in 0..reps {
            rec.run(op);
        }
        rec.submit()?;
        gpu.wait()?;
        Ok(t.elapsed().as_secs_f64() / reps as f64)
    };
    let first = run(1)?; // warm-up, and a first estimate
    let reps = ((0.05 / first.max(1e-7)).ceil() as usize).clamp(1, 200);
    let mut times = (0..samples.max(1)).map(|_| run(reps)).collect::<Result<Vec<_>, _>>()?;
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn random_buffer(gpu: &Gpu, rng: &mut Rng, len: usize) -> Result<GpuBuffer, GpuError> {
    gpu.pool.storage_from(&gpu.queue, Category::Scratch, &rng.vec(len))
}

/// Times forward, both backward products and the naive baseline at each (M, N, K).
pub fn matmul(
    gpu: &Gpu,
    sizes: &[(u32, u32, u32)],
    samples: usize,
    workgroup: (u32, u32),
) -> Result<Vec<MatmulRow>, GpuError> {
    let mut mm = Matmul::new(gpu);
    mm.workgroup = workgroup;
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
        let ops = [
            (
                "matmul_forward",
                mm.forward((&out).into(), (&inp).into(), (&w).into(), Some((&bias).into()), d)?,
            ),
            (
                "matmul_backward_input",
                mm.backward_input((&dinp).into(), (&dout).into(), (&w).into(), d)?,
            ),
            (
                "matmul_backward_weight",
                mm.backward_weight((&dw).into(), (&dout).into(), (&inp).into(), d)?,
            ),
            (
                "matmul_naive",
                mm.naive((&out).into(), (&inp).into(), (&w).into(), Some((&bias).into()), d)?,
            ),
        ];
        for (kernel, op) in &ops {
            let s = time_op(gpu, op, samples)?;
            rows.push(MatmulRow {
                kernel,
                m,
                n,
                k,
                ms: s * 1e3,
                gflops: d.flops() / s / 1e9,
            });
        }
    }
    Ok(rows)
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

/// Parses "XxY" for --workgroup.
pub fn parse_workgroup(s: &str) -> Result<(u32, u32), String> {
    let err = || format!("--workgroup: {s:?} is not XxY with X·Y between 1 and 1024, e.g. 8x8");
    let v: Vec<u32> = s
        .split(['x', 'X'])
        .map(|x| x.trim().parse().map_err(|_| err()))
        .collect::<Result<_, _>>()?;
    match v[..] {
        [x, y] if x > 0 && y > 0 && x * y <= 1024 => Ok((x, y)),
        _ => Err(err()),
    }
}
