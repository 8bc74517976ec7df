// Prelude: the workgroup reductions of reduce.wgsl (the same functions) through subgroup
// operations, composed in its place on adapters with SUBGROUP. Each subgroup combines its lanes,
// one lane per subgroup writes the partial, and every thread combines the partials in subgroup
// order: two barriers instead of log2(WG) + 2. Subgroups are taken to be consecutive runs of
// local_invocation_index (as drivers lay out one-dimensional workgroups); the kernels' reference
// tests would fail on an adapter where they are not. Results are deterministic on one adapter
// but differ from the tree's in the last bits. (naga takes subgroup built-ins without
// `enable subgroups;` when the device has the feature, and does not parse that directive yet.)

var<workgroup> red: array<vec2<f32>, WG>;   // one partial per subgroup

fn reduce_sum2(lid: u32, x: vec2<f32>) -> vec2<f32> {
    let s = subgroupAdd(x);
    let first = subgroupBroadcastFirst(lid);
    let size = subgroupAdd(1u);
    if lid == first {
        red[first / size] = s;
    }
    workgroupBarrier();
    var total = red[0];
    for (var i = 1u; i < WG / size; i++) {
        total += red[i];
    }
    workgroupBarrier();
    return total;
}

fn reduce_sum(lid: u32, x: f32) -> f32 {
    return reduce_sum2(lid, vec2<f32>(x, 0.0)).x;
}

fn reduce_max(lid: u32, x: f32) -> f32 {
    let m = subgroupMax(x);
    let first = subgroupBroadcastFirst(lid);
    let size = subgroupAdd(1u);
    if lid == first {
        red[first / size] = vec2<f32>(m, 0.0);
    }
    workgroupBarrier();
    var r = red[0].x;
    for (var i = 1u; i < WG / size; i++) {
        r = max(r, red[i].x);
    }
    workgroupBarrier();
    return r;
}
