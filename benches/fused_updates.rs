//! Criterion bench of the fused optimizer updates against a copy kernel and an unfused AdamW,
//! on the default adapter. `cargo bench --bench fused_updates`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wgtrain::gpu::{Category, Dispatch, Recorder};
use wgtrain::kernels::elementwise::{self, Span};
use wgtrain::optim::{OptimConfig, Optimizer, ParamArena};
use wgtrain::reference::Rng;

mod common;

fn fused_updates(c: &mut Criterion) {
    let Some(gpu) = common::gpu() else { return };
    // 4M parameters in 50 tensors: large enough to be memory-bound, small enough for lavapipe.
    let table = wgtrain::bench::optim_table(4 << 20, 50);
    let n = table.numel();
    let arena = ParamArena::new(&gpu, table.clone(), false).unwrap();
    let mut rng = Rng::new(6);
    gpu.write(&arena.grads, 0, &rng.vec(table.len as usize));
    let dst = gpu.pool.storage(Category::Scratch, arena.params.size()).unwrap();
    let copy = vec![elementwise::copy(&gpu, Span::whole(&dst), Span::whole(&arena.params)).unwrap()];
    let mut opts: Vec<(&str, u64, Optimizer)> = Vec::new();
    for (name, bytes, cfg) in [
        ("adamw_fused", 28, OptimConfig::adamw()),
        ("lamb_fused", 40, OptimConfig::lamb()),
        ("sgd_fused", 20, OptimConfig::sgd()),
    ] {
        let mut opt = Optimizer::new(&gpu, &arena, cfg, None).unwrap();
        opt.prepare(&gpu, 1e-3);
        opts.push((name, bytes, opt));
    }
    let (m, v) = (
        gpu.pool.storage(Category::OptimizerState, arena.params.size()).unwrap(),
        gpu.pool.storage(Category::OptimizerState, arena.params.size()).unwrap(),
    );
    let (unfused, _denom) = wgtrain::optim::adamw_unfused(
        &gpu,
        &table,
        &arena.params,
        &arena.grads,
        &m,
        &v,
        1e-3,
        (0.9, 0.999, 1e-8, 0.01),
        1,
    )
    .unwrap();

    let mut group = c.benchmark_group(format!("fused_updates_{n}"));
    group.sample_size(10);
    let mut bench = |name: &str, bytes: u64, op: &[Dispatch]| {
        group.throughput(Throughput::Bytes(bytes * n));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut rec = Recorder::new(&gpu);
                rec.run(op);
                rec.submit().unwrap();
                gpu.wait().unwrap();
            })
        });
    };
    bench("copy", 8, &copy);
    for (name, bytes, opt) in &opts {
        bench(name, *bytes, opt.update_dispatches());
    }
    bench("adamw_unfused", 28, &unfused);
    group.finish();
}

criterion_group!(benches, fused_updates);
criterion_main!(benches);
