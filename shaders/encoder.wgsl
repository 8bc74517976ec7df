// Token + position embedding, forward and backward.
//
// Legend: B batch, T time, C channels, V vocab, N = B·T positions, U distinct tokens in a batch.
//
//   encoder_forward       out[b, t] = wte[tok[b, t]] (+ wpe[pos0 + t] where the model has wpe)
//   encoder_backward_wpe  dwpe[t] += Σ_b dout[b, t]
//   encoder_order         positions = 0..N sorted by (token, position)
//   encoder_backward_wte  dwte[v] += Σ over positions holding v of dout[position]
//
// The wte gradient needs no atomics: encoder_order ranks every position by (token, position)
// (a stable sort by counting, O(N²/WG) reads of workgroup memory), and one workgroup then
// sums each token's positions in ascending order, so the result is the same on every run.
// Both run on the GPU, so a batch costs nothing on the host beyond its token ids.

const WG: u32 = 256u;

// Mirrors EncoderParams in src/kernels/encoder.rs.
struct Params {
    n: u32,   // B·T
    t: u32,
    c: u32,
    wpe: u32,       // 1 adds wpe (GPT-2), 0 none (Llama: RoPE in the attention)
    pos0: u32,      // position of the first row (decoding one token at a time)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<S0>;        // forward out (N, C); dwte (V, C); dwpe (T, C)
@group(0) @binding(1) var<storage, read> tokens: array<u32>;          // (N) token ids
@group(0) @binding(2) var<storage, read_write> positions: array<u32>; // (N) positions by (token, position)
@group(0) @binding(3) var<storage, read> a: array<S3>;             // forward wte (V, C); backward dout (N, C)
@group(0) @binding(4) var<storage, read> b: array<f32>;            // forward wpe (T, C)
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn encoder_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = gid.x + gid.y * groups.x * WG;
    if e >= p.n * p.c { return; }
    let pos = e / p.c;
    let ch = e % p.c;
    var x = f32(a[tokens[pos] * p.c + ch]);
    if p.wpe != 0u {
        x += b[(p.pos0 + pos % p.t) * p.c + ch];
    }
    out[e] = S0(x);
}

@compute @workgroup_size(WG)
fn encoder_backward_wpe(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = gid.x + gid.y * groups.x * WG;   // over (T, C)
    if e >= p.t * p.c {
        return;
    }
    var s = 0.0;
    for (var pos = e / p.c; pos < p.n; pos += p.t) {
        s += f32(a[pos * p.c + e % p.c]);
    }
    out[e] = S0(f32(out[e]) + s);
}

var<workgroup> tile: array<u32, WG>;

// One thread per position i: its rank is the number of positions j with (tok[j], j) <
// (tok[i], i), counted over tiles of WG tokens in workgroup memory; positions[rank] = i.
@compute @workgroup_size(WG)
fn encoder_order(g: Group, @builtin(local_invocation_index) lid: u32) {
    let i = group_index(g) * WG + lid;
    let mine = tokens[min(i, p.n - 1u)];
    var rank = 0u;
    for (var base = 0u; base < p.n; base += WG) {
        tile[lid] = tokens[min(base + lid, p.n - 1u)];
        workgroupBarrier();
        let m = min(WG, p.n - base);
        for (var k = 0u; k < m; k++) {
            let tj = tile[k];
            rank += select(0u, 1u, tj < mine || (tj == mine && base + k < i));
        }
        workgroupBarrier();
    }
    if i < p.n {
        positions[rank] = i;
    }
}

// One workgroup per sorted slot r: the slot that starts a token's run sums the run's rows
// (ascending positions); the others return.
@compute @workgroup_size(WG)
fn encoder_backward_wte(g: Group, @builtin(local_invocation_index) lid: u32) {
    let r = group_index(g);
    if r >= p.n { return; }
    let tok = tokens[positions[r]];
    if r > 0u && tokens[positions[r - 1u]] == tok {
        return;
    }
    var end = r + 1u;
    while end < p.n && tokens[positions[end]] == tok {
        end++;
    }
    for (var ch = lid; ch < p.c; ch += WG) {
        var s = 0.0;
        for (var k = r; k < end; k++) {
            s += f32(a[positions[k] * p.c + ch]);
        }
        out[tok * p.c + ch] = S0(f32(out[tok * p.c + ch]) + s);
    }
}
