// Block quantization on the GPU (ggml's Q8_0, Q4_0, Q4_1; src/compress/quant.rs has the
// formulas and the CPU reference): quantization-aware training's fake quantization and the
// quantized export of a trained model.
//
// Legend: P weights of one tensor (whole blocks of 32 along its rows), P/32 blocks.
//
//   fake_quant  out (P) = deq(quant(w)) (write_out), packed (P/32 blocks) = quant(w) (write_packed)
//
// One thread per block. d, 1/d and the divisions are rounded to nearest (a division refined
// by one fma step, since WGSL allows 2.5 ULP), f16 by explicit round-to-nearest-even
// (f16_round, shaders/prelude/half_bits.wgsl), so the results are the CPU reference's.
// Dequantized values are d·q (+ m), exact products of an f16 and a small integer.

// 0 Q8_0, 1 Q4_0, 2 Q4_1 (QType::shader_code).
override FMT: u32 = 0u;

// Mirrors FakeQuantParams in src/kernels/fake_quant.rs. Offsets count elements (words for
// packed).
struct Params {
    blocks: u32,
    off_w: u32,
    off_out: u32,
    off_packed: u32,
    write_out: u32,
    write_packed: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;     // (P) fake-quantized weights
@group(0) @binding(1) var<storage, read_write> packed: array<u32>;  // (P/32 blocks) GPU words
@group(0) @binding(2) var<storage, read> w: array<f32>;             // (P) f32 weights
@group(0) @binding(3) var<uniform> p: Params;

// a / b rounded to nearest.
fn div_rn(a: f32, b: f32) -> f32 {
    let q = a / b;
    return fma(fma(-q, b, a), 1.0 / b, q);
}

fn inverse(d: f32) -> f32 {
    return select(div_rn(1.0, d), 0.0, d == 0.0);
}

// round() of C: half away from zero, from exact steps.
fn round_away(x: f32) -> f32 {
    let a = abs(x);
    let f = floor(a);
    return sign(x) * (f + floor(2.0 * (a - f)));
}

fn words_per_block() -> u32 {
    return select(5u, 9u, FMT == 0u);
}

@compute @workgroup_size(64)
fn fake_quant(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let blk = gid.x + gid.y * groups.x * 64u;
    if blk >= p.blocks {
        return;
    }
    let base = p.off_w + blk * 32u;
    var x: array<f32, 32>;
    var lo = w[base];
    var hi = w[base];
    var signed_max = 0.0;
    for (var i = 0u; i < 32u; i++) {
        x[i] = w[base + i];
        lo = min(lo, x[i]);
        hi = max(hi, x[i]);
        if abs(x[i]) > abs(signed_max) {
            signed_max = x[i];
        }
    }
    var d = 0.0;
    var m = 0.0;
    if FMT == 0u {
        d = div_rn(max(abs(lo), abs(hi)), 127.0);
    } else if FMT == 1u {
        d = div_rn(signed_max, -8.0);
    } else {
        d = div_rn(hi - lo, 15.0);
        m = lo;
    }
    let id = inverse(d);
    let dh = f16_round(d, 0u, false);
    let mh = select(0u, f16_round(m, 0u, false), FMT == 2u);
    let dm = unpack2x16float(dh | (mh << 16u));
    var q: array<u32, 32>;
    for (var i = 0u; i < 32u; i++) {
        var v = 0.0;
        if FMT == 0u {
            let r = i32(round_away(x[i] * id));
            q[i] = u32(r) & 0xffu;
            // +0 for q = 0, as the CPU's d·0 (a compiler may fold f32(i32(r)) back into r = −0).
            v = select(dm.x * f32(r), 0.0, r == 0);
        } else if FMT == 1u {
            q[i] = min(15u, u32(trunc(x[i] * id + 8.5)));
            v = dm.x * f32(i32(q[i]) - 8);
        } else {
            q[i] = min(15u, u32(trunc((x[i] - m) * id + 0.5)));
            v = dm.x * f32(q[i]) + dm.y;
        }
        if p.write_out != 0u {
            out[p.off_out + blk * 32u + i] = v;
        }
    }
    if p.write_packed == 0u {
        return;
    }
    let at = p.off_packed + blk * words_per_block();
    packed[at] = dh | (mh << 16u);
    if FMT == 0u {
        for (var j = 0u; j < 8u; j++) {
            packed[at + 1u + j] = q[4u * j] | (q[4u * j + 1u] << 8u) | (q[4u * j + 2u] << 16u) | (q[4u * j + 3u] << 24u);
        }
    } else {
        for (var j = 0u; j < 4u; j++) {
            var word = 0u;
            for (var b = 0u; b < 4u; b++) {
                let i = 4u * j + b;
                word |= (q[i] | (q[i + 16u] << 4u)) << (8u * b);
            }
            packed[at + 1u + j] = word;
        }
    }
}
