//! Small results (a step's losses, the gradient norm) read back after a submit without
//! stalling the next one: a ring of mappable buffers.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::{Gpu, GpuError, Recorder};

/// Where a mapping's callback leaves its result, and whom it wakes (an `await`ing caller).
#[derive(Default)]
pub(super) struct Signal {
    done: Option<Result<(), wgpu::BufferAsyncError>>,
    waker: Option<Waker>,
}

/// A mapping's signal as a future (`Readback::take_async`).
struct Mapped(Arc<Mutex<Signal>>);

impl Future for Mapped {
    type Output = Result<(), wgpu::BufferAsyncError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.0.lock().unwrap();
        match s.done.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A slot being mapped, and the submit whose copy it waits for (None: any, so wait for all).
type Pending = (usize, Arc<Mutex<Signal>>, Option<wgpu::SubmissionIndex>);

/// Two slots: a step copies into one while the previous step's is still being read.
pub struct Readback {
    slots: [wgpu::Buffer; 2],
    bytes: u64,
    next: usize,
    recorded: Option<usize>,
    pending: Option<Pending>,
}

impl Readback {
    pub fn new(gpu: &Gpu, bytes: u64, label: &str) -> Self {
        let bytes = bytes.max(4).next_multiple_of(4);
        let slots = std::array::from_fn(|_| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        Self { slots, bytes, next: 0, recorded: None, pending: None }
    }

    /// Records copying `src[offset..offset + bytes]` into the next slot.
    pub fn record(&mut self, rec: &mut Recorder, src: &wgpu::Buffer, offset: u64) {
        self.record_parts(rec, &[(src, offset, self.bytes)]);
    }

    /// Records copying several (buffer, offset, bytes) pieces, one after another, into the
    /// next slot.
    pub fn record_parts(&mut self, rec: &mut Recorder, parts: &[(&wgpu::Buffer, u64, u64)]) {
        let slot = self.next;
        self.next = (slot + 1) % self.slots.len();
        let mut at = 0;
        for &(src, offset, bytes) in parts {
            rec.copy(src, offset, &self.slots[slot], at, bytes);
            at += bytes;
        }
        self.recorded = Some(slot);
    }

    /// After the submit: starts mapping what `record` copied. A result nobody read gives its
    /// slot up (this cancels its mapping if still pending).
    pub fn submitted(&mut self) {
        self.submitted_at(None);
    }

    /// `submitted`, knowing the submit's index: `take` then waits for that submit alone, not
    /// for work queued after it.
    pub fn submitted_at(&mut self, index: Option<wgpu::SubmissionIndex>) {
        if let Some(slot) = self.recorded.take() {
            if let Some((old, _, _)) = self.pending.take() {
                self.slots[old].unmap();
            }
            let signal = map_for_reading(&self.slots[slot]);
            self.pending = Some((slot, signal, index));
        }
    }

    /// The newest submitted result, once (None if none is waiting). Blocks only if the GPU has
    /// not finished that submit yet (with `submitted_at`, only on that submit). Native only: in
    /// the browser, await `take_async`.
    pub fn take<T: bytemuck::Pod>(&mut self, gpu: &Gpu) -> Result<Option<Vec<T>>, GpuError> {
        pollster::block_on(self.take_async(gpu))
    }

    /// `take` without blocking the thread: in the browser, where a mapping completes only
    /// once control returns to the event loop, it awaits that.
    pub async fn take_async<T: bytemuck::Pod>(&mut self, gpu: &Gpu) -> Result<Option<Vec<T>>, GpuError> {
        let Some((slot, signal, index)) = self.pending.take() else {
            return Ok(None);
        };
        mapped(gpu, signal, index).await?;
        self.read_slot(slot).map(Some)
    }

    /// The mapped slot's contents, then unmapped.
    fn read_slot<T: bytemuck::Pod>(&self, slot: usize) -> Result<Vec<T>, GpuError> {
        let buf = &self.slots[slot];
        let out = {
            let view = buf.get_mapped_range(..).map_err(|e| GpuError::Device(e.to_string()))?;
            bytemuck::pod_collect_to_vec(&view[..])
        };
        buf.unmap();
        Ok(out)
    }
}

/// Starts mapping all of `buf` for reading; its callback fills the returned signal.
pub(super) fn map_for_reading(buf: &wgpu::Buffer) -> Arc<Mutex<Signal>> {
    let signal = Arc::new(Mutex::new(Signal::default()));
    let tx = signal.clone();
    buf.map_async(wgpu::MapMode::Read, .., move |r| {
        let mut s = tx.lock().unwrap();
        s.done = Some(r);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    });
    signal
}

/// Awaits a mapping that `map_for_reading` started. Natively nothing runs its callback but a
/// poll, so this first waits on the device (`settle`); in the browser the event loop runs it,
/// and this yields to it.
pub(super) async fn mapped(
    gpu: &Gpu,
    signal: Arc<Mutex<Signal>>,
    index: Option<wgpu::SubmissionIndex>,
) -> Result<(), GpuError> {
    #[cfg(not(target_arch = "wasm32"))]
    settle(gpu, &signal, index)?;
    #[cfg(target_arch = "wasm32")]
    let _ = index;
    let done = Mapped(signal).await;
    gpu.check()?;
    done.map_err(|e| GpuError::Device(e.to_string()))
}

/// How long a mapping may take to be delivered once its submit is done.
#[cfg(not(target_arch = "wasm32"))]
const DELIVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Natively: waits for the submit `index` (all, where None), then for the mapping's callback.
/// Another thread polling the same device (tests share one) may have taken the callback and
/// not yet run it when this thread's wait returns, so it polls on briefly rather than failing.
#[cfg(not(target_arch = "wasm32"))]
fn settle(gpu: &Gpu, signal: &Mutex<Signal>, index: Option<wgpu::SubmissionIndex>) -> Result<(), GpuError> {
    let poll = |p| gpu.device.poll(p).map(|_| ()).map_err(|e| GpuError::Device(e.to_string()));
    if signal.lock().unwrap().done.is_some() {
        return Ok(());
    }
    poll(wgpu::PollType::Wait { submission_index: index, timeout: None })?;
    let start = std::time::Instant::now();
    while signal.lock().unwrap().done.is_none() {
        if start.elapsed() > DELIVERY {
            gpu.check()?;
            return Err(GpuError::Device("a readback's mapping never completed".into()));
        }
        poll(wgpu::PollType::Poll)?;
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(())
}
