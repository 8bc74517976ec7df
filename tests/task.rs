//! Task evaluation (`eval --task`) on a byte-level tiny GPT-2 of seeded weights: the greedy
//! answers through the KV cache are the full forward's argmax continuations, and choice
//! picks the option the full forward's log-softmax ranks first; the scores count the
//! records whose answers were set to match.

use wgtrain::data::tokenizer::Tokenizer;
use wgtrain::gpu::Recorder;
use wgtrain::model::{Gpt, GptConfig};
use wgtrain::train::task::{choice_task, generate_task, longest, read_task, Answer, Metric, TaskRecord};
use wgtrain::Gpu;

use crate::common::gpu;

fn model(gpu: &Gpu, b: usize, t: usize) -> Gpt {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2_tiny");
    let mut config = GptConfig::load(&dir.join("config.json")).unwrap();
    config.vocab_size = 256;
    let gpt = Gpt::new(gpu, config, b, t, 1).unwrap();
    gpt.init(gpu, 7);
    gpt
}

/// The full forward's logits (V) after `ids`, from a model of T ≥ len sharing `gpt`'s weights.
fn logits_after(gpu: &Gpu, gpt: &Gpt, ids: &[u32]) -> Vec<Vec<f32>> {
    let full = gpt.sharing(gpu, 1, gpt.config.n_positions).unwrap();
    let mut x = ids.to_vec();
    x.resize(full.t, 0);
    full.upload_batch(gpu, 0, &x, &vec![0; full.t]);
    let mut rec = Recorder::new(gpu);
    full.record_eval(&mut rec);
    rec.submit().unwrap();
    let v = gpt.config.vocab_size;
    full.read_logits(gpu).unwrap().chunks(v).take(ids.len()).map(<[f32]>::to_vec).collect()
}

fn argmax(x: &[f32]) -> u32 {
    (0..x.len()).max_by(|&i, &j| x[i].total_cmp(&x[j])).unwrap() as u32
}

/// Greedy decoding by the full forward: stops at the end-of-text, a newline or `n` tokens.
fn greedy(gpu: &Gpu, gpt: &Gpt, tok: &Tokenizer, prompt: &str, n: usize) -> String {
    let mut ids = tok.encode(prompt).unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let next = argmax(logits_after(gpu, gpt, &ids).last().unwrap());
        if next == tok.eot {
            break;
        }
        out.push(next);
        ids.push(next);
        if tok.decode(&out).contains('\n') {
            break;
        }
    }
    tok.decode(&out).split('\n').next().unwrap().trim().to_string()
}

fn text(prompt: &str, answer: &str) -> TaskRecord {
    TaskRecord { prompt: prompt.into(), answer: Answer::Text(answer.into()) }
}

#[test]
fn greedy_answers_match_the_full_forward_and_score() {
    let Some(gpu) = gpu() else { return };
    let tok = Tokenizer::byte();
    // Three waves of 4 rows, the last one short.
    let prompts = ["ab", "The cat", "x", "zq!", "hello", "a b c", "Q", "xyzzy", "12", "The dog", "!"];
    let recs: Vec<TaskRecord> = prompts.iter().map(|p| text(p, "")).collect();
    let t = longest(&tok, &recs).unwrap();
    let gpt = model(gpu, 4, t);
    let n = 6;
    let want: Vec<String> = prompts.iter().map(|p| greedy(gpu, &gpt, &tok, p, n)).collect();
    assert!(want.iter().filter(|w| w.chars().count() > 1).count() >= 2, "answers worth comparing: {want:?}");
    // Records 0 and 2 get their greedy answer (with spaces around it), 1 a wrong one, 3 a
    // part of it for contains.
    // The others get an answer no output has.
    let mut answers =
        vec![format!(" {} ", want[0]), format!("{}~", want[1]), want[2].clone(), want[3].chars().take(1).collect()];
    answers.resize(prompts.len(), "~never~".into());
    let recs: Vec<TaskRecord> = prompts.iter().zip(&answers).map(|(p, a)| text(p, a)).collect();
    let s = generate_task(gpu, &gpt, &tok, &recs, (Metric::ExactMatch, n), None).unwrap();
    assert_eq!(s.outputs, want, "the cached greedy answers are the full forward's");
    let exact = 2 + (want[3].chars().count() <= 1) as usize;
    assert_eq!((s.correct, s.total), (exact, prompts.len()));
    let c = generate_task(gpu, &gpt, &tok, &recs, (Metric::Contains, n), None).unwrap();
    assert_eq!(c.correct, 3, "contains: all but the wrong answer");
}

#[test]
fn choice_picks_the_highest_mean_log_likelihood() {
    let Some(gpu) = gpu() else { return };
    let tok = Tokenizer::byte();
    let options = [vec!["cat", "dog", "a"], vec!["xy", "hello there", "q"]];
    let prompts = ["It was a ", "Say: "];
    let mean_ll = |gpt: &Gpt, p: &str, o: &str| -> f64 {
        let (pi, oi) = (tok.encode(p).unwrap(), tok.encode(o).unwrap());
        let all: Vec<u32> = pi.iter().chain(&oi).copied().collect();
        let rows = logits_after(gpu, gpt, &all[..all.len() - 1]);
        let ll: f64 = (0..oi.len())
            .map(|k| {
                let row = &rows[pi.len() - 1 + k];
                let m = row.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
                let lse = m + row.iter().map(|&z| (z as f64 - m).exp()).sum::<f64>().ln();
                row[oi[k] as usize] as f64 - lse
            })
            .sum();
        ll / oi.len() as f64
    };
    let recs0: Vec<TaskRecord> = prompts
        .iter()
        .zip(&options)
        .map(|(p, o)| TaskRecord {
            prompt: p.to_string(),
            answer: Answer::Choice { choices: o.iter().map(|s| s.to_string()).collect(), index: 0 },
        })
        .collect();
    let t = longest(&tok, &recs0).unwrap();
    // Batch 2: 6 rows in 3 forwards, the records' options split across them.
    let gpt = model(gpu, 2, t);
    let best: Vec<usize> = prompts
        .iter()
        .zip(&options)
        .map(|(p, o)| {
            let ll: Vec<f64> = o.iter().map(|c| mean_ll(&gpt, p, c)).collect();
            (0..ll.len()).max_by(|&i, &j| ll[i].total_cmp(&ll[j])).unwrap()
        })
        .collect();
    // Record 0's answer is its best option, record 1's another one.
    let mut recs = recs0;
    for (r, want) in recs.iter_mut().zip([best[0], (best[1] + 1) % 3]) {
        if let Answer::Choice { index, .. } = &mut r.answer {
            *index = want;
        }
    }
    let s = choice_task(gpu, &gpt, &tok, &recs).unwrap();
    assert_eq!(s.outputs, [best[0].to_string(), best[1].to_string()]);
    assert_eq!((s.correct, s.total), (1, 2));
}

#[test]
fn task_files_with_bad_records_are_refused_by_line() {
    let d = std::env::temp_dir().join(format!("wgtrain-task-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let f = d.join("t.jsonl");
    let cases = [
        ("{\"prompt\": \"a\", \"answer\": \"b\"}\nnot json\n", Metric::ExactMatch, ":2: not JSON"),
        ("{\"answer\": \"b\"}\n", Metric::Contains, "no string \"prompt\""),
        ("{\"prompt\": \"a\", \"choices\": [\"x\", \"y\"], \"answer\": 2}\n", Metric::Choice, "index of one of the 2"),
        ("{\"prompt\": \"a\", \"choices\": [\"x\"], \"answer\": 0}\n", Metric::Choice, "at least two"),
        ("\n\n", Metric::ExactMatch, "holds no record"),
    ];
    for (body, metric, want) in cases {
        std::fs::write(&f, body).unwrap();
        let e = read_task(&f, metric).unwrap_err();
        assert!(e.contains(want) && e.contains("t.jsonl"), "{e}");
    }
    std::fs::write(&f, "{\"prompt\": \"a\", \"choices\": [\"x\", \"y\"], \"answer\": 1}\n").unwrap();
    assert!(matches!(read_task(&f, Metric::Choice).unwrap()[0].answer, Answer::Choice { index: 1, .. }));
}
