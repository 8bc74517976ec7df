//! `wgtrain tune`: the tuning run over a whole model, which builds it with every candidate
//! timed (`crate::tune` times each class as the model meets it) and reports each class's
//! choice.

use crate::gpu::{Gpu, GpuError};
use crate::model::{Gpt, GptConfig, Precision};

/// `wgtrain tune`: builds the model at (B, T) with tuning on, which times every class its
/// matmuls meet (or reads it from the cache), and returns one line per class with the choice
/// and the runner-up.
pub fn tune_model(
    gpu: &Gpu,
    config: GptConfig,
    b: usize,
    t: usize,
    precision: Precision,
) -> Result<Vec<String>, GpuError> {
    {
        let mut t = gpu.tuning.lock().unwrap();
        t.tune = true;
        t.thorough = true;
    }
    drop(Gpt::with_precision(gpu, config, b, t, 1, precision)?);
    let table = gpu.tuning.lock().unwrap();
    let mut lines = vec![format!("{:<34} {:<20} {:>9}  {:<20} {:>9}", "class", "choice", "ms", "runner-up", "ms")];
    for (key, (e, cached)) in &table.found {
        let up = e.runner_up.as_deref().unwrap_or("-");
        let up_ms = e.runner_up_ms.map_or("-".to_string(), |x| format!("{x:.3}"));
        let from = if *cached { "  (cached)" } else { "" };
        lines.push(format!("{key:<34} {:<20} {:>9.3}  {up:<20} {up_ms:>9}{from}", e.best, e.best_ms));
    }
    Ok(lines)
}
