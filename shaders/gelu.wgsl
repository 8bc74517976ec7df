// GELU with the tanh approximation (GPT-2's gelu_new), forward and backward.
//
// Legend: N elements.
//
//   gelu_forward    out = ½x(1 + tanh(s(x + 0.044715x³))), s = √(2/π)
//   gelu_backward   dinp += dout · (½(1 + t) + ½x(1 − t²)·s(1 + 3·0.044715x²)), t = tanh(…),
//                   with 1 − t² computed as 1/cosh²

const WG: u32 = 256u;
const PER_GROUP: u32 = 4096u;   // elements per workgroup, WG apart per thread
const S: f32 = 0.7978845608028654;
const K: f32 = 0.044715;

// Mirrors GeluParams in src/kernels/gelu.rs.
struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<S0>;    // forward out (N); backward dinp (N)
@group(0) @binding(1) var<storage, read> inp: array<S1>;          // (N)
@group(0) @binding(2) var<storage, read> dout: array<S2>;         // (N), backward only
@group(0) @binding(3) var<uniform> p: Params;

// The argument of tanh, clamped: past ±15 tanh is ±1 in f32, and no exp can overflow.
fn inner(x: f32) -> f32 {
    return clamp(S * (x + K * x * x * x), -15.0, 15.0);
}

fn range(g: Group) -> vec2<u32> {
    let first = group_index(g) * PER_GROUP;
    return vec2<u32>(first, min(first + PER_GROUP, p.n));
}

@compute @workgroup_size(WG)
fn gelu_forward(g: Group, @builtin(local_invocation_index) lid: u32) {
    let r = range(g);
    for (var i = r.x + lid; i < r.y; i += WG) {
        let x = f32(inp[i]);
        out[i] = S0(0.5 * x * (1.0 + tanh(inner(x))));
    }
}

@compute @workgroup_size(WG)
fn gelu_backward(g: Group, @builtin(local_invocation_index) lid: u32) {
    let r = range(g);
    for (var i = r.x + lid; i < r.y; i += WG) {
        let x = f32(inp[i]);
        let u = inner(x);
        // 1 − tanh² as 1/cosh²: no cancellation where tanh is near ±1.
        let ch = cosh(u);
        let local = 0.5 * (1.0 + tanh(u)) + 0.5 * x * S * (1.0 + 3.0 * K * x * x) / (ch * ch);
        out[i] = S0(f32(out[i]) + local * f32(dout[i]));
    }
}
