//! Matmul variants: the register-blocked kernels for CPU adapters and the workgroup-tiled one
//! for GPUs, each a set of override constants of shaders/matmul.wgsl. The autotuner picks one
//! per product and shape class; benches and tests pin them by name.

use std::fmt;

use crate::gpu::Gpu;

/// The three products that have variants (the bias gradient is a reduction with one kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Product {
    /// out (M, N) = inp (M, K) · W (N, K)ᵀ
    Forward,
    /// dinp (M, K) = dout (M, N) · W (N, K)
    BackwardInput,
    /// dW (N, K) += dout (M, N)ᵀ · inp (M, K)
    BackwardWeight,
}

impl Product {
    pub const ALL: [Product; 3] = [Product::Forward, Product::BackwardInput, Product::BackwardWeight];

    /// The entry point of the register-blocked kernel, also the label of every variant's dispatch.
    pub fn entry(self) -> &'static str {
        match self {
            Product::Forward => "matmul_forward",
            Product::BackwardInput => "matmul_backward_input",
            Product::BackwardWeight => "matmul_backward_weight",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Product::Forward => "forward",
            Product::BackwardInput => "backward_input",
            Product::BackwardWeight => "backward_weight",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// One way to compute a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// No workgroup memory: each thread owns rm × rn outputs (4 or 8 each), a workgroup
    /// wg.0 × wg.1 threads.
    Reg { rm: u32, rn: u32, wg: (u32, u32) },
    /// Workgroup-memory tiles: bm × bn outputs per workgroup, inner steps of bk, tm × tn
    /// outputs per thread.
    Tiled { bm: u32, bn: u32, bk: u32, tm: u32, tn: u32 },
    /// Cooperative matrices (shaders/matmul_coop.wgsl): 2·frag × 2·frag outputs per workgroup
    /// of one subgroup, as four frag × frag × frag f16 fragments with f32 accumulation (frag 8
    /// or 16). f16 operands only, on devices with EXPERIMENTAL_COOPERATIVE_MATRIX.
    Coop { frag: u32 },
    /// Split-k forward (shaders/matmul_split.wgsl), for CPU adapters: the threads of one
    /// subgroup share an rm × rn block and walk k together, so their loads are consecutive;
    /// `SPLIT_ROWS / rm` of them make a workgroup. Forward only: the backward products run the
    /// baseline. Needs SUBGROUP with one subgroup size.
    Split { rm: u32, rn: u32 },
    /// Lane-parallel (shaders/matmul_lanes.wgsl), for CPU adapters: a workgroup of one subgroup
    /// (L lanes, the device's one subgroup size: `split_lanes`) owns rm whole rows and L·rn
    /// columns, each thread every L-th column, so the left operand's loads are shared by the
    /// SIMD batch and the right one's consecutive.
    Lanes { rm: u32, rn: u32 },
}

/// Output rows of a split-k workgroup.
const SPLIT_ROWS: u32 = 64;

/// Workgroup memory of one tile in the shader (TILE_MAX floats): bk·(bm + 1) must fit.
const TILE_MAX: u32 = 1040;

impl Variant {
    /// Today's kernel before variants existed: 4×4 per thread, 8×8 threads. The benchmarks'
    /// baseline.
    pub const BASELINE: Variant = Variant::Reg { rm: 4, rn: 4, wg: (8, 8) };

    /// What the CPU adapters' tuner times: a short list, since every candidate costs an LLVM
    /// pipeline compile there.
    pub const CPU: &'static [Variant] = &[
        Variant::BASELINE,
        Variant::Reg { rm: 8, rn: 4, wg: (8, 8) },
        Variant::SPLIT,
        Variant::LANES,
        Variant::Lanes { rm: 16, rn: 4 },
        Variant::Lanes { rm: 8, rn: 8 },
    ];

    /// The CPU adapters' default for every product where the device can run it: 2.1-2.7× the
    /// baseline at the shapes of models/bench-cpu.toml on lavapipe (AMD EPYC).
    pub const LANES: Variant = Variant::Lanes { rm: 16, rn: 8 };

    /// The CPU adapters' forward where the device can run it: 1.6-1.7× the baseline at 1024³ on
    /// lavapipe (AMD EPYC), against 1.08× for the best register-blocked variant.
    pub const SPLIT: Variant = Variant::Split { rm: 16, rn: 8 };

    /// Whether this variant computes `product` itself (a split-k variant only the forward).
    pub fn serves(self, product: Product) -> bool {
        !matches!(self, Variant::Split { .. }) || product == Product::Forward
    }

    /// What runs `product` when this variant is pinned: itself, or the baseline where it does
    /// not serve the product.
    pub fn for_product(self, product: Product) -> Variant {
        if self.serves(product) {
            self
        } else {
            Self::BASELINE
        }
    }

    /// What the GPUs' tuner times.
    pub const GPU: &'static [Variant] = &[
        Variant::Tiled { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
        Variant::Tiled { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 },
        Variant::Tiled { bm: 128, bn: 64, bk: 8, tm: 8, tn: 4 },
        Variant::Tiled { bm: 64, bn: 128, bk: 8, tm: 4, tn: 8 },
        Variant::Tiled { bm: 32, bn: 32, bk: 16, tm: 2, tn: 2 },
        Variant::Reg { rm: 4, rn: 4, wg: (16, 16) },
    ];

    /// Other shapes of the same kernels, for `bench matmul --variant` (tested, not tuned: they
    /// lost on the adapters measured, and cost long compiles on CPU adapters). split4x4's block
    /// has fewer vec4 than lavapipe's subgroup has threads, so it runs the split kernel's
    /// subgroupAdd sums instead of its reduce-scatter.
    pub const EXTRA: &'static [Variant] = &[
        Variant::Reg { rm: 8, rn: 8, wg: (8, 4) },
        Variant::Reg { rm: 4, rn: 8, wg: (8, 8) },
        Variant::Split { rm: 4, rn: 4 },
        Variant::Split { rm: 8, rn: 8 },
        Variant::Lanes { rm: 1, rn: 1 },
        Variant::Lanes { rm: 5, rn: 3 },
    ];

    /// The cooperative-matrix variants, one per fragment size: the tuner offers those whose
    /// fragments the adapter lists (`Gpu::coop_fragments`).
    pub const COOP: &'static [Variant] = &[Variant::Coop { frag: 8 }, Variant::Coop { frag: 16 }];

    /// Every variant the tuner may pick on any adapter, and the extra ones.
    pub fn all() -> Vec<Variant> {
        let mut v: Vec<Variant> = Self::CPU.to_vec();
        v.extend(Self::GPU.iter().chain(Self::EXTRA).filter(|g| !Self::CPU.contains(g)));
        v
    }

    /// Output rows and columns one workgroup covers, on a device whose subgroups have `lanes`
    /// lanes (`split_lanes`; the lane-parallel variants' columns depend on it).
    pub fn extent(self, lanes: u32) -> (u32, u32) {
        match self {
            Variant::Reg { rm, rn, wg } => (rm * wg.1, rn * wg.0),
            Variant::Tiled { bm, bn, .. } => (bm, bn),
            Variant::Coop { frag } => (2 * frag, 2 * frag),
            Variant::Split { rn, .. } => (SPLIT_ROWS, rn),
            Variant::Lanes { rm, rn } => (rm, lanes * rn),
        }
    }

    /// Parses a name as `name()` writes it: `reg4x4-wg8x8` or `tile64x64x16-t4x4`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let err = || {
            format!("{s:?} is not a matmul variant: reg<RM>x<RN>-wg<X>x<Y> (RM, RN 4 or 8), tile<BM>x<BN>x<BK>-t<TM>x<TN>, split<RM>x<RN> (RM 4, 8 or 16, RN 4 or 8), lanes<RM>x<RN>, coop16x16-k8 or coop32x32-k16, e.g. reg4x4-wg8x8, tile64x64x16-t4x4 or split16x8")
        };
        if let Some(&v) = Self::COOP.iter().find(|v| v.to_string() == s) {
            return Ok(v);
        }
        let nums = |t: &str| -> Option<Vec<u32>> { t.split('x').map(|x| x.parse().ok()).collect() };
        let split = s.strip_prefix("split").map(|h| (h, true));
        if let Some((h, is_split)) = split.or_else(|| s.strip_prefix("lanes").map(|h| (h, false))) {
            let v = match nums(h).as_deref() {
                Some(&[rm, rn]) if is_split => Variant::Split { rm, rn },
                Some(&[rm, rn]) => Variant::Lanes { rm, rn },
                _ => return Err(err()),
            };
            v.check().map_err(|why| format!("{s:?}: {why}"))?;
            return Ok(v);
        }
        let (head, tail) = s.split_once('-').ok_or_else(err)?;
        let v = if let (Some(h), Some(t)) = (head.strip_prefix("reg"), tail.strip_prefix("wg")) {
            match (nums(h).as_deref(), nums(t).as_deref()) {
                (Some(&[rm, rn]), Some(&[x, y])) => Variant::Reg { rm, rn, wg: (x, y) },
                _ => return Err(err()),
            }
        } else if let (Some(h), Some(t)) = (head.strip_prefix("tile"), tail.strip_prefix('t')) {
            match (nums(h).as_deref(), nums(t).as_deref()) {
                (Some(&[bm, bn, bk]), Some(&[tm, tn])) => Variant::Tiled { bm, bn, bk, tm, tn },
                _ => return Err(err()),
            }
        } else {
            return Err(err());
        };
        v.check().map_err(|why| format!("{s:?}: {why}"))?;
        Ok(v)
    }

    /// Whether the shader can run this variant.
    pub fn check(self) -> Result<(), String> {
        match self {
            Variant::Reg { rm, rn, wg } => {
                if ![4, 8].contains(&rm) || ![4, 8].contains(&rn) {
                    return Err("register tiles are 4 or 8 on a side".into());
                }
                if wg.0 == 0 || wg.1 == 0 || wg.0 * wg.1 > 1024 {
                    return Err("a workgroup has 1 to 1024 threads".into());
                }
            }
            Variant::Tiled { bm, bn, bk, tm, tn } => {
                if ![1, 2, 4, 8].contains(&tm) || ![1, 2, 4, 8].contains(&tn) {
                    return Err("thread tiles are 1, 2, 4 or 8 on a side".into());
                }
                if bm == 0 || bn == 0 || bk == 0 || bm % tm != 0 || bn % tn != 0 {
                    return Err("a tile's sides are positive multiples of the thread tile".into());
                }
                if bk * (bm + 1) > TILE_MAX || bk * (bn + 1) > TILE_MAX {
                    return Err(format!("BK·(BM + 1) and BK·(BN + 1) must be at most {TILE_MAX}"));
                }
                if (bm / tm) * (bn / tn) > 1024 {
                    return Err("a workgroup has 1 to 1024 threads".into());
                }
            }
            Variant::Coop { frag } => {
                if ![8, 16].contains(&frag) {
                    return Err("cooperative-matrix fragments are 8 or 16 on a side".into());
                }
            }
            Variant::Split { rm, rn } => {
                if ![4, 8, 16].contains(&rm) || ![4, 8].contains(&rn) {
                    return Err("split-k blocks are 4, 8 or 16 rows by 4 or 8 columns".into());
                }
            }
            Variant::Lanes { rm, rn } => {
                if !(1..=16).contains(&rm) || !(1..=8).contains(&rn) {
                    return Err("lane-parallel blocks are 1 to 16 rows by 1 to 8 columns per lane".into());
                }
            }
        }
        Ok(())
    }

    /// WGSL override constants for the pipeline of `product` (ALIGNED, and the device's lanes
    /// where a variant needs them, are added per dispatch). The translation test compiles
    /// every variant with them.
    pub fn constants(self, product: Product) -> Vec<(&'static str, f64)> {
        match self {
            Variant::Reg { rm, rn, wg } => {
                vec![("WG_X", wg.0 as f64), ("WG_Y", wg.1 as f64), ("RM", rm as f64), ("RN", rn as f64)]
            }
            Variant::Tiled { bm, bn, bk, tm, tn } => vec![
                ("PRODUCT", Product::ALL.iter().position(|&p| p == product).unwrap() as f64),
                ("BM", bm as f64),
                ("BN", bn as f64),
                ("BK", bk as f64),
                ("TM", tm as f64),
                ("TN", tn as f64),
                ("TX", (bn / tn) as f64),
                ("TY", (bm / tm) as f64),
            ],
            Variant::Coop { .. } => vec![("PRODUCT", Product::ALL.iter().position(|&p| p == product).unwrap() as f64)],
            Variant::Lanes { rm, rn } => vec![
                ("PRODUCT", Product::ALL.iter().position(|&p| p == product).unwrap() as f64),
                ("RM", rm as f64),
                ("RN", rn as f64),
            ],
            Variant::Split { rm, rn } => {
                vec![("RM", rm as f64), ("RN", rn as f64), ("SPLIT_Y", (SPLIT_ROWS / rm) as f64)]
            }
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match *self {
            Variant::Reg { rm, rn, wg } => write!(f, "reg{rm}x{rn}-wg{}x{}", wg.0, wg.1),
            Variant::Tiled { bm, bn, bk, tm, tn } => write!(f, "tile{bm}x{bn}x{bk}-t{tm}x{tn}"),
            Variant::Coop { frag } => write!(f, "coop{}x{}-k{frag}", 2 * frag, 2 * frag),
            Variant::Split { rm, rn } => write!(f, "split{rm}x{rn}"),
            Variant::Lanes { rm, rn } => write!(f, "lanes{rm}x{rn}"),
        }
    }
}

/// The threads along k of the split-k forward, one subgroup: where the device has SUBGROUP and
/// a single subgroup size (a CPU adapter's SIMD width), else None.
pub fn split_lanes(gpu: &Gpu) -> Option<u32> {
    let (lo, hi) = (gpu.info.subgroup_min_size, gpu.info.subgroup_max_size);
    let has = gpu.device.features().contains(wgpu::Features::SUBGROUP);
    (has && lo == hi && (4..=64).contains(&lo)).then_some(lo)
}

/// Whether this device can run `v`: the split-k and lane-parallel variants need subgroups of
/// one size (4 to 64 lanes; a lane-parallel workgroup is one subgroup, as wide as it is).
pub fn runs_on(gpu: &Gpu, v: Variant) -> bool {
    match v {
        Variant::Split { .. } => split_lanes(gpu).is_some(),
        Variant::Lanes { .. } => split_lanes(gpu).is_some(),
        Variant::Coop { .. } => gpu.coop_matrix,
        _ => true,
    }
}
