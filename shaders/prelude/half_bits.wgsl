// Prelude: f32 to f16 bits with explicit rounding (optim.wgsl, fake_quant.wgsl), the same
// on every adapter (pack2x16float leaves the rounding to the implementation).

// The f16 bits of x: round to nearest even, or stochastically with the random bits r
// (with `stochastic`: the round-up probability is the distance to the value below over the gap).
// Normal results keep the top 10 of the 23 mantissa bits (a carry moves into the exponent,
// up to infinity); subnormal ones are the 24-bit significand shifted by 14 − e.
fn f16_round(x: f32, r: u32, stochastic: bool) -> u32 {
    let bits = bitcast<u32>(x);
    let sign = (bits >> 16u) & 0x8000u;
    let exp = (bits >> 23u) & 0xffu;
    let mant = bits & 0x7fffffu;
    if exp == 0xffu {
        return sign | 0x7c00u | select(0u, 0x200u, mant != 0u);
    }
    let e = i32(exp) - 112;   // the f16 exponent field: exp − 127 + 15
    if e >= 31 {
        return sign | 0x7c00u;
    }
    if e < -10 {
        return sign;
    }
    var v = mant;
    var shift = 13u;
    if e < 1 {
        v = mant | 0x800000u;
        shift = u32(14 - e);
    }
    let mask = (1u << shift) - 1u;
    var q = v >> shift;
    if stochastic {
        q = (v + ((r >> (32u - shift)) & mask)) >> shift;
    } else {
        let rem = v & mask;
        let halfway = 1u << (shift - 1u);
        q += select(0u, 1u, rem > halfway || (rem == halfway && (q & 1u) == 1u));
    }
    if e < 1 {
        return sign | q;
    }
    return sign | ((u32(e) << 10u) + q);
}
