// Prelude: the builtins of a kernel whose workgroups each own one item (a row, a chunk of the
// arena), taken by its entry points as one `Group`: classifier, distill, encoder, layernorm,
// rmsnorm and optim. The invocation's own index (`lid`) is a parameter of its own: Tint's
// uniformity analysis takes a struct as a whole, so a `Group` holding it would make the item
// index non-uniform, and every barrier after an early return of a row past the end an error.

struct Group {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
}

// The item of workgroup g: grids past the per-dimension limit continue along y.
fn group_index(g: Group) -> u32 {
    return g.wid.x + g.wid.y * g.groups.x;
}
