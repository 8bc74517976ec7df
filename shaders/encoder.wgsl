// Token + position embedding, forward and backward.
//
// Legend: B batch, T time, C channels, V vocab, N = B·T positions, U distinct tokens in a batch.
//
//   encoder_forward       out[b, t] = wte[tok[b, t]] + wpe[pos0 + t]
//   encoder_backward_wpe  dwpe[t] += Σ_b dout[b, t]
//   encoder_backward_wte  dwte[v] += Σ over positions holding v of dout[position]
//
// The wte gradient needs no atomics: the host groups the batch's positions by token when it
// loads the batch (it has the tokens anyway), and one workgroup sums each token's positions in
// ascending order, so the result is the same on every run.

const WG: u32 = 256u;

// Mirrors EncoderParams in src/kernels/encoder.rs.
struct Params {
    n: u32,   // B·T
    t: u32,
    c: u32,
    buckets: u32,   // bucket slots; unused ones have count 0
    pos0: u32,      // position of the first row (decoding one token at a time)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;    // forward out (N, C); dwte (V, C); dwpe (T, C)
@group(0) @binding(1) var<storage, read> tokens: array<u32>;       // forward (N) token ids; wte backward: positions grouped by token
@group(0) @binding(2) var<storage, read> buckets: array<vec4<u32>>; // (U) token, first position, count, 0
@group(0) @binding(3) var<storage, read> a: array<f32>;            // forward wte (V, C); backward dout (N, C)
@group(0) @binding(4) var<storage, read> b: array<f32>;            // forward wpe (T, C)
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn encoder_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = gid.x + gid.y * groups.x * WG;
    if e >= p.n * p.c {
        return;
    }
    let pos = e / p.c;
    let ch = e % p.c;
    out[e] = a[tokens[pos] * p.c + ch] + b[(p.pos0 + pos % p.t) * p.c + ch];
}

@compute @workgroup_size(WG)
fn encoder_backward_wpe(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = gid.x + gid.y * groups.x * WG;   // over (T, C)
    if e >= p.t * p.c {
        return;
    }
    var s = 0.0;
    for (var pos = e / p.c; pos < p.n; pos += p.t) {
        s += a[pos * p.c + e % p.c];
    }
    out[e] += s;
}

@compute @workgroup_size(WG)
fn encoder_backward_wte(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32) {
    let u = wid.x + wid.y * groups.x;
    if u >= p.buckets {
        return;
    }
    let bk = buckets[u];
    if bk.z == 0u {
        return;
    }
    for (var ch = lid; ch < p.c; ch += WG) {
        var s = 0.0;
        for (var i = 0u; i < bk.z; i++) {
            s += a[tokens[bk.y + i] * p.c + ch];
        }
        out[bk.x * p.c + ch] += s;
    }
}
