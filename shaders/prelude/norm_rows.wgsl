// Prelude: the row sums LayerNorm and RMSNorm share, for their kernels with one workgroup per
// row. The shader defines WG, `inp` (N, C) of S2 and `p.c`; reduce_sum comes from the
// reduction prelude.

// Σ_i x_i over the row that starts at base, summed by the workgroup (every thread gets it).
fn row_sum(base: u32, lid: u32) -> f32 {
    var s = 0.0;
    for (var i = lid; i < p.c; i += WG) {
        s += f32(inp[base + i]);
    }
    return reduce_sum(lid, s);
}

// Σ_i (x_i − shift)² likewise: LayerNorm's variance about the mean, RMSNorm's Σ x² (shift 0,
// since x − 0 is x exactly).
fn row_squares(base: u32, lid: u32, shift: f32) -> f32 {
    var s = 0.0;
    for (var i = lid; i < p.c; i += WG) {
        let d = f32(inp[base + i]) - shift;
        s += d * d;
    }
    return reduce_sum(lid, s);
}
