//! Layer kernels of the GPT-2 model against their CPU references at awkward sizes, outputs
//! pre-filled with NaN, accumulated gradients starting from random values.

use wgtrain::gpu::{Category, GpuBuffer, Recorder};
use wgtrain::kernels::attention::AttnVariant;
use wgtrain::kernels::elementwise::{self, Span};
use wgtrain::kernels::layernorm::LnVariant;
use wgtrain::kernels::{classifier, encoder, gelu, layernorm, View};
use wgtrain::reference::{self, Rng};
use wgtrain::tune::attention;
use wgtrain::Gpu;

use crate::common::{assert_close, builds, builds_with, gpu};

fn upload(gpu: &Gpu, data: &[f32]) -> GpuBuffer {
    gpu.pool.storage_from(&gpu.queue, Category::Scratch, data).unwrap()
}

fn read(gpu: &Gpu, b: &GpuBuffer, len: usize) -> Vec<f32> {
    gpu.read(b, 0, len).unwrap()
}

const SIZES: &[(usize, usize)] = &[(1, 1), (3, 5), (17, 33), (127, 255), (37, 768)];

/// Tolerance: outputs are O(1) (inputs and parameters uniform in [-1, 1)); the forward and the
/// input gradient differ from the f64 reference by a few f32 roundings per term of a C-long
/// sum: |d| <= 2e-5 + 1e-5·|want|. Parameter gradients are N-long sums: |d| <= 1e-6·N + 1e-5·|want|.
#[test]
fn layernorm_matches_reference() {
    for (gpu, v) in builds_with(LnVariant::ALL) {
        for (i, &(n, c)) in SIZES.iter().enumerate() {
            let mut r = Rng::new(100 + i as u64);
            let (x, w, b, dout) = (r.vec(n * c), r.vec(c), r.vec(c), r.vec(n * c));
            let (dinp0, dw0, db0) = (r.vec(n * c), r.vec(c), r.vec(c));
            let (gx, gw, gb, gdout) = (upload(gpu, &x), upload(gpu, &w), upload(gpu, &b), upload(gpu, &dout));
            let out = upload(gpu, &vec![f32::NAN; n * c]);
            let stats = upload(gpu, &vec![f32::NAN; 2 * n]);
            let (gdinp, gdw, gdb) = (upload(gpu, &dinp0), upload(gpu, &dw0), upload(gpu, &db0));
            let (n32, c32) = (n as u32, c as u32);
            let fwd = layernorm::forward_with(
                gpu,
                v,
                (&out).into(),
                (&stats).into(),
                (&gx).into(),
                (&gw).into(),
                (&gb).into(),
                n32,
                c32,
            )
            .unwrap();
            let bwd = layernorm::backward_with(
                gpu,
                v,
                View::from(&gdinp),
                View::from(&gdw),
                View::from(&gdb),
                View::from(&gdout),
                View::from(&gx),
                View::from(&stats),
                View::from(&gw),
                n32,
                c32,
            )
            .unwrap();
            let mut rec = Recorder::new(gpu);
            rec.dispatch(&fwd);
            rec.run(&bwd);
            rec.submit().unwrap();

            let mut want = vec![0.0; n * c];
            let st = reference::layernorm::forward(&mut want, &x, &w, &b, n, c);
            let (mut dinp, mut dw, mut db) = (dinp0.clone(), dw0.clone(), db0.clone());
            reference::layernorm::backward(&mut dinp, &mut dw, &mut db, &dout, &x, &w, &st, n, c);
            let tag = format!("layernorm {} {n}x{c}", v.name());
            assert_close(&format!("{tag} out"), &read(gpu, &out, n * c), &want, 2e-5, 1e-5);
            let flat: Vec<f32> = st.iter().flat_map(|&(m, s)| [m, s]).collect();
            assert_close(&format!("{tag} mean/rstd"), &read(gpu, &stats, 2 * n), &flat, 1e-6, 1e-5);
            assert_close(&format!("{tag} dinp"), &read(gpu, &gdinp, n * c), &dinp, 2e-5, 1e-5);
            assert_close(&format!("{tag} dweight"), &read(gpu, &gdw, c), &dw, 1e-6 * n as f32, 1e-5);
            assert_close(&format!("{tag} dbias"), &read(gpu, &gdb, c), &db, 1e-6 * n as f32, 1e-5);
        }
    }
}

/// Tolerance: f32 tanh against f64, values O(1): |d| <= 1e-6 + 1e-5·|want|.
#[test]
fn gelu_matches_reference() {
    for gpu in builds() {
        for (i, &n) in [1usize, 3, 4097, 70001].iter().enumerate() {
            let mut r = Rng::new(200 + i as u64);
            // Inputs past ±10 check the clamped tanh stays finite.
            let x: Vec<f32> = r.vec(n).iter().map(|v| v * 12.0).collect();
            let (dout, dinp0) = (r.vec(n), r.vec(n));
            let (gx, gdout, gdinp) = (upload(gpu, &x), upload(gpu, &dout), upload(gpu, &dinp0));
            let out = upload(gpu, &vec![f32::NAN; n]);
            let fwd = gelu::forward(gpu, (&out).into(), (&gx).into(), n as u32).unwrap();
            let bwd = gelu::backward(gpu, (&gdinp).into(), (&gx).into(), (&gdout).into(), n as u32).unwrap();
            let mut rec = Recorder::new(gpu);
            rec.dispatch(&fwd);
            rec.dispatch(&bwd);
            rec.submit().unwrap();
            let mut want = vec![0.0; n];
            reference::gelu::forward(&mut want, &x);
            let mut dinp = dinp0.clone();
            reference::gelu::backward(&mut dinp, &x, &dout);
            assert_close(&format!("gelu {n} out"), &read(gpu, &out, n), &want, 1e-6, 1e-5);
            assert_close(&format!("gelu {n} dinp"), &read(gpu, &gdinp, n), &dinp, 1e-6, 1e-5);
        }
    }
}

/// Exact: one f32 addition per element.
#[test]
fn residual_add_and_accumulate_are_exact() {
    for gpu in builds() {
        for n in [1usize, 7, 16385] {
            let mut r = Rng::new(n as u64);
            let (a, b) = (r.vec(n), r.vec(n));
            let (ga, gb) = (upload(gpu, &a), upload(gpu, &b));
            let out = upload(gpu, &vec![f32::NAN; n]);
            let acc = upload(gpu, &a);
            let ops = [
                elementwise::add(
                    gpu,
                    Span::new(&out, 0, n as u64),
                    Span::new(&ga, 0, n as u64),
                    Span::new(&gb, 0, n as u64),
                )
                .unwrap(),
                elementwise::accumulate(gpu, Span::new(&acc, 0, n as u64), Span::new(&gb, 0, n as u64)).unwrap(),
            ];
            let mut rec = Recorder::new(gpu);
            rec.run(&ops);
            rec.submit().unwrap();
            let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
            assert_close(&format!("add {n}"), &read(gpu, &out, n), &want, 0.0, 0.0);
            assert_close(&format!("accumulate {n}"), &read(gpu, &acc, n), &want, 0.0, 0.0);
        }
    }
}

/// Forward exact (one addition); gradients are sums of up to N terms: |d| <= 1e-6·N.
#[test]
fn encoder_matches_reference() {
    for gpu in builds() {
        for (i, &(b, t, c, v)) in
            [(1usize, 1usize, 1usize, 1usize), (3, 5, 7, 11), (4, 37, 33, 517), (7, 41, 3, 5)].iter().enumerate()
        {
            let n = b * t;
            let mut r = Rng::new(300 + i as u64);
            // Few distinct tokens, so buckets hold many positions.
            let tokens: Vec<u32> = (0..n).map(|_| (r.next_u64() % (v as u64).min(9)) as u32).collect();
            let (wte, wpe, dout) = (r.vec(v * c), r.vec(t * c), r.vec(n * c));
            let (dwte0, dwpe0) = (r.vec(v * c), r.vec(t * c));
            let (gwte, gwpe, gdout) = (upload(gpu, &wte), upload(gpu, &wpe), upload(gpu, &dout));
            let (gdwte, gdwpe) = (upload(gpu, &dwte0), upload(gpu, &dwpe0));
            let out = upload(gpu, &vec![f32::NAN; n * c]);
            let batch = encoder::TokenBuffers::new(gpu, n).unwrap();
            batch.upload(gpu, &tokens);
            let (v32, n32, t32, c32) = (v as u32, n as u32, t as u32, c as u32);
            let fwd = encoder::forward(
                gpu,
                (&out).into(),
                &batch.tokens,
                (&gwte).into(),
                Some((&gwpe).into()),
                v32,
                n32,
                t32,
                c32,
                t32,
            )
            .unwrap();
            let bwd = encoder::backward(
                gpu,
                (&gdwte).into(),
                Some((&gdwpe).into()),
                (&gdout).into(),
                &batch,
                v32,
                n32,
                t32,
                c32,
            )
            .unwrap();
            let mut rec = Recorder::new(gpu);
            rec.dispatch(&fwd);
            rec.run(&bwd);
            rec.submit().unwrap();
            let mut want = vec![0.0; n * c];
            reference::encoder::forward(&mut want, &tokens, &wte, &wpe, t, c);
            let (mut dwte, mut dwpe) = (dwte0.clone(), dwpe0.clone());
            reference::encoder::backward(&mut dwte, &mut dwpe, &dout, &tokens, t, c);
            let tag = format!("encoder {b}x{t}x{c} V{v}");
            assert_close(&format!("{tag} out"), &read(gpu, &out, n * c), &want, 0.0, 0.0);
            assert_close(&format!("{tag} dwte"), &read(gpu, &gdwte, v * c), &dwte, 1e-6 * n as f32, 1e-6);
            assert_close(&format!("{tag} dwpe"), &read(gpu, &gdwpe, t * c), &dwpe, 1e-6 * b as f32, 1e-6);
            // The GPU's order of positions: a stable sort by token.
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.sort_by_key(|&i| tokens[i as usize]);
            assert_eq!(gpu.read::<u32>(&batch.positions, 0, n).unwrap(), order, "{tag} positions by token");
        }
    }
}

/// Tolerance: losses are O(log V); f32 exp/log against f64: |d| <= 1e-5 + 1e-5·|want|.
/// dlogits are O(1/N): |d| <= 1e-6/N·… taken as 1e-7 + 1e-4·|want|.
#[test]
fn classifier_matches_reference() {
    for gpu in builds() {
        // The last case runs in windows of 128 rows (3 whole and one of 5).
        let cases = [(1usize, 1usize, 1usize, None), (3, 5, 8, None), (37, 517, 576, None), (5, 50257, 50304, None)];
        let windowed = (389, 517, 576, Some(4 * 576 * 130));
        for (i, &(n, v, vp, limit)) in cases.iter().chain([&windowed]).enumerate() {
            let mut r = Rng::new(400 + i as u64);
            let logits: Vec<f32> = r.vec(n * vp).iter().map(|x| x * 8.0).collect();
            let targets: Vec<u32> = (0..n).map(|_| (r.next_u64() % v as u64) as u32).collect();
            let gl = upload(gpu, &logits);
            // Training adds its losses to what the buffer holds (a step's micro-batches sum
            // there); evaluation overwrites a NaN-filled one.
            let prior = r.vec(n);
            let (losses, eval_losses) = (upload(gpu, &prior), upload(gpu, &vec![f32::NAN; n]));
            let eval_logits = upload(gpu, &logits);
            let targets_buf = gpu.pool.storage_from(&gpu.queue, Category::Scratch, &targets).unwrap();
            let dloss = 1.0 / n as f32;
            let (n, v32, vp32) = (n as u32, v as u32, vp as u32);
            let rows = |logits, losses| classifier::Rows {
                logits,
                losses,
                targets: (&targets_buf).into(),
                n,
                v: v32,
                vp: vp32,
                norm: None,
            };
            let limit = limit.unwrap_or(gpu.max_binding());
            let train = classifier::forward_backward_within(
                gpu,
                rows((&gl).into(), (&losses).into()),
                Some(dloss),
                None,
                limit,
            );
            let eval = classifier::forward_backward_within(
                gpu,
                rows((&eval_logits).into(), (&eval_losses).into()),
                None,
                None,
                limit,
            );
            let (train, eval) = (train.unwrap(), eval.unwrap());
            assert_eq!(train.len(), n.div_ceil(if limit < gpu.max_binding() { 128 } else { n }) as usize);
            let n = n as usize;
            let mut rec = Recorder::new(gpu);
            train.iter().chain(&eval).for_each(|d| rec.dispatch(d));
            rec.submit().unwrap();
            let mut want = logits.clone();
            let want_losses = reference::classifier::forward_backward(&mut want, &targets, v, vp, Some(dloss as f64));
            let summed: Vec<f32> = want_losses.iter().zip(&prior).map(|(l, p)| l + p).collect();
            let tag = format!("classifier N{n} V{v} Vp{vp}");
            assert_close(&format!("{tag} losses added"), &read(gpu, &losses, n), &summed, 1e-5, 1e-5);
            assert_close(&format!("{tag} eval losses"), &read(gpu, &eval_losses, n), &want_losses, 1e-5, 1e-5);
            assert_close(&format!("{tag} eval logits"), &read(gpu, &eval_logits, n * vp), &logits, 0.0, 0.0);
            assert_close(&format!("{tag} dlogits"), &read(gpu, &gl, n * vp), &want, 1e-7, 1e-4);
        }
    }
}

/// Tolerance: out is a softmax-weighted mean of v (O(1)): |d| <= 1e-5 + 1e-5·|want|. The
/// gradients are sums over up to T keys or queries: |d| <= 2e-5 + 1e-4·|want|.
#[test]
fn attention_matches_reference() {
    for (gpu, v) in builds_with(AttnVariant::ALL) {
        // (B, T, C, NH): head sizes 1, 2, 5 (not a multiple of 4), 48 and the maximum 64; T across
        // several 16-row blocks and not a power of two.
        // 65 is one past the 64-row blocks of rows64, 33 one past the 32-row tiles.
        let cases = [
            (1usize, 1usize, 1usize, 1usize),
            (2, 5, 6, 3),
            (3, 37, 15, 3),
            (2, 33, 64, 1),
            (1, 70, 96, 2),
            (1, 65, 20, 2),
        ];
        for (i, &(b, t, c, nh)) in cases.iter().enumerate() {
            // Each head size is a pipeline of its own for the rows kernels; the checked build
            // (whose cold compiles dominate CI) takes two: head size 5 and the largest, 64.
            if gpu.checked_shaders && ![2, 3].contains(&i) {
                continue;
            }
            let mut r = Rng::new(500 + i as u64);
            let (qkv, dout) = (r.vec(b * t * 3 * c), r.vec(b * t * c));
            let (gqkv, gdout) = (upload(gpu, &qkv), upload(gpu, &dout));
            let out = upload(gpu, &vec![f32::NAN; b * t * c]);
            let lse = upload(gpu, &vec![f32::NAN; b * nh * t]);
            let dscratch = upload(gpu, &vec![f32::NAN; b * nh * t]);
            let dqkv = upload(gpu, &vec![f32::NAN; b * t * 3 * c]);
            let (b32, t32, c32, nh32) = (b as u32, t as u32, c as u32, nh as u32);
            let (o, l, q) = ((&out).into(), (&lse).into(), (&gqkv).into());
            let fwd = attention::forward_with(gpu, v, o, l, q, b32, t32, c32, nh32).unwrap();
            let bwd = attention::backward_with(
                gpu,
                v,
                (&dqkv).into(),
                (&dscratch).into(),
                (&gdout).into(),
                (&out).into(),
                (&gqkv).into(),
                (&lse).into(),
                b32,
                t32,
                c32,
                nh32,
            )
            .unwrap();
            let mut rec = Recorder::new(gpu);
            rec.dispatch(&fwd);
            rec.run(&bwd);
            rec.submit().unwrap();
            let mut want = vec![0.0; b * t * c];
            reference::attention::forward(&mut want, &qkv, b, t, c, nh);
            let mut want_d = vec![0.0; b * t * 3 * c];
            reference::attention::backward(&mut want_d, &dout, &qkv, b, t, c, nh);
            let build = if gpu.checked_shaders { "checked" } else { "trusted" };
            let tag = format!("attention {v} {build} B{b} T{t} C{c} NH{nh}");
            assert_close(&format!("{tag} out"), &read(gpu, &out, b * t * c), &want, 1e-5, 1e-5);
            assert_close(&format!("{tag} dqkv"), &read(gpu, &dqkv, b * t * 3 * c), &want_d, 2e-5, 1e-4);
        }
    }
}

#[test]
fn attention_refuses_heads_past_the_tile() {
    let Some(gpu) = gpu() else { return };
    let x = upload(gpu, &vec![0.0; 3 * 130]);
    let err = attention::forward(gpu, (&x).into(), (&x).into(), (&x).into(), 1, 1, 130, 2).err().unwrap();
    assert!(err.to_string().contains("head size"), "{err}");
}
