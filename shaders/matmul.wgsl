// Matrix multiply of a linear layer, forward and backward.
//
// Legend: M rows (B*T flattened, or one batch entry), K input features, N output features,
// Z batch entries (the dispatch's z dimension; a weight shared by the batch has stride 0).
//
// Weight layout: W is (N, K) row-major, as torch.nn.Linear stores it. HF GPT-2's Conv1D
// weights are (K, N) and are transposed once at load time.
//
//   matmul_forward          out (M, N)   = inp (M, K) · W (N, K)ᵀ + bias (N)
//   matmul_backward_input   dinp (M, K)  = dout (M, N) · W (N, K)      (+= when accumulate)
//   matmul_backward_weight  dW (N, K)   += dout (M, N)ᵀ · inp (M, K)
//   matmul_backward_bias    dbias (N)   += Σ_m dout (M, N)
//   matmul_naive            out (M, N)   = inp · Wᵀ + bias, one thread per output (baseline)
//
// Every operand is row-major with a leading dimension (row stride) and an element offset into
// its binding, so the host can bind windows of buffers larger than a binding may be.
//
// The three products share one scheme: each thread owns a 4×4 block of the output, a
// workgroup of WG_X × WG_Y threads owns a (4·WG_Y) × (4·WG_X) tile, and the inner dimension
// is walked 4 at a time with vec4 loads and a mat4x4 product. No workgroup memory: on the
// software adapters, and for these block sizes, the caches do better than barriers.
// ALIGNED (every offset and leading dimension of a and b a multiple of 4) makes each load a
// single vec4; otherwise a load joins two vec4 and shifts.

// Workgroup shape of the tiled and naive kernels.
override WG_X: u32 = 8u;
override WG_Y: u32 = 8u;
// True when the host has checked that a and b are vec4-aligned.
override ALIGNED: bool = true;

// Mirrors MatmulParams in src/kernels/matmul.rs. Offsets and strides count f32 elements.
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

@group(0) @binding(0) var<storage, read_write> out: array<f32>;   // forward (Z, M, N), backward_input (Z, M, K), backward_weight (N, K), backward_bias (N)
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;     // forward inp (Z, M, K), backward dout (Z, M, N)
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;     // forward and backward_input W (N, K), backward_weight inp (Z, M, K)
@group(0) @binding(3) var<storage, read> bias: array<f32>;        // (N), forward only
@group(0) @binding(4) var<uniform> p: Params;

// Four consecutive floats starting at element e.
fn shift4(lo: vec4<f32>, hi: vec4<f32>, r: u32) -> vec4<f32> {
    switch r {
        case 0u: { return lo; }
        case 1u: { return vec4<f32>(lo.yzw, hi.x); }
        case 2u: { return vec4<f32>(lo.zw, hi.xy); }
        default: { return vec4<f32>(lo.w, hi.xyz); }
    }
}

fn load_a(e: u32) -> vec4<f32> {
    if ALIGNED {
        return a[e >> 2u];
    }
    let q = e >> 2u;
    return shift4(a[q], a[q + 1u], e & 3u);
}

fn load_b(e: u32) -> vec4<f32> {
    if ALIGNED {
        return b[e >> 2u];
    }
    let q = e >> 2u;
    return shift4(b[q], b[q + 1u], e & 3u);
}

// Lanes i with start + i < end keep their value, the others become 0. Masking both operands
// keeps garbage read past a row (possibly NaN) out of the sums.
fn keep(v: vec4<f32>, start: u32, end: u32) -> vec4<f32> {
    let idx = vec4<u32>(start) + vec4<u32>(0u, 1u, 2u, 3u);
    return select(vec4<f32>(0.0), v, idx < vec4<u32>(end));
}

// Writes a 4×4 block: acc[i] is output row r0 + i, columns c0 .. c0 + 3.
fn store_block(acc: mat4x4<f32>, base: u32, r0: u32, c0: u32, rows: u32, cols: u32, bias_base: u32) {
    for (var i = 0u; i < 4u; i++) {
        let r = r0 + i;
        if r >= rows {
            return;
        }
        for (var j = 0u; j < 4u; j++) {
            let c = c0 + j;
            if c < cols {
                let e = base + r * p.ld_out + c;
                var v = acc[i][j];
                if p.has_bias != 0u {
                    v += bias[bias_base + c];
                }
                if p.accumulate != 0u {
                    v += out[e];
                }
                out[e] = v;
            }
        }
    }
}

// out (M, N) = inp (M, K) · W (N, K)ᵀ + bias. Thread (x, y) owns rows 4y.., columns 4x..
@compute @workgroup_size(WG_X, WG_Y)
fn matmul_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * 4u;
    let r0 = gid.y * 4u;
    if r0 >= p.m || c0 >= p.n {
        return;
    }
    let z = gid.z;
    // Row starts, clamped to the last row so edge threads read valid memory.
    let oa = p.off_a + z * p.batch_a;
    let a0 = oa + min(r0, p.m - 1u) * p.ld_a;
    let a1 = oa + min(r0 + 1u, p.m - 1u) * p.ld_a;
    let a2 = oa + min(r0 + 2u, p.m - 1u) * p.ld_a;
    let a3 = oa + min(r0 + 3u, p.m - 1u) * p.ld_a;
    let ob = p.off_b + z * p.batch_b;
    let b0 = ob + min(c0, p.n - 1u) * p.ld_b;
    let b1 = ob + min(c0 + 1u, p.n - 1u) * p.ld_b;
    let b2 = ob + min(c0 + 2u, p.n - 1u) * p.ld_b;
    let b3 = ob + min(c0 + 3u, p.n - 1u) * p.ld_b;
    var acc = mat4x4<f32>();
    let kfull = p.k & ~3u;
    for (var k = 0u; k < kfull; k += 4u) {
        // Columns of am are input rows, columns of bm are weight rows, both along k.
        let am = mat4x4<f32>(load_a(a0 + k), load_a(a1 + k), load_a(a2 + k), load_a(a3 + k));
        let bm = mat4x4<f32>(load_b(b0 + k), load_b(b1 + k), load_b(b2 + k), load_b(b3 + k));
        acc += transpose(bm) * am;
    }
    if kfull < p.k {
        let k = kfull;
        let am = mat4x4<f32>(keep(load_a(a0 + k), k, p.k), keep(load_a(a1 + k), k, p.k),
                             keep(load_a(a2 + k), k, p.k), keep(load_a(a3 + k), k, p.k));
        let bm = mat4x4<f32>(keep(load_b(b0 + k), k, p.k), keep(load_b(b1 + k), k, p.k),
                             keep(load_b(b2 + k), k, p.k), keep(load_b(b3 + k), k, p.k));
        acc += transpose(bm) * am;
    }
    // transpose(bm) * am has column i = output row r0 + i.
    store_block(acc, p.off_out + z * p.batch_out, r0, c0, p.m, p.n, p.off_bias);
}

// dinp (M, K) = dout (M, N) · W (N, K). Thread (x, y) owns rows 4y.., columns 4x.. of dinp.
@compute @workgroup_size(WG_X, WG_Y)
fn matmul_backward_input(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * 4u;
    let r0 = gid.y * 4u;
    if r0 >= p.m || c0 >= p.k {
        return;
    }
    let z = gid.z;
    let oa = p.off_a + z * p.batch_a;
    let a0 = oa + min(r0, p.m - 1u) * p.ld_a;
    let a1 = oa + min(r0 + 1u, p.m - 1u) * p.ld_a;
    let a2 = oa + min(r0 + 2u, p.m - 1u) * p.ld_a;
    let a3 = oa + min(r0 + 3u, p.m - 1u) * p.ld_a;
    let ob = p.off_b + z * p.batch_b + c0;
    var acc = mat4x4<f32>();
    let nfull = p.n & ~3u;
    for (var t = 0u; t < nfull; t += 4u) {
        // Columns of am: dout rows along t. Columns of bm: W rows t .. t+3 along output columns.
        let am = mat4x4<f32>(load_a(a0 + t), load_a(a1 + t), load_a(a2 + t), load_a(a3 + t));
        let bt = ob + t * p.ld_b;
        let bm = mat4x4<f32>(load_b(bt), load_b(bt + p.ld_b), load_b(bt + 2u * p.ld_b), load_b(bt + 3u * p.ld_b));
        acc += bm * am;
    }
    if nfull < p.n {
        let t = nfull;
        let am = mat4x4<f32>(keep(load_a(a0 + t), t, p.n), keep(load_a(a1 + t), t, p.n),
                             keep(load_a(a2 + t), t, p.n), keep(load_a(a3 + t), t, p.n));
        var bm = mat4x4<f32>();
        for (var i = 0u; i < 4u; i++) {
            if t + i < p.n {
                bm[i] = load_b(ob + (t + i) * p.ld_b);
            }
        }
        acc += bm * am;
    }
    // bm * am has column i = output row r0 + i.
    store_block(acc, p.off_out + z * p.batch_out, r0, c0, p.m, p.k, 0u);
}

// dW (N, K) += dout (M, N)ᵀ · inp (M, K). Thread (x, y) owns rows 4y.. (n), columns 4x.. (k).
@compute @workgroup_size(WG_X, WG_Y)
fn matmul_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * 4u;
    let r0 = gid.y * 4u;
    if r0 >= p.n || c0 >= p.k {
        return;
    }
    let z = gid.z;
    let oa = p.off_a + z * p.batch_a + r0;
    let ob = p.off_b + z * p.batch_b + c0;
    var acc = mat4x4<f32>();
    let mfull = p.m & ~3u;
    for (var t = 0u; t < mfull; t += 4u) {
        // Columns of am: dout rows t.. along n. Columns of bm: inp rows t.. along k.
        let at = oa + t * p.ld_a;
        let bt = ob + t * p.ld_b;
        let am = mat4x4<f32>(load_a(at), load_a(at + p.ld_a), load_a(at + 2u * p.ld_a), load_a(at + 3u * p.ld_a));
        let bm = mat4x4<f32>(load_b(bt), load_b(bt + p.ld_b), load_b(bt + 2u * p.ld_b), load_b(bt + 3u * p.ld_b));
        acc += bm * transpose(am);
    }
    if mfull < p.m {
        var am = mat4x4<f32>();
        var bm = mat4x4<f32>();
        for (var i = 0u; i < 4u; i++) {
            let t = mfull + i;
            if t < p.m {
                am[i] = load_a(oa + t * p.ld_a);
                bm[i] = load_b(ob + t * p.ld_b);
            }
        }
        acc += bm * transpose(am);
    }
    // Lanes of am past N and of bm past K only reach outputs that are not stored.
    store_block(acc, p.off_out + z * p.batch_out, r0, c0, p.n, p.k, 0u);
}

// Column sums for the bias gradient: a workgroup owns BIAS_COLS columns; its BIAS_ROWS rows of
// threads each sum a stride of M, then fold their partial sums in workgroup memory.
const BIAS_COLS: u32 = 32u;
const BIAS_ROWS: u32 = 8u;
var<workgroup> partial: array<f32, 256>;   // (BIAS_ROWS, BIAS_COLS)

// dbias (N) += Σ_m dout (M, N).
@compute @workgroup_size(32, 8)
fn matmul_backward_bias(@builtin(local_invocation_id) lid: vec3<u32>,
                        @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.x * BIAS_COLS + lid.x;
    var s = 0.0;
    if c < p.n {
        for (var r = lid.y; r < p.m; r += BIAS_ROWS) {
            let e = p.off_a + r * p.ld_a + c;
            s += a[e >> 2u][e & 3u];
        }
    }
    partial[lid.y * BIAS_COLS + lid.x] = s;
    workgroupBarrier();
    for (var h = BIAS_ROWS / 2u; h > 0u; h >>= 1u) {
        if lid.y < h {
            partial[lid.y * BIAS_COLS + lid.x] += partial[(lid.y + h) * BIAS_COLS + lid.x];
        }
        workgroupBarrier();
    }
    if lid.y == 0u && c < p.n {
        let e = p.off_out + c;
        out[e] = out[e] + partial[lid.x];
    }
}

// Baseline: one thread per output element, scalar loads, no blocking.
@compute @workgroup_size(WG_X, WG_Y)
fn matmul_naive(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let r = gid.y;
    if r >= p.m || c >= p.n {
        return;
    }
    let z = gid.z;
    let ra = p.off_a + z * p.batch_a + r * p.ld_a;
    let rb = p.off_b + z * p.batch_b + c * p.ld_b;
    var s = 0.0;
    for (var k = 0u; k < p.k; k++) {
        let ea = ra + k;
        let eb = rb + k;
        s += a[ea >> 2u][ea & 3u] * b[eb >> 2u][eb & 3u];
    }
    if p.has_bias != 0u {
        s += bias[p.off_bias + c];
    }
    out[p.off_out + z * p.batch_out + r * p.ld_out + c] = s;
}
