//! The flat parameter arena: every trainable tensor at an offset of one buffer, and the chunk
//! table that lets one dispatch update them all.

use crate::gpu::{Category, Gpu, GpuBuffer, GpuError};

/// Tensors start on multiples of this many elements (256 bytes): every tensor can then be bound
/// on its own at any adapter's offset alignment, and is processed as whole vec4s.
pub const TENSOR_ALIGN: u64 = 64;
/// Elements one workgroup updates (the chunk size of the multi-tensor kernels).
pub const CHUNK: u64 = 16384;

/// One trainable tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// HF GPT-2 naming, e.g. `h.0.attn.c_attn.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    /// First element in the arena.
    pub offset: u64,
    /// Weight decay applies (tensors of 2 or more dimensions: matmul weights, embeddings).
    pub decay: bool,
}

impl TensorInfo {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64
    }
}

/// The layout shared by parameters, gradients and optimizer moments.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamTable {
    pub tensors: Vec<TensorInfo>,
    /// Arena length in elements, padding included.
    pub len: u64,
}

/// One chunk as the shaders read it (`struct Chunk` in shaders/optim.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ChunkEntry {
    /// First element, relative to the window the chunk's dispatch binds.
    pub start: u32,
    pub len: u32,
    pub tensor: u32,
    pub decay: u32,
}

impl ParamTable {
    /// Lays the tensors out in order, each on a TENSOR_ALIGN boundary. Decay goes to every
    /// tensor of 2 or more dimensions.
    pub fn new<S: Into<String>>(specs: impl IntoIterator<Item = (S, Vec<usize>)>) -> Self {
        let mut table = Self::default();
        for (name, shape) in specs {
            let offset = table.len.next_multiple_of(TENSOR_ALIGN);
            let decay = shape.len() >= 2;
            let t = TensorInfo { name: name.into(), shape, offset, decay };
            table.len = offset + t.numel();
            table.tensors.push(t);
        }
        table.len = table.len.next_multiple_of(TENSOR_ALIGN);
        table
    }

    /// Trainable elements, padding excluded.
    pub fn numel(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::numel).sum()
    }

    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The position of tensor `name` in the table.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }

    /// Every tensor cut into chunks of at most CHUNK elements, with absolute starts, in arena
    /// order. Empty tensors have no chunk.
    pub fn chunks(&self) -> Vec<ChunkEntry> {
        let mut out = Vec::new();
        for (i, t) in self.tensors.iter().enumerate() {
            let n = t.numel();
            for start in (0..n).step_by(CHUNK as usize) {
                out.push(ChunkEntry {
                    start: (t.offset + start) as u32,
                    len: (n - start).min(CHUNK) as u32,
                    tensor: i as u32,
                    decay: t.decay as u32,
                });
            }
        }
        out
    }

    /// The parts of the tensors inside arena elements lo..hi, as a table of their own with
    /// offsets relative to lo. A tensor cut by the range becomes a 1-D piece named
    /// `NAME#START` (START: its first element within the tensor), with the tensor's decay.
    /// An empty range gives an empty table of one padding block.
    pub fn pieces(&self, lo: u64, hi: u64) -> ParamTable {
        let mut tensors = Vec::new();
        for t in &self.tensors {
            let (a, b) = (t.offset.max(lo), (t.offset + t.numel()).min(hi));
            if a >= b {
                continue;
            }
            let whole = a == t.offset && b == t.offset + t.numel();
            tensors.push(TensorInfo {
                name: if whole { t.name.clone() } else { format!("{}#{}", t.name, a - t.offset) },
                shape: if whole { t.shape.clone() } else { vec![(b - a) as usize] },
                offset: a - lo,
                decay: t.decay,
            });
        }
        let len = if tensors.is_empty() { TENSOR_ALIGN } else { hi - lo };
        ParamTable { tensors, len }
    }

    /// `n` consecutive arena ranges with about equal element counts, cut anywhere on
    /// TENSOR_ALIGN boundaries (inside tensors too): ZeRO-1 shards for optimizers whose
    /// update is element-wise (AdamW, SGD).
    pub fn balanced_ranges(&self, n: usize) -> Vec<(u64, u64)> {
        let cut =
            |r: usize| ((self.len as u128 * r as u128 / n as u128) as u64 / TENSOR_ALIGN * TENSOR_ALIGN).min(self.len);
        (0..n).map(|r| (cut(r), if r + 1 == n { self.len } else { cut(r + 1) })).collect()
    }

    /// `shard_bounds` as arena ranges (empty shards are (0, 0)): ZeRO-1 shards of whole
    /// tensors, for LAMB.
    pub fn whole_tensor_ranges(&self, n: usize) -> Vec<(u64, u64)> {
        let bounds = self.shard_bounds(n);
        (0..n)
            .map(|r| {
                if bounds[r] == bounds[r + 1] {
                    return (0, 0);
                }
                let (first, last) = (&self.tensors[bounds[r]], &self.tensors[bounds[r + 1] - 1]);
                (first.offset, (last.offset + last.numel()).next_multiple_of(TENSOR_ALIGN).min(self.len))
            })
            .collect()
    }

    /// Splits the tensors into `n` runs of consecutive tensors with about equal element
    /// counts (ZeRO-1 shards): run r is tensors[bounds[r]..bounds[r + 1]].
    pub fn shard_bounds(&self, n: usize) -> Vec<usize> {
        let total = self.numel().max(1);
        let mut bounds = vec![0];
        let mut acc = 0u64;
        for (i, t) in self.tensors.iter().enumerate() {
            acc += t.numel();
            // Close shard r once it reaches r/n of the elements (and leave tensors for the rest).
            while bounds.len() < n && acc * n as u64 >= total * bounds.len() as u64 {
                bounds.push(i + 1);
            }
        }
        while bounds.len() <= n {
            bounds.push(self.tensors.len());
        }
        bounds
    }

    /// An f32 vector of the arena's length holding each tensor's values, padding zero.
    pub fn pack(&self, values: &[Vec<f32>]) -> Vec<f32> {
        let mut flat = vec![0.0; self.len as usize];
        for (t, v) in self.tensors.iter().zip(values) {
            flat[t.offset as usize..][..v.len()].copy_from_slice(v);
        }
        flat
    }

    /// The inverse of `pack`.
    pub fn unpack(&self, flat: &[f32]) -> Vec<Vec<f32>> {
        self.tensors.iter().map(|t| flat[t.offset as usize..][..t.numel() as usize].to_vec()).collect()
    }
}

/// Parameters and their gradients on the GPU, in one buffer each; under mixed precision also
/// the parameters' f16 copy, which the optimizer writes with every update.
pub struct ParamArena {
    pub table: ParamTable,
    /// (len) f32, the master weights
    pub params: GpuBuffer,
    /// (len) f32; zeroed before each step's backward
    pub grads: GpuBuffer,
    /// (len) f16, the same layout: what the matmuls read under mixed precision.
    pub half: Option<GpuBuffer>,
    /// (len) f32, the same layout: QAT's fake-quantized linear weights, which the matmuls
    /// read in their place (see `model::qat`).
    pub fake_quant: Option<GpuBuffer>,
    /// (len / 32) u32, a bit per element, set where the parameter is kept: pruning's mask,
    /// which the optimizer applies with every update (see `compress::prune`).
    pub mask: Option<GpuBuffer>,
    /// [0]: the loss scale the next backward multiplies its loss gradient by (1 unless loss
    /// scaling is on). The optimizer keeps it: see `Optimizer::record_update`.
    pub loss_scale: GpuBuffer,
}

impl ParamArena {
    /// Allocates zeroed parameters and gradients for `table`, and with `half` their f16 copy.
    pub fn new(gpu: &Gpu, table: ParamTable, half: bool) -> Result<Self, GpuError> {
        let grads = 4 * table.len;
        Self::alloc(gpu, table, half, grads)
    }

    /// `new` for a model that only runs forward: a token gradient buffer of 256 bytes.
    pub fn for_inference(gpu: &Gpu, table: ParamTable, half: bool) -> Result<Self, GpuError> {
        Self::alloc(gpu, table, half, 256)
    }

    /// The same buffers, for a second model over these weights (see `Gpt::sharing`).
    pub fn shared(&self) -> Self {
        Self {
            table: self.table.clone(),
            params: self.params.clone(),
            grads: self.grads.clone(),
            half: self.half.clone(),
            fake_quant: self.fake_quant.clone(),
            mask: self.mask.clone(),
            loss_scale: self.loss_scale.clone(),
        }
    }

    fn alloc(gpu: &Gpu, table: ParamTable, half: bool, grad_bytes: u64) -> Result<Self, GpuError> {
        let params = gpu.pool.storage(Category::Parameters, 4 * table.len)?;
        let grads = gpu.pool.storage(Category::Gradients, grad_bytes)?;
        let half = if half { Some(gpu.pool.storage(Category::Parameters, 2 * table.len)?) } else { None };
        let loss_scale = gpu.pool.storage_from(&gpu.queue, Category::OptimizerState, &[1.0f32, 0.0, 0.0, 0.0])?;
        let mut rec = crate::gpu::Recorder::new(gpu);
        rec.clear(&params, 0, params.size());
        rec.clear(&grads, 0, grads.size());
        if let Some(h) = &half {
            rec.clear(h, 0, h.size());
        }
        rec.submit()?;
        Ok(Self { table, params, grads, half, fake_quant: None, mask: None, loss_scale })
    }
}
