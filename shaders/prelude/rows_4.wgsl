// Prelude of attention_rows.wgsl for head sizes up to 16: a row is held as 4 vec4.
const ROW4: u32 = 4u;
