//! Reference checksum of a buffer's u32 words (shaders/checksum.wgsl).

fn mix(w: u32, i: u32) -> u32 {
    let mut h = w.wrapping_mul(0x9E37_79B1).wrapping_add(i.wrapping_mul(0x85EB_CA77));
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^= h >> 12;
    h
}

/// [Σ h(w_i, i), Σ h(w_i, i)·(2i + 1)], wrapping.
pub fn checksum(words: &[u32]) -> [u32; 2] {
    let mut s = [0u32; 2];
    for (i, &w) in words.iter().enumerate() {
        let h = mix(w, i as u32);
        s[0] = s[0].wrapping_add(h);
        s[1] = s[1].wrapping_add(h.wrapping_mul((i as u32).wrapping_mul(2).wrapping_add(1)));
    }
    s
}
