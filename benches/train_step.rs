//! Criterion bench of one training step (forward, backward, AdamW; `wgtrain bench train`'s
//! step function) of models/default.toml at B 8 × T 128, on the default adapter with the
//! adapter type's default variants, in f32 and (where the adapter has SHADER_F16) mixed f16.
//! `cargo bench --bench train_step`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wgtrain::model::{GptConfig, Precision};
use wgtrain::train::defaults::{model_file, DEFAULT_CONFIG};

mod common;

fn train_step(c: &mut Criterion) {
    let Some(gpu) = common::gpu() else { return };
    let config = GptConfig::load(&model_file(DEFAULT_CONFIG)).unwrap();
    let (b, t) = (8, 128);
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10).throughput(Throughput::Elements((b * t) as u64));
    let f16 = gpu.device.features().contains(wgpu::Features::SHADER_F16);
    for (name, p) in [("default_b8_t128", Precision::F32), ("default_b8_t128_f16", Precision::F16)] {
        if p == Precision::F16 && !f16 {
            continue;
        }
        group.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                let r = wgtrain::bench::train(&gpu, config.clone(), (b, t), iters.max(1), None, p).unwrap();
                std::time::Duration::from_secs_f64(r.ms_per_step / 1e3 * iters as f64)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
