//! Optimizer state as safetensors, for exact resume: one tensor per parameter and moment
//! (`NAME.exp_avg`, `NAME.exp_avg_sq`, or `NAME.momentum_buffer` for SGD), with the step and
//! the config in the header's metadata.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::{OptimConfig, Optimizer, ParamTable};
use crate::gpu::{Gpu, GpuError};

const FORMAT: &str = "wgtrain-optimizer-1";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not an optimizer state file ({why}); pass the optimizer.safetensors that wgtrain saved")]
    Format { path: PathBuf, why: String },
    #[error(
        "{path}: saved for {saved}, but this run uses {wanted}; start the optimizer fresh or use the same settings"
    )]
    Mismatch { path: PathBuf, saved: String, wanted: String },
    #[error(transparent)]
    Gpu(#[from] GpuError),
}

impl Optimizer {
    pub fn moment_names(&self) -> [(&'static str, bool); 2] {
        match self.v {
            Some(_) => [("exp_avg", true), ("exp_avg_sq", true)],
            None => [("momentum_buffer", true), ("", false)],
        }
    }

    /// Writes the state to `path` atomically (a temporary file in the same directory, then a
    /// rename).
    pub fn save(&self, gpu: &Gpu, path: &Path) -> Result<(), StateError> {
        let bytes = self.to_bytes(gpu).map_err(|e| match e {
            StateError::Format { why, .. } => StateError::Format { path: path.into(), why },
            e => e,
        })?;
        write_atomic(path, &bytes)
    }

    /// The bytes `save` writes. A ZeRO-1 shard gives its own tensors only; `merge` joins the
    /// shards into the file of the whole model.
    pub fn to_bytes(&self, gpu: &Gpu) -> Result<Vec<u8>, StateError> {
        let len = self.table.len as usize;
        let m: Vec<f32> = gpu.read(&self.m, 0, len)?;
        let v: Option<Vec<f32>> = self.v.as_ref().map(|v| gpu.read(v, 0, len)).transpose()?;
        let mut tensors = Vec::new();
        for t in &self.table.tensors {
            let span = t.offset as usize..(t.offset + t.numel()) as usize;
            let [(m_name, _), (v_name, has_v)] = self.moment_names();
            tensors.push((
                format!("{}.{m_name}", t.name),
                t.shape.clone(),
                bytemuck::cast_slice(&m[span.clone()]).to_vec(),
            ));
            if let (true, Some(v)) = (has_v, &v) {
                tensors.push((
                    format!("{}.{v_name}", t.name),
                    t.shape.clone(),
                    bytemuck::cast_slice(&v[span]).to_vec(),
                ));
            }
        }
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(n, shape, bytes)| {
                (n.clone(), TensorView::new(Dtype::F32, shape.clone(), bytes).expect("shape matches data"))
            })
            .collect();
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("step".to_string(), self.step.to_string()),
            ("config".to_string(), serde_json::to_string(&self.cfg).expect("config serializes")),
        ]);
        safetensors::serialize(views, Some(meta))
            .map_err(|e| StateError::Format { path: PathBuf::new(), why: e.to_string() })
    }

    /// Joins the `to_bytes` of every shard (whole tensors or NAME#START pieces) into the
    /// state file of the whole model `full`, as one optimizer over it would write it, with
    /// the first shard's metadata.
    pub fn merge(parts: &[Vec<u8>], full: &ParamTable) -> Result<Vec<u8>, StateError> {
        let bad = |why: String| StateError::Format { path: PathBuf::from("(gathered optimizer shards)"), why };
        let mut meta = None;
        // Per moment name, the whole arena's values.
        let mut moments: Vec<(String, Vec<f32>)> = Vec::new();
        for part in parts {
            let (_, header) = SafeTensors::read_metadata(part).map_err(|e| bad(e.to_string()))?;
            meta.get_or_insert_with(|| header.metadata().clone().unwrap_or_default());
            let st = SafeTensors::deserialize(part).map_err(|e| bad(e.to_string()))?;
            for (name, view) in st.tensors() {
                let (piece, suffix) = name.rsplit_once('.').ok_or_else(|| bad(format!("{name}: no moment suffix")))?;
                let (base, start) = match piece.split_once('#') {
                    Some((b, s)) => (b, s.parse::<u64>().map_err(|_| bad(format!("{name}: bad piece start")))?),
                    None => (piece, 0),
                };
                let t = full.get(base).ok_or_else(|| bad(format!("{name}: not a tensor of this model")))?;
                let data: Vec<f32> = bytemuck::pod_collect_to_vec(view.data());
                if start + data.len() as u64 > t.numel() {
                    return Err(bad(format!("{name}: {} elements from {start} overrun {base}", data.len())));
                }
                let slot = match moments.iter().position(|(s, _)| s == suffix) {
                    Some(i) => i,
                    None => {
                        moments.push((suffix.to_string(), vec![0.0; full.len as usize]));
                        moments.len() - 1
                    }
                };
                moments[slot].1[(t.offset + start) as usize..][..data.len()].copy_from_slice(&data);
            }
        }
        let mut tensors = Vec::new();
        for t in &full.tensors {
            for (suffix, values) in &moments {
                let span = t.offset as usize..(t.offset + t.numel()) as usize;
                tensors.push((
                    format!("{}.{suffix}", t.name),
                    t.shape.clone(),
                    bytemuck::cast_slice(&values[span]).to_vec(),
                ));
            }
        }
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(n, shape, bytes): &(String, Vec<usize>, Vec<u8>)| {
                (n.clone(), TensorView::new(Dtype::F32, shape.clone(), bytes).expect("shape matches data"))
            })
            .collect();
        safetensors::serialize(views, meta).map_err(|e| bad(e.to_string()))
    }

    /// Writes bytes from `to_bytes` or `merge` to `path` atomically.
    pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
        write_atomic(path, bytes)
    }

    /// Loads state saved by `save` into this optimizer. The optimizer kind and the tensor names
    /// and shapes must match; the other hyperparameters may change between runs.
    pub fn load(&mut self, gpu: &Gpu, path: &Path) -> Result<(), StateError> {
        let bytes = std::fs::read(path).map_err(|source| StateError::Io { path: path.into(), source })?;
        let (step, m, v) = parse_state(&bytes, path, self.cfg.kind, &self.table, self.moment_names())?;
        gpu.write(&self.m, 0, &m);
        if let Some(vb) = &self.v {
            gpu.write(vb, 0, &v);
        }
        self.step = step;
        Ok(())
    }
}

/// The step and moments (in arena order over `table`) of an optimizer-state file's `bytes`
/// (`path` names it in errors), checked against the optimizer kind and the tensors it needs;
/// `moments` are the tensor suffixes of the two moments and whether each is kept.
#[allow(clippy::type_complexity)]
pub fn parse_state(
    bytes: &[u8],
    path: &Path,
    kind: super::OptimizerKind,
    table: &ParamTable,
    moments: [(&'static str, bool); 2],
) -> Result<(u64, Vec<f32>, Vec<f32>), StateError> {
    let format = |why: String| StateError::Format { path: path.into(), why };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| format(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(format(format!("metadata format is not {FORMAT}")));
    }
    let step: u64 = meta.get("step").and_then(|s| s.parse().ok()).ok_or_else(|| format("no step".into()))?;
    let saved: OptimConfig = meta
        .get("config")
        .and_then(|c| serde_json::from_str(c).ok())
        .ok_or_else(|| format("no readable config".into()))?;
    if saved.kind != kind {
        let (saved, wanted) = (saved.kind.name().to_string(), kind.name().to_string());
        return Err(StateError::Mismatch { path: path.into(), saved, wanted });
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| format(e.to_string()))?;
    let len = table.len as usize;
    let mut m = vec![0.0f32; len];
    let mut v = vec![0.0f32; len];
    for t in &table.tensors {
        for ((suffix, wanted), dst) in moments.into_iter().zip([&mut m, &mut v]) {
            if !wanted {
                continue;
            }
            // A ZeRO-1 piece NAME#START takes its part of the saved tensor NAME.
            let (base, start) = match t.name.split_once('#') {
                Some((b, s)) => (b, s.parse::<usize>().unwrap_or(usize::MAX)),
                None => (t.name.as_str(), 0),
            };
            let name = format!("{base}.{suffix}");
            let view = st.tensor(&name).map_err(|_| StateError::Mismatch {
                path: path.into(),
                saved: "a model without this tensor".into(),
                wanted: name.clone(),
            })?;
            let n = t.numel() as usize;
            let saved_n: usize = view.shape().iter().product();
            let fits = if start == 0 && !t.name.contains('#') {
                view.shape() == t.shape.as_slice()
            } else {
                start.checked_add(n).is_some_and(|end| end <= saved_n)
            };
            if view.dtype() != Dtype::F32 || !fits {
                return Err(StateError::Mismatch {
                    path: path.into(),
                    saved: format!("{name} {:?} {:?}", view.dtype(), view.shape()),
                    wanted: format!("{} F32 {:?}", t.name, t.shape),
                });
            }
            let src: Vec<f32> = bytemuck::pod_collect_to_vec(&view.data()[4 * start..4 * (start + n)]);
            dst[t.offset as usize..][..n].copy_from_slice(&src);
        }
    }
    Ok((step, m, v))
}

/// Writes `bytes` under a temporary name in the same directory, syncs, then renames.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    use std::io::Write;
    let io = |source| StateError::Io { path: path.into(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
