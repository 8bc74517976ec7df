//! The model-config parsers: models/*.toml (with its [train] table) and HF config.json.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    for json in [false, true] {
        if let Ok(c) = wgtrain::model::GptConfig::parse(text, json, "fuzz") {
            // A config that loads is one the kernels can run.
            assert!(c.validate().is_ok());
            let _ = c.parameter_specs();
        }
    }
    let _ = wgtrain::model::config::TrainDefaults::parse(text, "fuzz");
});
