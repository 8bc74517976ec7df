//! HF GPT-2 checkpoints: model.safetensors (+ config.json) in and out. HF stores the matmul
//! weights as Conv1D (in, out); wgtrain keeps (out, in), so they are transposed both ways.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::GptConfig;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {why}")]
    Io { path: PathBuf, why: String },
    #[error("{path}: {why}")]
    Format { path: PathBuf, why: String },
    #[error("{path}: {why}; the checkpoint does not match the model config")]
    Mismatch { path: PathBuf, why: String },
}

/// Conv1D weights, stored (in, out) by HF.
fn is_conv1d(name: &str) -> bool {
    name.ends_with(".weight") && (name.contains(".c_attn.") || name.contains(".c_proj.") || name.contains(".c_fc."))
}

fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            y[c * rows + r] = x[r * cols + c];
        }
    }
    y
}

/// Reads HF GPT-2 weights for `config` from model.safetensors: returns each parameter in
/// table order and wgtrain's layout. Keys may carry `transformer.`; `attn.bias`,
/// `attn.masked_bias` and a tied `lm_head.weight` are ignored.
pub fn load_hf(path: &Path, config: &GptConfig) -> Result<Vec<Vec<f32>>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|e| CheckpointError::Io { path: path.into(), why: e.to_string() })?;
    parse_hf(&bytes, path, config)
}

/// `load_hf` of a file's bytes; `path` names it in errors.
pub fn parse_hf(bytes: &[u8], path: &Path, config: &GptConfig) -> Result<Vec<Vec<f32>>, CheckpointError> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| CheckpointError::Format { path: path.into(), why: format!("not a safetensors file ({e})") })?;
    let mut by_name: HashMap<String, TensorView> = HashMap::new();
    for (key, view) in st.tensors() {
        let name = key.strip_prefix("transformer.").unwrap_or(&key).to_string();
        by_name.insert(name, view);
    }
    let mismatch = |why: String| CheckpointError::Mismatch { path: path.into(), why };
    let mut out = Vec::new();
    for (name, shape) in config.parameter_specs() {
        let view = by_name.get(&name).ok_or_else(|| mismatch(format!("no tensor {name}")))?;
        let hf_shape: Vec<usize> = if is_conv1d(&name) { vec![shape[1], shape[0]] } else { shape.clone() };
        if view.shape() != hf_shape.as_slice() {
            return Err(mismatch(format!("{name} is {:?}, the config needs {hf_shape:?}", view.shape())));
        }
        let data = floats(view, &name, path)?;
        out.push(if is_conv1d(&name) { transpose(&data, shape[1], shape[0]) } else { data });
    }
    Ok(out)
}

/// A tensor's values in f32, from F32, F16 or BF16.
pub(crate) fn floats(view: &TensorView, name: &str, path: &Path) -> Result<Vec<f32>, CheckpointError> {
    Ok(match view.dtype() {
        Dtype::F32 => bytemuck::pod_collect_to_vec(view.data()),
        Dtype::F16 => halves(view.data()).map(|h| half::f16::from_bits(h).to_f32()).collect(),
        Dtype::BF16 => halves(view.data()).map(|h| half::bf16::from_bits(h).to_f32()).collect(),
        other => {
            return Err(CheckpointError::Format {
                path: path.into(),
                why: format!("{name} is {other:?}; F32, F16 and BF16 are read"),
            })
        }
    })
}

/// Little-endian u16s of a tensor's bytes.
fn halves(bytes: &[u8]) -> impl Iterator<Item = u16> + '_ {
    bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

/// Writes config.json and model.safetensors into `dir` in HF's GPT-2 layout (keys without the
/// `transformer.` prefix, Conv1D weights (in, out), lm_head tied to wte), in f32.
pub fn save_hf(dir: &Path, config: &GptConfig, values: &[Vec<f32>]) -> Result<(), CheckpointError> {
    save_hf_as(dir, config, values, crate::kernels::Dtype::F32)
}

/// `save_hf` with model.safetensors in `dtype` (f16: rounded to nearest even, as
/// torch's `.half()`).
pub fn save_hf_as(
    dir: &Path,
    config: &GptConfig,
    values: &[Vec<f32>],
    dtype: crate::kernels::Dtype,
) -> Result<(), CheckpointError> {
    let io = |path: PathBuf, e: std::io::Error| CheckpointError::Io { path, why: e.to_string() };
    std::fs::create_dir_all(dir).map_err(|e| io(dir.into(), e))?;
    write_synced(dir, "model.safetensors", &serialize(dir, config, values, dtype)?)?;
    write_synced(dir, "config.json", serde_json::to_string_pretty(&config.to_hf_json()).expect("json").as_bytes())
}

/// model.safetensors and config.json as `save_hf` writes them (f32), as bytes and text: the
/// page's download.
pub fn hf_bytes(config: &GptConfig, values: &[Vec<f32>]) -> Result<(Vec<u8>, String), CheckpointError> {
    let bytes = serialize(Path::new("model.safetensors"), config, values, crate::kernels::Dtype::F32)?;
    Ok((bytes, serde_json::to_string_pretty(&config.to_hf_json()).expect("json")))
}

/// master.safetensors: the f32 weights in the HF layout, beside an f16 model.safetensors, so
/// that a resumed run continues from the exact masters.
pub fn save_master(dir: &Path, config: &GptConfig, values: &[Vec<f32>]) -> Result<(), CheckpointError> {
    write_synced(dir, MASTER, &serialize(dir, config, values, crate::kernels::Dtype::F32)?)
}

/// The file of a checkpoint's f32 masters, where model.safetensors is f16.
pub const MASTER: &str = "master.safetensors";

/// The safetensors bytes of `values` in the HF layout.
fn serialize(
    dir: &Path,
    config: &GptConfig,
    values: &[Vec<f32>],
    dtype: crate::kernels::Dtype,
) -> Result<Vec<u8>, CheckpointError> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for ((name, shape), v) in config.parameter_specs().into_iter().zip(values) {
        let (shape, data) = if is_conv1d(&name) {
            (vec![shape[1], shape[0]], transpose(v, shape[0], shape[1]))
        } else {
            (shape, v.clone())
        };
        let bytes = match dtype {
            crate::kernels::Dtype::F32 => bytemuck::cast_slice(&data).to_vec(),
            crate::kernels::Dtype::F16 => {
                data.iter().flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes()).collect()
            }
        };
        tensors.push((name, shape, bytes));
    }
    let st_dtype = match dtype {
        crate::kernels::Dtype::F32 => Dtype::F32,
        crate::kernels::Dtype::F16 => Dtype::F16,
    };
    to_bytes(dir, &tensors, st_dtype)
}

/// Writes dir/`file`: f32 tensors of any names (peft's adapters), synced.
pub fn save_tensors(dir: &Path, file: &str, tensors: &[(String, Vec<usize>, &[f32])]) -> Result<(), CheckpointError> {
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|(n, s, v)| (n.clone(), s.clone(), bytemuck::cast_slice(v).to_vec())).collect();
    std::fs::create_dir_all(dir).map_err(|e| CheckpointError::Io { path: dir.into(), why: e.to_string() })?;
    write_synced(dir, file, &to_bytes(dir, &owned, Dtype::F32)?)
}

/// The safetensors bytes of (name, shape, little-endian data) tensors.
fn to_bytes(
    dir: &Path,
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    st_dtype: Dtype,
) -> Result<Vec<u8>, CheckpointError> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| (n.clone(), TensorView::new(st_dtype, s.clone(), b).expect("shape matches data")))
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(meta))
        .map_err(|e| CheckpointError::Format { path: dir.into(), why: e.to_string() })
}

/// Writes dir/name through a synced temporary file and a rename.
pub(crate) fn write_synced(dir: &Path, name: &str, data: &[u8]) -> Result<(), CheckpointError> {
    let io = |path: PathBuf, e: std::io::Error| CheckpointError::Io { path, why: e.to_string() };
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, data).map_err(|e| io(tmp.clone(), e))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| io(tmp.clone(), e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(path, e))
}
