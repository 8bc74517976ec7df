// Causal multi-head self-attention for CPU adapters, lane-parallel: the same results as
// attention.wgsl (out and L from the forward, dqkv from the backward, with D from
// attention_backward_d).
//
// A workgroup is one subgroup of LANES threads (the device's one subgroup size: 4, 8 or 16 on
// lavapipe, by its vector width), which a CPU adapter runs as the lanes of one SIMD batch. Each
// thread owns R rows of its side (queries in the forward and dq, keys in dk/dv): rows
// r0 + LANES·r + lane, kept whole in registers. The other side's rows are walked one at a
// time: lane l loads elements l, l + LANES, ... of the row (consecutive addresses across the
// batch), and each element reaches every lane by a subgroup shuffle, so no lane reads what
// another lane reads. Nothing branches on the lane: rows past T read the last one and are not
// stored, and masked scores become 0 by select.
//
//   attention_lanes_forward      out (B, T, C), L (B, NH, T): an online softmax over the keys
//                                in chunks of 8
//   attention_lanes_backward_q   dq (in dqkv) over the keys at or before each query
//   attention_lanes_backward_kv  dk, dv (in dqkv) over the queries at or after each key of
//                                every query head that reads the KV head
//
// Grids: x = ⌈T/(LANES·R)⌉ blocks, y = B·NH (b·NH + h), B·NKV for backward_kv.
//
// R·HS ≤ 64: LLVM's compile time grows steeply with the rows a lane holds (the three kernels
// took 2.4 s at R·HS = 32 on lavapipe, 8.7 s at 64 and 32.5 s at 128), and the loops over a
// row must be unrolled to run fast (4-5× slower rolled).

override HS: u32 = 64u;    // head size
override R: u32 = 2u;      // rows per lane
override LANES: u32 = 8u;  // lanes per workgroup: the device's one subgroup size
const MASKED: f32 = -1e30;

// Params, bindings and the index helpers come from the prelude (shaders/prelude/attention_io.wgsl).

// The batch entry and head of workgroup row y of the grid.
fn batch_of(y: u32) -> u32 {
    return y / p.nh;
}

fn head_of(y: u32) -> u32 {
    return y % p.nh;
}

// Row r of this lane's block starting at r0, clamped to the last row.
fn own_row(r0: u32, r: u32, lane: u32) -> u32 {
    return min(r0 + LANES * r + lane, p.t - 1u);
}

// This lane's share of a row of qkv (from_qkv) or dout starting at element `base`: element
// LANES·c + lane at c, 0 past HS (HS / LANES ≤ 16 elements). Only the binding named is read (the other may be a dummy).
fn lane_share(from_qkv: bool, base: u32, lane: u32) -> array<f32, 16> {
    var v: array<f32, 16>;
    for (var c = 0u; c * LANES < HS; c++) {
        let d = c * LANES + lane;
        let e = base + min(d, HS - 1u);
        var x: f32;
        if from_qkv {
            x = f32(qkv[e]);
        } else {
            x = f32(dout[e]);
        }
        v[c] = select(0.0, x, d < HS);
    }
    return v;
}

// Element d of the row whose shares are `v`, in every lane.
fn elem(v: ptr<function, array<f32, 16>>, d: u32) -> f32 {
    return subgroupShuffle((*v)[d / LANES], d % LANES);
}

// This lane's R rows of part `part` (3: dout) of head h from row r0, as (R, HS).
fn own_rows(b: u32, r0: u32, part: u32, h: u32, lane: u32) -> array<f32, 64> {
    var x: array<f32, 64>;
    for (var r = 0u; r < R; r++) {
        let t = own_row(r0, r, lane);
        for (var d = 0u; d < HS; d++) {
            if part < 3u {
                x[r * HS + d] = f32(qkv[qkv_index(b, t, part, h, d)]);
            } else {
                x[r * HS + d] = f32(dout[btc_index(b, t, h, d)]);
            }
        }
    }
    return x;
}

// Row r of x (R, HS) times `scale` to element `base` on of out.
fn store_own(x: ptr<function, array<f32, 64>>, r: u32, base: u32, scale: f32) {
    for (var d = 0u; d < HS; d++) {
        out[base + d] = S0((*x)[r * HS + d] * scale);
    }
}

// Each own row's dot product with the row whose shares are `v`.
fn dots(x: ptr<function, array<f32, 64>>, v: ptr<function, array<f32, 16>>) -> array<f32, 4> {
    var s: array<f32, 4>;
    for (var d = 0u; d < HS; d++) {
        let e = elem(v, d);
        for (var r = 0u; r < R; r++) {
            s[r] = fma((*x)[r * HS + d], e, s[r]);
        }
    }
    return s;
}

@compute @workgroup_size(LANES)
fn attention_lanes_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let q0 = wid.x * LANES * R;
    let b = batch_of(wid.y);
    let h = head_of(wid.y);
    let kh = kv_head(h);
    var q = own_rows(b, q0, 0u, h, lane);
    var o: array<f32, 64>;
    var m: array<f32, 4>;
    var l: array<f32, 4>;
    for (var r = 0u; r < R; r++) {
        m[r] = MASKED;
    }
    let last = min(q0 + LANES * R, p.t);
    for (var j0 = 0u; j0 < last; j0 += 8u) {
        // Scores of the chunk's 8 keys, masked past the query and past T.
        var s: array<f32, 32>;   // (R, 8)
        for (var jj = 0u; jj < 8u; jj++) {
            let j = j0 + jj;
            var kr = lane_share(true, qkv_index(b, min(j, p.t - 1u), 1u, kh, 0u), lane);
            let dq = dots(&q, &kr);
            for (var r = 0u; r < R; r++) {
                let live = j <= q0 + LANES * r + lane && j < p.t;
                s[r * 8u + jj] = select(MASKED, dq[r] * p.scale, live);
            }
        }
        for (var r = 0u; r < R; r++) {
            var mx = m[r];
            for (var jj = 0u; jj < 8u; jj++) {
                mx = max(mx, s[r * 8u + jj]);
            }
            let corr = exp(m[r] - mx);
            l[r] *= corr;
            for (var d = 0u; d < HS; d++) {
                o[r * HS + d] *= corr;
            }
            for (var jj = 0u; jj < 8u; jj++) {
                let pr = select(exp(s[r * 8u + jj] - mx), 0.0, s[r * 8u + jj] <= MASKED);
                s[r * 8u + jj] = pr;
                l[r] += pr;
            }
            m[r] = mx;
        }
        for (var jj = 0u; jj < 8u; jj++) {
            var vr = lane_share(true, qkv_index(b, min(j0 + jj, p.t - 1u), 2u, kh, 0u), lane);
            for (var d = 0u; d < HS; d++) {
                let e = elem(&vr, d);
                for (var r = 0u; r < R; r++) {
                    o[r * HS + d] = fma(s[r * 8u + jj], e, o[r * HS + d]);
                }
            }
        }
    }
    for (var r = 0u; r < R; r++) {
        let i = q0 + LANES * r + lane;
        if i < p.t {
            store_own(&o, r, btc_index(b, i, h, 0u), 1.0 / l[r]);
            lse[bht_index(b, h, i)] = m[r] + log(l[r]);
        }
    }
}

// dq_i = scale·Σ_{j ≤ i} dS_ij k_j, dS_ij = P_ij (dout_i·v_j − D_i).
@compute @workgroup_size(LANES)
fn attention_lanes_backward_q(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let q0 = wid.x * LANES * R;
    let b = batch_of(wid.y);
    let h = head_of(wid.y);
    let kh = kv_head(h);
    var q = own_rows(b, q0, 0u, h, lane);
    var g = own_rows(b, q0, 3u, h, lane);
    var li: array<f32, 4>;
    var di: array<f32, 4>;
    for (var r = 0u; r < R; r++) {
        let row = bht_index(b, h, own_row(q0, r, lane));
        li[r] = lse_in[row];
        di[r] = d_in[row];
    }
    var dq: array<f32, 64>;
    let last = min(q0 + LANES * R, p.t);
    for (var j = 0u; j < last; j++) {
        var kr = lane_share(true, qkv_index(b, j, 1u, kh, 0u), lane);
        var vr = lane_share(true, qkv_index(b, j, 2u, kh, 0u), lane);
        let s = dots(&q, &kr);
        let dp = dots(&g, &vr);
        var ds: array<f32, 4>;
        for (var r = 0u; r < R; r++) {
            let pr = exp(s[r] * p.scale - li[r]);
            ds[r] = select(0.0, pr * (dp[r] - di[r]), j <= q0 + LANES * r + lane);
        }
        for (var d = 0u; d < HS; d++) {
            let e = elem(&kr, d);
            for (var r = 0u; r < R; r++) {
                dq[r * HS + d] = fma(ds[r], e, dq[r * HS + d]);
            }
        }
    }
    for (var r = 0u; r < R; r++) {
        let i = q0 + LANES * r + lane;
        if i < p.t {
            store_own(&dq, r, qkv_index(b, i, 0u, h, 0u), p.scale);
        }
    }
}

// Key j of KV head kh: dv_j = Σ_{i ≥ j} P_ij dout_i, dk_j = scale·Σ_{i ≥ j} dS_ij q_i, summed
// over the query heads that read kh.
@compute @workgroup_size(LANES)
fn attention_lanes_backward_kv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let k0 = wid.x * LANES * R;
    let b = wid.y / p.nkv;
    let kh = wid.y % p.nkv;
    let group = p.nh / p.nkv;
    var k = own_rows(b, k0, 1u, kh, lane);
    var v = own_rows(b, k0, 2u, kh, lane);
    var dk: array<f32, 64>;
    var dv: array<f32, 64>;
    for (var h = kh * group; h < (kh + 1u) * group; h++) {
        for (var i = k0; i < p.t; i++) {
            var qr = lane_share(true, qkv_index(b, i, 0u, h, 0u), lane);
            var gr = lane_share(false, btc_index(b, i, h, 0u), lane);
            let row = bht_index(b, h, i);
            let s = dots(&k, &qr);
            let dp = dots(&v, &gr);
            var pr: array<f32, 4>;
            var ds: array<f32, 4>;
            for (var r = 0u; r < R; r++) {
                let live = i >= k0 + LANES * r + lane;
                pr[r] = select(0.0, exp(s[r] * p.scale - lse_in[row]), live);
                ds[r] = pr[r] * (dp[r] - d_in[row]);
            }
            for (var d = 0u; d < HS; d++) {
                let eg = elem(&gr, d);
                let eq = elem(&qr, d);
                for (var r = 0u; r < R; r++) {
                    dv[r * HS + d] = fma(pr[r], eg, dv[r * HS + d]);
                    dk[r * HS + d] = fma(ds[r], eq, dk[r * HS + d]);
                }
            }
        }
    }
    for (var r = 0u; r < R; r++) {
        let j = k0 + LANES * r + lane;
        if j < p.t {
            store_own(&dk, r, qkv_index(b, j, 1u, kh, 0u), p.scale);
            store_own(&dv, r, qkv_index(b, j, 2u, kh, 0u), 1.0);
        }
    }
}
