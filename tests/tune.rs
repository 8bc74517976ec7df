//! The autotuner: it picks one of the adapter's candidates, stores it in the cache file, reads
//! it back in a later process (another GPU here), and ignores a corrupt or stale cache with a
//! warning. Each test tunes a GPU of its own with its own cache file, so the shared test GPU
//! keeps its defaults.

use std::path::{Path, PathBuf};

use wgtrain::gpu::tuning::Table;
use wgtrain::gpu::Category;
use wgtrain::kernels::attention::AttnVariant;
use wgtrain::tune::matmul::{runs_on, split_lanes, Dims, Matmul, Product, Variant};
use wgtrain::tune::{candidates, class_key, default_attention, default_variant, Pin};
use wgtrain::Gpu;

use crate::common::gpu;

fn cache_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgtrain-tune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A GPU of its own that tunes into `file`, every candidate (`thorough`, as `wgtrain tune`)
/// or the training list.
fn tuning_gpu_with(file: &Path, thorough: bool) -> Gpu {
    let gpu = Gpu::from_env().unwrap();
    {
        let mut t = gpu.tuning.lock().unwrap();
        t.tune = true;
        t.thorough = thorough;
        t.cache_file = Some(file.to_path_buf());
    }
    gpu
}

fn tuning_gpu(file: &Path) -> Gpu {
    tuning_gpu_with(file, true)
}

const D: Dims = Dims { batch: 1, m: 37, n: 29, k: 70, shared_weight: true };

/// Builds a forward at D, which makes the table choose its variant.
fn forward_variant(gpu: &Gpu) -> Variant {
    let buf = |n: u32| gpu.pool.storage(Category::Scratch, 4 * n as u64).unwrap();
    let (out, inp, w) = (buf(D.m * D.n), buf(D.m * D.k), buf(D.n * D.k));
    let ops = Matmul::new(gpu).forward((&out).into(), (&inp).into(), (&w).into(), None, D).unwrap();
    assert!(!ops.is_empty());
    Matmul::new(gpu).variant_for(Product::Forward, D).unwrap()
}

fn found(gpu: &Gpu) -> (String, bool) {
    let t = gpu.tuning.lock().unwrap();
    let (e, cached) = t.found.get(&class_key(Product::Forward, D)).expect("the class was tuned");
    (e.best.clone(), *cached)
}

#[test]
fn tuner_picks_a_candidate_and_a_later_process_reuses_it() {
    if gpu().is_none() {
        return;
    }
    let file = cache_dir("reuse").join("tune.json");
    let first = tuning_gpu(&file);
    let v = forward_variant(&first);
    assert!(candidates(&first, Product::Forward, D).contains(&v), "{v} is not a candidate");
    assert_eq!(found(&first), (v.to_string(), false));
    assert!(file.is_file(), "no cache file written");
    // The choice is the run's: state.json records it.
    assert_eq!(first.tuning.lock().unwrap().choices()[&class_key(Product::Forward, D)], v.to_string());

    let second = tuning_gpu(&file);
    assert_eq!(forward_variant(&second), v);
    assert_eq!(found(&second), (v.to_string(), true), "the second GPU timed again instead of reading the cache");
}

#[test]
fn training_on_a_cpu_adapter_times_nothing_but_reuses_the_cache() {
    let Some(shared) = gpu() else { return };
    let file = cache_dir("short").join("tune.json");
    let training = tuning_gpu_with(&file, false);
    let v = forward_variant(&training);
    if shared.info.device_type == wgpu::DeviceType::Cpu {
        assert_eq!(v, default_variant(shared, Product::Forward, D));
        // Where the subgroups are one SIMD batch of 8, the lane-parallel kernel is every
        // product's default from 16 output rows and 64 columns on; below that the split-k
        // forward from 64 rows and K 128 on (where the device has subgroups), else the baseline.
        let lanes = runs_on(shared, Variant::LANES);
        let split = runs_on(shared, Variant::SPLIT);
        let pick = |yes: bool, v: Variant| if yes { v } else { Variant::BASELINE };
        let wide = Dims::linear(16, 64, 64);
        for p in Product::ALL {
            assert_eq!(default_variant(shared, p, wide), pick(lanes, Variant::LANES), "{p:?}");
        }
        // backward_weight's rows are N; the others' are M, and its columns K.
        assert_eq!(default_variant(shared, Product::BackwardWeight, Dims::linear(16, 15, 64)), Variant::BASELINE);
        assert_eq!(default_variant(shared, Product::BackwardInput, Dims::linear(16, 64, 63)), Variant::BASELINE);
        let narrow = Dims::linear(64, 63, 128);
        assert_eq!(default_variant(shared, Product::Forward, narrow), pick(split, Variant::SPLIT));
        assert_eq!(default_variant(shared, Product::BackwardInput, Dims::linear(64, 64, 63)), Variant::BASELINE);
        for short in [Dims::linear(63, 63, 128), Dims::linear(64, 63, 127)] {
            assert_eq!(default_variant(shared, Product::Forward, short), Variant::BASELINE);
        }
        // Attention: the lane-parallel kernels up to head size 64 where the subgroups are 8
        // lanes, else the row kernels.
        let lanes = AttnVariant::Lanes { r: 1 };
        let want = if lanes.runs_on(shared, 64) { lanes } else { AttnVariant::Rows { br: 64 } };
        assert_eq!(default_attention(shared, 64), want);
        assert_eq!(default_attention(shared, 65), AttnVariant::Rows { br: 64 });
        assert!(!file.exists(), "training on a CPU adapter timed candidates");
    } else {
        assert!(file.is_file(), "training on a GPU tunes");
    }
    // What `wgtrain tune` stores, training then takes from the cache.
    let best = forward_variant(&tuning_gpu(&file));
    let later = tuning_gpu_with(&file, false);
    assert_eq!(forward_variant(&later), best);
    assert!(found(&later).1, "the tuned entry was not reused");
}

#[test]
fn corrupt_tuning_cache_is_ignored_and_replaced() {
    if gpu().is_none() {
        return;
    }
    let file = cache_dir("corrupt").join("tune.json");
    std::fs::write(&file, "{ this is not json").unwrap();
    let g = tuning_gpu(&file);
    let v = forward_variant(&g);
    assert!(candidates(&g, Product::Forward, D).contains(&v));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok(), "the corrupt file was not replaced: {text}");
}

#[test]
fn tuning_cache_of_other_shaders_is_ignored() {
    if gpu().is_none() {
        return;
    }
    let file = cache_dir("stale").join("tune.json");
    forward_variant(&tuning_gpu(&file));
    // Pretend the timings were made with another build of the shaders.
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    for a in json["adapters"].as_object_mut().unwrap().values_mut() {
        a["shaders"] = "0000000000000000".into();
    }
    std::fs::write(&file, json.to_string()).unwrap();
    let g = tuning_gpu(&file);
    forward_variant(&g);
    assert!(!found(&g).1, "a stale entry was used");
}

#[test]
fn tuning_table_pins_recorded_choices_and_refuses_unknown_ones() {
    let mut t = Table::default();
    let key = class_key(Product::BackwardWeight, D);
    let pinned = [(key.clone(), "tile64x64x16-t4x4".to_string())].into();
    t.pin(&pinned).unwrap();
    assert_eq!(t.choices(), pinned);
    let bad = [(key, "tile7x7x7-t3x3".to_string())].into();
    assert!(t.pin(&bad).unwrap_err().contains("tile7x7x7"));
    // A quant path is a choice of its own kind (a run over a quantized base records them).
    let quant = format!("quant q4_1 {}", class_key(Product::Forward, D));
    t.pin(&[(quant.clone(), "dequant".to_string())].into()).unwrap();
    assert!(t.pin(&[(quant, "reg4x4-wg8x8".to_string())].into()).unwrap_err().contains("not a quant path"));
}

#[test]
fn variant_names_round_trip_and_bad_ones_are_refused() {
    for v in Variant::all() {
        assert_eq!(Variant::parse(&v.to_string()).unwrap(), v);
    }
    for bad in [
        "",
        "reg",
        "reg5x4-wg8x8",
        "reg4x4-wg0x8",
        "tile256x256x16-t8x8",
        "tile64x64x16-t3x4",
        "tile64x64-t4x4",
        "split16x16",
        "split3x4",
        "split8",
    ] {
        assert!(Variant::parse(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn shape_classes_round_up_to_powers_of_two() {
    assert_eq!(class_key(Product::Forward, Dims::linear(1000, 50257, 768)), "forward 1024x65536x1024");
    // A shared weight folds the batch into M; one weight per entry keeps it.
    let shared = Dims { batch: 3, m: 5, n: 6, k: 7, shared_weight: true };
    assert_eq!(class_key(Product::BackwardInput, shared), "backward_input 16x8x8");
    let batched = Dims { shared_weight: false, ..shared };
    assert_eq!(class_key(Product::BackwardInput, batched), "backward_input 8x8x8 z4");
}

/// A product over a quantized weight times the fused kernel against the dequantized copy and
/// the dense matmul when every candidate is timed (GPUs, `wgtrain tune`), and the run keeps
/// the faster; a training run on a CPU adapter takes the copy untimed.
#[test]
fn quantized_products_time_the_fused_and_the_dequantized_path() {
    use wgtrain::formats::QType;
    use wgtrain::kernels::Dtype;
    use wgtrain::tune::{choose_quant, QuantPath};
    if gpu().is_none() {
        return;
    }
    let file = cache_dir("quant").join("tune.json");
    let g = tuning_gpu(&file);
    let d = Dims { batch: 1, m: 37, n: 45, k: 96, shared_weight: true };
    for product in [Product::Forward, Product::BackwardInput] {
        let path = choose_quant(&g, product, d, QType::Q4_1, Dtype::F32).unwrap();
        let t = g.tuning.lock().unwrap();
        let key = format!("quant q4_1 {}", class_key(product, d));
        let (e, cached) = t.found.get(&key).expect("the quant class was timed");
        assert_eq!((e.best.as_str(), e.candidates, *cached), (path.name(), 2, false), "{key}");
        assert_eq!(t.choices()[&key], path.name());
    }
    let training = tuning_gpu_with(&cache_dir("quant-short").join("tune.json"), false);
    let path = choose_quant(&training, Product::Forward, d, QType::Q8_0, Dtype::F32).unwrap();
    if training.info.device_type == wgpu::DeviceType::Cpu {
        assert_eq!(path, QuantPath::Dequant);
        assert!(training.tuning.lock().unwrap().found.is_empty(), "a CPU adapter's training run timed a quant path");
    }
}

/// The lane-parallel kernels take the device's one subgroup size (4, 8 or 16 on lavapipe, by
/// LP_NATIVE_VECTOR_WIDTH 128, 256 or 512), and their workgroups cover that many columns per
/// column of a lane. Where the device has no single subgroup size (GPUs report a range), the
/// tuner offers no split-k or lane-parallel variant, since neither could run there.
#[test]
fn lane_parallel_variants_follow_the_subgroup_size() {
    let Some(shared) = gpu() else { return };
    let (lo, hi) = (shared.info.subgroup_min_size, shared.info.subgroup_max_size);
    let one_size = shared.device.features().contains(wgpu::Features::SUBGROUP) && lo == hi && (4..=64).contains(&lo);
    let lanes = split_lanes(shared);
    assert_eq!(lanes, one_size.then_some(lo), "subgroups of {lo} to {hi} lanes");
    let width = lanes.unwrap_or(8);
    assert_eq!(Variant::LANES.extent(width), (16, 8 * width));
    let dir = cache_dir("lanes");
    let gpu = tuning_gpu(&dir.join("tune.json"));
    for product in [Product::Forward, Product::BackwardInput, Product::BackwardWeight] {
        let offered = candidates(&gpu, product, D);
        assert!(offered.iter().all(|&v| runs_on(&gpu, v)), "{product:?}: {offered:?}");
        let lane_parallel = offered.iter().any(|v| matches!(v, Variant::Lanes { .. }));
        assert_eq!(lane_parallel, lanes.is_some() && gpu.info.device_type == wgpu::DeviceType::Cpu, "{product:?}");
    }
    assert_eq!(AttnVariant::Lanes { r: 1 }.runs_on(&gpu, 64), lanes.is_some());
}

/// A candidate that computes wrong values never wins: with `Gpu::corrupt` naming one (its
/// kernels then add 1 to the first output of every dispatch, the shaders' CORRUPT constant),
/// the tuner's check against the baseline's outputs on random operands drops it, records it in
/// the cache, and another candidate wins.
#[test]
fn a_candidate_that_computes_wrong_values_never_wins() {
    if gpu().is_none() {
        return;
    }
    let dir = cache_dir("corrupt");
    let file = dir.join("tune.json");
    let mut gpu = tuning_gpu(&file);
    let offered = candidates(&gpu, Product::Forward, D);
    let bad = *offered.iter().find(|&&v| v != Variant::BASELINE).expect("a candidate besides the baseline");
    gpu.corrupt = Some(bad.to_string());
    let chosen = forward_variant(&gpu);
    assert_ne!(chosen, bad, "the corrupted {bad} won");
    let t = gpu.tuning.lock().unwrap();
    let (entry, _) = t.found.get(&class_key(Product::Forward, D)).expect("the class was tuned");
    assert_eq!(entry.rejected, vec![bad.to_string()], "{entry:?}");
    let cache = std::fs::read_to_string(&file).unwrap();
    assert!(cache.contains("rejected") && cache.contains(&bad.to_string()), "the cache does not record {bad}");
}
