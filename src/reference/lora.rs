//! Reference LoRA path of a linear layer (see model::lora_path): plain loops in f64.

/// y (M, N) += s·(x (M, K)·A (r, K)ᵀ)·B (N, r)ᵀ; returns h = s·x·Aᵀ (M, r).
pub fn forward(
    y: &mut [f32],
    x: &[f32],
    a: &[f32],
    b: &[f32],
    (m, n, k, r): (usize, usize, usize, usize),
    s: f32,
) -> Vec<f32> {
    let mut h = vec![0.0f32; m * r];
    for i in 0..m {
        for j in 0..r {
            let dot: f64 = (0..k).map(|t| x[i * k + t] as f64 * a[j * k + t] as f64).sum();
            h[i * r + j] = (s as f64 * dot) as f32;
        }
        for o in 0..n {
            let add: f64 = (0..r).map(|j| h[i * r + j] as f64 * b[o * r + j] as f64).sum();
            y[i * n + o] = (y[i * n + o] as f64 + add) as f32;
        }
    }
    h
}

/// The gradients from dy (M, N): dA (r, K) and dB (N, r) added to, dx (M, K) += s·dy·B·A.
/// With `mask` (dropout's factor per element of x: 0 or 1 / (1 − p)), the path's input was
/// x ⊙ mask: dA takes that, and dx the masked gradient.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    (dx, da, db): (&mut [f32], &mut [f32], &mut [f32]),
    dy: &[f32],
    (x, mask): (&[f32], Option<&[f32]>),
    (a, b, h): (&[f32], &[f32], &[f32]),
    (m, n, k, r): (usize, usize, usize, usize),
    s: f32,
) {
    for o in 0..n {
        for j in 0..r {
            let g: f64 = (0..m).map(|i| dy[i * n + o] as f64 * h[i * r + j] as f64).sum();
            db[o * r + j] = (db[o * r + j] as f64 + g) as f32;
        }
    }
    let mut dh = vec![0.0f64; m * r];
    for i in 0..m {
        for j in 0..r {
            dh[i * r + j] = s as f64 * (0..n).map(|o| dy[i * n + o] as f64 * b[o * r + j] as f64).sum::<f64>();
        }
    }
    let f = |e: usize| mask.map_or(1.0, |m| m[e] as f64);
    for j in 0..r {
        for t in 0..k {
            let g: f64 =
                (0..m).map(|i| dh[i * r + j] * (x[i * k + t] * mask.map_or(1.0, |m| m[i * k + t])) as f64).sum();
            da[j * k + t] = (da[j * k + t] as f64 + g) as f32;
        }
    }
    for i in 0..m {
        for t in 0..k {
            let g: f64 = (0..r).map(|j| dh[i * r + j] * a[j * k + t] as f64).sum();
            dx[i * k + t] = (dx[i * k + t] as f64 + f(i * k + t) * g) as f32;
        }
    }
}
