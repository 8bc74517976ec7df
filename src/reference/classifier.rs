//! Reference softmax cross-entropy and its gradient, in f64.

/// Returns the loss of each row; with `dloss`, overwrites logits[:, :V] with
/// (softmax − onehot)·dloss and the padding [V, Vp) with 0.
pub fn forward_backward(logits: &mut [f32], targets: &[u32], v: usize, vp: usize, dloss: Option<f64>) -> Vec<f32> {
    let mut losses = Vec::with_capacity(targets.len());
    for (r, &t) in targets.iter().enumerate() {
        let row = &mut logits[r * vp..][..vp];
        let m = row[..v].iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x as f64));
        let s: f64 = row[..v].iter().map(|&x| (x as f64 - m).exp()).sum();
        losses.push((s.ln() + m - row[t as usize] as f64) as f32);
        if let Some(d) = dloss {
            for (i, x) in row.iter_mut().enumerate() {
                *x = if i < v {
                    (((*x as f64 - m).exp() / s - if i == t as usize { 1.0 } else { 0.0 }) * d) as f32
                } else {
                    0.0
                };
            }
        }
    }
    losses
}
