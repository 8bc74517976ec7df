// Prelude: what the attention shaders share (attention.wgsl, attention_rows.wgsl,
// attention_coop.wgsl): the uniform, the bindings and the index helpers. Legend: B batch, T
// time, NH query heads, NKV key/value heads (grouped-query attention: query head h reads KV
// head h / (NH/NKV); NKV = NH is multi-head attention), HS head size, C = NH·HS the width of
// out and dout. qkv holds q, k and v of every position: q of row r = b·T + t at
// r·q_stride, k at k_base + r·kv_stride, v at v_base + r·kv_stride, head h at columns
// h·HS .. (h+1)·HS of each. GPT-2's (B, T, 3C) is q_stride = kv_stride = 3C, k_base C,
// v_base 2C; a Llama block keeps three planes (q_stride C, kv_stride NKV·HS). out, qkv, dout
// and fwd_out hold S0, S2, S3, S4 (f32 or f16, shaders/prelude: types); L, D and every score
// are f32.

// Mirrors AttentionParams in src/kernels/attention.rs.
struct Params {
    b: u32,
    t: u32,
    c: u32,
    nh: u32,
    hs: u32,
    scale: f32,   // 1/√HS
    nkv: u32,
    q_stride: u32,
    k_base: u32,
    v_base: u32,
    kv_stride: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<S0>;    // forward out (B, T, C); backward dqkv (qkv's layout); backward_d D (B, NH, T)
@group(0) @binding(1) var<storage, read_write> lse: array<f32>;   // forward L (B, NH, T)
@group(0) @binding(2) var<storage, read> qkv: array<S2>;          // q, k, v as in the legend
@group(0) @binding(3) var<storage, read> dout: array<S3>;         // (B, T, C), backward
@group(0) @binding(4) var<storage, read> fwd_out: array<S4>;      // (B, T, C), backward_d
@group(0) @binding(5) var<storage, read> lse_in: array<f32>;      // (B, NH, T), backward
@group(0) @binding(6) var<storage, read> d_in: array<f32>;        // (B, NH, T), backward
@group(0) @binding(7) var<uniform> p: Params;

// Element d of head h at (b, t) of part `part` of qkv or dqkv: part 0 q (h a query head),
// 1 k and 2 v (h a KV head).
fn qkv_index(b: u32, t: u32, part: u32, h: u32, d: u32) -> u32 {
    let r = b * p.t + t;
    let kv = select(p.k_base, p.v_base, part == 2u) + r * p.kv_stride;
    return select(kv, r * p.q_stride, part == 0u) + h * p.hs + d;
}

// The KV head that query head h reads.
fn kv_head(h: u32) -> u32 {
    return h / (p.nh / p.nkv);
}

// Element (b, t, h·HS + d) of a (B, T, C) tensor.
fn btc_index(b: u32, t: u32, h: u32, d: u32) -> u32 {
    return (b * p.t + t) * p.c + h * p.hs + d;
}

// Element (b, h, t) of a (B, NH, T) tensor (L, D).
fn bht_index(b: u32, h: u32, t: u32) -> u32 {
    return (b * p.nh + h) * p.t + t;
}
