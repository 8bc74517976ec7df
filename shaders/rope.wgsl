// Rotary position embedding in HF's convention (rotate_half: element i of a head pairs with
// i + d/2), applied in place to the heads of q or k inside a row-major (N, stride) buffer, and
// its backward (the inverse rotation, applied in place to the gradient).
//
// Legend: N rows (B·T), T sequence length, H heads from column `col`, D head size, position
// of row n = n mod T + pos_off (the decoder's offset).
//
//   rope_apply  (x_i, x_{i+D/2}) ← (x_i·cos − x_{i+D/2}·sin, x_{i+D/2}·cos + x_i·sin)
//               with (cos, sin) of angle position · θ^(−2i/D) from the host's table;
//               inverse: the same with sin negated (the transpose, for the backward)
//
// One thread per (row, head, i < D/2). The table holds the angles' cosines and sines, made on
// the host as HF makes them (inv_freq and position·inv_freq in f32), so no shader evaluates a
// trigonometric function of a large argument.

// Mirrors RopeParams in src/kernels/rope.rs.
struct Params {
    n: u32,
    t: u32,
    heads: u32,
    d: u32,
    stride: u32,
    col: u32,
    pos_off: u32,
    inverse: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<S0>;          // (N, stride)
@group(0) @binding(1) var<storage, read> table: array<vec2<f32>>;     // (positions, D/2) cos, sin
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn rope_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let half = p.d / 2u;
    let e = gid.x + gid.y * groups.x * 256u;
    if e >= p.n * p.heads * half {
        return;
    }
    let i = e % half;
    let h = (e / half) % p.heads;
    let row = e / (half * p.heads);
    let pos = row % p.t + p.pos_off;
    var cs = table[pos * half + i];
    if p.inverse != 0u {
        cs.y = -cs.y;
    }
    let at = row * p.stride + p.col + h * p.d + i;
    let a = f32(x[at]);
    let b = f32(x[at + half]);
    x[at] = S0(a * cs.x - b * cs.y);
    x[at + half] = S0(b * cs.x + a * cs.y);
}
