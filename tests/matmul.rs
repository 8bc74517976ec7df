//! Matmul kernels against the CPU reference, at awkward sizes, batched, split into windows,
//! and past the 128 MiB binding limit. Every variant the tuner can pick runs the small cases
//! in both the trusted and the checked shader build; the big-buffer cases run once per product.
//!
//! Tolerance: inputs are uniform in [-1, 1), so each output is a sum of L products of
//! magnitude < 1 and an f32 sum's error stays far below 1e-6·L (L = K for the forward, N for
//! dinp, Z·M for dW and dbias). Accumulated outputs add rtol 1e-6 of their starting value.

use wgtrain::gpu::{Category, GpuBuffer, Recorder};
use wgtrain::kernels::View;
use wgtrain::reference::{matmul as cpu, Rng};
use wgtrain::tune::matmul::{Dims, Matmul, Variant};
use wgtrain::Gpu;

use crate::common::{assert_close, builds, gpu};

/// Host data for one product and its backward.
struct Case {
    d: Dims,
    inp: Vec<f32>,  // (Z, M, K)
    w: Vec<f32>,    // (Zw, N, K), Zw = 1 when shared
    bias: Vec<f32>, // (N)
    dout: Vec<f32>, // (Z, M, N)
    dw0: Vec<f32>,  // starting value of dW, to check it accumulates
    db0: Vec<f32>,  // starting value of dbias
}

impl Case {
    fn new(d: Dims, seed: u64) -> Self {
        let (z, m, n, k) = (d.batch as usize, d.m as usize, d.n as usize, d.k as usize);
        let zw = if d.shared_weight { 1 } else { z };
        let mut r = Rng::new(seed);
        Self {
            d,
            inp: r.vec(z * m * k),
            w: r.vec(zw * n * k),
            bias: r.vec(n),
            dout: r.vec(z * m * n),
            dw0: r.vec(zw * n * k),
            db0: r.vec(n),
        }
    }

    /// The reference: (out, dinp, dW, dbias).
    fn expected(&self, with_bias: bool) -> [Vec<f32>; 4] {
        let (z, m, n, k) = (self.d.batch as usize, self.d.m as usize, self.d.n as usize, self.d.k as usize);
        let mut out = vec![0.0; z * m * n];
        let mut dinp = vec![0.0; z * m * k];
        let mut dw = self.dw0.clone();
        let mut db = self.db0.clone();
        for b in 0..z {
            let wz = if self.d.shared_weight { 0 } else { b * n * k };
            let (x, w) = (&self.inp[b * m * k..][..m * k], &self.w[wz..][..n * k]);
            let g = &self.dout[b * m * n..][..m * n];
            let bias = with_bias.then_some(&self.bias[..]);
            cpu::forward(&mut out[b * m * n..][..m * n], x, w, bias, m, n, k);
            cpu::backward_input(&mut dinp[b * m * k..][..m * k], g, w, m, n, k);
            cpu::backward_weight(&mut dw[wz..][..n * k], g, x, m, n, k);
            cpu::backward_bias(&mut db, g, m, n);
        }
        [out, dinp, dw, db]
    }
}

fn upload(gpu: &Gpu, data: &[f32]) -> GpuBuffer {
    gpu.pool.storage_from(&gpu.queue, Category::Scratch, data).unwrap()
}

fn nan_buffer(gpu: &Gpu, len: usize) -> GpuBuffer {
    upload(gpu, &vec![f32::NAN; len])
}

/// Runs `body` with a builder pinned to each variant the tuner can pick, in both shader builds.
fn every_variant(body: impl Fn(&Gpu, &mut Matmul)) {
    for gpu in builds() {
        for v in Variant::all() {
            body(gpu, &mut Matmul::with_variant(gpu, v));
        }
    }
}

/// Runs forward and backward in one submit and compares all four results with the reference.
fn check(gpu: &Gpu, mm: &Matmul, c: &Case, with_bias: bool) {
    let d = c.d;
    let (z, m, n, k) = (d.batch as usize, d.m as usize, d.n as usize, d.k as usize);
    let (inp, w, bias, dout) = (upload(gpu, &c.inp), upload(gpu, &c.w), upload(gpu, &c.bias), upload(gpu, &c.dout));
    let (dw, db) = (upload(gpu, &c.dw0), upload(gpu, &c.db0));
    let (out, dinp) = (nan_buffer(gpu, z * m * n), nan_buffer(gpu, z * m * k));
    let bias_view = with_bias.then(|| View::from(&bias));
    let mut ops = mm.forward((&out).into(), (&inp).into(), (&w).into(), bias_view, d).unwrap();
    ops.extend(mm.backward_input((&dinp).into(), (&dout).into(), (&w).into(), d).unwrap());
    ops.extend(mm.backward_weight((&dw).into(), (&dout).into(), (&inp).into(), d).unwrap());
    ops.extend(mm.backward_bias((&db).into(), (&dout).into(), d).unwrap());
    let mut rec = Recorder::new(gpu);
    rec.run(&ops);
    rec.submit().unwrap();

    let [e_out, e_dinp, e_dw, e_db] = c.expected(with_bias);
    let build = if gpu.checked_shaders { "checked" } else { "trusted" };
    let variant = mm.variant.map_or("tuned".into(), |v| v.to_string());
    let tag = format!("{z}x{m}x{n}x{k} shared={} bias={with_bias} {variant} {build}", d.shared_weight);
    let terms = (z * m) as f32;
    let read = |b: &GpuBuffer, len| gpu.read::<f32>(b, 0, len).unwrap();
    assert_close(&format!("forward {tag}"), &read(&out, e_out.len()), &e_out, 1e-6 * k as f32, 0.0);
    assert_close(&format!("backward_input {tag}"), &read(&dinp, e_dinp.len()), &e_dinp, 1e-6 * n as f32, 0.0);
    assert_close(&format!("backward_weight {tag}"), &read(&dw, e_dw.len()), &e_dw, 1e-6 * terms, 1e-6);
    assert_close(&format!("backward_bias {tag}"), &read(&db, n), &e_db, 1e-6 * terms, 1e-6);
}

/// The variant of the big-buffer cases (once per product, not per variant, to keep CI short):
/// the GPUs' default. The windows are host code shared by every variant, and
/// `matmul_split_into_windows_matches_reference` runs every variant through them at a
/// lowered binding limit.
const BIG: Variant = Variant::GPU[0];

const AWKWARD: &[(u32, u32, u32)] = &[(1, 1, 1), (3, 5, 7), (17, 33, 65), (127, 255, 63)];

#[test]
fn matmul_matches_reference_at_awkward_sizes() {
    every_variant(|gpu, mm| {
        for (i, &(m, n, k)) in AWKWARD.iter().enumerate() {
            check(gpu, mm, &Case::new(Dims::linear(m, n, k), i as u64), true);
            check(gpu, mm, &Case::new(Dims::linear(m, n, k), 10 + i as u64), false);
        }
    });
}

#[test]
fn matmul_one_past_every_tile_matches_reference() {
    // One past the largest tile (128) and the K step, in every dimension.
    every_variant(|gpu, mm| check(gpu, mm, &Case::new(Dims::linear(129, 131, 17), 30), true));
}

#[test]
fn matmul_vec4_aligned_path_matches_reference() {
    // Every dimension a multiple of 4: each load is one vec4 (ALIGNED). 33 rows is one past a
    // 32-row tile.
    every_variant(|gpu, mm| {
        check(gpu, mm, &Case::new(Dims::linear(33, 36, 68), 3), true);
        check(gpu, mm, &Case::new(Dims::linear(64, 128, 256), 4), true);
    });
}

#[test]
fn matmul_batched_matches_reference() {
    every_variant(|gpu, mm| {
        // One weight shared by the batch (a linear layer over (B, T, C)).
        check(gpu, mm, &Case::new(Dims { batch: 3, m: 17, n: 33, k: 65, shared_weight: true }, 5), true);
        // One weight per batch entry (the z dimension of the grid).
        check(gpu, mm, &Case::new(Dims { batch: 5, m: 17, n: 33, k: 65, shared_weight: false }, 6), false);
        check(gpu, mm, &Case::new(Dims { batch: 2, m: 8, n: 12, k: 16, shared_weight: false }, 7), false);
    });
}

#[test]
fn matmul_split_into_windows_matches_reference() {
    // A 4 KiB binding limit splits every operand into many windows at unaligned offsets,
    // along M, along N (accumulating for backward_input), and per batch entry.
    every_variant(|gpu, mm| {
        mm.binding_limit = 4096;
        check(gpu, mm, &Case::new(Dims::linear(127, 255, 63), 8), true);
        check(gpu, mm, &Case::new(Dims { batch: 3, m: 37, n: 41, k: 29, shared_weight: false }, 9), false);
        mm.binding_limit = 2048;
        check(gpu, mm, &Case::new(Dims { batch: 2, m: 33, n: 36, k: 68, shared_weight: true }, 10), true);
    });
}

#[test]
fn matmul_naive_matches_reference() {
    for gpu in builds() {
        let mm = Matmul::new(gpu);
        for (i, &(m, n, k)) in AWKWARD.iter().enumerate() {
            let c = Case::new(Dims::linear(m, n, k), 20 + i as u64);
            let (inp, w, bias) = (upload(gpu, &c.inp), upload(gpu, &c.w), upload(gpu, &c.bias));
            let out = nan_buffer(gpu, (m * n) as usize);
            let op = mm.naive((&out).into(), (&inp).into(), (&w).into(), Some((&bias).into()), c.d).unwrap();
            let mut rec = Recorder::new(gpu);
            rec.run(&op);
            rec.submit().unwrap();
            let [want, ..] = c.expected(true);
            let got = gpu.read::<f32>(&out, 0, want.len()).unwrap();
            assert_close(&format!("naive {m}x{n}x{k}"), &got, &want, 1e-6 * k as f32, 0.0);
        }
    }
}

#[test]
fn matmul_output_over_128_mib_matches_reference() {
    // out is 4099 × 8209 f32 = 134.6 MB, past lavapipe's 128 MiB (134.2 MB) binding limit.
    let Some(gpu) = gpu() else { return };
    let mm = Matmul::with_variant(gpu, BIG);
    let c = Case::new(Dims::linear(4099, 8209, 5), 11);
    let (inp, w, bias) = (upload(gpu, &c.inp), upload(gpu, &c.w), upload(gpu, &c.bias));
    let out = nan_buffer(gpu, 4099 * 8209);
    assert!(out.size() > 128 << 20);
    let op = mm.forward((&out).into(), (&inp).into(), (&w).into(), Some((&bias).into()), c.d).unwrap();
    let mut rec = Recorder::new(gpu);
    rec.run(&op);
    rec.submit().unwrap();
    let mut want = vec![0.0; 4099 * 8209];
    cpu::forward(&mut want, &c.inp, &c.w, Some(&c.bias), 4099, 8209, 5);
    let got = gpu.read::<f32>(&out, 0, want.len()).unwrap();
    assert_close("forward 4099x8209x5", &got, &want, 5e-6, 0.0);
}

#[test]
fn matmul_weight_over_128_mib_matches_reference() {
    // The shape of GPT-2's LM head: W and dW are 50257 × 701 f32 = 140.9 MB, so forward and
    // backward_input split W along N, and backward_weight splits dW.
    let Some(gpu) = gpu() else { return };
    let mm = Matmul::with_variant(gpu, BIG);
    check(gpu, &mm, &Case::new(Dims::linear(3, 50257, 701), 12), true);
}

#[test]
fn one_gib_buffer_is_usable() {
    // Operands sit near the end of a 1 GiB buffer, far past any single binding.
    let Some(gpu) = gpu() else { return };
    let mm = Matmul::new(gpu);
    let big = gpu.pool.storage(Category::Activations, 1 << 30).unwrap();
    let (m, n, k) = (19usize, 23usize, 29usize);
    let c = Case::new(Dims::linear(m as u32, n as u32, k as u32), 13);
    let at_inp = (1u64 << 28) - 10_000_003; // elements; 1 GiB holds 2^28
    let at_w = (1u64 << 28) - 1_001;
    let at_dinp = (1u64 << 28) - 5_000_011;
    gpu.write(&big, at_inp, &c.inp);
    gpu.write(&big, at_w, &c.w);
    gpu.write(&big, at_dinp, &vec![f32::NAN; m * k]);
    // forward reads inp and W from the big buffer.
    let out = nan_buffer(gpu, m * n);
    let op = mm.forward((&out).into(), View::at(&big, at_inp), View::at(&big, at_w), None, c.d).unwrap();
    // backward_input writes dinp into it (a buffer can't be read and written in one dispatch).
    let (w, dout) = (upload(gpu, &c.w), upload(gpu, &c.dout));
    let op2 = mm.backward_input(View::at(&big, at_dinp), (&dout).into(), (&w).into(), c.d).unwrap();
    let mut rec = Recorder::new(gpu);
    rec.run(&op);
    rec.run(&op2);
    rec.submit().unwrap();
    let [e_out, e_dinp, ..] = c.expected(false);
    assert_close("forward from 1 GiB buffer", &gpu.read::<f32>(&out, 0, m * n).unwrap(), &e_out, 1e-6 * k as f32, 0.0);
    let got = gpu.read::<f32>(&big, at_dinp, m * k).unwrap();
    assert_close("backward_input into 1 GiB buffer", &got, &e_dinp, 1e-6 * n as f32, 0.0);
}

#[test]
fn matmul_operand_too_small_is_an_error() {
    let Some(gpu) = gpu() else { return };
    let mm = Matmul::new(gpu);
    let small = nan_buffer(gpu, 10);
    let big = nan_buffer(gpu, 10_000);
    let err = mm.forward((&big).into(), (&small).into(), (&big).into(), None, Dims::linear(30, 30, 30));
    assert!(matches!(err, Err(wgtrain::GpuError::OutOfBounds { .. })), "got {:?}", err.err());
}
