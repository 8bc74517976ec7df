// Checksum of a buffer's bits, for comparing the ranks' copies of the parameters.
//
// Legend: N words (u32: the bits of f32 values), i the word's index in the whole buffer.
//
//   checksum   sums[0] += Σ_i h(w_i, i),  sums[1] += Σ_i h(w_i, i) · (2i + 1)   (wrapping u32)
//
// h mixes a word with its index, so that equal values in other places count differently.
// Wrapping integer addition is associative and commutative, so the atomics give the same sums
// in any order: equal bits give equal checksums on every run and every rank.

const WG: u32 = 256u;

// Mirrors ChecksumParams in src/kernels/checksum.rs.
struct Params {
    n: u32,      // words in this window
    base: u32,   // index of the window's first word in the whole buffer
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> sums: array<atomic<u32>, 2>;
@group(0) @binding(1) var<storage, read> words: array<u32>;   // (N)
@group(0) @binding(2) var<uniform> p: Params;

fn mix(w: u32, i: u32) -> u32 {
    var h = w * 0x9E3779B1u + i * 0x85EBCA77u;
    h ^= h >> 15u;
    h *= 0x2C1B3C6Du;
    h ^= h >> 12u;
    return h;
}

@compute @workgroup_size(WG)
fn checksum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    var a = 0u;
    var b = 0u;
    for (var k = gid.x; k < p.n; k += groups.x * WG) {
        let i = p.base + k;
        let h = mix(words[k], i);
        a += h;
        b += h * (2u * i + 1u);
    }
    atomicAdd(&sums[0], a);
    atomicAdd(&sums[1], b);
}
