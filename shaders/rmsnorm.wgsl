// RMSNorm over the last dimension (Llama's, as HF's LlamaRMSNorm: computed in f32, then
// scaled by the weight), forward and backward.
//
// Legend: N rows (B·T flattened), C channels, ε from the model config.
//
//   rmsnorm_forward          out = x·r·w with r = 1/√(mean(x²) + ε), saving r per row
//   rmsnorm_backward         dinp += (dn − n·mean(dn·n))·r,  n = x·r, dn = dout·w
//   rmsnorm_backward_params  dw += Σ_rows dout·n
//
// One workgroup per row for the forward and dinp; the weight's gradient folds rows in a fixed
// order (a workgroup per 32 channels, 8 row lanes), so every run gives the same bits.

const WG: u32 = 128u;

// Mirrors RmsNormParams in src/kernels/rmsnorm.rs.
struct Params {
    n: u32,
    c: u32,
    eps: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<S0>;    // forward out (N, C); backward dinp (N, C); params dw (C)
@group(0) @binding(1) var<storage, read_write> rstd: array<f32>;  // (N) r, written by the forward
@group(0) @binding(2) var<storage, read> inp: array<S2>;          // (N, C)
@group(0) @binding(3) var<storage, read> dout: array<S3>;         // (N, C), backward only
@group(0) @binding(4) var<storage, read> weight: array<f32>;      // (C)
@group(0) @binding(5) var<uniform> p: Params;

// out, inp and dout hold S0, S2, S3 (f32 or f16, shaders/prelude: types); everything is
// computed in f32. reduce_sum2, Group and the row sums come from the preludes
// (shaders/prelude/: reduce, group, norm_rows).

@compute @workgroup_size(WG)
fn rmsnorm_forward(g: Group, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(g);
    if row >= p.n { return; }
    let base = row * p.c;
    let r = 1.0 / sqrt(row_squares(base, lid, 0.0) / f32(p.c) + p.eps);
    for (var i = lid; i < p.c; i += WG) {
        out[base + i] = S0(f32(inp[base + i]) * r * weight[i]);
    }
    if lid == 0u {
        rstd[row] = r;
    }
}

@compute @workgroup_size(WG)
fn rmsnorm_backward(g: Group, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(g);
    if row >= p.n { return; }
    let base = row * p.c;
    let r = rstd[row];
    var s = 0.0;
    for (var i = lid; i < p.c; i += WG) {
        s += f32(dout[base + i]) * weight[i] * f32(inp[base + i]) * r;
    }
    let m = reduce_sum2(lid, vec2<f32>(s, 0.0)).x / f32(p.c);
    for (var i = lid; i < p.c; i += WG) {
        let n = f32(inp[base + i]) * r;
        let dn = f32(dout[base + i]) * weight[i];
        out[base + i] = S0(f32(out[base + i]) + (dn - n * m) * r);
    }
}

// fold_rows comes from the prelude (shaders/prelude/fold.wgsl).
@compute @workgroup_size(32, 8)
fn rmsnorm_backward_params(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.x * FOLD_COLS + lid.x;
    var s = 0.0;
    if c < p.c {
        for (var row = lid.y; row < p.n; row += FOLD_ROWS) {
            let e = row * p.c + c;
            s += f32(dout[e]) * f32(inp[e]) * rstd[row];
        }
    }
    let sum = fold_rows(lid, vec2<f32>(s, 0.0)).x;
    if lid.y == 0u && c < p.c {
        out[c] = S0(f32(out[c]) + sum);
    }
}
