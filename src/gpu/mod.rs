//! The GPU runtime: adapter and device, buffer pool, pipeline cache, step recorder, profiler,
//! and the tuning table. The device facts the layers above need (f16, subgroups, matrix units)
//! are read here and handed up.
//!
//! Layer: the ground floor; it uses no other module of the crate.

mod buffer;
mod device;
mod pipeline;
mod profile;
mod readback;
mod recorder;
mod timer;
pub mod tuning;

pub use buffer::{Category, GpuBuffer, Pool, PoolStats};
pub use device::{
    coop_fragments, describe, f16_matrix_units, list_adapters, select_adapter, select_adapter_for_rank,
    wanted_features, withheld_features, AdapterChoice,
};
pub use pipeline::{Kernel, Pipeline, Prelude, Shader, Slot};
pub use profile::Profiler;
pub use readback::Readback;
pub use recorder::{seconds_per_run, Dispatch, Recorder};
pub use timer::StepTimer;
pub use tuning::cache_dir;

use std::sync::{Arc, Mutex};

/// Errors of the GPU runtime. Variants carry the numbers involved.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "no GPU adapter found: install your GPU's Vulkan, Metal or DX12 driver, or the software \
         Vulkan driver (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`, or run \
         scripts/setup.sh); `wgtrain adapters` lists what wgpu sees"
    )]
    NoAdapter,
    #[error("--adapter {wanted:?} matches none of the adapters found: {seen:?}")]
    NoMatchingAdapter { wanted: String, seen: Vec<String> },
    #[error("--backend {0:?} is not one of vulkan, metal, dx12, gl")]
    UnknownBackend(String),
    #[error("the adapter refused a device: {0}")]
    RequestDevice(String),
    #[error("shader {name} does not compile: {message}")]
    Shader { name: String, message: String },
    #[error("a binding of {requested} bytes exceeds the adapter's max storage binding of {max} bytes")]
    BindingTooLarge { requested: u64, max: u64 },
    #[error("a buffer of {requested} bytes exceeds the adapter's max buffer size of {max} bytes")]
    BufferTooLarge { requested: u64, max: u64 },
    #[error("the GPU is out of memory allocating {requested} bytes for {category:?} ({live} bytes live)")]
    OutOfMemory { requested: u64, category: Category, live: u64 },
    #[error("a dispatch of {groups} workgroups exceeds the adapter's limit of {max} per dimension")]
    TooManyWorkgroups { groups: u64, max: u32 },
    #[error("a binding at byte {offset} is not on the adapter's {align}-byte offset alignment")]
    Misaligned { offset: u64, align: u64 },
    #[error("{what}: {elements} elements exceed the {capacity} in the buffer")]
    OutOfBounds { what: &'static str, elements: u64, capacity: u64 },
    #[error("{0}")]
    Unsupported(String),
    #[error("the GPU reported an error: {0}")]
    Device(String),
}

/// Runs `f` inside an error scope of `filter` and returns what it made with the error it raised.
/// The browser settles a scope only once control returns to its event loop, so there no scope
/// is pushed: the error reaches the uncaptured handler, which `Gpu::check` reads.
pub(crate) fn scoped<T>(
    device: &wgpu::Device,
    filter: wgpu::ErrorFilter,
    f: impl FnOnce() -> T,
) -> (T, Option<wgpu::Error>) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let scope = device.push_error_scope(filter);
        let made = f();
        (made, pollster::block_on(scope.pop()))
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = (device, filter);
        (f(), None)
    }
}

/// One adapter and device with everything wgtrain keeps beside them. Cheap to share by
/// reference; every cache inside is behind a lock.
pub struct Gpu {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// The limits the device was created with: the adapter's own, not WebGPU's defaults.
    pub limits: wgpu::Limits,
    pub pool: Pool,
    pub pipelines: pipeline::PipelineCache,
    /// Bound in place of optional read-only bindings a kernel does not read.
    pub dummy: wgpu::Buffer,
    /// Bound in place of a writable binding a kernel does not write.
    pub dummy_rw: wgpu::Buffer,
    /// Four f32 ones: the scale of a kernel given none.
    pub ones: wgpu::Buffer,
    /// The device was created with cooperative matrices (EXPERIMENTAL_COOPERATIVE_MATRIX): the
    /// coop kernels of either fragment size can be built (a test may force one the adapter
    /// does not list).
    pub coop_matrix: bool,
    /// The fragment sizes the adapter lists (`coop_fragments`), the ones the tuner offers;
    /// empty without `coop_matrix`.
    pub coop_fragments: Vec<u32>,
    /// Reused for every read back to the host; grows to the largest read.
    staging: Mutex<Option<wgpu::Buffer>>,
    /// Set when the user asked for --profile and the adapter has timestamp queries.
    pub profiler: Option<Mutex<Profiler>>,
    /// Set while timing something the timestamps would slow (`bench train`'s timed steps).
    pub profiling_paused: std::sync::atomic::AtomicBool,
    /// Kernel modules keep naga's runtime checks (WGTRAIN_CHECKED_SHADERS=1); by default they
    /// are built trusted, without them.
    pub checked_shaders: bool,
    /// The reductions use subgroup operations: the device has SUBGROUP and is not a CPU
    /// adapter, or WGTRAIN_SUBGROUPS=1 (0 turns them off). Set before the first pipeline is
    /// built.
    pub subgroups: bool,
    /// A kernel variant (by name) whose outputs are corrupted on purpose: the self-test of the
    /// checks that must refuse a wrong kernel (the tuner's verification). From WGTRAIN_CORRUPT.
    pub corrupt: Option<String>,
    /// Which variant runs each product and shape class (filled by `crate::tune`).
    pub tuning: Mutex<tuning::Table>,
    /// The first error wgpu raised outside an error scope (a device loss, say).
    uncaptured: Arc<Mutex<Option<String>>>,
}

/// The device with the wanted features and the adapter's full limits; with cooperative
/// matrices where the adapter lists f16 ones of a shape the coop kernels take (an
/// experimental wgpu feature),
/// retried without them, with a one-line warning, if the driver refuses the device so.
fn open_device(adapter: &wgpu::Adapter, limits: &wgpu::Limits) -> Result<(wgpu::Device, wgpu::Queue, bool), GpuError> {
    let usable = adapter.features() & !withheld_features(adapter.get_info().backend);
    let base = usable & wanted_features() & !features_turned_off();
    let coop = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
    let want_coop = usable.contains(coop)
        && base.contains(wgpu::Features::SHADER_F16)
        && !coop_fragments(adapter).is_empty()
        && device::coop_feature_on(adapter)
        && std::env::var("WGTRAIN_NO_COOP").map_or(true, |v| v != "1");
    let request = |features: wgpu::Features, experimental: bool| {
        let desc = wgpu::DeviceDescriptor {
            label: Some("wgtrain"),
            required_features: features,
            required_limits: limits.clone(),
            // SAFETY: wgpu marks its experimental features unsafe to opt into; wgtrain uses
            // cooperative matrices only in matmul_coop.wgsl, whose results the tests compare
            // with the reference wherever the adapter offers them.
            experimental_features: if experimental {
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            } else {
                wgpu::ExperimentalFeatures::disabled()
            },
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        pollster::block_on(adapter.request_device(&desc))
    };
    if want_coop {
        match request(base | coop, true) {
            Ok((d, q)) => return Ok((d, q, true)),
            Err(e) => eprintln!("warning: the device refused cooperative matrices ({e}); matmuls run without them"),
        }
    }
    let (d, q) = request(base, false).map_err(|e| GpuError::RequestDevice(e.to_string()))?;
    Ok((d, q, false))
}

/// Features the user turned off: WGTRAIN_NO_F16=1 opens the device without SHADER_F16, as on
/// an adapter that lacks it (to check a run's fallback, or to avoid a driver's f16 bugs).
fn features_turned_off() -> wgpu::Features {
    if std::env::var("WGTRAIN_NO_F16").is_ok_and(|v| v == "1") {
        wgpu::Features::SHADER_F16
    } else {
        wgpu::Features::empty()
    }
}

impl Gpu {
    /// Opens the best adapter that matches `choice` and requests its full limits.
    pub fn new(choice: &AdapterChoice) -> Result<Self, GpuError> {
        Self::with_adapter(select_adapter(choice)?)
    }

    /// Opens the adapter of MPI local rank `local_rank` (see `select_adapter_for_rank`).
    pub fn for_rank(choice: &AdapterChoice, local_rank: usize) -> Result<Self, GpuError> {
        Self::with_adapter(select_adapter_for_rank(choice, local_rank)?)
    }

    /// Opens the best adapter that matches `choice`, with checked shader modules or trusted ones
    /// (tests open one of each, to run every kernel in both builds).
    pub fn with_checks(choice: &AdapterChoice, checked_shaders: bool) -> Result<Self, GpuError> {
        let mut gpu = Self::with_adapter(select_adapter(choice)?)?;
        gpu.checked_shaders = checked_shaders;
        Ok(gpu)
    }

    fn with_adapter(adapter: wgpu::Adapter) -> Result<Self, GpuError> {
        let limits = adapter.limits();
        let (device, queue, coop_matrix) = open_device(&adapter, &limits)?;
        Ok(Self::from_device(adapter, device, queue, limits, coop_matrix))
    }

    /// The browser's WebGPU adapter (the high-performance one), with its full limits and the
    /// features wgtrain uses that it has. Async: the browser answers on its event loop.
    #[cfg(target_arch = "wasm32")]
    pub async fn open_web() -> Result<Self, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::BROWSER_WEBGPU;
        let instance = wgpu::Instance::new(desc);
        let options = wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        };
        let adapter = instance.request_adapter(&options).await.map_err(|_| GpuError::NoAdapter)?;
        let limits = adapter.limits();
        let desc = wgpu::DeviceDescriptor {
            label: Some("wgtrain"),
            // Timestamps inside passes are native-only in wgpu; the page times steps by the clock.
            required_features: adapter.features() & wanted_features() & !wgpu::Features::TIMESTAMP_QUERY,
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) =
            adapter.request_device(&desc).await.map_err(|e| GpuError::RequestDevice(e.to_string()))?;
        Ok(Self::from_device(adapter, device, queue, limits, false))
    }

    /// A `Gpu` around an open device: the pool, the shared small buffers, the error handlers.
    fn from_device(
        adapter: wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
        limits: wgpu::Limits,
        coop_matrix: bool,
    ) -> Self {
        let info = adapter.get_info();
        let listed_fragments = if coop_matrix { coop_fragments(&adapter) } else { Vec::new() };
        let uncaptured = Arc::new(Mutex::new(None));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap();
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));
        let lost = uncaptured.clone();
        device.set_device_lost_callback(move |reason, msg| {
            let mut slot = lost.lock().unwrap();
            if slot.is_none() && reason != wgpu::DeviceLostReason::Destroyed {
                *slot = Some(format!("the device was lost ({reason:?}): {msg}"));
            }
        });
        let small = |label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let (dummy, dummy_rw) = (small("dummy"), small("dummy (writable)"));
        let ones = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ones"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        queue.write_buffer(&ones, 0, bytemuck::cast_slice(&[1.0f32; 4]));
        // Subgroup reductions lose to the workgroup trees on CPU adapters (lavapipe's subgroups
        // of 8 leave 32 partials per 256 threads): GPUs only, unless WGTRAIN_SUBGROUPS says.
        let subgroups = device.features().contains(wgpu::Features::SUBGROUP)
            && match std::env::var("WGTRAIN_SUBGROUPS").as_deref() {
                Ok("1") => true,
                Ok("0") => false,
                _ => info.device_type != wgpu::DeviceType::Cpu,
            };
        Self {
            pool: Pool::new(device.clone(), &limits),
            pipelines: pipeline::PipelineCache::default(),
            adapter,
            device,
            queue,
            info,
            limits,
            dummy,
            dummy_rw,
            ones,
            coop_matrix,
            coop_fragments: listed_fragments,
            staging: Mutex::new(None),
            profiler: None,
            profiling_paused: Default::default(),
            tuning: Mutex::default(),
            corrupt: std::env::var("WGTRAIN_CORRUPT").ok().filter(|v| !v.is_empty()),
            subgroups,
            checked_shaders: std::env::var("WGTRAIN_CHECKED_SHADERS").is_ok_and(|v| v == "1"),
            uncaptured,
        }
    }

    /// Opens the adapter named by WGTRAIN_BACKEND / WGTRAIN_ADAPTER, or the best one.
    pub fn from_env() -> Result<Self, GpuError> {
        Self::new(&AdapterChoice::from_env())
    }

    /// Turns on per-kernel GPU timestamps. Returns false when the adapter has none.
    pub fn enable_profiling(&mut self) -> bool {
        if !self.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return false;
        }
        self.profiler = Some(Mutex::new(Profiler::new(&self.device, &self.queue)));
        true
    }

    /// Largest storage binding, in bytes.
    pub fn max_binding(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size
    }

    /// Returns the first error wgpu raised outside an error scope, if any.
    pub fn check(&self) -> Result<(), GpuError> {
        match self.uncaptured.lock().unwrap().take() {
            Some(e) => Err(GpuError::Device(e)),
            None => Ok(()),
        }
    }

    /// Copies `data` into `buf` starting at element `offset`.
    pub fn write<T: bytemuck::Pod>(&self, buf: &wgpu::Buffer, offset: u64, data: &[T]) {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        self.queue.write_buffer(buf, offset * std::mem::size_of::<T>() as u64, bytes);
    }

    /// Writes `values` into `buf` from its start as f16 (rounded to nearest), padded to whole
    /// u32 words: `read_f16`'s counterpart.
    pub fn write_f16(&self, buf: &wgpu::Buffer, values: &[f32]) {
        let mut bits: Vec<u16> = values.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect();
        bits.resize(values.len().next_multiple_of(2), 0);
        self.write(buf, 0, &bits);
    }

    /// Reads `len` f16 elements of `buf` from f16 element `offset`, as f32 (whole u32 words
    /// travel: reads start and end on 4 bytes).
    pub fn read_f16(&self, buf: &wgpu::Buffer, offset: u64, len: usize) -> Result<Vec<f32>, GpuError> {
        pollster::block_on(self.read_f16_async(buf, offset, len))
    }

    /// `read_f16` awaiting the read (`read_async`; natively `read`).
    pub async fn read_f16_async(&self, buf: &wgpu::Buffer, offset: u64, len: usize) -> Result<Vec<f32>, GpuError> {
        let (lo, hi) = (offset / 2, (offset + len as u64).div_ceil(2));
        let words: Vec<u32> = self.read_async(buf, lo, (hi - lo) as usize).await?;
        let halves: &[u16] = bytemuck::cast_slice(&words);
        let skip = (offset - 2 * lo) as usize;
        Ok(halves[skip..skip + len].iter().map(|&h| half::f16::from_bits(h).to_f32()).collect())
    }

    /// Reads `len` elements of `buf` from element `offset`, waiting for queued work first.
    /// Goes through one staging buffer that is kept for the next read.
    pub fn read<T: bytemuck::Pod>(&self, buf: &wgpu::Buffer, offset: u64, len: usize) -> Result<Vec<T>, GpuError> {
        let elem = std::mem::size_of::<T>() as u64;
        let bytes = len as u64 * elem;
        let Some(size) = self.read_size(buf, offset, len, elem)? else { return Ok(Vec::new()) };
        let mut staging = self.staging.lock().unwrap();
        if staging.as_ref().is_none_or(|s| s.size() < size) {
            *staging = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let staging = staging.as_ref().unwrap();
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, offset * elem, staging, 0, size);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, 0..size, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv().map_err(|e| GpuError::Device(e.to_string()))?.map_err(|e| GpuError::Device(e.to_string()))?;
        let out = {
            let view = staging.get_mapped_range(0..size).map_err(|e| GpuError::Device(e.to_string()))?;
            bytemuck::pod_collect_to_vec(&view[..bytes as usize])
        };
        staging.unmap();
        Ok(out)
    }

    /// `read` without blocking the thread, for the browser (where a mapping completes only on
    /// its event loop), through a staging buffer of its own per call; natively it is `read`.
    pub async fn read_async<T: bytemuck::Pod>(
        &self,
        buf: &wgpu::Buffer,
        offset: u64,
        len: usize,
    ) -> Result<Vec<T>, GpuError> {
        #[cfg(not(target_arch = "wasm32"))]
        return self.read(buf, offset, len);
        #[cfg(target_arch = "wasm32")]
        self.read_mapped(buf, offset, len).await
    }

    #[cfg(target_arch = "wasm32")]
    async fn read_mapped<T: bytemuck::Pod>(
        &self,
        buf: &wgpu::Buffer,
        offset: u64,
        len: usize,
    ) -> Result<Vec<T>, GpuError> {
        let elem = std::mem::size_of::<T>() as u64;
        let Some(size) = self.read_size(buf, offset, len, elem)? else { return Ok(Vec::new()) };
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging (async)"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, offset * elem, &staging, 0, size);
        let index = self.queue.submit([enc.finish()]);
        let signal = readback::map_for_reading(&staging);
        readback::mapped(self, signal, Some(index)).await?;
        let view = staging.get_mapped_range(..).map_err(|e| GpuError::Device(e.to_string()))?;
        Ok(bytemuck::pod_collect_to_vec(&view[..(len as u64 * elem) as usize]))
    }

    /// The staging size of a read of `len` elements of `elem` bytes from element `offset` of
    /// `buf` (None: nothing to read), or the error of one past its end.
    fn read_size(&self, buf: &wgpu::Buffer, offset: u64, len: usize, elem: u64) -> Result<Option<u64>, GpuError> {
        let bytes = len as u64 * elem;
        if offset * elem + bytes > buf.size() {
            return Err(GpuError::OutOfBounds {
                what: "read",
                elements: offset + len as u64,
                capacity: buf.size() / elem,
            });
        }
        Ok((len > 0).then(|| bytes.next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT)))
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<(), GpuError> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Device(e.to_string()))?;
        self.check()
    }

    /// Blocks until the submit `index` is done.
    pub fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<(), GpuError> {
        let wait = wgpu::PollType::Wait { submission_index: Some(index), timeout: None };
        self.device.poll(wait).map_err(|e| GpuError::Device(e.to_string()))?;
        self.check()
    }

    /// A short description of the adapter for logs.
    pub fn name(&self) -> String {
        format!("{} ({:?}, {:?})", self.info.name, self.info.backend, self.info.device_type)
    }
}
