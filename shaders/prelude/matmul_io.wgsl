// Prelude: what the matmul shaders share (matmul.wgsl, matmul_coop.wgsl): the uniform, the
// bindings, element loads and the output store.

// Mirrors MatmulParams in src/kernels/matmul.rs. Offsets and strides count elements of the
// operand's own type: S0..S3 (f32 or f16, shaders/prelude: types) for out, a, b and bias.
// Every product is accumulated in f32, whatever the operands hold.
struct Params {
    m: u32,
    n: u32,
    k: u32,
    accumulate: u32,   // 1: out += result, 0: out = result
    off_out: u32,
    off_a: u32,
    off_b: u32,
    off_bias: u32,
    ld_out: u32,
    ld_a: u32,
    ld_b: u32,
    has_bias: u32,
    batch_out: u32,    // element stride between batch entries, 0 when shared
    batch_a: u32,
    batch_b: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<S0>;    // forward (Z, M, N), backward_input (Z, M, K), backward_weight (N, K), backward_bias (N)
@group(0) @binding(1) var<storage, read> a: array<vec4<S1>>;      // forward inp (Z, M, K), backward dout (Z, M, N)
@group(0) @binding(2) var<storage, read> b: array<vec4<S2>>;      // forward and backward_input W (N, K), backward_weight inp (Z, M, K)
@group(0) @binding(3) var<storage, read> bias: array<S3>;         // (N), forward only
@group(0) @binding(4) var<uniform> p: Params;

// Element e of a or b, in f32.
fn elem_a(e: u32) -> f32 {
    return f32(a[e >> 2u][e & 3u]);
}

fn elem_b(e: u32) -> f32 {
    return f32(b[e >> 2u][e & 3u]);
}

// The self-test of the verifications that must catch a wrong kernel (`wgtrain check`, the
// tuner): 1 corrupts the first output element of every dispatch. The host sets it only for
// the variant that Gpu::corrupt names.
override CORRUPT: u32 = 0u;

// Accumulates into (accumulate) or writes output element e, with the bias of column c.
fn store_out(e: u32, c: u32, value: f32) {
    var v = value;
    if CORRUPT != 0u && e == p.off_out {
        v += 1.0;
    }
    if p.has_bias != 0u {
        v += f32(bias[c]);
    }
    if p.accumulate != 0u {
        v += f32(out[e]);
    }
    out[e] = S0(v);
}


// C (R, S) = Σ_t A(r, t) · B(s, t) as `product` (0 forward, 1 backward_input, 2
// backward_weight) lays it over the operands: A(r, t) at oa + r·ar + t·at, B(s, t) at
// ob + s·bs + t·bt.
struct Layout {
    rows: u32,
    cols: u32,
    inner: u32,
    ar: u32,
    at: u32,
    bs: u32,
    bt: u32,
}

fn product_layout(product: u32) -> Layout {
    if product == 1u {
        return Layout(p.m, p.k, p.n, p.ld_a, 1u, 1u, p.ld_b);
    }
    if product == 2u {
        return Layout(p.n, p.k, p.m, 1u, p.ld_a, 1u, p.ld_b);
    }
    return Layout(p.m, p.n, p.k, p.ld_a, 1u, p.ld_b, 1u);
}

// Where element e of a tile load lands: (side index, t) of a tile `side` long and `depth`
// deep. Down-column operands (unit stride along the side) walk the side fastest, the others
// t, so consecutive threads read consecutive addresses either way.
fn tile_pos(e: u32, side: u32, depth: u32, down: bool) -> vec2<u32> {
    if down {
        return vec2<u32>(e % side, e / side);
    }
    return vec2<u32>(e / depth, e % depth);
}

// A(r, t) and B(s, t) of the layout, 0 outside the problem.
fn a_at(lay: Layout, oa: u32, r: u32, t: u32) -> f32 {
    if r < lay.rows && t < lay.inner {
        return elem_a(oa + r * lay.ar + t * lay.at);
    }
    return 0.0;
}

fn b_at(lay: Layout, ob: u32, s: u32, t: u32) -> f32 {
    if s < lay.cols && t < lay.inner {
        return elem_b(ob + s * lay.bs + t * lay.bt);
    }
    return 0.0;
}
