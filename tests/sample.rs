//! What `wgtrain sample` writes: on a terminal the text decoded lossily with its control
//! characters escaped, so that a sample cannot drive the terminal; to a pipe (or with --raw)
//! the exact bytes the model produced.

use std::process::Command;

use wgtrain::data::tokenizer::Tokenizer;
use wgtrain::model::{checkpoint, Gpt, GptConfig, Precision};
use wgtrain::optim::ParamTable;
use wgtrain::train::{printable, sample_until};

use crate::common::gpu;

#[test]
fn control_characters_are_escaped_but_newline_and_tab() {
    let text = "a\u{1b}[31mb\u{7}\u{0}\r\n\tc\u{85}é\u{7f}";
    assert_eq!(printable(text), "a\\x1b[31mb\\x07\\x00\\x0d\n\tc\\u{85}é\\x7f");
    let tok = Tokenizer::byte();
    assert_eq!(tok.decode_bytes(&[0x68, 0xff, 0x1b]), vec![0x68, 0xff, 0x1b]);
    assert_eq!(tok.decode(&[0x68, 0xff, 0x1b]), "h\u{fffd}\u{1b}");
}

/// A byte-level model of seeded weights: `sample` into a pipe writes the prompt and the very
/// bytes the same sampling gives in process (bytes that are not UTF-8 or are control
/// characters among them), and a newline.
#[test]
fn sample_into_a_pipe_writes_the_exact_bytes() {
    let Some(gpu) = gpu() else { return };
    let config = GptConfig::gpt2(2, 2, 16, 256, 32);
    let dir = std::env::temp_dir().join(format!("wgtrain-sample-raw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let gpt =
        Gpt::for_inference(gpu, config.clone(), 1, 1, Precision::F32, ParamTable::new(config.parameter_specs()), None)
            .unwrap();
    gpt.init(gpu, 11);
    checkpoint::save_hf(&dir, &config, &gpt.read_params(gpu).unwrap()).unwrap();
    let tok = Tokenizer::byte();
    let want = sample_until(gpu, &gpt, &tok, "ab", 24, (1.0, 256, 5), None).unwrap();
    let mut expected = b"ab".to_vec();
    expected.extend(tok.decode_bytes(&want.ids));
    expected.push(b'\n');
    assert!(expected.iter().any(|&b| b >= 0x80 || (b < 0x20 && b != b'\n')), "a sample worth escaping: {expected:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_wgtrain"))
        .args(["--precision", "f32", "--no-tune", "sample", "--model"])
        .arg(&dir)
        .args(["--prompt", "ab", "--tokens", "24", "--temperature", "1", "--top-k", "256", "--seed", "5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, expected);
    std::fs::remove_dir_all(&dir).ok();
}
