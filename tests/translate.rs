//! CPU-only: every shader goes through the writers of the back ends wgpu would hand it to —
//! naga's MSL (Metal), HLSL (DX12, shader model 6.2) and GLSL (GL, ES 3.10) — as wgtrain
//! compiles it: f32 and f16, with and without the subgroup reductions, and with the override
//! constants of every variant the tuner may pick. A module that a back end cannot express must
//! need a feature that wgtrain never asks of that back end (`gpu::withheld_features`): GL gets
//! no f16 (naga's GLSL writer has no 16-bit floats), DX12 and GL no cooperative matrices.

use naga::back::PipelineConstants;
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use naga::Module;
use wgtrain::gpu::Shader;
use wgtrain::kernels::attention::AttnVariant;
use wgtrain::tune::matmul::{Product, Variant};

/// The three back ends' writers other than SPIR-V's.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Msl,
    Hlsl,
    Glsl,
}

impl Backend {
    const ALL: [Backend; 3] = [Backend::Msl, Backend::Hlsl, Backend::Glsl];

    fn capabilities(self) -> Capabilities {
        match self {
            Backend::Msl => naga::back::msl::supported_capabilities(),
            Backend::Hlsl => naga::back::hlsl::supported_capabilities(),
            Backend::Glsl => naga::back::glsl::supported_capabilities(),
        }
    }

    /// Writes every compute entry point of `module`; the error names what failed.
    fn write(self, module: &Module, info: &ModuleInfo) -> Result<usize, String> {
        let out = match self {
            Backend::Msl => {
                let options = naga::back::msl::Options { lang_version: (2, 4), ..Default::default() };
                let pipeline = naga::back::msl::PipelineOptions::default();
                let (text, tr) =
                    naga::back::msl::write_string(module, info, &options, &pipeline).map_err(|e| e.to_string())?;
                if let Some(Err(e)) = tr.entry_point_names.iter().find(|r| r.is_err()) {
                    return Err(e.to_string());
                }
                text
            }
            Backend::Hlsl => {
                let options = naga::back::hlsl::Options {
                    shader_model: naga::back::hlsl::ShaderModel::V6_2,
                    ..Default::default()
                };
                let pipeline = naga::back::hlsl::PipelineOptions::default();
                let mut text = String::new();
                let mut w = naga::back::hlsl::Writer::new(&mut text, &options, &pipeline);
                w.write(module, info, None).map_err(|e| e.to_string())?;
                text
            }
            Backend::Glsl => glsl(module, info)?,
        };
        Ok(out.len())
    }
}

/// GLSL holds one entry point a file: each compute entry point of `module`, written in turn.
fn glsl(module: &Module, info: &ModuleInfo) -> Result<String, String> {
    use naga::back::glsl;
    let options = glsl::Options { version: glsl::Version::new_gles(310), ..Default::default() };
    let mut all = String::new();
    for ep in &module.entry_points {
        let pipeline = glsl::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: ep.name.clone(),
            multiview: None,
        };
        let mut text = String::new();
        let policies = naga::proc::BoundsCheckPolicies::default();
        let mut w = glsl::Writer::new(&mut text, module, info, &options, &pipeline, policies)
            .map_err(|e| format!("{}: {e}", ep.name))?;
        w.write().map_err(|e| format!("{}: {e}", ep.name))?;
        all += &text;
    }
    Ok(all)
}

/// The override constants wgtrain compiles `shader` with: one set for each variant that
/// runs on it (with each product for the matmuls), and the shader's own defaults otherwise.
fn constant_sets(shader: Shader) -> Vec<Vec<(&'static str, f64)>> {
    let products = |v: Variant| -> Vec<Vec<(&'static str, f64)>> {
        Product::ALL.iter().filter(|&&p| v.serves(p)).map(|&p| v.constants(p)).collect()
    };
    let variants = |keep: fn(&Variant) -> bool| Variant::all().into_iter().filter(keep);
    match shader {
        Shader::Matmul => variants(|v| matches!(v, Variant::Reg { .. } | Variant::Tiled { .. }))
            .flat_map(products)
            .flat_map(|c| [0.0, 1.0].map(|a| [c.clone(), vec![("ALIGNED", a)]].concat()))
            .collect(),
        Shader::MatmulLanes => variants(|v| matches!(v, Variant::Lanes { .. }))
            .flat_map(products)
            .flat_map(|c| [4.0, 8.0, 16.0, 32.0].map(|l| [c.clone(), vec![("LANES", l)]].concat()))
            .collect(),
        Shader::MatmulSplit => variants(|v| matches!(v, Variant::Split { .. }))
            .flat_map(products)
            .flat_map(|c| [4.0, 8.0, 16.0].map(|l| [c.clone(), vec![("KL", l)]].concat()))
            .collect(),
        Shader::MatmulCoop | Shader::MatmulCoop8 => {
            let frag = if shader == Shader::MatmulCoop8 { 8 } else { 16 };
            let sg = |c: Vec<_>| [8.0, 32.0].map(|sg| [c.clone(), vec![("SG", sg)]].concat());
            products(Variant::Coop { frag }).into_iter().flat_map(sg).collect()
        }
        Shader::AttentionRows16 | Shader::AttentionRows32 | Shader::AttentionRows => {
            let hs = match shader {
                Shader::AttentionRows16 => 16.0,
                Shader::AttentionRows32 => 32.0,
                _ => 64.0,
            };
            let rows = AttnVariant::ALL.iter().filter_map(|v| match v {
                AttnVariant::Rows { br } => Some(*br as f64),
                _ => None,
            });
            rows.flat_map(|br| [0.0, 1.0].map(|u| vec![("HS", hs), ("BR", br), ("UNROLL", u)])).collect()
        }
        Shader::AttentionLanes => [(64.0, 1.0), (32.0, 2.0)]
            .into_iter()
            .flat_map(|(hs, r)| [4.0, 8.0, 16.0].map(|l| vec![("HS", hs), ("R", r), ("LANES", l)]))
            .collect(),
        Shader::AttentionCoop | Shader::AttentionCoop8 => vec![vec![("SG", 8.0)], vec![("SG", 32.0)]],
        _ => vec![Vec::new()],
    }
}

/// Each module of `shader` as wgtrain composes it: f32, f32 with the subgroup reductions, and
/// every binding that may hold f16 in f16 (the coop kernels have their own f16 operands).
fn sources(shader: Shader) -> Vec<(String, String)> {
    let f16 = match shader {
        Shader::MatmulCoop | Shader::MatmulCoop8 => 0b0111,
        Shader::AttentionCoop | Shader::AttentionCoop8 => 0b11101,
        _ => 0xff,
    };
    vec![
        ("f32".into(), shader.source(false)),
        ("f32 subgroups".into(), shader.source(true)),
        ("f16".into(), shader.source_typed(false, f16)),
    ]
}

fn parse(tag: &str, src: &str) -> Module {
    naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(src, tag)))
}

/// The module with `constants` applied, validated against the back end's capabilities; None
/// where the back end cannot express it.
fn specialize(
    tag: &str,
    module: &Module,
    constants: &[(&'static str, f64)],
    caps: Capabilities,
) -> Option<(Module, ModuleInfo)> {
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(module)
        .unwrap_or_else(|e| panic!("{tag}: {e:?}"));
    let pc: PipelineConstants = constants.iter().map(|&(k, v)| (k.to_string(), v)).collect();
    let (module, _) = naga::back::pipeline_constants::process_overrides(module, &info, None, &pc)
        .unwrap_or_else(|e| panic!("{tag}: {e}"));
    let module = module.into_owned();
    let info = Validator::new(ValidationFlags::all(), caps).validate(&module).ok()?;
    Some((module, info))
}

/// What a module needs of the device: the features its precision, reductions or kernel use.
fn needs(shader: Shader, precision: &str) -> wgpu::Features {
    let mut f = match precision {
        "f16" => wgpu::Features::SHADER_F16,
        "f32 subgroups" => wgpu::Features::SUBGROUP,
        _ => wgpu::Features::empty(),
    };
    if matches!(shader, Shader::MatmulCoop | Shader::MatmulCoop8 | Shader::AttentionCoop | Shader::AttentionCoop8) {
        f |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
    }
    if matches!(shader, Shader::MatmulLanes | Shader::MatmulSplit | Shader::AttentionLanes) {
        f |= wgpu::Features::SUBGROUP;
    }
    f
}

fn wgpu_backend(b: Backend) -> wgpu::Backend {
    match b {
        Backend::Msl => wgpu::Backend::Metal,
        Backend::Hlsl => wgpu::Backend::Dx12,
        Backend::Glsl => wgpu::Backend::Gl,
    }
}

/// Every module translates for every back end, or needs a feature wgtrain never asks of that
/// back end (`gpu::withheld_features`), so that no device there is handed it.
#[test]
fn every_shader_translates_to_msl_hlsl_and_glsl() {
    let mut written = 0;
    let mut refused = Vec::new();
    for &shader in Shader::ALL {
        for (precision, src) in sources(shader) {
            let module = parse(&format!("{} {precision}", shader.file()), &src);
            for constants in constant_sets(shader) {
                for backend in Backend::ALL {
                    let tag = format!("{} {precision} {constants:?} {backend:?}", shader.file());
                    let result = match specialize(&tag, &module, &constants, backend.capabilities()) {
                        None => Err("its capabilities".to_string()),
                        Some((m, info)) => backend.write(&m, &info),
                    };
                    match result {
                        Ok(_) => written += 1,
                        Err(e) => refused.push((shader, precision.clone(), backend, e)),
                    }
                }
            }
        }
    }
    eprintln!("translate: {written} modules written, {} refused where wgtrain withholds the feature", refused.len());
    for (shader, precision, backend, why) in &refused {
        let withheld = wgtrain::gpu::withheld_features(wgpu_backend(*backend));
        assert!(
            withheld.intersects(needs(*shader, precision)),
            "{backend:?} cannot write {} ({precision}: {why}), and wgtrain would offer it there",
            shader.file()
        );
    }
    // The checks above can fail: GLSL has no cooperative matrices, and MSL writes everything.
    assert!(refused.iter().any(|r| r.0 == Shader::MatmulCoop && r.2 == Backend::Glsl), "GLSL wrote coop");
    assert!(!refused.iter().any(|r| r.2 == Backend::Msl), "MSL refused: {refused:?}");
    assert!(written > 300, "only {written} modules written");
}
