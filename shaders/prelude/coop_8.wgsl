// Prelude of the cooperative-matrix kernels (matmul_coop.wgsl, attention_coop.wgsl) on
// 8×8×8 fragments: f16 × f16 with an f32 accumulator.
const FRAG: u32 = 8u;
alias FragA = coop_mat8x8<f16, A>;
alias FragB = coop_mat8x8<f16, B>;
alias FragC = coop_mat8x8<f32, C>;
