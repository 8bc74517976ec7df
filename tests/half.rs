//! The f16 kernels of mixed precision against the CPU references at awkward sizes, in both
//! shader builds, outputs pre-filled with NaN.
//!
//! Inputs are rounded to f16 on the host and the references run on those exact values, so what
//! remains is the kernels' own error: f32 arithmetic as in the f32 tests, plus one rounding of
//! each f16 output, at most 2^-11 of its value (4.9e-4) where it is normal, and 2^-25 absolute
//! where it is subnormal. Stated per test as atol + rtol·|want| with rtol 1e-3 (two such
//! roundings) unless a kernel reads an f16 value it wrote itself, which the test says.

use wgtrain::gpu::{Category, GpuBuffer, Recorder};
use wgtrain::kernels::attention::AttnVariant;
use wgtrain::kernels::elementwise::Span;
use wgtrain::kernels::layernorm::LnVariant;
use wgtrain::kernels::{attention, classifier, elementwise, gelu, layernorm, Dtype, View};
use wgtrain::reference::{self, matmul as cpu, Rng};
use wgtrain::tune::matmul::{Dims, Matmul, Variant};
use wgtrain::Gpu;

use crate::common::{assert_close, builds, builds_with};

/// Values rounded to the nearest f16 (as f32).
pub fn f16ed(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}

/// Uniform values in [-1, 1) that f16 holds exactly.
pub fn rvec(r: &mut Rng, n: usize) -> Vec<f32> {
    f16ed(&r.vec(n))
}

/// An f16 buffer holding `data` (rounded to nearest even), padded to 16 bytes.
pub fn up16(gpu: &Gpu, data: &[f32]) -> GpuBuffer {
    let mut bits: Vec<u16> = data.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect();
    bits.resize(data.len().next_multiple_of(8).max(8), 0);
    gpu.pool.storage_from(&gpu.queue, Category::Scratch, &bits).unwrap()
}

/// An f16 buffer of `len` NaNs.
pub fn nan16(gpu: &Gpu, len: usize) -> GpuBuffer {
    up16(gpu, &vec![f32::NAN; len])
}

pub fn read16(gpu: &Gpu, b: &GpuBuffer, len: usize) -> Vec<f32> {
    gpu.read_f16(b, 0, len).unwrap()
}

pub fn up32(gpu: &Gpu, data: &[f32]) -> GpuBuffer {
    gpu.pool.storage_from(&gpu.queue, Category::Scratch, data).unwrap()
}

pub fn read32(gpu: &Gpu, b: &GpuBuffer, len: usize) -> Vec<f32> {
    gpu.read(b, 0, len).unwrap()
}

pub fn h(b: &GpuBuffer) -> View<'_> {
    View::typed(b, Dtype::F16)
}

pub fn run(gpu: &Gpu, ops: &[wgtrain::gpu::Dispatch]) {
    let mut rec = Recorder::new(gpu);
    rec.run(ops);
    rec.submit().unwrap();
}

fn build_name(gpu: &Gpu) -> &'static str {
    if gpu.checked_shaders {
        "checked"
    } else {
        "trusted"
    }
}

/// f16 inputs and weights with f32 accumulation: out, dinp in f16; dW, dbias accumulated in
/// f32 (as mixed precision runs them). out and dinp: |d| <= 1e-6·L + 1e-4 + 1e-3·|want|; dW and
/// dbias as in the f32 tests. Every variant runs in the trusted build; the checked build (whose
/// index arithmetic is the f32 kernels', which the f32 tests run checked in every variant)
/// runs each adapter type's default, the baseline and the GPUs' tiled kernel, whose f16
/// windows (2-byte elements) it covers.
#[test]
fn f16_matmul_matches_reference() {
    for gpu in builds() {
        // The cooperative-matrix kernels have their own tests (tests/coop.rs).
        let variants = if gpu.checked_shaders { vec![Variant::BASELINE, Variant::GPU[0]] } else { Variant::all() };
        for v in variants {
            let mm = Matmul::with_variant(gpu, v);
            for (i, &(m, n, k)) in [(3u32, 5u32, 7u32), (17, 33, 65)].iter().enumerate() {
                check_matmul(gpu, &mm, Dims::linear(m, n, k), 900 + i as u64);
            }
        }
    }
}

pub fn check_matmul(gpu: &Gpu, mm: &Matmul, d: Dims, seed: u64) {
    let (m, n, k) = (d.m as usize, d.n as usize, d.k as usize);
    let mut r = Rng::new(seed);
    let (x, w, bias, dout) = (rvec(&mut r, m * k), rvec(&mut r, n * k), rvec(&mut r, n), rvec(&mut r, m * n));
    let (dw0, db0) = (r.vec(n * k), r.vec(n));
    let (gx, gw, gb, gdout) = (up16(gpu, &x), up16(gpu, &w), up16(gpu, &bias), up16(gpu, &dout));
    let (out, dinp) = (nan16(gpu, m * n), nan16(gpu, m * k));
    let (dw, db) = (up32(gpu, &dw0), up32(gpu, &db0));
    let mut ops = mm.forward(h(&out), h(&gx), h(&gw), Some(h(&gb)), d).unwrap();
    ops.extend(mm.backward_input(h(&dinp), h(&gdout), h(&gw), d).unwrap());
    ops.extend(mm.backward_weight((&dw).into(), h(&gdout), h(&gx), d).unwrap());
    ops.extend(mm.backward_bias((&db).into(), h(&gdout), d).unwrap());
    run(gpu, &ops);
    let mut e_out = vec![0.0; m * n];
    cpu::forward(&mut e_out, &x, &w, Some(&bias), m, n, k);
    let mut e_dinp = vec![0.0; m * k];
    cpu::backward_input(&mut e_dinp, &dout, &w, m, n, k);
    let (mut e_dw, mut e_db) = (dw0.clone(), db0.clone());
    cpu::backward_weight(&mut e_dw, &dout, &x, m, n, k);
    cpu::backward_bias(&mut e_db, &dout, m, n);
    let tag = format!("f16 {m}x{n}x{k} {} {}", mm.variant.unwrap(), build_name(gpu));
    assert_close(&format!("forward {tag}"), &read16(gpu, &out, m * n), &e_out, 1e-6 * k as f32 + 1e-4, 1e-3);
    let got = read16(gpu, &dinp, m * k);
    assert_close(&format!("backward_input {tag}"), &got, &e_dinp, 1e-6 * n as f32 + 1e-4, 1e-3);
    assert_close(&format!("backward_weight {tag}"), &read32(gpu, &dw, n * k), &e_dw, 1e-6 * m as f32, 1e-6);
    assert_close(&format!("backward_bias {tag}"), &read32(gpu, &db, n), &e_db, 1e-6 * m as f32, 1e-6);
}

/// f16 rows in and out, f32 statistics and weights. out: |d| <= 2e-5 + 1e-3·|want|; dinp
/// accumulates into an f16 start (two roundings of O(1) values): |d| <= 1e-4 + 2e-3·|want|.
#[test]
fn f16_layernorm_matches_reference() {
    for (gpu, v) in builds_with(LnVariant::ALL) {
        for (i, &(n, c)) in [(3usize, 5usize), (17, 33), (37, 768)].iter().enumerate() {
            let mut r = Rng::new(910 + i as u64);
            let (x, wt, bs, dout, dinp0) =
                (rvec(&mut r, n * c), r.vec(c), r.vec(c), rvec(&mut r, n * c), rvec(&mut r, n * c));
            let (dw0, db0) = (r.vec(c), r.vec(c));
            let (gx, gdout, gdinp) = (up16(gpu, &x), up16(gpu, &dout), up16(gpu, &dinp0));
            let (gw, gb, gdw, gdb) = (up32(gpu, &wt), up32(gpu, &bs), up32(gpu, &dw0), up32(gpu, &db0));
            let (out, stats) = (nan16(gpu, n * c), up32(gpu, &vec![f32::NAN; 2 * n]));
            let (n32, c32) = (n as u32, c as u32);
            let mut ops = vec![layernorm::forward_with(
                gpu,
                v,
                h(&out),
                (&stats).into(),
                h(&gx),
                (&gw).into(),
                (&gb).into(),
                n32,
                c32,
            )
            .unwrap()];
            let (dw, db, st) = ((&gdw).into(), (&gdb).into(), (&stats).into());
            ops.extend(
                layernorm::backward_with(gpu, v, h(&gdinp), dw, db, h(&gdout), h(&gx), st, (&gw).into(), n32, c32)
                    .unwrap(),
            );
            run(gpu, &ops);
            let mut want = vec![0.0; n * c];
            let stw = reference::layernorm::forward(&mut want, &x, &wt, &bs, n, c);
            let (mut dinp, mut dwr, mut dbr) = (dinp0.clone(), dw0.clone(), db0.clone());
            reference::layernorm::backward(&mut dinp, &mut dwr, &mut dbr, &dout, &x, &wt, &stw, n, c);
            let tag = format!("f16 layernorm {} {} {n}x{c}", v.name(), build_name(gpu));
            assert_close(&format!("{tag} out"), &read16(gpu, &out, n * c), &want, 2e-5, 1e-3);
            assert_close(&format!("{tag} dinp"), &read16(gpu, &gdinp, n * c), &dinp, 1e-4, 2e-3);
            assert_close(&format!("{tag} dweight"), &read32(gpu, &gdw, c), &dwr, 1e-6 * n as f32, 1e-5);
            assert_close(&format!("{tag} dbias"), &read32(gpu, &gdb, c), &dbr, 1e-6 * n as f32, 1e-5);
        }
    }
}

/// f16 in and out. out: |d| <= 1e-5 + 1e-3·|want|; dinp accumulates into an f16 start:
/// |d| <= 1e-4 + 2e-3·|want|.
#[test]
fn f16_gelu_and_residual_match_reference() {
    for gpu in builds() {
        for (i, &n) in [1usize, 3, 4097].iter().enumerate() {
            let mut r = Rng::new(920 + i as u64);
            let x = f16ed(&r.vec(n).iter().map(|v| v * 6.0).collect::<Vec<_>>());
            let (dout, dinp0, y) = (rvec(&mut r, n), rvec(&mut r, n), rvec(&mut r, n));
            let (gx, gdout, gdinp, gy) = (up16(gpu, &x), up16(gpu, &dout), up16(gpu, &dinp0), up16(gpu, &y));
            let (out, sum) = (nan16(gpu, n), nan16(gpu, n));
            let span = |b| Span::whole_as(b, Dtype::F16).first(n as u64);
            let ops = [
                gelu::forward(gpu, h(&out), h(&gx), n as u32).unwrap(),
                gelu::backward(gpu, h(&gdinp), h(&gx), h(&gdout), n as u32).unwrap(),
                elementwise::add(gpu, span(&sum), span(&gx), span(&gy)).unwrap(),
            ];
            run(gpu, &ops);
            let mut want = vec![0.0; n];
            reference::gelu::forward(&mut want, &x);
            let mut dinp = dinp0.clone();
            reference::gelu::backward(&mut dinp, &x, &dout);
            let added: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
            let tag = format!("f16 {} {n}", build_name(gpu));
            assert_close(&format!("gelu {tag} out"), &read16(gpu, &out, n), &want, 1e-5, 1e-3);
            assert_close(&format!("gelu {tag} dinp"), &read16(gpu, &gdinp, n), &dinp, 1e-4, 2e-3);
            assert_close(&format!("add {tag}"), &read16(gpu, &sum, n), &added, 0.0, 1e-3);
        }
    }
}

/// f16 logits, f32 losses and softmax, f16 dlogits (O(1/N)), scaled by the loss scale:
/// losses |d| <= 1e-5 + 1e-5·|want|; dlogits |d| <= 1e-7·S + 1e-3·|want|.
#[test]
fn f16_classifier_matches_reference_with_a_loss_scale() {
    for gpu in builds() {
        // (389, 517) runs in windows of 128 rows: each starts 128·517 halves (256-aligned) on.
        for (i, &(n, v, windowed)) in [(3usize, 5usize, false), (37, 517, false), (389, 517, true)].iter().enumerate() {
            let mut r = Rng::new(930 + i as u64);
            let logits = f16ed(&r.vec(n * v).iter().map(|x| x * 8.0).collect::<Vec<_>>());
            let targets: Vec<u32> = (0..n).map(|_| (r.next_u64() % v as u64) as u32).collect();
            let scale = 1024.0f32;
            let (gl, losses) = (up16(gpu, &logits), up32(gpu, &vec![0.0; n]));
            let targets_buf = gpu.pool.storage_from(&gpu.queue, Category::Scratch, &targets).unwrap();
            let sbuf = up32(gpu, &[scale, 0.0, 0.0, 0.0]);
            let dloss = 1.0 / n as f32;
            let (n32, v32) = (n as u32, v as u32);
            let rows = classifier::Rows {
                logits: h(&gl),
                losses: (&losses).into(),
                targets: (&targets_buf).into(),
                n: n32,
                v: v32,
                vp: v32,
                norm: None,
            };
            let limit = if windowed { 2 * 517 * 200 } else { gpu.max_binding() };
            let ops = classifier::forward_backward_within(gpu, rows, Some(dloss), Some(&sbuf), limit).unwrap();
            assert_eq!(ops.len(), if windowed { 4 } else { 1 });
            run(gpu, &ops);
            let mut want = logits.clone();
            let want_losses =
                reference::classifier::forward_backward(&mut want, &targets, v, v, Some((dloss * scale) as f64));
            let tag = format!("f16 classifier {} N{n} V{v}", build_name(gpu));
            assert_close(&format!("{tag} losses"), &read32(gpu, &losses, n), &want_losses, 1e-5, 1e-5);
            assert_close(&format!("{tag} dlogits"), &read16(gpu, &gl, n * v), &want, 1e-7 * scale, 1e-3);
        }
    }
}

/// f16 qkv, out and dqkv; f32 scores and L. out: |d| <= 1e-5 + 1e-3·|want|. The backward
/// reads the f16 out the forward wrote (D = dout·out carries its rounding) and writes f16:
/// |d| <= 1e-3 + 4e-3·|want|.
#[test]
fn f16_attention_matches_reference() {
    // The cooperative-matrix kernels have their own tests (tests/coop.rs).
    for (gpu, v) in builds_with(AttnVariant::ALL) {
        for (i, &(b, t, c, nh)) in [(2, 5, 6, 3), (1, 37, 64, 1), (1, 65, 20, 2)].iter().enumerate() {
            let mut r = Rng::new(940 + i as u64);
            let (qkv, dout) = (rvec(&mut r, b * t * 3 * c), rvec(&mut r, b * t * c));
            let (gqkv, gdout) = (up16(gpu, &qkv), up16(gpu, &dout));
            let (out, dqkv) = (nan16(gpu, b * t * c), nan16(gpu, b * t * 3 * c));
            let (lse, dd) = (up32(gpu, &vec![f32::NAN; b * nh * t]), up32(gpu, &vec![f32::NAN; b * nh * t]));
            let (b32, t32, c32, nh32) = (b as u32, t as u32, c as u32, nh as u32);
            let mut ops =
                vec![attention::forward_with(gpu, v, h(&out), (&lse).into(), h(&gqkv), b32, t32, c32, nh32).unwrap()];
            let (l, d) = ((&lse).into(), (&dd).into());
            ops.extend(
                attention::backward_with(gpu, v, h(&dqkv), d, h(&gdout), h(&out), h(&gqkv), l, b32, t32, c32, nh32)
                    .unwrap(),
            );
            run(gpu, &ops);
            let mut want = vec![0.0; b * t * c];
            reference::attention::forward(&mut want, &qkv, b, t, c, nh);
            let mut want_d = vec![0.0; b * t * 3 * c];
            reference::attention::backward(&mut want_d, &dout, &qkv, b, t, c, nh);
            let tag = format!("f16 attention {v} {} B{b} T{t} C{c} NH{nh}", build_name(gpu));
            assert_close(&format!("{tag} out"), &read16(gpu, &out, b * t * c), &want, 1e-5, 1e-3);
            assert_close(&format!("{tag} dqkv"), &read16(gpu, &dqkv, b * t * 3 * c), &want_d, 1e-3, 4e-3);
        }
    }
}

/// f16 embedding output from f32 tables: one addition, then one rounding: |d| <= 1e-3·|want|.
/// The f16 dout's gradients sum into f32 tables as in the f32 test.
#[test]
fn f16_encoder_matches_reference() {
    for gpu in builds() {
        let (b, t, c, v) = (4usize, 37usize, 33usize, 517usize);
        let n = b * t;
        let mut r = Rng::new(950);
        let tokens: Vec<u32> = (0..n).map(|_| (r.next_u64() % 9) as u32).collect();
        let (wte, wpe, dout) = (r.vec(v * c), r.vec(t * c), rvec(&mut r, n * c));
        let (dwte0, dwpe0) = (r.vec(v * c), r.vec(t * c));
        let (gwte, gwpe, gdout) = (up32(gpu, &wte), up32(gpu, &wpe), up16(gpu, &dout));
        let (gdwte, gdwpe, out) = (up32(gpu, &dwte0), up32(gpu, &dwpe0), nan16(gpu, n * c));
        let batch = wgtrain::kernels::encoder::TokenBuffers::new(gpu, n).unwrap();
        batch.upload(gpu, &tokens);
        let (v32, n32, t32, c32) = (v as u32, n as u32, t as u32, c as u32);
        use wgtrain::kernels::encoder;
        let mut ops = vec![encoder::forward(
            gpu,
            h(&out),
            &batch.tokens,
            (&gwte).into(),
            Some((&gwpe).into()),
            v32,
            n32,
            t32,
            c32,
            t32,
        )
        .unwrap()];
        ops.extend(
            encoder::backward(gpu, (&gdwte).into(), Some((&gdwpe).into()), h(&gdout), &batch, v32, n32, t32, c32)
                .unwrap(),
        );
        run(gpu, &ops);
        let mut want = vec![0.0; n * c];
        reference::encoder::forward(&mut want, &tokens, &wte, &wpe, t, c);
        let (mut dwte, mut dwpe) = (dwte0.clone(), dwpe0.clone());
        reference::encoder::backward(&mut dwte, &mut dwpe, &dout, &tokens, t, c);
        let tag = format!("f16 encoder {}", build_name(gpu));
        assert_close(&format!("{tag} out"), &read16(gpu, &out, n * c), &want, 0.0, 1e-3);
        assert_close(&format!("{tag} dwte"), &read32(gpu, &gdwte, v * c), &dwte, 1e-6 * n as f32, 1e-6);
        assert_close(&format!("{tag} dwpe"), &read32(gpu, &gdwpe, t * c), &dwpe, 1e-6 * b as f32, 1e-6);
    }
}

/// Values where rounding to f16 is delicate: ties (to even), the largest finite f16 and the
/// first value that rounds past it, subnormals, a value under half the smallest subnormal,
/// signed zeros, infinities.
fn edge_values() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        65504.0,
        65519.0,
        65520.0,
        -65520.0,
        1e6,
        f32::INFINITY,
        f32::NEG_INFINITY,
        6.1e-5,
        5.96e-8,
        2.98e-8,
        2.0e-8,
        1.0e-9,
        -3.0e-7,
        1.0 / 3.0,
        0.1,
    ];
    // Exact ties between two f16 neighbours: 1 + (2k + 1)·2^-11.
    v.extend((0..8).map(|k| 1.0 + (2 * k + 1) as f32 * 2f32.powi(-11)));
    // Ties among subnormals: (2k + 1)·2^-25.
    v.extend((0..8).map(|k| (2 * k + 1) as f32 * 2f32.powi(-25)));
    v
}

/// The f16 copy the optimizer writes is the f32 parameter rounded to nearest even, bit for
/// bit (half::f16::from_f32 rounds that way), after an update of every kind, in both builds.
#[test]
fn optimizer_writes_f16_copies_rounded_to_nearest_even() {
    use wgtrain::optim::{OptimConfig, Optimizer, ParamArena, ParamTable};
    for gpu in builds() {
        for cfg in [OptimConfig::adamw(), OptimConfig::lamb(), OptimConfig::sgd()] {
            let table = ParamTable::new([("a", vec![257]), ("b", vec![3, 5])]);
            let mut r = Rng::new(960);
            let mut values = edge_values();
            values.extend(r.vec(257 - values.len()).iter().map(|x| x * 3.0));
            let arena = ParamArena::new(gpu, table.clone(), true).unwrap();
            gpu.write(&arena.params, 0, &table.pack(&[values, r.vec(15)]));
            let mut opt = Optimizer::new(gpu, &arena, cfg.clone(), None).unwrap();
            let mut rec = Recorder::new(gpu);
            opt.record_half_copy(gpu, &mut rec);
            rec.submit().unwrap();
            let tag = format!("{:?} {}", cfg.kind, build_name(gpu));
            check_half_copy(gpu, &arena, &table, &format!("{tag} copy"));
            // An update with finite gradients: the non-finite parameters make LAMB's norms
            // non-finite, so it gets finite ones.
            let finite: Vec<f32> = gpu
                .read::<f32>(&arena.params, 0, table.len as usize)
                .unwrap()
                .iter()
                .map(|x| x.clamp(-7e4, 7e4))
                .collect();
            gpu.write(&arena.params, 0, &finite);
            gpu.write(&arena.grads, 0, &table.pack(&[r.vec(257), r.vec(15)]));
            let mut rec = Recorder::new(gpu);
            opt.record_step(gpu, &mut rec, 1e-2, false);
            rec.submit().unwrap();
            check_half_copy(gpu, &arena, &table, &format!("{tag} update"));
        }
    }
}

fn check_half_copy(gpu: &Gpu, arena: &wgtrain::optim::ParamArena, table: &wgtrain::optim::ParamTable, tag: &str) {
    let params: Vec<f32> = gpu.read(&arena.params, 0, table.len as usize).unwrap();
    let words: Vec<u32> = gpu.read(arena.half.as_ref().unwrap(), 0, table.len as usize / 2).unwrap();
    let bits: &[u16] = bytemuck::cast_slice(&words);
    for t in &table.tensors {
        for i in t.offset as usize..(t.offset + t.numel()) as usize {
            let want = half::f16::from_f32(params[i]).to_bits();
            assert_eq!(
                bits[i], want,
                "{tag}: {} element {i}: f32 {:e} gave f16 bits {:#06x}, not {want:#06x}",
                t.name, params[i], bits[i]
            );
        }
    }
}

/// Stochastic rounding: every copy is one of the two f16 neighbours of its value, and their
/// mean is the value: over 65536 copies of x the mean is within 4 standard errors of x.
#[test]
fn stochastic_rounding_is_unbiased() {
    use wgtrain::optim::{OptimConfig, Optimizer, ParamArena, ParamTable};
    for gpu in builds() {
        let n = 65536usize;
        for x in [1.0f32 / 3.0, 1000.1, -2.5e-6] {
            let table = ParamTable::new([("w", vec![n])]);
            let arena = ParamArena::new(gpu, table.clone(), true).unwrap();
            gpu.write(&arena.params, 0, &vec![x; n]);
            let mut opt = Optimizer::new(gpu, &arena, OptimConfig::sgd(), None).unwrap();
            opt.stochastic = true;
            let mut rec = Recorder::new(gpu);
            opt.record_half_copy(gpu, &mut rec);
            rec.submit().unwrap();
            let got = read16(gpu, arena.half.as_ref().unwrap(), n);
            let lo = half::f16::from_f32(x).to_f32().min(x);
            let down = half::f16::from_f32(lo);
            let (a, b) = if down.to_f32() <= x { (down, f16_next(down, x)) } else { (f16_next(down, x), down) };
            let (a, b) = (a.to_f32(), b.to_f32());
            assert!(got.iter().all(|&g| g == a || g == b), "x {x}: copies outside the neighbours {a}, {b}");
            let mean = got.iter().map(|&g| g as f64).sum::<f64>() / n as f64;
            let p = (x as f64 - a as f64) / (b as f64 - a as f64);
            let se = (b as f64 - a as f64) * (p * (1.0 - p) / n as f64).sqrt();
            assert!((mean - x as f64).abs() <= 4.0 * se + 1e-12, "x {x}: mean {mean} of [{a}, {b}], se {se}");
        }
    }
}

/// The f16 neighbour of `h` on the side of `x`.
fn f16_next(h: half::f16, x: f32) -> half::f16 {
    let bits = h.to_bits();
    let up = (h.to_f32() < x) == (bits & 0x8000 == 0);
    half::f16::from_bits(if up { bits + 1 } else { bits - 1 })
}

/// The cooperative-matrix variants refuse, naming what they need, where the device has no
/// cooperative matrices or the operands are f32.
#[test]
fn coop_matmul_is_refused_where_it_cannot_run() {
    let Some(gpu) = crate::common::gpu() else { return };
    let mm = Matmul::with_variant(gpu, Variant::Coop { frag: 8 });
    let d = Dims::linear(3, 5, 7);
    let (x, w) = (up32(gpu, &[0.0; 21]), up32(gpu, &[0.0; 35]));
    let out = up32(gpu, &[0.0; 15]);
    let err = mm.forward((&out).into(), (&x).into(), (&w).into(), None, d).err().expect("f32 operands are refused");
    assert!(err.to_string().contains("f16 operands"), "{err}");
    if !gpu.coop_matrix {
        let (x, w, out) = (up16(gpu, &[0.0; 21]), up16(gpu, &[0.0; 35]), nan16(gpu, 15));
        let err = mm.forward(h(&out), h(&x), h(&w), None, d).err().expect("no cooperative matrices here");
        assert!(err.to_string().contains("cooperative matrices"), "{err}");
    }
    for &v in Variant::COOP {
        assert_eq!(Variant::parse(&v.to_string()).unwrap(), v);
    }
    assert_eq!(Variant::parse("coop16x16-k8").unwrap(), Variant::Coop { frag: 8 });
    // The attention's: f32 activations, or no cooperative matrices, or a head size of 5.
    let (qkv, o, l) = (up32(gpu, &[0.0; 30]), up32(gpu, &[0.0; 10]), up32(gpu, &[0.0; 2]));
    let coop16 = AttnVariant::Coop { frag: 16 };
    let err = attention::forward_with(gpu, coop16, (&o).into(), (&l).into(), (&qkv).into(), 1, 1, 10, 2)
        .err()
        .expect("f32 attention on cooperative matrices is refused");
    assert!(err.to_string().contains("coop16") && err.to_string().contains("f16 activations"), "{err}");
    assert_eq!(AttnVariant::parse("coop16").unwrap(), coop16);
    assert_eq!(AttnVariant::parse("coop8").unwrap(), AttnVariant::Coop { frag: 8 });
}
