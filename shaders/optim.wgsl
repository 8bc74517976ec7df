// Fused optimizer updates over a flat parameter arena: AdamW, LAMB, SGD with momentum, and the
// global gradient norm for clipping.
//
// Legend: P arena elements (params, grads, m, v share one layout), C chunks, T tensors.
// The host cuts every tensor into chunks of at most 16384 elements; one workgroup updates one
// chunk, so one dispatch updates every tensor. Tensors start on 64-element boundaries and each
// chunk is processed as whole vec4s: the last one may run into the padding after a tensor,
// which gets updated too (nothing reads it) but is masked out of every norm.
//
// Formulas (λ = weight decay, applied only to chunks whose tensor has decay set):
//   AdamW (torch.optim.AdamW): θ ← θ(1 − lr·λ); m ← m + (1−β1)(g − m); v ← β2·v + (1−β2)·g²;
//                              θ ← θ − (lr / (1−β1ᵗ)) · m / (√v / √(1−β2ᵗ) + ε)
//   LAMB (You et al. 2019, as optax.lamb): m, v as Adam; u = m̂ / (√v̂ + ε) + λθ;
//                              r = ‖θ‖/‖u‖ per tensor (1 when either is 0); θ ← θ − lr·r·u
//   SGD (torch.optim.SGD, dampening 0): g ← g + λθ; b ← μ·b + g (b = g at the first step);
//                              θ ← θ − lr·b
// Every gradient is first multiplied by the clip scale in scalars[1], which also undoes the
// loss scale S in scalars[3] (1/S when clipping is off or does not bite). When the global
// gradient norm is not finite, scalars[2] is 1 and every update is skipped: parameters and
// moments stay as they were (the numerical guard).
//
// Dynamic loss scaling (as torch.amp.GradScaler): a skipped step halves S and restarts the
// count of clean steps in scalars[4]; after growth_interval clean steps in a row S doubles.
//
// Pruning: with masked set, the lanes whose bit in the prune mask is clear are written as 0
// (parameter, moments and f16 copy), also on a skipped step, so a pruned weight stays exactly
// zero and so do its moments.
//
// Mixed precision: with write_half set, every update also writes the new parameters' f16
// copy (two per u32 word, low half first), rounded to nearest even, or stochastically (the
// round-up probability is the distance to the value below, over the gap) with stochastic set.

const WG: u32 = 256u;

// Mirrors OptimParams in src/optim/mod.rs.
struct Params {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,          // 1 − β1ᵗ
    bc2: f32,          // 1 − β2ᵗ
    bc2_sqrt: f32,     // √(1 − β2ᵗ)
    momentum: f32,
    clip: f32,         // max global norm; 0: off
    first_step: u32,   // 1 at t = 1 (SGD's momentum buffer starts as g)
    chunk_base: u32,   // global index of this dispatch's first chunk
    n_chunks: u32,     // chunks in this dispatch
    total_chunks: u32, // chunks in the arena
    n_tensors: u32,
    write_half: u32,   // 1: write the f16 copy of every updated parameter
    stochastic: u32,   // 1: stochastic rounding of that copy
    seed: u32,         // of the stochastic rounding, per step
    half_off: u32,     // f16 element where the window's params start in the half binding
    dynamic: u32,      // 1: dynamic loss scaling
    growth_interval: u32,
    masked: u32,       // 1: the prune mask applies
    mask_off: u32,     // arena element of the window's first parameter
    has_v: u32,        // 1: v is bound (AdamW, LAMB)
}

// One chunk: elements start .. start + len of the bound window (start a multiple of 4).
struct Chunk {
    start: u32,
    len: u32,
    tensor: u32,
    decay: u32,
}

@group(0) @binding(0) var<storage, read_write> param: array<vec4<f32>>;  // (P)
@group(0) @binding(1) var<storage, read_write> m: array<vec4<f32>>;      // (P) exp_avg; SGD: momentum buffer
@group(0) @binding(2) var<storage, read_write> v: array<vec4<f32>>;      // (P) exp_avg_sq
@group(0) @binding(3) var<storage, read_write> grad: array<vec4<f32>>;   // (P) LAMB stage 1 leaves u here
@group(0) @binding(4) var<storage, read> chunks: array<Chunk>;           // (C) of this dispatch
@group(0) @binding(5) var<storage, read> tensors: array<vec2<u32>>;      // (T) first chunk, chunk count
@group(0) @binding(6) var<storage, read_write> scalars: array<f32>;      // [0] grad norm, [1] clip scale, [2] skip, [3] loss scale, [4] clean steps, [8 + t] LAMB ratio
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;     // (3, C) grad ‖·‖², LAMB ‖θ‖², ‖u‖² per chunk
@group(0) @binding(8) var<uniform> p: Params;
@group(0) @binding(9) var<storage, read_write> half: array<u32>;         // (P / 2) f16 copy of param, when write_half
@group(0) @binding(10) var<storage, read> mask: array<u32>;              // (P / 32) prune mask, bit set = kept, when masked

const LAMB_RATIOS: u32 = 8u;

// The f16 bits of x (f16_round in the prelude): to nearest even, or stochastically.
fn f16_bits(x: f32, r: u32) -> u32 {
    return f16_round(x, r, p.stochastic != 0u);
}

// Writes the f16 copy of the vec4 of params at vec4 index e of the window.
fn store_half(e: u32, x: vec4<f32>) {
    if p.write_half == 0u {
        return;
    }
    let i = p.half_off + 4u * e;   // f16 element, even
    var h: array<u32, 4>;
    for (var k = 0u; k < 4u; k++) {
        h[k] = f16_bits(x[k], hash(p.seed, i + k));
    }
    half[i / 2u] = h[0] | (h[1] << 16u);
    half[i / 2u + 1u] = h[2] | (h[3] << 16u);
}

// The lanes of vec4 e that the prune mask keeps (all without a mask).
fn kept(e: u32) -> vec4<bool> {
    if p.masked == 0u {
        return vec4<bool>(true);
    }
    let i = p.mask_off + 4u * e;   // a multiple of 4: the lanes' bits share a word
    let b = vec4<u32>(mask[i / 32u] >> (i % 32u)) & vec4<u32>(1u, 2u, 4u, 8u);
    return b != vec4<u32>(0u);
}

fn masked4(x: vec4<f32>, k: vec4<bool>) -> vec4<f32> {
    return select(vec4<f32>(0.0), x, k);
}

// A skipped step still zeroes what the mask prunes (a mask may have grown this step).
fn zero_pruned(ch: Chunk, lid: u32) {
    let r = vec4_range(ch);
    for (var e = r.x + lid; e < r.y; e += WG) {
        let k = kept(e);
        if all(k) {
            continue;
        }
        param[e] = masked4(param[e], k);
        m[e] = masked4(m[e], k);
        if p.has_v != 0u {
            v[e] = masked4(v[e], k);
        }
        store_half(e, param[e]);
    }
}

// reduce_sum2 comes from the prelude (shaders/prelude/reduce.wgsl).

// The vec4 range of a chunk.
fn vec4_range(ch: Chunk) -> vec2<u32> {
    let first = ch.start / 4u;
    return vec2<u32>(first, first + (ch.len + 3u) / 4u);
}

// λ where the chunk's tensor takes weight decay, else 0.
fn decay(ch: Chunk) -> f32 {
    return select(0.0, p.weight_decay, ch.decay != 0u);
}

// The chunk an update's workgroup owns, or an empty one (no element to update) past the last
// chunk and on a skipped step, which still zeroes what the mask prunes: the start every
// update entry point shares.
fn update_chunk(wg: Group, lid: u32) -> Chunk {
    let c = group_index(wg);
    if c >= p.n_chunks {
        return Chunk(0u, 0u, 0u, 0u);
    }
    if scalars[2] != 0.0 {
        if p.masked != 0u {
            zero_pruned(chunks[c], lid);
        }
        return Chunk(0u, 0u, 0u, 0u);
    }
    return chunks[c];
}

// θ = x where the mask keeps it (0 where it prunes), and its f16 copy: every update's end.
fn put_param(e: u32, x: vec4<f32>, k: vec4<bool>) {
    let x1 = masked4(x, k);
    param[e] = x1;
    store_half(e, x1);
}

// The lanes of vec4 e that lie before element `end`; the others (padding) read as 0, whatever
// they hold, so they never reach a norm.
fn inside(v: vec4<f32>, e: u32, end: u32) -> vec4<f32> {
    let idx = vec4<u32>(4u * e) + vec4<u32>(0u, 1u, 2u, 3u);
    return select(vec4<f32>(0.0), v, idx < vec4<u32>(end));
}


@compute @workgroup_size(WG)
fn adamw_update(wg: Group, @builtin(local_invocation_index) lid: u32) {
    let ch = update_chunk(wg, lid);
    let wd = decay(ch);
    let step_size = p.lr / p.bc1;
    let scale = scalars[1];
    let r = vec4_range(ch);
    for (var e = r.x + lid; e < r.y; e += WG) {
        let k = kept(e);
        let g = grad[e] * scale;
        let m0 = m[e];
        let m1 = m0 + (1.0 - p.beta1) * (g - m0);
        let v1 = p.beta2 * v[e] + (1.0 - p.beta2) * g * g;
        m[e] = masked4(m1, k);
        v[e] = masked4(v1, k);
        let x = param[e] * (1.0 - p.lr * wd);
        put_param(e, x - step_size * m1 / (sqrt(v1) / p.bc2_sqrt + p.eps), k);
    }
}

@compute @workgroup_size(WG)
fn sgd_update(wg: Group, @builtin(local_invocation_index) lid: u32) {
    let ch = update_chunk(wg, lid);
    let wd = decay(ch);
    let scale = scalars[1];
    let r = vec4_range(ch);
    for (var e = r.x + lid; e < r.y; e += WG) {
        let k = kept(e);
        let x = param[e];
        var d = grad[e] * scale + wd * x;
        if p.momentum != 0.0 {
            if p.first_step == 0u {
                d = p.momentum * m[e] + d;
            }
            m[e] = masked4(d, k);
        }
        put_param(e, x - p.lr * d, k);
    }
}

// LAMB 1/3: moments, the update u (into grad), and each chunk's ‖θ‖² and ‖u‖².
@compute @workgroup_size(WG)
fn lamb_moments(wg: Group, @builtin(local_invocation_index) lid: u32) {
    let c = group_index(wg);
    if c >= p.n_chunks { return; }
    let ch = chunks[c];
    let wd = decay(ch);
    let scale = scalars[1];
    let r = vec4_range(ch);
    // Skipping runs no iteration but keeps the reduction's barriers in uniform control flow.
    let end = select(r.y, r.x, scalars[2] != 0.0);
    var sq = vec2<f32>(0.0);
    for (var e = r.x + lid; e < end; e += WG) {
        let k = kept(e);
        let g = grad[e] * scale;
        let m1 = masked4(p.beta1 * m[e] + (1.0 - p.beta1) * g, k);
        let v1 = masked4(p.beta2 * v[e] + (1.0 - p.beta2) * g * g, k);
        m[e] = m1;
        v[e] = v1;
        let x = param[e];
        let u = masked4((m1 / p.bc1) / (sqrt(v1 / p.bc2) + p.eps) + wd * x, k);
        grad[e] = u;
        let xi = inside(x, e, ch.start + ch.len);
        let ui = inside(u, e, ch.start + ch.len);
        sq += vec2<f32>(dot(xi, xi), dot(ui, ui));
    }
    let s = reduce_sum2(lid, sq);
    if lid == 0u {
        let gc = p.chunk_base + c;
        partials[p.total_chunks + gc] = s.x;
        partials[2u * p.total_chunks + gc] = s.y;
    }
}

// LAMB 2/3: one workgroup per tensor folds its chunks' sums into the trust ratio.
@compute @workgroup_size(WG)
fn lamb_norms(wg: Group, @builtin(local_invocation_index) lid: u32) {
    let t = group_index(wg);
    if t >= p.n_tensors { return; }
    let range = tensors[t];
    var sq = vec2<f32>(0.0);
    for (var i = lid; i < range.y; i += WG) {
        let gc = range.x + i;
        sq += vec2<f32>(partials[p.total_chunks + gc], partials[2u * p.total_chunks + gc]);
    }
    let s = reduce_sum2(lid, sq);
    if lid == 0u {
        let norm_x = sqrt(s.x);
        let norm_u = sqrt(s.y);
        scalars[LAMB_RATIOS + t] = select(1.0, norm_x / norm_u, norm_x > 0.0 && norm_u > 0.0);
    }
}

// LAMB 3/3: θ ← θ − lr·r·u.
@compute @workgroup_size(WG)
fn lamb_apply(wg: Group, @builtin(local_invocation_index) lid: u32) {
    let ch = update_chunk(wg, lid);
    let step_size = p.lr * scalars[LAMB_RATIOS + ch.tensor];
    let r = vec4_range(ch);
    for (var e = r.x + lid; e < r.y; e += WG) {
        put_param(e, param[e] - step_size * grad[e], kept(e));
    }
}

// The f16 copy of every parameter of the window, without an update (after loading them, and
// after ZeRO-1 gathers other ranks' shards).
@compute @workgroup_size(WG)
fn half_copy(wg: Group, @builtin(local_invocation_index) lid: u32) {
    let c = group_index(wg);
    if c >= p.n_chunks { return; }
    let r = vec4_range(chunks[c]);
    for (var e = r.x + lid; e < r.y; e += WG) {
        store_half(e, param[e]);
    }
}

// The global norm 1/2 (clipping and the guard): each chunk's Σg².
@compute @workgroup_size(WG)
fn grad_norm_partials(wg: Group, @builtin(local_invocation_index) lid: u32) {
    let c = group_index(wg);
    if c >= p.n_chunks { return; }
    var s = 0.0;
    let ch = chunks[c];
    let r = vec4_range(ch);
    for (var e = r.x + lid; e < r.y; e += WG) {
        let g = inside(grad[e], e, ch.start + ch.len);
        s += dot(g, g);
    }
    let total = reduce_sum2(lid, vec2<f32>(s, 0.0));
    if lid == 0u {
        partials[p.chunk_base + c] = total.x;
    }
}

// The global norm 2/3: one workgroup sums every chunk (compensated per thread, pairwise
// across threads) into scalars[0], the norm of the scaled gradients. Under ZeRO-1 the host
// replaces it with the norm over every rank's shard before grad_norm_apply.
@compute @workgroup_size(WG)
fn grad_norm_finish(@builtin(local_invocation_index) lid: u32) {
    var sum = 0.0;
    var comp = 0.0;
    for (var i = lid; i < p.total_chunks; i += WG) {
        let y = partials[i] - comp;
        let t = sum + y;
        comp = (t - sum) - y;
        sum = t;
    }
    let total = reduce_sum2(lid, vec2<f32>(sum, 0.0));
    if lid == 0u {
        scalars[0] = sqrt(total.x);
    }
}

// The global norm 3/3, one thread: the norm of the true gradients (scaled norm / S), the
// step's gradient factor (clip scale / S, as torch.nn.utils.clip_grad_norm_ computes the clip
// scale min(1, clip / (norm + 1e-6))), the skip flag, and the next loss scale.
@compute @workgroup_size(1)
fn grad_norm_apply() {
    let s = scalars[3];
    let norm = scalars[0] / s;
    // Inf or NaN: all exponent bits set. Checked on the bits, so no fast-math can drop it.
    let bad = (bitcast<u32>(norm) & 0x7f800000u) == 0x7f800000u;
    let clip = select(1.0, min(1.0, p.clip / (norm + 1e-6)), p.clip > 0.0);
    scalars[0] = norm;
    scalars[1] = select(clip / s, 0.0, bad);
    scalars[2] = select(0.0, 1.0, bad);
    if p.dynamic != 0u {
        if bad {
            scalars[3] = s * 0.5;
            scalars[4] = 0.0;
        } else if scalars[4] + 1.0 >= f32(p.growth_interval) {
            scalars[3] = s * 2.0;
            scalars[4] = 0.0;
        } else {
            scalars[4] = scalars[4] + 1.0;
        }
    }
}
