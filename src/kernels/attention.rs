//! Causal multi-head attention, flash style: the forward keeps each row's logsumexp, the
//! backward recomputes the scores. Memory linear in T. The variants, chosen by the tuner: 16×16
//! tiles (shaders/attention.wgsl), one thread per row (attention_rows.wgsl), and in f16 on
//! devices with cooperative matrices a forward on them (attention_coop.wgsl) whose backward is
//! rows64's.

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
    /// The forward on 16×16×16 f16 cooperative matrices (one subgroup per 16 queries); the
    /// backward of `Rows { br: 64 }`. f16 activations, head sizes a multiple of 16.
    Coop,
}

impl AttnVariant {
    /// Every variant the tuner may pick, and the ones it times on each adapter type.
    pub const ALL: &'static [AttnVariant] =
        &[AttnVariant::Tiles16, AttnVariant::Rows { br: 64 }, AttnVariant::Rows { br: 32 }];

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL.iter().copied().chain([AttnVariant::Coop]).find(|v| v.to_string() == s).ok_or_else(|| {
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
            AttnVariant::Coop => write!(f, "coop16"),
        }
    }
}

/// Mirrors `struct Params` in shaders/attention.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AttentionParams {
    pub b: u32,
    pub t: u32,
    pub c: u32,
    pub nh: u32,
    pub hs: u32,
    pub scale: f32,
    pub _pad: [u32; 2],
}

/// Largest head size the tiles hold (HS_MAX in the shader); GPT-2's is 64 at every size.
pub const HS_MAX: u32 = 64;
const BLK: u32 = 16;

const SLOTS: &[Slot] = &[
    Slot::Storage,
    Slot::Storage,
    Slot::ReadOnly,
    Slot::ReadOnly,
    Slot::ReadOnly,
    Slot::ReadOnly,
    Slot::ReadOnly,
    Slot::Uniform,
];

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

/// One dispatch over (query or key blocks, B·NH) in `v`: the 16×16 entry point, or the
/// row-per-thread one specialized for the head size.
fn blocks(
    gpu: &Gpu,
    v: AttnVariant,
    entries: (&'static str, &'static str),
    half: u8,
    bindings: &[wgpu::BufferBinding],
    p: &AttentionParams,
) -> Result<Dispatch, GpuError> {
    match v {
        AttnVariant::Tiles16 => {
            dispatch(gpu, kernel(entries.0).with_half(half), bindings, p, [p.t.div_ceil(BLK), p.b * p.nh, 1])
        }
        AttnVariant::Coop => coop_forward(gpu, entries.0, half, bindings, p),
        AttnVariant::Rows { br } => {
            let unroll = gpu.info.device_type != wgpu::DeviceType::Cpu;
            let constants = [("HS", p.hs as f64), ("BR", br as f64), ("UNROLL", unroll as u8 as f64)];
            let k = rows_kernel(entries.1, p.hs).with_half(half);
            dispatch_with(gpu, k, &constants, bindings, p, [p.t.div_ceil(br), p.b * p.nh, 1])
        }
    }
}

/// The cooperative-matrix forward (`entry` names the pass; only the forward has one).
fn coop_forward(
    gpu: &Gpu,
    entry: &'static str,
    half: u8,
    bindings: &[wgpu::BufferBinding],
    p: &AttentionParams,
) -> Result<Dispatch, GpuError> {
    if entry != "attention_forward" || half & 0b101 != 0b101 || !gpu.coop_matrix || !p.hs.is_multiple_of(16) {
        return Err(GpuError::Unsupported(format!(
            "attention variant coop16: needs f16 activations, a head size that is a multiple of 16 (not {}) and a \
             device with cooperative matrices",
            p.hs
        )));
    }
    let k = Kernel::new(Shader::AttentionCoop, "attention_coop_forward", SLOTS).with_half(half);
    let sg = [("SG", gpu.info.subgroup_max_size.clamp(1, 128) as f64)];
    dispatch_with(gpu, k, &sg, bindings, p, [p.t.div_ceil(BLK), p.b * p.nh, 1])
}

fn params(b: u32, t: u32, c: u32, nh: u32) -> Result<AttentionParams, GpuError> {
    if nh == 0 || !c.is_multiple_of(nh) || c / nh > HS_MAX {
        return Err(GpuError::Unsupported(format!(
            "attention needs n_embd divisible by n_head and a head size of at most {HS_MAX}; got n_embd {c}, n_head {nh}"
        )));
    }
    let hs = c / nh;
    Ok(AttentionParams { b, t, c, nh, hs, scale: 1.0 / (hs as f32).sqrt(), _pad: [0; 2] })
}

/// out (B, T, C) and lse (B, NH, T) from qkv (B, T, 3C), in the variant the tuning table
/// picks.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    gpu: &Gpu,
    out: View,
    lse: View,
    qkv: View,
    b: u32,
    t: u32,
    c: u32,
    nh: u32,
) -> Result<Dispatch, GpuError> {
    let v = crate::tune::choose_attention(gpu, b, t, c, nh, out.dtype)?;
    forward_with(gpu, v, out, lse, qkv, b, t, c, nh)
}

/// `forward` in variant `v`.
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
    let p = params(b, t, c, nh)?;
    let (btc, bht) = (b as u64 * t as u64 * c as u64, b as u64 * nh as u64 * t as u64);
    let d = || gpu.dummy.as_entire_buffer_binding();
    let bindings = [out.binding(gpu, btc)?, lse.binding(gpu, bht)?, qkv.binding(gpu, 3 * btc)?, d(), d(), d(), d()];
    let half = half_mask(&[Some(out), None, Some(qkv)]);
    blocks(gpu, v, ("attention_forward", "attention_rows_forward"), half, &bindings, &p)
}

/// dqkv (B, T, 3C) = the gradient through attention (written, not accumulated); `d` is a
/// scratch of B·NH·T floats. In the variant the tuning table picks.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
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
) -> Result<Vec<Dispatch>, GpuError> {
    let v = crate::tune::choose_attention(gpu, b, t, c, nh, dout.dtype)?;
    backward_with(gpu, v, dqkv, d, dout, out, qkv, lse, b, t, c, nh)
}

/// `backward` in variant `v`.
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
) -> Result<Vec<Dispatch>, GpuError> {
    let p = params(b, t, c, nh)?;
    // The cooperative-matrix forward's backward is the row kernels'.
    let v = if v == AttnVariant::Coop { AttnVariant::Rows { br: 64 } } else { v };
    let (btc, bht) = (b as u64 * t as u64 * c as u64, b as u64 * nh as u64 * t as u64);
    let dummy = || gpu.dummy.as_entire_buffer_binding();
    let dummy_rw = || gpu.dummy_rw.as_entire_buffer_binding();
    let d_pass =
        [d.binding(gpu, bht)?, dummy_rw(), dummy(), dout.binding(gpu, btc)?, out.binding(gpu, btc)?, dummy(), dummy()];
    let grads = [
        dqkv.binding(gpu, 3 * btc)?,
        dummy_rw(),
        qkv.binding(gpu, 3 * btc)?,
        dout.binding(gpu, btc)?,
        dummy(),
        lse.binding(gpu, bht)?,
        d.binding(gpu, bht)?,
    ];
    let d_kernel = kernel("attention_backward_d").with_half(half_mask(&[Some(d), None, None, Some(dout), Some(out)]));
    let half = half_mask(&[Some(dqkv), None, Some(qkv), Some(dout)]);
    Ok(vec![
        dispatch(gpu, d_kernel, &d_pass, &p, grid(gpu, (bht as u32).div_ceil(256)))?,
        blocks(gpu, v, ("attention_backward_kv", "attention_rows_backward_kv"), half, &grads, &p)?,
        blocks(gpu, v, ("attention_backward_q", "attention_rows_backward_q"), half, &grads, &p)?,
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
    if max_t > 4096 {
        return Err(GpuError::Unsupported(format!("decoding holds at most 4096 positions, not {max_t}")));
    }
    let p = params(1, 1, c, nh)?;
    let d = || gpu.dummy.as_entire_buffer_binding();
    let cache = max_t as u64 * c as u64;
    let bindings = [
        out.binding(gpu, c as u64)?,
        gpu.dummy_rw.as_entire_buffer_binding(),
        qkv.binding(gpu, 3 * c as u64)?,
        k_cache.binding(gpu, cache)?,
        v_cache.binding(gpu, cache)?,
        d(),
        d(),
    ];
    let half = half_mask(&[Some(out), None, Some(qkv), Some(k_cache), Some(v_cache)]);
    dispatch(gpu, kernel("attention_decode").with_half(half), &bindings, &p, [nh, 1, 1])
}

/// Sets how many cached positions a `decode` dispatch attends over.
pub fn set_decode_len(gpu: &Gpu, d: &Dispatch, t: u32, c: u32, nh: u32) -> Result<(), GpuError> {
    let p = AttentionParams { t, ..params(1, 1, c, nh)? };
    d.write_uniform(gpu, &p);
    Ok(())
}
