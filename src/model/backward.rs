//! A block's backward, GPT-2's or Llama's: the mirror of block.rs's forward, from the
//! gradient of the block's output back to that of its input, adding the parameters'
//! gradients into the arena.

use super::block::{rope_qk, LayerActs, Linear, Scratch, Shape, Weights};
use super::config::Arch;
use super::lora_path as lora;
use super::Cmd;
use crate::gpu::{Dispatch, Gpu, GpuError};
use crate::kernels::layernorm;
use crate::kernels::Dispatches;
use crate::kernels::{gelu, rmsnorm, swiglu, Tensor, View};
use crate::tune::matmul::{Dims, Matmul};
use crate::tune::{self, attention};

/// The norm `name`'s backward: dinp += the input gradient, its parameters' gradients +=.
pub(super) fn norm_backward(
    gpu: &Gpu,
    w: &Weights,
    s: &Shape,
    name: &str,
    [dinp, dout, inp, stats]: [View; 4],
) -> Dispatches {
    let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
    let weight = w.master(&wn);
    // A frozen norm takes only the first dispatch, the rows'; the second sums its gradients.
    let grad = |name: &str| if w.frozen() { dinp } else { w.grad(name) };
    let mut ops = match s.arch {
        Arch::Gpt2 => {
            let v = tune::choose_layernorm(gpu, s.n(), s.c, inp.dtype)?;
            layernorm::backward_with(gpu, v, dinp, grad(&wn), grad(&bn), dout, inp, stats, weight, s.n(), s.c)?
        }
        Arch::Llama => rmsnorm::backward(gpu, dinp, grad(&wn), dout, inp, stats, weight, (s.n(), s.c))?,
    };
    if w.frozen() {
        ops.truncate(1);
    }
    Ok(ops)
}

/// A linear layer's backward: dinp = dout·W (+= with `add`: a later reader of one input),
/// W's (and the bias's) gradients unless frozen, and its LoRA path when it has one.
pub(super) fn linear_backward(
    (mm, gpu): (&Matmul, &Gpu),
    w: &Weights,
    (layer, bias): (&str, bool),
    [dinp, dout, inp]: [View; 3],
    lin: Dims,
    add: bool,
) -> Dispatches {
    let weight = format!("{layer}.weight");
    let mut ops = match (w.frozen(), add) {
        (true, add) => match w.linear(&weight) {
            Linear::Quant(q) => {
                w.quant.expect("a quantized weight").backward_input((gpu, mm), [dinp, dout], q, lin, add)?
            }
            Linear::Dense(wv) if add => mm.backward_input_add(dinp, dout, wv, lin)?,
            Linear::Dense(wv) => mm.backward_input(dinp, dout, wv, lin)?,
        },
        (false, add) => {
            let wv = w.mm(&weight);
            let (gw, gb) = (w.grad(&format!("{layer}.weight")), bias.then(|| w.grad(&format!("{layer}.bias"))));
            match add {
                false => mm.backward(dinp, gw, gb, dout, inp, wv, lin)?,
                true => mm.backward_add(dinp, gw, gb, [dout, inp, wv], lin)?,
            }
        }
    };
    if let Some(ad) = w.adapter(layer) {
        ops.extend(lora::backward(mm, gpu, dinp, [dout, inp], &ad, lin)?);
    }
    Ok(ops)
}

/// The MLP's backward, from dfch_gelu (the activation output's gradient, written by the down
/// projection's backward) to dbuf (the second norm output's gradient).
fn mlp_backward(mm: &Matmul, w: &Weights, a: &LayerActs, d: &Scratch, s: &Shape) -> Result<Vec<Cmd>, GpuError> {
    let gpu = mm.gpu();
    let (n, c, f, names) = (s.n(), s.c, s.f, s.names());
    let lin = Dims::linear(n, f, c);
    let mut back = Vec::new();
    match (names.gate, &a.up, &d.dup) {
        (Some(gate), Some(up), Some(dup)) => {
            let sw = swiglu::backward(gpu, d.dfch.v(), dup.v(), a.fch.v(), up.v(), d.dfch_gelu.v(), n * f)?;
            back.push(Cmd::Run(sw));
            let (gate_io, up_io) = ([d.dbuf.v(), d.dfch.v(), a.ln2.v()], [d.dbuf.v(), dup.v(), a.ln2.v()]);
            let mut ops = linear_backward((mm, gpu), w, (gate, false), gate_io, lin, false)?;
            ops.extend(linear_backward((mm, gpu), w, (names.up, false), up_io, lin, true)?);
            back.extend(ops.into_iter().map(Cmd::Run));
        }
        _ => {
            back.push(Cmd::Zero(d.dfch.buf.clone()));
            back.push(Cmd::Run(gelu::backward(gpu, d.dfch.v(), a.fch.v(), d.dfch_gelu.v(), n * f)?));
            let io = [d.dbuf.v(), d.dfch.v(), a.ln2.v()];
            let ops = linear_backward((mm, gpu), w, (names.up, true), io, lin, false)?;
            back.extend(ops.into_iter().map(Cmd::Run));
        }
    }
    Ok(back)
}

/// The input projections' backward, from dqkv to dbuf (the first norm output's gradient):
/// GPT-2's fused c_attn, or Llama's inverse RoPE on dq and dk, then q, k and v adding up.
fn qkv_backward(mm: &Matmul, w: &Weights, a: &LayerActs, d: &Scratch, s: &Shape) -> Dispatches {
    let gpu = mm.gpu();
    let (n, c, names) = (s.n(), s.c, s.names());
    if s.arch == Arch::Gpt2 {
        let (io, lin) = ([d.dbuf.v(), d.dqkv.v(), a.ln1.v()], Dims::linear(n, 3 * c, c));
        return linear_backward((mm, gpu), w, (names.qkv[0], true), io, lin, false);
    }
    let mut ops = rope_qk(gpu, w, s, d.dqkv.v(), true)?;
    for (i, (name, (at, width))) in names.qkv.iter().zip(s.planes()).enumerate() {
        let (io, lin) = ([d.dbuf.v(), d.dqkv.v().at_offset(at), a.ln1.v()], Dims::linear(n, width, c));
        ops.extend(linear_backward((mm, gpu), w, (name, false), io, lin, i > 0)?);
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
    let mut back: Vec<Cmd> = Vec::new();
    // residual3 = residual2 + down(act): both get dresidual.
    let io = [d.dfch_gelu.v(), d.dresidual.v(), a.fch_gelu.v()];
    let down = linear_backward((mm, gpu), w, (names.down, names.bias), io, lin(n, c, f), false)?;
    back.extend(down.into_iter().map(Cmd::Run));
    back.extend(mlp_backward(mm, w, a, d, s)?);
    let mut run = |ops: Vec<Dispatch>| back.extend(ops.into_iter().map(Cmd::Run));
    run(norm_backward(gpu, w, s, names.norm2, [d.dresidual.v(), d.dbuf.v(), a.residual2.v(), a.ln2_stats.v()])?);
    // residual2 = input + proj(attention).
    let io = [d.dbuf.v(), d.dresidual.v(), a.atty.v()];
    run(linear_backward((mm, gpu), w, (names.proj, names.bias), io, lin(n, c, s.q()), false)?);
    let io = [d.dbuf.v(), a.atty.v(), a.qkv.v(), a.lse.v()];
    run(attention::backward_in(gpu, d.dqkv.v(), d.dattn.v(), io, &s.attn)?);
    run(qkv_backward(mm, w, a, d, s)?);
    run(norm_backward(gpu, w, s, names.norm1, [d.dresidual.v(), d.dbuf.v(), input.v(), a.ln1_stats.v()])?);
    Ok(back)
}
