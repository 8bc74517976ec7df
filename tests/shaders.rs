//! CPU-only: every shader parses and validates with naga, and every file is embedded.

use std::path::Path;

use wgtrain::gpu::{Prelude, Shader};

fn shader_files() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("shaders/ exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".wgsl"))
        .collect();
    files.sort();
    files
}

/// Parses and validates one module; panics with naga's report. Returns it with its info.
fn validate(name: &str, src: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module =
        naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(src, name)));
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    (module, info)
}

/// The cooperative-matrix kernels, which only the lavapipe 26 run of CI executes
/// (tests/coop.rs), also go through naga's SPIR-V writer here, on every adapter: the matmul
/// for every product, the attention, both fragment shapes.
#[test]
fn cooperative_matrix_kernels_translate_to_spirv() {
    let cases = [
        (Shader::MatmulCoop, 0b0111, vec![0.0, 1.0, 2.0]),
        (Shader::MatmulCoop, 0b0110, vec![2.0]),
        (Shader::MatmulCoop8, 0b0111, vec![0.0, 1.0, 2.0]),
        (Shader::AttentionCoop, 0b11101, vec![-1.0]),
        (Shader::AttentionCoop8, 0b11101, vec![-1.0]),
    ];
    for (shader, half, products) in cases {
        let src = shader.source_typed(false, half);
        let (module, info) = validate(&format!("{} half {half:b}", shader.file()), &src);
        for product in products {
            let mut constants = naga::back::PipelineConstants::default();
            if product >= 0.0 {
                constants.insert("PRODUCT".to_string(), product);
            }
            constants.insert("SG".to_string(), 32.0);
            let tag = format!("{} product {product}", shader.file());
            let (module, info) = naga::back::pipeline_constants::process_overrides(&module, &info, None, &constants)
                .unwrap_or_else(|e| panic!("{tag}: {e}"));
            let words = naga::back::spv::write_vec(&module, &info, &naga::back::spv::Options::default(), None)
                .unwrap_or_else(|e| panic!("{tag}: SPIR-V: {e}"));
            // OpCapability CooperativeMatrixKHR (6022) must be declared.
            assert!(
                words.windows(2).any(|w| w[0] == (2 << 16 | 17) && w[1] == 6022),
                "{tag}: no cooperative-matrix capability"
            );
        }
    }
}

#[test]
fn every_shader_validates_with_naga() {
    // The modules as compiled: each file with its preludes composed ahead of it.
    assert!(!Shader::ALL.is_empty(), "no shaders found");
    for s in Shader::ALL {
        validate(&format!("{} (composed)", s.file()), &s.source(false));
        validate(&format!("{} (composed, subgroups)", s.file()), &s.source(true));
        // Mixed precision: every binding that may hold f16 does.
        validate(&format!("{} (composed, f16)", s.file()), &s.source_typed(false, 0xff));
    }
}

/// f16 activations and f32 activations take the same memory but for the element size: at
/// most 0.55× of f32 (the f32 statistics, L and token ids are the rest), on the default model
/// at its batch and on GPT-2 124M at B 8, T 1024.
#[test]
fn f16_activations_take_at_most_055_of_f32() {
    use wgtrain::model::{Gpt, GptConfig, Precision};
    let default = GptConfig::gpt2(4, 4, 128, 256, 128);
    let gpt2 = GptConfig::gpt2(12, 12, 768, 50257, 1024);
    for (name, cfg, b, t) in [("default", default, 4, 128), ("gpt2-124M", gpt2, 8, 1024)] {
        let f32b = Gpt::activation_bytes_for(&cfg, b, t, 1, Precision::F32);
        let f16b = Gpt::activation_bytes_for(&cfg, b, t, 1, Precision::F16);
        let ratio = f16b as f64 / f32b as f64;
        assert!(ratio <= 0.55, "{name}: f16 activations {f16b} B are {ratio:.3}× the f32 {f32b} B");
    }
}

#[test]
fn every_shader_file_is_embedded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut embedded: Vec<String> = Shader::ALL.iter().map(|s| s.file().to_string()).collect();
    embedded.sort();
    embedded.dedup();
    assert_eq!(embedded, shader_files(), "Shader::ALL must list every file in shaders/");
    for s in Shader::ALL {
        let on_disk = std::fs::read_to_string(dir.join(s.file())).unwrap();
        assert_eq!(s.file_source(), on_disk, "{} embedded copy is stale", s.file());
        assert!(s.source(false).ends_with(&on_disk) && s.source(true).ends_with(&on_disk));
    }
    let mut preludes: Vec<String> = std::fs::read_dir(dir.join("prelude"))
        .unwrap()
        .map(|e| format!("prelude/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    preludes.sort();
    assert_eq!(preludes, Prelude::ALL.iter().map(|p| p.file().to_string()).collect::<Vec<_>>());
    for p in Prelude::ALL {
        assert_eq!(p.source(), std::fs::read_to_string(dir.join(p.file())).unwrap(), "{} is stale", p.file());
    }
}

#[test]
fn broken_wgsl_fails_validation() {
    // The validator above must be able to fail: a type error is caught.
    let src = "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }";
    let parsed = naga::front::wgsl::parse_str(src);
    assert!(parsed.is_err(), "naga accepted a type error");
}
