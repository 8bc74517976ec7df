//! `wgtrain check`: every kernel variant the tuner may choose on this adapter (the matmul's
//! three products, attention forward and backward, LayerNorm forward and backward), run
//! against the plain-loop CPU reference at awkward sizes with its outputs pre-filled with NaN
//! (outputs that accumulate start from random values the reference adds to), in f32 and f16.
//! One row per kernel, variant, dtype and size: pass or fail, the worst error as a fraction of
//! its bound, the time. A driver that computes one variant wrongly shows here before a run
//! trusts it.
//!
//! Layer: the top, beside bench; it uses gpu, kernels, tune and the reference oracle.

use std::collections::{BTreeMap, BTreeSet};

use crate::gpu::tuning::Checked;
use crate::gpu::{seconds_per_run, Category, Dispatch, Gpu, GpuBuffer, GpuError, Recorder};
use crate::kernels::attention::{self, AttnVariant};
use crate::kernels::layernorm::{self, LnVariant};
use crate::kernels::{Dtype, View};
use crate::reference;
use crate::rng::Rng;
use crate::tune::matmul::{Dims, Matmul, Product, Variant};

/// One kernel, variant, dtype and size.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    pub kernel: String,
    pub variant: String,
    pub dtype: &'static str,
    pub size: String,
    pub pass: bool,
    /// The largest |got − want| / (atol + rtol·|want|) over the outputs: at most 1 passes.
    pub worst: f32,
    pub ms: f64,
}

/// Every row on `gpu` for `dtypes`; `quick` takes one awkward size per kernel.
pub fn run(gpu: &Gpu, dtypes: &[Dtype], quick: bool) -> Result<Vec<Row>, GpuError> {
    let mut rows = Vec::new();
    for &dt in dtypes {
        rows.extend(matmuls(gpu, dt, quick)?);
        rows.extend(attentions(gpu, dt, quick)?);
        rows.extend(layernorms(gpu, dt, quick)?);
    }
    Ok(rows)
}

/// `--quick`'s one awkward size for the matmuls (M, N, K) and LayerNorm (rows, channels); the
/// quick attention takes T 33 over two heads (`train`'s check at the run's head size).
const QUICK_MATMUL: (usize, usize, usize) = (17, 33, 65);
const QUICK_LAYERNORM: (usize, usize) = (33, 65);

/// A kernel variant that a run's choices name, in the dtype its class computes in.
enum Used {
    Matmul(Product, Variant, Dtype),
    /// With the head size, which shapes the attention kernels.
    Attention(AttnVariant, Dtype, u32),
    LayerNorm(LnVariant, Dtype),
}

impl Used {
    /// The variant of the tuning table's class `key` named `name` (None for classes that name
    /// no kernel of their own: a quantized product's path runs the dense matmul of its class).
    fn of(key: &str, name: &str) -> Option<Used> {
        let dt = |f16: bool| if f16 { Dtype::F16 } else { Dtype::F32 };
        if key.starts_with("attention") {
            let hs = key.split(' ').find_map(|w| w.strip_prefix("hs")?.parse().ok())?;
            return Some(Used::Attention(AttnVariant::parse(name).ok()?, dt(key.ends_with(" f16")), hs));
        }
        if key.starts_with("layernorm") {
            return Some(Used::LayerNorm(LnVariant::parse(name).ok()?, dt(key.ends_with(" f16"))));
        }
        let product = Product::parse(key.split(' ').next()?)?;
        // " f16:MASK" (bit 0 out, 1 a, 2 b): f16 operands make an f16 product.
        let mask = key.rsplit_once(" f16:").and_then(|(_, m)| u8::from_str_radix(m, 2).ok()).unwrap_or(0);
        let v = Variant::parse(name).ok()?.for_product(product);
        Some(Used::Matmul(product, v, dt(mask & 0b110 == 0b110)))
    }

    fn label(&self) -> String {
        match self {
            Used::Matmul(p, v, dt) => format!("matmul {} {v} {}", p.name(), dtype_name(*dt)),
            Used::Attention(v, dt, hs) => format!("attention {v} hs{hs} {}", dtype_name(*dt)),
            Used::LayerNorm(v, dt) => format!("layernorm {} {}", v.name(), dtype_name(*dt)),
        }
    }

    /// Its row at `wgtrain check --quick`'s size (attention at the run's head size).
    fn row(&self, gpu: &Gpu) -> Result<Row, GpuError> {
        match *self {
            Used::Matmul(p, v, dt) => matmul_row(gpu, p, v, dt, QUICK_MATMUL),
            Used::Attention(v, dt, hs) => attention_row(gpu, v, dt, (1, 33, 2 * hs as usize, 2)),
            Used::LayerNorm(v, dt) => layernorm_row(gpu, v, dt, QUICK_LAYERNORM),
        }
    }
}

/// The quick check of the variants a run is about to use (`choices`: the tuning table's class
/// keys and variant names), less those in `done`: one row per kernel, variant and dtype.
/// `train` runs it before its first step (`gpu::tuning::preflight`).
pub fn preflight(
    gpu: &Gpu,
    choices: &BTreeMap<String, String>,
    done: &BTreeSet<String>,
) -> Result<Vec<Checked>, GpuError> {
    let mut seen = done.clone();
    let mut rows = Vec::new();
    for used in choices.iter().filter_map(|(k, n)| Used::of(k, n)) {
        let label = used.label();
        if seen.insert(label.clone()) {
            let r = used.row(gpu)?;
            rows.push(Checked { label, pass: r.pass, worst: r.worst });
        }
    }
    Ok(rows)
}

/// (atol, rtol) of a kernel's outputs in `dt`: f32 sums in another order than the reference's
/// f64; f16 adds one rounding of the output.
fn bounds(dt: Dtype) -> (f32, f32) {
    match dt {
        Dtype::F32 => (1e-4, 1e-4),
        Dtype::F16 => (4e-3, 4e-3),
    }
}

fn dtype_name(dt: Dtype) -> &'static str {
    match dt {
        Dtype::F32 => "f32",
        Dtype::F16 => "f16",
    }
}

/// Random values in [-1, 1) that `dt` holds exactly, so the reference sees what the GPU sees.
fn values(rng: &mut Rng, len: usize, dt: Dtype) -> Vec<f32> {
    let v = rng.vec(len);
    match dt {
        Dtype::F32 => v,
        Dtype::F16 => v.into_iter().map(|x| half::f16::from_f32(x).to_f32()).collect(),
    }
}

/// A buffer holding `v` as `dt`.
fn upload(gpu: &Gpu, v: &[f32], dt: Dtype) -> Result<GpuBuffer, GpuError> {
    let buf = gpu.pool.storage(Category::Scratch, 4 * v.len().max(1) as u64)?;
    match dt {
        Dtype::F32 => gpu.write(&buf, 0, v),
        Dtype::F16 => gpu.write_f16(&buf, v),
    }
    Ok(buf)
}

fn nans(gpu: &Gpu, len: usize, dt: Dtype) -> Result<GpuBuffer, GpuError> {
    upload(gpu, &vec![f32::NAN; len], dt)
}

fn read(gpu: &Gpu, buf: &GpuBuffer, len: usize, dt: Dtype) -> Result<Vec<f32>, GpuError> {
    match dt {
        Dtype::F32 => gpu.read(buf, 0, len),
        Dtype::F16 => gpu.read_f16(buf, 0, len),
    }
}

/// The worst error over `pairs` of (got, want) as a fraction of `dt`'s bound (∞ for NaN).
fn worst(pairs: &[(Vec<f32>, Vec<f32>)], dt: Dtype) -> f32 {
    let (atol, rtol) = bounds(dt);
    let excess = |(g, w): (&f32, &f32)| {
        let e = (g - w).abs() / (atol + rtol * w.abs());
        if e.is_nan() {
            f32::INFINITY
        } else {
            e
        }
    };
    pairs.iter().flat_map(|(g, w)| g.iter().zip(w).map(excess)).fold(0.0, f32::max)
}

/// Runs `ops` once, then the row of their outputs (read by `outputs`) against `want`, within
/// the bounds of `bound_dt` (the outputs' type) and labelled with the kernel's `dt`.
fn row(
    gpu: &Gpu,
    (kernel, variant, size): (String, String, String),
    (dt, bound_dt): (Dtype, Dtype),
    ops: &[Dispatch],
    outputs: impl FnOnce() -> Result<Vec<Vec<f32>>, GpuError>,
    want: Vec<Vec<f32>>,
) -> Result<Row, GpuError> {
    let mut rec = Recorder::new(gpu);
    rec.run(ops);
    rec.submit()?;
    gpu.wait()?;
    let pairs: Vec<_> = outputs()?.into_iter().zip(want).collect();
    let worst = worst(&pairs, bound_dt);
    // A second run, its pipelines built: the kernels' own time.
    let ms = seconds_per_run(gpu, ops, 1)? * 1e3;
    let dtype = dtype_name(dt);
    Ok(Row { kernel, variant, dtype, size, pass: worst <= 1.0, worst, ms })
}

/// The matmul variants the tuner may choose for `product` here, cooperative matrices in f16.
fn matmul_variants(gpu: &Gpu, product: Product, dt: Dtype) -> Vec<Variant> {
    let mut v = crate::tune::offered(gpu, product);
    if dt == Dtype::F16 {
        v.extend(crate::tune::coop_offered(gpu));
    }
    v
}

fn matmuls(gpu: &Gpu, dt: Dtype, quick: bool) -> Result<Vec<Row>, GpuError> {
    let sizes: &[(usize, usize, usize)] =
        if quick { &[QUICK_MATMUL] } else { &[(1, 1, 1), QUICK_MATMUL, (37, 29, 70)] };
    let mut rows = Vec::new();
    for &(m, n, k) in sizes {
        for product in Product::ALL {
            for v in matmul_variants(gpu, product, dt) {
                rows.push(matmul_row(gpu, product, v, dt, (m, n, k))?);
            }
        }
    }
    Ok(rows)
}

/// One product in one variant: out = a·bᵀ (forward), dinp = dout·W, or dW += doutᵀ·inp.
fn matmul_row(
    gpu: &Gpu,
    product: Product,
    v: Variant,
    dt: Dtype,
    (m, n, k): (usize, usize, usize),
) -> Result<Row, GpuError> {
    let mut rng = Rng::new(7);
    let (lo, la, lb) = match product {
        Product::Forward => (m * n, m * k, n * k),
        Product::BackwardInput => (m * k, m * n, n * k),
        Product::BackwardWeight => (n * k, m * n, m * k),
    };
    // Mixed precision keeps parameter gradients (dW) in f32.
    let odt = if product == Product::BackwardWeight { Dtype::F32 } else { dt };
    let (a, b) = (values(&mut rng, la, dt), values(&mut rng, lb, dt));
    let init = if product == Product::BackwardWeight { values(&mut rng, lo, odt) } else { vec![f32::NAN; lo] };
    let (ga, gb, go) = (upload(gpu, &a, dt)?, upload(gpu, &b, dt)?, upload(gpu, &init, odt)?);
    let (o, x, y) = (View::typed(&go, odt), View::typed(&ga, dt), View::typed(&gb, dt));
    let d = Dims::linear(m as u32, n as u32, k as u32);
    let mm = Matmul::with_variant(gpu, v);
    let mut want = init.clone();
    let ops = match product {
        Product::Forward => {
            reference::matmul::forward(&mut want, &a, &b, None, m, n, k);
            mm.forward(o, x, y, None, d)?
        }
        Product::BackwardInput => {
            reference::matmul::backward_input(&mut want, &a, &b, m, n, k);
            mm.backward_input(o, x, y, d)?
        }
        Product::BackwardWeight => {
            reference::matmul::backward_weight(&mut want, &a, &b, m, n, k);
            mm.backward_weight(o, x, y, d)?
        }
    };
    let what = (format!("matmul {}", product.name()), v.to_string(), format!("{m}x{n}x{k}"));
    row(gpu, what, (dt, odt), &ops, || Ok(vec![read(gpu, &go, lo, odt)?]), vec![want])
}

fn attentions(gpu: &Gpu, dt: Dtype, quick: bool) -> Result<Vec<Row>, GpuError> {
    let shapes: &[(usize, usize, usize, usize)] =
        if quick { &[(1, 33, 64, 2)] } else { &[(1, 1, 16, 1), (2, 17, 48, 3), (1, 33, 64, 2)] };
    let mut rows = Vec::new();
    for &(b, t, c, nh) in shapes {
        let hs = (c / nh) as u32;
        let mut variants: Vec<AttnVariant> = AttnVariant::ALL.iter().copied().filter(|v| v.runs_on(gpu, hs)).collect();
        if dt == Dtype::F16 {
            variants.extend(crate::tune::coop_attention_offered(gpu, hs));
        }
        for v in variants {
            rows.push(attention_row(gpu, v, dt, (b, t, c, nh))?);
        }
    }
    Ok(rows)
}

/// Attention forward (out) and backward (dqkv) in one variant.
fn attention_row(
    gpu: &Gpu,
    v: AttnVariant,
    dt: Dtype,
    (b, t, c, nh): (usize, usize, usize, usize),
) -> Result<Row, GpuError> {
    let mut rng = Rng::new(11);
    let (qkv, dout) = (values(&mut rng, 3 * b * t * c, dt), values(&mut rng, b * t * c, dt));
    let (gq, gd) = (upload(gpu, &qkv, dt)?, upload(gpu, &dout, dt)?);
    let (go, gdq) = (nans(gpu, b * t * c, dt)?, nans(gpu, 3 * b * t * c, dt)?);
    let (lse, dd) = (nans(gpu, b * nh * t, Dtype::F32)?, nans(gpu, b * nh * t, Dtype::F32)?);
    let s = |x: usize| x as u32;
    let a = |buf| View::typed(buf, dt);
    let mut ops = vec![attention::forward_with(gpu, v, a(&go), (&lse).into(), a(&gq), s(b), s(t), s(c), s(nh))?];
    let io = (a(&gd), a(&go), a(&gq), (&lse).into());
    ops.extend(attention::backward_with(
        gpu,
        v,
        a(&gdq),
        (&dd).into(),
        io.0,
        io.1,
        io.2,
        io.3,
        s(b),
        s(t),
        s(c),
        s(nh),
    )?);
    let (mut out, mut dqkv) = (vec![0.0; b * t * c], vec![0.0; 3 * b * t * c]);
    reference::attention::forward(&mut out, &qkv, b, t, c, nh);
    reference::attention::backward(&mut dqkv, &dout, &qkv, b, t, c, nh);
    let outputs = || Ok(vec![read(gpu, &go, b * t * c, dt)?, read(gpu, &gdq, 3 * b * t * c, dt)?]);
    row(
        gpu,
        ("attention".into(), v.to_string(), format!("b{b} t{t} c{c} nh{nh}")),
        (dt, dt),
        &ops,
        outputs,
        vec![out, dqkv],
    )
}

fn layernorms(gpu: &Gpu, dt: Dtype, quick: bool) -> Result<Vec<Row>, GpuError> {
    let sizes: &[(usize, usize)] = if quick { &[QUICK_LAYERNORM] } else { &[(1, 1), QUICK_LAYERNORM, (7, 768)] };
    let mut rows = Vec::new();
    for &(n, c) in sizes {
        for &v in LnVariant::ALL {
            rows.push(layernorm_row(gpu, v, dt, (n, c))?);
        }
    }
    Ok(rows)
}

/// LayerNorm forward (out) and backward (dinp +=, dw +=, db +=) in one variant.
fn layernorm_row(gpu: &Gpu, v: LnVariant, dt: Dtype, (n, c): (usize, usize)) -> Result<Row, GpuError> {
    let mut rng = Rng::new(13);
    let (x, dout, dinp0) = (values(&mut rng, n * c, dt), values(&mut rng, n * c, dt), values(&mut rng, n * c, dt));
    let (w, bias) = (rng.vec(c), rng.vec(c));
    let (dw0, db0) = (rng.vec(c), rng.vec(c));
    let (gx, gd, gdi) = (upload(gpu, &x, dt)?, upload(gpu, &dout, dt)?, upload(gpu, &dinp0, dt)?);
    let f = |v: &[f32]| upload(gpu, v, Dtype::F32);
    let (gw, gb, gdw, gdb) = (f(&w)?, f(&bias)?, f(&dw0)?, f(&db0)?);
    let (go, stats) = (nans(gpu, n * c, dt)?, nans(gpu, 2 * n, Dtype::F32)?);
    let a = |buf| View::typed(buf, dt);
    let (n32, c32) = (n as u32, c as u32);
    let mut ops =
        vec![layernorm::forward_with(gpu, v, a(&go), (&stats).into(), a(&gx), (&gw).into(), (&gb).into(), n32, c32)?];
    let grads = (a(&gdi), (&gdw).into(), (&gdb).into());
    let (s, wv) = ((&stats).into(), (&gw).into());
    ops.extend(layernorm::backward_with(gpu, v, grads.0, grads.1, grads.2, a(&gd), a(&gx), s, wv, n32, c32)?);
    let mut out = vec![0.0; n * c];
    let st = reference::layernorm::forward(&mut out, &x, &w, &bias, n, c);
    let (mut dinp, mut dw, mut db) = (dinp0, dw0, db0);
    reference::layernorm::backward(&mut dinp, &mut dw, &mut db, &dout, &x, &w, &st, n, c);
    let outputs = || {
        let r32 = |buf| read(gpu, buf, c, Dtype::F32);
        Ok(vec![read(gpu, &go, n * c, dt)?, read(gpu, &gdi, n * c, dt)?, r32(&gdw)?, r32(&gdb)?])
    };
    row(
        gpu,
        ("layernorm".into(), v.name().to_string(), format!("n{n} c{c}")),
        (dt, dt),
        &ops,
        outputs,
        vec![out, dinp, dw, db],
    )
}

/// The rows as a table, one line each, with the worst error and the time.
pub fn print(rows: &[Row], json: bool) -> Result<(), serde_json::Error> {
    if json {
        for r in rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!("{:<24} {:<20} {:<5} {:<16} {:<5} {:>9} {:>9}", "kernel", "variant", "dtype", "size", "", "worst", "ms");
    for r in rows {
        let verdict = if r.pass { "pass" } else { "FAIL" };
        println!(
            "{:<24} {:<20} {:<5} {:<16} {verdict:<5} {:>9.3} {:>9.2}",
            r.kernel, r.variant, r.dtype, r.size, r.worst, r.ms
        );
    }
    Ok(())
}
