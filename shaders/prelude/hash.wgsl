// Prelude: a 32-bit hash of (seed, element) for random bits that need no state (stochastic
// rounding in optim.wgsl, dropout masks in elementwise.wgsl): PCG's output function on a
// mixed state. src/reference/dropout.rs computes the same bits on the CPU.

fn hash(seed: u32, e: u32) -> u32 {
    let s = e * 747796405u + 2891336453u + seed * 2654435769u;
    let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
    return (w >> 22u) ^ w;
}
