//! Reference causal attention, naive softmax, sums in f64: multi-head over GPT-2's fused qkv
//! (B, T, 3C), or grouped-query over any `AttnShape` layout.

use crate::kernels::attention::AttnShape;

/// Where element d of head h (a KV head for parts 1 and 2) at (b, t) sits in qkv.
fn at(s: &AttnShape, b: usize, t: usize, part: usize, h: usize, d: usize) -> usize {
    let l = &s.qkv;
    let r = b * s.t as usize + t;
    let start = match part {
        0 => r * l.q_stride as usize,
        1 => l.k_base as usize + r * l.kv_stride as usize,
        _ => l.v_base as usize + r * l.kv_stride as usize,
    };
    start + h * s.hs as usize + d
}

/// out (B, T, C) = softmax(q·kᵀ/√hs, causal)·v per head.
pub fn forward(out: &mut [f32], qkv: &[f32], b: usize, t: usize, c: usize, nh: usize) {
    let s = AttnShape::fused(b as u32, t as u32, c as u32, nh as u32).expect("a valid shape");
    forward_in(out, qkv, &s);
}

/// dqkv (B, T, 3C) = the gradient of Σ out·dout through attention.
pub fn backward(dqkv: &mut [f32], dout: &[f32], qkv: &[f32], b: usize, t: usize, c: usize, nh: usize) {
    let s = AttnShape::fused(b as u32, t as u32, c as u32, nh as u32).expect("a valid shape");
    backward_in(dqkv, dout, qkv, &s);
}

/// One query row's probabilities over keys 0..=i (query head h, KV head kh).
fn probs(s: &AttnShape, qkv: &[f32], bi: usize, i: usize, h: usize) -> Vec<f64> {
    let (hs, kh) = (s.hs as usize, h / (s.nh / s.nkv) as usize);
    let scale = 1.0 / (hs as f64).sqrt();
    let dot = |j: usize| {
        (0..hs).map(|d| qkv[at(s, bi, i, 0, h, d)] as f64 * qkv[at(s, bi, j, 1, kh, d)] as f64).sum::<f64>() * scale
    };
    let scores: Vec<f64> = (0..=i).map(dot).collect();
    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|x| x / z).collect()
}

/// `forward` of any shape: out (B, T, NH·HS).
pub fn forward_in(out: &mut [f32], qkv: &[f32], s: &AttnShape) {
    let (b, t, nh, hs, c) = (s.b as usize, s.t as usize, s.nh as usize, s.hs as usize, s.c() as usize);
    for bi in 0..b {
        for h in 0..nh {
            let kh = h / (s.nh / s.nkv) as usize;
            for i in 0..t {
                let pr = probs(s, qkv, bi, i, h);
                for d in 0..hs {
                    let o: f64 = (0..=i).map(|j| pr[j] * qkv[at(s, bi, j, 2, kh, d)] as f64).sum();
                    out[(bi * t + i) * c + h * hs + d] = o as f32;
                }
            }
        }
    }
}

/// `backward` of any shape: dqkv in qkv's layout (elements outside q, k and v untouched).
pub fn backward_in(dqkv: &mut [f32], dout: &[f32], qkv: &[f32], s: &AttnShape) {
    let (b, t, nh, hs, c) = (s.b as usize, s.t as usize, s.nh as usize, s.hs as usize, s.c() as usize);
    let scale = 1.0 / (hs as f64).sqrt();
    let mut g = vec![0.0f64; dqkv.len()];
    let mut touched = vec![false; dqkv.len()];
    for bi in 0..b {
        for h in 0..nh {
            let kh = h / (s.nh / s.nkv) as usize;
            for i in 0..t {
                let q = |d: usize| qkv[at(s, bi, i, 0, h, d)] as f64;
                let k = |j: usize, d: usize| qkv[at(s, bi, j, 1, kh, d)] as f64;
                let v = |j: usize, d: usize| qkv[at(s, bi, j, 2, kh, d)] as f64;
                let go = |d: usize| dout[(bi * t + i) * c + h * hs + d] as f64;
                let pr = probs(s, qkv, bi, i, h);
                let dp: Vec<f64> = (0..=i).map(|j| (0..hs).map(|d| go(d) * v(j, d)).sum()).collect();
                let dd: f64 = (0..=i).map(|j| pr[j] * dp[j]).sum();
                for j in 0..=i {
                    let ds = pr[j] * (dp[j] - dd);
                    for d in 0..hs {
                        let (iq, ik, iv) = (at(s, bi, i, 0, h, d), at(s, bi, j, 1, kh, d), at(s, bi, j, 2, kh, d));
                        g[iq] += ds * k(j, d) * scale;
                        g[ik] += ds * q(d) * scale;
                        g[iv] += pr[j] * go(d);
                        touched[iq] = true;
                        touched[ik] = true;
                        touched[iv] = true;
                    }
                }
            }
        }
    }
    for ((x, y), t) in dqkv.iter_mut().zip(g).zip(touched) {
        if t {
            *x = y as f32;
        }
    }
}
