//! Embedded shaders and a cache of compute pipelines keyed by (entry point, override constants).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Gpu, GpuError};

/// One WGSL file under shaders/, embedded at build time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    Attention,
    /// attention_rows.wgsl for head sizes up to 16, 32 and 64 (rows of 4, 8 or 16 vec4).
    AttentionRows16,
    AttentionRows32,
    AttentionRows,
    /// attention_lanes.wgsl: lane-parallel rows for CPU adapters (subgroups of 8).
    AttentionLanes,
    /// attention_coop.wgsl: forward and backward on cooperative matrices, f16, with
    /// 16×16×16 fragments (`AttentionCoop`) or 8×8×8 (`AttentionCoop8`).
    AttentionCoop,
    AttentionCoop8,
    Checksum,
    Classifier,
    Encoder,
    Gelu,
    Elementwise,
    Layernorm,
    Matmul,
    /// matmul_coop.wgsl: cooperative matrices, f16 operands, 16×16×16 fragments (`MatmulCoop`)
    /// or 8×8×8 (`MatmulCoop8`).
    MatmulCoop,
    MatmulCoop8,
    /// matmul_split.wgsl: the split-k forward for CPU adapters (subgroup sums).
    MatmulSplit,
    /// matmul_lanes.wgsl: lane-parallel products for CPU adapters (the backward ones).
    MatmulLanes,
    Optim,
    /// quant.wgsl: linear layers and the embedding over block-quantized weights.
    Quant,
    /// fake_quant.wgsl: QAT's quantize-dequantize of the linear weights, and GPU quantization.
    FakeQuant,
    /// prune.wgsl: magnitude pruning's exact threshold and mask, activation channel norms.
    Prune,
    /// distill.wgsl: the fused knowledge-distillation loss.
    Distill,
    /// rmsnorm.wgsl: Llama's RMSNorm, forward and backward.
    RmsNorm,
    /// rope.wgsl: rotary position embedding (HF's rotate_half), and its inverse.
    Rope,
    /// swiglu.wgsl: the gating of Llama's MLP, silu(gate)·up.
    Swiglu,
}

impl Shader {
    /// Every shader file; a test checks this matches the contents of shaders/.
    pub const ALL: &'static [Shader] = &[
        Shader::Attention,
        Shader::AttentionRows16,
        Shader::AttentionRows32,
        Shader::AttentionRows,
        Shader::AttentionLanes,
        Shader::AttentionCoop,
        Shader::AttentionCoop8,
        Shader::Checksum,
        Shader::Classifier,
        Shader::Encoder,
        Shader::Gelu,
        Shader::Elementwise,
        Shader::Layernorm,
        Shader::Matmul,
        Shader::MatmulSplit,
        Shader::MatmulLanes,
        Shader::MatmulCoop,
        Shader::MatmulCoop8,
        Shader::Optim,
        Shader::Quant,
        Shader::FakeQuant,
        Shader::Prune,
        Shader::Distill,
        Shader::RmsNorm,
        Shader::Rope,
        Shader::Swiglu,
    ];

    /// File name under shaders/.
    pub fn file(self) -> &'static str {
        match self {
            Shader::Gelu => "gelu.wgsl",
            Shader::Encoder => "encoder.wgsl",
            Shader::Checksum => "checksum.wgsl",
            Shader::Classifier => "classifier.wgsl",
            Shader::Attention => "attention.wgsl",
            Shader::AttentionCoop | Shader::AttentionCoop8 => "attention_coop.wgsl",
            Shader::AttentionLanes => "attention_lanes.wgsl",
            Shader::AttentionRows16 | Shader::AttentionRows32 | Shader::AttentionRows => "attention_rows.wgsl",
            Shader::Elementwise => "elementwise.wgsl",
            Shader::Layernorm => "layernorm.wgsl",
            Shader::Matmul => "matmul.wgsl",
            Shader::MatmulCoop | Shader::MatmulCoop8 => "matmul_coop.wgsl",
            Shader::MatmulSplit => "matmul_split.wgsl",
            Shader::MatmulLanes => "matmul_lanes.wgsl",
            Shader::Optim => "optim.wgsl",
            Shader::Quant => "quant.wgsl",
            Shader::FakeQuant => "fake_quant.wgsl",
            Shader::Prune => "prune.wgsl",
            Shader::Distill => "distill.wgsl",
            Shader::RmsNorm => "rmsnorm.wgsl",
            Shader::Rope => "rope.wgsl",
            Shader::Swiglu => "swiglu.wgsl",
        }
    }

    /// The file's own text, as it is on disk.
    pub fn file_source(self) -> &'static str {
        match self {
            Shader::Gelu => include_str!("../../shaders/gelu.wgsl"),
            Shader::Encoder => include_str!("../../shaders/encoder.wgsl"),
            Shader::Checksum => include_str!("../../shaders/checksum.wgsl"),
            Shader::Classifier => include_str!("../../shaders/classifier.wgsl"),
            Shader::Attention => include_str!("../../shaders/attention.wgsl"),
            Shader::AttentionCoop | Shader::AttentionCoop8 => include_str!("../../shaders/attention_coop.wgsl"),
            Shader::AttentionLanes => include_str!("../../shaders/attention_lanes.wgsl"),
            Shader::AttentionRows16 | Shader::AttentionRows32 | Shader::AttentionRows => {
                include_str!("../../shaders/attention_rows.wgsl")
            }
            Shader::Elementwise => include_str!("../../shaders/elementwise.wgsl"),
            Shader::Layernorm => include_str!("../../shaders/layernorm.wgsl"),
            Shader::Matmul => include_str!("../../shaders/matmul.wgsl"),
            Shader::MatmulCoop | Shader::MatmulCoop8 => include_str!("../../shaders/matmul_coop.wgsl"),
            Shader::MatmulSplit => include_str!("../../shaders/matmul_split.wgsl"),
            Shader::MatmulLanes => include_str!("../../shaders/matmul_lanes.wgsl"),
            Shader::Optim => include_str!("../../shaders/optim.wgsl"),
            Shader::Quant => include_str!("../../shaders/quant.wgsl"),
            Shader::FakeQuant => include_str!("../../shaders/fake_quant.wgsl"),
            Shader::Prune => include_str!("../../shaders/prune.wgsl"),
            Shader::Distill => include_str!("../../shaders/distill.wgsl"),
            Shader::RmsNorm => include_str!("../../shaders/rmsnorm.wgsl"),
            Shader::Rope => include_str!("../../shaders/rope.wgsl"),
            Shader::Swiglu => include_str!("../../shaders/swiglu.wgsl"),
        }
    }

    /// The preludes (shaders/prelude/) composed ahead of the file, WGSL having no include;
    /// with `subgroups`, the ones that use subgroup operations where there are such.
    pub fn preludes(self, subgroups: bool) -> &'static [Prelude] {
        use Prelude::{Fold, Group, NormRows, Reduce, ReduceSubgroup};
        match (self, subgroups) {
            (Shader::Optim, false) => &[Reduce, Prelude::HalfBits, Prelude::Hash, Group],
            (Shader::Optim, true) => &[ReduceSubgroup, Prelude::HalfBits, Prelude::Hash, Group],
            (Shader::Elementwise, _) => &[Prelude::Hash],
            (Shader::FakeQuant, _) => &[Prelude::HalfBits],
            (Shader::Encoder | Shader::Gelu, _) => &[Group],
            (Shader::Classifier | Shader::Distill, false) => &[Reduce, Group],
            (Shader::Classifier | Shader::Distill, true) => &[ReduceSubgroup, Group],
            (Shader::Layernorm | Shader::RmsNorm, false) => &[Reduce, Group, NormRows, Fold],
            (Shader::Layernorm | Shader::RmsNorm, true) => &[ReduceSubgroup, Group, NormRows, Fold],
            (Shader::Matmul, _) => &[Prelude::MatmulIo, Fold],
            (Shader::Attention, _) => &[Prelude::AttentionIo, Reduce],
            (Shader::AttentionCoop, _) => &[Prelude::Coop16, Prelude::AttentionIo],
            (Shader::AttentionCoop8, _) => &[Prelude::Coop8, Prelude::AttentionIo],
            (Shader::MatmulCoop, _) => &[Prelude::Coop16, Prelude::MatmulIo],
            (Shader::MatmulCoop8, _) => &[Prelude::Coop8, Prelude::MatmulIo],
            (Shader::AttentionLanes, _) => &[Prelude::AttentionIo],
            (Shader::MatmulSplit | Shader::MatmulLanes, _) => &[Prelude::MatmulIo],
            (Shader::AttentionRows16, _) => &[Prelude::AttentionIo, Prelude::Rows4],
            (Shader::AttentionRows32, _) => &[Prelude::AttentionIo, Prelude::Rows8],
            (Shader::AttentionRows, _) => &[Prelude::AttentionIo, Prelude::Rows16],
            _ => &[],
        }
    }

    /// The module wgtrain compiles: the storage types, the preludes, then the file.
    pub fn source(self, subgroups: bool) -> String {
        self.source_typed(subgroups, 0)
    }

    /// `source` with the bindings whose bit is set in `half` holding f16 (see `types_prelude`).
    /// The cooperative-matrix kernels always have f16 operands (the matmul's bindings 1 and 2,
    /// the attention's out and qkv).
    pub fn source_typed(self, subgroups: bool, half: u8) -> String {
        let mut s = match self {
            Shader::MatmulCoop | Shader::MatmulCoop8 => types_prelude(half | 0b110, &["wgpu_cooperative_matrix"]),
            // out and qkv.
            Shader::AttentionCoop | Shader::AttentionCoop8 => types_prelude(half | 0b101, &["wgpu_cooperative_matrix"]),
            _ => types_prelude(half, &[]),
        };
        for p in self.preludes(subgroups) {
            s += p.source();
            s += "\n";
        }
        s + self.file_source()
    }
}

/// Element types of the bindings that may hold either precision: binding i's is `S{i}`, f16
/// where bit i of `half` is set and f32 otherwise. Shaders compute in f32 whatever they load
/// (`f32(x[i])`, `vec4<f32>(x[i])`) and convert what they store (`S0(v)`); with f32 the
/// conversions are identities. `enable f16` leads the module when any binding is f16.
/// `enables` are further extensions the module needs: WGSL wants every `enable` first.
pub fn types_prelude(half: u8, enables: &[&str]) -> String {
    let mut s = String::new();
    if half != 0 {
        s += "enable f16;\n";
    }
    for e in enables {
        s += &format!("enable {e};\n");
    }
    for i in 0..8 {
        let ty = if half & (1 << i) != 0 { "f16" } else { "f32" };
        s += &format!("alias S{i} = {ty};\n");
    }
    s
}

/// Shared WGSL under shaders/prelude/.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prelude {
    /// Workgroup sums and maxima (reduce_sum, reduce_sum2, reduce_max) as trees in
    /// workgroup memory.
    Reduce,
    /// The same functions through subgroup operations (needs SUBGROUP).
    ReduceSubgroup,
    /// The attention shaders' uniform, bindings and index helpers.
    AttentionIo,
    /// The matmul shaders' uniform, bindings, loads, store and product layouts.
    MatmulIo,
    /// The cooperative-matrix kernels' fragment size and types: 8×8×8 or 16×16×16.
    Coop8,
    Coop16,
    /// The row length (ROW4 vec4) of attention_rows.wgsl: 4, 8 or 16.
    Rows4,
    Rows8,
    Rows16,
    /// f32 to f16 bits, rounded to nearest even or stochastically.
    HalfBits,
    /// Stateless random bits: hash(seed, element).
    Hash,
    /// The builtins of a kernel with one workgroup per item (`Group`) and the item's index.
    Group,
    /// The fixed-order fold of 8 row lanes' column sums (the parameter and bias gradients).
    Fold,
    /// LayerNorm's and RMSNorm's row sums.
    NormRows,
}

impl Prelude {
    pub const ALL: &'static [Prelude] = &[
        Prelude::AttentionIo,
        Prelude::Coop16,
        Prelude::Coop8,
        Prelude::Fold,
        Prelude::Group,
        Prelude::HalfBits,
        Prelude::Hash,
        Prelude::MatmulIo,
        Prelude::NormRows,
        Prelude::Reduce,
        Prelude::ReduceSubgroup,
        Prelude::Rows16,
        Prelude::Rows4,
        Prelude::Rows8,
    ];

    pub fn file(self) -> &'static str {
        match self {
            Prelude::Reduce => "prelude/reduce.wgsl",
            Prelude::ReduceSubgroup => "prelude/reduce_subgroup.wgsl",
            Prelude::AttentionIo => "prelude/attention_io.wgsl",
            Prelude::MatmulIo => "prelude/matmul_io.wgsl",
            Prelude::Coop8 => "prelude/coop_8.wgsl",
            Prelude::Coop16 => "prelude/coop_16.wgsl",
            Prelude::Rows4 => "prelude/rows_4.wgsl",
            Prelude::Rows8 => "prelude/rows_8.wgsl",
            Prelude::Rows16 => "prelude/rows_16.wgsl",
            Prelude::HalfBits => "prelude/half_bits.wgsl",
            Prelude::Hash => "prelude/hash.wgsl",
            Prelude::Group => "prelude/group.wgsl",
            Prelude::Fold => "prelude/fold.wgsl",
            Prelude::NormRows => "prelude/norm_rows.wgsl",
        }
    }

    pub fn source(self) -> &'static str {
        match self {
            Prelude::Reduce => include_str!("../../shaders/prelude/reduce.wgsl"),
            Prelude::ReduceSubgroup => include_str!("../../shaders/prelude/reduce_subgroup.wgsl"),
            Prelude::AttentionIo => include_str!("../../shaders/prelude/attention_io.wgsl"),
            Prelude::MatmulIo => include_str!("../../shaders/prelude/matmul_io.wgsl"),
            Prelude::Coop8 => include_str!("../../shaders/prelude/coop_8.wgsl"),
            Prelude::Coop16 => include_str!("../../shaders/prelude/coop_16.wgsl"),
            Prelude::Rows4 => include_str!("../../shaders/prelude/rows_4.wgsl"),
            Prelude::Rows8 => include_str!("../../shaders/prelude/rows_8.wgsl"),
            Prelude::Rows16 => include_str!("../../shaders/prelude/rows_16.wgsl"),
            Prelude::HalfBits => include_str!("../../shaders/prelude/half_bits.wgsl"),
            Prelude::Hash => include_str!("../../shaders/prelude/hash.wgsl"),
            Prelude::Group => include_str!("../../shaders/prelude/group.wgsl"),
            Prelude::Fold => include_str!("../../shaders/prelude/fold.wgsl"),
            Prelude::NormRows => include_str!("../../shaders/prelude/norm_rows.wgsl"),
        }
    }
}

/// The kind of one binding, in binding order (outputs, inputs, weights, then the uniform).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// read_write storage
    Storage,
    /// read-only storage
    ReadOnly,
    Uniform,
}

/// An entry point with its explicit bind group layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub shader: Shader,
    pub entry: &'static str,
    pub slots: &'static [Slot],
    /// Bit i: binding i holds f16 (its `S{i}` is f16); 0 for an all-f32 kernel.
    pub half: u8,
}

impl Kernel {
    pub const fn new(shader: Shader, entry: &'static str, slots: &'static [Slot]) -> Self {
        Self { shader, entry, slots, half: 0 }
    }

    /// The same entry point with the bindings of mask `half` in f16.
    pub const fn with_half(self, half: u8) -> Self {
        Self { half, ..self }
    }
}

/// A compiled pipeline and the layout its bind groups must follow.
pub struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub kernel: Kernel,
}

type PipelineKey = (Kernel, Vec<(&'static str, u64)>);

/// Modules, layouts and pipelines, each created once.
#[derive(Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<(Shader, u8), wgpu::ShaderModule>>,
    layouts: Mutex<HashMap<&'static [Slot], wgpu::BindGroupLayout>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<Pipeline>>>,
}

impl Gpu {
    /// The pipeline for `kernel` specialized by `constants` (WGSL override values).
    pub fn pipeline(&self, kernel: Kernel, constants: &[(&'static str, f64)]) -> Result<Arc<Pipeline>, GpuError> {
        let key = (kernel, constants.iter().map(|(k, v)| (*k, v.to_bits())).collect());
        if let Some(p) = self.pipelines.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let started = web_time::Instant::now();
        let module = self.module(kernel.shader, kernel.half)?;
        let layout = self.bind_group_layout(kernel.slots);
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(kernel.entry),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let (pipeline, err) = super::scoped(&self.device, wgpu::ErrorFilter::Validation, || {
            self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        });
        if let Some(e) = err {
            return Err(GpuError::Shader {
                name: format!("{}::{} {:?}", kernel.shader.file(), kernel.entry, constants),
                message: e.to_string(),
            });
        }
        if std::env::var_os("WGTRAIN_LOG_PIPELINES").is_some() {
            eprintln!("pipeline {} {:?}: {:.0} ms", kernel.entry, constants, started.elapsed().as_secs_f64() * 1e3);
        }
        let p = Arc::new(Pipeline { pipeline, layout, kernel });
        // Another thread may have built the same pipeline meanwhile: keep the first, so every
        // caller shares one.
        Ok(self.pipelines.pipelines.lock().unwrap().entry(key).or_insert(p).clone())
    }

    fn module(&self, shader: Shader, half: u8) -> Result<wgpu::ShaderModule, GpuError> {
        if let Some(m) = self.pipelines.modules.lock().unwrap().get(&(shader, half)) {
            return Ok(m.clone());
        }
        if half != 0 && !self.device.features().contains(wgpu::Features::SHADER_F16) {
            return Err(GpuError::Unsupported(format!(
                "{} needs f16 storage, and this adapter has no SHADER_F16",
                shader.file()
            )));
        }
        let source = shader.source_typed(self.subgroups, half);
        let m = self.compile(shader.file(), &source, self.checked_shaders)?;
        self.pipelines.modules.lock().unwrap().insert((shader, half), m.clone());
        Ok(m)
    }

    /// Compiles WGSL source; a parse or validation error comes back as Err, never a panic.
    pub fn compile_wgsl(&self, name: &str, source: &str) -> Result<wgpu::ShaderModule, GpuError> {
        self.compile(name, source, true)
    }

    /// One module inside an error scope, with naga's runtime checks or without them (bounds
    /// clamping, forced loop bounding, division guards): wgtrain's own shaders are trusted
    /// unless WGTRAIN_CHECKED_SHADERS=1. The host validates every offset, size and window
    /// before it builds a dispatch, and every kernel is tested against its reference in both
    /// builds, so an access that depends on the clamping shows up as a difference.
    fn compile(&self, name: &str, source: &str, checked: bool) -> Result<wgpu::ShaderModule, GpuError> {
        let desc = wgpu::ShaderModuleDescriptor { label: Some(name), source: wgpu::ShaderSource::Wgsl(source.into()) };
        let (module, err) = super::scoped(&self.device, wgpu::ErrorFilter::Validation, || {
            if checked {
                self.device.create_shader_module(desc)
            } else {
                // SAFETY: only `module` passes false, for the embedded shaders, whose every
                // access the host keeps in range (see above); `compile_wgsl` always checks.
                unsafe { self.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
            }
        });
        match err {
            Some(e) => Err(GpuError::Shader { name: name.to_string(), message: e.to_string() }),
            None => Ok(module),
        }
    }

    fn bind_group_layout(&self, slots: &'static [Slot]) -> wgpu::BindGroupLayout {
        let mut layouts = self.pipelines.layouts.lock().unwrap();
        layouts
            .entry(slots)
            .or_insert_with(|| {
                let entries: Vec<_> = slots
                    .iter()
                    .enumerate()
                    .map(|(i, slot)| wgpu::BindGroupLayoutEntry {
                        binding: i as u32,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: match slot {
                                Slot::Storage => wgpu::BufferBindingType::Storage { read_only: false },
                                Slot::ReadOnly => wgpu::BufferBindingType::Storage { read_only: true },
                                Slot::Uniform => wgpu::BufferBindingType::Uniform,
                            },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    })
                    .collect();
                self.device
                    .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries })
            })
            .clone()
    }

    /// A bind group for `pipeline` over buffer windows given in binding order.
    pub fn bind_group(&self, pipeline: &Pipeline, windows: &[wgpu::BufferBinding<'_>]) -> wgpu::BindGroup {
        let entries: Vec<_> = windows
            .iter()
            .enumerate()
            .map(|(i, w)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(w.clone()),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(pipeline.kernel.entry),
            layout: &pipeline.layout,
            entries: &entries,
        })
    }
}
