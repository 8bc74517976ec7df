// Causal multi-head self-attention, one thread per row: the same results as attention.wgsl
// (out and L from the forward, dqkv from the backward, with D from attention_backward_d), by
// kernels in which each thread keeps one row in registers (a query's q and output in the
// forward and dq, a key's k and v in dk/dv) and walks the other side's rows through tiles in
// workgroup memory. Every thread of a workgroup reads the same tile row at the same time: a
// broadcast on GPUs, one scalar load for all lanes of a CPU adapter's SIMD batch.
//
// Rows are held as HS4 = ⌈HS/4⌉ vec4 in arrays of ROW4 (a prelude's constant: 4, 8 or 16, the
// smallest that holds the head size; LLVM's compile time on CPU adapters grows fast with it);
// lanes at or past HS are 0. HS (the head size, = p.hs) and BR are override constants, so the
// loops over a row have constant bounds.
//
//   attention_rows_forward      out (B, T, C), L (B, NH, T) for BR queries per workgroup
//   attention_rows_backward_q   dq (in dqkv) for BR queries, over the keys at or before them
//   attention_rows_backward_kv  dk, dv (in dqkv) for BR keys of a KV head, over the queries at
//                               or after them of every query head that reads it
//
// Grids: x = ⌈T/BR⌉ blocks, y = B·NH (b·NH + h), B·NKV for backward_kv.

override HS: u32 = 64u;    // head size
override BR: u32 = 64u;    // rows per workgroup, one per thread
override UNROLL: bool = true;
const BT: u32 = 32u;       // rows per workgroup-memory tile of the other side
const MASKED: f32 = -1e30;

// Params, bindings, qkv_index, btc_index and bht_index come from the prelude (shaders/prelude/attention_io.wgsl),
// ROW4 from shaders/prelude/rows_{4,8,16}.wgsl.

var<workgroup> ta: array<vec4<f32>, BT * ROW4>;   // (BT, ROW4): k (forward, dq) or q (dk, dv)
var<workgroup> tb: array<vec4<f32>, BT * ROW4>;   // (BT, ROW4): v (forward, dq) or dout (dk, dv)
var<workgroup> tr: array<vec2<f32>, 32>;    // (BT): the tile's queries' L and D (dk, dv)

// The batch entry and head of workgroup row y of the grid.
fn batch_of(y: u32) -> u32 {
    return y / p.nh;
}

fn head_of(y: u32) -> u32 {
    return y % p.nh;
}

// The head size: the constant HS when UNROLL (GPUs: the compiler unrolls the row loops and
// keeps rows in registers), else p.hs at run time (CPU adapters, where LLVM's compile time
// with fully unrolled rows is tens of seconds and the runtime loops are as fast).
fn hs() -> u32 {
    return select(p.hs, HS, UNROLL);
}

fn hs4() -> u32 {
    return (hs() + 3u) / 4u;
}

// Four elements d .. d+3 of a row starting at element `base` of qkv (from_qkv) or dout; lanes
// at or past HS are 0.
fn quad(from_qkv: bool, base: u32, d: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var l = 0u; l < 4u; l++) {
        if d + l < hs() {
            if from_qkv {
                v[l] = f32(qkv[base + d + l]);
            } else {
                v[l] = f32(dout[base + d + l]);
            }
        }
    }
    return v;
}

// Row t of part `part` of head h (part 3: dout), clamped to the last row.
fn load_row(b: u32, t: u32, part: u32, h: u32) -> array<vec4<f32>, ROW4> {
    let r = min(t, p.t - 1u);
    let from_qkv = part < 3u;
    let base = select(btc_index(b, r, h, 0u), qkv_index(b, r, part, h, 0u), from_qkv);
    var row: array<vec4<f32>, ROW4>;
    for (var c = 0u; c < hs4(); c++) {
        row[c] = quad(from_qkv, base, 4u * c);
    }
    return row;
}

// Rows r0 .. r0 + BT of `part` (as in load_row) into ta (second false) or tb; rows past T are 0.
fn load_tile(second: bool, lid: u32, b: u32, h: u32, part: u32, r0: u32) {
    let from_qkv = part < 3u;
    for (var idx = lid; idx < BT * hs4(); idx += BR) {
        let r = idx / hs4();
        let c = idx % hs4();
        var v = vec4<f32>(0.0);
        if r0 + r < p.t {
            let base = select(btc_index(b, r0 + r, h, 0u), qkv_index(b, r0 + r, part, h, 0u), from_qkv);
            v = quad(from_qkv, base, 4u * c);
        }
        if second {
            tb[r * ROW4 + c] = v;
        } else {
            ta[r * ROW4 + c] = v;
        }
    }
}

// Writes the first HS elements of `row`, times `scale`, from element `base` of out.
fn store_row(base: u32, row: array<vec4<f32>, ROW4>, scale: f32) {
    for (var d = 0u; d < hs(); d++) {
        out[base + d] = S0(row[d / 4u][d % 4u] * scale);
    }
}

fn dot_ta(x: array<vec4<f32>, ROW4>, j: u32) -> f32 {
    var acc = vec4<f32>(0.0);
    for (var c = 0u; c < hs4(); c++) {
        acc = fma(x[c], ta[j * ROW4 + c], acc);
    }
    return acc.x + acc.y + acc.z + acc.w;
}

fn dot_tb(x: array<vec4<f32>, ROW4>, j: u32) -> f32 {
    var acc = vec4<f32>(0.0);
    for (var c = 0u; c < hs4(); c++) {
        acc = fma(x[c], tb[j * ROW4 + c], acc);
    }
    return acc.x + acc.y + acc.z + acc.w;
}

// Query i = q0 + lid: an online softmax over the keys 0 ..= i, 8 keys at a time.
@compute @workgroup_size(BR)
fn attention_rows_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let q0 = wid.x * BR;
    let b = batch_of(wid.y);
    let h = head_of(wid.y);
    let i = q0 + lid;
    let q = load_row(b, i, 0u, h);
    var o: array<vec4<f32>, ROW4>;
    var m = MASKED;
    var l = 0.0;
    let last = min(q0 + BR, p.t);
    for (var k0 = 0u; k0 < last; k0 += BT) {
        workgroupBarrier();
        load_tile(false, lid, b, kv_head(h), 1u, k0);
        load_tile(true, lid, b, kv_head(h), 2u, k0);
        workgroupBarrier();
        let n = min(BT, p.t - k0);
        for (var j0 = 0u; j0 < n; j0 += 8u) {
            var s: array<f32, 8>;
            var mx = m;
            for (var jj = 0u; jj < 8u; jj++) {
                let j = j0 + jj;
                var x = MASKED;
                if j < n && k0 + j <= i {
                    x = dot_ta(q, j) * p.scale;
                }
                s[jj] = x;
                mx = max(mx, x);
            }
            let corr = exp(m - mx);
            l *= corr;
            for (var c = 0u; c < hs4(); c++) {
                o[c] *= corr;
            }
            for (var jj = 0u; jj < 8u; jj++) {
                let pr = select(exp(s[jj] - mx), 0.0, s[jj] <= MASKED);
                l += pr;
                for (var c = 0u; c < hs4(); c++) {
                    o[c] = fma(vec4<f32>(pr), tb[(j0 + jj) * ROW4 + c], o[c]);
                }
            }
            m = mx;
        }
    }
    if i < p.t {
        let base = btc_index(b, i, h, 0u);
        for (var d = 0u; d < hs(); d++) {
            out[base + d] = S0(o[d / 4u][d % 4u] / l);
        }
        lse[bht_index(b, h, i)] = m + log(l);
    }
}

// Query i = q0 + lid: dq_i = scale·Σ_{j ≤ i} dS_ij k_j, dS_ij = P_ij (dout_i·v_j − D_i).
@compute @workgroup_size(BR)
fn attention_rows_backward_q(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let q0 = wid.x * BR;
    let b = batch_of(wid.y);
    let h = head_of(wid.y);
    let i = q0 + lid;
    let q = load_row(b, i, 0u, h);
    let g = load_row(b, i, 3u, h);
    let row = bht_index(b, h, min(i, p.t - 1u));
    let li = lse_in[row];
    let di = d_in[row];
    var dq: array<vec4<f32>, ROW4>;
    let last = min(q0 + BR, p.t);
    for (var k0 = 0u; k0 < last; k0 += BT) {
        workgroupBarrier();
        load_tile(false, lid, b, kv_head(h), 1u, k0);
        load_tile(true, lid, b, kv_head(h), 2u, k0);
        workgroupBarrier();
        let n = min(min(BT, p.t - k0), i + 1u - min(k0, i + 1u));
        for (var j = 0u; j < n; j++) {
            let pr = exp(dot_ta(q, j) * p.scale - li);
            let ds = pr * (dot_tb(g, j) - di);
            for (var c = 0u; c < hs4(); c++) {
                dq[c] = fma(vec4<f32>(ds), ta[j * ROW4 + c], dq[c]);
            }
        }
    }
    if i < p.t {
        store_row(qkv_index(b, i, 0u, h, 0u), dq, p.scale);
    }
}

// Key j = k0 + lid of KV head kh: dv_j = Σ_{i ≥ j} P_ij dout_i, dk_j = scale·Σ_{i ≥ j} dS_ij q_i,
// summed over the query heads that read kh.
@compute @workgroup_size(BR)
fn attention_rows_backward_kv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k0 = wid.x * BR;
    let b = wid.y / p.nkv;
    let kh = wid.y % p.nkv;
    let group = p.nh / p.nkv;
    let j = k0 + lid;
    let k = load_row(b, j, 1u, kh);
    let v = load_row(b, j, 2u, kh);
    var dk: array<vec4<f32>, ROW4>;
    var dv: array<vec4<f32>, ROW4>;
    for (var h = kh * group; h < (kh + 1u) * group; h++) {
        for (var q0 = k0; q0 < p.t; q0 += BT) {
            workgroupBarrier();
            load_tile(false, lid, b, h, 0u, q0);
            load_tile(true, lid, b, h, 3u, q0);
            for (var r = lid; r < BT; r += BR) {
                let row = bht_index(b, h, min(q0 + r, p.t - 1u));
                tr[r] = vec2<f32>(lse_in[row], d_in[row]);
            }
            workgroupBarrier();
            let n = min(BT, p.t - q0);
            for (var ii = 0u; ii < n; ii++) {
                if q0 + ii >= j {
                    let pr = exp(dot_ta(k, ii) * p.scale - tr[ii].x);
                    let ds = pr * (dot_tb(v, ii) - tr[ii].y);
                    for (var c = 0u; c < hs4(); c++) {
                        dv[c] = fma(vec4<f32>(pr), tb[ii * ROW4 + c], dv[c]);
                        dk[c] = fma(vec4<f32>(ds), ta[ii * ROW4 + c], dk[c]);
                    }
                }
            }
        }
    }
    if j < p.t {
        store_row(qkv_index(b, j, 1u, kh, 0u), dk, p.scale);
        store_row(qkv_index(b, j, 2u, kh, 0u), dv, 1.0);
    }
}
