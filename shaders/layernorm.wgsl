// LayerNorm over the last dimension, eps 1e-5, forward and backward.
//
// Legend: N rows (B·T flattened), C channels.
//
//   layernorm_forward          out = (x − mean)·rstd·w + b, saving (mean, rstd) per row
//   layernorm_backward         dinp += (dnorm − mean(dnorm) − norm·mean(dnorm·norm))·rstd,
//                              dnorm = dout·w, norm = (x − mean)·rstd
//   layernorm_backward_params  dw += Σ_rows dout·norm, db += Σ_rows dout
//
// One workgroup per row for the forward and dinp; the parameter gradients fold rows in a fixed
// order (a workgroup per 32 channels, 8 row lanes), so every run gives the same bits.
//
//   layernorm_rows_forward     the forward with one thread per row and no barriers
//   layernorm_rows_backward    dinp likewise (CPU adapters, where barriers cost most)

const WG: u32 = 128u;

// Mirrors LayerNormParams in src/kernels/layernorm.rs.
struct Params {
    n: u32,
    c: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<S0>;      // forward out (N, C); backward dinp (N, C); params dw (C)
@group(0) @binding(1) var<storage, read_write> out2: array<f32>;    // forward (N, 2) mean, rstd; params db (C)
@group(0) @binding(2) var<storage, read> inp: array<S2>;            // (N, C)
@group(0) @binding(3) var<storage, read> dout: array<S3>;           // (N, C), backward only
@group(0) @binding(4) var<storage, read> stats: array<vec2<f32>>;   // (N) mean, rstd, backward only
@group(0) @binding(5) var<storage, read> weight: array<f32>;        // (C)
@group(0) @binding(6) var<storage, read> bias: array<f32>;          // (C), forward only
@group(0) @binding(7) var<uniform> p: Params;

// out, inp and dout hold S0, S2, S3 (f32 or f16, shaders/prelude: types); everything is
// computed in f32. reduce_sum2, Group and the row sums come from the preludes
// (shaders/prelude/: reduce, group, norm_rows).

const EPS: f32 = 1e-5;

@compute @workgroup_size(WG)
fn layernorm_forward(g: Group, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(g);
    if row >= p.n { return; }
    let base = row * p.c;
    let mean = row_sum(base, lid) / f32(p.c);
    let rstd = 1.0 / sqrt(row_squares(base, lid, mean) / f32(p.c) + EPS);
    for (var i = lid; i < p.c; i += WG) {
        out[base + i] = S0((f32(inp[base + i]) - mean) * rstd * weight[i] + bias[i]);
    }
    if lid == 0u {
        out2[2u * row] = mean;
        out2[2u * row + 1u] = rstd;
    }
}

@compute @workgroup_size(WG)
fn layernorm_backward(g: Group, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(g);
    if row >= p.n { return; }
    let st = stats[row];
    let base = row * p.c;
    var s = vec2<f32>(0.0);
    for (var i = lid; i < p.c; i += WG) {
        let norm = (f32(inp[base + i]) - st.x) * st.y;
        let dnorm = f32(dout[base + i]) * weight[i];
        s += vec2<f32>(dnorm, dnorm * norm);
    }
    let m = reduce_sum2(lid, s) / f32(p.c);
    for (var i = lid; i < p.c; i += WG) {
        let norm = (f32(inp[base + i]) - st.x) * st.y;
        let dnorm = f32(dout[base + i]) * weight[i];
        out[base + i] = S0(f32(out[base + i]) + (dnorm - m.x - norm * m.y) * st.y);
    }
}

// One thread per row: each walks its row in order, with no workgroup memory or barriers. Rows
// of a grid past the per-dimension limit continue along y.
const ROWS_WG: u32 = 64u;

fn rows_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * ROWS_WG;
}

@compute @workgroup_size(ROWS_WG)
fn layernorm_rows_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let row = rows_index(gid, groups);
    if row >= p.n { return; }
    let base = row * p.c;
    var s = 0.0;
    for (var i = 0u; i < p.c; i++) {
        s += f32(inp[base + i]);
    }
    let mean = s / f32(p.c);
    var v = 0.0;
    for (var i = 0u; i < p.c; i++) {
        let d = f32(inp[base + i]) - mean;
        v += d * d;
    }
    let rstd = 1.0 / sqrt(v / f32(p.c) + EPS);
    for (var i = 0u; i < p.c; i++) {
        out[base + i] = S0((f32(inp[base + i]) - mean) * rstd * weight[i] + bias[i]);
    }
    out2[2u * row] = mean;
    out2[2u * row + 1u] = rstd;
}

@compute @workgroup_size(ROWS_WG)
fn layernorm_rows_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let row = rows_index(gid, groups);
    if row >= p.n { return; }
    let base = row * p.c;
    let st = stats[row];
    var s = vec2<f32>(0.0);
    for (var i = 0u; i < p.c; i++) {
        let norm = (f32(inp[base + i]) - st.x) * st.y;
        let dnorm = f32(dout[base + i]) * weight[i];
        s += vec2<f32>(dnorm, dnorm * norm);
    }
    let m = s / f32(p.c);
    for (var i = 0u; i < p.c; i++) {
        let norm = (f32(inp[base + i]) - st.x) * st.y;
        let dnorm = f32(dout[base + i]) * weight[i];
        out[base + i] = S0(f32(out[base + i]) + (dnorm - m.x - norm * m.y) * st.y);
    }
}

// fold_rows comes from the prelude (shaders/prelude/fold.wgsl).
@compute @workgroup_size(32, 8)
fn layernorm_backward_params(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.x * FOLD_COLS + lid.x;
    var s = vec2<f32>(0.0);
    if c < p.c {
        for (var row = lid.y; row < p.n; row += FOLD_ROWS) {
            let st = stats[row];
            let e = row * p.c + c;
            let d = f32(dout[e]);
            s += vec2<f32>(d * (f32(inp[e]) - st.x) * st.y, d);
        }
    }
    let sum = fold_rows(lid, s);
    if lid.y == 0u && c < p.c {
        out[c] = S0(f32(out[c]) + sum.x);
        out2[c] += sum.y;
    }
}
