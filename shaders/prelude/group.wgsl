// Prelude: the builtins of a kernel whose workgroups each own one item (a row, a chunk of the
// arena), taken by its entry points as one `Group`: classifier, distill, encoder, layernorm,
// rmsnorm and optim.

struct Group {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
}

// The item of workgroup g: grids past the per-dimension limit continue along y.
fn group_index(g: Group) -> u32 {
    return g.wid.x + g.wid.y * g.groups.x;
}
