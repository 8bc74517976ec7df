//! A block's backward, GPT-2's or Llama's: the mirror of block.rs's forward, from the
//! gradient of the block's output back to that of its input, adding the parameters'
//! gradients into the arena.

use super::block::{rope_qk, LayerActs, Scratch, Shape, Weights};
use super::config::Arch;
use super::Cmd;
use crate::gpu::{Dispatch, Gpu, GpuError};
use crate::kernels::matmul::{Dims, Matmul};
use crate::kernels::{attention, gelu, layernorm, rmsnorm, swiglu, Tensor, View};

/// The norm `name`'s backward: dinp += the input gradient, its parameters' gradients +=.
pub(super) fn norm_backward(
    gpu: &Gpu,
    w: &Weights,
    s: &Shape,
    name: &str,
    [dinp, dout, inp, stats]: [View; 4],
) -> Result<Vec<Dispatch>, GpuError> {
    let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
    let weight = w.master(&wn);
    match s.arch {
        Arch::Gpt2 => layernorm::backward(gpu, dinp, w.grad(&wn), w.grad(&bn), dout, inp, stats, weight, s.n(), s.c),
        Arch::Llama => rmsnorm::backward(gpu, dinp, w.grad(&wn), dout, inp, stats, weight, (s.n(), s.c)),
    }
}

/// A linear layer's weight and bias gradients (no bias for Llama).
fn grads<'a>(w: &Weights<'a>, layer: &str, bias: bool) -> (View<'a>, Option<View<'a>>) {
    (w.grad(&format!("{layer}.weight")), bias.then(|| w.grad(&format!("{layer}.bias"))))
}

/// The MLP's backward, from dfch_gelu (the activation output's gradient, written by the down
/// projection's backward) to dbuf (the second norm output's gradient).
fn mlp_backward(
    gpu: &Gpu,
    mm: &Matmul,
    w: &Weights,
    a: &LayerActs,
    d: &Scratch,
    s: &Shape,
) -> Result<Vec<Cmd>, GpuError> {
    let (n, c, f, names) = (s.n(), s.c, s.f, s.names());
    let lin = Dims::linear(n, f, c);
    let mm_w = |layer: &str| w.mm(&format!("{layer}.weight"));
    let mut back = Vec::new();
    match (names.gate, &a.up, &d.dup) {
        (Some(gate), Some(up), Some(dup)) => {
            let sw = swiglu::backward(gpu, d.dfch.v(), dup.v(), a.fch.v(), up.v(), d.dfch_gelu.v(), n * f)?;
            back.push(Cmd::Run(sw));
            let (gw, _) = grads(w, gate, false);
            let mut ops = mm.backward(d.dbuf.v(), gw, None, d.dfch.v(), a.ln2.v(), mm_w(gate), lin)?;
            let (uw, _) = grads(w, names.up, false);
            ops.extend(mm.backward_add(d.dbuf.v(), uw, None, [dup.v(), a.ln2.v(), mm_w(names.up)], lin)?);
            back.extend(ops.into_iter().map(Cmd::Run));
        }
        _ => {
            back.push(Cmd::Zero(d.dfch.buf.clone()));
            back.push(Cmd::Run(gelu::backward(gpu, d.dfch.v(), a.fch.v(), d.dfch_gelu.v(), n * f)?));
            let (fw, fb) = grads(w, names.up, true);
            let ops = mm.backward(d.dbuf.v(), fw, fb, d.dfch.v(), a.ln2.v(), mm_w(names.up), lin)?;
            back.extend(ops.into_iter().map(Cmd::Run));
        }
    }
    Ok(back)
}

/// The input projections' backward, from dqkv to dbuf (the first norm output's gradient):
/// GPT-2's fused c_attn, or Llama's inverse RoPE on dq and dk, then q, k and v adding up.
fn qkv_backward(
    gpu: &Gpu,
    mm: &Matmul,
    w: &Weights,
    a: &LayerActs,
    d: &Scratch,
    s: &Shape,
) -> Result<Vec<Dispatch>, GpuError> {
    let (n, c, names) = (s.n(), s.c, s.names());
    let mm_w = |layer: &str| w.mm(&format!("{layer}.weight"));
    if s.arch == Arch::Gpt2 {
        let (qw, qb) = grads(w, names.qkv[0], true);
        let lin = Dims::linear(n, 3 * c, c);
        return mm.backward(d.dbuf.v(), qw, qb, d.dqkv.v(), a.ln1.v(), mm_w(names.qkv[0]), lin);
    }
    let mut ops = rope_qk(gpu, w, s, d.dqkv.v(), true)?;
    for (i, (name, (at, width))) in names.qkv.iter().zip(s.planes()).enumerate() {
        let (gw, _) = grads(w, name, false);
        let (dout, lin) = (d.dqkv.v().at_offset(at), Dims::linear(n, width, c));
        ops.extend(match i {
            0 => mm.backward(d.dbuf.v(), gw, None, dout, a.ln1.v(), mm_w(name), lin)?,
            _ => mm.backward_add(d.dbuf.v(), gw, None, [dout, a.ln1.v(), mm_w(name)], lin)?,
        });
    }
    Ok(ops)
}

/// A block's backward, from dresidual (the gradient of its output) back to dresidual (that
/// of its input), adding its parameters' gradients into the arena.
pub(super) fn backward(
    gpu: &Gpu,
    mm: &Matmul,
    w: &Weights,
    input: &Tensor,
    a: &LayerActs,
    d: &Scratch,
    s: &Shape,
) -> Result<Vec<Cmd>, GpuError> {
    let (n, c, f, names) = (s.n(), s.c, s.f, s.names());
    let lin = Dims::linear;
    let mm_w = |layer: &str| w.mm(&format!("{layer}.weight"));
    let mut back: Vec<Cmd> = Vec::new();
    // residual3 = residual2 + down(act): both get dresidual.
    let (pw, pb) = grads(w, names.down, names.bias);
    let down = mm.backward(d.dfch_gelu.v(), pw, pb, d.dresidual.v(), a.fch_gelu.v(), mm_w(names.down), lin(n, c, f))?;
    back.extend(down.into_iter().map(Cmd::Run));
    back.extend(mlp_backward(gpu, mm, w, a, d, s)?);
    let mut run = |ops: Vec<Dispatch>| back.extend(ops.into_iter().map(Cmd::Run));
    run(norm_backward(gpu, w, s, names.norm2, [d.dresidual.v(), d.dbuf.v(), a.residual2.v(), a.ln2_stats.v()])?);
    // residual2 = input + proj(attention).
    let (aw, ab) = grads(w, names.proj, names.bias);
    run(mm.backward(d.dbuf.v(), aw, ab, d.dresidual.v(), a.atty.v(), mm_w(names.proj), lin(n, c, s.q()))?);
    let io = [d.dbuf.v(), a.atty.v(), a.qkv.v(), a.lse.v()];
    run(attention::backward_in(gpu, d.dqkv.v(), d.dattn.v(), io, &s.attn)?);
    run(qkv_backward(gpu, mm, w, a, d, s)?);
    run(norm_backward(gpu, w, s, names.norm1, [d.dresidual.v(), d.dbuf.v(), input.v(), a.ln1_stats.v()])?);
    Ok(back)
}
