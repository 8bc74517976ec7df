//! What `wgtrain bench matmul`, `bench optim` and `bench train` print: tables with the ratios measured in the
//! same run, or one JSON object per row.

use super::{MatmulRow, OptimRow, TrainBench};
use crate::kernels::matmul::Variant;

/// One line per row, with its ratio to the baseline variant and to naive at the same size.
pub fn print_matmul(rows: &[MatmulRow], json: bool) -> serde_json::Result<()> {
    if !json {
        println!(
            "{:<23} {:<18} {:>6} {:>6} {:>6} {:>9} {:>9} {:>7} {:>7}",
            "kernel", "variant", "m", "n", "k", "ms", "GFLOP/s", "x base", "x naive"
        );
    }
    let base = Variant::BASELINE.to_string();
    for r in rows {
        if json {
            println!("{}", serde_json::to_string(r)?);
            continue;
        }
        let find = |kernel: &str, variant: &str| {
            rows.iter().find(|x| x.kernel == kernel && x.variant == variant && (x.m, x.n, x.k) == (r.m, r.n, r.k))
        };
        let ratio = |x: Option<&MatmulRow>| x.map_or(f64::NAN, |x| r.gflops / x.gflops);
        println!(
            "{:<23} {:<18} {:>6} {:>6} {:>6} {:>9.3} {:>9.2} {:>7.2} {:>7.2}",
            r.kernel,
            r.variant,
            r.m,
            r.n,
            r.k,
            r.ms,
            r.gflops,
            ratio(find(r.kernel, &base)),
            ratio(find("matmul_naive", "naive"))
        );
    }
    Ok(())
}

/// One line per optimizer row, with its fraction of the copy kernel's bandwidth.
pub fn print_optim(rows: &[OptimRow], json: bool) -> serde_json::Result<()> {
    if !json {
        println!(
            "{:<15} {:>10} {:>8} {:>10} {:>9} {:>8} {:>13}",
            "name", "params", "tensors", "ms", "GB/s", "B/param", "frac_of_copy"
        );
    }
    for r in rows {
        if json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            println!(
                "{:<15} {:>10} {:>8} {:>10.3} {:>9.2} {:>8} {:>13.3}",
                r.name, r.params, r.tensors, r.ms, r.gbps, r.bytes_per_param, r.frac_of_copy
            );
        }
    }
    Ok(())
}

/// The training benchmark's summary and each kernel's share, largest first.
pub fn print_train(r: &TrainBench, json: bool) -> serde_json::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    println!("adapter: {}", r.adapter);
    println!("params: {:.2}M, precision {}", r.params as f64 / 1e6, r.precision);
    let mfu = r.mfu.map_or("unknown peak (pass --peak-tflops)".to_string(), |m| format!("{:.1}%", 100.0 * m));
    println!("{:.0} tokens/s, {:.1} ms per step, {:.3} TFLOP/s, MFU {mfu}", r.tokens_per_s, r.ms_per_step, r.tflops);
    let mb = |x: u64| x as f64 / 1e6;
    println!("memory: peak {:.1} MB, activations {:.1} MB", mb(r.peak_bytes), mb(r.activation_bytes));
    let mut shares: Vec<_> = r.kernels.iter().collect();
    shares.sort_by(|a, b| b.1.total_cmp(a.1));
    for (k, s) in shares {
        println!("  {k:<28} {:>5.1}%", 100.0 * s);
    }
    Ok(())
}

/// `bench train --precision f16`: the f16 run against the f32 one of the same process.
pub fn print_train_pair(f32_run: &TrainBench, f16_run: &TrainBench, json: bool) -> serde_json::Result<()> {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let speedup = ratio(f16_run.tokens_per_s, f32_run.tokens_per_s);
    let memory = ratio(f16_run.peak_bytes as f64, f32_run.peak_bytes as f64);
    let acts = ratio(f16_run.activation_bytes as f64, f32_run.activation_bytes as f64);
    if json {
        let v = serde_json::json!({ "f32": f32_run, "f16": f16_run, "f16_speedup": speedup,
            "f16_peak_memory_ratio": memory, "f16_activation_ratio": acts });
        println!("{v}");
        return Ok(());
    }
    print_train(f32_run, false)?;
    print_train(f16_run, false)?;
    println!("f16 / f32: {speedup:.2}× tokens/s, {memory:.2}× peak memory, {acts:.2}× activation memory");
    Ok(())
}
