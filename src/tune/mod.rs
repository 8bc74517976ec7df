//! Autotuning: which variant computes each matmul product, attention and LayerNorm at each
//! shape class on this adapter, and the kernels' calls that run in the chosen variant
//! (`tune::matmul::Matmul` and `tune::attention`, each the kernels' module with the choice
//! made first; a LayerNorm's caller passes `choose_layernorm`'s variant itself).
//!
//! A matmul shape class is the product with M, N and K rounded up to powers of two (and the
//! batch, for batched products with one weight per entry); an attention class is T and B·NH
//! rounded up, with the head size. The first time a run meets a class, the tuner
//! times every candidate for the adapter type on the real shape (a few milliseconds each),
//! keeps the fastest, and stores it in the GPU's table and its cache file
//! (`gpu::tuning`). Variants may sum in other orders, so the
//! choices belong to the run: they are saved in state.json and pinned again on --resume, and
//! under MPI rank 0's choices are sent to every rank. A tuning run over a whole model
//! (`wgtrain tune`) is the train layer's (`train::tune_model`).
//!
//! Layer: above kernels (whose variants it times and names), below optim and model; it uses
//! gpu, rng (the verification's random operands), formats and kernels.

pub mod attention;
pub mod matmul;
mod verify;

use verify::{fill, Verify};

use crate::kernels::Dispatches;
use std::collections::BTreeMap;

use crate::formats::QType;
use crate::gpu::tuning::{choose_by, Entry, Table};
use crate::gpu::{seconds_per_run, Category, Gpu, GpuBuffer, GpuError};
use crate::kernels::attention::AttnVariant;
use crate::kernels::layernorm::{self, LnVariant};
use crate::kernels::matmul::{runs_on, split_lanes, Dims, Matmul, Product, Variant};
use crate::kernels::quant::{self as qk, QView};
use crate::kernels::{Dtype, View};

/// Time spent on one candidate after its warm-up run, at least one run.
const BUDGET_S: f64 = 0.003;

/// The tuner's check on the plain table: `pin` takes a run's recorded choices (--resume, or
/// rank 0's under MPI) only where this build knows every name, since the run could not
/// otherwise continue bitwise.
pub trait Pin {
    fn pin(&mut self, choices: &BTreeMap<String, String>) -> Result<(), String>;
}

impl Pin for Table {
    fn pin(&mut self, choices: &BTreeMap<String, String>) -> Result<(), String> {
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
            self.insert(k.clone(), name.clone());
        }
        Ok(())
    }
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
    let (lr, lc) = Variant::LANES.extent(split_lanes(gpu).unwrap_or(8));
    if rows >= lr && cols >= lc && runs_on(gpu, Variant::LANES) {
        return Variant::LANES;
    }
    let split_rows = Variant::SPLIT.extent(8).0;
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
    if short_list(gpu, thorough) {
        return vec![default_variant(gpu, product, d)];
    }
    offered(gpu, product)
}

/// Every f32 variant of `product` that the tuner may choose on this adapter's type and that runs
/// here (`wgtrain check` runs them all).
pub fn offered(gpu: &Gpu, product: Product) -> Vec<Variant> {
    let all = if gpu.info.device_type == wgpu::DeviceType::Cpu { Variant::CPU } else { Variant::GPU };
    all.iter().copied().filter(|&v| v.serves(product) && runs_on(gpu, v)).collect()
}

/// The cooperative-matrix matmuls the tuner may choose here: one per fragment size the adapter
/// lists (a test may force another; the tuner never does).
pub fn coop_offered(gpu: &Gpu) -> Vec<Variant> {
    gpu.coop_fragments.iter().map(|&frag| Variant::Coop { frag }).filter(|&v| runs_on(gpu, v)).collect()
}

/// The cooperative-matrix attentions the tuner may choose here at head size `hs`.
pub fn coop_attention_offered(gpu: &Gpu, hs: u32) -> Vec<AttnVariant> {
    gpu.coop_fragments.iter().map(|&frag| AttnVariant::Coop { frag }).filter(|v| v.runs_on(gpu, hs)).collect()
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
        let f16 = half & 0b110 == 0b110;
        let f16_pin = t.fallback_f16.as_deref().filter(|_| f16);
        f16_pin
            .or(t.fallback.as_deref())
            .and_then(|n| Variant::parse(n).ok())
            .or(base)
            .map_or_else(|| default_variant(gpu, product, d), |v| v.for_product(product))
    };
    let mut names: Vec<String> = candidates(gpu, product, d).iter().map(|v| v.to_string()).collect();
    // Cooperative matrices where the device has them and the operands are f16.
    if half & 0b110 == 0b110 {
        names.extend(coop_offered(gpu).iter().map(|v| v.to_string()));
    }
    let key = class_key(product, d) + &half_suffix(half);
    let name = choose_by(gpu, key, fallback.to_string(), names.len(), || {
        let ([out, a, b], [lo, la, lb]) = scratch(gpu, product, d)?;
        let dt = |bit: u8| if half & (1 << bit) != 0 { Dtype::F16 } else { Dtype::F32 };
        fill(gpu, &a, dt(1), la, 1);
        fill(gpu, &b, dt(2), lb, 2);
        let verify = Verify::new(Variant::BASELINE, vec![(&out, dt(0), lo)]);
        let (out, a, b) = (View::typed(&out, dt(0)), View::typed(&a, dt(1)), View::typed(&b, dt(2)));
        rank(gpu, &names, Some(verify), |name| {
            let mut mm = Matmul::with_variant(gpu, Variant::parse(name).expect("a candidate"));
            mm.binding_limit = binding_limit;
            match product {
                Product::Forward => mm.forward(out, a, b, None, d),
                Product::BackwardInput => mm.backward_input(out, a, b, d, false),
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
    let hs = c / nh.max(1);
    let (fallback, thorough) = {
        let t = gpu.tuning.lock().unwrap();
        let runs =
            |v: &AttnVariant| v.runs_on(gpu, hs) && (act == Dtype::F16 || !matches!(v, AttnVariant::Coop { .. }));
        let pinned = t.attention_fallback.as_deref().and_then(|n| AttnVariant::parse(n).ok()).filter(runs);
        let default = if t.baselines { AttnVariant::Tiles16 } else { default_attention(gpu, hs) };
        (pinned.unwrap_or(default), t.thorough)
    };
    let mut names: Vec<String> = attention_candidates(gpu, thorough, hs).iter().map(|v| v.to_string()).collect();
    if act == Dtype::F16 && c.is_multiple_of(nh.max(1)) {
        names.extend(coop_attention_offered(gpu, hs).iter().map(|v| v.to_string()));
    }
    let key = attention_key(b, t, c, nh) + if act == Dtype::F16 { " f16" } else { "" };
    let name = choose_by(gpu, key, fallback.to_string(), names.len(), || {
        let btc = b as u64 * t as u64 * c as u64;
        let bht = b as u64 * nh as u64 * t as u64;
        let f = |len: u64| gpu.pool.storage(Category::Scratch, 4 * len.max(1));
        let (qkv, dqkv, out, dout, lse, dd) = (f(3 * btc)?, f(3 * btc)?, f(btc)?, f(btc)?, f(bht)?, f(bht)?);
        fill(gpu, &qkv, act, 3 * btc as usize, 3);
        fill(gpu, &dout, act, btc as usize, 4);
        let verify = Verify::new(AttnVariant::Tiles16, vec![(&out, act, btc as usize), (&dqkv, act, 3 * btc as usize)]);
        let a = |buf| View::typed(buf, act);
        rank(gpu, &names, Some(verify), |name| {
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
        let (nc, cu) = (nc as usize, c as usize);
        for (i, (buf, dtype, len)) in
            [(&inp, act, nc), (&w, Dtype::F32, cu), (&b, Dtype::F32, cu), (&dout, act, nc)].into_iter().enumerate()
        {
            fill(gpu, buf, dtype, len, 5 + i as u64);
        }
        let outputs = vec![(&out, act, nc), (&dinp, act, nc), (&dw, Dtype::F32, cu), (&db, Dtype::F32, cu)];
        rank(gpu, &names, Some(Verify::new(LnVariant::Workgroup.name(), outputs)), |name| {
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
    let dense = choose(gpu, product, d, gpu.max_binding(), half)?.for_product(product);
    let key = format!("quant {} {}{}", qtype.name(), class_key(product, d), half_suffix(half));
    let name = choose_by(gpu, key, QuantPath::Dequant.name().into(), names.len(), || {
        let (m, n, k) = (d.m as u64, d.n as u64, d.k as u64);
        let f = |len: u64| gpu.pool.storage(Category::Scratch, 4 * len.max(1));
        let (out, a, wf) = (f(m * n.max(k))?, f(m * n.max(k))?, f(n * k)?);
        let words = f(n * (k / 32) * qtype.gpu_words() as u64)?;
        let q = QView { buf: &words, offset: 0, qtype, rows: d.n, cols: d.k };
        let (t, mm) = (|buf| View::typed(buf, act), Matmul::with_variant(gpu, dense));
        // Both paths dequantize the same blocks; the dense matmul they feed was verified in its class.
        rank(gpu, &names, None, |name| match (name == "fused", product) {
            (true, Product::Forward) => qk::forward(gpu, t(&out), t(&a), q, None, d.m),
            (true, _) => qk::backward_input(gpu, t(&out), t(&a), q, d.m, false),
            (false, Product::Forward) => {
                let mut ops = vec![qk::dequantize(gpu, t(&wf), q)?];
                ops.extend(mm.forward(t(&out), t(&a), t(&wf), None, d)?);
                Ok(ops)
            }
            (false, _) => {
                let mut ops = vec![qk::dequantize(gpu, t(&wf), q)?];
                ops.extend(mm.backward_input(t(&out), t(&a), t(&wf), d, false)?);
                Ok(ops)
            }
        })
    })?;
    Ok(QuantPath::parse(&name).unwrap_or(QuantPath::Dequant))
}

/// Zeroed operands of one product: (output, a, b), as Matmul binds them, and their lengths.
fn scratch(gpu: &Gpu, product: Product, d: Dims) -> Result<([GpuBuffer; 3], [usize; 3]), GpuError> {
    let (z, m, n, k) = (d.batch as u64, d.m as u64, d.n as u64, d.k as u64);
    let zw = if d.shared_weight { 1 } else { z };
    let (out, a, b) = match product {
        Product::Forward => (z * m * n, z * m * k, zw * n * k),
        Product::BackwardInput => (z * m * k, z * m * n, zw * n * k),
        Product::BackwardWeight => (zw * n * k, z * m * n, z * m * k),
    };
    let f = |len: u64| gpu.pool.storage(Category::Scratch, 4 * len.max(1));
    Ok(([f(out)?, f(a)?, f(b)?], [out as usize, a as usize, b as usize]))
}

/// Times each candidate's dispatches (from `build`) for a few milliseconds and ranks them.
/// Times each candidate's dispatches (from `build`) for a few milliseconds and ranks them,
/// after `verify` (where given) has dropped those whose outputs differ from its reference's.
fn rank(
    gpu: &Gpu,
    names: &[String],
    mut verify: Option<Verify>,
    mut build: impl FnMut(&str) -> Dispatches,
) -> Result<Entry, GpuError> {
    if let Some(v) = &mut verify {
        let ops = build(&v.reference)?;
        v.prime(gpu, &ops)?;
    }
    let (mut timed, mut rejected): (Vec<(f64, &String)>, Vec<String>) = (Vec::new(), Vec::new());
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
        if let Some(why) = verify.as_ref().map(|v| v.mismatch(gpu, &ops)).transpose()?.flatten() {
            eprintln!("warning: tuning candidate {name} computes wrong values on this adapter ({why}); dropped");
            rejected.push(name.clone());
            continue;
        }
        let first = seconds_per_run(gpu, &ops, 1)?;
        if std::env::var_os("WGTRAIN_LOG_PIPELINES").is_some() {
            eprintln!("tune: {name}: first run {:.0} ms (compiles included)", first * 1e3);
        }
        let reps = ((BUDGET_S / first.max(1e-7)) as usize).clamp(1, 64);
        timed.push((seconds_per_run(gpu, &ops, reps)?, name));
    }
    timed.sort_by(|x, y| x.0.total_cmp(&y.0));
    if timed.is_empty() {
        return Err(GpuError::Unsupported("no tuning candidate builds and computes right on this adapter".into()));
    }
    let second = timed.get(1);
    Ok(Entry {
        best: timed[0].1.clone(),
        best_ms: timed[0].0 * 1e3,
        runner_up: second.map(|s| s.1.clone()),
        runner_up_ms: second.map(|s| s.0 * 1e3),
        candidates: names.len(),
        rejected,
    })
}
