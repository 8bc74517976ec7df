//! Property tests (proptest) that throw arbitrary and corrupted input at the loaders of token
//! files, configs and checkpoints: they must return an error, never panic. CPU only.
//! PROPTEST_CASES raises the case count (default here: 2000 per property).

use proptest::prelude::*;
use wgtrain::data;
use wgtrain::model::{checkpoint, GptConfig};

fn cases() -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    ProptestConfig { cases: n, ..ProptestConfig::default() }
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wgtrain-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}-{:?}", std::thread::current().id()))
}

/// A valid token file's bytes, to corrupt.
fn token_file(tokens: &[u32]) -> Vec<u8> {
    let path = tmp("tokens.bin");
    data::write_tokens(&path, tokens).unwrap();
    std::fs::read(&path).unwrap()
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn token_parser_survives_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let _ = data::parse_tokens(&bytes);
    }

    #[test]
    fn token_parser_survives_corrupted_files(
        tokens in proptest::collection::vec(0u32..70000, 0..200),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut bytes = token_file(&tokens);
        prop_assert_eq!(data::parse_tokens(&bytes).unwrap(), tokens);
        for (at, b) in flips {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let _ = data::parse_tokens(&bytes);
    }

    #[test]
    fn config_loader_survives_any_text(text in "\\PC{0,300}", json in any::<bool>()) {
        let path = tmp(if json { "config.json" } else { "config.toml" });
        std::fs::write(&path, &text).unwrap();
        let _ = GptConfig::load(&path);
    }

    #[test]
    fn config_loader_rejects_bad_numbers(l in 0usize..4, h in 0usize..9, c in 0usize..300, v in 0usize..100, t in 0usize..40) {
        let path = tmp("numbers.toml");
        std::fs::write(&path, format!("n_layer = {l}\nn_head = {h}\nn_embd = {c}\nvocab_size = {v}\nn_positions = {t}\n")).unwrap();
        let ok = GptConfig::load(&path).is_ok();
        let valid = l > 0 && h > 0 && c > 0 && v > 0 && t > 0 && c % h == 0 && c / h <= 64;
        prop_assert_eq!(ok, valid);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases().cases / 4, ..cases() })]

    #[test]
    fn checkpoint_loader_survives_corrupted_safetensors(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..16),
        cut in any::<usize>(),
    ) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2_tiny");
        let config = GptConfig::load(&dir.join("config.json")).unwrap();
        let mut bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        // Most flips land in the header, where the structure is.
        for (at, b) in flips {
            let i = at % bytes.len().min(2000);
            bytes[i] = b;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let path = tmp("model.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let _ = checkpoint::load_hf(&path, &config);
    }
}

/// Inputs the libFuzzer targets (fuzz/) found crashing a loader, kept as regression tests.
#[test]
fn fuzz_crashes_stay_fixed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    // tokenizer.json files whose decoder is broken JSON, or holds invalid UTF-8: the
    // tokenizers crate panicked on them.
    for name in ["tokenizer-crash-efa21a28.json", "tokenizer-crash-547bfd0c.json"] {
        let e = wgtrain::data::tokenizer::Tokenizer::from_file(&dir.join(name), None)
            .err()
            .expect("an error, not a tokenizer");
        assert!(e.contains(name) && e.contains("not a tokenizer.json"), "{e}");
    }
}
