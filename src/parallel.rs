//! One data-parallel training step's GPU ↔ MPI traffic (with more than one rank).
//!
//! Layer: above model; uses gpu, optim, model and dist. train uses it.
//!
//! Plain data parallelism: the backward is cut into gradient buckets (`Gpt::grad_buckets`);
//! each bucket is copied out and submitted as soon as its layers are done, and its all-reduce
//! starts on the MPI thread as soon as the GPU has finished it, while the GPU goes on with the
//! layers below. The averaged buckets are written back and every rank runs the same update.
//!
//! ZeRO-1 (`--zero 1`): rank r owns 1/N of the arena's elements (cut on 64-element
//! boundaries, inside tensors too; for LAMB, whose trust ratios need whole tensors, a run of
//! whole tensors of about 1/N) and the optimizer state of those alone. The gradients are reduce-scattered so each rank gets the
//! average of its shard; the clipping norm is the square root of the ranks' summed squares;
//! each rank updates its shard, and the parameters are all-gathered.
//!
//! A step takes several submits here, where one rank takes one: the gradients must leave the
//! GPU between the backward and the update.

use std::time::{Duration, Instant};

use crate::dist::{bucket_bytes, Dist};
use crate::gpu::{Gpu, GpuError, Readback, Recorder};
use crate::model::{Bucket, Gpt};
use crate::optim::Optimizer;

pub struct Parallel {
    pub zero: bool,
    buckets: Vec<Bucket>,
    reads: Vec<Readback>,
    /// ZeRO-1: each rank's arena range.
    pub shards: Vec<(u64, u64)>,
    norm: Option<Readback>,
    params: Option<Readback>,
    /// Time the training thread spent blocked on MPI this step.
    pub wait: Duration,
}

impl Parallel {
    /// `whole_tensors`: shards of whole tensors (LAMB) rather than of elements.
    pub fn new(gpu: &Gpu, gpt: &Gpt, dist: &Dist, zero: bool, whole_tensors: bool) -> Self {
        let table = &gpt.arena.table;
        let shards =
            if whole_tensors { table.whole_tensor_ranges(dist.size) } else { table.balanced_ranges(dist.size) };
        // ZeRO reduce-scatters the whole gradient at once; plain DP goes bucket by bucket.
        let buckets = if zero {
            vec![Bucket { lo: 0, hi: table.len, after_layer: None }]
        } else {
            gpt.grad_buckets(bucket_bytes())
        };
        let reads = buckets.iter().map(|b| Readback::new(gpu, 4 * (b.hi - b.lo), "gradient bucket")).collect();
        let (norm, params) = if zero {
            let (lo, hi) = shards[dist.rank];
            // The shard's parameters, then (mixed precision) their f16 copy.
            let per = if gpt.arena.half.is_some() { 6 } else { 4 };
            (
                Some(Readback::new(gpu, 4, "shard grad norm")),
                Some(Readback::new(gpu, per * (hi - lo).max(1), "shard parameters")),
            )
        } else {
            (None, None)
        };
        Parallel { zero, buckets, reads, shards, norm, params, wait: Duration::ZERO }
    }

    /// Bytes of host-mappable staging this rank holds: two slots per gradient bucket, and
    /// for ZeRO-1 the norm and shard readbacks.
    pub fn staging_bytes(&self) -> u64 {
        let bucket: u64 = self.buckets.iter().map(|b| 2 * 4 * (b.hi - b.lo)).sum();
        let shard = self.shards.iter().map(|(lo, hi)| 2 * 4 * (hi - lo)).max().unwrap_or(0);
        bucket + if self.zero { 2 * 4 + shard } else { 0 }
    }

    /// Gradient buckets (plain data parallelism), in the order the backward completes them.
    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// Forward and backward of this rank's last `micros` micro-batches of the step (after
    /// zeroing, when `zero`: the step's first submit), then the gradient average: the whole
    /// arena (plain), or this rank's shard (ZeRO-1), written back into the gradients before
    /// the next submit.
    pub fn forward_backward(
        &mut self,
        gpu: &Gpu,
        gpt: &Gpt,
        dist: &Dist,
        micros: usize,
        zero: bool,
    ) -> Result<(), GpuError> {
        self.wait = Duration::ZERO;
        let mut submits = Vec::new();
        let (buckets, reads) = (&self.buckets, &mut self.reads);
        gpt.record_forward_backward_cut(gpu, micros, zero, buckets, |mut rec, j| {
            let b = &buckets[j];
            reads[j].record_parts(&mut rec, &[(&gpt.arena.grads, 4 * b.lo, 4 * (b.hi - b.lo))]);
            submits.push(rec.submit());
        });
        let scale = 1.0 / dist.size as f32;
        if !self.zero {
            let mut pending = Vec::new();
            for (j, index) in submits.into_iter().enumerate() {
                self.reads[j].submitted_at(Some(index?));
                let host: Vec<f32> = self.reads[j].take(gpu)?.expect("bucket submitted");
                pending.push(dist.all_reduce_sum(host));
            }
            for (b, p) in self.buckets.iter().zip(pending) {
                let t = Instant::now();
                let mut sum = p.wait();
                self.wait += t.elapsed();
                sum.iter_mut().for_each(|x| *x *= scale);
                gpu.queue.write_buffer(&gpt.arena.grads, 4 * b.lo, bytemuck::cast_slice(&sum));
            }
            return Ok(());
        }
        let index = submits.pop().expect("one bucket")?;
        self.reads[0].submitted_at(Some(index));
        let grads: Vec<f32> = self.reads[0].take(gpu)?.expect("gradients submitted");
        let block = self.shards.iter().map(|(lo, hi)| (hi - lo) as usize).max().unwrap_or(0).max(1);
        let mut send = vec![0.0f32; block * dist.size];
        for (r, &(lo, hi)) in self.shards.iter().enumerate() {
            send[r * block..][..(hi - lo) as usize].copy_from_slice(&grads[lo as usize..hi as usize]);
        }
        let t = Instant::now();
        let mut mine = dist.reduce_scatter_sum(send, block);
        self.wait += t.elapsed();
        let (lo, hi) = self.shards[dist.rank];
        mine.truncate((hi - lo) as usize);
        mine.iter_mut().for_each(|x| *x *= scale);
        gpu.queue.write_buffer(&gpt.arena.grads, 4 * lo, bytemuck::cast_slice(&mine));
        Ok(())
    }

    /// ZeRO-1: the clipping norm over every shard. Records and submits the optimizer's norm
    /// pass on this shard, then sums the squares over ranks and hands the optimizer the
    /// global norm. Returns it.
    pub fn global_norm(&mut self, gpu: &Gpu, opt: &mut Optimizer, dist: &Dist, lr: f32) -> Result<f32, GpuError> {
        let read = self.norm.as_mut().expect("ZeRO-1");
        let mut rec = Recorder::new(gpu);
        opt.record_norm(gpu, &mut rec, lr);
        read.record_parts(&mut rec, &[(opt.scalars(), 0, 4)]);
        let index = rec.submit()?;
        read.submitted_at(Some(index));
        let local: f32 = read.take::<f32>(gpu)?.expect("norm submitted")[0];
        let t = Instant::now();
        let total = dist.all_reduce_f64(vec![(local as f64) * (local as f64)])[0];
        self.wait += t.elapsed();
        let norm = total.sqrt() as f32;
        opt.set_norm(gpu, norm);
        Ok(norm)
    }

    /// ZeRO-1: records copying this rank's updated shard out (and its f16 copy, under mixed
    /// precision), into the update's submit.
    pub fn record_shard_params(&mut self, rec: &mut Recorder, gpt: &Gpt, dist: &Dist) {
        let (lo, hi) = self.shards[dist.rank];
        if hi > lo {
            let mut parts = vec![(&*gpt.arena.params, 4 * lo, 4 * (hi - lo))];
            if let Some(h) = &gpt.arena.half {
                parts.push((&**h, 2 * lo, 2 * (hi - lo)));
            }
            self.params.as_mut().expect("ZeRO-1").record_parts(rec, &parts);
        }
    }

    /// ZeRO-1: after the update's submit (`index`), gathers every shard's parameters (and f16
    /// copies) and writes the other ranks' shards back (this rank's is on the GPU already).
    pub fn gather_params(
        &mut self,
        gpu: &Gpu,
        gpt: &Gpt,
        dist: &Dist,
        index: wgpu::SubmissionIndex,
    ) -> Result<(), GpuError> {
        let (lo, hi) = self.shards[dist.rank];
        let mine: Vec<f32> = if hi > lo {
            let read = self.params.as_mut().expect("ZeRO-1");
            read.submitted_at(Some(index));
            read.take(gpu)?.expect("shard submitted")
        } else {
            Vec::new()
        };
        // Shards are cut on 64 elements: their f16 copies are whole f32-sized words, which
        // travel with the parameters bit for bit (MPI copies them, it computes nothing).
        let half = gpt.arena.half.as_ref();
        let words = |n: u64| (n + if half.is_some() { n / 2 } else { 0 }) as usize;
        let counts: Vec<usize> = self.shards.iter().map(|(lo, hi)| words(hi - lo)).collect();
        let t = Instant::now();
        let all = dist.all_gather(mine, counts);
        self.wait += t.elapsed();
        let mut at = 0;
        for (r, &(lo, hi)) in self.shards.iter().enumerate() {
            let n = (hi - lo) as usize;
            if r != dist.rank && n > 0 {
                gpu.queue.write_buffer(&gpt.arena.params, 4 * lo, bytemuck::cast_slice(&all[at..at + n]));
                if let Some(h) = half {
                    gpu.queue.write_buffer(h, 2 * lo, bytemuck::cast_slice(&all[at + n..at + n + n / 2]));
                }
            }
            at += words(hi - lo);
        }
        Ok(())
    }
}
