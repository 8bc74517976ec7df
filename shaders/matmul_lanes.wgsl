// Lane-parallel matmul for CPU adapters: any of the three products (PRODUCT, as matmul_tiled
// in matmul.wgsl lays them out: C (R, S) = Σ_t A(r, t) · B(s, t)), made for the backward ones,
// whose B has its unit stride along the output's columns s.
//
// A CPU adapter runs a workgroup's consecutive threads as the lanes of one SIMD batch. The
// register-blocked kernels give each thread its own rows and columns, so a batch's loads read
// addresses far apart (gathers). Here a workgroup of LANES threads owns RM whole rows and
// LANES·RN columns, thread l taking columns s0 + l + LANES·j: every A(r, t) it reads is the
// same for all lanes (its address depends on the workgroup and the loop only, so the driver
// loads it once and broadcasts it) and every B(s, t) row it reads is consecutive across the
// lanes. Nothing depends on the lane but the column, and lanes past the last column read the
// last one and do not store, so no branch splits the batch.

// Rows per workgroup (1 to 16), columns per lane (1 to 8), lanes per workgroup (the device's
// one subgroup size: 4, 8 or 16 on lavapipe, by its vector width).
override RM: u32 = 8u;
override RN: u32 = 2u;
override LANES: u32 = 8u;
// Which product: 0 forward, 1 backward_input, 2 backward_weight.
override PRODUCT: u32 = 1u;

@compute @workgroup_size(LANES)
fn matmul_lanes(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let lay = product_layout(PRODUCT);
    let r0 = wid.y * RM;
    let s0 = wid.x * LANES * RN;
    let oa = p.off_a + wid.z * p.batch_a;
    let ob = p.off_b + wid.z * p.batch_b;
    // B's element offsets for this lane's columns (clamped), and A's for the block's rows.
    var bo: array<u32, 8>;
    for (var j = 0u; j < RN; j++) {
        bo[j] = ob + min(s0 + lid.x + LANES * j, lay.cols - 1u) * lay.bs;
    }
    var acc: array<f32, 128>;   // (RM, RN): row r0 + i, column s0 + lid.x + LANES·j at i·RN + j
    // k walks LANES steps at a time; steps past the end read the last one, zeroed on both
    // sides, so every chunk has the same unrolled loop.
    for (var t0 = 0u; t0 < lay.inner; t0 += LANES) {
        // Along t (A's unit stride, all but backward_weight): lane l loads A(r, t0 + l) for
        // every row, and step tt takes lane tt's.
        var va: array<f32, 16>;
        if PRODUCT != 2u {
            let t = t0 + lid.x;
            for (var i = 0u; i < RM; i++) {
                let e = oa + min(r0 + i, lay.rows - 1u) * lay.ar + min(t, lay.inner - 1u);
                va[i] = select(0.0, elem_a(e), t < lay.inner);
            }
        }
        for (var tt = 0u; tt < LANES; tt++) {
            let t = min(t0 + tt, lay.inner - 1u);
            let live = t0 + tt < lay.inner;
            var bv: array<f32, 8>;
            for (var j = 0u; j < RN; j++) {
                bv[j] = select(0.0, elem_b(bo[j] + t * lay.bt), live);
            }
            // Along the rows (backward_weight's dout): lane l loads A(r0 + g·LANES + l, t).
            var vr: array<f32, 16>;   // RM / LANES of them: 16 at 1 lane
            if PRODUCT == 2u {
                for (var g = 0u; g * LANES < RM; g++) {
                    let e = oa + min(r0 + g * LANES + lid.x, lay.rows - 1u) + t * lay.at;
                    vr[g] = select(0.0, elem_a(e), live);
                }
            }
            for (var i = 0u; i < RM; i++) {
                var av: f32;
                if PRODUCT == 2u {
                    av = subgroupShuffle(vr[i / LANES], i % LANES);
                } else {
                    av = subgroupShuffle(va[i], tt);
                }
                for (var j = 0u; j < RN; j++) {
                    acc[i * RN + j] = fma(av, bv[j], acc[i * RN + j]);
                }
            }
        }
    }
    let base = p.off_out + wid.z * p.batch_out;
    for (var i = 0u; i < RM; i++) {
        let r = r0 + i;
        for (var j = 0u; j < RN; j++) {
            let s = s0 + lid.x + LANES * j;
            if r < lay.rows && s < lay.cols {
                store_out(base + r * p.ld_out + s, p.off_bias + s, acc[i * RN + j]);
            }
        }
    }
}
