//! A pool of GPU buffers that reuses freed memory and counts live bytes per category.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::GpuError;

/// What a buffer holds, for the memory accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Parameters,
    Gradients,
    OptimizerState,
    Activations,
    Scratch,
    Uniforms,
}

/// Sizes are rounded up to this, so that buffers of nearly equal size share a free list and
/// every buffer can be bound as an array of vec4.
const GRANULE: u64 = 256;

#[derive(Clone, Debug, Default)]
pub struct PoolStats {
    /// Bytes in use, by category.
    pub live: Vec<(Category, u64)>,
    /// Bytes held in free lists, ready for reuse.
    pub free: u64,
    /// Highest total of live bytes seen.
    pub peak: u64,
    /// Allocations served from a free list / created anew.
    pub reused: u64,
    pub created: u64,
}

impl PoolStats {
    pub fn live_total(&self) -> u64 {
        self.live.iter().map(|(_, b)| b).sum()
    }
}

struct PoolState {
    free: HashMap<(u64, wgpu::BufferUsages), Vec<wgpu::Buffer>>,
    live: HashMap<Category, u64>,
    free_bytes: u64,
    peak: u64,
    reused: u64,
    created: u64,
}

struct PoolShared {
    device: wgpu::Device,
    max_buffer: u64,
    state: Mutex<PoolState>,
}

/// Hands out buffers and takes them back when they drop.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<PoolShared>,
}

/// A buffer from the pool. Derefs to the wgpu buffer; clones share it, and it returns to the
/// pool when the last clone drops.
///
/// Keep a clone as long as any bind group or queued command uses it: once returned it can be
/// handed out again, while wgpu still keeps its memory alive for the old bind group, and two
/// owners would then share one buffer.
#[derive(Clone)]
pub struct GpuBuffer {
    owned: Arc<Owned>,
}

struct Owned {
    buf: Option<wgpu::Buffer>,
    category: Category,
    pool: Arc<PoolShared>,
}

impl Pool {
    pub fn new(device: wgpu::Device, limits: &wgpu::Limits) -> Self {
        let state =
            PoolState { free: HashMap::new(), live: HashMap::new(), free_bytes: 0, peak: 0, reused: 0, created: 0 };
        Self { shared: Arc::new(PoolShared { device, max_buffer: limits.max_buffer_size, state: Mutex::new(state) }) }
    }

    /// A storage buffer of at least `bytes` bytes, contents unspecified.
    pub fn storage(&self, category: Category, bytes: u64) -> Result<GpuBuffer, GpuError> {
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        self.get(category, bytes, usage)
    }

    /// A storage buffer holding `data`.
    pub fn storage_from<T: bytemuck::Pod>(
        &self,
        queue: &wgpu::Queue,
        category: Category,
        data: &[T],
    ) -> Result<GpuBuffer, GpuError> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buf = self.storage(category, bytes.len() as u64)?;
        queue.write_buffer(&buf, 0, bytes);
        Ok(buf)
    }

    /// A uniform buffer holding `value`.
    pub fn uniform<T: bytemuck::Pod>(&self, queue: &wgpu::Queue, value: &T) -> Result<GpuBuffer, GpuError> {
        let usage = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
        let buf = self.get(Category::Uniforms, std::mem::size_of::<T>() as u64, usage)?;
        queue.write_buffer(&buf, 0, bytemuck::bytes_of(value));
        Ok(buf)
    }

    fn get(&self, category: Category, bytes: u64, usage: wgpu::BufferUsages) -> Result<GpuBuffer, GpuError> {
        let size = bytes.max(1).next_multiple_of(GRANULE);
        if size > self.shared.max_buffer {
            return Err(GpuError::BufferTooLarge { requested: size, max: self.shared.max_buffer });
        }
        let mut st = self.shared.state.lock().unwrap();
        let buf = match st.free.get_mut(&(size, usage)).and_then(Vec::pop) {
            Some(buf) => {
                st.free_bytes -= size;
                st.reused += 1;
                buf
            }
            None => {
                drop(st);
                let buf = self.create(category, size, usage)?;
                st = self.shared.state.lock().unwrap();
                st.created += 1;
                buf
            }
        };
        *st.live.entry(category).or_default() += size;
        let total: u64 = st.live.values().sum();
        st.peak = st.peak.max(total);
        Ok(GpuBuffer { owned: Arc::new(Owned { buf: Some(buf), category, pool: self.shared.clone() }) })
    }

    fn create(&self, category: Category, size: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer, GpuError> {
        let device = &self.shared.device;
        let (buf, err) = super::scoped(device, wgpu::ErrorFilter::OutOfMemory, || {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(category_label(category)),
                size,
                usage,
                mapped_at_creation: false,
            })
        });
        if err.is_some() {
            let live = self.stats().live_total();
            return Err(GpuError::OutOfMemory { requested: size, category, live });
        }
        Ok(buf)
    }

    /// Releases the buffers kept for reuse.
    pub fn trim(&self) {
        let mut st = self.shared.state.lock().unwrap();
        st.free.clear();
        st.free_bytes = 0;
    }

    /// Starts the peak over from the bytes live now (to measure one phase's peak).
    pub fn reset_peak(&self) {
        let mut st = self.shared.state.lock().unwrap();
        st.peak = st.live.values().sum();
    }

    pub fn stats(&self) -> PoolStats {
        let st = self.shared.state.lock().unwrap();
        let mut live: Vec<_> = st.live.iter().map(|(c, b)| (*c, *b)).collect();
        live.sort();
        PoolStats { live, free: st.free_bytes, peak: st.peak, reused: st.reused, created: st.created }
    }
}

fn category_label(c: Category) -> &'static str {
    match c {
        Category::Parameters => "parameters",
        Category::Gradients => "gradients",
        Category::OptimizerState => "optimizer state",
        Category::Activations => "activations",
        Category::Scratch => "scratch",
        Category::Uniforms => "uniforms",
    }
}

impl GpuBuffer {
    pub fn category(&self) -> Category {
        self.owned.category
    }

    /// Capacity in f32 elements.
    pub fn len_f32(&self) -> u64 {
        self.size() / 4
    }
}

impl std::ops::Deref for GpuBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        self.owned.buf.as_ref().expect("buffer present until drop")
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let Some(buf) = self.buf.take() else { return };
        let size = buf.size();
        let mut st = self.pool.state.lock().unwrap();
        if let Some(live) = st.live.get_mut(&self.category) {
            *live -= size;
        }
        st.free_bytes += size;
        st.free.entry((size, buf.usage())).or_default().push(buf);
    }
}
