//! The token-file parser (llm.c's .bin header and u16/u32 tokens) on any bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(tokens) = wgtrain::data::parse_tokens(bytes) {
        // A file that parses holds no more tokens than its bytes allow.
        assert!(tokens.len() * 2 <= bytes.len());
    }
});
