// Causal attention on cooperative matrices, flash style, forward and backward: f16 q, k, v
// (S2), dout (S3) and out / dqkv (S0); f32 scores, softmax, L and D, and f32 accumulators.
// The logsumexp L and D = rowsum(dout·out) are those of the SIMT kernels (D comes from
// attention.wgsl's attention_backward_d), so a forward and backward of any two variants fit.
//
// The host composes `enable wgpu_cooperative_matrix;` and `enable f16;` ahead of this file,
// then the fragment prelude (prelude/coop_8.wgsl or coop_16.wgsl: FRAG and the fragment types
// FragA, FragB, FragC), and runs it only for head sizes that are multiples of FRAG (up to 64)
// on a device created with EXPERIMENTAL_COOPERATIVE_MATRIX.
//
// A workgroup is one subgroup of SG threads and owns one block of BQ = FRAG queries (forward,
// backward_q) or keys (backward_kv) of one head. Per block on the other side, the products go
// through FRAG×FRAG×FRAG fragments over the head size, and the elementwise steps (the
// causal mask, the online softmax, P and dS) run on the threads over workgroup memory; P and
// dS are rounded to f16 for the products that take them, as flash attention does in f16.
// Grid: x = ⌈T/BQ⌉, y = B·NH (B·NKV for backward_kv).
//
// Forward: S = Q·Kᵀ, the online softmax per row, then P·V into a scratch tile that the
// threads fold into the output accumulator with the rows' rescale.
// Backward (with P = exp(S·scale − L) and dS = P·(dO·Vᵀ − D)): backward_kv gives a key block
// dV = Σ Pᵀ·dO and dK = scale·Σ dSᵀ·Q over the query blocks at or after it and the query
// heads that share its KV head; backward_q gives a query block dQ = scale·Σ dS·K.

override SG: u32 = 32u;

const BQ: u32 = FRAG;       // queries (and keys) per block
const HS_MAX: u32 = 64u;
const MASKED: f32 = -1e30;

var<workgroup> qs: array<f16, BQ * HS_MAX>;     // Q (BQ, HS_MAX) row-major
var<workgroup> ks: array<f16, BQ * HS_MAX>;     // K (BQ, HS_MAX): as B, Kᵀ column-major
var<workgroup> vs: array<f16, BQ * HS_MAX>;     // V (BQ, HS_MAX) row-major
var<workgroup> dos: array<f16, BQ * HS_MAX>;    // dO (BQ, HS_MAX) row-major (backward)
var<workgroup> sc: array<f32, BQ * BQ>;         // S (BQ, BQ) row-major
var<workgroup> dp: array<f32, BQ * BQ>;         // dO·Vᵀ (BQ, BQ) row-major (backward)
var<workgroup> zc: array<f32, BQ * BQ>;         // zeros: the start of every accumulator
var<workgroup> ps: array<f16, BQ * BQ>;         // P (BQ, BQ) row-major
var<workgroup> dss: array<f16, BQ * BQ>;        // dS (BQ, BQ) row-major (backward)
var<workgroup> ot: array<f32, BQ * HS_MAX>;     // forward: P·V of this block; backward_kv: dK
var<workgroup> oacc: array<f32, BQ * HS_MAX>;   // forward: out; backward: dQ or dV
var<workgroup> row_m: array<f32, BQ>;           // forward: running max; backward: L
var<workgroup> row_l: array<f32, BQ>;           // forward: running sum; backward: D
var<workgroup> row_c: array<f32, BQ>;           // this block's rescale (forward)

// Params, bindings, qkv_index, btc_index and bht_index come from the prelude
// (shaders/prelude/attention_io.wgsl).

// Rows r0 .. r0 + BQ of head h of part `part` (0 q, 1 k, 2 v of qkv, h a KV head for k and v;
// 3 dout) into its tile; rows past T and columns past HS read 0.
fn load_part(part: u32, lid: u32, b: u32, h: u32, r0: u32) {
    for (var e = lid; e < BQ * HS_MAX; e += SG) {
        let i = e / HS_MAX;
        let d = e % HS_MAX;
        var x = 0.0;
        if r0 + i < p.t && d < p.hs {
            if part == 3u {
                x = f32(dout[btc_index(b, r0 + i, h, d)]);
            } else {
                x = f32(qkv[qkv_index(b, r0 + i, part, h, d)]);
            }
        }
        if part == 0u {
            qs[e] = f16(x);
        } else if part == 1u {
            ks[e] = f16(x);
        } else if part == 2u {
            vs[e] = f16(x);
        } else {
            dos[e] = f16(x);
        }
    }
}

@compute @workgroup_size(SG)
fn attention_coop_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let q0 = wid.x * BQ;
    let b = wid.y / p.nh;
    let h = wid.y % p.nh;
    load_part(0u, lid, b, h, q0);
    for (var e = lid; e < BQ * HS_MAX; e += SG) {
        oacc[e] = 0.0;
    }
    for (var e = lid; e < BQ * BQ; e += SG) {
        zc[e] = 0.0;
    }
    // Row loops step by SG: a subgroup may have fewer threads than a block has rows.
    for (var r = lid; r < BQ; r += SG) {
        row_m[r] = MASKED;
        row_l[r] = 0.0;
    }
    let last = min(q0 + BQ, p.t);   // keys needed: 0 .. last
    for (var k0 = 0u; k0 < last; k0 += BQ) {
        next_keys(lid, b, kv_head(h), k0);
        workgroupBarrier();
        for (var r = lid; r < BQ; r += SG) {
            softmax_row(r, q0, k0);
        }
        workgroupBarrier();
        let pa = coopLoadT<FragA>(&ps[0], BQ);
        for (var d0 = 0u; d0 < p.hs; d0 += FRAG) {
            let vb = coopLoadT<FragB>(&vs[d0], HS_MAX);
            let o = coopMultiplyAdd(pa, vb, coopLoadT<FragC>(&zc[0], BQ));
            coopStoreT(o, &ot[d0], HS_MAX);
        }
        workgroupBarrier();
        for (var e = lid; e < BQ * HS_MAX; e += SG) {
            oacc[e] = oacc[e] * row_c[e / HS_MAX] + ot[e];
        }
    }
    workgroupBarrier();
    for (var e = lid; e < BQ * HS_MAX; e += SG) {
        let r = e / HS_MAX;
        let d = e % HS_MAX;
        if q0 + r < p.t && d < p.hs {
            out[btc_index(b, q0 + r, h, d)] = S0(oacc[e] / row_l[r]);
        }
    }
    for (var r = lid; r < BQ && q0 + r < p.t; r += SG) {
        lse[bht_index(b, h, q0 + r)] = row_m[r] + log(row_l[r]);
    }
}

// Row r of the block: masked, scaled scores into the running max and sum, P into ps (f16),
// and the rescale of what the row had.
fn softmax_row(r: u32, q0: u32, k0: u32) {
    var mx = row_m[r];
    for (var j = 0u; j < BQ; j++) {
        if k0 + j <= q0 + r && q0 + r < p.t {
            mx = max(mx, sc[r * BQ + j] * p.scale);
        }
    }
    var sum = 0.0;
    for (var j = 0u; j < BQ; j++) {
        var pr = 0.0;
        if k0 + j <= q0 + r && q0 + r < p.t {
            pr = exp(sc[r * BQ + j] * p.scale - mx);
        }
        ps[r * BQ + j] = f16(pr);
        sum += pr;
    }
    let corr = select(exp(row_m[r] - mx), 0.0, row_m[r] <= MASKED);
    row_l[r] = row_l[r] * corr + sum;
    row_m[r] = mx;
    row_c[r] = corr;
}

// sc = Q·Kᵀ (the block's raw scores), over the head size.
fn scores() {
    var s = coopLoadT<FragC>(&zc[0], BQ);
    for (var d0 = 0u; d0 < p.hs; d0 += FRAG) {
        s = coopMultiplyAdd(coopLoadT<FragA>(&qs[d0], HS_MAX), coopLoad<FragB>(&ks[d0], HS_MAX), s);
    }
    coopStoreT(s, &sc[0], BQ);
}

// Keys k0 .. k0 + BQ of KV head kh into ks and vs, once every thread is done with the last
// block, and their raw scores against the queries in qs into sc.
fn next_keys(lid: u32, b: u32, kh: u32, k0: u32) {
    workgroupBarrier();
    load_part(1u, lid, b, kh, k0);
    load_part(2u, lid, b, kh, k0);
    workgroupBarrier();
    scores();
}

// dp = dO·Vᵀ, over the head size.
fn dout_v() {
    var s = coopLoadT<FragC>(&zc[0], BQ);
    for (var d0 = 0u; d0 < p.hs; d0 += FRAG) {
        s = coopMultiplyAdd(coopLoadT<FragA>(&dos[d0], HS_MAX), coopLoad<FragB>(&vs[d0], HS_MAX), s);
    }
    coopStoreT(s, &dp[0], BQ);
}

// The backward's start: zeros in zc and in both accumulators.
fn clear_backward(lid: u32) {
    for (var e = lid; e < BQ * HS_MAX; e += SG) {
        ot[e] = 0.0;
        oacc[e] = 0.0;
    }
    for (var e = lid; e < BQ * BQ; e += SG) {
        zc[e] = 0.0;
    }
}

// L and D of queries q0 .. q0 + BQ of head h (0 past T).
fn load_rows(lid: u32, b: u32, h: u32, q0: u32) {
    for (var i = lid; i < BQ; i += SG) {
        let ok = q0 + i < p.t;
        let row = bht_index(b, h, min(q0 + i, p.t - 1u));
        row_m[i] = select(0.0, lse_in[row], ok);
        row_l[i] = select(0.0, d_in[row], ok);
    }
}

// P and dS of queries q0 .. (rows of sc, dp) against keys k0 .. (columns), masked to the
// causal triangle inside T, into ps and dss as f16.
fn probabilities(lid: u32, q0: u32, k0: u32) {
    for (var e = lid; e < BQ * BQ; e += SG) {
        let i = e / BQ;
        let j = e % BQ;
        var pr = 0.0;
        if k0 + j <= q0 + i && q0 + i < p.t {
            pr = exp(sc[e] * p.scale - row_m[i]);
        }
        ps[e] = f16(pr);
        dss[e] = f16(pr * (dp[e] - row_l[i]));
    }
}

// The backward's products, each over one fragment of the inner side and the head size in
// fragments, into an f32 accumulator in workgroup memory (naga's uniformity rules keep the
// cooperative operations out of branches on an argument, hence three functions).
// oacc (keys, HS) += Pᵀ·dO: ps loaded column-major is Pᵀ.
fn accumulate_dv() {
    for (var d0 = 0u; d0 < p.hs; d0 += FRAG) {
        let c = coopMultiplyAdd(coopLoad<FragA>(&ps[0], BQ), coopLoadT<FragB>(&dos[d0], HS_MAX), coopLoadT<FragC>(&oacc[d0], HS_MAX));
        coopStoreT(c, &oacc[d0], HS_MAX);
    }
}

// ot (keys, HS) += dSᵀ·Q.
fn accumulate_dk() {
    for (var d0 = 0u; d0 < p.hs; d0 += FRAG) {
        let c = coopMultiplyAdd(coopLoad<FragA>(&dss[0], BQ), coopLoadT<FragB>(&qs[d0], HS_MAX), coopLoadT<FragC>(&ot[d0], HS_MAX));
        coopStoreT(c, &ot[d0], HS_MAX);
    }
}

// oacc (queries, HS) += dS·K.
fn accumulate_dq() {
    for (var d0 = 0u; d0 < p.hs; d0 += FRAG) {
        let c = coopMultiplyAdd(coopLoadT<FragA>(&dss[0], BQ), coopLoadT<FragB>(&ks[d0], HS_MAX), coopLoadT<FragC>(&oacc[d0], HS_MAX));
        coopStoreT(c, &oacc[d0], HS_MAX);
    }
}

// Rows r0 .. of the accumulator `acc` (0 oacc, 1 ot) times `scale` into part `part` of dqkv.
fn store_grad(acc: u32, part: u32, lid: u32, b: u32, h: u32, r0: u32, scale: f32) {
    for (var e = lid; e < BQ * HS_MAX; e += SG) {
        let i = e / HS_MAX;
        let d = e % HS_MAX;
        if r0 + i < p.t && d < p.hs {
            out[qkv_index(b, r0 + i, part, h, d)] = S0(select(oacc[e], ot[e], acc == 1u) * scale);
        }
    }
}

@compute @workgroup_size(SG)
fn attention_coop_backward_kv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k0 = wid.x * BQ;
    let b = wid.y / p.nkv;
    let kh = wid.y % p.nkv;
    let group = p.nh / p.nkv;
    load_part(1u, lid, b, kh, k0);
    load_part(2u, lid, b, kh, k0);
    clear_backward(lid);
    for (var h = kh * group; h < (kh + 1u) * group; h++) {
        for (var q0 = k0; q0 < p.t; q0 += BQ) {
            workgroupBarrier();
            load_part(0u, lid, b, h, q0);
            load_part(3u, lid, b, h, q0);
            load_rows(lid, b, h, q0);
            workgroupBarrier();
            scores();
            dout_v();
            workgroupBarrier();
            probabilities(lid, q0, k0);
            workgroupBarrier();
            accumulate_dv();
            accumulate_dk();
        }
    }
    workgroupBarrier();
    store_grad(1u, 1u, lid, b, kh, k0, p.scale);
    store_grad(0u, 2u, lid, b, kh, k0, 1.0);
}

@compute @workgroup_size(SG)
fn attention_coop_backward_q(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let q0 = wid.x * BQ;
    let b = wid.y / p.nh;
    let h = wid.y % p.nh;
    load_part(0u, lid, b, h, q0);
    load_part(3u, lid, b, h, q0);
    load_rows(lid, b, h, q0);
    clear_backward(lid);
    let last = min(q0 + BQ, p.t);   // keys needed: 0 .. last
    for (var k0 = 0u; k0 < last; k0 += BQ) {
        next_keys(lid, b, kv_head(h), k0);
        dout_v();
        workgroupBarrier();
        probabilities(lid, q0, k0);
        workgroupBarrier();
        accumulate_dq();
    }
    workgroupBarrier();
    store_grad(0u, 0u, lid, b, h, q0, p.scale);
}
