//! The finish phase: the final checkpoint, the model and optimizer state in --out, the
//! memory and speed report, and a sample.

use std::time::Instant;

use anyhow::Context;

use super::log::Log;
use super::setup::Session;
use super::{sample, state};
use crate::optim::OptimizerKind;

pub(super) fn finish(s: &mut Session, log: &mut Log, last: u64, early: bool, started: Instant) -> anyhow::Result<()> {
    log.flush(s.gpu, &mut s.opt)?;
    s.progress.early_stopped = early;
    let progress = state::Progress { skips: log.skips, ..s.progress };
    let (gpu, a, dist) = (s.gpu, &s.a, s.dist);
    let final_ckpt = state::save_checkpoint(s, last, progress)?;
    log.bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    log.plot()?;
    memory_per_rank(s);
    if !dist.is_root() {
        return Ok(());
    }
    state::save_model(s, &a.out)?;
    if let Some(q) = a.qat {
        let (planned, data) = s.gpt.qat_export(gpu)?;
        let path = a.out.join("model.gguf");
        let header =
            crate::model::export::Header { config: &s.config, tok: &s.tok, chat_template: None, eos: None, qtype: q };
        let bytes = crate::model::export::write_model(&path, &header, &planned, &data).map_err(anyhow::Error::msg)?;
        println!("quantized model ({} as trained): {} ({:.2} MB)", q.name(), path.display(), bytes as f64 / 1e6);
    }
    let opt_path = a.out.join("optimizer.safetensors");
    if a.zero == 1 && dist.size > 1 {
        // The shards were gathered into the final checkpoint already.
        let from = final_ckpt.join("optimizer.safetensors");
        std::fs::copy(&from, &opt_path).with_context(|| from.display().to_string())?;
    } else {
        s.opt.save(gpu, &opt_path)?;
    }
    let (steps, tokens) = (last - s.first, s.tokens_per_step());
    let best = s.progress.best_val;
    println!(
        "done: {steps} steps, last loss {:.4}, best val loss {}, {} tokens in {wall:.1} s ({:.0} tokens/s), adapter {}",
        log.last_loss,
        if best.is_finite() { format!("{best:.4}") } else { "n/a (no validation data)".into() },
        tokens * steps,
        (tokens * steps) as f64 / wall,
        gpu.name()
    );
    let stats = gpu.pool.stats();
    let state = if a.optimizer == OptimizerKind::Sgd { 1 } else { 2 };
    // This rank's optimizer tensors: all of them, or its ZeRO-1 shard.
    // A teacher (distillation) adds its parameters and activations.
    let teacher = s.gpt.distill.as_ref().map(|d| 4 * d.teacher.arena.table.numel() + d.teacher.activation_bytes());
    // A LoRA run's frozen base: parameters only.
    let base =
        s.gpt.lora.as_ref().map_or(0, |l| 4 * l.base.table.numel() + l.base.half.as_ref().map_or(0, |h| h.size()));
    let analytic = base
        + 4 * s.gpt.arena.table.numel() * 2
        + 4 * s.opt.table.numel() * state
        + s.gpt.activation_bytes()
        + teacher.unwrap_or(0)
        + s.gpt.prune.as_ref().map_or(0, |p| p.bytes());
    println!(
        "GPU memory: peak {:.1} MB allocated; params + grads + optimizer state + activations{} = {:.1} MB ({:.2}×)",
        stats.peak as f64 / 1e6,
        if teacher.is_some() { " + the teacher's params and activations" } else { "" },
        analytic as f64 / 1e6,
        stats.peak as f64 / analytic as f64
    );
    if a.sample_tokens > 0 && s.config.vocab_size >= s.tok.vocab_size {
        let text = sample(gpu, &s.gpt, &s.tok, "", a.sample_tokens, 0.8, 40, a.seed)?;
        println!("sample:\n{}", super::printable(&text));
    }
    println!("checkpoint: {}", a.out.display());
    Ok(())
}

/// With several ranks: each rank's memory, gathered and printed on rank 0.
fn memory_per_rank(s: &Session) {
    let Some(p) = &s.par else { return };
    let (dist, stats) = (s.dist, s.gpu.pool.stats());
    let live = |c| stats.live.iter().filter(|(k, _)| *k == c).map(|(_, b)| *b).sum::<u64>() as f64 / 1e6;
    let shard = if p.zero {
        let (lo, hi) = p.shards[dist.rank];
        format!("shard: elements {lo}..{hi} of {}", s.gpt.arena.table.len)
    } else {
        "replicated".into()
    };
    let line = format!(
        "rank {}: params {:.1} MB, grads {:.1} MB, optimizer state {:.1} MB ({shard}), activations {:.1} MB, peak {:.1} MB; \
         host-mappable staging {:.1} MB",
        dist.rank,
        live(crate::gpu::Category::Parameters),
        live(crate::gpu::Category::Gradients),
        s.opt.state_bytes() as f64 / 1e6,
        live(crate::gpu::Category::Activations),
        stats.peak as f64 / 1e6,
        p.staging_bytes() as f64 / 1e6
    );
    for l in dist.gather_bytes(line.into_bytes()) {
        if dist.is_root() {
            println!("{}", String::from_utf8_lossy(&l));
        }
    }
}
