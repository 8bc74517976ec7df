// Prelude of attention_rows.wgsl for head sizes up to 64: a row is held as 16 vec4.
const ROW4: u32 = 16u;
