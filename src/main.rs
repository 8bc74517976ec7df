//! The wgtrain command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wgtrain::gpu::{self, AdapterChoice, Gpu};

#[derive(Parser)]
#[command(
    name = "wgtrain",
    version,
    about = "Train language models on any GPU with WGSL compute shaders"
)]
struct Cli {
    /// Backend to use: vulkan, metal, dx12 or gl.
    #[arg(long, global = true, env = "WGTRAIN_BACKEND")]
    backend: Option<String>,
    /// Use the adapter whose name contains this (case-insensitive).
    #[arg(long, global = true, env = "WGTRAIN_ADAPTER")]
    adapter: Option<String>,
    /// Time every kernel with GPU timestamps and print a table at the end.
    #[arg(long, global = true)]
    profile: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter with its backend, type, driver, features and limits.
    Adapters,
    /// Run one linear layer forward and backward on the GPU and check it against the CPU.
    Demo {
        /// Rows (B·T).
        #[arg(long, default_value_t = 256)]
        rows: u32,
        /// Input features C.
        #[arg(long, default_value_t = 384)]
        c_in: u32,
        /// Output features.
        #[arg(long, default_value_t = 1536)]
        c_out: u32,
    },
    /// Benchmark kernels against baselines measured in the same run.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
enum Bench {
    /// Matmul forward, backward (input and weight) and the naive baseline.
    Matmul {
        /// Comma-separated MxNxK sizes.
        #[arg(long, default_value = "1024x1024x1024")]
        sizes: String,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
        /// Timed samples per kernel; the median is reported.
        #[arg(long, default_value_t = 5)]
        samples: usize,
        /// Workgroup shape XxY of the tiled kernels (each thread computes a 4x4 block).
        #[arg(long, default_value = "8x8")]
        workgroup: String,
    },
    /// Fused AdamW, LAMB and SGD updates against a copy kernel and an unfused AdamW.
    Optim {
        /// Parameters in all.
        #[arg(long, default_value_t = 16 << 20)]
        params: u64,
        /// Tensors they are split into.
        #[arg(long, default_value_t = 150)]
        tensors: usize,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
        /// Timed samples per row; the median is reported.
        #[arg(long, default_value_t = 5)]
        samples: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let choice = AdapterChoice {
        backend: cli.backend.clone(),
        name: cli.adapter.clone(),
    };
    if let Command::Adapters = cli.command {
        let adapters = gpu::list_adapters(&choice)?;
        if adapters.is_empty() {
            return Err(wgtrain::GpuError::NoAdapter.into());
        }
        for a in &adapters {
            println!("{}", gpu::describe(a));
        }
        println!("selected: {}", gpu::select_adapter(&choice)?.get_info().name);
        return Ok(());
    }
    let mut gpu = Gpu::new(&choice)?;
    if cli.profile && !gpu.enable_profiling() {
        eprintln!("note: {} has no timestamp queries; --profile is off", gpu.name());
    }
    match cli.command {
        Command::Adapters => unreachable!("handled above"),
        Command::Demo { rows, c_in, c_out } => wgtrain::demo::run(&gpu, rows, c_in, c_out)?,
        Command::Bench(Bench::Matmul {
            sizes,
            json,
            samples,
            workgroup,
        }) => bench_matmul(&gpu, &sizes, json, samples, &workgroup)?,
        Command::Bench(Bench::Optim {
            params,
            tensors,
            json,
            samples,
        }) => bench_optim(&gpu, params, tensors, json, samples)?,
    }
    if let Some(p) = &gpu.profiler {
        eprintln!("{}", p.lock().unwrap().table());
    }
    Ok(())
}

fn bench_matmul(gpu: &Gpu, sizes: &str, json: bool, samples: usize, workgroup: &str) -> anyhow::Result<()> {
    let sizes = wgtrain::bench::parse_sizes(sizes).map_err(anyhow::Error::msg)?;
    let workgroup = wgtrain::bench::parse_workgroup(workgroup).map_err(anyhow::Error::msg)?;
    if !json {
        println!("adapter: {}", gpu.name());
        println!(
            "{:<24} {:>6} {:>6} {:>6} {:>10} {:>10} {:>9}",
            "kernel", "m", "n", "k", "ms", "GFLOP/s", "x naive"
        );
    }
    let rows = wgtrain::bench::matmul(gpu, &sizes, samples, workgroup)?;
    for r in &rows {
        if json {
            println!("{}", serde_json::to_string(r)?);
            continue;
        }
        let naive = rows
            .iter()
            .find(|x| x.kernel == "matmul_naive" && (x.m, x.n, x.k) == (r.m, r.n, r.k));
        let ratio = naive.map_or(f64::NAN, |x| r.gflops / x.gflops);
        println!(
            "{:<24} {:>6} {:>6} {:>6} {:>10.3} {:>10.2} {:>9.2}",
            r.kernel, r.m, r.n, r.k, r.ms, r.gflops, ratio
        );
    }
    Ok(())
}

fn bench_optim(gpu: &Gpu, params: u64, tensors: usize, json: bool, samples: usize) -> anyhow::Result<()> {
    anyhow::ensure!(params > 0, "--params must be positive");
    anyhow::ensure!(
        tensors > 0 && tensors as u64 <= params,
        "--tensors must be between 1 and --params"
    );
    if !json {
        println!("adapter: {}", gpu.name());
        println!(
            "{:<15} {:>10} {:>8} {:>10} {:>9} {:>8} {:>13}",
            "name", "params", "tensors", "ms", "GB/s", "B/param", "frac_of_copy"
        );
    }
    for r in wgtrain::bench::optim(gpu, params, tensors, samples)? {
        if json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "{:<15} {:>10} {:>8} {:>10.3} {:>9.2} {:>8} {:>13.3}",
                r.name, r.params, r.tensors, r.ms, r.gbps, r.bytes_per_param, r.frac_of_copy
            );
        }
    }
    Ok(())
}
