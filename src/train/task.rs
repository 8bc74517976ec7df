//! Task evaluation (`wgtrain eval --task FILE.jsonl`): greedy answers scored by exact match or
//! containment, or multiple choice by the mean log-likelihood of each option.
//!
//! Generation goes in waves of B records: their prompts through one batched forward
//! (`Gpt::prefill_rows`) into the rows of the KV cache, then greedy decoding of every row at
//! once, each at its own position, until the end-of-text (or the chat's end of turn), a
//! newline, or the token limit. Choice scores every (record, option) pair as a row of the forward: the
//! targets are the option's tokens, every other position IGNORE, so the classifier's losses
//! are the option's negative log-likelihoods (llm.c's HellaSwag acc_norm, per token).

use std::path::Path;

use crate::data::tokenizer::Tokenizer;
use crate::data::IGNORE;
use crate::gpu::{Gpu, Recorder};
use crate::model::Gpt;

/// How a task's answers are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// The stripped answer equals the stripped reference.
    ExactMatch,
    /// The answer contains the stripped reference.
    Contains,
    /// The option of highest mean per-token log-likelihood is the reference's index.
    Choice,
}

/// One record of a task file.
#[derive(Clone, Debug)]
pub struct TaskRecord {
    pub prompt: String,
    pub answer: Answer,
}

#[derive(Clone, Debug)]
pub enum Answer {
    Text(String),
    Choice { choices: Vec<String>, index: usize },
}

/// A task's score, with each record's output (the answer, or the chosen option's index).
#[derive(Clone, Debug, serde::Serialize)]
pub struct TaskScore {
    pub metric: Metric,
    pub correct: usize,
    pub total: usize,
    pub score: f64,
    pub new_tokens: usize,
    pub seconds: f64,
    #[serde(skip)]
    pub outputs: Vec<String>,
}

/// The records of a JSONL task file: {"prompt", "answer"} (a string), or for choice
/// {"prompt", "choices", "answer"} (an index into choices).
pub fn read_task(path: &Path, metric: Metric) -> Result<Vec<TaskRecord>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--task {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = || format!("--task {}:{}", path.display(), i + 1);
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{}: not JSON: {e}", at()))?;
        let prompt =
            v.get("prompt").and_then(|p| p.as_str()).ok_or_else(|| format!("{}: no string \"prompt\"", at()))?;
        let answer = match metric {
            Metric::Choice => {
                let choices: Vec<String> = v
                    .get("choices")
                    .and_then(|c| serde_json::from_value(c.clone()).ok())
                    .filter(|c: &Vec<String>| c.len() >= 2 && c.iter().all(|s| !s.is_empty()))
                    .ok_or_else(|| format!("{}: \"choices\" must list at least two non-empty strings", at()))?;
                let index = v.get("answer").and_then(|a| a.as_u64()).map(|a| a as usize);
                let index = index.filter(|&a| a < choices.len()).ok_or_else(|| {
                    format!("{}: \"answer\" must be the index of one of the {} choices", at(), choices.len())
                })?;
                Answer::Choice { choices, index }
            }
            _ => Answer::Text(
                v.get("answer")
                    .and_then(|a| a.as_str())
                    .ok_or_else(|| format!("{}: no string \"answer\" (for --metric choice, give \"choices\")", at()))?
                    .into(),
            ),
        };
        out.push(TaskRecord { prompt: prompt.into(), answer });
    }
    if out.is_empty() {
        return Err(format!("--task {}: holds no record", path.display()));
    }
    Ok(out)
}

/// Whether `output` scores against `reference` under `metric` (both stripped).
pub fn scores(metric: Metric, output: &str, reference: &str) -> bool {
    let (o, r) = (output.trim(), reference.trim());
    match metric {
        Metric::ExactMatch => o == r,
        Metric::Contains => o.contains(r),
        Metric::Choice => unreachable!("choice compares indices"),
    }
}

/// The tokens the longest row of `records` needs: a prompt (generation), or a prompt and its
/// longest option (choice).
pub fn longest(tok: &Tokenizer, records: &[TaskRecord]) -> Result<usize, String> {
    let mut n = 1;
    for r in records {
        let p = tok.encode(&r.prompt)?.len().max(1);
        let extra = match &r.answer {
            Answer::Choice { choices, .. } => {
                choices.iter().map(|c| tok.encode(c).map(|t| t.len())).collect::<Result<Vec<_>, _>>()?.into_iter().max()
            }
            Answer::Text(_) => None,
        };
        n = n.max(p + extra.unwrap_or(0));
    }
    Ok(n)
}

/// Greedy answers to every record's prompt, scored by `metric` (exact-match or contains).
/// `gpt`'s T is at least the longest prompt; `stop` is the chat's end of turn. The records go
/// in waves of `gpt`'s B: their prompts prefilled together (one forward of B rows), then
/// decoded together, each row at its own position, until every answer of the wave has ended.
pub fn generate_task(
    gpu: &Gpu,
    gpt: &Gpt,
    tok: &Tokenizer,
    records: &[TaskRecord],
    (metric, max_new): (Metric, usize),
    stop: Option<u32>,
) -> anyhow::Result<TaskScore> {
    let started = std::time::Instant::now();
    let mut prompts = Vec::new();
    for r in records {
        let Answer::Text(_) = &r.answer else { anyhow::bail!("--metric {metric:?} needs text answers") };
        let mut ids = tok.encode(&r.prompt).map_err(anyhow::Error::msg)?;
        if ids.is_empty() {
            ids.push(tok.eot);
        }
        check_ids(&ids, gpt)?;
        prompts.push(ids);
    }
    let mut dec = gpt.decoder_rows(gpu, gpt.b.min(records.len()).max(1))?;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    anyhow::ensure!(
        longest + max_new <= dec.capacity(),
        "a prompt of {longest} tokens leaves no room for --max-new-tokens {max_new} in the KV cache of {}",
        dec.capacity()
    );
    let v = gpt.config.vocab_size.min(tok.vocab_size);
    let (mut correct, mut new_tokens, mut outputs) = (0, 0, Vec::new());
    for (wave, recs) in prompts.chunks(dec.rows()).zip(records.chunks(dec.rows())) {
        for (out, r) in decode_wave(gpu, gpt, &mut dec, wave, (tok, v, stop, max_new))?.into_iter().zip(recs) {
            let Answer::Text(reference) = &r.answer else { unreachable!("checked above") };
            let answer = tok.decode(&out).split('\n').next().unwrap_or("").trim().to_string();
            correct += scores(metric, &answer, reference) as usize;
            new_tokens += out.len();
            outputs.push(answer);
        }
    }
    Ok(finish(metric, correct, outputs, new_tokens, started))
}

/// Greedy tokens after each prompt of `wave` (at most the decoder's rows), each ending before
/// the end-of-text or `stop`, at a newline or after `max_new` tokens.
fn decode_wave(
    gpu: &Gpu,
    gpt: &Gpt,
    dec: &mut crate::model::Decoder,
    wave: &[Vec<u32>],
    (tok, v, stop, max_new): (&Tokenizer, usize, Option<u32>, usize),
) -> anyhow::Result<Vec<Vec<u32>>> {
    (0..dec.rows()).for_each(|b| dec.reset(b));
    let rests: Vec<&[u32]> = wave.iter().map(|ids| &ids[..ids.len() - 1]).collect();
    gpt.prefill_rows(gpu, dec, &rests)?;
    // Each row feeds its prompt's last token first; rows past the wave feed 0, read by nothing.
    let mut feed: Vec<u32> = wave.iter().map(|ids| ids[ids.len() - 1]).collect();
    feed.resize(dec.rows(), 0);
    let mut outs = vec![Vec::new(); wave.len()];
    let mut open = vec![true; wave.len()];
    while open.iter().any(|&o| o) {
        let logits = dec.next_rows(gpu, &feed)?;
        for (j, out) in outs.iter_mut().enumerate() {
            if !open[j] {
                continue;
            }
            let next = super::argmax(&logits[j * gpt.config.vocab_size..][..v]);
            if next == tok.eot || Some(next) == stop {
                open[j] = false;
                continue;
            }
            out.push(next);
            feed[j] = next;
            open[j] = !(tok.decode(out).contains('\n') || out.len() >= max_new);
        }
    }
    Ok(outs)
}

fn check_ids(ids: &[u32], gpt: &Gpt) -> anyhow::Result<()> {
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= gpt.config.vocab_size) {
        anyhow::bail!("a prompt encodes to token {bad}, past the model's vocab_size {}", gpt.config.vocab_size);
    }
    Ok(())
}

fn finish(
    metric: Metric,
    correct: usize,
    outputs: Vec<String>,
    new_tokens: usize,
    started: std::time::Instant,
) -> TaskScore {
    let total = outputs.len();
    let score = correct as f64 / total.max(1) as f64;
    TaskScore { metric, correct, total, score, new_tokens, seconds: started.elapsed().as_secs_f64(), outputs }
}

/// One row of the choice forward: (record, option, inputs, targets).
type ChoiceRow = (usize, usize, Vec<u32>, Vec<u32>);

/// Multiple choice: each option's mean log-likelihood after its prompt, rows of `gpt`'s
/// batch at a time; the best option per record is compared with the answer.
pub fn choice_task(gpu: &Gpu, gpt: &Gpt, tok: &Tokenizer, records: &[TaskRecord]) -> anyhow::Result<TaskScore> {
    let started = std::time::Instant::now();
    let rows = choice_rows(tok, records, gpt.t)?;
    rows.iter().try_for_each(|r| check_ids(&r.2, gpt))?;
    let mut mean_ll: Vec<Vec<f64>> = records
        .iter()
        .map(|r| {
            vec![f64::NEG_INFINITY; if let Answer::Choice { choices, .. } = &r.answer { choices.len() } else { 0 }]
        })
        .collect();
    let (b, t) = (gpt.b, gpt.t);
    for chunk in rows.chunks(b) {
        let (mut x, mut y) = (Vec::with_capacity(b * t), Vec::with_capacity(b * t));
        for (_, _, xi, yi) in chunk {
            x.extend(xi);
            y.extend(yi);
        }
        // Rows past the last pair: padding that counts nothing.
        x.resize(b * t, 0);
        y.resize(b * t, IGNORE);
        gpt.upload_batch(gpu, 0, &x, &y);
        let mut rec = Recorder::new(gpu);
        gpt.record_eval(&mut rec);
        rec.submit()?;
        let losses = gpt.read_eval_losses(gpu)?;
        for (k, (rec_i, opt, _, yi)) in chunk.iter().enumerate() {
            let n = yi.iter().filter(|&&v| v != IGNORE).count();
            let nll: f64 = losses[k * t..(k + 1) * t].iter().map(|&l| l as f64).sum();
            mean_ll[*rec_i][*opt] = -nll / n.max(1) as f64;
        }
    }
    let mut correct = 0;
    let mut outputs = Vec::new();
    for (r, ll) in records.iter().zip(&mean_ll) {
        let Answer::Choice { index, .. } = r.answer else { unreachable!("choice records") };
        let best = (0..ll.len()).max_by(|&i, &j| ll[i].total_cmp(&ll[j])).unwrap_or(0);
        correct += (best == index) as usize;
        outputs.push(best.to_string());
    }
    Ok(finish(Metric::Choice, correct, outputs, 0, started))
}

/// Every (record, option) pair as a row of T: the prompt's tokens then the option's, the
/// targets IGNORE but for the option's tokens.
fn choice_rows(tok: &Tokenizer, records: &[TaskRecord], t: usize) -> anyhow::Result<Vec<ChoiceRow>> {
    let mut rows = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let Answer::Choice { choices, .. } = &r.answer else { anyhow::bail!("--metric choice needs \"choices\"") };
        let mut prompt = tok.encode(&r.prompt).map_err(anyhow::Error::msg)?;
        if prompt.is_empty() {
            prompt.push(tok.eot);
        }
        for (j, c) in choices.iter().enumerate() {
            let cont = tok.encode(c).map_err(anyhow::Error::msg)?;
            let all: Vec<u32> = prompt.iter().chain(&cont).copied().collect();
            anyhow::ensure!(all.len() <= t + 1, "record {}: {} tokens exceed the row of {t}", i + 1, all.len());
            let mut x: Vec<u32> = all[..all.len() - 1].to_vec();
            let mut y = vec![IGNORE; prompt.len() - 1];
            y.extend(&cont);
            x.resize(t, *all.last().expect("a token"));
            y.resize(t, IGNORE);
            rows.push((i, j, x, y));
        }
    }
    Ok(rows)
}
