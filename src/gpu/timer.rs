//! The GPU time of a training step: a timestamp before its first command and one after its
//! last, read back with the step's losses (`gpu_ms` in metrics.jsonl).

use super::{Gpu, Readback, Recorder};

/// Two timestamps per step and their readback; None where the adapter has no timestamps.
pub struct StepTimer {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    read: Readback,
    period_ns: f64,
}

impl StepTimer {
    pub fn new(gpu: &Gpu) -> Option<Self> {
        if !gpu.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return None;
        }
        let queries = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("step timer"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("step timestamps"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = Readback::new(gpu, 16, "step timestamps readback");
        Some(Self { queries, resolve, read, period_ns: gpu.queue.get_timestamp_period() as f64 })
    }

    /// Records the step's first timestamp.
    pub fn start(&self, rec: &mut Recorder) {
        rec.timestamp(&self.queries, 0);
    }

    /// Records the step's last timestamp and the copy of both to the host.
    pub fn end(&mut self, rec: &mut Recorder) {
        rec.timestamp(&self.queries, 1);
        rec.resolve(&self.queries, 0..2, &self.resolve);
        self.read.record(rec, &self.resolve, 0);
    }

    /// After the submit that ended the step.
    pub fn submitted_at(&mut self, index: wgpu::SubmissionIndex) {
        self.read.submitted_at(Some(index));
    }

    /// Milliseconds between the step's two timestamps, once per step (None if none waits).
    pub fn take_ms(&mut self, gpu: &Gpu) -> Result<Option<f64>, super::GpuError> {
        Ok(self.read.take::<u64>(gpu)?.map(|t| t[1].saturating_sub(t[0]) as f64 * self.period_ns / 1e6))
    }
}
