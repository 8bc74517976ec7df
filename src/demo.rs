//! `wgtrain demo`: one linear layer's forward and backward on the GPU, checked against the CPU
//! reference and timed. The main job until training lands.
//!
//! Layer: the top; uses gpu, tune and the reference oracle.

use std::time::Instant;

use crate::gpu::{Category, Gpu, Recorder};
use crate::reference::{self, Rng};
use crate::tune::matmul::{Dims, Matmul};

/// Runs the layer (B·T rows, C in, 4C out), prints errors and timings, and fails when the GPU
/// result differs from the reference by more than the stated tolerance.
pub fn run(gpu: &Gpu, rows: u32, c_in: u32, c_out: u32) -> anyhow::Result<()> {
    let (m, n, k) = (rows as usize, c_out as usize, c_in as usize);
    let d = Dims::linear(rows, c_out, c_in);
    println!("adapter: {}", gpu.name());
    println!("linear layer: inp ({m}, {k}) · W ({n}, {k})ᵀ + bias ({n}), then its backward");
    let mut rng = Rng::new(7);
    let (inp, w, bias, dout) = (rng.vec(m * k), rng.vec(n * k), rng.vec(n), rng.vec(m * n));
    let pool = &gpu.pool;
    let up = |data: &[f32]| pool.storage_from(&gpu.queue, Category::Activations, data);
    let (g_inp, g_w, g_bias, g_dout) = (up(&inp)?, up(&w)?, up(&bias)?, up(&dout)?);
    let g_out = pool.storage(Category::Activations, 4 * (m * n) as u64)?;
    let g_dinp = pool.storage(Category::Gradients, 4 * (m * k) as u64)?;
    let g_dw = pool.storage(Category::Gradients, 4 * (n * k) as u64)?;
    let g_db = pool.storage(Category::Gradients, 4 * n as u64)?;

    let mm = Matmul::new(gpu);
    let mut ops = mm.forward((&g_out).into(), (&g_inp).into(), (&g_w).into(), Some((&g_bias).into()), d)?;
    ops.extend(mm.backward_input((&g_dinp).into(), (&g_dout).into(), (&g_w).into(), d)?);
    ops.extend(mm.backward_weight((&g_dw).into(), (&g_dout).into(), (&g_inp).into(), d)?);
    ops.extend(mm.backward_bias((&g_db).into(), (&g_dout).into(), d)?);

    // One submit: zero the gradients, then every dispatch of forward and backward. The first
    // run warms up (drivers compile pipelines lazily); the second is timed.
    let mut gpu_s = 0.0;
    for _ in 0..2 {
        let t = Instant::now();
        let mut rec = Recorder::new(gpu);
        rec.clear(&g_dw, 0, g_dw.size());
        rec.clear(&g_db, 0, g_db.size());
        rec.run(&ops);
        rec.submit()?;
        gpu.wait()?;
        gpu_s = t.elapsed().as_secs_f64();
    }

    let t = Instant::now();
    let mut out = vec![0.0; m * n];
    let mut dinp = vec![0.0; m * k];
    let mut dw = vec![0.0; n * k];
    let mut db = vec![0.0; n];
    reference::matmul::forward(&mut out, &inp, &w, Some(&bias), m, n, k);
    reference::matmul::backward_input(&mut dinp, &dout, &w, m, n, k);
    reference::matmul::backward_weight(&mut dw, &dout, &inp, m, n, k);
    reference::matmul::backward_bias(&mut db, &dout, m, n);
    let cpu_s = t.elapsed().as_secs_f64();

    // Inputs are uniform in [-1, 1): f32 sums of L terms stay well within 1e-6·L of exact.
    let mut ok = true;
    for (name, buf, want, terms) in
        [("out", &g_out, &out, k), ("dinp", &g_dinp, &dinp, n), ("dW", &g_dw, &dw, m), ("dbias", &g_db, &db, m)]
    {
        let got: Vec<f32> = gpu.read(buf, 0, want.len())?;
        let worst = got.iter().zip(want.iter()).map(|(g, w)| (g - w).abs()).fold(0.0f32, |a, x| {
            if x.is_nan() || a.is_nan() {
                f32::NAN
            } else {
                a.max(x)
            }
        });
        let tol = 1e-6 * terms as f32;
        ok &= worst <= tol;
        println!("  {name:<6} max |gpu - cpu| = {worst:.2e} (tolerance {tol:.1e})");
    }
    let flops = 3.0 * d.flops();
    println!(
        "GPU: {:.1} ms for all four kernels ({:.2} GFLOP/s incl. submit); CPU reference: {:.1} ms",
        gpu_s * 1e3,
        flops / gpu_s / 1e9,
        cpu_s * 1e3
    );
    anyhow::ensure!(ok, "the GPU result differs from the CPU reference beyond tolerance");
    println!("ok: GPU matches the CPU reference");
    Ok(())
}
