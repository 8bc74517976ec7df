//! The tokenizer.json loader, and encoding and decoding with what it loads.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wgtrain::data::tokenizer::Tokenizer;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(t) = Tokenizer::from_bytes(bytes, std::path::Path::new("fuzz"), None) {
        if let Ok(ids) = t.encode("Hello, world! 123") {
            let _ = t.decode(&ids);
        }
    }
});
