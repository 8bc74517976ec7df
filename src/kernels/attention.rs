//! Causal multi-head attention, flash style: the forward keeps each row's logsumexp, the
//! backward recomputes the scores. Memory linear in T. The variants, chosen by the tuner: 16×16
//! tiles (shaders/attention.wgsl), one thread per row (attention_rows.wgsl), lane-parallel rows
//! for CPU adapters (attention_lanes.wgsl), and in f16 on devices with cooperative matrices
//! blocks of 8×8×8 or 16×16×16 fragments (attention_coop.wgsl). Each call names its variant;
//! `crate::tune::attention` picks it by shape.

use super::matmul::split_lanes;
use super::Dispatches;
use std::fmt;

use super::{dispatch, dispatch_with, grid, half_mask, View};
use crate::gpu::{Dispatch, Gpu, GpuError, Kernel, Shader, Slot};

/// One way to compute attention; forward and backward of any two variants fit together (they
/// keep the same logsumexp).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttnVariant {
    /// 16 queries × 16 keys per workgroup of 256 threads, one score per thread.
    Tiles16,
    /// `br` rows per workgroup, one per thread, the other side in tiles of 32 rows.
    Rows { br: u32 },
    /// For CPU adapters (shaders/attention_lanes.wgsl): workgroups of one 8-lane subgroup, each
    /// lane owning at most `r` rows (fewer where r·HS would pass 64), the other side shared
    /// by shuffles. Needs subgroups of exactly 8 and HS ≤ 64.
    Lanes { r: u32 },
    /// Forward and backward on frag×frag×frag f16 cooperative matrices (frag 8 or 16), one
    /// subgroup per block of frag queries or keys. f16 activations, head sizes a multiple of
    /// frag up to 64.
    Coop { frag: u32 },
}

impl AttnVariant {
    /// Every variant the tuner may pick, and the ones it times on each adapter type.
    pub const ALL: &'static [AttnVariant] = &[
        AttnVariant::Tiles16,
        AttnVariant::Rows { br: 64 },
        AttnVariant::Rows { br: 32 },
        AttnVariant::Lanes { r: 2 },
        AttnVariant::Lanes { r: 1 },
    ];

    /// The cooperative-matrix variants, one per fragment size: the tuner offers those whose
    /// fragments the adapter lists (`Gpu::coop_fragments`).
    pub const COOP: &'static [AttnVariant] = &[AttnVariant::Coop { frag: 8 }, AttnVariant::Coop { frag: 16 }];

    /// Whether this device runs `self` at head size `hs`.
    pub fn runs_on(self, gpu: &Gpu, hs: u32) -> bool {
        match self {
            AttnVariant::Lanes { .. } => split_lanes(gpu).is_some() && hs <= LANE_ROWS,
            AttnVariant::Coop { frag } => gpu.coop_matrix && hs.is_multiple_of(frag) && hs <= HS_MAX,
            _ => true,
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL.iter().chain(Self::COOP).copied().find(|v| v.to_string() == s).ok_or_else(|| {
            let names: Vec<String> = Self::ALL.iter().map(|v| v.to_string()).collect();
            format!("{s:?} is not an attention variant: one of {}", names.join(", "))
        })
    }
}

impl fmt::Display for AttnVariant {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            AttnVariant::Tiles16 => write!(f, "tiles16"),
            AttnVariant::Rows { br } => write!(f, "rows{br}"),
            AttnVariant::Coop { frag } => write!(f, "coop{frag}"),
            AttnVariant::Lanes { r } => write!(f, "lanes{r}"),
        }
    }
}

/// Mirrors `struct Params` in shaders/prelude/attention_io.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AttentionParams {
    pub b: u32,
    pub t: u32,
    pub c: u32,
    pub nh: u32,
    pub hs: u32,
    pub scale: f32,
    pub nkv: u32,
    pub q_stride: u32,
    pub k_base: u32,
    pub v_base: u32,
    pub kv_stride: u32,
    pub _pad: u32,
}

/// Where q, k and v of row r = b·T + t sit in a qkv tensor, in elements: q at r·q_stride, k at
/// k_base + r·kv_stride, v at v_base + r·kv_stride; `len` elements in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QkvLayout {
    pub q_stride: u32,
    pub k_base: u32,
    pub v_base: u32,
    pub kv_stride: u32,
    pub len: u64,
}

/// The sizes of one attention: B, T, NH query heads that share NKV key/value heads (NH a
/// multiple of NKV), head size HS, and where q, k, v sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    pub b: u32,
    pub t: u32,
    pub nh: u32,
    pub nkv: u32,
    pub hs: u32,
    pub qkv: QkvLayout,
}

impl AttnShape {
    /// GPT-2's multi-head attention on a fused (B, T, 3C) qkv: q, k and v side by side.
    pub fn fused(b: u32, t: u32, c: u32, nh: u32) -> Result<Self, GpuError> {
        if nh == 0 || !c.is_multiple_of(nh) {
            return Err(GpuError::Unsupported(format!(
                "attention needs n_embd divisible by n_head; got n_embd {c}, n_head {nh}"
            )));
        }
        let len = 3 * b as u64 * t as u64 * c as u64;
        let qkv = QkvLayout { q_stride: 3 * c, k_base: c, v_base: 2 * c, kv_stride: 3 * c, len };
        Self::checked(Self { b, t, nh, nkv: nh, hs: c / nh, qkv })
    }

    /// Grouped-query attention on three planes, q (B·T, NH·HS), k and v (B·T, NKV·HS), each
    /// starting on 64 elements so that a matmul can write it through its own view.
    pub fn planes(b: u32, t: u32, nh: u32, nkv: u32, hs: u32) -> Result<Self, GpuError> {
        let n = b as u64 * t as u64;
        let k_base = (n * (nh * hs) as u64).next_multiple_of(64);
        let v_base = (k_base + n * (nkv * hs) as u64).next_multiple_of(64);
        let len = v_base + n * (nkv * hs) as u64;
        let too_big = || GpuError::Unsupported(format!("a qkv of {len} elements is past u32 indexing"));
        let qkv = QkvLayout {
            q_stride: nh * hs,
            k_base: u32::try_from(k_base).map_err(|_| too_big())?,
            v_base: u32::try_from(v_base).map_err(|_| too_big())?,
            kv_stride: nkv * hs,
            len,
        };
        Self::checked(Self { b, t, nh, nkv, hs, qkv })
    }

    fn checked(s: Self) -> Result<Self, GpuError> {
        if s.nh == 0 || s.nkv == 0 || !s.nh.is_multiple_of(s.nkv) || s.hs == 0 || s.hs > HS_MAX {
            return Err(GpuError::Unsupported(format!(
                "attention needs n_head a multiple of n_kv_head and a head size of 1 to {HS_MAX}; got n_head {}, \
                 n_kv_head {}, head size {}",
                s.nh, s.nkv, s.hs
            )));
        }
        Ok(s)
    }

    /// Width of out and dout: NH·HS.
    pub fn c(&self) -> u32 {
        self.nh * self.hs
    }

    /// Elements of out and dout: B·T·NH·HS.
    fn btc(&self) -> u64 {
        self.b as u64 * self.t as u64 * self.c() as u64
    }

    /// Elements of L and D: B·NH·T.
    fn bht(&self) -> u64 {
        self.b as u64 * self.nh as u64 * self.t as u64
    }

    fn params(&self) -> AttentionParams {
        let q = &self.qkv;
        AttentionParams {
            b: self.b,
            t: self.t,
            c: self.c(),
            nh: self.nh,
            hs: self.hs,
            scale: 1.0 / (self.hs as f32).sqrt(),
            nkv: self.nkv,
            q_stride: q.q_stride,
            k_base: q.k_base,
            v_base: q.v_base,
            kv_stride: q.kv_stride,
            _pad: 0,
        }
    }
}

/// Largest head size the tiles hold (HS_MAX in the shader); GPT-2's is 64 at every size.
pub const HS_MAX: u32 = 64;
const BLK: u32 = 16;

const SLOTS: &[Slot] = super::SLOTS_2W_5R;

fn kernel(entry: &'static str) -> Kernel {
    Kernel::new(Shader::Attention, entry, SLOTS)
}

/// attention_rows.wgsl built with the shortest rows that hold head size `hs`.
fn rows_kernel(entry: &'static str, hs: u32) -> Kernel {
    let shader = match hs {
        0..=16 => Shader::AttentionRows16,
        17..=32 => Shader::AttentionRows32,
        _ => Shader::AttentionRows,
    };
    Kernel::new(shader, entry, SLOTS)
}

/// The most elements a lane's rows hold in the lane-parallel kernels (a workgroup is one
/// subgroup, as wide as the device's: `split_lanes`).
const LANE_ROWS: u32 = 64;

/// Names of one pass's entry points in the 16×16, row, lane-parallel and cooperative-matrix
/// shaders.
struct Entries(&'static str, &'static str, &'static str, &'static str);
const FORWARD: Entries =
    Entries("attention_forward", "attention_rows_forward", "attention_lanes_forward", "attention_coop_forward");
const BACKWARD_KV: Entries = Entries(
    "attention_backward_kv",
    "attention_rows_backward_kv",
    "attention_lanes_backward_kv",
    "attention_coop_backward_kv",
);
const BACKWARD_Q: Entries = Entries(
    "attention_backward_q",
    "attention_rows_backward_q",
    "attention_lanes_backward_q",
    "attention_coop_backward_q",
);

/// One dispatch over (query or key blocks, B·NH) in `v`: the 16×16 entry point, or the
/// row-per-thread one specialized for the head size.
/// The grid's y is B·`heads` (NH, or NKV for the key side of the backward).
fn blocks(
    gpu: &Gpu,
    v: AttnVariant,
    entries: Entries,
    (half, heads): (u8, u32),
    bindings: &[wgpu::BufferBinding],
    p: &AttentionParams,
) -> Result<Dispatch, GpuError> {
    match v {
        AttnVariant::Tiles16 => {
            dispatch(gpu, kernel(entries.0).with_half(half), bindings, p, [p.t.div_ceil(BLK), p.b * heads, 1])
        }
        AttnVariant::Coop { frag } => coop_blocks(gpu, frag, entries.3, (half, heads), bindings, p),
        AttnVariant::Rows { br } => {
            let unroll = gpu.info.device_type != wgpu::DeviceType::Cpu;
            let constants = [("HS", p.hs as f64), ("BR", br as f64), ("UNROLL", unroll as u8 as f64)];
            let k = rows_kernel(entries.1, p.hs).with_half(half);
            dispatch_with(gpu, k, &constants, bindings, p, [p.t.div_ceil(br), p.b * heads, 1])
        }
        AttnVariant::Lanes { r } => {
            let lanes = split_lanes(gpu).filter(|_| p.hs <= LANE_ROWS).ok_or_else(|| {
                let why = format!("attention variant {v}: needs subgroups of one size (4 to 64) and HS ≤ {LANE_ROWS}");
                GpuError::Unsupported(why)
            })?;
            let r = r.clamp(1, LANE_ROWS / p.hs.max(1));
            let k = Kernel::new(Shader::AttentionLanes, entries.2, SLOTS).with_half(half);
            let constants = [("HS", p.hs as f64), ("R", r as f64), ("LANES", lanes as f64)];
            dispatch_with(gpu, k, &constants, bindings, p, [p.t.div_ceil(lanes * r), p.b * heads, 1])
        }
    }
}

/// One pass (`entry`) of the cooperative-matrix kernels on fragments of `frag` on a side.
fn coop_blocks(
    gpu: &Gpu,
    frag: u32,
    entry: &'static str,
    (half, heads): (u8, u32),
    bindings: &[wgpu::BufferBinding],
    p: &AttentionParams,
) -> Result<Dispatch, GpuError> {
    let v = AttnVariant::Coop { frag };
    if half & 0b101 != 0b101 || !v.runs_on(gpu, p.hs) {
        return Err(GpuError::Unsupported(format!(
            "attention variant {v}: needs f16 activations, a head size that is a multiple of {frag} up to {HS_MAX} \
             (not {}) and a device with cooperative matrices",
            p.hs
        )));
    }
    let shader = if frag == 8 { Shader::AttentionCoop8 } else { Shader::AttentionCoop };
    let k = Kernel::new(shader, entry, SLOTS).with_half(half);
    let sg = [super::coop_sg(gpu)];
    dispatch_with(gpu, k, &sg, bindings, p, [p.t.div_ceil(frag), p.b * heads, 1])
}

/// out (B, T, C) and lse (B, NH, T) from qkv (B, T, 3C), in variant `v`.
#[allow(clippy::too_many_arguments)]
pub fn forward_with(
    gpu: &Gpu,
    v: AttnVariant,
    out: View,
    lse: View,
    qkv: View,
    b: u32,
    t: u32,
    c: u32,
    nh: u32,
) -> Result<Dispatch, GpuError> {
    forward_shaped(gpu, v, out, lse, qkv, &AttnShape::fused(b, t, c, nh)?)
}

/// `forward_with` of any shape, grouped-query included.
pub fn forward_shaped(
    gpu: &Gpu,
    v: AttnVariant,
    out: View,
    lse: View,
    qkv: View,
    s: &AttnShape,
) -> Result<Dispatch, GpuError> {
    let p = s.params();
    let d = || gpu.dummy.as_entire_buffer_binding();
    let bindings =
        [out.binding(gpu, s.btc())?, lse.binding(gpu, s.bht())?, qkv.binding(gpu, s.qkv.len)?, d(), d(), d(), d()];
    let half = half_mask(&[Some(out), None, Some(qkv)]);
    blocks(gpu, v, FORWARD, (half, s.nh), &bindings, &p)
}

/// dqkv (B, T, 3C) = the gradient through attention in variant `v` (written, not
/// accumulated); `d` is a scratch of B·NH·T floats.
#[allow(clippy::too_many_arguments)]
pub fn backward_with(
    gpu: &Gpu,
    v: AttnVariant,
    dqkv: View,
    d: View,
    dout: View,
    out: View,
    qkv: View,
    lse: View,
    b: u32,
    t: u32,
    c: u32,
    nh: u32,
) -> Dispatches {
    backward_shaped(gpu, v, dqkv, d, [dout, out, qkv, lse], &AttnShape::fused(b, t, c, nh)?)
}

/// `backward_with` of any shape: dqkv in qkv's layout from `[dout, out, qkv, lse]`.
pub fn backward_shaped(
    gpu: &Gpu,
    v: AttnVariant,
    dqkv: View,
    d: View,
    [dout, out, qkv, lse]: [View; 4],
    s: &AttnShape,
) -> Dispatches {
    let p = s.params();
    let (btc, bht, len) = (s.btc(), s.bht(), s.qkv.len);
    let dummy = || gpu.dummy.as_entire_buffer_binding();
    let dummy_rw = || gpu.dummy_rw.as_entire_buffer_binding();
    let d_pass =
        [d.binding(gpu, bht)?, dummy_rw(), dummy(), dout.binding(gpu, btc)?, out.binding(gpu, btc)?, dummy(), dummy()];
    let grads = [
        dqkv.binding(gpu, len)?,
        dummy_rw(),
        qkv.binding(gpu, len)?,
        dout.binding(gpu, btc)?,
        dummy(),
        lse.binding(gpu, bht)?,
        d.binding(gpu, bht)?,
    ];
    let d_kernel = kernel("attention_backward_d").with_half(half_mask(&[Some(d), None, None, Some(dout), Some(out)]));
    let half = half_mask(&[Some(dqkv), None, Some(qkv), Some(dout)]);
    Ok(vec![
        dispatch(gpu, d_kernel, &d_pass, &p, grid(gpu, (bht as u32).div_ceil(256)))?,
        blocks(gpu, v, BACKWARD_KV, (half, s.nkv), &grads, &p)?,
        blocks(gpu, v, BACKWARD_Q, (half, s.nh), &grads, &p)?,
    ])
}

/// out (1, C) for the new position whose q is in qkv (1, 3C), against k_cache and v_cache
/// (max_t, C) holding `t` positions, the new one included. `t` is set per token with
/// `set_decode_len`.
#[allow(clippy::too_many_arguments)]
pub fn decode(
    gpu: &Gpu,
    out: View,
    qkv: View,
    k_cache: View,
    v_cache: View,
    max_t: u32,
    c: u32,
    nh: u32,
) -> Result<Dispatch, GpuError> {
    decode_in(gpu, out, qkv, [k_cache, v_cache], max_t, &AttnShape::fused(1, 1, c, nh)?)
}

/// `decode` of any shape `s` (B = T = 1): q at the start of qkv, caches (max_t, NKV·HS).
pub fn decode_in(
    gpu: &Gpu,
    out: View,
    qkv: View,
    [k_cache, v_cache]: [View; 2],
    max_t: u32,
    s: &AttnShape,
) -> Result<Dispatch, GpuError> {
    if max_t > 4096 {
        return Err(GpuError::Unsupported(format!("decoding holds at most 4096 positions, not {max_t}")));
    }
    let p = decode_params(s, 1);
    let d = || gpu.dummy.as_entire_buffer_binding();
    let cache = max_t as u64 * (s.nkv * s.hs) as u64;
    let bindings = [
        out.binding(gpu, s.c() as u64)?,
        gpu.dummy_rw.as_entire_buffer_binding(),
        qkv.binding(gpu, s.c() as u64)?,
        k_cache.binding(gpu, cache)?,
        v_cache.binding(gpu, cache)?,
        d(),
        d(),
    ];
    let half = half_mask(&[Some(out), None, Some(qkv), Some(k_cache), Some(v_cache)]);
    dispatch(gpu, kernel("attention_decode").with_half(half), &bindings, &p, [s.nh, 1, 1])
}

/// The decode kernel's uniform for `t` cached positions: the caches' rows are NKV·HS wide.
fn decode_params(s: &AttnShape, t: u32) -> AttentionParams {
    AttentionParams { t, kv_stride: s.nkv * s.hs, ..s.params() }
}

/// Sets how many cached positions a `decode` dispatch attends over.
pub fn set_decode_len(gpu: &Gpu, d: &Dispatch, t: u32, c: u32, nh: u32) -> Result<(), GpuError> {
    set_decode_len_in(gpu, d, t, &AttnShape::fused(1, 1, c, nh)?);
    Ok(())
}

/// `set_decode_len` for a `decode_in` of shape `s`.
pub fn set_decode_len_in(gpu: &Gpu, d: &Dispatch, t: u32, s: &AttnShape) {
    d.write_uniform(gpu, &decode_params(s, t));
}
