//! Reference LayerNorm (eps 1e-5) over rows of C channels, sums in f64.

const EPS: f64 = 1e-5;

/// out (N, C) = (x − mean)·rstd·w + b; returns (mean, rstd) per row.
pub fn forward(out: &mut [f32], inp: &[f32], w: &[f32], b: &[f32], n: usize, c: usize) -> Vec<(f32, f32)> {
    let mut stats = Vec::with_capacity(n);
    for r in 0..n {
        let x = &inp[r * c..][..c];
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
        let rstd = 1.0 / (var + EPS).sqrt();
        for i in 0..c {
            out[r * c + i] = ((x[i] as f64 - mean) * rstd * w[i] as f64 + b[i] as f64) as f32;
        }
        stats.push((mean as f32, rstd as f32));
    }
    stats
}

/// dinp += input gradient, dw += Σ dout·norm, db += Σ dout.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dinp: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    stats: &[(f32, f32)],
    n: usize,
    c: usize,
) {
    let mut dw64 = vec![0.0f64; c];
    let mut db64 = vec![0.0f64; c];
    for r in 0..n {
        let (mean, rstd) = (stats[r].0 as f64, stats[r].1 as f64);
        let norm = |i: usize| (inp[r * c + i] as f64 - mean) * rstd;
        let dnorm = |i: usize| dout[r * c + i] as f64 * w[i] as f64;
        let m1 = (0..c).map(dnorm).sum::<f64>() / c as f64;
        let m2 = (0..c).map(|i| dnorm(i) * norm(i)).sum::<f64>() / c as f64;
        for i in 0..c {
            dinp[r * c + i] = (dinp[r * c + i] as f64 + (dnorm(i) - m1 - norm(i) * m2) * rstd) as f32;
            dw64[i] += dout[r * c + i] as f64 * norm(i);
            db64[i] += dout[r * c + i] as f64;
        }
    }
    for i in 0..c {
        dw[i] = (dw[i] as f64 + dw64[i]) as f32;
        db[i] = (db[i] as f64 + db64[i]) as f32;
    }
}
