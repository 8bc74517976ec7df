//! Reference causal multi-head attention over qkv (B, T, 3C), naive softmax, sums in f64.

#[allow(clippy::too_many_arguments)]
fn at(b: usize, t: usize, part: usize, h: usize, d: usize, tt: usize, c: usize, hs: usize) -> usize {
    (b * tt + t) * 3 * c + part * c + h * hs + d
}

/// out (B, T, C) = softmax(q·kᵀ/√hs, causal)·v per head.
pub fn forward(out: &mut [f32], qkv: &[f32], b: usize, t: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f64).sqrt();
    for bi in 0..b {
        for h in 0..nh {
            for i in 0..t {
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        (0..hs)
                            .map(|d| {
                                qkv[at(bi, i, 0, h, d, t, c, hs)] as f64 * qkv[at(bi, j, 1, h, d, t, c, hs)] as f64
                            })
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hs {
                    let o: f64 = (0..=i).map(|j| e[j] / z * qkv[at(bi, j, 2, h, d, t, c, hs)] as f64).sum();
                    out[(bi * t + i) * c + h * hs + d] = o as f32;
                }
            }
        }
    }
}

/// dqkv (B, T, 3C) = the gradient of Σ out·dout through attention.
pub fn backward(dqkv: &mut [f32], dout: &[f32], qkv: &[f32], b: usize, t: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f64).sqrt();
    let mut g = vec![0.0f64; dqkv.len()];
    for bi in 0..b {
        for h in 0..nh {
            for i in 0..t {
                let q = |d: usize| qkv[at(bi, i, 0, h, d, t, c, hs)] as f64;
                let k = |j: usize, d: usize| qkv[at(bi, j, 1, h, d, t, c, hs)] as f64;
                let v = |j: usize, d: usize| qkv[at(bi, j, 2, h, d, t, c, hs)] as f64;
                let go = |d: usize| dout[(bi * t + i) * c + h * hs + d] as f64;
                let s: Vec<f64> = (0..=i).map(|j| (0..hs).map(|d| q(d) * k(j, d)).sum::<f64>() * scale).collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                let pr: Vec<f64> = s.iter().map(|x| (x - m).exp() / z).collect();
                let dp: Vec<f64> = (0..=i).map(|j| (0..hs).map(|d| go(d) * v(j, d)).sum()).collect();
                let dd: f64 = (0..=i).map(|j| pr[j] * dp[j]).sum();
                for j in 0..=i {
                    let ds = pr[j] * (dp[j] - dd);
                    for d in 0..hs {
                        g[at(bi, i, 0, h, d, t, c, hs)] += ds * k(j, d) * scale;
                        g[at(bi, j, 1, h, d, t, c, hs)] += ds * q(d) * scale;
                        g[at(bi, j, 2, h, d, t, c, hs)] += pr[j] * go(d);
                    }
                }
            }
        }
    }
    for (x, y) in dqkv.iter_mut().zip(g) {
        *x = y as f32;
    }
}
