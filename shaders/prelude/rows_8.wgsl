// Prelude of attention_rows.wgsl for head sizes up to 32: a row is held as 8 vec4.
const ROW4: u32 = 8u;
