//! Sampling text from a model: temperature and top-k over the logits, one token at a time
//! through a KV cache (`Decoder`), for `wgtrain sample`, the end of a run and the page.

use anyhow::bail;
use web_time::Instant;

use super::{Decoder, Gpt};
use crate::data::tokenizer::Tokenizer;
use crate::gpu::Gpu;
use crate::rng::Rng;

/// Generates `n` tokens after `prompt` with temperature and top-k sampling, decoding one token
/// at a time with a KV cache, and returns their text. An empty prompt starts from the
/// end-of-text token (a newline for bytes). When the cache is full it starts again from the
/// last half of the text. Native only (it blocks); the browser awaits `sample_async`.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::too_many_arguments)]
pub fn sample(
    gpu: &Gpu,
    gpt: &Gpt,
    tok: &Tokenizer,
    prompt: &str,
    n: usize,
    temperature: f32,
    top_k: usize,
    seed: u64,
) -> anyhow::Result<String> {
    Ok(sample_until(gpu, gpt, tok, prompt, n, (temperature, top_k, seed), None)?.text)
}

/// What `sample_until` made, and how long its two phases took: the prompt, fed through the
/// cache without the LM head (but for its last token), and the decoding of the new tokens.
pub struct Sampled {
    pub text: String,
    /// The new tokens (`text` is their lossy decoding).
    pub ids: Vec<u32>,
    pub prompt_tokens: usize,
    pub prompt_s: f64,
    pub new_tokens: usize,
    pub decode_s: f64,
}

/// Prompt tokens `prefill` runs through one batched forward.
const PREFILL: usize = 512;

/// Feeds `tokens` (at least one, at most the cache's capacity) into an empty `dec` and
/// returns the logits after the last: the first PREFILL but the last through a batch-1
/// forward of their length over `gpt`'s weights (one at a time where that model can't be
/// made), the rest through the decoder.
async fn prefill(gpu: &Gpu, gpt: &Gpt, dec: &mut Decoder, tokens: &[u32]) -> anyhow::Result<Vec<f32>> {
    let (last, rest) = tokens.split_last().expect("a prompt has a token");
    // At most PREFILL tokens at once (the second model holds their activations); where no
    // second model can be made (memory; a LoRA model, whose adapter scratch is its own batch's:
    // `Gpt::sharing` refuses it), one at a time.
    let n = rest.len().min(PREFILL);
    let batched = n > 1 && gpt.sharing(gpu, 1, n).and_then(|p| p.prefill(gpu, dec, &rest[..n])).is_ok();
    let fed = if batched { n } else { 0 };
    rest[fed..].iter().try_for_each(|&t| dec.feed(gpu, t))?;
    Ok(dec.next_async(gpu, *last).await?)
}

/// `sample` that also stops after `stop` (a chat's end-of-turn), which it leaves out. Native
/// only, as `sample`.
#[cfg(not(target_arch = "wasm32"))]
pub fn sample_until(
    gpu: &Gpu,
    gpt: &Gpt,
    tok: &Tokenizer,
    prompt: &str,
    n: usize,
    sampling: (f32, usize, u64),
    stop: Option<u32>,
) -> anyhow::Result<Sampled> {
    pollster::block_on(sample_async(gpu, gpt, tok, prompt, n, sampling, stop))
}

/// `sample_until` without blocking the thread: each token's logits are awaited (the browser's
/// way; natively the same reads wait for the GPU).
pub async fn sample_async(
    gpu: &Gpu,
    gpt: &Gpt,
    tok: &Tokenizer,
    prompt: &str,
    n: usize,
    (temperature, top_k, seed): (f32, usize, u64),
    stop: Option<u32>,
) -> anyhow::Result<Sampled> {
    let v = gpt.config.vocab_size.min(tok.vocab_size);
    let mut rng = Rng::new(seed);
    let mut ctx: Vec<u32> = match (prompt.is_empty(), tok.kind) {
        (true, crate::data::tokenizer::Kind::Byte) => vec![b'\n' as u32],
        (true, _) => vec![tok.eot],
        (false, _) => tok.encode(prompt).map_err(anyhow::Error::msg)?,
    };
    if let Some(&bad) = ctx.iter().find(|&&i| i as usize >= gpt.config.vocab_size) {
        bail!("the prompt encodes to token {bad}, past the model's vocab_size {}", gpt.config.vocab_size);
    }
    let started = Instant::now();
    let mut dec = gpt.decoder(gpu)?;
    let cap = dec.capacity();
    let window = &ctx[ctx.len().saturating_sub(cap)..];
    let prompt_tokens = window.len();
    let mut logits = prefill(gpu, gpt, &mut dec, window).await?;
    let prompt_s = started.elapsed().as_secs_f64();
    let mut out = Vec::new();
    for _ in 0..n {
        // Only ids the tokenizer knows: the model's vocab may be padded past it.
        let next = pick(&logits[..v], temperature, top_k, &mut rng);
        if Some(next) == stop {
            break;
        }
        ctx.push(next);
        out.push(next);
        if dec.pos(0) < cap {
            logits = dec.next_async(gpu, next).await?;
        } else {
            dec = gpt.decoder(gpu)?;
            logits = prefill(gpu, gpt, &mut dec, &ctx[ctx.len() - (cap / 2).max(1)..]).await?;
        }
    }
    let decode_s = started.elapsed().as_secs_f64() - prompt_s;
    Ok(Sampled { text: tok.decode(&out), prompt_tokens, prompt_s, new_tokens: out.len(), decode_s, ids: out })
}

/// The first index of the largest logit (the one a stable descending sort puts first).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in logits.iter().enumerate() {
        if x.total_cmp(&logits[best]).is_gt() {
            best = i;
        }
    }
    best as u32
}

/// Samples from softmax(logits / temperature) over the top k; greedy when k is 1 or the
/// temperature 0.
pub fn pick(logits: &[f32], temperature: f32, top_k: usize, rng: &mut Rng) -> u32 {
    if top_k == 1 || temperature <= 0.0 {
        return argmax(logits);
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.truncate(top_k.max(1));
    let m = logits[idx[0]];
    let w: Vec<f64> = idx.iter().map(|&i| (((logits[i] - m) / temperature) as f64).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut r = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
    for (k, &wk) in w.iter().enumerate() {
        r -= wk;
        if r <= 0.0 {
            return idx[k] as u32;
        }
    }
    idx[idx.len() - 1] as u32
}

/// `text` safe for a terminal: control characters but newline and tab (ESC, BEL, NUL, CR,
/// DEL, C1) shown as escapes (`\x1b`, `\u{85}`), so that a sample cannot drive the terminal.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}
