//! Knowledge distillation: a teacher model's forward runs in each micro-batch of the
//! student's step, in the same submit, with no gradients and no optimizer state; the fused
//! KD loss (kernels::distill) takes the classifier's place and writes the student's dlogits.
//! The step's losses are the objective, with the cross-entropy and the KD term beside them.

use super::{Cmd, Gpt};
use crate::gpu::{Category, Gpu, GpuBuffer, GpuError, Recorder};
use crate::kernels::distill::{self, DistillIo, Kd};
use crate::kernels::View;

/// The teacher and the parts of the loss.
pub struct Distill {
    pub teacher: Box<Gpt>,
    /// (2, N): ce, then the T²·KL term, each summed over the step's micro-batches.
    pub(super) parts: GpuBuffer,
}

impl Gpt {
    /// Makes this training model a student of `teacher`, a forward-only model at the same
    /// batch, sequence length and vocabulary, in f32.
    pub fn distill_from(&mut self, gpu: &Gpu, teacher: Gpt, kd: Kd) -> Result<(), GpuError> {
        let (tv, v) = (teacher.config.vocab_size, self.config.vocab_size);
        if tv != v || (teacher.b, teacher.t) != (self.b, self.t) {
            return Err(GpuError::Unsupported(format!(
                "the teacher has vocab_size {tv} and batches of {} × {}; the student {v} and {} × {}",
                teacher.b, teacher.t, self.b, self.t
            )));
        }
        let n = (self.b * self.t) as u32;
        let parts = gpu.pool.storage(Category::Activations, 8 * n as u64)?;
        let io = DistillIo {
            logits: self.logits.v(),
            teacher: teacher.logits.v(),
            losses: (&self.micro.losses).into(),
            parts: View::from(&parts),
            targets: &self.micro.targets,
            scale: Some(&self.arena.loss_scale),
        };
        let dloss = 1.0 / (n as f32 * self.accum as f32);
        let op = distill::forward_backward(gpu, &io, (n, v as u32, v as u32), kd, Some(dloss))?;
        self.edges[1] = op.into_iter().map(Cmd::Run).collect();
        // The teacher's dispatches count toward a submit's too.
        self.size_slots(gpu, teacher.body.len() + self.edges[1].len())?;
        self.distill = Some(Distill { teacher: Box::new(teacher), parts });
        Ok(())
    }
}

impl Distill {
    /// The teacher's forward on the student's tokens, up to its logits.
    pub(super) fn record_teacher(&self, rec: &mut Recorder, tokens: &wgpu::Buffer) {
        let t = &self.teacher;
        rec.copy(tokens, 0, &t.micro.tokens.tokens, 0, 4 * (t.b * t.t) as u64);
        t.edges[0].iter().chain(&t.body).for_each(|cmd| cmd.record(rec));
    }
}
