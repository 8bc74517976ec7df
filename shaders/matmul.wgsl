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

// Four rows of a (or b) from row r (clamped to the last of `rows`, so edge threads read valid
// memory), four floats each from column t; _m: lanes at or past `end` become 0.
fn rows_a(base: u32, r: u32, rows: u32, t: u32) -> mat4x4<f32> {
    let e = base + min(r, rows - 1u) * p.ld_a + t;
    let d = select(p.ld_a, 0u, r + 1u >= rows);
    let e2 = base + min(r + 2u, rows - 1u) * p.ld_a + t;
    let d2 = select(p.ld_a, 0u, r + 3u >= rows);
    return mat4x4<f32>(load_a(e), load_a(e + d), load_a(e2), load_a(e2 + d2));
}

fn rows_a_m(base: u32, r: u32, rows: u32, t: u32, end: u32) -> mat4x4<f32> {
    let m = rows_a(base, r, rows, t);
    return mat4x4<f32>(keep(m[0], t, end), keep(m[1], t, end), keep(m[2], t, end), keep(m[3], t, end));
}

fn rows_b(base: u32, r: u32, rows: u32, t: u32) -> mat4x4<f32> {
    let e = base + min(r, rows - 1u) * p.ld_b + t;
    let d = select(p.ld_b, 0u, r + 1u >= rows);
    let e2 = base + min(r + 2u, rows - 1u) * p.ld_b + t;
    let d2 = select(p.ld_b, 0u, r + 3u >= rows);
    return mat4x4<f32>(load_b(e), load_b(e + d), load_b(e2), load_b(e2 + d2));
}

fn rows_b_m(base: u32, r: u32, rows: u32, t: u32, end: u32) -> mat4x4<f32> {
    let m = rows_b(base, r, rows, t);
    return mat4x4<f32>(keep(m[0], t, end), keep(m[1], t, end), keep(m[2], t, end), keep(m[3], t, end));
}

// Four consecutive rows t.. of a (or b), four floats each from element `base` of row 0; rows
// at or past `end` are 0 and not read.
fn down_a(base: u32, t: u32, end: u32) -> mat4x4<f32> {
    var m = mat4x4<f32>();
    for (var i = 0u; i < 4u; i++) {
        if t + i < end {
            m[i] = load_a(base + (t + i) * p.ld_a);
        }
    }
    return m;
}

fn down_b(base: u32, t: u32, end: u32) -> mat4x4<f32> {
    var m = mat4x4<f32>();
    for (var i = 0u; i < 4u; i++) {
        if t + i < end {
            m[i] = load_b(base + (t + i) * p.ld_b);
        }
    }
    return m;
}

// The same without the row checks, for t + 3 < the number of rows.
fn down_a_full(base: u32, t: u32) -> mat4x4<f32> {
    let e = base + t * p.ld_a;
    return mat4x4<f32>(load_a(e), load_a(e + p.ld_a), load_a(e + 2u * p.ld_a), load_a(e + 3u * p.ld_a));
}

fn down_b_full(base: u32, t: u32) -> mat4x4<f32> {
    let e = base + t * p.ld_b;
    return mat4x4<f32>(load_b(e), load_b(e + p.ld_b), load_b(e + 2u * p.ld_b), load_b(e + 3u * p.ld_b));
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

// out (M, N) = inp (M, K) · W (N, K)ᵀ + bias. Thread (x, y) owns rows RM·y.., columns RN·x..
@compute @workgroup_size(WG_X, WG_Y)
fn matmul_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * RN;
    let r0 = gid.y * RM;
    if r0 >= p.m || c0 >= p.n {
        return;
    }
    let z = gid.z;
    let oa = p.off_a + z * p.batch_a;
    let ob = p.off_b + z * p.batch_b;
    // Columns of am are input rows, columns of bm are weight rows, both along k.
    var acc: array<mat4x4<f32>, 4>;
    var bm: array<mat4x4<f32>, 2>;
    let kfull = p.k & ~3u;
    for (var k = 0u; k < kfull; k += 4u) {
        for (var bj = 0u; bj < RN / 4u; bj++) {
            bm[bj] = transpose(rows_b(ob, c0 + 4u * bj, p.n, k));
        }
        for (var bi = 0u; bi < RM / 4u; bi++) {
            let am = rows_a(oa, r0 + 4u * bi, p.m, k);
            for (var bj = 0u; bj < RN / 4u; bj++) {
                acc[2u * bi + bj] += bm[bj] * am;
            }
        }
    }
    if kfull < p.k {
        let k = kfull;
        for (var bj = 0u; bj < RN / 4u; bj++) {
            bm[bj] = transpose(rows_b_m(ob, c0 + 4u * bj, p.n, k, p.k));
        }
        for (var bi = 0u; bi < RM / 4u; bi++) {
            let am = rows_a_m(oa, r0 + 4u * bi, p.m, k, p.k);
            for (var bj = 0u; bj < RN / 4u; bj++) {
                acc[2u * bi + bj] += bm[bj] * am;
            }
        }
    }
    // transpose(bm) * am has column i = output row r0 + i.
    store_blocks(acc, p.off_out + z * p.batch_out, r0, c0, p.m, p.n, p.off_bias);
}

// dinp (M, K) = dout (M, N) · W (N, K). Thread (x, y) owns rows RM·y.., columns RN·x.. of dinp.
@compute @workgroup_size(WG_X, WG_Y)
fn matmul_backward_input(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * RN;
    let r0 = gid.y * RM;
    if r0 >= p.m || c0 >= p.k {
        return;
    }
    let z = gid.z;
    let oa = p.off_a + z * p.batch_a;
    let ob = p.off_b + z * p.batch_b;
    // Columns of am: dout rows along t. Columns of bm: W rows t .. t+3 along output columns.
    // Column blocks that start past K are not read (their lanes are never stored).
    var acc: array<mat4x4<f32>, 4>;
    var bm: array<mat4x4<f32>, 2>;
    let nfull = p.n & ~3u;
    for (var t = 0u; t < nfull; t += 4u) {
        for (var bj = 0u; bj < RN / 4u; bj++) {
            bm[bj] = down_b_full(ob + min(c0 + 4u * bj, p.k - 1u), t);
        }
        for (var bi = 0u; bi < RM / 4u; bi++) {
            let am = rows_a(oa, r0 + 4u * bi, p.m, t);
            for (var bj = 0u; bj < RN / 4u; bj++) {
                acc[2u * bi + bj] += bm[bj] * am;
            }
        }
    }
    if nfull < p.n {
        let t = nfull;
        for (var bj = 0u; bj < RN / 4u; bj++) {
            let c = min(c0 + 4u * bj, p.k - 1u);
            bm[bj] = down_b(ob + c, t, p.n);
        }
        for (var bi = 0u; bi < RM / 4u; bi++) {
            let am = rows_a_m(oa, r0 + 4u * bi, p.m, t, p.n);
            for (var bj = 0u; bj < RN / 4u; bj++) {
                acc[2u * bi + bj] += bm[bj] * am;
            }
        }
    }
    // bm * am has column i = output row r0 + i.
    store_blocks(acc, p.off_out + z * p.batch_out, r0, c0, p.m, p.k, 0u);
}

// dW (N, K) += dout (M, N)ᵀ · inp (M, K). Thread (x, y) owns rows RM·y.. (n), columns RN·x.. (k).
@compute @workgroup_size(WG_X, WG_Y)
fn matmul_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * RN;
    let r0 = gid.y * RM;
    if r0 >= p.n || c0 >= p.k {
        return;
    }
    let z = gid.z;
    let oa = p.off_a + z * p.batch_a;
    let ob = p.off_b + z * p.batch_b;
    // Columns of am: dout rows t.. along n. Columns of bm: inp rows t.. along k. Lanes of am
    // past N and of bm past K only reach outputs that are not stored.
    var acc: array<mat4x4<f32>, 4>;
    var bm: array<mat4x4<f32>, 2>;
    let mfull = p.m & ~3u;
    for (var t = 0u; t < mfull; t += 4u) {
        for (var bj = 0u; bj < RN / 4u; bj++) {
            bm[bj] = down_b_full(ob + min(c0 + 4u * bj, p.k - 1u), t);
        }
        for (var bi = 0u; bi < RM / 4u; bi++) {
            let am = transpose(down_a_full(oa + min(r0 + 4u * bi, p.n - 1u), t));
            for (var bj = 0u; bj < RN / 4u; bj++) {
                acc[2u * bi + bj] += bm[bj] * am;
            }
        }
    }
    if mfull < p.m {
        let t = mfull;
        for (var bj = 0u; bj < RN / 4u; bj++) {
            bm[bj] = down_b(ob + min(c0 + 4u * bj, p.k - 1u), t, p.m);
        }
        for (var bi = 0u; bi < RM / 4u; bi++) {
            let am = transpose(down_a(oa + min(r0 + 4u * bi, p.n - 1u), t, p.m));
            for (var bj = 0u; bj < RN / 4u; bj++) {
                acc[2u * bi + bj] += bm[bj] * am;
            }
        }
    }
    store_blocks(acc, p.off_out + z * p.batch_out, r0, c0, p.n, p.k, 0u);
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
            s += elem_a(e);
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
        out[e] = S0(f32(out[e]) + partial[lid.x]);
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
