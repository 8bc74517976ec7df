//! The commands of `wgtrain` that load a checkpoint (eval, sample) or prepare data: what
//! main.rs dispatches to, kept apart so that it stays the command line.

use wgtrain::data::tokenizer::Tokenizer;
use wgtrain::Gpu;

use crate::PrepareCli;

pub fn prepare(p: PrepareCli) -> anyhow::Result<()> {
    use wgtrain::data::prepare::PrepareArgs;
    use wgtrain::data::sft_prepare::RecordFormat;
    let format = match p.format {
        crate::RecordFormatArg::Text => None,
        crate::RecordFormatArg::PromptCompletion => Some(RecordFormat::PromptCompletion),
        crate::RecordFormatArg::Chat => Some(RecordFormat::Chat),
    };
    if let Some(format) = format {
        return prepare_sft(p, format);
    }
    let args = PrepareArgs {
        inputs: p.input,
        out: p.out,
        tokenizer: p.tokenizer,
        vocab_size: p.vocab_size,
        field: p.field,
        min_chars: p.min_chars,
        near_dup_threshold: (!p.no_near_dup).then_some(p.near_dup_threshold),
        val_fraction: p.val_fraction,
        seed: p.seed,
        eot: p.eot,
        force: p.force,
        progress: true,
    };
    let s = wgtrain::data::prepare::prepare(&args).map_err(anyhow::Error::msg)?;
    println!(
        "{} documents in: {} malformed, {} missing --field, {} empty, {} too short, {} exact and {} near duplicates",
        s.documents_in, s.malformed, s.missing_field, s.empty, s.too_short, s.exact_duplicates, s.near_duplicates
    );
    for (what, examples) in [("malformed", &s.malformed_examples), ("missing field", &s.missing_field_examples)] {
        if !examples.is_empty() {
            println!("  first {what}: {}", examples.join(", "));
        }
    }
    println!(
        "{} documents out: train {} docs, {} tokens; val {} docs, {} tokens; vocab {} ({} bytes per token)",
        s.documents_out, s.train_documents, s.train_tokens, s.val_documents, s.val_tokens, s.vocab_size, s.token_bytes
    );
    println!(
        "{:.1} MB in {:.2} s ({:.2} MB/s) -> {}",
        s.bytes_in as f64 / 1e6,
        s.seconds,
        s.mb_per_s,
        args.out.display()
    );
    if s.val_tokens == 0 && args.val_fraction > 0.0 {
        println!("note: val.bin is empty: too few documents for --val-fraction {}", args.val_fraction);
    }
    Ok(())
}

/// `prepare --format prompt-completion|chat`: examples with their masks.
fn prepare_sft(p: PrepareCli, format: wgtrain::data::sft_prepare::RecordFormat) -> anyhow::Result<()> {
    use wgtrain::data::sft_prepare::{prepare_sft, SftArgs};
    let a = SftArgs {
        inputs: p.input,
        out: p.out,
        tokenizer: p.tokenizer,
        format,
        val_fraction: p.val_fraction,
        seed: p.seed,
        eot: p.eot,
        force: p.force,
    };
    let s = prepare_sft(&a).map_err(anyhow::Error::msg)?;
    println!("{} records in: {} malformed", s.records_in, s.malformed);
    if !s.malformed_examples.is_empty() {
        println!("  first malformed: {}", s.malformed_examples.join("; "));
    }
    println!(
        "train {} examples, {} tokens; val {} examples, {} tokens; {} tokens count in the loss; longest example {} \
         tokens -> {}",
        s.train_examples,
        s.train_tokens,
        s.val_examples,
        s.val_tokens,
        s.counted_tokens,
        s.longest_example,
        a.out.display()
    );
    Ok(())
}

/// A model for eval and sample, with the tokenizer it names (its tokenizer.json, or the one
/// a GGUF file holds; None for a checkpoint without tokenizer.json, which is bytes).
struct Loaded {
    gpt: wgtrain::model::Gpt,
    tokenizer: Option<Tokenizer>,
    /// The chat template: GGUF's tokenizer.chat_template, or tokenizer_config.json's.
    chat_template: Option<String>,
    /// The token that ends a chat turn (GGUF's eos), where it is not the tokenizer's eot.
    eos: Option<u32>,
}

/// Loads `--model`: a checkpoint directory (config.json, model.safetensors), a GGUF file, or a
/// directory holding model.gguf; for batches of b × t (t: n_positions unless given).
fn load_model(
    gpu: &Gpu,
    (model, adapter): (&std::path::Path, Option<&std::path::Path>),
    (b, t): (usize, Option<usize>),
    precision: wgtrain::model::Precision,
) -> anyhow::Result<Loaded> {
    use wgtrain::model::{checkpoint, Gpt, GptConfig};
    let seq = |n_positions: usize| {
        let t = t.unwrap_or(n_positions);
        anyhow::ensure!(t > 0 && t <= n_positions, "--seq-len must be between 1 and n_positions {n_positions}");
        Ok(t)
    };
    if let Some(dir) = adapter {
        // The base as it is stored (a GGUF's blocks stay quantized), the adapter's path beside it.
        let src =
            wgtrain::compress::load_base(model).map_err(|e| anyhow::anyhow!("--model {}: {e}", model.display()))?;
        let t = seq(src.config.n_positions)?;
        let quant = wgtrain::model::QuantWeights::upload(gpu, &src.tensors)?;
        let gpt = Gpt::with_adapter(gpu, (src.config, quant), (b, t), precision, dir)
            .map_err(|e| anyhow::anyhow!("--lora-adapter {}: {e}", dir.display()))?;
        gpt.write_base(gpu, &wgtrain::model::quantized::dense_values(&src.tensors))?;
        let eos = src.chat.as_ref().and_then(|(_, e)| src.tok.token_id(e.as_deref()?));
        let chat_template = src.chat.map(|(t, _)| t);
        // A checkpoint without tokenizer.json is bytes, as below.
        let known = wgtrain::compress::gguf_path(model).is_some() || model.join("tokenizer.json").is_file();
        return Ok(Loaded { gpt, tokenizer: known.then_some(src.tok), chat_template, eos });
    }
    let dir_tokenizer = || -> anyhow::Result<Option<Tokenizer>> {
        let file = model.join("tokenizer.json");
        Ok(if file.is_file() { Some(Tokenizer::from_file(&file, None).map_err(anyhow::Error::msg)?) } else { None })
    };
    if let Some(path) = wgtrain::compress::gguf_path(model) {
        let m = wgtrain::model::export::read_gpt2(&path).map_err(anyhow::Error::msg)?;
        let gpt = Gpt::from_gguf(gpu, &m, b, seq(m.config.n_positions)?, precision)?;
        let tokenizer = if model.is_dir() { dir_tokenizer()?.or(Some(m.tokenizer)) } else { Some(m.tokenizer) };
        return Ok(Loaded { gpt, tokenizer, chat_template: m.chat_template, eos: m.eos });
    }
    let config = GptConfig::load(&model.join("config.json"))?;
    let table = wgtrain::optim::ParamTable::new(config.parameter_specs());
    let t = seq(config.n_positions)?;
    let gpt = Gpt::for_inference(gpu, config.clone(), b, t, precision, table, None)?;
    gpt.write_params(gpu, &checkpoint::load_hf(&model.join("model.safetensors"), &config)?);
    gpt.write_half_params(gpu)?;
    let chat = wgtrain::data::chat::chat_in_dir(model).map_err(anyhow::Error::msg)?;
    let tokenizer = dir_tokenizer()?;
    let eos = chat.as_ref().and_then(|(_, e)| tokenizer.as_ref()?.token_id(e.as_deref()?));
    Ok(Loaded { gpt, tokenizer, chat_template: chat.map(|(t, _)| t), eos })
}

/// The speed and memory line of eval and sample (on stderr): `tokens` since `started`, the
/// GPU memory peak and what the weights take.
fn speed(gpu: &Gpu, gpt: &wgtrain::model::Gpt, tokens: usize, started: std::time::Instant) {
    let s = started.elapsed().as_secs_f64();
    eprintln!(
        "{tokens} tokens in {s:.2} s ({:.0} tokens/s); GPU memory peak {:.1} MB, weights {:.2} MB",
        tokens as f64 / s,
        gpu.pool.stats().peak as f64 / 1e6,
        weight_bytes(gpt) as f64 / 1e6
    );
}

/// The GPU bytes of a model's weights: its f32 (or f16) parameters and quantized tensors, and
/// a LoRA model's frozen base.
fn weight_bytes(gpt: &wgtrain::model::Gpt) -> u64 {
    let base = gpt.lora.as_ref().map_or(0, |l| l.base.params.size() + l.base.half.as_ref().map_or(0, |h| h.size()));
    gpt.quant.as_ref().map_or(0, |q| q.bytes()) + gpt.arena.params.size() + base
}

/// `wgtrain merge`: BASE with the adapter merged in, as an HF checkpoint in `out`.
pub fn merge(
    model: &std::path::Path,
    adapter: &std::path::Path,
    out: &std::path::Path,
    force: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        force || !out.join("model.safetensors").exists(),
        "--out {}: holds a model.safetensors already; pick another directory or pass --force",
        out.display()
    );
    let layers = wgtrain::compress::merge_adapter(model, adapter, out).map_err(anyhow::Error::msg)?;
    println!("merged the adapters of {layers} layers into {} -> {}", model.display(), out.display());
    Ok(())
}

/// `wgtrain quantize`: a checkpoint into DIR2/model.gguf (+ config.json, tokenizer.json).
pub fn quantize(
    model: &std::path::Path,
    format: wgtrain::model::export::Format,
    out: &std::path::Path,
    force: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        force || !out.join("model.gguf").exists(),
        "--out {}: holds a model.gguf already; pick another directory or pass --force",
        out.display()
    );
    let r = wgtrain::compress::quantize(model, format, out).map_err(anyhow::Error::msg)?;
    let mut kept = 0;
    for p in &r.planned {
        if let Some(note) = &p.note {
            println!("  {} ({}): {note}", p.name, p.gguf);
            kept += 1;
        }
    }
    let converted = r.planned.iter().filter(|p| p.qtype == format.qtype && p.qtype != wgtrain::formats::QType::F32);
    println!(
        "{} tensors in {}, {} in f32 ({kept} of them because their rows are not whole blocks); {:.2} MB (the weights in f32: {:.2} MB) -> {}",
        converted.count(),
        format.qtype.name(),
        r.planned.iter().filter(|p| p.qtype == wgtrain::formats::QType::F32).count(),
        r.gguf_bytes as f64 / 1e6,
        r.f32_bytes as f64 / 1e6,
        r.out.join("model.gguf").display()
    );
    Ok(())
}

pub fn eval(
    gpu: &Gpu,
    (model, adapter): (&std::path::Path, Option<&std::path::Path>),
    data: &std::path::Path,
    (b, t): (usize, Option<usize>),
    batches: Option<usize>,
    precision: wgtrain::model::Precision,
) -> anyhow::Result<()> {
    anyhow::ensure!(b > 0, "--batch-size must be positive");
    let Loaded { gpt, tokenizer, .. } = load_model(gpu, (model, adapter), (b, t), precision)?;
    let (file, data_dir) = match wgtrain::data::prepared_files(data)? {
        Some((_, Some(val))) => (val, data.to_path_buf()),
        Some((_, None)) => anyhow::bail!("--data {}: its val.bin holds no tokens", data.display()),
        None => (data.to_path_buf(), data.parent().map(|p| p.to_path_buf()).unwrap_or_default()),
    };
    let theirs = data_dir.join("tokenizer.json");
    if let (Some(a), true) = (&tokenizer, theirs.is_file()) {
        let b = Tokenizer::from_file(&theirs, None).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            a.same_ids(&b),
            "the tokenizers of {} and {} give tokens other ids: the data was tokenized for another model",
            model.display(),
            theirs.display()
        );
    }
    let data = file.as_path();
    let (tokens, examples) = wgtrain::data::sft::read_token_data(data)?;
    let max = tokens.iter().copied().max().unwrap_or(0);
    anyhow::ensure!(
        (max as usize) < gpt.config.vocab_size,
        "{}: token id {max} is past the model's vocab_size {}",
        data.display(),
        gpt.config.vocab_size
    );
    let mut loader = wgtrain::data::Loader::of((tokens, examples), b, gpt.t, false, 0)
        .map_err(|e| anyhow::anyhow!("{}: {e}", data.display()))?;
    let n = batches.unwrap_or(loader.batches());
    let started = std::time::Instant::now();
    let loss = wgtrain::train::evaluate(gpu, &gpt, &mut loader, n)?;
    let n = n.min(loader.batches());
    println!("loss {loss:.4} perplexity {:.3} ({n} batches of {b} × {})", (loss as f64).exp(), gpt.t);
    speed(gpu, &gpt, n * b * gpt.t, started);
    Ok(())
}

/// `wgtrain eval --task`: the model's score on a JSONL task, with a JSON line for scripts.
pub fn eval_task(
    gpu: &Gpu,
    (model, adapter): (&std::path::Path, Option<&std::path::Path>),
    task: &std::path::Path,
    (metric, max_new): (wgtrain::train::task::Metric, usize),
    b: usize,
    precision: wgtrain::model::Precision,
) -> anyhow::Result<()> {
    use wgtrain::train::task;
    anyhow::ensure!(b > 0, "--batch-size must be positive");
    anyhow::ensure!(max_new > 0 || metric == task::Metric::Choice, "--max-new-tokens must be positive");
    let records = task::read_task(task, metric).map_err(anyhow::Error::msg)?;
    let tok = model_tokenizer(model)?;
    // Rows as long as the longest prompt (and option) need, and no longer.
    let t = task::longest(&tok, &records).map_err(anyhow::Error::msg)?;
    let choice = metric == task::Metric::Choice;
    let Loaded { gpt, eos, .. } = load_model(gpu, (model, adapter), (b, Some(t)), precision)
        .map_err(|e| anyhow::anyhow!("{e} (--task {} needs rows of {t} tokens)", task.display()))?;
    let s = if choice {
        task::choice_task(gpu, &gpt, &tok, &records)?
    } else {
        task::generate_task(gpu, &gpt, &tok, &records, (metric, max_new), eos)?
    };
    for (r, out) in records.iter().zip(&s.outputs).take(3) {
        println!("  {:?} -> {out:?}", r.prompt);
    }
    let mut line = serde_json::to_value(&s)?;
    println!(
        "{} {:.4} ({} of {}) in {:.1} s",
        line["metric"].as_str().unwrap_or("score"),
        s.score,
        s.correct,
        s.total,
        s.seconds
    );
    line["task"] = task.display().to_string().into();
    println!("{line}");
    Ok(())
}

/// The tokenizer of --model without loading its weights: a GGUF file's, or the directory's
/// tokenizer.json (bytes without one).
fn model_tokenizer(model: &std::path::Path) -> anyhow::Result<Tokenizer> {
    match wgtrain::compress::gguf_path(model) {
        Some(p) if !model.join("tokenizer.json").is_file() => {
            wgtrain::data::gguf_tokenizer::of_file(&p).map_err(anyhow::Error::msg)
        }
        _ => Tokenizer::for_dir(model).map_err(anyhow::Error::msg),
    }
}

/// `wgtrain sample`: a continuation of `prompt`, or with `chat` the model's answer to it as a
/// user message in the model's chat template (stopping at the end of its turn).
pub fn sample(
    gpu: &Gpu,
    (model, adapter): (&std::path::Path, Option<&std::path::Path>),
    (prompt, chat): (&str, Option<&str>),
    n: usize,
    (temperature, top_k, seed): (f32, usize, u64),
    (precision, raw): (wgtrain::model::Precision, bool),
) -> anyhow::Result<()> {
    // The decoder and the prompt's prefill keep their own activations; the model itself only
    // hosts parameters.
    let Loaded { gpt, tokenizer, chat_template, eos } = load_model(gpu, (model, adapter), (1, Some(1)), precision)?;
    let has_file = tokenizer.is_some();
    let tok = tokenizer.unwrap_or_else(Tokenizer::byte);
    anyhow::ensure!(
        gpt.config.vocab_size >= tok.vocab_size,
        "{}: the model's vocab_size {} is smaller than its tokenizer's {}{}",
        model.display(),
        gpt.config.vocab_size,
        tok.vocab_size,
        if has_file { "" } else { " (bytes: no tokenizer.json in the directory)" }
    );
    let sampling = (temperature, top_k, seed);
    let out = if let Some(text) = chat {
        let template = chat_template.ok_or_else(|| {
            anyhow::anyhow!(
                "--chat: {} has no chat template (tokenizer.chat_template or tokenizer_config.json); use --prompt",
                model.display()
            )
        })?;
        let message = wgtrain::data::chat::Message { role: "user".into(), content: text.replace("\\n", "\n") };
        let stop = eos.unwrap_or(tok.eot);
        let eos_text = tok.decode(&[stop]);
        let prompt =
            wgtrain::data::chat::render(&template, &[message], true, ("", &eos_text)).map_err(anyhow::Error::msg)?;
        let out = wgtrain::train::sample_until(gpu, &gpt, &tok, &prompt, n, sampling, Some(stop))?;
        let answer = tok.decode_bytes(&out.ids);
        show(&[answer.trim_ascii()], raw)?;
        out
    } else {
        let prompt = prompt.replace("\\n", "\n");
        let out = wgtrain::train::sample_until(gpu, &gpt, &tok, &prompt, n, sampling, None)?;
        show(&[prompt.as_bytes(), &tok.decode_bytes(&out.ids)], raw)?;
        out
    };
    sample_speed(gpu, &gpt, &out);
    Ok(())
}

/// Writes `parts` and a newline to stdout: as they are with `raw`, else decoded lossily with
/// their control characters escaped (a terminal).
fn show(parts: &[&[u8]], raw: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let bytes = parts.concat();
    let mut out = std::io::stdout().lock();
    match raw {
        true => out.write_all(&bytes)?,
        false => out.write_all(wgtrain::train::printable(&String::from_utf8_lossy(&bytes)).as_bytes())?,
    }
    out.write_all(b"\n")?;
    Ok(out.flush()?)
}

/// The prompt's and the decoding's tokens per second, and the memory, on stderr.
fn sample_speed(gpu: &Gpu, gpt: &wgtrain::model::Gpt, s: &wgtrain::train::Sampled) {
    let rate = |n: usize, t: f64| n as f64 / t.max(1e-9);
    eprintln!(
        "prompt {} tokens in {:.2} s ({:.1} tokens/s); decode {} tokens in {:.2} s ({:.1} tokens/s); \
         GPU memory peak {:.1} MB, weights {:.2} MB",
        s.prompt_tokens,
        s.prompt_s,
        rate(s.prompt_tokens, s.prompt_s),
        s.new_tokens,
        s.decode_s,
        rate(s.new_tokens, s.decode_s),
        gpu.pool.stats().peak as f64 / 1e6,
        weight_bytes(gpt) as f64 / 1e6
    );
}

/// `wgtrain prune`, and what it did.
pub fn prune(gpu: &Gpu, a: &wgtrain::compress::PruneArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let r = wgtrain::compress::prune_model(gpu, a).map_err(anyhow::Error::msg)?;
    if a.to.is_none() {
        println!(
            "kept {} of {} query heads and {} of {} MLP hidden channels per layer: {} -> {} parameters",
            r.heads.1, r.heads.0, r.mlp.1, r.mlp.0, r.params.0, r.params.1
        );
    } else {
        println!(
            "zeroed {} of {} linear weights ({:.4}) by {:?}",
            r.zeroed,
            r.linear,
            r.zeroed as f64 / r.linear.max(1) as f64,
            a.method
        );
    }
    println!("{:.2} s -> {}", started.elapsed().as_secs_f64(), a.out.display());
    Ok(())
}
