//! LoRA's low-rank path (kernels::lora) against the plain-loop reference at awkward sizes and
//! ranks 1, 3 and 8: the forward adds s·(x·Aᵀ)·Bᵀ to the base output and keeps h = s·x·Aᵀ,
//! the backward adds to dA, dB and the input gradient. The scratch h and dh start as NaN.

use wgtrain::gpu::{Category, GpuBuffer, Recorder};
use wgtrain::kernels::lora::{self, Adapter};
use wgtrain::kernels::matmul::{Dims, Matmul};
use wgtrain::kernels::View;
use wgtrain::reference::{lora as cpu, Rng};
use wgtrain::Gpu;

use crate::common::{assert_close, builds};

fn upload(gpu: &Gpu, data: &[f32]) -> GpuBuffer {
    gpu.pool.storage_from(&gpu.queue, Category::Scratch, data).unwrap()
}

fn check(gpu: &Gpu, (m, n, k, r): (usize, usize, usize, usize), seed: u64) {
    let mut rng = Rng::new(seed);
    let (x, a, b) = (rng.vec(m * k), rng.vec(r * k), rng.vec(n * r));
    let (y0, dy, dx0, da0, db0) = (rng.vec(m * n), rng.vec(m * n), rng.vec(m * k), rng.vec(r * k), rng.vec(n * r));
    let s = 8.0 / r as f32;
    let bufs: Vec<GpuBuffer> = [&x, &a, &b, &y0, &dy, &dx0, &da0, &db0].iter().map(|v| upload(gpu, v)).collect();
    let nan = vec![f32::NAN; (m * r).next_multiple_of(4)];
    let (h, dh) = (upload(gpu, &nan), upload(gpu, &nan));
    let v = |i: usize| View::from(&bufs[i]);
    let ad = Adapter { a: v(1), b: v(2), da: v(6), db: v(7), h: View::from(&h), dh: View::from(&dh), rank: r as u32, scale: s };
    let (mm, d) = (Matmul::new(gpu), Dims::linear(m as u32, n as u32, k as u32));
    let mut ops = lora::forward(&mm, gpu, v(3), v(0), &ad, d).unwrap();
    ops.extend(lora::backward(&mm, gpu, v(5), [v(4), v(0)], &ad, d).unwrap());
    let mut rec = Recorder::new(gpu);
    ops.iter().for_each(|op| rec.dispatch(op));
    rec.submit().unwrap();

    let mut y = y0.clone();
    let h_want = cpu::forward(&mut y, &x, &a, &b, (m, n, k, r), s);
    let (mut dx, mut da, mut db) = (dx0.clone(), da0.clone(), db0.clone());
    cpu::backward((&mut dx, &mut da, &mut db), &dy, &x, (&a, &b, &h_want), (m, n, k, r), s);
    let read = |buf: &GpuBuffer, len| gpu.read::<f32>(buf, 0, len).unwrap();
    let what = |t: &str| format!("{t} (M {m} N {n} K {k} rank {r}, {})", gpu.checked_shaders);
    assert_close(&what("h"), &read(&h, m * r), &h_want, 1e-5, 1e-5);
    assert_close(&what("y"), &read(&bufs[3], m * n), &y, 1e-5, 1e-5);
    assert_close(&what("dB"), &read(&bufs[7], n * r), &db, 1e-4, 1e-5);
    assert_close(&what("dA"), &read(&bufs[6], r * k), &da, 1e-4, 1e-5);
    assert_close(&what("dx"), &read(&bufs[5], m * k), &dx, 1e-4, 1e-5);
}

#[test]
fn lora_path_matches_the_reference_at_ranks_1_3_8() {
    for gpu in builds() {
        for (i, r) in [1, 3, 8].into_iter().enumerate() {
            check(gpu, (37, 23, 29, r), 40 + i as u64);
        }
        check(gpu, (1, 7, 5, 3), 50);
    }
}
