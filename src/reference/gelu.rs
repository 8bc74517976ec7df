//! Reference GELU, tanh approximation, in f64.

const S: f64 = 0.7978845608028654; // √(2/π)
const K: f64 = 0.044715;

pub fn forward(out: &mut [f32], inp: &[f32]) {
    for (o, &x) in out.iter_mut().zip(inp) {
        let x = x as f64;
        *o = (0.5 * x * (1.0 + (S * (x + K * x * x * x)).tanh())) as f32;
    }
}

/// dinp += gelu'(inp) · dout.
pub fn backward(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    for ((d, &x), &g) in dinp.iter_mut().zip(inp).zip(dout) {
        let x = x as f64;
        let t = (S * (x + K * x * x * x)).tanh();
        let local = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * S * (1.0 + 3.0 * K * x * x);
        *d = (*d as f64 + local * g as f64) as f32;
    }
}
