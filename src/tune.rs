//! Autotuning: which variant computes each matmul product and attention at each shape class
//! on this adapter.
//!
//! A matmul shape class is the product with M, N and K rounded up to powers of two (and the
//! batch, for batched products with one weight per entry); an attention class is T and B·NH
//! rounded up, with the head size. The first time a run meets a class, the tuner
//! times every candidate for the adapter type on the real shape (a few milliseconds each),
//! keeps the fastest, and stores it in a cache file keyed by the adapter (vendor, device,
//! driver) and the hash of the shaders as compiled. Variants may sum in other orders, so the
//! choices belong to the run: they are saved in state.json and pinned again on --resume, and
//! under MPI rank 0's choices are sent to every rank.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::formats::QType;
use crate::gpu::{Category, Dispatch, Gpu, GpuBuffer, GpuError, Recorder, Shader};
use crate::kernels::attention::{self, AttnVariant};
use crate::kernels::layernorm::{self, LnVariant};
use crate::kernels::matmul::{runs_on, Dims, Matmul, Product, Variant};
use crate::kernels::quant::{self as qk, QView};
use crate::kernels::{Dtype, View};

/// Version of the cache file's layout.
const FORMAT: u32 = 1;
/// Time spent on one candidate after its warm-up run, at least one run.
const BUDGET_S: f64 = 0.003;

/// What the tuner found for one class.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub best: String,
    pub best_ms: f64,
    /// The second fastest, if there were two candidates.
    pub runner_up: Option<String>,
    pub runner_up_ms: Option<f64>,
    /// How many candidates were timed: an entry from a shorter list than today's is timed again.
    #[serde(default)]
    pub candidates: usize,
}

/// The tuning table a `Gpu` carries.
#[derive(Default)]
pub struct Table {
    /// This run's choice for each class met so far, by key ("forward 1024x256x128"), as the
    /// variant's name.
    choices: BTreeMap<String, String>,
    /// The tuner's findings for the classes it timed or read from the cache in this process.
    pub found: BTreeMap<String, (Entry, bool)>,
    /// Time candidates for a new class; otherwise take `fallback` or the adapter type's default.
    pub tune: bool,
    /// Time every candidate even on a CPU adapter (`wgtrain tune`); training there times a
    /// short list, since every candidate costs an LLVM compile of seconds.
    pub thorough: bool,
    /// The matmul variant for new classes when not tuning (None: the adapter type's default).
    pub fallback: Option<Variant>,
    /// A run from before autotuning: every kernel not pinned runs the one it ran then
    /// (the matmul baseline, 16×16 attention tiles, workgroup LayerNorm).
    pub baselines: bool,
    /// The cache file's entries for this adapter and these shaders, read on first use.
    cache: Option<BTreeMap<String, Entry>>,
    /// The cache file, when not `cache_path()` (tests give each GPU its own).
    pub cache_file: Option<PathBuf>,
}

impl Table {
    /// This run's choices by class key, as state.json records them.
    pub fn choices(&self) -> BTreeMap<String, String> {
        self.choices.clone()
    }

    /// Pins a run's recorded choices (--resume, or rank 0's under MPI). A name this build does
    /// not know is an error: the run could not continue bitwise.
    pub fn pin(&mut self, choices: &BTreeMap<String, String>) -> Result<(), String> {
        for (k, name) in choices {
            let known = if k.starts_with("attention") {
                AttnVariant::parse(name).map(|_| ())
            } else if k.starts_with("layernorm") {
                LnVariant::parse(name).map(|_| ())
            } else if k.starts_with("quant") {
                QuantPath::parse(name).map(|_| ())
            } else {
                Variant::parse(name).map(|_| ())
            };
            known.map_err(|e| format!("tuning choice for {k}: {e}"))?;
            self.choices.insert(k.clone(), name.clone());
        }
        Ok(())
    }
}

/// `wgtrain tune`: builds the model at (B, T) with tuning on, which times every class its
/// matmuls meet (or reads it from the cache), and returns one line per class with the choice
/// and the runner-up.
pub fn tune_model(
    gpu: &Gpu,
    config: crate::model::GptConfig,
    b: usize,
    t: usize,
    precision: crate::model::Precision,
) -> Result<Vec<String>, GpuError> {
    {
        let mut t = gpu.tuning.lock().unwrap();
        t.tune = true;
        t.thorough = true;
    }
    drop(crate::model::Gpt::with_precision(gpu, config, b, t, 1, precision)?);
    let table = gpu.tuning.lock().unwrap();
    let mut lines = vec![format!("{:<34} {:<20} {:>9}  {:<20} {:>9}", "class", "choice", "ms", "runner-up", "ms")];
    for (key, (e, cached)) in &table.found {
        let up = e.runner_up.as_deref().unwrap_or("-");
        let up_ms = e.runner_up_ms.map_or("-".to_string(), |x| format!("{x:.3}"));
        let from = if *cached { "  (cached)" } else { "" };
        lines.push(format!("{key:<34} {:<20} {:>9.3}  {up:<20} {up_ms:>9}{from}", e.best, e.best_ms));
    }
    Ok(lines)
}

/// The variant of `product` at `d` for classes nobody tuned: what wins on each adapter type
/// before any timing. On a CPU adapter whose subgroups are one SIMD batch of 8, the
/// lane-parallel kernel where the output has at least a workgroup's columns (64) and 16 rows
/// (on lavapipe, AMD EPYC: 2.1-2.7× the baseline for every product at M 1024, N 128 to 2048,
/// K 128 to 512; 0.65-0.7× at 8 columns). Otherwise a forward of at least 64 rows and K ≥ 128
/// is split-k where the device has subgroups (1.24-1.65× the baseline at those shapes).
pub fn default_variant(gpu: &Gpu, product: Product, d: Dims) -> Variant {
    if gpu.info.device_type != wgpu::DeviceType::Cpu {
        return Variant::GPU[0];
    }
    // A shared weight's batch entries are more rows of one product.
    let m = if d.shared_weight { d.m * d.batch } else { d.m };
    let rows = if product == Product::BackwardWeight { d.n } else { m };
    let cols = if product == Product::Forward { d.n } else { d.k };
    let (lr, lc) = Variant::LANES.extent();
    if rows >= lr && cols >= lc && runs_on(gpu, Variant::LANES) {
        return Variant::LANES;
    }
    let split_rows = Variant::SPLIT.extent().0;
    if product == Product::Forward && d.k >= 128 && m >= split_rows && runs_on(gpu, Variant::SPLIT) {
        return Variant::SPLIT;
    }
    Variant::BASELINE
}

/// The attention variant nobody tuned at head size `hs`: on CPU adapters the lane-parallel
/// kernels where the subgroups are 8 lanes and HS ≤ 64, else the row kernels; GPUs keep the
/// 16×16 tiles they were measured with until the tuner times the others. The CPU default is
/// lanes1, not the faster lanes2 (about 10% less time in attention at B 8, T 128, HS 32 on
/// lavapipe, AMD EPYC), because LLVM compiles lanes2's three kernels in about 9 s there
/// against 2 s, and the first step must come within seconds on a cold driver cache.
pub fn default_attention(gpu: &Gpu, hs: u32) -> AttnVariant {
    let lanes = AttnVariant::Lanes { r: 1 };
    match gpu.info.device_type {
        wgpu::DeviceType::Cpu if lanes.runs_on(gpu, hs) => lanes,
        wgpu::DeviceType::Cpu => AttnVariant::Rows { br: 64 },
        _ => AttnVariant::Tiles16,
    }
}

/// The matmul candidates for `product` timed on this adapter: on a CPU adapter the register
/// and split-k variants for `wgtrain tune`, and only the default while training, whose first
/// step must come within seconds even with a cold driver cache (each candidate costs seconds
/// of LLVM compile there). Training reuses what `wgtrain tune` stored.
pub fn candidates(gpu: &Gpu, product: Product, d: Dims) -> Vec<Variant> {
    let thorough = gpu.tuning.lock().unwrap().thorough;
    let all = match gpu.info.device_type {
        wgpu::DeviceType::Cpu if short_list(gpu, thorough) => return vec![default_variant(gpu, product, d)],
        wgpu::DeviceType::Cpu => Variant::CPU,
        _ => Variant::GPU,
    };
    all.iter().copied().filter(|&v| v.serves(product) && runs_on(gpu, v)).collect()
}

/// Whether only each kernel's default is a candidate: while training on a CPU adapter.
fn short_list(gpu: &Gpu, thorough: bool) -> bool {
    gpu.info.device_type == wgpu::DeviceType::Cpu && !thorough
}

/// The attention candidates at head size `hs`: every variant that runs here, but only the
/// default on a short list.
fn attention_candidates(gpu: &Gpu, thorough: bool, hs: u32) -> Vec<AttnVariant> {
    if short_list(gpu, thorough) {
        return vec![default_attention(gpu, hs)];
    }
    AttnVariant::ALL.iter().copied().filter(|v| v.runs_on(gpu, hs)).collect()
}

/// The class of `product` at `d`.
pub fn class_key(product: Product, d: Dims) -> String {
    let p2 = |x: u32| x.max(1).next_power_of_two();
    let (m, z) = if d.shared_weight { (d.m * d.batch, 1) } else { (d.m, d.batch) };
    let batch = if z > 1 { format!(" z{}", p2(z)) } else { String::new() };
    format!("{} {}x{}x{}{batch}", product.name(), p2(m), p2(d.n), p2(d.k))
}

/// The variant that runs `product` at `d`: the run's choice for its class, else the cache's,
/// else the fastest candidate timed now (when tuning), else the default.
/// `half` (bit 0 out, 1 a, 2 b) says which operands are f16: such a product is a class of its
/// own, timed on f16 operands.
pub fn choose(gpu: &Gpu, product: Product, d: Dims, binding_limit: u64, half: u8) -> Result<Variant, GpuError> {
    let fallback = {
        let t = gpu.tuning.lock().unwrap();
        let base = t.baselines.then_some(Variant::BASELINE);
        t.fallback.or(base).map_or_else(|| default_variant(gpu, product, d), |v| v.for_product(product))
    };
    let mut names: Vec<String> = candidates(gpu, product, d).iter().map(|v| v.to_string()).collect();
    // Cooperative matrices where the device has them and the operands are f16.
    if gpu.coop_matrix && half & 0b110 == 0b110 {
        names.push(Variant::Coop.to_string());
    }
    let key = class_key(product, d) + &half_suffix(half);
    let name = choose_by(gpu, key, fallback.to_string(), names.len(), || {
        let [out, a, b] = scratch(gpu, product, d)?;
        let ty = |buf, bit: u8| View::typed(buf, if half & (1 << bit) != 0 { Dtype::F16 } else { Dtype::F32 });
        let (out, a, b) = (ty(&out, 0), ty(&a, 1), ty(&b, 2));
        rank(gpu, &names, |name| {
            let mut mm = Matmul::with_variant(gpu, Variant::parse(name).expect("a candidate"));
            mm.binding_limit = binding_limit;
            match product {
                Product::Forward => mm.forward(out, a, b, None, d),
                Product::BackwardInput => mm.backward_input(out, a, b, d),
                Product::BackwardWeight => mm.backward_weight(out, a, b, d),
            }
        })
    })?;
    Ok(Variant::parse(&name).unwrap_or(fallback))
}

/// The key suffix of a class whose operands of mask `half` are f16 ("" for f32).
fn half_suffix(half: u8) -> String {
    if half == 0 {
        String::new()
    } else {
        format!(" f16:{half:03b}")
    }
}

/// The class of attention over (B, T) with C channels in NH heads.
pub fn attention_key(b: u32, t: u32, c: u32, nh: u32) -> String {
    let p2 = |x: u32| x.max(1).next_power_of_two();
    format!("attention t{} bh{} hs{}", p2(t), p2(b * nh), c / nh.max(1))
}

/// The attention variant for (B, T, C, NH), chosen as `choose` chooses, timing forward and
/// backward together.
pub fn choose_attention(gpu: &Gpu, b: u32, t: u32, c: u32, nh: u32, act: Dtype) -> Result<AttnVariant, GpuError> {
    let (fallback, thorough) = {
        let t = gpu.tuning.lock().unwrap();
        (if t.baselines { AttnVariant::Tiles16 } else { default_attention(gpu, c / nh.max(1)) }, t.thorough)
    };
    let hs = c / nh.max(1);
    let mut names: Vec<String> = attention_candidates(gpu, thorough, hs).iter().map(|v| v.to_string()).collect();
    if gpu.coop_matrix && act == Dtype::F16 && c.is_multiple_of(nh.max(1)) && (c / nh.max(1)).is_multiple_of(16) {
        names.push(AttnVariant::Coop.to_string());
    }
    let key = attention_key(b, t, c, nh) + if act == Dtype::F16 { " f16" } else { "" };
    let name = choose_by(gpu, key, fallback.to_string(), names.len(), || {
        let btc = b as u64 * t as u64 * c as u64;
        let bht = b as u64 * nh as u64 * t as u64;
        let f = |len: u64| gpu.pool.storage(Category::Scratch, 4 * len.max(1));
        let (qkv, dqkv, out, dout, lse, dd) = (f(3 * btc)?, f(3 * btc)?, f(btc)?, f(btc)?, f(bht)?, f(bht)?);
        let a = |buf| View::typed(buf, act);
        rank(gpu, &names, |name| {
            let v = AttnVariant::parse(name).expect("a candidate");
            let mut ops = vec![attention::forward_with(gpu, v, a(&out), (&lse).into(), a(&qkv), b, t, c, nh)?];
            let (g, o, q, l) = (a(&dout), a(&out), a(&qkv), (&lse).into());
            ops.extend(attention::backward_with(gpu, v, a(&dqkv), (&dd).into(), g, o, q, l, b, t, c, nh)?);
            Ok(ops)
        })
    })?;
    Ok(AttnVariant::parse(&name).unwrap_or(fallback))
}

/// The LayerNorm variant for N rows of C channels: one thread per row on CPU adapters (where
/// its barrier-free rows won), one workgroup per row on GPUs; timed where there are candidates.
pub fn choose_layernorm(gpu: &Gpu, n: u32, c: u32, act: Dtype) -> Result<LnVariant, GpuError> {
    let cpu = gpu.info.device_type == wgpu::DeviceType::Cpu;
    let (thorough, baselines) = {
        let t = gpu.tuning.lock().unwrap();
        (t.thorough, t.baselines)
    };
    let fallback = if cpu && !baselines { LnVariant::Rows } else { LnVariant::Workgroup };
    let names: Vec<String> = if short_list(gpu, thorough) {
        vec![fallback.name().to_string()]
    } else {
        LnVariant::ALL.iter().map(|v| v.name().to_string()).collect()
    };
    let key =
        format!("layernorm n{} c{c}{}", n.max(1).next_power_of_two(), if act == Dtype::F16 { " f16" } else { "" });
    let name = choose_by(gpu, key, fallback.name().to_string(), names.len(), || {
        let (nc, f) = (n as u64 * c as u64, |len: u64| gpu.pool.storage(Category::Scratch, 4 * len.max(1)));
        let (out, stats, inp, w, b) = (f(nc)?, f(2 * n as u64)?, f(nc)?, f(c as u64)?, f(c as u64)?);
        let (dinp, dw, db, dout) = (f(nc)?, f(c as u64)?, f(c as u64)?, f(nc)?);
        rank(gpu, &names, |name| {
            let v = LnVariant::parse(name).expect("a candidate");
            let a = |buf| View::typed(buf, act);
            let (o, s, x, wv, bv) = (a(&out), (&stats).into(), a(&inp), (&w).into(), (&b).into());
            let mut ops = vec![layernorm::forward_with(gpu, v, o, s, x, wv, bv, n, c)?];
            let (g, s2, x2) = (a(&dout), (&stats).into(), a(&inp));
            ops.extend(layernorm::backward_with(
                gpu,
                v,
                a(&dinp),
                (&dw).into(),
                (&db).into(),
                g,
                x2,
                s2,
                (&w).into(),
                n,
                c,
            )?);
            Ok(ops)
        })
    })?;
    Ok(LnVariant::parse(&name).unwrap_or(fallback))
}

/// How a product over a block-quantized weight runs: the fused dequantizing kernel
/// (kernels::quant), or the weight dequantized into a scratch copy and then the tuned dense
/// matmul (as bitsandbytes runs its 4-bit training products).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantPath {
    Fused,
    Dequant,
}

impl QuantPath {
    pub fn name(self) -> &'static str {
        match self {
            QuantPath::Fused => "fused",
            QuantPath::Dequant => "dequant",
        }
    }

    pub fn parse(name: &str) -> Result<Self, String> {
        [QuantPath::Fused, QuantPath::Dequant]
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| format!("{name:?} is not a quant path: fused or dequant"))
    }
}

/// The path of `product` (Forward or BackwardInput) at `d` over a `qtype` weight, `act` the
/// activations' type. CPU adapters take Dequant untimed: on lavapipe (Intel Xeon, 2 cores) it
/// ran SmolLM2's LoRA step 3× faster than the fused kernels. GPUs time both when tuning.
pub fn choose_quant(gpu: &Gpu, product: Product, d: Dims, qtype: QType, act: Dtype) -> Result<QuantPath, GpuError> {
    let thorough = gpu.tuning.lock().unwrap().thorough;
    let names: Vec<String> = match short_list(gpu, thorough) {
        true => vec![QuantPath::Dequant.name().into()],
        false => [QuantPath::Fused, QuantPath::Dequant].iter().map(|p| p.name().to_string()).collect(),
    };
    let half = if act == Dtype::F16 { 0b111 } else { 0 };
    // The dense product's own variant, chosen before the quant class's lock is taken.
    let dense = Matmul::new(gpu).variant_typed(product, d, half)?;
    let key = format!("quant {} {}{}", qtype.name(), class_key(product, d), half_suffix(half));
    let name = choose_by(gpu, key, QuantPath::Dequant.name().into(), names.len(), || {
        let (m, n, k) = (d.m as u64, d.n as u64, d.k as u64);
        let f = |len: u64| gpu.pool.storage(Category::Scratch, 4 * len.max(1));
        let (out, a, wf) = (f(m * n.max(k))?, f(m * n.max(k))?, f(n * k)?);
        let words = f(n * (k / 32) * qtype.gpu_words() as u64)?;
        let q = QView { buf: &words, offset: 0, qtype, rows: d.n, cols: d.k };
        let (t, mm) = (|buf| View::typed(buf, act), Matmul::with_variant(gpu, dense));
        rank(gpu, &names, |name| match (name == "fused", product) {
            (true, Product::Forward) => qk::forward(gpu, t(&out), t(&a), q, None, d.m),
            (true, _) => qk::backward_input(gpu, t(&out), t(&a), q, d.m, false),
            (false, Product::Forward) => {
                let mut ops = vec![qk::dequantize(gpu, t(&wf), q)?];
                ops.extend(mm.forward(t(&out), t(&a), t(&wf), None, d)?);
                Ok(ops)
            }
            (false, _) => {
                let mut ops = vec![qk::dequantize(gpu, t(&wf), q)?];
                ops.extend(mm.backward_input(t(&out), t(&a), t(&wf), d)?);
                Ok(ops)
            }
        })
    })?;
    Ok(QuantPath::parse(&name).unwrap_or(QuantPath::Dequant))
}

/// The run's choice for `key`, else the cache's (when tuning, from a list of at least
/// `candidates`), else `time`'s ranking, stored in the cache; else (not tuning) `default`.
/// Returns the variant's name.
fn choose_by(
    gpu: &Gpu,
    key: String,
    default: String,
    candidates: usize,
    time: impl FnOnce() -> Result<Entry, GpuError>,
) -> Result<String, GpuError> {
    let mut t = gpu.tuning.lock().unwrap();
    if let Some(v) = t.choices.get(&key) {
        return Ok(v.clone());
    }
    let cached = if t.tune { cache_entries(gpu, &mut t).get(&key).cloned() } else { None };
    let v = match cached {
        _ if !t.tune => default,
        Some(e) if e.candidates >= candidates => {
            t.found.insert(key.clone(), (e.clone(), true));
            e.best
        }
        // Nothing to choose from, and nothing cached: no timing, nothing stored.
        None if candidates < 2 => default,
        _ => {
            let e = time()?;
            cache_entries(gpu, &mut t).insert(key.clone(), e.clone());
            save_cache(gpu, &t);
            t.found.insert(key.clone(), (e.clone(), false));
            e.best
        }
    };
    t.choices.insert(key, v.clone());
    Ok(v)
}

/// Zeroed operands of one product: (output, a, b), as Matmul binds them.
fn scratch(gpu: &Gpu, product: Product, d: Dims) -> Result<[GpuBuffer; 3], GpuError> {
    let (z, m, n, k) = (d.batch as u64, d.m as u64, d.n as u64, d.k as u64);
    let zw = if d.shared_weight { 1 } else { z };
    let (out, a, b) = match product {
        Product::Forward => (z * m * n, z * m * k, zw * n * k),
        Product::BackwardInput => (z * m * k, z * m * n, zw * n * k),
        Product::BackwardWeight => (zw * n * k, z * m * n, z * m * k),
    };
    let f = |len: u64| gpu.pool.storage(Category::Scratch, 4 * len.max(1));
    Ok([f(out)?, f(a)?, f(b)?])
}

/// Times each candidate's dispatches (from `build`) for a few milliseconds and ranks them.
fn rank(
    gpu: &Gpu,
    names: &[String],
    mut build: impl FnMut(&str) -> Result<Vec<Dispatch>, GpuError>,
) -> Result<Entry, GpuError> {
    let mut timed: Vec<(f64, &String)> = Vec::new();
    for name in names {
        let ops = match build(name) {
            Ok(ops) => ops,
            // A driver that rejects one candidate's pipeline (cooperative matrices, say):
            // the others still compete.
            Err(e @ GpuError::Shader { .. }) if names.len() > 1 => {
                eprintln!("warning: tuning candidate {name} does not build here, skipped: {e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        let first = seconds(gpu, &ops, 1)?;
        if std::env::var_os("WGTRAIN_LOG_PIPELINES").is_some() {
            eprintln!("tune: {name}: first run {:.0} ms (compiles included)", first * 1e3);
        }
        let reps = ((BUDGET_S / first.max(1e-7)) as usize).clamp(1, 64);
        timed.push((seconds(gpu, &ops, reps)?, name));
    }
    timed.sort_by(|x, y| x.0.total_cmp(&y.0));
    if timed.is_empty() {
        return Err(GpuError::Unsupported("no tuning candidate builds on this adapter".into()));
    }
    let second = timed.get(1);
    Ok(Entry {
        best: timed[0].1.clone(),
        best_ms: timed[0].0 * 1e3,
        runner_up: second.map(|s| s.1.clone()),
        runner_up_ms: second.map(|s| s.0 * 1e3),
        candidates: names.len(),
    })
}

/// Seconds per run of `ops`, recorded `reps` times into one submit.
fn seconds(gpu: &Gpu, ops: &[Dispatch], reps: usize) -> Result<f64, GpuError> {
    let t = Instant::now();
    let mut rec = Recorder::new(gpu);
    for _ in 0..reps {
        rec.run(ops);
    }
    rec.submit()?;
    gpu.wait()?;
    Ok(t.elapsed().as_secs_f64() / reps as f64)
}

/// The cache file: WGTRAIN_CACHE_DIR, else the user's cache directory, then wgtrain/tune.json.
pub fn cache_path() -> Option<PathBuf> {
    cache_dir().map(|d| d.join("tune.json"))
}

/// wgtrain's cache directory (the tuner's choices, fetched models): WGTRAIN_CACHE_DIR, else
/// the user's cache directory's wgtrain/.
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = env("WGTRAIN_CACHE_DIR") {
        return Some(dir);
    }
    let base = if cfg!(windows) {
        env("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        env("HOME").map(|h| h.join("Library/Caches"))
    } else {
        env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache")))
    };
    base.map(|b| b.join("wgtrain"))
}

/// Names this adapter and driver in the cache.
fn adapter_key(gpu: &Gpu) -> String {
    let i = &gpu.info;
    format!("{:?} {:04x}:{:04x} {} | {} {}", i.backend, i.vendor, i.device, i.name, i.driver, i.driver_info)
}

/// Identifies the shaders as this GPU compiles them, preludes included: a new build of any of
/// them invalidates the timings.
fn shader_hash(gpu: &Gpu) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for s in Shader::ALL {
        h.update(s.source(gpu.subgroups).as_bytes());
    }
    format!("{:016x}", h.digest())
}

/// One adapter's part of the cache file.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct AdapterCache {
    shaders: String,
    classes: BTreeMap<String, Entry>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheFile {
    format: u32,
    adapters: BTreeMap<String, AdapterCache>,
}

/// Reads the whole cache file. A missing file is empty; a corrupt one is ignored with a
/// one-line warning (the next save replaces it).
fn read_cache_file(path: &std::path::Path) -> CacheFile {
    let empty = CacheFile { format: FORMAT, adapters: BTreeMap::new() };
    let Ok(text) = std::fs::read_to_string(path) else { return empty };
    match serde_json::from_str::<CacheFile>(&text) {
        Ok(f) if f.format == FORMAT => f,
        Ok(f) => {
            eprintln!("warning: tuning cache {} has format {}, not {FORMAT}; ignoring it", path.display(), f.format);
            empty
        }
        Err(e) => {
            eprintln!("warning: tuning cache {} is unreadable ({e}); ignoring it", path.display());
            empty
        }
    }
}

/// This adapter's cached classes, read once per process.
fn cache_entries<'t>(gpu: &Gpu, t: &'t mut Table) -> &'t mut BTreeMap<String, Entry> {
    let path = t.cache_file.clone().or_else(cache_path);
    t.cache.get_or_insert_with(|| {
        let Some(path) = path else { return BTreeMap::new() };
        let mut file = read_cache_file(&path);
        match file.adapters.remove(&adapter_key(gpu)) {
            Some(a) if a.shaders == shader_hash(gpu) => a.classes,
            Some(_) => {
                eprintln!("warning: tuning cache {} was made for other shaders; tuning again", path.display());
                BTreeMap::new()
            }
            None => BTreeMap::new(),
        }
    })
}

/// Writes this adapter's entries into the cache file (temporary file, then rename). A failure
/// costs only the next run's tuning time, so it is a warning.
fn save_cache(gpu: &Gpu, t: &Table) {
    let (Some(path), Some(classes)) = (t.cache_file.clone().or_else(cache_path), t.cache.as_ref()) else { return };
    let mut file = read_cache_file(&path);
    file.adapters.insert(adapter_key(gpu), AdapterCache { shaders: shader_hash(gpu), classes: classes.clone() });
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        std::fs::write(&tmp, serde_json::to_string_pretty(&file).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        eprintln!("warning: could not write the tuning cache {}: {e}", path.display());
    }
}
