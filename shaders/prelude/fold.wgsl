// Prelude: the fixed-order fold of a column-sum kernel's partial sums: a workgroup of
// (FOLD_COLS, FOLD_ROWS) threads, each thread summing a stride of rows for its column, then the
// FOLD_ROWS row lanes folded pairwise, so every run gives the same bits. The parameter
// gradients of LayerNorm and RMSNorm and the matmul's bias gradient use it.

const FOLD_COLS: u32 = 32u;
const FOLD_ROWS: u32 = 8u;
var<workgroup> fold_part: array<vec2<f32>, 256>;   // (FOLD_ROWS, FOLD_COLS)

// The sum over the row lanes of s for column lane lid.x, read in row lane 0 (lid.y == 0). Call
// it from uniform control flow.
fn fold_rows(lid: vec3<u32>, s: vec2<f32>) -> vec2<f32> {
    fold_part[lid.y * FOLD_COLS + lid.x] = s;
    workgroupBarrier();
    for (var h = FOLD_ROWS / 2u; h > 0u; h >>= 1u) {
        if lid.y < h {
            fold_part[lid.y * FOLD_COLS + lid.x] += fold_part[(lid.y + h) * FOLD_COLS + lid.x];
        }
        workgroupBarrier();
    }
    return fold_part[lid.x];
}
