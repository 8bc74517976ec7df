// Causal attention forward on cooperative matrices, flash style: f16 q, k, v (S2) and out
// (S0), f32 scores, online softmax and logsumexp. The backward is the SIMT kernels' (they
// keep the same L).
//
// The host composes `enable wgpu_cooperative_matrix;` and `enable f16;` ahead of this file,
// and runs it only for head sizes that are multiples of 16 (up to 64) on a device created with
// EXPERIMENTAL_COOPERATIVE_MATRIX whose adapter lists 16×16×16 f16 × f16 + f32.
//
// A workgroup is one subgroup of SG threads and owns 16 queries of one (b, h). Per block of
// 16 keys: S = Q·Kᵀ as 16×16×16 fragments over the head size (into workgroup memory), the
// online softmax per row in f32 (P rounded to f16, as flash attention does in f16), then
// P·V as fragments into a scratch tile that the threads fold into the f32 output accumulator
// with the rows' rescale. Grid: x = ⌈T/16⌉, y = B·NH.

override SG: u32 = 32u;

const BQ: u32 = 16u;        // queries (and keys) per block
const HS_MAX: u32 = 64u;
const MASKED: f32 = -1e30;

var<workgroup> qs: array<f16, 1024>;     // Q (16, HS_MAX) row-major
var<workgroup> ks: array<f16, 1024>;     // K (16, HS_MAX): Kᵀ column-major
var<workgroup> vs: array<f16, 1024>;     // V (16, HS_MAX) row-major
var<workgroup> sc: array<f32, 256>;      // S (16, 16)
var<workgroup> zc: array<f32, 256>;      // zeros: the start of every accumulator
var<workgroup> ps: array<f16, 256>;      // P (16, 16)
var<workgroup> ot: array<f32, 1024>;     // P·V of this block (16, HS_MAX)
var<workgroup> oacc: array<f32, 1024>;   // the output accumulator (16, HS_MAX)
var<workgroup> row_m: array<f32, 16>;    // running max
var<workgroup> row_l: array<f32, 16>;    // running sum
var<workgroup> row_c: array<f32, 16>;    // this block's rescale

// Params, bindings, qkv_index, btc_index and bht_index come from the prelude
// (shaders/prelude/attention_io.wgsl).

// Rows r0 .. r0 + 16 of part `part` (0 q, 1 k, 2 v) of head h (a KV head for k, v) into `dst`-style tiles; rows
// past T and columns past HS read 0.
fn load_part(part: u32, lid: u32, b: u32, h: u32, r0: u32) {
    for (var e = lid; e < BQ * HS_MAX; e += SG) {
        let i = e / HS_MAX;
        let d = e % HS_MAX;
        var x = 0.0;
        if r0 + i < p.t && d < p.hs {
            x = f32(qkv[qkv_index(b, r0 + i, part, h, d)]);
        }
        if part == 0u {
            qs[e] = f16(x);
        } else if part == 1u {
            ks[e] = f16(x);
        } else {
            vs[e] = f16(x);
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
    if lid < BQ {
        row_m[lid] = MASKED;
        row_l[lid] = 0.0;
    }
    let last = min(q0 + BQ, p.t);   // keys needed: 0 .. last
    for (var k0 = 0u; k0 < last; k0 += BQ) {
        workgroupBarrier();
        load_part(1u, lid, b, kv_head(h), k0);
        load_part(2u, lid, b, kv_head(h), k0);
        workgroupBarrier();
        var s = coopLoadT<coop_mat16x16<f32, C>>(&zc[0], BQ);
        for (var d0 = 0u; d0 < p.hs; d0 += 16u) {
            let qa = coopLoadT<coop_mat16x16<f16, A>>(&qs[d0], HS_MAX);
            let kb = coopLoad<coop_mat16x16<f16, B>>(&ks[d0], HS_MAX);
            s = coopMultiplyAdd(qa, kb, s);
        }
        coopStoreT(s, &sc[0], BQ);
        workgroupBarrier();
        if lid < BQ {
            softmax_row(lid, q0, k0);
        }
        workgroupBarrier();
        let pa = coopLoadT<coop_mat16x16<f16, A>>(&ps[0], BQ);
        for (var d0 = 0u; d0 < p.hs; d0 += 16u) {
            let vb = coopLoadT<coop_mat16x16<f16, B>>(&vs[d0], HS_MAX);
            let o = coopMultiplyAdd(pa, vb, coopLoadT<coop_mat16x16<f32, C>>(&zc[0], BQ));
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
    if lid < BQ && q0 + lid < p.t {
        lse[bht_index(b, h, q0 + lid)] = row_m[lid] + log(row_l[lid]);
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
