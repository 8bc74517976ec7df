//! Reference optimizer steps, one tensor at a time in plain loops, in the shaders' order of
//! f32 operations. Norms are summed in f64.

use crate::optim::{OptimConfig, OptimizerKind};

/// Per-tensor state, mirroring the GPU's m (or momentum buffer) and v.
pub struct RefOptim {
    pub cfg: OptimConfig,
    pub step: u64,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

/// √Σg² over every tensor.
pub fn global_norm(grads: &[Vec<f32>]) -> f64 {
    grads.iter().flatten().map(|&g| g as f64 * g as f64).sum::<f64>().sqrt()
}

/// torch.nn.utils.clip_grad_norm_'s factor: min(1, clip / (norm + 1e-6)); 1 when clip is 0.
pub fn clip_scale(norm: f64, clip: f32) -> f32 {
    if clip > 0.0 {
        (clip / (norm as f32 + 1e-6)).min(1.0)
    } else {
        1.0
    }
}

impl RefOptim {
    pub fn new(cfg: OptimConfig, sizes: &[usize]) -> Self {
        let zeros = || sizes.iter().map(|&n| vec![0.0; n]).collect();
        Self { cfg, step: 0, m: zeros(), v: zeros() }
    }

    /// One step over every tensor; `decay[i]` says whether tensor i gets weight decay.
    /// Returns the pre-clip global gradient norm.
    pub fn step(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>], decay: &[bool], lr: f32) -> f64 {
        self.step += 1;
        let c = self.cfg.clone();
        let t = self.step as i32;
        let bc1 = (1.0 - (c.beta1 as f64).powi(t)) as f32;
        let bc2 = 1.0 - (c.beta2 as f64).powi(t);
        let (bc2, bc2_sqrt) = (bc2 as f32, bc2.sqrt() as f32);
        let norm = global_norm(grads);
        let scale = clip_scale(norm, c.grad_clip);
        for i in 0..params.len() {
            let wd = if decay[i] { c.weight_decay } else { 0.0 };
            let (x, m, v) = (&mut params[i], &mut self.m[i], &mut self.v[i]);
            let g = |j: usize| grads[i][j] * scale;
            match c.kind {
                OptimizerKind::Adamw => {
                    for j in 0..x.len() {
                        let gj = g(j);
                        m[j] += (1.0 - c.beta1) * (gj - m[j]);
                        v[j] = c.beta2 * v[j] + (1.0 - c.beta2) * gj * gj;
                        x[j] *= 1.0 - lr * wd;
                        x[j] -= (lr / bc1) * m[j] / (v[j].sqrt() / bc2_sqrt + c.eps);
                    }
                }
                OptimizerKind::Sgd => {
                    for j in 0..x.len() {
                        let mut d = g(j) + wd * x[j];
                        if c.momentum != 0.0 {
                            if self.step > 1 {
                                d += c.momentum * m[j];
                            }
                            m[j] = d;
                        }
                        x[j] -= lr * d;
                    }
                }
                OptimizerKind::Lamb => {
                    let mut u = vec![0.0f32; x.len()];
                    for j in 0..x.len() {
                        let gj = g(j);
                        m[j] = c.beta1 * m[j] + (1.0 - c.beta1) * gj;
                        v[j] = c.beta2 * v[j] + (1.0 - c.beta2) * gj * gj;
                        u[j] = (m[j] / bc1) / ((v[j] / bc2).sqrt() + c.eps) + wd * x[j];
                    }
                    let nx = x.iter().map(|&a| a as f64 * a as f64).sum::<f64>().sqrt();
                    let nu = u.iter().map(|&a| a as f64 * a as f64).sum::<f64>().sqrt();
                    let r = if nx > 0.0 && nu > 0.0 { (nx / nu) as f32 } else { 1.0 };
                    for j in 0..x.len() {
                        x[j] -= lr * r * u[j];
                    }
                }
            }
        }
        norm
    }
}
