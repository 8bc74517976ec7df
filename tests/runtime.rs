//! The runtime: adapter choice, error scopes, pipeline cache, pool accounting, readback, profiling.

use std::sync::Arc;

use wgtrain::gpu::{AdapterChoice, Category, Gpu, Recorder};
use wgtrain::tune::matmul::{Dims, Matmul};
use wgtrain::GpuError;

use crate::common::{gpu, require_adapter};

#[test]
fn unknown_backend_is_an_error() {
    let choice = AdapterChoice { backend: Some("glide".into()), name: None };
    assert!(matches!(Gpu::new(&choice), Err(GpuError::UnknownBackend(b)) if b == "glide"));
}

#[test]
fn adapter_name_that_matches_nothing_is_an_error() {
    let choice = AdapterChoice { backend: None, name: Some("no-such-gpu-xyz".into()) };
    let err = Gpu::new(&choice).err().expect("no adapter is called that");
    assert!(matches!(err, GpuError::NoMatchingAdapter { .. } | GpuError::NoAdapter), "{err}");
}

#[test]
fn no_adapter_message_says_how_to_get_one() {
    let msg = GpuError::NoAdapter.to_string();
    assert!(msg.contains("mesa-vulkan-drivers") && msg.contains("driver"), "{msg}");
}

#[test]
fn device_uses_the_adapters_own_limits() {
    let Some(gpu) = gpu() else { return };
    let adapter = gpu.adapter.limits();
    assert_eq!(gpu.device.limits().max_storage_buffer_binding_size, adapter.max_storage_buffer_binding_size);
    assert_eq!(gpu.device.limits().max_buffer_size, adapter.max_buffer_size);
    assert_eq!(gpu.device.limits().max_storage_buffers_per_shader_stage, adapter.max_storage_buffers_per_shader_stage);
    if require_adapter() {
        // CI runs lavapipe, whose binding limit is past WebGPU's default of 128 MiB... or equal.
        assert!(gpu.max_binding() >= wgpu::Limits::default().max_storage_buffer_binding_size);
    }
}

#[test]
fn invalid_shader_is_an_error_not_a_panic() {
    let Some(gpu) = gpu() else { return };
    let err = gpu.compile_wgsl("broken.wgsl", "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }");
    assert!(matches!(err, Err(GpuError::Shader { .. })), "{:?}", err.err());
    gpu.check().expect("the error was captured by its scope");
}

#[test]
fn pipelines_are_created_once() {
    let Some(gpu) = gpu() else { return };
    let mm = Matmul::new(gpu);
    let a = gpu.pool.storage(Category::Scratch, 4096).unwrap();
    let b = gpu.pool.storage(Category::Scratch, 4096).unwrap();
    let c = gpu.pool.storage(Category::Scratch, 4096).unwrap();
    let d = Dims::linear(4, 8, 12);
    let one = mm.forward((&a).into(), (&b).into(), (&c).into(), None, d).unwrap();
    let two = mm.forward((&a).into(), (&b).into(), (&c).into(), None, d).unwrap();
    assert!(Arc::ptr_eq(&one[0].pipeline, &two[0].pipeline));
}

#[test]
fn pool_reuses_buffers_and_counts_bytes_per_category() {
    let Some(gpu) = gpu() else { return };
    // A pool of its own, so other tests' buffers don't move the counts.
    let pool = wgtrain::gpu::Pool::new(gpu.device.clone(), &gpu.limits);
    let a = pool.storage(Category::Parameters, 1000).unwrap();
    let b = pool.storage(Category::Gradients, 5000).unwrap();
    let s = pool.stats();
    assert_eq!(s.live, vec![(Category::Parameters, 1024), (Category::Gradients, 5120)]);
    drop(a);
    let s = pool.stats();
    assert_eq!((s.live_total(), s.free, s.created), (5120, 1024, 2));
    let c = pool.storage(Category::OptimizerState, 1010).unwrap(); // same 1024-byte class
    let s = pool.stats();
    assert_eq!((s.free, s.reused, s.created, s.peak), (0, 1, 2, 6144));
    drop((b, c));
    pool.trim();
    assert_eq!(pool.stats().free, 0);
}

#[test]
fn buffer_past_the_adapters_limit_is_an_error() {
    let Some(gpu) = gpu() else { return };
    let too_big = gpu.limits.max_buffer_size + 1;
    let err = gpu.pool.storage(Category::Scratch, too_big).err().expect("too big");
    assert!(matches!(err, GpuError::BufferTooLarge { .. }), "{err}");
}

#[test]
fn read_past_the_end_is_an_error() {
    let Some(gpu) = gpu() else { return };
    let buf = gpu.pool.storage(Category::Scratch, 256).unwrap();
    assert!(matches!(gpu.read::<f32>(&buf, 60, 10), Err(GpuError::OutOfBounds { .. })));
    gpu.write(&buf, 60, &[1.0f32, 2.0, 3.0, 4.0]);
    assert_eq!(gpu.read::<f32>(&buf, 60, 4).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn profiler_times_each_kernel() {
    if gpu().is_none() {
        return;
    }
    let mut gpu = Gpu::from_env().unwrap();
    if !gpu.enable_profiling() {
        eprintln!("adapter has no timestamp queries; nothing to profile");
        return;
    }
    let mm = Matmul::new(&gpu);
    let x = gpu.pool.storage(Category::Scratch, 4 * 64 * 64).unwrap();
    let w = gpu.pool.storage(Category::Scratch, 4 * 64 * 64).unwrap();
    let y = gpu.pool.storage(Category::Scratch, 4 * 64 * 64).unwrap();
    let d = Dims::linear(64, 64, 64);
    let fwd = mm.forward((&y).into(), (&x).into(), (&w).into(), None, d).unwrap();
    let bwd = mm.backward_input((&x).into(), (&y).into(), (&w).into(), d).unwrap();
    let mut rec = Recorder::new(&gpu);
    rec.run(&fwd);
    rec.run(&bwd);
    rec.run(&fwd);
    rec.submit().unwrap();
    let table = gpu.profiler.as_ref().unwrap().lock().unwrap().table();
    assert!(table.contains("matmul_forward") && table.contains("matmul_backward_input"), "{table}");
    let calls = table.lines().find(|l| l.starts_with("matmul_forward")).unwrap();
    assert_eq!(calls.split_whitespace().nth(1), Some("2"), "{table}");
}

#[test]
fn reductions_run_both_ways_in_the_reference_tests() {
    let Some(gpu) = gpu() else { return };
    if !gpu.device.features().contains(wgpu::Features::SUBGROUP) {
        return;
    }
    let ways: Vec<bool> = crate::common::builds().iter().map(|g| g.subgroups).collect();
    assert!(ways.contains(&true) && ways.contains(&false), "{ways:?}");
}
