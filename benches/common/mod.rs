//! What every bench starts with.

use wgtrain::Gpu;

/// The adapter WGTRAIN_BACKEND / WGTRAIN_ADAPTER name (or the best one); None, said on stderr,
/// where there is none: a bench with no adapter has nothing to time.
pub fn gpu() -> Option<Gpu> {
    Gpu::from_env().map_err(|e| eprintln!("no adapter, nothing to bench: {e}")).ok()
}
