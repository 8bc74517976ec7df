//! The Llama family's kernels against their plain-loop references at awkward sizes, in both
//! shader builds: RMSNorm (forward, input and weight gradients), RoPE (forward and its
//! inverse, in place among other columns) and SwiGLU's gating (forward, both gradients).

use wgtrain::gpu::{Category, Recorder};
use wgtrain::kernels::{rmsnorm, rope, swiglu, View};
use wgtrain::reference::{self, Rng};
use wgtrain::Gpu;

use crate::common::{assert_close, builds};

fn up(gpu: &Gpu, x: &[f32]) -> wgtrain::gpu::GpuBuffer {
    gpu.pool.storage_from(&gpu.queue, Category::Scratch, x).unwrap()
}

fn run(gpu: &Gpu, ops: &[wgtrain::gpu::Dispatch]) {
    let mut rec = Recorder::new(gpu);
    rec.run(ops);
    rec.submit().unwrap();
}

#[test]
fn rmsnorm_matches_reference() {
    for gpu in builds() {
        for (i, &(n, c)) in [(1usize, 1usize), (3, 7), (17, 65), (5, 333), (2, 576)].iter().enumerate() {
            let mut r = Rng::new(40 + i as u64);
            let (x, w, dout) = (r.vec(n * c), r.vec(c), r.vec(n * c));
            let (dinp0, dw0) = (r.vec(n * c), r.vec(c));
            let (gx, gw, gd) = (up(gpu, &x), up(gpu, &w), up(gpu, &dout));
            let (out, rstd) = (up(gpu, &vec![f32::NAN; n * c]), up(gpu, &vec![f32::NAN; n]));
            let (dinp, dw) = (up(gpu, &dinp0), up(gpu, &dw0));
            let nc = (n as u32, c as u32);
            let mut ops =
                vec![
                    rmsnorm::forward(gpu, (&out).into(), (&rstd).into(), (&gx).into(), (&gw).into(), nc, 1e-5).unwrap()
                ];
            let v = |b| View::from(b);
            ops.extend(rmsnorm::backward(gpu, v(&dinp), v(&dw), v(&gd), v(&gx), v(&rstd), v(&gw), nc).unwrap());
            run(gpu, &ops);
            let mut want = vec![0.0; n * c];
            let want_r = reference::rmsnorm::forward(&mut want, &x, &w, n, c, 1e-5);
            let (mut want_dx, mut want_dw) = (dinp0.clone(), dw0.clone());
            reference::rmsnorm::backward(&mut want_dx, &mut want_dw, &dout, &x, &w, &want_r, n, c);
            let tag = format!("rmsnorm {n}x{c} checked {}", gpu.checked_shaders);
            assert_close(&format!("{tag} out"), &gpu.read(&out, 0, n * c).unwrap(), &want, 1e-5, 1e-5);
            assert_close(&format!("{tag} rstd"), &gpu.read(&rstd, 0, n).unwrap(), &want_r, 1e-5, 1e-5);
            assert_close(&format!("{tag} dinp"), &gpu.read(&dinp, 0, n * c).unwrap(), &want_dx, 1e-5, 1e-4);
            assert_close(&format!("{tag} dw"), &gpu.read(&dw, 0, c).unwrap(), &want_dw, 1e-5, 1e-4);
        }
    }
}

/// RoPE rotates exactly its heads' columns (the others, NaN, stay so), as the reference does,
/// with a position offset; the inverse is the reference's backward and undoes the forward.
#[test]
fn rope_matches_reference_and_inverts() {
    // (rows, T, heads, head size, column of the first head, row stride, position offset)
    let cases = [
        (1usize, 1usize, 1usize, 2usize, 0usize, 2usize, 0usize),
        (14, 7, 3, 6, 5, 30, 3),
        (9, 9, 2, 10, 0, 23, 0),
        (30, 15, 1, 64, 7, 80, 11),
    ];
    for gpu in builds() {
        for (i, &(n, t, heads, d, col, stride, pos_off)) in cases.iter().enumerate() {
            let mut r = Rng::new(70 + i as u64);
            let mut x = vec![f32::NAN; n * stride];
            for row in 0..n {
                x[row * stride + col..][..heads * d].copy_from_slice(&r.vec(heads * d));
            }
            let table = rope::upload_table(gpu, pos_off + t, d, 10000.0).unwrap();
            let gx = up(gpu, &x);
            let h = rope::Heads {
                n: n as u32,
                t: t as u32,
                heads: heads as u32,
                d: d as u32,
                stride: stride as u32,
                col: col as u32,
                pos_off: pos_off as u32,
            };
            run(gpu, &[rope::apply(gpu, (&gx).into(), &table, h, false).unwrap()]);
            let got: Vec<f32> = gpu.read(&gx, 0, n * stride).unwrap();
            let spec = reference::rope::Rope { t, stride, col, heads, d, pos_off, theta: 10000.0 };
            let mut want = x.clone();
            reference::rope::apply(&mut want, n, spec, false);
            let tag = format!("rope case {i} checked {}", gpu.checked_shaders);
            assert!(
                got.iter().zip(&want).all(|(g, w)| g.is_nan() == w.is_nan()),
                "{tag}: a column outside the heads changed"
            );
            let keep = |v: &[f32]| v.iter().map(|a| if a.is_nan() { 0.0 } else { *a }).collect::<Vec<f32>>();
            assert_close(&tag, &keep(&got), &keep(&want), 1e-5, 1e-5);
            run(gpu, &[rope::apply(gpu, (&gx).into(), &table, h, true).unwrap()]);
            let back: Vec<f32> = gpu.read(&gx, 0, n * stride).unwrap();
            let mut want_back = want.clone();
            reference::rope::apply(&mut want_back, n, spec, true);
            assert_close(&format!("{tag} inverse"), &keep(&back), &keep(&want_back), 1e-5, 1e-5);
            assert_close(&format!("{tag} round trip"), &keep(&back), &keep(&x), 1e-5, 1e-5);
        }
    }
}

#[test]
fn rope_refuses_odd_heads_and_heads_past_the_row() {
    let Some(gpu) = crate::common::gpu() else { return };
    let x = up(gpu, &[0.0; 64]);
    let table = rope::upload_table(gpu, 4, 6, 10000.0).unwrap();
    let h = rope::Heads { n: 2, t: 2, heads: 2, d: 5, stride: 16, col: 0, pos_off: 0 };
    assert!(rope::apply(gpu, (&x).into(), &table, h, false).is_err());
    let past = rope::Heads { d: 6, col: 6, ..h };
    assert!(rope::apply(gpu, (&x).into(), &table, past, false).is_err());
}

#[test]
fn swiglu_matches_reference() {
    for gpu in builds() {
        for (i, &n) in [1usize, 7, 1000, 4099].iter().enumerate() {
            let mut r = Rng::new(90 + i as u64);
            // Gates out to ±40, where σ saturates.
            let gate: Vec<f32> = r.vec(n).iter().map(|g| g * if n == 7 { 40.0 } else { 6.0 }).collect();
            let (up_v, dout) = (r.vec(n), r.vec(n));
            let (gg, gu, gd) = (up(gpu, &gate), up(gpu, &up_v), up(gpu, &dout));
            let nan = || up(gpu, &vec![f32::NAN; n]);
            let (out, dgate, dup) = (nan(), nan(), nan());
            let v = |b| View::from(b);
            let ops = [
                swiglu::forward(gpu, v(&out), v(&gg), v(&gu), n as u32).unwrap(),
                swiglu::backward(gpu, v(&dgate), v(&dup), v(&gg), v(&gu), v(&gd), n as u32).unwrap(),
            ];
            run(gpu, &ops);
            let (mut want, mut want_g, mut want_u) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            reference::swiglu::forward(&mut want, &gate, &up_v);
            reference::swiglu::backward(&mut want_g, &mut want_u, &gate, &up_v, &dout);
            let tag = format!("swiglu n {n} checked {}", gpu.checked_shaders);
            assert_close(&format!("{tag} out"), &gpu.read(&out, 0, n).unwrap(), &want, 1e-5, 1e-5);
            assert_close(&format!("{tag} dgate"), &gpu.read(&dgate, 0, n).unwrap(), &want_g, 1e-5, 1e-5);
            assert_close(&format!("{tag} dup"), &gpu.read(&dup, 0, n).unwrap(), &want_u, 1e-5, 1e-5);
        }
    }
}

/// Grouped-query attention on three planes (q, k, v each starting on 64 elements), every
/// variant and both builds, against the reference: each KV head serves NH/NKV query heads, and
/// its dk, dv sum over them. The gaps between planes, NaN, stay untouched.
#[test]
fn grouped_query_attention_matches_reference() {
    use wgtrain::kernels::attention::{self, AttnShape, AttnVariant};
    // (B, T, NH, NKV, HS): groups of 3 and 1 (NKV = NH), head sizes 5 and 64 (those the
    // checked build compiles for the GPT-2 test) and 10.
    let cases = [(2usize, 19usize, 6usize, 2usize, 5usize), (1, 35, 3, 1, 64), (1, 66, 4, 4, 10)];
    for (gpu, v) in crate::common::builds_with(AttnVariant::ALL) {
        for (i, &(b, t, nh, nkv, hs)) in cases.iter().enumerate() {
            if gpu.checked_shaders && i == 2 {
                continue;
            }
            let s = AttnShape::planes(b as u32, t as u32, nh as u32, nkv as u32, hs as u32).unwrap();
            let (len, n, c) = (s.qkv.len as usize, b * t, nh * hs);
            let mut r = Rng::new(90 + i as u64);
            let (qkv, dout) = (r.vec(len), r.vec(n * c));
            let (gq, gd) = (up(gpu, &qkv), up(gpu, &dout));
            let (out, lse) = (up(gpu, &vec![f32::NAN; n * c]), up(gpu, &vec![f32::NAN; b * nh * t]));
            let (dscratch, dqkv) = (up(gpu, &vec![f32::NAN; b * nh * t]), up(gpu, &vec![f32::NAN; len]));
            let vw = |x| View::from(x);
            let mut ops = vec![attention::forward_shaped(gpu, v, vw(&out), vw(&lse), vw(&gq), &s).unwrap()];
            let io = [vw(&gd), vw(&out), vw(&gq), vw(&lse)];
            ops.extend(attention::backward_shaped(gpu, v, vw(&dqkv), vw(&dscratch), io, &s).unwrap());
            run(gpu, &ops);
            let mut want = vec![0.0; n * c];
            reference::attention::forward_in(&mut want, &qkv, &s);
            let mut want_d = vec![f32::NAN; len];
            reference::attention::backward_in(&mut want_d, &dout, &qkv, &s);
            let tag = format!("gqa {v} checked {} B{b} T{t} NH{nh} NKV{nkv} HS{hs}", gpu.checked_shaders);
            assert_close(&format!("{tag} out"), &gpu.read(&out, 0, n * c).unwrap(), &want, 1e-5, 1e-5);
            let got = gpu.read(&dqkv, 0, len).unwrap();
            let kvd = nkv * hs;
            let planes =
                [("dq", 0, n * c), ("dk", s.qkv.k_base as usize, n * kvd), ("dv", s.qkv.v_base as usize, n * kvd)];
            for (name, at, l) in planes {
                assert_close(&format!("{tag} {name}"), &got[at..at + l], &want_d[at..at + l], 2e-5, 1e-4);
            }
            let gaps = (n * c..s.qkv.k_base as usize).chain(s.qkv.k_base as usize + n * kvd..s.qkv.v_base as usize);
            assert!(gaps.clone().all(|e| got[e].is_nan()), "{tag}: a gap between planes was written");
        }
    }
}
