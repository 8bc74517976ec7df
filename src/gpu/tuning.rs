//! The tuning table a `Gpu` carries: plain data keyed by product and shape class ("forward
//! 1024x256x128"), the variant's name for each class this run met, and the cache file of what
//! the tuner timed on this adapter (keyed by the adapter, its driver and the hash of the
//! shaders as compiled). Kernels' callers read it; `crate::tune` above the kernels fills it,
//! and knows what the names mean.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::{Gpu, GpuError};

/// Version of the cache file's layout.
const FORMAT: u32 = 1;

/// What the tuner found for one class.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub best: String,
    pub best_ms: f64,
    /// The second fastest, if there were two candidates.
    pub runner_up: Option<String>,
    pub runner_up_ms: Option<f64>,
    /// How many candidates were timed: an entry from a shorter list than today's is timed again.
    #[serde(default)]
    pub candidates: usize,
    /// Candidates dropped because their outputs differed from the reference variant's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<String>,
}

/// The tuning table a `Gpu` carries.
#[derive(Default)]
pub struct Table {
    /// This run's choice for each class met so far, by key ("forward 1024x256x128"), as the
    /// variant's name.
    choices: BTreeMap<String, String>,
    /// The tuner's findings for the classes it timed or read from the cache in this process.
    pub found: BTreeMap<String, (Entry, bool)>,
    /// Time candidates for a new class; otherwise take `fallback` or the adapter type's default.
    pub tune: bool,
    /// Time every candidate even on a CPU adapter (`wgtrain tune`); training there times a
    /// short list, since every candidate costs an LLVM compile of seconds.
    pub thorough: bool,
    /// The name of the matmul variant for new classes when not tuning (None: the adapter
    /// type's default).
    pub fallback: Option<String>,
    /// The same for products whose operands are f16 (a cooperative-matrix variant, say),
    /// ahead of `fallback`.
    pub fallback_f16: Option<String>,
    /// The name of the attention variant for new classes when not tuning, where it runs
    /// (None, or one that cannot run at a class's head size or precision: the default).
    pub attention_fallback: Option<String>,
    /// A run from before autotuning: every kernel not pinned runs the one it ran then
    /// (the matmul baseline, 16×16 attention tiles, workgroup LayerNorm).
    pub baselines: bool,
    /// The cache file's part for this adapter and these shaders, read on first use.
    cache: Option<AdapterCache>,
    /// The cache file, when not `cache_path()` (tests give each GPU its own).
    pub cache_file: Option<PathBuf>,
    /// Checks a run's variants against the CPU reference before its first step (`preflight`).
    /// The commands set it: the reference oracle is not part of the runtime.
    pub preflight: Option<Preflight>,
}

/// One kernel variant checked against the CPU reference on this adapter.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The kernel, variant and dtype ("matmul forward lanes f32").
    pub label: String,
    pub pass: bool,
    /// The worst error as a fraction of its bound (at most 1 passes).
    pub worst: f32,
}

/// Checks the variants a run's choices name (class key → variant name), less the labels in
/// the set (verified on this adapter before), one row per kernel, variant and dtype.
pub type Preflight = fn(&Gpu, &BTreeMap<String, String>, &BTreeSet<String>) -> Result<Vec<Checked>, GpuError>;

impl Table {
    /// This run's choices by class key, as state.json records them.
    pub fn choices(&self) -> BTreeMap<String, String> {
        self.choices.clone()
    }

    /// The run's choice for class `key`, if it has met the class or pinned it.
    pub fn choice(&self, key: &str) -> Option<&str> {
        self.choices.get(key).map(String::as_str)
    }

    /// Records `name` as the run's choice for `key` (`tune::Pin::pin` checks the names first).
    pub fn insert(&mut self, key: String, name: String) {
        self.choices.insert(key, name);
    }
}

/// The run's choice for `key`, else the cache's (when tuning, from a list of at least
/// `candidates`), else `time`'s ranking, stored in the cache; else (not tuning) `default`.
/// Returns the variant's name. The table stays locked while `time` runs, so `time` must
/// build its candidates pinned.
pub fn choose_by(
    gpu: &Gpu,
    key: String,
    default: String,
    candidates: usize,
    time: impl FnOnce() -> Result<Entry, GpuError>,
) -> Result<String, GpuError> {
    let mut t = gpu.tuning.lock().unwrap();
    if let Some(v) = t.choices.get(&key) {
        return Ok(v.clone());
    }
    let cached = if t.tune { cache_entries(gpu, &mut t).get(&key).cloned() } else { None };
    let v = match cached {
        _ if !t.tune => default,
        Some(e) if e.candidates >= candidates => {
            t.found.insert(key.clone(), (e.clone(), true));
            e.best
        }
        // Nothing to choose from, and nothing cached: no timing, nothing stored.
        None if candidates < 2 => default,
        _ => {
            let e = time()?;
            cache_entries(gpu, &mut t).insert(key.clone(), e.clone());
            save_cache(gpu, &t);
            t.found.insert(key.clone(), (e.clone(), false));
            e.best
        }
    };
    t.choices.insert(key, v.clone());
    Ok(v)
}

/// The cache file: WGTRAIN_CACHE_DIR, else the user's cache directory, then wgtrain/tune.json.
pub fn cache_path() -> Option<PathBuf> {
    cache_dir().map(|d| d.join("tune.json"))
}

/// wgtrain's cache directory (the tuner's choices, fetched models): WGTRAIN_CACHE_DIR, else
/// the user's cache directory's wgtrain/.
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = env("WGTRAIN_CACHE_DIR") {
        return Some(dir);
    }
    let base = if cfg!(windows) {
        env("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        env("HOME").map(|h| h.join("Library/Caches"))
    } else {
        env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache")))
    };
    base.map(|b| b.join("wgtrain"))
}

/// Names this adapter and driver in the cache; a self-test's variant corrupted on purpose
/// (WGTRAIN_CORRUPT) gets an entry of its own, so it never touches the real one.
fn adapter_key(gpu: &Gpu) -> String {
    let i = &gpu.info;
    let key = format!("{:?} {:04x}:{:04x} {} | {} {}", i.backend, i.vendor, i.device, i.name, i.driver, i.driver_info);
    match &gpu.corrupt {
        Some(v) => format!("{key} | corrupted {v}"),
        None => key,
    }
}

/// Identifies the shaders as this GPU compiles them, preludes included: a new build of any of
/// them invalidates the timings.
fn shader_hash(gpu: &Gpu) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for s in super::Shader::ALL {
        h.update(s.source(gpu.subgroups).as_bytes());
    }
    format!("{:016x}", h.digest())
}

/// One adapter's part of the cache file.
#[derive(Clone, serde::Serialize, serde::Deserialize, Default)]
struct AdapterCache {
    shaders: String,
    classes: BTreeMap<String, Entry>,
    /// The variants (`Checked::label`) that passed their check against the CPU reference here.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    checked: BTreeSet<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheFile {
    format: u32,
    adapters: BTreeMap<String, AdapterCache>,
}

/// Reads the whole cache file. A missing file is empty; a corrupt one is ignored with a
/// one-line warning (the next save replaces it).
fn read_cache_file(path: &std::path::Path) -> CacheFile {
    let empty = CacheFile { format: FORMAT, adapters: BTreeMap::new() };
    let Ok(text) = std::fs::read_to_string(path) else { return empty };
    match serde_json::from_str::<CacheFile>(&text) {
        Ok(f) if f.format == FORMAT => f,
        Ok(f) => {
            eprintln!("warning: tuning cache {} has format {}, not {FORMAT}; ignoring it", path.display(), f.format);
            empty
        }
        Err(e) => {
            eprintln!("warning: tuning cache {} is unreadable ({e}); ignoring it", path.display());
            empty
        }
    }
}

/// This adapter's cached classes, read once per process.
fn cache_entries<'t>(gpu: &Gpu, t: &'t mut Table) -> &'t mut BTreeMap<String, Entry> {
    &mut adapter_cache(gpu, t).classes
}

/// This adapter's part of the cache file, read once per process (empty where the file has none
/// for these shaders).
fn adapter_cache<'t>(gpu: &Gpu, t: &'t mut Table) -> &'t mut AdapterCache {
    let path = t.cache_file.clone().or_else(cache_path);
    t.cache.get_or_insert_with(|| {
        let empty = AdapterCache { shaders: shader_hash(gpu), ..Default::default() };
        let Some(path) = path else { return empty };
        let mut file = read_cache_file(&path);
        match file.adapters.remove(&adapter_key(gpu)) {
            Some(a) if a.shaders == empty.shaders => a,
            Some(_) => {
                eprintln!("warning: tuning cache {} was made for other shaders; tuning again", path.display());
                empty
            }
            None => empty,
        }
    })
}

/// Runs the table's `preflight` (where set) over this run's choices whose variants were never
/// verified on this adapter (all of them on a first run here), and records those that pass in
/// the cache file, so a later run checks only what is new. Returns the rows that ran.
pub fn preflight(gpu: &Gpu) -> Result<Vec<Checked>, GpuError> {
    let (hook, choices, done) = {
        let mut t = gpu.tuning.lock().unwrap();
        let Some(hook) = t.preflight else { return Ok(Vec::new()) };
        let done = adapter_cache(gpu, &mut t).checked.clone();
        (hook, t.choices.clone(), done)
    };
    // Unlocked: the check builds its kernels in the variants named, as a run does.
    let rows = hook(gpu, &choices, &done)?;
    let passed: Vec<String> = rows.iter().filter(|r| r.pass).map(|r| r.label.clone()).collect();
    if !passed.is_empty() {
        let mut t = gpu.tuning.lock().unwrap();
        adapter_cache(gpu, &mut t).checked.extend(passed);
        save_cache(gpu, &t);
    }
    Ok(rows)
}

/// Writes this adapter's entries into the cache file (temporary file, then rename). A failure
/// costs only the next run's tuning time, so it is a warning.
fn save_cache(gpu: &Gpu, t: &Table) {
    let (Some(path), Some(cache)) = (t.cache_file.clone().or_else(cache_path), t.cache.as_ref()) else { return };
    let mut file = read_cache_file(&path);
    file.adapters.insert(adapter_key(gpu), cache.clone());
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        std::fs::write(&tmp, serde_json::to_string_pretty(&file).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        eprintln!("warning: could not write the tuning cache {}: {e}", path.display());
    }
}
