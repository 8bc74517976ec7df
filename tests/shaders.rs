//! CPU-only: every shader parses and validates with naga, and every file is embedded.

use std::path::Path;

use wgtrain::gpu::Shader;

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

#[test]
fn every_shader_validates_with_naga() {
    let files = shader_files();
    assert!(!files.is_empty(), "no shaders found");
    for f in files {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders").join(&f);
        let src = std::fs::read_to_string(&path).unwrap();
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(&src, &path.display().to_string())));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{f}: {}", e.emit_to_string(&src)));
    }
}

#[test]
fn every_shader_file_is_embedded() {
    let mut embedded: Vec<String> = Shader::ALL.iter().map(|s| s.file().to_string()).collect();
    embedded.sort();
    assert_eq!(embedded, shader_files(), "Shader::ALL must list every file in shaders/");
    for s in Shader::ALL {
        let on_disk =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders").join(s.file())).unwrap();
        assert_eq!(s.source(), on_disk, "{} embedded copy is stale", s.file());
    }
}

#[test]
fn broken_wgsl_fails_validation() {
    // The validator above must be able to fail: a type error is caught.
    let src = "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }";
    let parsed = naga::front::wgsl::parse_str(src);
    assert!(parsed.is_err(), "naga accepted a type error");
}
