//! The optimizer-state loader (optimizer.safetensors), for AdamW and SGD moments.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wgtrain::model::GptConfig;
use wgtrain::optim::{state::parse_state, OptimizerKind, ParamTable};

fuzz_target!(|bytes: &[u8]| {
    let config = GptConfig::gpt2(1, 1, 4, 5, 3);
    let table = ParamTable::new(config.parameter_specs());
    let path = std::path::Path::new("fuzz");
    for (kind, moments) in [
        (OptimizerKind::Adamw, [("exp_avg", true), ("exp_avg_sq", true)]),
        (OptimizerKind::Sgd, [("momentum_buffer", true), ("", false)]),
    ] {
        if let Ok((_, m, v)) = parse_state(bytes, path, kind, &table, moments) {
            assert_eq!(m.len(), table.len as usize);
            assert_eq!(v.len(), table.len as usize);
        }
    }
});
