//! Reference RMSNorm over rows of C channels (HF's LlamaRMSNorm), sums in f64.

/// out (N, C) = x·r·w with r = 1/√(mean(x²) + eps); returns r per row.
pub fn forward(out: &mut [f32], inp: &[f32], w: &[f32], n: usize, c: usize, eps: f64) -> Vec<f32> {
    let mut rstd = Vec::with_capacity(n);
    for r in 0..n {
        let x = &inp[r * c..][..c];
        let ms = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / c as f64;
        let rs = 1.0 / (ms + eps).sqrt();
        for i in 0..c {
            out[r * c + i] = (x[i] as f64 * rs * w[i] as f64) as f32;
        }
        rstd.push(rs as f32);
    }
    rstd
}

/// dinp += the input gradient, dw += Σ_rows dout·x·r.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dinp: &mut [f32],
    dw: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    rstd: &[f32],
    n: usize,
    c: usize,
) {
    let mut dw64 = vec![0.0f64; c];
    for r in 0..n {
        let rs = rstd[r] as f64;
        let norm = |i: usize| inp[r * c + i] as f64 * rs;
        let dnorm = |i: usize| dout[r * c + i] as f64 * w[i] as f64;
        let m = (0..c).map(|i| dnorm(i) * norm(i)).sum::<f64>() / c as f64;
        for i in 0..c {
            dinp[r * c + i] = (dinp[r * c + i] as f64 + (dnorm(i) - norm(i) * m) * rs) as f32;
            dw64[i] += dout[r * c + i] as f64 * norm(i);
        }
    }
    for i in 0..c {
        dw[i] = (dw[i] as f64 + dw64[i]) as f32;
    }
}
