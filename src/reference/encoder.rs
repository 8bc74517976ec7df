//! Reference token + position embedding.

/// out (N, C) = wte[tokens[i]] + wpe[i % T].
pub fn forward(out: &mut [f32], tokens: &[u32], wte: &[f32], wpe: &[f32], t: usize, c: usize) {
    for (i, &tok) in tokens.iter().enumerate() {
        for j in 0..c {
            out[i * c + j] = wte[tok as usize * c + j] + wpe[(i % t) * c + j];
        }
    }
}

/// dwte[tokens[i]] += dout[i]; dwpe[i % T] += dout[i]. Sums in f64 per destination.
pub fn backward(dwte: &mut [f32], dwpe: &mut [f32], dout: &[f32], tokens: &[u32], t: usize, c: usize) {
    let mut gte = vec![0.0f64; dwte.len()];
    let mut gpe = vec![0.0f64; dwpe.len()];
    for (i, &tok) in tokens.iter().enumerate() {
        for j in 0..c {
            gte[tok as usize * c + j] += dout[i * c + j] as f64;
            gpe[(i % t) * c + j] += dout[i * c + j] as f64;
        }
    }
    for (d, g) in dwte.iter_mut().zip(gte) {
        *d = (*d as f64 + g) as f32;
    }
    for (d, g) in dwpe.iter_mut().zip(gpe) {
        *d = (*d as f64 + g) as f32;
    }
}
