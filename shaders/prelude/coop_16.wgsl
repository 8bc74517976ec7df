// Prelude of the cooperative-matrix kernels (matmul_coop.wgsl, attention_coop.wgsl) on
// 16×16×16 fragments: f16 × f16 with an f32 accumulator.
const FRAG: u32 = 16u;
alias FragA = coop_mat16x16<f16, A>;
alias FragB = coop_mat16x16<f16, B>;
alias FragC = coop_mat16x16<f32, C>;
