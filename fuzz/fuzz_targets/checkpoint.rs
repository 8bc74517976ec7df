//! The safetensors checkpoint loader, against a small model's config.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wgtrain::model::GptConfig;

fuzz_target!(|bytes: &[u8]| {
    let config = GptConfig::gpt2(1, 1, 4, 5, 3);
    if let Ok(values) = wgtrain::model::checkpoint::parse_hf(bytes, std::path::Path::new("fuzz"), &config) {
        let specs = config.parameter_specs();
        assert_eq!(values.len(), specs.len());
        for (v, (_, shape)) in values.iter().zip(specs) {
            assert_eq!(v.len(), shape.iter().product::<usize>());
        }
    }
});
