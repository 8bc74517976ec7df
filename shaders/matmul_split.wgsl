// Split-k forward of a linear layer, for CPU adapters: out (M, N) = inp (M, K) · W (N, K)ᵀ + bias,
// the same product as matmul_forward in matmul.wgsl (see there for the operands and windows).
// A module of its own, since it needs subgroup operations, which not every device has.
//
// The register-blocked forward gives each thread its own output columns, so the threads of a
// SIMD batch read W rows ld_b apart (gathers). Here the KL threads of a workgroup row (one
// subgroup: KL is the subgroup size) share one RM × RN block and walk k together, thread l
// taking k = l, l + KL, ..., so each load of a and b reads consecutive addresses across the
// subgroup; the KL partial blocks are then summed across the subgroup. Rows and
// columns past the edge read the last valid one and are not stored.

// Output rows and columns of a thread row's block (RM 4, 8 or 16; RN 4 or 8), the threads
// along k (the subgroup size) and thread rows per workgroup.
override RM: u32 = 16u;
override RN: u32 = 8u;
override KL: u32 = 8u;
override SPLIT_Y: u32 = 4u;

@compute @workgroup_size(KL, SPLIT_Y)
fn matmul_forward_split(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) w: vec3<u32>) {
    let c0 = w.x * RN;
    let r0 = (w.y * SPLIT_Y + l.y) * RM;
    // A whole subgroup past the last row has nothing to sum or store.
    if r0 >= p.m {
        return;
    }
    let z = w.z;
    let oa = p.off_a + z * p.batch_a;
    let ob = p.off_b + z * p.batch_b;
    let cv = RN / 4u;
    // acc[i·cv + j] holds row r0 + i, columns c0 + 4j ..
    var acc: array<vec4<f32>, 32>;   // up to 16 × 8
    let last = p.n - 1u;
    for (var k = l.x; k < p.k; k += KL) {
        var bv: array<vec4<f32>, 2>;
        for (var j = 0u; j < cv; j++) {
            let c = c0 + 4u * j;
            bv[j] = vec4<f32>(
                elem_b(ob + min(c, last) * p.ld_b + k),
                elem_b(ob + min(c + 1u, last) * p.ld_b + k),
                elem_b(ob + min(c + 2u, last) * p.ld_b + k),
                elem_b(ob + min(c + 3u, last) * p.ld_b + k),
            );
        }
        for (var i = 0u; i < RM; i++) {
            let ai = elem_a(oa + min(r0 + i, p.m - 1u) * p.ld_a + k);
            for (var j = 0u; j < cv; j++) {
                acc[i * cv + j] += ai * bv[j];
            }
        }
    }
    // Reduce-scatter the KL partial blocks: at each level a thread keeps one half of its
    // block, sends the other to its partner and adds the partner's copy of the half it keeps,
    // so a thread ends with the sums of RM·cv/KL of the vec4 (q = i + held · l.x). When the
    // block has fewer vec4 than the subgroup has threads, subgroupAdd sums every one instead.
    let base = p.off_out + z * p.batch_out;
    var held = RM * cv;
    if held >= KL {
        for (var step = KL / 2u; step > 0u; step /= 2u) {
            held /= 2u;
            let upper = (l.x & step) != 0u;
            for (var i = 0u; i < held; i++) {
                let keep = select(acc[i], acc[i + held], upper);
                let send = select(acc[i + held], acc[i], upper);
                acc[i] = keep + subgroupShuffleXor(send, step);
            }
        }
        for (var i = 0u; i < held; i++) {
            store_vec(base, r0, c0, i + held * l.x, acc[i]);
        }
        return;
    }
    for (var q = 0u; q < RM * cv; q++) {
        let s = subgroupAdd(acc[q]);
        if l.x == 0u {
            store_vec(base, r0, c0, q, s);
        }
    }
}

// Stores vec4 q of a thread row's block: row r0 + q / (RN / 4), columns from c0 + 4 (q % (RN / 4)).
fn store_vec(base: u32, r0: u32, c0: u32, q: u32, s: vec4<f32>) {
    let cv = RN / 4u;
    let r = r0 + q / cv;
    let c = c0 + 4u * (q % cv);
    if r < p.m {
        for (var j = 0u; j < 4u; j++) {
            if c + j < p.n {
                store_out(base + r * p.ld_out + c + j, p.off_bias + c + j, s[j]);
            }
        }
    }
}
