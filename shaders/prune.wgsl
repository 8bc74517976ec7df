// Magnitude pruning on the GPU: the k-th smallest |w| over a set of tensors (one of them in a
// per-layer scope, all the linear weights in a global one), found exactly by a two-pass radix
// select on the bits of |w| (as u32 they order like the values), then the prune mask; and the
// per-channel sums of squares of activations that Wanda and structured pruning score with.
//
// Legend: L elements of one tensor, W mask words (one bit per arena element, 1 = kept),
// S selection slots (groups of tensors ranked together), H = 65536 histogram bins.
//
//   hist_high    hist[bits(|w|) >> 16] += 1                         over the tensor's L weights
//   select_high  the smallest bin B with Σ_{b ≤ B} hist[b] ≥ k, the count below it; clears hist
//   hist_low     hist[bits & 0xffff] += 1                           over the weights in bin B
//   select_low   the smallest low half Lo with below + Σ_{l ≤ Lo} hist[l] ≥ k: threshold
//                T = B·2^16 + Lo, the k-th smallest bits (k = 0: none); clears hist
//   apply        mask bit of element i cleared where bits(|w_i|) ≤ T; the slot's zero bits counted
//   channel_sumsq  out[j] += Σ_i x[i, j]²                           over an (R, C) activation
//
// The slots run one after another (each clears the histogram for the next), so one
// histogram serves them all. A weight at the threshold is pruned with its ties, so at least k are. Pruned weights are
// exactly 0 (the optimizer zeroes them), the smallest bits there are: a mask only grows.
// sel[s] = (k, bin B, count below B then T + 1 where 0 means none, zero mask bits).

const H: u32 = 65536u;
const WG: u32 = 256u;

// Mirrors PruneParams in src/kernels/prune.rs. Offsets count elements (words for the mask).
struct Params {
    off: u32,      // the tensor's first element in the w binding
    len: u32,      // L, or R·C for channel_sumsq
    slot: u32,
    mask_off: u32, // the tensor's first mask word
    cols: u32,     // C of channel_sumsq
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> w: array<f32>;              // weights, or (R, C) activations
@group(0) @binding(1) var<storage, read_write> mask: array<u32>;     // (W)
@group(0) @binding(2) var<storage, read_write> hist: array<atomic<u32>>;  // (H)
@group(0) @binding(3) var<storage, read_write> sel: array<atomic<u32>>;   // (S, 4)
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> sums: array<u32, WG>;

fn bits(i: u32) -> u32 {
    return bitcast<u32>(abs(w[p.off + i]));
}

fn flat(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WG;
}

@compute @workgroup_size(WG)
fn hist_high(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if i < p.len {
        atomicAdd(&hist[bits(i) >> 16u], 1u);
    }
}

@compute @workgroup_size(WG)
fn hist_low(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if i >= p.len {
        return;
    }
    let b = bits(i);
    if (b >> 16u) == atomicLoad(&sel[4u * p.slot + 1u]) {
        atomicAdd(&hist[b & 0xffffu], 1u);
    }
}

// The first bin at which the count from `below` reaches k, for a workgroup of WG threads each
// holding H / WG bins; every thread then clears its bins. Returns (bin, count before it).
fn first_reaching(lid: u32, k: u32, below: u32) -> vec2<u32> {
    let per = H / WG;
    let base = lid * per;
    var s = 0u;
    for (var j = 0u; j < per; j++) {
        s += atomicLoad(&hist[base + j]);
    }
    sums[lid] = s;
    workgroupBarrier();
    var found = vec2<u32>(0xffffffffu, below);
    if lid == 0u && k > 0u {
        var cum = below;
        var t = 0u;
        while t < WG - 1u && cum + sums[t] < k {
            cum += sums[t];
            t++;
        }
        var b = t * per;
        loop {
            let h = atomicLoad(&hist[b]);
            if cum + h >= k || b == t * per + per - 1u {
                break;
            }
            cum += h;
            b++;
        }
        found = vec2<u32>(b, cum);
    }
    workgroupBarrier();
    for (var j = 0u; j < per; j++) {
        atomicStore(&hist[base + j], 0u);
    }
    return found;
}

@compute @workgroup_size(WG)
fn select_high(@builtin(local_invocation_index) lid: u32) {
    let k = atomicLoad(&sel[4u * p.slot]);
    let f = first_reaching(lid, k, 0u);
    if lid == 0u {
        atomicStore(&sel[4u * p.slot + 1u], f.x);
        atomicStore(&sel[4u * p.slot + 2u], f.y);
    }
}

@compute @workgroup_size(WG)
fn select_low(@builtin(local_invocation_index) lid: u32) {
    let k = atomicLoad(&sel[4u * p.slot]);
    let high = atomicLoad(&sel[4u * p.slot + 1u]);
    let f = first_reaching(lid, k, atomicLoad(&sel[4u * p.slot + 2u]));
    if lid == 0u {
        let t1 = select(0u, ((high << 16u) | f.x) + 1u, k > 0u);
        atomicStore(&sel[4u * p.slot + 2u], t1);
    }
}

// One thread per mask word of the tensor (tensors start on 64 elements: whole words).
@compute @workgroup_size(WG)
fn apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let word = flat(gid, groups);
    if word * 32u >= p.len {
        return;
    }
    let t1 = atomicLoad(&sel[4u * p.slot + 2u]);
    var inside = 0u;
    var pruned = 0u;
    for (var j = 0u; j < 32u; j++) {
        let i = word * 32u + j;
        if i < p.len {
            inside |= 1u << j;
            if bits(i) < t1 {
                pruned |= 1u << j;
            }
        }
    }
    let m = mask[p.mask_off + word] & ~pruned;
    mask[p.mask_off + word] = m;
    atomicAdd(&sel[4u * p.slot + 3u], countOneBits(inside & ~m));
}

// One thread per column j of an (R, C) activation: out (in mask) += Σ_i x[i, j]² as f32 bits.
@compute @workgroup_size(WG)
fn channel_sumsq(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let j = flat(gid, groups);
    if j >= p.cols {
        return;
    }
    var s = 0.0;
    for (var i = j; i < p.len; i += p.cols) {
        let x = w[p.off + i];
        s = fma(x, x, s);
    }
    mask[p.mask_off + j] = bitcast<u32>(bitcast<f32>(mask[p.mask_off + j]) + s);
}
