// Prelude: what the attention shaders share (attention.wgsl, attention_rows.wgsl): the
// uniform, the bindings and the index helpers. Legend: B batch, T time, C channels, NH heads,
// HS = C/NH head size; qkv is (B, T, 3C) with q, k and v side by side, head h at columns
// h·HS .. (h+1)·HS of each. out, qkv, dout and fwd_out hold S0, S2, S3, S4 (f32 or f16,
// shaders/prelude: types); L, D and every score are f32.

// Mirrors AttentionParams in src/kernels/attention.rs.
struct Params {
    b: u32,
    t: u32,
    c: u32,
    nh: u32,
    hs: u32,
    scale: f32,   // 1/√HS
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<S0>;    // forward out (B, T, C); backward dqkv (B, T, 3C); backward_d D (B, NH, T)
@group(0) @binding(1) var<storage, read_write> lse: array<f32>;   // forward L (B, NH, T)
@group(0) @binding(2) var<storage, read> qkv: array<S2>;          // (B, T, 3C)
@group(0) @binding(3) var<storage, read> dout: array<S3>;         // (B, T, C), backward
@group(0) @binding(4) var<storage, read> fwd_out: array<S4>;      // (B, T, C), backward_d
@group(0) @binding(5) var<storage, read> lse_in: array<f32>;      // (B, NH, T), backward
@group(0) @binding(6) var<storage, read> d_in: array<f32>;        // (B, NH, T), backward
@group(0) @binding(7) var<uniform> p: Params;

// Element (b, t, part·C + h·HS + d) of qkv or dqkv; part 0 q, 1 k, 2 v.
fn qkv_index(b: u32, t: u32, part: u32, h: u32, d: u32) -> u32 {
    return (b * p.t + t) * 3u * p.c + part * p.c + h * p.hs + d;
}

// Element (b, t, h·HS + d) of a (B, T, C) tensor.
fn btc_index(b: u32, t: u32, h: u32, d: u32) -> u32 {
    return (b * p.t + t) * p.c + h * p.hs + d;
}

// Element (b, h, t) of a (B, NH, T) tensor (L, D).
fn bht_index(b: u32, h: u32, t: u32) -> u32 {
    return (b * p.nh + h) * p.t + t;
}
