//! The wgtrain command line.

use anyhow::Context;
use std::process::ExitCode;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod commands;
mod serve_web;
mod train_cli;
use commands::{eval, prepare, sample};
use train_cli::TrainCli;
use wgtrain::dist::Dist;
use wgtrain::gpu::{self, AdapterChoice, Gpu};
use wgtrain::model::config::TrainDefaults;
use wgtrain::train::defaults::Settings;

#[derive(Parser)]
#[command(name = "wgtrain", version, about = "Train language models on any GPU with WGSL compute shaders")]
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
    /// Skip autotuning: every matmul runs the adapter type's default variant.
    #[arg(long, global = true)]
    no_tune: bool,
    /// f32; f16: mixed precision (f16 activations and matmul weights over f32 master weights
    /// and optimizer state); auto: f16 where the adapter has f16 matrix units. For train,
    /// eval, sample, bench train and tune.
    #[arg(long, global = true, value_enum, default_value = "f32")]
    precision: wgtrain::model::PrecisionChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a GPT-2. With no arguments: a small byte-level model on the bundled Shakespeare.
    Train(Box<TrainCli>),
    /// Clean, deduplicate, tokenize and split text into train.bin / val.bin (no GPU needed).
    Prepare(Box<PrepareCli>),
    /// Mean loss and perplexity of a checkpoint on a token file, or its score on a task.
    Eval {
        /// Checkpoint directory (config.json, model.safetensors), a .gguf file, or a directory
        /// holding model.gguf (from `wgtrain quantize`).
        #[arg(long)]
        model: PathBuf,
        /// llm.c token file, or a directory from `wgtrain prepare` (its val.bin is used).
        #[arg(long, required_unless_present = "task", conflicts_with = "task")]
        data: Option<PathBuf>,
        /// A JSONL task: {"prompt", "answer"} records (exact-match, contains), or {"prompt",
        /// "choices", "answer": index} (choice). Prints the score and a JSON line.
        #[arg(long)]
        task: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "exact-match", requires = "task")]
        metric: wgtrain::train::task::Metric,
        /// Greedy answers stop at the end-of-text, a newline or this many new tokens.
        #[arg(long, default_value_t = 64, requires = "task")]
        max_new_tokens: usize,
        #[arg(long, default_value_t = 4)]
        batch_size: usize,
        /// Sequence length; the model's n_positions by default.
        #[arg(long)]
        seq_len: Option<usize>,
        /// Batches to average; all of the file by default.
        #[arg(long)]
        batches: Option<usize>,
        /// A LoRA adapter directory (peft's adapter_model.safetensors and adapter_config.json)
        /// applied to --model unmerged (--adapter picks the GPU).
        #[arg(long)]
        lora_adapter: Option<PathBuf>,
    },
    /// Generate text from a checkpoint, decoded with its tokenizer.json (bytes if it has none).
    Sample {
        /// Checkpoint directory (config.json, model.safetensors), a .gguf file, or a directory
        /// holding model.gguf.
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value = "\n")]
        prompt: String,
        /// A user message: the model answers it in its chat template (in place of --prompt).
        #[arg(long, conflicts_with = "prompt")]
        chat: Option<String>,
        #[arg(long, default_value_t = 256)]
        tokens: usize,
        /// 0 is greedy.
        #[arg(long, default_value_t = 0.8)]
        temperature: f32,
        /// 1 is greedy.
        #[arg(long, default_value_t = 40)]
        top_k: usize,
        #[arg(long, default_value_t = 1337)]
        seed: u64,
        /// A LoRA adapter directory applied to --model unmerged.
        #[arg(long)]
        lora_adapter: Option<PathBuf>,
        /// Write the exact bytes the model produced, as when stdout is not a terminal (on a
        /// terminal the text is decoded lossily, its control characters escaped).
        #[arg(long)]
        raw: bool,
    },
    /// Quantize a checkpoint into a GGUF file llama.cpp runs (and eval/sample read back).
    Quantize {
        /// Checkpoint directory (config.json, model.safetensors, tokenizer.json if any), or a
        /// GGUF file (its weights dequantized first).
        #[arg(long)]
        model: PathBuf,
        /// ggml's block formats, or f16/f32 (unquantized; f32 is lossless).
        #[arg(long, value_enum)]
        format: wgtrain::formats::QType,
        /// Quantize the embedding (and an untied LM head) too: the lookup and the head dequantize its rows.
        #[arg(long)]
        quantize_embeddings: bool,
        /// Directory for model.gguf, config.json and tokenizer.json.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite a model.gguf already in --out.
        #[arg(long)]
        force: bool,
    },
    /// Prune a checkpoint once: zero weights by magnitude or Wanda (--to), or drop MLP
    /// hidden channels (--keep-mlp) and Llama query heads (--keep-heads) into a smaller dense
    /// model.
    Prune(Box<wgtrain::compress::PruneArgs>),
    /// Merge a LoRA adapter into its base model: W + (α/r)·B·A, saved as an HF checkpoint.
    Merge {
        /// The base: checkpoint directory or GGUF file (dequantized).
        #[arg(long)]
        model: PathBuf,
        /// The adapter directory (adapter_model.safetensors, adapter_config.json).
        #[arg(long)]
        lora_adapter: PathBuf,
        /// Directory for config.json, model.safetensors and the tokenizer.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite a model already in --out.
        #[arg(long)]
        force: bool,
    },
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
    /// Check every kernel variant the tuner may pick on this adapter against the CPU reference
    /// (awkward sizes, NaN-prefilled outputs); exits 1 when any row fails. Run it first on a new GPU.
    Check {
        /// Element types to check: f32, f16 (where the adapter has SHADER_F16) or all.
        #[arg(long, value_enum, default_value_t = CheckDtypes::All)]
        dtypes: CheckDtypes,
        /// One awkward size per kernel instead of three.
        #[arg(long)]
        quick: bool,
        /// Print one JSON object per row.
        #[arg(long)]
        json: bool,
    },
    /// Serve the page that trains in the browser (WebGPU): build it first with `make web`.
    ServeWeb {
        /// The built page (scripts/web-build.sh writes it here).
        #[arg(long, default_value = "target/web/site")]
        dir: PathBuf,
        /// Address to listen on; port 0 takes any free port.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
    },
    /// Benchmark kernels against baselines measured in the same run.
    #[command(subcommand)]
    Bench(Bench),
    /// Time the matmul and attention variants for a model's shapes and store the fastest in the tuning cache
    /// (WGTRAIN_CACHE_DIR, else the user's cache directory); prints the choice and runner-up.
    Tune(ModelArgs),
}

/// `check --dtypes`.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum CheckDtypes {
    F32,
    F16,
    All,
}

/// The model and batch shape of `tune` and `bench train`.
#[derive(clap::Args)]
struct ModelArgs {
    /// Model config (.toml or HF config.json); by default the one `train` picks here.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Default: the config's [train] table, else 4.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Default: the config's [train] table, else 128.
    #[arg(long)]
    seq_len: Option<usize>,
}

#[derive(clap::Args)]
struct PrepareCli {
    /// Text files, JSONL files (.jsonl, .ndjson, .json) or directories of them; repeatable.
    /// A text file is one document, a JSONL line one record.
    #[arg(long, required = true)]
    input: Vec<PathBuf>,
    /// Output directory: train.bin, val.bin, tokenizer.json, stats.json.
    #[arg(long)]
    out: PathBuf,
    /// byte, gpt2 (OpenAI's GPT-2 BPE), bpe (train one on the input), a tokenizer.json or a .gguf (its tokenizer).
    #[arg(long, default_value = "byte")]
    tokenizer: wgtrain::data::prepare::TokenizerChoice,
    /// Tokens of the trained BPE (--tokenizer bpe), end-of-text included.
    #[arg(long, default_value_t = 4096)]
    vocab_size: usize,
    /// The text field of JSONL records.
    #[arg(long, default_value = "text")]
    field: String,
    /// text: documents to pretrain on. prompt-completion ({"prompt", "completion"}) or chat
    /// ({"messages": [{"role", "content"}, ...]}, rendered by the tokenizer's chat template):
    /// examples for fine-tuning, where only the completion or assistant tokens count in the
    /// loss (train.mask and val.mask beside the token files). Examples are not deduplicated.
    #[arg(long, default_value = "text")]
    format: RecordFormatArg,
    /// Drop documents with fewer characters than this.
    #[arg(long, default_value_t = 0)]
    min_chars: usize,
    /// Drop documents whose word-shingle Jaccard similarity to an earlier one reaches this.
    #[arg(long, default_value_t = 0.8)]
    near_dup_threshold: f64,
    /// Skip near-duplicate detection (exact duplicates are still removed).
    #[arg(long)]
    no_near_dup: bool,
    /// Share of documents that go to val.bin.
    #[arg(long, default_value_t = 0.05)]
    val_fraction: f64,
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// The end-of-text token of a tokenizer.json, if not <|endoftext|>, </s>, <|end_of_text|>,
    /// <eos> or <|im_end|>.
    #[arg(long)]
    eot: Option<String>,
    /// Replace prepared data already in --out.
    #[arg(long)]
    force: bool,
}

/// `prepare --format`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum RecordFormatArg {
    Text,
    PromptCompletion,
    Chat,
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
        /// Variants to time: auto (this adapter's tuning candidates), all, or names separated
        /// by commas (reg4x4-wg8x8, tile64x64x16-t4x4, ...). The baseline reg4x4-wg8x8 is
        /// always timed.
        #[arg(long, default_value = "auto")]
        variant: String,
    },
    /// Warm training steps on synthetic tokens: tokens/s, ms per step, TFLOP/s, MFU against
    /// the adapter's FP32 peak, and each kernel's share of the step (with timestamps).
    Train {
        #[command(flatten)]
        model: ModelArgs,
        /// Timed steps, after two warm-up steps.
        #[arg(long, default_value_t = 10)]
        steps: u64,
        /// The adapter's FP32 peak in TFLOP/s, for adapters the built-in table does not know.
        #[arg(long)]
        peak_tflops: Option<f64>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Fused AdamW, LAMB and SGD updates against a copy kernel and an unfused AdamW.
    Optim {
        /// Parameters in all.
        #[arg(long, default_value_t = 16 << 20)]
        params: u64,
        /// Tensors they are split into.
        #[arg(long, default_value_t = 50)]
        tensors: usize,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
        /// Timed samples per row; the median is reported.
        #[arg(long, default_value_t = 15)]
        samples: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Under mpirun, training runs as one of several ranks; MPI starts before the GPU, whose
    // choice depends on the rank.
    // From here a signal ends a run that has not started training at once (see
    // train/signals.rs).
    if matches!(cli.command, Command::Train(_)) {
        if let Err(e) = wgtrain::train::signals::Stop::install() {
            eprintln!("error: cannot watch for signals: {e}");
            return ExitCode::FAILURE;
        }
    }
    let dist = match &cli.command {
        Command::Train(_) => match Dist::from_env() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => Dist::single(),
    };
    match run(cli, &dist) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(code)) => {
            // Stopped by a signal after saving: finalize MPI, then exit with 130 or 143.
            dist.finish();
            std::process::exit(code)
        }
        Err(e) => {
            if dist.size > 1 {
                eprintln!("error (rank {}): {e:#}", dist.rank);
                // The other ranks may be waiting in a collective: end them all.
                dist.abort(1);
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, dist: &Dist) -> anyhow::Result<Option<i32>> {
    let choice = AdapterChoice { backend: cli.backend.clone(), name: cli.adapter.clone() };
    if let Command::Adapters = cli.command {
        let adapters = gpu::list_adapters(&choice)?;
        if adapters.is_empty() {
            return Err(wgtrain::GpuError::NoAdapter.into());
        }
        for a in &adapters {
            println!("{}", gpu::describe(a));
        }
        println!("selected: {}", gpu::select_adapter(&choice)?.get_info().name);
        return Ok(None);
    }
    if let Command::ServeWeb { dir, addr } = &cli.command {
        serve_web::serve(dir, addr)?;
        return Ok(None);
    }
    if let Command::Prepare(p) = cli.command {
        prepare(*p)?;
        return Ok(None);
    }
    if let Command::Quantize { model, format, quantize_embeddings, out, force } = &cli.command {
        let f = wgtrain::model::export::Format { qtype: *format, embeddings: *quantize_embeddings };
        commands::quantize(model, f, out, *force)?;
        return Ok(None);
    }
    if let Command::Merge { model, lora_adapter, out, force } = &cli.command {
        commands::merge(model, lora_adapter, out, *force)?;
        return Ok(None);
    }
    let mut gpu = if dist.size > 1 { Gpu::for_rank(&choice, dist.local_rank)? } else { Gpu::new(&choice)? };
    // Eval and sample tune their shapes too (training sets its table up itself).
    gpu.tuning.get_mut().unwrap().tune = !cli.no_tune;
    // `train` checks the variants it is about to use where this adapter never verified them.
    gpu.tuning.get_mut().unwrap().preflight = Some(wgtrain::check::preflight);
    // bench train reports kernel shares whenever the adapter has timestamps.
    let wants_profile = cli.profile || matches!(cli.command, Command::Bench(Bench::Train { .. }));
    if wants_profile && !gpu.enable_profiling() && cli.profile {
        eprintln!("note: {} has no timestamp queries; --profile is off", gpu.name());
    }
    // Train resolves --precision itself (a resumed run keeps its own).
    let precision = if matches!(cli.command, Command::Train(_)) {
        wgtrain::model::Precision::F32
    } else {
        resolve_precision(&gpu, cli.precision)?
    };
    match cli.command {
        Command::Adapters
        | Command::Prepare(_)
        | Command::Quantize { .. }
        | Command::Merge { .. }
        | Command::ServeWeb { .. } => {
            unreachable!("handled above")
        }
        Command::Demo { rows, c_in, c_out } => wgtrain::demo::run(&gpu, rows, c_in, c_out)?,
        Command::Prune(a) => commands::prune(&gpu, &a)?,
        Command::Train(t) => {
            let stopped = match &t.resume {
                Some(dir) => wgtrain::train::resume_dist(&gpu, dir, dist)?,
                None => {
                    let args = wgtrain::train::TrainArgs {
                        no_tune: cli.no_tune,
                        precision: cli.precision,
                        ..t.into_args(&gpu)?
                    };
                    wgtrain::train::train_dist(&gpu, &args, dist)?
                }
            };
            if stopped.is_some() {
                return Ok(stopped);
            }
        }
        Command::Eval { model, data, task, metric, max_new_tokens, batch_size, seq_len, batches, lora_adapter } => {
            let m = (model.as_path(), lora_adapter.as_deref());
            match (task, data) {
                (Some(task), _) => {
                    commands::eval_task(&gpu, m, &task, (metric, max_new_tokens), batch_size, precision)?
                }
                (None, Some(data)) => eval(&gpu, m, &data, (batch_size, seq_len), batches, precision)?,
                (None, None) => unreachable!("clap requires --data or --task"),
            }
        }
        Command::Sample { model, prompt, chat, tokens, temperature, top_k, seed, lora_adapter, raw } => {
            let sampling = (temperature, top_k, seed);
            let raw = raw || !std::io::IsTerminal::is_terminal(&std::io::stdout());
            let m = (model.as_path(), lora_adapter.as_deref());
            sample(&gpu, m, (&prompt, chat.as_deref()), tokens, sampling, (precision, raw))?
        }
        Command::Bench(Bench::Matmul { sizes, json, samples, variant }) => {
            bench_matmul(&gpu, &sizes, json, samples, &variant)?
        }
        Command::Bench(Bench::Optim { params, tensors, json, samples }) => {
            bench_optim(&gpu, params, tensors, json, samples)?
        }
        Command::Tune(m) => tune(&gpu, m, precision)?,
        Command::Check { dtypes, quick, json } => return check(&gpu, dtypes, quick, json),
        Command::Bench(Bench::Train { model, steps, peak_tflops, json }) => {
            let (cfg, b, t) = load_config(&gpu, model)?;
            let run = |p| wgtrain::bench::train(&gpu, cfg.clone(), (b, t), steps, peak_tflops, p);
            match precision {
                wgtrain::model::Precision::F32 => wgtrain::bench::print_train(&run(precision)?, json)?,
                // f16 against f32 on the same adapter, in one process.
                wgtrain::model::Precision::F16 => {
                    let base = run(wgtrain::model::Precision::F32)?;
                    wgtrain::bench::print_train_pair(&base, &run(precision)?, json)?
                }
            }
            return Ok(None);
        }
    }
    if let Some(p) = &gpu.profiler {
        eprintln!("{}", p.lock().unwrap().table());
    }
    Ok(None)
}

/// --config (the default run's by default), with B and T from the flags, else its [train]
/// table, else the built-in values.
fn load_config(gpu: &Gpu, m: ModelArgs) -> anyhow::Result<(wgtrain::model::GptConfig, usize, usize)> {
    let (b, t) = (m.batch_size, m.seq_len);
    let (path, table) = wgtrain::train::defaults::run_config(gpu, m.config, false)?;
    let path = path.expect("run_config names a config without --init");
    let cfg = wgtrain::model::GptConfig::load(&path).with_context(|| format!("--config {}", path.display()))?;
    let flags = TrainDefaults { batch_size: b, seq_len: t, ..Default::default() };
    let s = Settings::resolve(&flags, &table);
    let (b, t) = (s.batch_size, s.seq_len);
    anyhow::ensure!(b > 0 && t > 0, "--batch-size and --seq-len must be positive");
    anyhow::ensure!(t <= cfg.n_positions, "--seq-len {t} exceeds the model's n_positions {}", cfg.n_positions);
    Ok((cfg, b, t))
}

/// --precision for eval, sample, tune and bench train: auto says what it picked.
fn resolve_precision(gpu: &Gpu, choice: wgtrain::model::PrecisionChoice) -> anyhow::Result<wgtrain::model::Precision> {
    let (p, note) = choice.resolve(gpu).map_err(anyhow::Error::msg)?;
    if let Some(line) = note {
        eprintln!("{line}");
    }
    Ok(p)
}

fn tune(gpu: &Gpu, m: ModelArgs, precision: wgtrain::model::Precision) -> anyhow::Result<()> {
    let (cfg, b, t) = load_config(gpu, m)?;
    println!("adapter: {}", gpu.name());
    match wgtrain::gpu::tuning::cache_path() {
        Some(p) => println!("cache: {}", p.display()),
        None => println!("cache: none (set WGTRAIN_CACHE_DIR to keep the choices)"),
    }
    for line in wgtrain::train::tune_model(gpu, cfg, b, t, precision)? {
        println!("{line}");
    }
    Ok(())
}

fn bench_matmul(gpu: &Gpu, sizes: &str, json: bool, samples: usize, variant: &str) -> anyhow::Result<()> {
    let sizes = wgtrain::bench::parse_sizes(sizes).map_err(anyhow::Error::msg)?;
    let variants = wgtrain::bench::parse_variants(gpu, variant).map_err(anyhow::Error::msg)?;
    if !json {
        println!("adapter: {}", gpu.name());
    }
    let rows = wgtrain::bench::matmul(gpu, &sizes, samples, &variants)?;
    wgtrain::bench::print_matmul(&rows, json)?;
    Ok(())
}

fn bench_optim(gpu: &Gpu, params: u64, tensors: usize, json: bool, samples: usize) -> anyhow::Result<()> {
    anyhow::ensure!(params > 0, "--params must be positive");
    anyhow::ensure!(tensors > 0 && tensors as u64 <= params, "--tensors must be between 1 and --params");
    if !json {
        println!("adapter: {}", gpu.name());
    }
    wgtrain::bench::print_optim(&wgtrain::bench::optim(gpu, params, tensors, samples)?, json)?;
    Ok(())
}

/// `wgtrain check`: the table of rows, then exit 1 when any failed (naming the first).
fn check(gpu: &Gpu, dtypes: CheckDtypes, quick: bool, json: bool) -> anyhow::Result<Option<i32>> {
    use wgtrain::kernels::Dtype;
    let f16 = gpu.device.features().contains(wgpu::Features::SHADER_F16);
    let list = match dtypes {
        CheckDtypes::F32 => vec![Dtype::F32],
        CheckDtypes::F16 if !f16 => anyhow::bail!("--dtypes f16: {} has no SHADER_F16", gpu.name()),
        CheckDtypes::F16 => vec![Dtype::F16],
        CheckDtypes::All if f16 => vec![Dtype::F32, Dtype::F16],
        CheckDtypes::All => vec![Dtype::F32],
    };
    eprintln!("check: {} ({})", gpu.name(), gpu.info.driver_info);
    let rows = wgtrain::check::run(gpu, &list, quick)?;
    wgtrain::check::print(&rows, json)?;
    let failed: Vec<_> = rows.iter().filter(|r| !r.pass).collect();
    match failed.first() {
        None => {
            eprintln!("check: all {} rows pass", rows.len());
            Ok(None)
        }
        Some(r) => {
            eprintln!(
                "check: {} of {} rows fail, the first {} {} {} at {}",
                failed.len(),
                rows.len(),
                r.kernel,
                r.variant,
                r.dtype,
                r.size
            );
            Ok(Some(1))
        }
    }
}
