// Fused knowledge-distillation loss: the student's softmax, the teacher's and the student's
// at temperature T, the cross-entropy, the KL divergence and the student's logit gradient, in
// one workgroup per row. The gradient overwrites the student's logits.
//
// Legend: N rows (B·T), V vocab, Vp row length of the logits, z the student's logits, u the
// teacher's, y the target, W the KD weight.
//
//   ce  = log Σ_i exp(z_i) − z_y
//   kd  = T² · KL(softmax(u/T) ‖ softmax(z/T))
//       = T² · [ Σ_i p_i (u_i − z_i)/T − (max u − max z)/T − log Σ exp((u−max u)/T) + log Σ exp((z−max z)/T) ]
//         with p = softmax(u/T)
//   loss = (1 − W)·ce + W·kd                      (each added to its row: micro-batches sum)
//   dz_i = dloss · S · [ (1 − W)(softmax(z)_i − [i = y]) + W·T·(softmax(z/T)_i − p_i) ]   (0 past V)
//
// S is the loss scale in scale[0]. The student's logits may be f16 (S0); the teacher's are
// f32; everything is computed in f32.

const WG: u32 = 256u;

// Mirrors DistillParams in src/kernels/distill.rs.
struct Params {
    n: u32,
    v: u32,
    vp: u32,
    grad: u32,        // 1: write dz over z
    dloss: f32,       // 1/(N·K)
    inv_t: f32,       // 1/T
    temp: f32,        // T
    weight: f32,      // W
    stride: u32,      // the kd parts' offset in `parts`: the whole batch's N (n is the window's)
    _pad: vec3<u32>,
}

@group(0) @binding(0) var<storage, read_write> logits: array<S0>;   // (N, Vp): z in, dz out
@group(0) @binding(1) var<storage, read> teacher: array<f32>;       // (N, Vp): u
@group(0) @binding(2) var<storage, read_write> losses: array<f32>;  // (N) the objective
@group(0) @binding(3) var<storage, read_write> parts: array<f32>;   // ce at row, kd at stride + row
@group(0) @binding(4) var<storage, read> targets: array<u32>;       // (N)
@group(0) @binding(5) var<storage, read> scale: array<f32>;         // [0] loss scale
@group(0) @binding(6) var<uniform> p: Params;

// reduce_max, reduce_sum2 come from the prelude (shaders/prelude/reduce.wgsl).

@compute @workgroup_size(WG)
fn distill_forward_backward(g: Group, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(g);
    if row >= p.n { return; }
    let tgt = min(targets[row], p.v - 1u);
    let base = row * p.vp;
    var mz = -3.0e38;
    var mu = -3.0e38;
    for (var i = lid; i < p.v; i += WG) {
        mz = max(mz, f32(logits[base + i]));
        mu = max(mu, teacher[base + i]);
    }
    mz = reduce_max(lid, mz);
    mu = reduce_max(lid, mu);
    // sz = Σ exp(z − mz), szt = Σ exp((z − mz)/T), su = Σ exp((u − mu)/T), cross = Σ that · (u − z).
    var a = vec2<f32>(0.0);
    var b = vec2<f32>(0.0);
    for (var i = lid; i < p.v; i += WG) {
        let z = f32(logits[base + i]);
        let u = teacher[base + i];
        let eu = exp((u - mu) * p.inv_t);
        a += vec2<f32>(exp(z - mz), exp((z - mz) * p.inv_t));
        b += vec2<f32>(eu, eu * (u - z));
    }
    // Every thread reads the target's logit before the barriers below, so before any write.
    let zy = f32(logits[base + tgt]);
    a = reduce_sum2(lid, a);
    b = reduce_sum2(lid, b);
    if lid == 0u {
        let ce = log(a.x) + mz - zy;
        let kl = (b.y / b.x - (mu - mz)) * p.inv_t - log(b.x) + log(a.y);
        let kd = p.temp * p.temp * max(kl, 0.0);
        losses[row] += (1.0 - p.weight) * ce + p.weight * kd;
        parts[row] += ce;
        parts[p.stride + row] += kd;
    }
    if p.grad == 0u {
        return;
    }
    let dloss = p.dloss * scale[0];
    for (var i = lid; i < p.vp; i += WG) {
        var d = 0.0;
        if i < p.v {
            let z = f32(logits[base + i]);
            let q = exp((z - mz) * p.inv_t) / a.y;
            let pt = exp((teacher[base + i] - mu) * p.inv_t) / b.x;
            let hard = exp(z - mz) / a.x - select(0.0, 1.0, i == tgt);
            d = ((1.0 - p.weight) * hard + p.weight * p.temp * (q - pt)) * dloss;
        }
        logits[base + i] = S0(d);
    }
}
