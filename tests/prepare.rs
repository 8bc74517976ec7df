//! `wgtrain prepare`: cleaning, exact and near-duplicate removal, tokenizers, the split, and
//! the files it writes. No GPU needed.

use std::path::{Path, PathBuf};

use wgtrain::data::dedup::{jaccard_estimate, signature, Dedup, Fingerprint, Verdict};
use wgtrain::data::prepare::{normalize, prepare, PrepareArgs, Stats, TokenizerChoice};
use wgtrain::data::tokenizer::{Kind, Tokenizer};
use wgtrain::data::{read_tokens, tokenizer};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgtrain-prep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn args(inputs: Vec<PathBuf>, out: &Path) -> PrepareArgs {
    PrepareArgs {
        inputs,
        out: out.into(),
        tokenizer: TokenizerChoice::Byte,
        vocab_size: 400,
        field: "text".into(),
        min_chars: 0,
        near_dup_threshold: Some(0.8),
        val_fraction: 0.0,
        seed: 1,
        eot: None,
        force: false,
        progress: false,
    }
}

/// Documents of a token stream: the runs after each end-of-text token.
fn documents(tokens: &[u32], eot: u32) -> Vec<Vec<u32>> {
    assert_eq!(tokens.first(), Some(&eot), "the stream starts with the end-of-text token");
    tokens.split(|&t| t == eot).skip(1).map(<[u32]>::to_vec).collect()
}

fn play(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare").join(name)).unwrap()
}

fn plays() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("_gut.txt"))
        .collect();
    v.sort();
    v
}

fn jsonl(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn rec(text: &str) -> String {
    serde_json::json!({ "text": text }).to_string()
}

#[test]
fn planted_duplicates_and_bad_records_are_counted_and_dropped() {
    let dir = temp("planted");
    let hamlet = play("hamlet_gut.txt");
    let a = hamlet[30000..34000].to_string();
    let b = hamlet[60000..63000].to_string();
    // One word changed in ~700: Jaccard over 5-word shingles ≈ 0.99.
    let a_near = a.replacen("the", "thy", 1);
    assert_ne!(a_near, a);
    // Same first half, new second half: Jaccard ≈ 1/3, kept.
    let a_half = format!("{}{}", &a[..2000], &hamlet[90000..92000]);
    let nfc = "Café résumé naïve — déjà vu, encore une fois. ".repeat(5);
    let nfd: String = unicode_normalization::UnicodeNormalization::nfd(nfc.as_str()).collect();
    assert_ne!(nfd, nfc);
    let lines = vec![
        rec(&a),
        rec(&b),
        rec(&a),                       // exact
        rec(&a.replace('\n', "\r\n")), // exact once line endings are normalized
        rec(&a_near),                  // near
        rec(&nfc),
        rec(&nfd),                              // exact once NFC-normalized
        rec(&a_half),                           // kept
        rec(""),                                // empty
        rec(" \n\t  "),                         // empty
        rec("short"),                           // too short (--min-chars 10)
        "{\"text\": \"unterminated".into(),     // malformed, line 12
        String::new(),                          // blank line: skipped, not counted
        "{\"body\": \"no text field\"}".into(), // missing field, line 14
        "{\"text\": 5}".into(),                 // not a string: missing field, line 15
        "[1, 2, 3]".into(),                     // not an object: missing field, line 16
    ];
    let input = dir.join("docs.jsonl");
    jsonl(&input, &lines);
    // A text file that repeats a JSONL document, and one that is not UTF-8.
    std::fs::create_dir_all(dir.join("more")).unwrap();
    std::fs::write(dir.join("more/b_copy.txt"), &b).unwrap();
    std::fs::write(dir.join("more/latin1.txt"), b"caf\xe9 cr\xe8me").unwrap();
    std::fs::write(dir.join("more/.hidden.txt"), "ignored").unwrap();
    // In a directory only text and JSONL files are input: not notes, archives or outputs.
    std::fs::write(dir.join("more/notes.md"), "ignored").unwrap();
    std::fs::write(dir.join("more/old.jsonl.gz"), b"\x1f\x8b ignored").unwrap();
    let out = dir.join("out");
    let mut a_args = args(vec![input.clone(), dir.join("more")], &out);
    a_args.min_chars = 10;
    let s = prepare(&a_args).unwrap();

    assert_eq!(s.documents_in, 17, "15 JSONL records + 2 text files");
    assert_eq!((s.malformed, s.missing_field, s.empty, s.too_short), (2, 3, 2, 1));
    assert_eq!((s.exact_duplicates, s.near_duplicates), (4, 1));
    assert_eq!(s.documents_out, 4);
    let p = input.display();
    assert_eq!(s.malformed_examples, vec![format!("{p}:12"), dir.join("more/latin1.txt").display().to_string()]);
    assert_eq!(s.missing_field_examples, vec![format!("{p}:14"), format!("{p}:15"), format!("{p}:16")]);

    // The kept documents, in input order, each after byte 0.
    let train = read_tokens(&out.join("train.bin")).unwrap();
    let docs: Vec<String> =
        documents(&train, 0).iter().map(|d| String::from_utf8(d.iter().map(|&t| t as u8).collect()).unwrap()).collect();
    assert_eq!(docs, vec![a.clone(), b.clone(), nfc.clone(), a_half.clone()]);
    assert_eq!(s.train_tokens as usize, train.len());
    assert_eq!(read_tokens(&out.join("val.bin")).unwrap(), Vec::<u32>::new());

    // stats.json holds every key the contract names.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("stats.json")).unwrap()).unwrap();
    for key in [
        "documents_in",
        "malformed",
        "missing_field",
        "too_short",
        "exact_duplicates",
        "near_duplicates",
        "documents_out",
        "train_tokens",
        "val_tokens",
        "bytes_in",
        "seconds",
    ] {
        assert!(json.get(key).is_some_and(|v| v.is_number()), "stats.json lacks {key}");
    }
    assert_eq!(json["near_duplicates"], 1);

    // Near-dup detection off: the edited copy stays.
    let mut off = args(vec![input], &dir.join("off"));
    off.near_dup_threshold = None;
    off.min_chars = 10;
    let s = prepare(&off).unwrap();
    assert_eq!((s.near_duplicates, s.exact_duplicates, s.documents_out), (0, 3, 5));
}

#[test]
fn minhash_estimates_jaccard_and_lsh_finds_pairs_above_the_threshold() {
    // Word sets with a known shingle overlap: n shared shingles of m in each.
    let words: Vec<String> = (0..2000).map(|i| format!("w{i}")).collect();
    let doc = |from: usize, to: usize| words[from..to].join(" ");
    let x = doc(0, 1000);
    for (shift, want) in [(0usize, 1.0f64), (100, 896.0 / 1104.0), (300, 696.0 / 1304.0), (900, 96.0 / 1904.0)] {
        let y = doc(shift, 1000 + shift);
        let est = jaccard_estimate(&signature(&x).unwrap()[..], &signature(&y).unwrap()[..]);
        // 128 slots: standard error sqrt(J(1-J)/128) <= 0.045.
        assert!((est - want).abs() < 0.15, "shift {shift}: estimate {est:.3}, exact {want:.3}");
    }
    // Case and punctuation do not change the shingles.
    let est =
        jaccard_estimate(&signature(&x).unwrap()[..], &signature(&x.to_uppercase().replace(' ', ", ")).unwrap()[..]);
    assert_eq!(est, 1.0);
    assert!(signature(" ,.;- ").is_none());

    // Ordered judgement: the first of a group stays, later near copies go.
    let mut d = Dedup::new(0.8);
    let check = |d: &mut Dedup, t: &str| d.check(&Fingerprint::new(t, true));
    assert_eq!(check(&mut d, &x), Verdict::Unique);
    assert_eq!(check(&mut d, &x), Verdict::Exact);
    assert_eq!(check(&mut d, &doc(20, 1020)), Verdict::Near, "J ≈ 0.96");
    assert_eq!(check(&mut d, &doc(300, 1300)), Verdict::Unique, "J ≈ 0.53");
    assert_eq!(check(&mut d, &doc(1000, 2000)), Verdict::Unique, "disjoint");
}

#[test]
fn gpt2_bpe_ids_equal_openai_tiktoken() {
    let fixture: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2_bpe.json")).unwrap(),
    )
    .unwrap();
    let gpt2 = Tokenizer::gpt2();
    assert_eq!((gpt2.vocab_size, gpt2.eot), (50257, 50256));
    assert_eq!(fixture["eot"], 50256);
    // The tokenizer.json it writes, read back through the HF tokenizers crate.
    let dir = temp("gpt2");
    gpt2.save(&dir.join("tokenizer.json")).unwrap();
    let hf = Tokenizer::from_file(&dir.join("tokenizer.json"), None).unwrap();
    assert_eq!((hf.kind, hf.vocab_size, hf.eot), (Kind::File, 50257, 50256));
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 19);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(gpt2.encode(text).unwrap(), want, "tiktoken-rs on {text:?}");
        assert_eq!(hf.encode(text).unwrap(), want, "exported tokenizer.json on {text:?}");
        assert_eq!(gpt2.decode(&want), text);
        assert_eq!(hf.decode(&want), text);
    }
}

#[test]
fn decode_inverts_encode_on_the_bundled_corpus() {
    let byte = Tokenizer::byte();
    let gpt2 = Tokenizer::gpt2();
    let texts: Vec<String> = plays().iter().map(|p| normalize(std::fs::read_to_string(p).unwrap())).collect();
    assert_eq!(texts.len(), 42);
    for t in &texts {
        assert_eq!(byte.decode(&byte.encode(t).unwrap()), *t);
        assert_eq!(gpt2.decode(&gpt2.encode(t).unwrap()), *t);
    }
    // A BPE trained on three plays, on all of them (most words it never saw whole).
    let bpe = Tokenizer::train_bpe(600, texts[..3].iter().cloned()).unwrap();
    assert_eq!((bpe.kind, bpe.vocab_size), (Kind::Bpe, 600));
    for t in &texts {
        let ids = bpe.encode(t).unwrap();
        assert!(ids.iter().all(|&i| i < 600 && i != bpe.eot));
        assert_eq!(bpe.decode(&ids), *t);
    }
    // A BPE's byte alphabet covers what training never saw; special-token names are text.
    let odd = "emoji 🚀, CJK 日本語, control \u{7}\u{1b}, NBSP\u{a0}, <|endoftext|>";
    for t in [&bpe, &gpt2] {
        let ids = t.encode(odd).unwrap();
        assert!(!ids.contains(&t.eot), "{:?}: <|endoftext|> in text became the token", t.kind);
        assert_eq!(t.decode(&ids), odd);
    }
    // Long whitespace runs (the GPT-2 pattern's backtracking trap) neither panic nor change ids.
    let spaces = format!("a{}b{}c", " ".repeat(300_000), "\n".repeat(300_000));
    let dir = temp("spaces");
    gpt2.save(&dir.join("tokenizer.json")).unwrap();
    let hf = Tokenizer::from_file(&dir.join("tokenizer.json"), None).unwrap();
    let ids = gpt2.encode(&spaces).unwrap();
    assert_eq!(ids, hf.encode(&spaces).unwrap());
    assert_eq!(gpt2.decode(&ids), spaces);
}

#[test]
fn gpt2_token_files_put_50256_before_each_document() {
    let dir = temp("gpt2-files");
    let docs = ["First document.\nWith two lines.", "Second one, ünïcode and 🚀.", "Third."];
    let lines: Vec<String> = docs.iter().map(|d| rec(d)).collect();
    jsonl(&dir.join("d.jsonl"), &lines);
    let mut a = args(vec![dir.join("d.jsonl")], &dir.join("out"));
    a.tokenizer = TokenizerChoice::Gpt2;
    let s = prepare(&a).unwrap();
    assert_eq!((s.tokenizer, s.vocab_size, s.eot, s.token_bytes), (Some(Kind::Gpt2), 50257, 50256, 2));
    let bytes = std::fs::read(dir.join("out/train.bin")).unwrap();
    assert_eq!(&bytes[..8], [20240520i32.to_le_bytes(), 1i32.to_le_bytes()].concat().as_slice());
    let gpt2 = Tokenizer::gpt2();
    let want: Vec<u32> = docs.iter().flat_map(|d| std::iter::once(50256).chain(gpt2.encode(d).unwrap())).collect();
    assert_eq!(read_tokens(&dir.join("out/train.bin")).unwrap(), want);
    // The tokenizer.json beside the data reads back as the same ids.
    assert!(Tokenizer::for_dir(&dir.join("out")).unwrap().same_ids(&gpt2));
    // A second run into an --out inside the input directory does not read its own outputs.
    std::fs::write(dir.join("out/stray.txt"), "").unwrap();
    let mut again = args(vec![dir.clone()], &dir.join("out"));
    again.force = true;
    let s = prepare(&again).unwrap();
    assert_eq!(s.documents_in, 3);
}

#[test]
fn trained_bpe_is_saved_beside_the_data_and_reproducible() {
    let dir = temp("bpe");
    let inputs: Vec<PathBuf> = plays()[..3].to_vec();
    let run = |out: &str| -> (Stats, Vec<u8>, Vec<u8>) {
        let mut a = args(inputs.clone(), &dir.join(out));
        a.tokenizer = TokenizerChoice::Bpe;
        a.vocab_size = 512;
        a.val_fraction = 0.34;
        let s = prepare(&a).unwrap();
        let tok = std::fs::read(dir.join(out).join("tokenizer.json")).unwrap();
        (s, tok, std::fs::read(dir.join(out).join("train.bin")).unwrap())
    };
    let (s, tok1, train1) = run("a");
    let (_, tok2, train2) = run("b");
    assert!(tok1 == tok2 && train1 == train2, "same input and seed, same tokenizer and tokens");
    assert!(!dir.join("a/.prepare-spool.tmp").exists(), "the spool is removed");
    assert_eq!((s.tokenizer, s.vocab_size, s.documents_out), (Some(Kind::Bpe), 512, 3));
    assert_eq!((s.train_documents, s.val_documents), (2, 1));

    let tok = Tokenizer::for_dir(&dir.join("a")).unwrap();
    assert_eq!((tok.vocab_size, tok.eot), (512, s.eot));
    let train = read_tokens(&dir.join("a/train.bin")).unwrap();
    let val = read_tokens(&dir.join("a/val.bin")).unwrap();
    assert_eq!(((train.len() + val.len()) as u64), s.train_tokens + s.val_tokens);
    // Every play comes back whole from one file or the other.
    let mut decoded: Vec<String> =
        documents(&train, s.eot).iter().chain(&documents(&val, s.eot)).map(|d| tok.decode(d)).collect();
    let mut want: Vec<String> = inputs.iter().map(|p| normalize(std::fs::read_to_string(p).unwrap())).collect();
    decoded.sort();
    want.sort();
    assert_eq!(decoded, want);
}

#[test]
fn split_is_seeded_and_keeps_the_val_share() {
    let dir = temp("split");
    let input = dir.join("many.jsonl");
    let lines: Vec<String> =
        (0..300).map(|i| rec(&format!("document number {i} is about topic {}", i * 7919 % 1000))).collect();
    jsonl(&input, &lines);
    let val_docs = |seed: u64, f: f64, out: &str| -> Vec<Vec<u32>> {
        let mut a = args(vec![input.clone()], &dir.join(out));
        a.seed = seed;
        a.val_fraction = f;
        a.near_dup_threshold = None;
        let s = prepare(&a).unwrap();
        let val = read_tokens(&dir.join(out).join("val.bin")).unwrap();
        let docs = if val.is_empty() { vec![] } else { documents(&val, 0) };
        assert_eq!(docs.len() as u64, s.val_documents);
        assert_eq!(s.train_documents + s.val_documents, 300);
        docs
    };
    let a = val_docs(1, 0.1, "a");
    assert!((29..=31).contains(&a.len()), "{} val documents of 300 at 0.1", a.len());
    assert_eq!(val_docs(1, 0.1, "b"), a, "same seed, same split");
    assert_ne!(val_docs(2, 0.1, "c"), a, "another seed, another split");
    let big = val_docs(3, 0.7, "d");
    assert!((209..=211).contains(&big.len()), "{} val documents of 300 at 0.7", big.len());
    // The bundled corpus's 42 plays at 0.05 still get val documents.
    let mut b = args(plays(), &dir.join("plays"));
    b.val_fraction = 0.05;
    b.near_dup_threshold = None;
    let s = prepare(&b).unwrap();
    assert!((2..=3).contains(&s.val_documents), "{} val plays", s.val_documents);
}

#[test]
fn vocabularies_past_65535_write_uint32_token_files() {
    let dir = temp("wide");
    // A word-level tokenizer.json with 70000 words plus <|endoftext|>.
    let vocab: serde_json::Map<String, serde_json::Value> = (0..70000u32)
        .map(|i| (format!("w{i}"), i.into()))
        .chain([("<|endoftext|>".to_string(), 70000u32.into()), ("[UNK]".to_string(), 70001u32.into())])
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    let tok_path = dir.join("words.json");
    std::fs::write(&tok_path, json.to_string()).unwrap();
    let input = dir.join("d.jsonl");
    jsonl(&input, &[rec("w0 w65535 w65536 w69999"), rec("w1 w2")]);
    let mut a = args(vec![input], &dir.join("out"));
    a.tokenizer = TokenizerChoice::File(tok_path.clone());
    let s = prepare(&a).unwrap();
    assert_eq!((s.vocab_size, s.eot, s.token_bytes), (70002, 70000, 4));
    let bytes = std::fs::read(dir.join("out/train.bin")).unwrap();
    assert_eq!(&bytes[..8], [20240801i32.to_le_bytes(), 7i32.to_le_bytes()].concat().as_slice());
    assert_eq!(read_tokens(&dir.join("out/train.bin")).unwrap(), vec![70000, 0, 65535, 65536, 69999, 70000, 1, 2]);
    // A tokenizer without a known end-of-text needs --eot.
    let plain = json.to_string().replace("<|endoftext|>", "<sep>");
    std::fs::write(&tok_path, plain).unwrap();
    let err = Tokenizer::from_file(&tok_path, None).err().unwrap();
    assert!(err.contains("--eot"), "{err}");
    assert_eq!(Tokenizer::from_file(&tok_path, Some("<sep>")).unwrap().eot, 70000);
}

#[test]
fn bad_arguments_get_one_line_errors() {
    let dir = temp("bad");
    let missing = dir.join("nope.txt");
    let err = prepare(&args(vec![missing.clone()], &dir.join("o"))).unwrap_err();
    assert!(err.contains(&missing.display().to_string()), "{err}");
    std::fs::write(dir.join("a.txt"), "some text").unwrap();
    let ok = args(vec![dir.join("a.txt")], &dir.join("o"));
    prepare(&ok).unwrap();
    let err = prepare(&ok).unwrap_err();
    assert!(err.contains("--force"), "{err}");
    prepare(&PrepareArgs { force: true, ..ok.clone() }).unwrap();
    let err = prepare(&PrepareArgs { val_fraction: 1.0, force: true, ..ok.clone() }).unwrap_err();
    assert!(err.contains("--val-fraction"), "{err}");
    let err = prepare(&PrepareArgs { near_dup_threshold: Some(1.5), force: true, ..ok.clone() }).unwrap_err();
    assert!(err.contains("--near-dup-threshold"), "{err}");
    let err = "sentencepiece".parse::<TokenizerChoice>().unwrap_err();
    assert!(err.contains("gpt2"), "{err}");
    std::fs::write(dir.join("broken.json"), "{ not a tokenizer").unwrap();
    let err = Tokenizer::from_file(&dir.join("broken.json"), None).err().unwrap();
    assert!(err.contains("broken.json"), "{err}");
    let err = Tokenizer::train_bpe(100, std::iter::empty()).err().unwrap();
    assert!(err.contains("--vocab-size"), "{err}");
    // Checked before any reading: a size the trainer would try to allocate is refused.
    for n in [256, 10_000_000_000] {
        let mut bpe = PrepareArgs { tokenizer: TokenizerChoice::Bpe, vocab_size: n, force: true, ..ok.clone() };
        bpe.inputs = vec![missing.clone()];
        let err = prepare(&bpe).unwrap_err();
        assert!(err.contains("--vocab-size"), "{err}");
    }
    std::fs::write(dir.join("a.txt.gz"), b"\x1f\x8b").unwrap();
    let err = prepare(&args(vec![dir.join("a.txt.gz")], &dir.join("o2"))).unwrap_err();
    assert!(err.contains("a.txt.gz") && err.contains("decompress"), "{err}");
    assert_eq!(tokenizer::byte_char(b'A'), 'A');
    assert_eq!(tokenizer::byte_char(b' '), 'Ġ');
    assert_eq!(tokenizer::byte_char(b'\n'), 'Ċ');
}
