// Fused classifier: softmax, cross-entropy and the logits' gradient in one workgroup per row.
// The gradient overwrites the logits, so the probabilities are never stored.
//
// Legend: N rows (B·T), V vocab, Vp row length of the logits (V padded, as llm.c pads 50257 to
// 50304).
//
//   classifier_forward_backward
//     losses[n] = log Σ_i exp(l_i) − l_target                         (l = logits[n, :V])
//                 (added to losses[n] when accumulate != 0: a step's micro-batches sum there)
//     when grad != 0: logits[n, i] ← (softmax(l)_i − [i = target]) · dloss · S · R for i < V,
//     0 past V, S being the loss scale in scale[0] (1 unless loss scaling is on) and R the
//     step's renormalization in norm[0] (1, or for masked data the positions of the step over
//     those it counts, which makes the mean one over the counted targets)
//     A target of IGNORE (0xffffffff, PyTorch's ignore_index −100) counts nothing: loss 0 and
//     a zero gradient row.
//
// The logits may be f16 (S0); the softmax, the loss and the gradient are computed in f32.

const WG: u32 = 256u;

// Mirrors ClassifierParams in src/kernels/classifier.rs.
struct Params {
    n: u32,
    v: u32,
    vp: u32,
    grad: u32,     // 1: write dlogits over the logits
    dloss: f32,    // d(mean loss)/d(loss of one row): 1/N, or 1/(N·K) with K accumulation steps
    accumulate: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> logits: array<S0>;    // (N, Vp): logits in, dlogits out
@group(0) @binding(1) var<storage, read_write> losses: array<f32>;   // (N)
@group(0) @binding(2) var<storage, read> targets: array<u32>;        // (N)
@group(0) @binding(3) var<storage, read> scale: array<f32>;          // [0] loss scale
@group(0) @binding(4) var<storage, read> norm: array<f32>;           // [0] renormalization R
@group(0) @binding(5) var<uniform> p: Params;

const IGNORE: u32 = 0xffffffffu;

// reduce_max and reduce_sum come from the prelude (shaders/prelude/reduce.wgsl).

@compute @workgroup_size(WG)
fn classifier_forward_backward(g: Group, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(g);
    if row >= p.n { return; }
    let base = row * p.vp;
    if targets[row] == IGNORE {
        if lid == 0u && p.accumulate == 0u {
            losses[row] = 0.0;
        }
        if p.grad != 0u {
            for (var i = lid; i < p.vp; i += WG) {
                logits[base + i] = S0(0.0);
            }
        }
        return;
    }
    let tgt = min(targets[row], p.v - 1u);
    var m = -3.0e38;
    for (var i = lid; i < p.v; i += WG) {
        m = max(m, f32(logits[base + i]));
    }
    m = reduce_max(lid, m);
    var s = 0.0;
    for (var i = lid; i < p.v; i += WG) {
        s += exp(f32(logits[base + i]) - m);
    }
    // Every thread reads the target's logit before the barriers in reduce_sum, and so before
    // any thread overwrites it.
    let lt = f32(logits[base + tgt]);
    s = reduce_sum(lid, s);
    if lid == 0u {
        let loss = log(s) + m - lt;
        if p.accumulate != 0u {
            losses[row] += loss;
        } else {
            losses[row] = loss;
        }
    }
    if p.grad == 0u {
        return;
    }
    let dloss = p.dloss * scale[0] * norm[0];
    for (var i = lid; i < p.vp; i += WG) {
        var d = 0.0;
        if i < p.v {
            d = (exp(f32(logits[base + i]) - m) / s - select(0.0, 1.0, i == tgt)) * dloss;
        }
        logits[base + i] = S0(d);
    }
}
