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
// Two families of kernels compute the three products; the host picks one variant of either
// per product and shape (src/kernels/matmul/variant.rs, chosen by the autotuner):
//
// Register-blocked (matmul_forward, matmul_backward_input, matmul_backward_weight), for CPU
// adapters: each thread owns an RM × RN block of the output (4 or 8 each), kept as up to four
// 4×4 matrices; a workgroup of WG_X × WG_Y threads owns an (RM·WG_Y) × (RN·WG_X) tile; the
// inner dimension is walked 4 at a time with vec4 loads and mat4x4 products. No workgroup
// memory: on the software adapters the caches do better than barriers. RM = RN = 4 with an
// 8×8 workgroup is the baseline the benchmarks compare against. ALIGNED (every offset and
// leading dimension of a and b a multiple of 4) makes each load a single vec4; otherwise a
// load joins two vec4 and shifts.
//
// Workgroup-tiled (matmul_tiled), for GPUs: one entry point serves all three products (PRODUCT)
// as C (R, S) = Σ_t A(r, t) · B(s, t), where each operand's unit stride lies along the output
// dimension or along t as the product needs, so the transposes happen in the tile loads. A
// workgroup owns a BM × BN tile of C; its threads load BM × BK and BN × BK tiles cooperatively
// (consecutive threads read consecutive addresses) into workgroup memory, then each thread
// multiplies a TM × TN register tile out of it. A thread's rows and columns are strided by
// the thread grid, so workgroup reads are broadcasts or consecutive (no bank conflicts) and the
// stores coalesce.

// Workgroup shape of the register-blocked and naive kernels.
override WG_X: u32 = 8u;
override WG_Y: u32 = 8u;
// Output rows and columns per thread of the register-blocked kernels: 4 or 8.
override RM: u32 = 4u;
override RN: u32 = 4u;
// True when the host has checked that a and b are vec4-aligned.
override ALIGNED: bool = true;
// Params, the bindings, elem_a, elem_b, store_out, product_layout, tile_pos, a_at and b_at come
// from the prelude (shaders/prelude/matmul_io.wgsl).

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
        return vec4<f32>(a[e >> 2u]);
    }
    let q = e >> 2u;
    return shift4(vec4<f32>(a[q]), vec4<f32>(a[q + 1u]), e & 3u);
}

fn load_b(e: u32) -> vec4<f32> {
    if ALIGNED {
        return vec4<f32>(b[e >> 2u]);
    }
    let q = e >> 2u;
    return shift4(vec4<f32>(b[q]), vec4<f32>(b[q + 1u]), e & 3u);
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
                store_out(base + r * p.ld_out + c, bias_base + c, acc[i][j]);
            }
        }
    }
}

// One vec4 of a, or of b where `from_b`, and that operand's leading dimension. `from_b` is a
// constant at every call, so the branch folds away (WGSL cannot pass a binding to a function).
fn load(from_b: bool, e: u32) -> vec4<f32> {
    if from_b {
        return load_b(e);
    }
    return load_a(e);
}

fn ld_of(from_b: bool) -> u32 {
    return select(p.ld_a, p.ld_b, from_b);
}

// Four rows of a (or b) from row r (clamped to the last of `rows`, so edge threads read valid
// memory), four floats each from column t; lanes at or past `end` become 0.
fn rows4(from_b: bool, base: u32, r: u32, rows: u32, t: u32, end: u32) -> mat4x4<f32> {
    let ld = ld_of(from_b);
    let e = base + min(r, rows - 1u) * ld + t;
    let d = select(ld, 0u, r + 1u >= rows);
    let e2 = base + min(r + 2u, rows - 1u) * ld + t;
    let d2 = select(ld, 0u, r + 3u >= rows);
    let m = mat4x4<f32>(load(from_b, e), load(from_b, e + d), load(from_b, e2), load(from_b, e2 + d2));
    if t + 4u <= end {
        return m;
    }
    return mat4x4<f32>(keep(m[0], t, end), keep(m[1], t, end), keep(m[2], t, end), keep(m[3], t, end));
}

// Four consecutive rows t.. of a (or b), four floats each from element `base` of row 0; rows
// at or past `end` are 0 and not read.
fn down4(from_b: bool, base: u32, t: u32, end: u32) -> mat4x4<f32> {
    let ld = ld_of(from_b);
    let e = base + t * ld;
    if t + 4u <= end {
        return mat4x4<f32>(load(from_b, e), load(from_b, e + ld), load(from_b, e + 2u * ld), load(from_b, e + 3u * ld));
    }
    var m = mat4x4<f32>();
    for (var i = 0u; i < 4u; i++) {
        if t + i < end {
            m[i] = load(from_b, e + i * ld);
        }
    }
    return m;
}

// Writes the thread's RM × RN block, acc[2·bi + bj] being rows r0 + 4bi.., columns c0 + 4bj..
fn store_blocks(acc: array<mat4x4<f32>, 4>, base: u32, r0: u32, c0: u32, rows: u32, cols: u32, bias_base: u32) {
    for (var bi = 0u; bi < RM / 4u; bi++) {
        for (var bj = 0u; bj < RN / 4u; bj++) {
            if r0 + 4u * bi < rows && c0 + 4u * bj < cols {
                store_block(acc[2u * bi + bj], base, r0 + 4u * bi, c0 + 4u * bj, rows, cols, bias_base);
            }
        }
    }
}

// acc's blocks of row block bi += each column block of bm times am.
fn mac(acc: ptr<function, array<mat4x4<f32>, 4>>, bm: array<mat4x4<f32>, 2>, am: mat4x4<f32>, bi: u32) {
    for (var bj = 0u; bj < RN / 4u; bj++) {
        (*acc)[2u * bi + bj] += bm[bj] * am;
    }
}

// The register-blocked products, one tile walk for all three (`product` is a constant of each
// entry point, so the branches on it fold away):
//   0  out (M, N) = inp (M, K) · W (N, K)ᵀ + bias   columns of am: inp rows; of bm: W rows; along k
//   1  dinp (M, K) = dout (M, N) · W (N, K)         am: dout rows along t; bm: W rows t.. along k
//   2  dW (N, K) += dout (M, N)ᵀ · inp (M, K)       am: dout rows t.. along n; bm: inp rows t..
// A walk along the reduction axis (K, N or M: `len`) in whole steps of 4, then a partial one.
// Column blocks past the output's edge read clamped rows and are never stored.

// Column block c.. of bm at step t.
fn b_block(product: u32, ob: u32, c: u32, t: u32, len: u32) -> mat4x4<f32> {
    if product == 0u {
        return transpose(rows4(true, ob, c, p.n, t, len));
    }
    return down4(true, ob + min(c, p.k - 1u), t, len);
}

// Row block r.. of am at step t.
fn a_block(product: u32, oa: u32, r: u32, t: u32, len: u32) -> mat4x4<f32> {
    if product == 2u {
        return transpose(down4(false, oa + min(r, p.n - 1u), t, len));
    }
    return rows4(false, oa, r, p.m, t, len);
}

// Thread (x, y)'s RM × RN block of `product`: output rows RM·y.., columns RN·x..
fn blocked(product: u32, gid: vec3<u32>) {
    let c0 = gid.x * RN;
    let r0 = gid.y * RM;
    let rows = select(p.m, p.n, product == 2u);
    let cols = select(p.k, p.n, product == 0u);
    if r0 >= rows || c0 >= cols {
        return;
    }
    let len = select(select(p.m, p.n, product == 1u), p.k, product == 0u);
    let z = gid.z;
    let oa = p.off_a + z * p.batch_a;
    let ob = p.off_b + z * p.batch_b;
    var acc: array<mat4x4<f32>, 4>;
    for (var t = 0u; t < len; t += 4u) {
        var bm: array<mat4x4<f32>, 2>;
        for (var bj = 0u; bj < RN / 4u; bj++) {
            bm[bj] = b_block(product, ob, c0 + 4u * bj, t, len);
        }
        for (var bi = 0u; bi < RM / 4u; bi++) {
            mac(&acc, bm, a_block(product, oa, r0 + 4u * bi, t, len), bi);
        }
    }
    // (transpose(bm) or bm) · am has column i = output row r0 + i.
    store_blocks(acc, p.off_out + z * p.batch_out, r0, c0, rows, cols, select(0u, p.off_bias, product == 0u));
}

@compute @workgroup_size(WG_X, WG_Y)
fn matmul_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    blocked(0u, gid);
}

@compute @workgroup_size(WG_X, WG_Y)
fn matmul_backward_input(@builtin(global_invocation_id) gid: vec3<u32>) {
    blocked(1u, gid);
}

@compute @workgroup_size(WG_X, WG_Y)
fn matmul_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>) {
    blocked(2u, gid);
}

// ---- Workgroup-tiled kernel, for GPUs ----

// Which product matmul_tiled computes: 0 forward, 1 backward_input, 2 backward_weight.
override PRODUCT: u32 = 0u;
// Output tile of a workgroup (BM rows × BN columns), inner step BK, and each thread's register
// tile TM × TN (at most 8 × 8). The host sets TX = BN / TN and TY = BM / TM.
override BM: u32 = 64u;
override BN: u32 = 64u;
override BK: u32 = 16u;
override TM: u32 = 4u;
override TN: u32 = 4u;
override TX: u32 = 16u;
override TY: u32 = 16u;

// Room for a (BK, BM + 1) tile with BK·(BM + 1) ≤ 1040 (128 × 8 or 64 × 16); the extra column
// keeps the transposing stores free of bank conflicts. 8.3 KB for both tiles.
const TILE_MAX: u32 = 1040u;
var<workgroup> tile_a: array<f32, TILE_MAX>;   // A(r, t) at t·(BM + 1) + r
var<workgroup> tile_b: array<f32, TILE_MAX>;   // B(s, t) at t·(BN + 1) + s

// C (R, S) = Σ_t A(r, t) · B(s, t) for the product PRODUCT:
//   forward          C = out (M, N),  A = inp (M, K) along rows,  B = W (N, K) along rows
//   backward_input   C = dinp (M, K), A = dout (M, N) along rows, B = W (N, K) down columns
//   backward_weight  C = dW (N, K),   A = dout (M, N) down cols,  B = inp (M, K) down columns
// "Down columns" operands have their unit stride along the output, so their tile loads walk
// r (or s) fastest; the others walk t fastest. Either way a warp reads consecutive addresses.
@compute @workgroup_size(TX, TY)
fn matmul_tiled(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let lay = product_layout(PRODUCT);
    let tid = lid.y * TX + lid.x;
    let r_base = wid.y * BM;
    let s_base = wid.x * BN;
    let oa = p.off_a + wid.z * p.batch_a;
    let ob = p.off_b + wid.z * p.batch_b;
    var acc: array<f32, 64>;   // (TM, 8): rows r_base + lid.y + i·TY, columns s_base + lid.x + j·TX
    for (var t0 = 0u; t0 < lay.inner; t0 += BK) {
        for (var e = tid; e < BM * BK; e += TX * TY) {
            let q = tile_pos(e, BM, BK, PRODUCT == 2u);
            tile_a[q.y * (BM + 1u) + q.x] = a_at(lay, oa, r_base + q.x, t0 + q.y);
        }
        for (var e = tid; e < BN * BK; e += TX * TY) {
            let q = tile_pos(e, BN, BK, PRODUCT != 0u);
            tile_b[q.y * (BN + 1u) + q.x] = b_at(lay, ob, s_base + q.x, t0 + q.y);
        }
        workgroupBarrier();
        for (var t = 0u; t < BK; t++) {
            var av: array<f32, 8>;
            var bv: array<f32, 8>;
            for (var i = 0u; i < TM; i++) {
                av[i] = tile_a[t * (BM + 1u) + lid.y + i * TY];
            }
            for (var j = 0u; j < TN; j++) {
                bv[j] = tile_b[t * (BN + 1u) + lid.x + j * TX];
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) {
                    acc[i * 8u + j] = fma(av[i], bv[j], acc[i * 8u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    let base = p.off_out + wid.z * p.batch_out;
    for (var i = 0u; i < TM; i++) {
        let r = r_base + lid.y + i * TY;
        for (var j = 0u; j < TN; j++) {
            let s = s_base + lid.x + j * TX;
            if r < lay.rows && s < lay.cols {
                store_out(base + r * p.ld_out + s, p.off_bias + s, acc[i * 8u + j]);
            }
        }
    }
}

// Column sums for the bias gradient: a workgroup owns FOLD_COLS columns; its FOLD_ROWS rows of
// threads each sum a stride of M, then fold_rows (shaders/prelude/fold.wgsl) folds them.
// dbias (N) += Σ_m dout (M, N).
@compute @workgroup_size(32, 8)
fn matmul_backward_bias(@builtin(local_invocation_id) lid: vec3<u32>,
                        @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.x * FOLD_COLS + lid.x;
    var s = 0.0;
    if c < p.n {
        for (var r = lid.y; r < p.m; r += FOLD_ROWS) {
            let e = p.off_a + r * p.ld_a + c;
            s += elem_a(e);
        }
    }
    let sum = fold_rows(lid, vec2<f32>(s, 0.0)).x;
    if lid.y == 0u && c < p.n {
        let e = p.off_out + c;
        out[e] = S0(f32(out[e]) + sum);
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
        s += elem_a(ea) * elem_b(eb);
    }
    if p.has_bias != 0u {
        s += f32(bias[p.off_bias + c]);
    }
    out[p.off_out + z * p.batch_out + r * p.ld_out + c] = S0(s);
}
