//! Criterion bench of the matmul kernels against the naive baseline, on the default adapter.
//! `cargo bench --bench matmul`; WGTRAIN_BACKEND / WGTRAIN_ADAPTER choose the adapter.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wgtrain::gpu::{Category, Recorder};
use wgtrain::reference::Rng;
use wgtrain::tune::matmul::{Dims, Matmul};

mod common;

fn matmul(c: &mut Criterion) {
    let Some(gpu) = common::gpu() else { return };
    // The adapter type's default variant of each product (no tuning).
    let mm = Matmul::new(&gpu);
    let mut rng = Rng::new(1);
    for (m, n, k) in [(256u32, 768u32, 768u32), (255, 767, 769)] {
        let d = Dims::linear(m, n, k);
        let (mu, nu, ku) = (m as usize, n as usize, k as usize);
        let up =
            |len: usize, rng: &mut Rng| gpu.pool.storage_from(&gpu.queue, Category::Scratch, &rng.vec(len)).unwrap();
        let (inp, w, dout, dw) =
            (up(mu * ku, &mut rng), up(nu * ku, &mut rng), up(mu * nu, &mut rng), up(nu * ku, &mut rng));
        let out = gpu.pool.storage(Category::Scratch, 4 * (mu * nu) as u64).unwrap();
        let dinp = gpu.pool.storage(Category::Scratch, 4 * (mu * ku) as u64).unwrap();
        let ops = [
            ("matmul_forward", mm.forward((&out).into(), (&inp).into(), (&w).into(), None, d).unwrap()),
            ("matmul_backward_input", mm.backward_input((&dinp).into(), (&dout).into(), (&w).into(), d).unwrap()),
            ("matmul_backward_weight", mm.backward_weight((&dw).into(), (&dout).into(), (&inp).into(), d).unwrap()),
            ("matmul_naive", mm.naive((&out).into(), (&inp).into(), (&w).into(), None, d).unwrap()),
        ];
        let mut group = c.benchmark_group(format!("matmul_{m}x{n}x{k}"));
        group.sample_size(10).throughput(Throughput::Elements(d.flops() as u64));
        for (name, op) in &ops {
            group.bench_function(*name, |b| {
                b.iter(|| {
                    let mut rec = Recorder::new(&gpu);
                    rec.run(op);
                    rec.submit().unwrap();
                    gpu.wait().unwrap();
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, matmul);
criterion_main!(benches);
