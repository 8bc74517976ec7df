// Linear layers and the embedding over block-quantized weights (ggml's Q8_0, Q4_0, Q4_1):
// the weights stay quantized in the buffer and each kernel dequantizes what it reads, so no
// f32 copy of a weight is ever made. Every product accumulates in f32.
//
// Legend: M rows (B·T), K input features (a multiple of 32), N output features, V vocab,
// C channels, T time.
//
//   qmatmul_forward  out (M, N) = inp (M, K) · deq(W) (N, K)ᵀ + bias (N), tiled (GPUs)
//   qmatmul_rows     the same, a thread per output column and ROWS rows (CPU adapters, decoding)
//   qmatmul_backward_input  dinp (M, K) (+)= dout (M, N) · deq(W) (N, K), tiled: the input
//                    gradient through a frozen quantized weight (QLoRA)
//   qembed_forward   out (M, C) = deq(wte)[tokens] (V, C) + wpe[pos0 + m % T] (no wpe: Llama)
//   qdequantize      out (N, K) = deq(W): a scratch copy for a dense matmul (QuantPath::Dequant)
//
// A block of 32 weights along a row is FMT's u32 words (src/compress/quant.rs, gpu_words):
// word 0 holds d (low half, f16) and m (high half, Q4_1), then the quants as ggml stores them:
// 8 words of i8 (Q8_0), or 4 words of nibbles (Q4_*: byte i holds element i low, i + 16 high).
// Values: d·q (Q8_0), d·(q − 8) (Q4_0), d·q + m (Q4_1); d·q is exact in f32.
//
// qmatmul_forward: a workgroup of 8 × 8 threads owns a 32 × 32 output tile; each K step loads
// a 32 × 32 tile of inp and dequantizes one block of each of 32 weight rows into workgroup
// memory (row length 33: the column reads are conflict-free), then each thread multiplies its
// 4 × 4 outputs, strided by 8 so that reads are broadcasts and stores coalesce.

// 0 Q8_0, 1 Q4_0, 2 Q4_1 (QType::shader_code).
override FMT: u32 = 0u;

// Mirrors QuantParams in src/kernels/quant.rs. Offsets count elements (words for q).
struct Params {
    m: u32,
    n: u32,
    k: u32,
    has_bias: u32,   // qembed: 1 adds wpe, 0 (Llama) none; backward_input: 1 adds into out
    off_q: u32,
    t: u32,      // qembed: sequence length
    pos0: u32,   // qembed: position of the first row (decoding)
    c: u32,      // qembed: channels
}

@group(0) @binding(0) var<storage, read_write> out: array<S0>;  // (M, N) or (M, C)
@group(0) @binding(1) var<storage, read> inp: array<S1>;        // (M, K); qembed: unused
@group(0) @binding(2) var<storage, read> q: array<u32>;         // W (N, K/32 blocks) or wte (V, C/32 blocks)
@group(0) @binding(3) var<storage, read> bias: array<f32>;      // (N); qembed: wpe (T, C)
@group(0) @binding(4) var<storage, read> tokens: array<u32>;    // qembed: (M) token ids
@group(0) @binding(5) var<uniform> p: Params;

const TILE: u32 = 32u;
const PAD: u32 = 33u;

fn words_per_block() -> u32 {
    return select(5u, 9u, FMT == 0u);
}

// Element e (0..31) of the block at word `base`.
fn dequant(base: u32, e: u32) -> f32 {
    let dm = unpack2x16float(q[base]);
    if FMT == 0u {
        let word = q[base + 1u + e / 4u];
        return dm.x * f32(bitcast<i32>(word << (24u - 8u * (e % 4u))) >> 24u);
    }
    let i = e % 16u;
    let nib = (q[base + 1u + i / 4u] >> (8u * (i % 4u) + 4u * (e / 16u))) & 15u;
    if FMT == 1u {
        return dm.x * f32(i32(nib) - 8);
    }
    return dm.x * f32(nib) + dm.y;
}

// The 32 values of the block at word `base`.
fn dequant_block(base: u32) -> array<f32, 32> {
    let dm = unpack2x16float(q[base]);
    var v: array<f32, 32>;
    if FMT == 0u {
        for (var j = 0u; j < 8u; j++) {
            let word = q[base + 1u + j];
            for (var b = 0u; b < 4u; b++) {
                v[4u * j + b] = dm.x * f32(bitcast<i32>(word << (24u - 8u * b)) >> 24u);
            }
        }
        return v;
    }
    for (var j = 0u; j < 4u; j++) {
        let word = q[base + 1u + j];
        for (var b = 0u; b < 4u; b++) {
            let lo = (word >> (8u * b)) & 15u;
            let hi = (word >> (8u * b + 4u)) & 15u;
            if FMT == 1u {
                v[4u * j + b] = dm.x * f32(i32(lo) - 8);
                v[4u * j + b + 16u] = dm.x * f32(i32(hi) - 8);
            } else {
                v[4u * j + b] = dm.x * f32(lo) + dm.y;
                v[4u * j + b + 16u] = dm.x * f32(hi) + dm.y;
            }
        }
    }
    return v;
}

// Rows per thread of qmatmul_rows (at most 8).
override ROWS: u32 = 4u;

// No workgroup memory: each thread dequantizes its column's blocks once and multiplies them
// into ROWS rows, so decoding (M = 1) reads every weight once.
@compute @workgroup_size(64)
fn qmatmul_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let col = gid.x;
    let row0 = wid.y * ROWS;
    if col >= p.n {
        return;
    }
    let blocks = p.k / TILE;
    let rows = min(ROWS, p.m - row0);
    var acc: array<f32, 8>;
    for (var kb = 0u; kb < blocks; kb++) {
        let w = dequant_block(p.off_q + (col * blocks + kb) * words_per_block());
        for (var r = 0u; r < rows; r++) {
            let at = (row0 + r) * p.k + kb * TILE;
            var sum = 0.0;
            for (var e = 0u; e < TILE; e++) {
                sum += f32(inp[at + e]) * w[e];
            }
            acc[r] += sum;
        }
    }
    for (var r = 0u; r < rows; r++) {
        var v = acc[r];
        if p.has_bias != 0u {
            v += bias[col];
        }
        out[(row0 + r) * p.n + col] = S0(v);
    }
}

var<workgroup> tile_a: array<f32, 1056>; // [t][row], TILE × PAD
var<workgroup> tile_w: array<f32, 1056>; // [t][col]

// acc[i][jj] += Σ_t tile_a[t][y + 8i] · tile_w[t][x + 8jj]: a thread's 4 × 4 outputs, strided
// by 8 (reads are broadcasts, stores coalesce), from the two tiles in workgroup memory.
fn multiply_tiles(x: u32, y: u32, acc: ptr<function, array<vec4<f32>, 4>>) {
    for (var t = 0u; t < TILE; t++) {
        let w = vec4<f32>(tile_w[t * PAD + x], tile_w[t * PAD + x + 8u], tile_w[t * PAD + x + 16u], tile_w[t * PAD + x + 24u]);
        for (var i = 0u; i < 4u; i++) {
            (*acc)[i] += tile_a[t * PAD + y + 8u * i] * w;
        }
    }
}

// Thread li's 16 elements of the 32 × 32 tile of inp (rows row0.., columns c0.. of a row-major
// (M, ld) matrix whose rows end at column `cols`), stored [t][row]; zeros past the edges.
fn stage_a(li: u32, row0: u32, ld: u32, c0: u32, cols: u32) {
    for (var i = 0u; i < 16u; i++) {
        let e = li + 64u * i;
        let r = e / TILE;
        let t = e % TILE;
        var v = 0.0;
        if row0 + r < p.m && c0 + t < cols {
            v = f32(inp[(row0 + r) * ld + c0 + t]);
        }
        tile_a[t * PAD + r] = v;
    }
}

// Thread li's half (li % 2) of block kb of weight row `wrow`, dequantized into tile row (or,
// `by_row`, column) j = li / 2 of tile_w; zeros past the last row.
fn stage_w(li: u32, wrow: u32, kb: u32, by_row: bool) {
    let j = li / 2u;
    let part = li % 2u;
    let base = p.off_q + (wrow * (p.k / TILE) + kb) * words_per_block();
    for (var i = 0u; i < 16u; i++) {
        let e = part * 16u + i;
        var v = 0.0;
        if wrow < p.n {
            v = dequant(base, e);
        }
        tile_w[select(e * PAD + j, j * PAD + e, by_row)] = v;
    }
}

// The builtins of the tiled kernels' 8 × 8 workgroups.
struct TileIds {
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
}

// One step of the tiled products: both tiles staged (a: row0, ld, c0 and cols of stage_a;
// weight row wrow + li / 2 of block column kb), then acc += their product.
fn tile_step(ids: TileIds, a: vec4<u32>, wrow: u32, kb: u32, by_row: bool, acc: ptr<function, array<vec4<f32>, 4>>) {
    stage_a(ids.li, a.x, a.y, a.z, a.w);
    stage_w(ids.li, wrow + ids.li / 2u, kb, by_row);
    workgroupBarrier();
    multiply_tiles(ids.lid.x, ids.lid.y, acc);
    workgroupBarrier();
}

@compute @workgroup_size(8, 8)
fn qmatmul_forward(ids: TileIds) {
    let lid = ids.lid;
    let col0 = ids.wid.x * TILE;
    let row0 = ids.wid.y * TILE;
    var acc: array<vec4<f32>, 4>;
    for (var kb = 0u; kb < p.k / TILE; kb++) {
        tile_step(ids, vec4<u32>(row0, p.k, kb * TILE, p.k), col0, kb, false, &acc);
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + lid.y + 8u * i;
        for (var jj = 0u; jj < 4u; jj++) {
            let c = col0 + lid.x + 8u * jj;
            if row < p.m && c < p.n {
                var v = acc[i][jj];
                if p.has_bias != 0u {
                    v += bias[c];
                }
                out[row * p.n + c] = S0(v);
            }
        }
    }
}

// dinp (M, K) (+)= dout (M, N) · deq(W) (N, K): the forward's tiling with the roles of N and K
// swapped. A workgroup owns 32 rows × one block column (32 of K); each step over N loads a
// 32 × 32 tile of dout and dequantizes that block column of 32 weight rows, stored [n][e] so
// that the product reads rows of it as the forward does.
@compute @workgroup_size(8, 8)
fn qmatmul_backward_input(ids: TileIds) {
    let lid = ids.lid;
    let row0 = ids.wid.y * TILE;
    let kb = ids.wid.x;
    var acc: array<vec4<f32>, 4>;
    for (var n0 = 0u; n0 < p.n; n0 += TILE) {
        tile_step(ids, vec4<u32>(row0, p.n, n0, p.n), n0, kb, true, &acc);
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + lid.y + 8u * i;
        if row >= p.m {
            continue;
        }
        for (var jj = 0u; jj < 4u; jj++) {
            let at = row * p.k + kb * TILE + lid.x + 8u * jj;
            var v = acc[i][jj];
            if p.has_bias != 0u {
                v += f32(out[at]);
            }
            out[at] = S0(v);
        }
    }
}

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn qembed_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = gid.x + gid.y * groups.x * WG;
    if e >= p.m * p.c { return; }
    let ch = e % p.c;
    let pos = e / p.c;
    let base = p.off_q + (tokens[pos] * (p.c / TILE) + ch / TILE) * words_per_block();
    var x = dequant(base, ch % TILE);
    if p.has_bias != 0u {
        x += bias[(p.pos0 + pos % p.t) * p.c + ch];
    }
    out[e] = S0(x);
}

// out (N, K) = deq(W), an element per thread, N = p.n rows of K = p.k.
@compute @workgroup_size(WG)
fn qdequantize(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = gid.x + gid.y * groups.x * WG;
    if e >= p.n * p.k {
        return;
    }
    let row = e / p.k;
    let col = e % p.k;
    out[e] = S0(dequant(p.off_q + (row * (p.k / TILE) + col / TILE) * words_per_block(), col % TILE));
}
