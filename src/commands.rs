//! The commands of `wgtrain` that load a checkpoint (eval, sample) or prepare data: what
//! main.rs dispatches to, kept apart so that it stays the command line.

use wgtrain::Gpu;

use crate::PrepareCli;

pub fn prepare(p: PrepareCli) -> anyhow::Result<()> {
    use wgtrain::data::prepare::PrepareArgs;
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

/// Loads a checkpoint directory into a model for batches of b × t in `precision`.
fn load_model(
    gpu: &Gpu,
    dir: &std::path::Path,
    (b, t): (usize, Option<usize>),
    precision: wgtrain::model::Precision,
) -> anyhow::Result<wgtrain::model::Gpt> {
    use wgtrain::model::{checkpoint, Gpt, GptConfig};
    let config = GptConfig::load(&dir.join("config.json"))?;
    let t = t.unwrap_or(config.n_positions);
    anyhow::ensure!(
        t > 0 && t <= config.n_positions,
        "--seq-len must be between 1 and n_positions {}",
        config.n_positions
    );
    let gpt = Gpt::with_precision(gpu, config.clone(), b, t, 1, precision)?;
    gpt.write_params(gpu, &checkpoint::load_hf(&dir.join("model.safetensors"), &config)?);
    gpt.write_half_params(gpu)?;
    Ok(gpt)
}

pub fn eval(
    gpu: &Gpu,
    model: &std::path::Path,
    data: &std::path::Path,
    (b, t): (usize, Option<usize>),
    batches: Option<usize>,
    precision: wgtrain::model::Precision,
) -> anyhow::Result<()> {
    anyhow::ensure!(b > 0, "--batch-size must be positive");
    let gpt = load_model(gpu, model, (b, t), precision)?;
    let (file, data_dir) = match wgtrain::data::prepared_files(data)? {
        Some((_, Some(val))) => (val, data.to_path_buf()),
        Some((_, None)) => anyhow::bail!("--data {}: its val.bin holds no tokens", data.display()),
        None => (data.to_path_buf(), data.parent().map(|p| p.to_path_buf()).unwrap_or_default()),
    };
    let (mine, theirs) = (model.join("tokenizer.json"), data_dir.join("tokenizer.json"));
    if mine.is_file() && theirs.is_file() {
        use wgtrain::data::tokenizer::Tokenizer;
        let a = Tokenizer::from_file(&mine, None).map_err(anyhow::Error::msg)?;
        let b = Tokenizer::from_file(&theirs, None).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            a.same_ids(&b),
            "{} and {} give tokens other ids: the data was tokenized for another model",
            mine.display(),
            theirs.display()
        );
    }
    let data = file.as_path();
    let tokens = wgtrain::data::read_tokens(data)?;
    let max = tokens.iter().copied().max().unwrap_or(0);
    anyhow::ensure!(
        (max as usize) < gpt.config.vocab_size,
        "{}: token id {max} is past the model's vocab_size {}",
        data.display(),
        gpt.config.vocab_size
    );
    let mut loader = wgtrain::data::Loader::new(tokens, b, gpt.t, false, 0)
        .map_err(|e| anyhow::anyhow!("{}: {e}", data.display()))?;
    let n = batches.unwrap_or(loader.batches());
    let loss = wgtrain::train::evaluate(gpu, &gpt, &mut loader, n)?;
    println!(
        "loss {loss:.4} perplexity {:.3} ({} batches of {b} × {})",
        (loss as f64).exp(),
        n.min(loader.batches()),
        gpt.t
    );
    Ok(())
}

pub fn sample(
    gpu: &Gpu,
    model: &std::path::Path,
    prompt: &str,
    n: usize,
    (temperature, top_k, seed): (f32, usize, u64),
    precision: wgtrain::model::Precision,
) -> anyhow::Result<()> {
    // The decoder keeps its own batch-1 activations; the model itself only hosts parameters.
    let gpt = load_model(gpu, model, (1, Some(1)), precision)?;
    let tok = wgtrain::data::tokenizer::Tokenizer::for_dir(model).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        gpt.config.vocab_size >= tok.vocab_size,
        "{}: the model's vocab_size {} is smaller than its tokenizer's {}{}",
        model.display(),
        gpt.config.vocab_size,
        tok.vocab_size,
        if model.join("tokenizer.json").is_file() { "" } else { " (bytes: no tokenizer.json in the directory)" }
    );
    let prompt = prompt.replace("\\n", "\n");
    let out = wgtrain::train::sample(gpu, &gpt, &tok, &prompt, n, temperature, top_k, seed)?;
    println!("{prompt}{out}");
    Ok(())
}
