//! Causal multi-head attention, flash style (shaders/attention.wgsl): the forward keeps each
//! row's logsumexp, the backward recomputes the scores. Memory linear in T.

use super::{dispatch, grid, View};
use crate::gpu::{Dispatch, Gpu, GpuError, Kernel, Shader, Slot};

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
    Kernel { shader: Shader::Attention, entry, slots: SLOTS }
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

/// out (B, T, C) and lse (B, NH, T) from qkv (B, T, 3C).
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
    let p = params(b, t, c, nh)?;
    let (btc, bht) = (b as u64 * t as u64 * c as u64, b as u64 * nh as u64 * t as u64);
    let d = || gpu.dummy.as_entire_buffer_binding();
    let bindings = [out.binding(gpu, btc)?, lse.binding(gpu, bht)?, qkv.binding(gpu, 3 * btc)?, d(), d(), d(), d()];
    dispatch(gpu, kernel("attention_forward"), &bindings, &p, [t.div_ceil(BLK), b * nh, 1])
}

/// dqkv (B, T, 3C) = the gradient through attention (written, not accumulated); `d` is a
/// scratch of B·NH·T floats.
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
    let p = params(b, t, c, nh)?;
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
    let blocks = [t.div_ceil(BLK), b * nh, 1];
    Ok(vec![
        dispatch(gpu, kernel("attention_backward_d"), &d_pass, &p, grid(gpu, (bht as u32).div_ceil(256)))?,
        dispatch(gpu, kernel("attention_backward_kv"), &grads, &p, blocks)?,
        dispatch(gpu, kernel("attention_backward_q"), &grads, &p, blocks)?,
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
    dispatch(gpu, kernel("attention_decode"), &bindings, &p, [nh, 1, 1])
}

/// Sets how many cached positions a `decode` dispatch attends over.
pub fn set_decode_len(gpu: &Gpu, d: &Dispatch, t: u32, c: u32, nh: u32) -> Result<(), GpuError> {
    let p = AttentionParams { t, ..params(1, 1, c, nh)? };
    d.write_uniform(gpu, &p);
    Ok(())
}
