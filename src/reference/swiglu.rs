//! Reference SwiGLU gating, in f64: out = silu(g)·u and its gradients.

fn sigmoid(g: f64) -> f64 {
    1.0 / (1.0 + (-g).exp())
}

pub fn forward(out: &mut [f32], gate: &[f32], up: &[f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        let g = g as f64;
        *o = (g * sigmoid(g) * u as f64) as f32;
    }
}

/// dgate = dout·u·σ(g)(1 + g(1 − σ(g))), dup = dout·g·σ(g).
pub fn backward(dgate: &mut [f32], dup: &mut [f32], gate: &[f32], up: &[f32], dout: &[f32]) {
    for i in 0..gate.len() {
        let (g, s, d) = (gate[i] as f64, sigmoid(gate[i] as f64), dout[i] as f64);
        dgate[i] = (d * up[i] as f64 * s * (1.0 + g * (1.0 - s))) as f32;
        dup[i] = (d * g * s) as f32;
    }
}
