// Prelude: workgroup reductions, shared by the shaders that need them. WGSL has no include:
// src/gpu/pipeline.rs composes this text ahead of each shader that lists it, and the naga test
// validates the composed modules. The shader defines `const WG: u32`, its workgroup's thread
// count (a power of two).

var<workgroup> red: array<vec2<f32>, WG>;

// Pairwise sum of every thread's x, in a fixed order; every thread gets the total. Call it
// from uniform control flow.
fn reduce_sum2(lid: u32, x: vec2<f32>) -> vec2<f32> {
    red[lid] = x;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if lid < h {
            red[lid] += red[lid + h];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(lid: u32, x: f32) -> f32 {
    return reduce_sum2(lid, vec2<f32>(x, 0.0)).x;
}

// The largest of every thread's x; every thread gets it.
fn reduce_max(lid: u32, x: f32) -> f32 {
    red[lid] = vec2<f32>(x, 0.0);
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if lid < h {
            red[lid].x = max(red[lid].x, red[lid + h].x);
        }
        workgroupBarrier();
    }
    let r = red[0].x;
    workgroupBarrier();
    return r;
}
