// SwiGLU's gating, the middle of Llama's MLP down(silu(gate(x)) · up(x)), forward and
// backward, elementwise.
//
// Legend: N elements (rows × intermediate size), σ the logistic function.
//
//   swiglu_forward   out = silu(g)·u,  silu(g) = g·σ(g)
//   swiglu_backward  dgate = dout·u·σ(g)(1 + g(1 − σ(g))),  dup = dout·silu(g)  (both written)
//
// σ(g) = 1/(1 + exp(−g)) with g clamped to ±80 inside exp, so no exp overflows; past that σ
// is 0 or 1 in f32 anyway.

const WG: u32 = 256u;

// Mirrors SwigluParams in src/kernels/swiglu.rs.
struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<S0>;    // forward out (N); backward dgate (N)
@group(0) @binding(1) var<storage, read_write> out2: array<S1>;   // backward dup (N)
@group(0) @binding(2) var<storage, read> gate: array<S2>;         // (N)
@group(0) @binding(3) var<storage, read> up: array<S3>;           // (N)
@group(0) @binding(4) var<storage, read> dout: array<S4>;         // (N), backward only
@group(0) @binding(5) var<uniform> p: Params;

fn flat(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WG;
}

fn sigmoid(g: f32) -> f32 {
    return 1.0 / (1.0 + exp(-clamp(g, -80.0, 80.0)));
}

@compute @workgroup_size(WG)
fn swiglu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if i >= p.n { return; }
    let g = f32(gate[i]);
    out[i] = S0(g * sigmoid(g) * f32(up[i]));
}

@compute @workgroup_size(WG)
fn swiglu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if i >= p.n { return; }
    let g = f32(gate[i]);
    let s = sigmoid(g);
    let d = f32(dout[i]);
    out[i] = S0(d * f32(up[i]) * s * (1.0 + g * (1.0 - s)));
    out2[i] = S1(d * g * s);
}
