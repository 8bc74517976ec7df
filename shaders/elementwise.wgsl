// Elementwise kernels over vec4: the bandwidth ceiling (copy) and the building blocks of an
// unfused optimizer, one operation per dispatch as a generic framework runs it.
//
// Legend: N vec4 elements of one tensor window.
//
//   copy             y = x1
//   scale            y = y · s0
//   lerp             y = y + s0 · (x1 − y)
//   mul_addcmul      y = y · s0 + s1 · x1 · x1
//   sqrt_div_add     y = √x1 / s0 + s1
//   addcdiv          y = y + s0 · x1 / x2
//   add              y = x1 + x2            (residual forward)
//   accumulate       y = y + x1             (residual backward, tied weights)
//   dropout          y = x1 · keep · scale   (LoRA's input dropout; dropout_add: y += that)
//
// dropout's x2 is one vec4 of f32 bits, written by the host per micro-batch: the seed, the
// threshold (u32 bits: an element is kept when hash(seed ^ salt, element) >= threshold),
// the scale 1 / (1 − p), unused. Threshold 0 and scale 1 (evaluation) keep everything as it
// is. s0 is the salt (an integer, per adapter), so that each adapter draws its own mask.
//
// Spans are processed as whole vec4s: a span of a length that is not a multiple of 4 writes
// up to 3 elements past its end, which the 64-element tensor layouts leave as padding.

const WG: u32 = 256u;

// Mirrors ElementwiseParams in src/kernels/elementwise.rs.
struct Params {
    n: u32,       // vec4 elements
    grid_x: u32,  // workgroups along x; the group index is x + y·grid_x
    s0: f32,
    s1: f32,
}

@group(0) @binding(0) var<storage, read_write> y: array<vec4<S0>>;   // (N)
@group(0) @binding(1) var<storage, read> x1: array<vec4<S1>>;        // (N)
@group(0) @binding(2) var<storage, read> x2: array<vec4<S2>>;        // (N)
@group(0) @binding(3) var<uniform> p: Params;

// A workgroup covers PER_GROUP vec4, its threads WG apart (as the optimizer kernels' chunks).
const PER_GROUP: u32 = 4096u;

// Loads in f32, whatever the bindings hold (S0..S2: f32 or f16, from the host).
fn ld_y(e: u32) -> vec4<f32> {
    return vec4<f32>(y[e]);
}

fn ld_x1(e: u32) -> vec4<f32> {
    return vec4<f32>(x1[e]);
}

fn ld_x2(e: u32) -> vec4<f32> {
    return vec4<f32>(x2[e]);
}

// The vec4 range of this workgroup.
fn range(wid: vec3<u32>) -> vec2<u32> {
    let first = (wid.x + wid.y * p.grid_x) * PER_GROUP;
    return vec2<u32>(first, min(first + PER_GROUP, p.n));
}

@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = range(wid);
    for (var e = r.x + lid; e < r.y; e += WG) {
        y[e] = vec4<S0>(x1[e]);
    }
}

@compute @workgroup_size(WG)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = range(wid);
    for (var e = r.x + lid; e < r.y; e += WG) {
        y[e] = vec4<S0>(ld_y(e) * p.s0);
    }
}

@compute @workgroup_size(WG)
fn lerp(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = range(wid);
    for (var e = r.x + lid; e < r.y; e += WG) {
        let a = ld_y(e);
        y[e] = vec4<S0>(a + p.s0 * (ld_x1(e) - a));
    }
}

@compute @workgroup_size(WG)
fn mul_addcmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = range(wid);
    for (var e = r.x + lid; e < r.y; e += WG) {
        let g = ld_x1(e);
        y[e] = vec4<S0>(ld_y(e) * p.s0 + p.s1 * g * g);
    }
}

@compute @workgroup_size(WG)
fn sqrt_div_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = range(wid);
    for (var e = r.x + lid; e < r.y; e += WG) {
        y[e] = vec4<S0>(sqrt(ld_x1(e)) / p.s0 + p.s1);
    }
}

@compute @workgroup_size(WG)
fn addcdiv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = range(wid);
    for (var e = r.x + lid; e < r.y; e += WG) {
        y[e] = vec4<S0>(ld_y(e) + p.s0 * ld_x1(e) / ld_x2(e));
    }
}

// Residual forward: y = x1 + x2.
@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = range(wid);
    for (var e = r.x + lid; e < r.y; e += WG) {
        y[e] = vec4<S0>(ld_x1(e) + ld_x2(e));
    }
}

// Gradient accumulation (residual backward, weight tying): y += x1.
@compute @workgroup_size(WG)
fn accumulate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = range(wid);
    for (var e = r.x + lid; e < r.y; e += WG) {
        y[e] = vec4<S0>(ld_y(e) + ld_x1(e));
    }
}

// The dropout factors of vec4 element e: keep · scale, per lane.
fn dropped(e: u32) -> vec4<f32> {
    let key = x2[0];
    let seed = bitcast<u32>(f32(key.x)) ^ u32(p.s0);
    let threshold = bitcast<u32>(f32(key.y));
    var f: vec4<f32>;
    for (var i = 0u; i < 4u; i++) {
        f[i] = select(0.0, f32(key.z), hash(seed, 4u * e + i) >= threshold);
    }
    return f;
}

@compute @workgroup_size(WG)
fn dropout(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = range(wid);
    for (var e = r.x + lid; e < r.y; e += WG) {
        y[e] = vec4<S0>(ld_x1(e) * dropped(e));
    }
}

@compute @workgroup_size(WG)
fn dropout_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = range(wid);
    for (var e = r.x + lid; e < r.y; e += WG) {
        y[e] = vec4<S0>(ld_y(e) + ld_x1(e) * dropped(e));
    }
}
