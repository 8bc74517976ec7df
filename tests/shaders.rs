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

/// Parses and validates one module; panics with naga's report.
fn validate(name: &str, src: &str) {
    let module =
        naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(src, name)));
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
}

#[test]
fn every_shader_validates_with_naga() {
    // The modules as compiled: each file with its preludes composed ahead of it.
    assert!(!Shader::ALL.is_empty(), "no shaders found");
    for s in Shader::ALL {
        validate(&format!("{} (composed)", s.file()), &s.source(false));
        validate(&format!("{} (composed, subgroups)", s.file()), &s.source(true));
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
