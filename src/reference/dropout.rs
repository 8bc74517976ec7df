//! The reference of dropout as the shaders apply it (elementwise.wgsl's dropout); the masks
//! themselves come from `crate::rng`'s key, which the runtime uses too.

pub use crate::rng::{hash, Key};

/// y = x · mask (or y += that with `add`), the mask of `key` and `salt`.
pub fn apply(y: &mut [f32], x: &[f32], key: Key, salt: u32, add: bool) {
    for (e, (y, &x)) in y.iter_mut().zip(x).enumerate() {
        let v = x * key.factor(salt, e);
        *y = if add { *y + v } else { v };
    }
}
