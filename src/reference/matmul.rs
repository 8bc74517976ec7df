//! Reference matmul of a linear layer. W is (N, K), as in shaders/matmul.wgsl. Sums run in f64,
//! so the reference is closer to exact than any f32 kernel.

/// out (M, N) = inp (M, K) · W (N, K)ᵀ + bias (N).
pub fn forward(out: &mut [f32], inp: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize) {
    for i in 0..m {
        let x = &inp[i * k..(i + 1) * k];
        for j in 0..n {
            let wr = &w[j * k..(j + 1) * k];
            let mut s = bias.map_or(0.0, |b| b[j] as f64);
            for t in 0..k {
                s += x[t] as f64 * wr[t] as f64;
            }
            out[i * n + j] = s as f32;
        }
    }
}

/// dinp (M, K) = dout (M, N) · W (N, K).
pub fn backward_input(dinp: &mut [f32], dout: &[f32], w: &[f32], m: usize, n: usize, k: usize) {
    for i in 0..m {
        for t in 0..k {
            let mut s = 0.0f64;
            for j in 0..n {
                s += dout[i * n + j] as f64 * w[j * k + t] as f64;
            }
            dinp[i * k + t] = s as f32;
        }
    }
}

/// dW (N, K) += dout (M, N)ᵀ · inp (M, K).
pub fn backward_weight(dw: &mut [f32], dout: &[f32], inp: &[f32], m: usize, n: usize, k: usize) {
    for j in 0..n {
        for t in 0..k {
            let mut s = 0.0f64;
            for i in 0..m {
                s += dout[i * n + j] as f64 * inp[i * k + t] as f64;
            }
            dw[j * k + t] = (dw[j * k + t] as f64 + s) as f32;
        }
    }
}

/// dbias (N) += Σ_m dout (M, N).
pub fn backward_bias(dbias: &mut [f32], dout: &[f32], m: usize, n: usize) {
    for (j, db) in dbias.iter_mut().enumerate().take(n) {
        let s: f64 = (0..m).map(|i| dout[i * n + j] as f64).sum();
        *db = (*db as f64 + s) as f32;
    }
}
