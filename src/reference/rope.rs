//! Reference rotary position embedding (HF's rotate_half convention), angles in f64.

/// Where the heads sit in rows of `stride` elements: `heads` of size `d` from column `col`,
/// rows of `t` positions from `pos_off`, rotating by θ^(−2i/d) per position.
#[derive(Clone, Copy, Debug)]
pub struct Rope {
    pub t: usize,
    pub stride: usize,
    pub col: usize,
    pub heads: usize,
    pub d: usize,
    pub pos_off: usize,
    pub theta: f64,
}

/// Rotates every head of `x` (n rows) in place; `inverse` rotates back (the backward).
pub fn apply(x: &mut [f32], n: usize, r: Rope, inverse: bool) {
    let half = r.d / 2;
    for row in 0..n {
        let pos = (row % r.t + r.pos_off) as f64;
        for h in 0..r.heads {
            let at = row * r.stride + r.col + h * r.d;
            for i in 0..half {
                let angle = pos / r.theta.powf((2 * i) as f64 / r.d as f64);
                let (s, c) = angle.sin_cos();
                let s = if inverse { -s } else { s };
                let (a, b) = (x[at + i] as f64, x[at + i + half] as f64);
                x[at + i] = (a * c - b * s) as f32;
                x[at + i + half] = (b * c + a * s) as f32;
            }
        }
    }
}
