// Causal multi-head self-attention, flash style: tiles of 16 queries × 16 keys, an online
// softmax, and only each row's logsumexp kept for the backward pass, which recomputes the
// scores. Memory stays linear in T.
//
// Legend: B batch, T time, C channels, NH heads, HS = C/NH head size (at most 64), L the
// logsumexp of a query row's scaled scores, D_i = Σ_d dout_i[d]·out_i[d].
// qkv's layout and grouped-query attention: see shaders/prelude/attention_io.wgsl.
//
//   attention_forward       out (B, T, C) = softmax(q·kᵀ/√HS, causal)·v per head; L (B, NH, T)
//   attention_backward_d    D (B, NH, T)
//   attention_backward_kv   dk, dv (in dqkv) for one block of 16 keys of a KV head, over the
//                           queries after it of every query head it serves
//   attention_backward_q    dq (in dqkv) for one block of 16 queries, over the keys before it
//   attention_decode        one new query against a KV cache (sampling)
//
// Grids: x = ⌈T/16⌉ blocks, y = B·NH (b·NH + h), B·NKV for backward_kv; the backward_d grid
// is flat.

const BLK: u32 = 16u;          // queries and keys per tile
const HS_MAX: u32 = 64u;
const WG: u32 = 256u;          // BLK × BLK threads: thread (i, j) = (lid / BLK, lid % BLK)
const MASKED: f32 = -1e30;

// Params, bindings, qkv_index, btc_index and bht_index come from the prelude (shaders/prelude/attention_io.wgsl).

// Four (BLK, HS_MAX) tiles at T0 .. T3 of one array, and (BLK, BLK) score tiles. Their roles
// differ per kernel; see each one.
const T0: u32 = 0u;
const T1: u32 = 1024u;
const T2: u32 = 2048u;
const T3: u32 = 3072u;
var<workgroup> tiles: array<f32, 4096>;
var<workgroup> s: array<f32, 256>;
var<workgroup> s2: array<f32, 256>;
var<workgroup> row_a: array<f32, 16>;
var<workgroup> row_b: array<f32, 16>;
var<workgroup> row_c: array<f32, 16>;

// Loads rows r0 .. r0 + BLK of part `part` of head h (a KV head for k and v) into a tile; rows
// past T read 0.
fn load_qkv(tile: u32, lid: u32, b: u32, h: u32, part: u32, r0: u32) {
    for (var idx = lid; idx < BLK * HS_MAX; idx += WG) {
        let i = idx / HS_MAX;
        let d = idx % HS_MAX;
        var x = 0.0;
        if r0 + i < p.t && d < p.hs {
            x = f32(qkv[qkv_index(b, r0 + i, part, h, d)]);
        }
        tiles[tile + idx] = x;
    }
}

fn load_dout(tile: u32, lid: u32, b: u32, h: u32, r0: u32) {
    for (var idx = lid; idx < BLK * HS_MAX; idx += WG) {
        let i = idx / HS_MAX;
        let d = idx % HS_MAX;
        var x = 0.0;
        if r0 + i < p.t && d < p.hs {
            x = f32(dout[btc_index(b, r0 + i, h, d)]);
        }
        tiles[tile + idx] = x;
    }
}

// Row i of tile x · row j of tile y.
fn dot_rows(x: u32, i: u32, y: u32, j: u32) -> f32 {
    var acc = 0.0;
    for (var d = 0u; d < p.hs; d++) {
        acc += tiles[x + i * HS_MAX + d] * tiles[y + j * HS_MAX + d];
    }
    return acc;
}

// T0 q, T1 k, T2 v, T3 the output accumulator; s scores then probabilities; row_a running max,
// row_b running sum, row_c the rescale of this tile.
@compute @workgroup_size(WG)
fn attention_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let q0 = wid.x * BLK;
    let b = wid.y / p.nh;
    let h = wid.y % p.nh;
    let i = lid / BLK;
    let j = lid % BLK;
    load_qkv(T0, lid, b, h, 0u, q0);
    for (var idx = lid; idx < BLK * HS_MAX; idx += WG) {
        tiles[T3 + idx] = 0.0;
    }
    if lid < BLK {
        row_a[lid] = MASKED;
        row_b[lid] = 0.0;
    }
    let last = min(q0 + BLK, p.t);   // keys needed: 0 .. last
    for (var k0 = 0u; k0 < last; k0 += BLK) {
        workgroupBarrier();
        load_qkv(T1, lid, b, kv_head(h), 1u, k0);
        load_qkv(T2, lid, b, kv_head(h), 2u, k0);
        workgroupBarrier();
        var sc = MASKED;
        if k0 + j <= q0 + i && q0 + i < p.t {
            sc = dot_rows(T0, i, T1, j) * p.scale;
        }
        s[lid] = sc;
        workgroupBarrier();
        if lid < BLK {
            let r = lid;
            var mx = row_a[r];
            for (var jj = 0u; jj < BLK; jj++) {
                mx = max(mx, s[r * BLK + jj]);
            }
            var sum = 0.0;
            for (var jj = 0u; jj < BLK; jj++) {
                let x = s[r * BLK + jj];
                let pr = select(exp(x - mx), 0.0, x <= MASKED);
                s[r * BLK + jj] = pr;
                sum += pr;
            }
            let corr = select(exp(row_a[r] - mx), 0.0, row_a[r] <= MASKED);
            row_b[r] = row_b[r] * corr + sum;
            row_a[r] = mx;
            row_c[r] = corr;
        }
        workgroupBarrier();
        // Only the head's HS columns: the rest of each HS_MAX-wide row stays 0.
        for (var c = lid; c < BLK * p.hs; c += WG) {
            let r = c / p.hs;
            let d = c % p.hs;
            let idx = r * HS_MAX + d;
            var acc = tiles[T3 + idx] * row_c[r];
            for (var jj = 0u; jj < BLK; jj++) {
                acc += s[r * BLK + jj] * tiles[T2 + jj * HS_MAX + d];
            }
            tiles[T3 + idx] = acc;
        }
    }
    workgroupBarrier();
    for (var idx = lid; idx < BLK * HS_MAX; idx += WG) {
        let r = idx / HS_MAX;
        let d = idx % HS_MAX;
        if q0 + r < p.t && d < p.hs {
            out[btc_index(b, q0 + r, h, d)] = S0(tiles[T3 + idx] / row_b[r]);
        }
    }
    if lid < BLK && q0 + lid < p.t {
        lse[bht_index(b, h, q0 + lid)] = row_a[lid] + log(row_b[lid]);
    }
}

// D_i = dout_i · out_i, one thread per (b, h, t).
@compute @workgroup_size(WG)
fn attention_backward_d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = gid.x + gid.y * groups.x * WG;
    if e >= p.b * p.nh * p.t {
        return;
    }
    let t = e % p.t;
    let bh = e / p.t;
    let b = bh / p.nh;
    let h = bh % p.nh;
    var acc = 0.0;
    for (var d = 0u; d < p.hs; d++) {
        let x = btc_index(b, t, h, d);
        acc += f32(dout[x]) * f32(fwd_out[x]);
    }
    out[e] = S0(acc);
}

// Recomputes P and dS for queries q0 .. q0 + BLK (q in T0, dout in T1) against keys k0 ..
// k0 + BLK (k in T2, v in T3): s = P, s2 = dS = P·(dout·v − D).
fn probabilities(lid: u32, b: u32, h: u32, q0: u32, k0: u32) {
    let i = lid / BLK;
    let j = lid % BLK;
    var pr = 0.0;
    var ds = 0.0;
    if k0 + j <= q0 + i && q0 + i < p.t {
        let row = bht_index(b, h, q0 + i);
        pr = exp(dot_rows(T0, i, T2, j) * p.scale - lse_in[row]);
        ds = pr * (dot_rows(T1, i, T3, j) - d_in[row]);
    }
    s[lid] = pr;
    s2[lid] = ds;
}

// One block of 16 keys of KV head kh: dv_j = Σ_i P_ij dout_i, dk_j = scale·Σ_i dS_ij q_i over
// the queries i ≥ j of each query head h that reads kh. T0 q, T1 dout, T2 k, T3 v; dk and dv
// accumulate in registers, 4 cells per thread.
@compute @workgroup_size(WG)
fn attention_backward_kv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k0 = wid.x * BLK;
    let b = wid.y / p.nkv;
    let kh = wid.y % p.nkv;
    let group = p.nh / p.nkv;
    load_qkv(T2, lid, b, kh, 1u, k0);
    load_qkv(T3, lid, b, kh, 2u, k0);
    // Each thread owns up to 4 (key, dim) cells of dk and dv: cell = lid + n·WG, over the
    // BLK × HS cells of the block.
    let cells = (BLK * p.hs + WG - 1u) / WG;
    var dk = vec4<f32>(0.0);
    var dv = vec4<f32>(0.0);
    for (var h = kh * group; h < (kh + 1u) * group; h++) {
        for (var q0 = k0; q0 < p.t; q0 += BLK) {
            workgroupBarrier();
            load_qkv(T0, lid, b, h, 0u, q0);
            load_dout(T1, lid, b, h, q0);
            workgroupBarrier();
            probabilities(lid, b, h, q0, k0);
            workgroupBarrier();
            for (var n = 0u; n < cells; n++) {
                let cell = min(lid + n * WG, BLK * p.hs - 1u);   // the last thread's spare cells repeat the last
                let jj = cell / p.hs;
                let d = cell % p.hs;
                var a = 0.0;
                var c = 0.0;
                for (var ii = 0u; ii < BLK; ii++) {
                    a += s2[ii * BLK + jj] * tiles[T0 + ii * HS_MAX + d];
                    c += s[ii * BLK + jj] * tiles[T1 + ii * HS_MAX + d];
                }
                dk[n] += a;
                dv[n] += c;
            }
        }
    }
    for (var n = 0u; n < cells; n++) {
        let cell = lid + n * WG;
        let jj = cell / p.hs;
        let d = cell % p.hs;
        if k0 + jj < p.t && cell < BLK * p.hs {
            out[qkv_index(b, k0 + jj, 1u, kh, d)] = S0(dk[n] * p.scale);
            out[qkv_index(b, k0 + jj, 2u, kh, d)] = S0(dv[n]);
        }
    }
}

// One block of 16 queries: dq_i = scale·Σ_j dS_ij k_j over the keys j ≤ i.
@compute @workgroup_size(WG)
fn attention_backward_q(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let q0 = wid.x * BLK;
    let b = wid.y / p.nh;
    let h = wid.y % p.nh;
    load_qkv(T0, lid, b, h, 0u, q0);
    load_dout(T1, lid, b, h, q0);
    // Up to 4 (query, dim) cells per thread, as in attention_backward_kv.
    let cells = (BLK * p.hs + WG - 1u) / WG;
    var dq = vec4<f32>(0.0);
    let last = min(q0 + BLK, p.t);
    for (var k0 = 0u; k0 < last; k0 += BLK) {
        workgroupBarrier();
        load_qkv(T2, lid, b, kv_head(h), 1u, k0);
        load_qkv(T3, lid, b, kv_head(h), 2u, k0);
        workgroupBarrier();
        probabilities(lid, b, h, q0, k0);
        workgroupBarrier();
        for (var n = 0u; n < cells; n++) {
            let cell = min(lid + n * WG, BLK * p.hs - 1u);   // spare cells repeat the last
            let ii = cell / p.hs;
            let d = cell % p.hs;
            var a = 0.0;
            for (var jj = 0u; jj < BLK; jj++) {
                a += s2[ii * BLK + jj] * tiles[T2 + jj * HS_MAX + d];
            }
            dq[n] += a;
        }
    }
    for (var n = 0u; n < cells; n++) {
        let cell = lid + n * WG;
        let ii = cell / p.hs;
        let d = cell % p.hs;
        if q0 + ii < p.t && cell < BLK * p.hs {
            out[qkv_index(b, q0 + ii, 0u, h, d)] = S0(dq[n] * p.scale);
        }
    }
}

// Decoding: the one new position against the KV cache. Bindings: out (1, C), qkv with the new
// q at columns 0..C, dout ← k_cache (T, NKV·HS), fwd_out ← v_cache (T, NKV·HS), rows
// p.kv_stride apart; p.t is the number of cached keys, the new one included (at most 4096).
// One workgroup per query head; reduce_max and reduce_sum come from the prelude
// (shaders/prelude/reduce.wgsl, the tree in workgroup memory on every adapter).
@compute @workgroup_size(WG)
fn attention_decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let base = h * p.hs;
    let kv = kv_head(h) * p.hs;
    var m = MASKED;
    for (var j = lid; j < p.t; j += WG) {
        var acc = 0.0;
        for (var d = 0u; d < p.hs; d++) {
            acc += f32(qkv[base + d]) * f32(dout[j * p.kv_stride + kv + d]);
        }
        let sc = acc * p.scale;
        tiles[j] = sc;
        m = max(m, sc);
    }
    m = reduce_max(lid, m);
    var sum = 0.0;
    for (var j = lid; j < p.t; j += WG) {
        let e = exp(tiles[j] - m);
        tiles[j] = e;
        sum += e;
    }
    let total = reduce_sum(lid, sum);
    for (var d = lid; d < p.hs; d += WG) {
        var acc = 0.0;
        for (var j = 0u; j < p.t; j++) {
            acc += tiles[j] * f32(fwd_out[j * p.kv_stride + kv + d]);
        }
        out[base + d] = S0(acc / total);
    }
}
