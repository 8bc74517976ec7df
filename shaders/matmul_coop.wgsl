// Matmul on cooperative matrices (tensor cores, simdgroup matrices): all three products of a
// linear layer, f16 operands (S1, S2) with f32 accumulation, the output in S0.
//
// The host composes `enable wgpu_cooperative_matrix;` and `enable f16;` ahead of this file
// (src/gpu/pipeline.rs), then the fragment prelude (prelude/coop_8.wgsl or coop_16.wgsl:
// FRAG and the fragment types FragA, FragB, FragC), and builds it only on a device created
// with EXPERIMENTAL_COOPERATIVE_MATRIX.
//
// C (R, S) = Σ_t A(r, t) · B(s, t) as in matmul_tiled (the layout comes from the prelude),
// so the transposes happen in the tile loads. A workgroup is one subgroup of SG threads and
// owns a 2·FRAG × 2·FRAG tile of C as four FRAG × FRAG accumulators. Per step of FRAG along
// t, its threads copy the 2·FRAG × FRAG tiles of A and B into workgroup memory (consecutive threads read
// consecutive addresses of the operand whose unit stride runs along t, or along r and s for
// the "down columns" operands), zero outside the problem, so any M, N, K and every window
// work; then the subgroup multiplies the four fragments. The accumulators go through
// workgroup memory to the output, where bias and accumulation are applied per element.

override PRODUCT: u32 = 0u;
// Threads per workgroup: the adapter's subgroup size, so a workgroup is one subgroup.
override SG: u32 = 32u;

const TILE: u32 = 2u * FRAG;   // output rows and columns per workgroup
const KS: u32 = FRAG;          // inner step

var<workgroup> ta: array<f16, TILE * KS>;     // A(r, t) at r·KS + t (TILE × KS, row-major)
var<workgroup> tb: array<f16, TILE * KS>;     // B(s, t) at s·KS + t: Bᵀ (KS × TILE) column-major
var<workgroup> tc: array<f32, TILE * TILE>;   // C(r, s) at r·TILE + s

// Params, the bindings, store_out, product_layout, tile_pos, a_at and b_at come from the
// prelude (shaders/prelude/matmul_io.wgsl).

@compute @workgroup_size(SG)
fn matmul_coop(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let lay = product_layout(PRODUCT);
    let r_base = wid.y * TILE;
    let s_base = wid.x * TILE;
    let oa = p.off_a + wid.z * p.batch_a;
    let ob = p.off_b + wid.z * p.batch_b;
    for (var e = lid; e < TILE * TILE; e += SG) {
        tc[e] = 0.0;
    }
    workgroupBarrier();
    var c00 = coopLoadT<FragC>(&tc[0], TILE);
    var c01 = c00;
    var c10 = c00;
    var c11 = c00;
    for (var t0 = 0u; t0 < lay.inner; t0 += KS) {
        for (var e = lid; e < TILE * KS; e += SG) {
            let qa = tile_pos(e, TILE, KS, PRODUCT == 2u);
            ta[qa.x * KS + qa.y] = f16(a_at(lay, oa, r_base + qa.x, t0 + qa.y));
            let qb = tile_pos(e, TILE, KS, PRODUCT != 0u);
            tb[qb.x * KS + qb.y] = f16(b_at(lay, ob, s_base + qb.x, t0 + qb.y));
        }
        workgroupBarrier();
        let a0 = coopLoadT<FragA>(&ta[0], KS);
        let a1 = coopLoadT<FragA>(&ta[FRAG * KS], KS);
        let b0 = coopLoad<FragB>(&tb[0], KS);
        let b1 = coopLoad<FragB>(&tb[FRAG * KS], KS);
        c00 = coopMultiplyAdd(a0, b0, c00);
        c01 = coopMultiplyAdd(a0, b1, c01);
        c10 = coopMultiplyAdd(a1, b0, c10);
        c11 = coopMultiplyAdd(a1, b1, c11);
        workgroupBarrier();
    }
    coopStoreT(c00, &tc[0], TILE);
    coopStoreT(c01, &tc[FRAG], TILE);
    coopStoreT(c10, &tc[FRAG * TILE], TILE);
    coopStoreT(c11, &tc[FRAG * TILE + FRAG], TILE);
    workgroupBarrier();
    let base = p.off_out + wid.z * p.batch_out;
    for (var e = lid; e < TILE * TILE; e += SG) {
        let r = r_base + e / TILE;
        let s = s_base + e % TILE;
        if r < lay.rows && s < lay.cols {
            store_out(base + r * p.ld_out + s, p.off_bias + s, tc[e]);
        }
    }
}
