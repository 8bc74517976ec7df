//! The GGUF reader, and the GPT-2 read from what it parses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wgtrain::{formats::gguf::Gguf, model::export};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(g) = Gguf::parse(bytes.to_vec()) {
        for t in &g.tensors {
            assert_eq!(g.data(t).len() as u64, t.bytes());
        }
        if let Ok(m) = export::from_gguf(&g) {
            assert_eq!(m.tensors.len(), m.config.parameter_specs().len());
        }
    }
});
