//! Records the dispatches of one unit of work (later, a whole training step) into one command
//! encoder, and submits them at once.

use std::sync::{Arc, MutexGuard};

use super::{Gpu, GpuError, Pipeline, Profiler};

/// One prepared dispatch: pipeline, bindings and grid, built once and recorded many times.
pub struct Dispatch {
    pub pipeline: Arc<Pipeline>,
    pub bind_group: wgpu::BindGroup,
    pub groups: [u32; 3],
    /// Kernel name in profiles.
    pub label: &'static str,
    /// Keeps the uniform buffer alive as long as the bind group that reads it.
    pub(crate) _uniform: Option<super::GpuBuffer>,
}

impl Dispatch {
    /// Rewrites the dispatch's uniform (for values that change between submits, such as the
    /// decoding position). Lands before the next submit.
    pub fn write_uniform<P: bytemuck::Pod>(&self, gpu: &Gpu, params: &P) {
        if let Some(u) = &self._uniform {
            gpu.queue.write_buffer(u, 0, bytemuck::bytes_of(params));
        }
    }
}

/// One command encoder; `submit` sends everything recorded in a single queue submission.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    encoder: wgpu::CommandEncoder,
    profiler: Option<MutexGuard<'g, Profiler>>,
    timed: Vec<&'static str>,
}

impl<'g> Recorder<'g> {
    pub fn new(gpu: &'g Gpu) -> Self {
        let encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") });
        let paused = gpu.profiling_paused.load(std::sync::atomic::Ordering::Relaxed);
        let profiler = gpu.profiler.as_ref().filter(|_| !paused).map(|p| p.lock().unwrap());
        Self { gpu, encoder, profiler, timed: Vec::new() }
    }

    /// Records one dispatch in a compute pass of its own, timed when profiling.
    pub fn dispatch(&mut self, d: &Dispatch) {
        let mut timestamp_writes = None;
        if let Some(p) = &mut self.profiler {
            let i = self.timed.len() as u32;
            if i < p.capacity {
                timestamp_writes = Some(wgpu::ComputePassTimestampWrites {
                    query_set: &p.queries,
                    beginning_of_pass_write_index: Some(2 * i),
                    end_of_pass_write_index: Some(2 * i + 1),
                });
                self.timed.push(d.label);
            } else {
                p.untimed += 1;
            }
        }
        let mut pass =
            self.encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(d.label), timestamp_writes });
        pass.set_pipeline(&d.pipeline.pipeline);
        pass.set_bind_group(0, &d.bind_group, &[]);
        let [x, y, z] = d.groups;
        pass.dispatch_workgroups(x, y, z);
    }

    /// Records every dispatch of an op, in order.
    pub fn run(&mut self, op: &[Dispatch]) {
        for d in op {
            self.dispatch(d);
        }
    }

    /// Zeroes `bytes` bytes of `buf` from byte `offset` (both multiples of 4).
    pub fn clear(&mut self, buf: &wgpu::Buffer, offset: u64, bytes: u64) {
        self.encoder.clear_buffer(buf, offset, Some(bytes));
    }

    /// Copies `bytes` bytes between buffers (offsets and size multiples of 4).
    pub fn copy(&mut self, src: &wgpu::Buffer, src_offset: u64, dst: &wgpu::Buffer, dst_offset: u64, bytes: u64) {
        self.encoder.copy_buffer_to_buffer(src, src_offset, dst, dst_offset, bytes);
    }

    /// Records a timestamp into `queries[index]` (an empty compute pass that writes it).
    pub fn timestamp(&mut self, queries: &wgpu::QuerySet, index: u32) {
        let timestamp_writes = Some(wgpu::ComputePassTimestampWrites {
            query_set: queries,
            beginning_of_pass_write_index: Some(index),
            end_of_pass_write_index: None,
        });
        drop(
            self.encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("timestamp"), timestamp_writes }),
        );
    }

    /// Records resolving `queries[range]` into `dst` (8 bytes each).
    pub fn resolve(&mut self, queries: &wgpu::QuerySet, range: std::ops::Range<u32>, dst: &wgpu::Buffer) {
        self.encoder.resolve_query_set(queries, range, dst, 0);
    }

    /// Submits everything recorded. With --profile, waits and adds the kernel times.
    pub fn submit(mut self) -> Result<wgpu::SubmissionIndex, GpuError> {
        if let Some(p) = &self.profiler {
            p.resolve(&mut self.encoder, self.timed.len() as u32);
        }
        let index = self.gpu.queue.submit([self.encoder.finish()]);
        if let Some(p) = &mut self.profiler {
            p.collect(&self.gpu.device, &self.timed);
        }
        self.gpu.check()?;
        Ok(index)
    }
}

/// Seconds per run of `ops` by the wall clock: recorded `reps` times into one submit, waited for
/// (the tuner's and the benches' timing).
pub fn seconds_per_run(gpu: &Gpu, ops: &[Dispatch], reps: usize) -> Result<f64, GpuError> {
    let t = web_time::Instant::now();
    let mut rec = Recorder::new(gpu);
    for _ in 0..reps {
        rec.run(ops);
    }
    rec.submit()?;
    gpu.wait()?;
    Ok(t.elapsed().as_secs_f64() / reps as f64)
}
