//! The page's JavaScript API over `wgtrain::browser`: open the browser's GPU, start a run from
//! a model config and a text, step it, validate, sample, and save or resume the model.
//!
//! Every GPU result is a Promise (a mapping completes only on the event loop). A `Trainer`
//! does one thing at a time: a call made while another is awaited is refused, not queued.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;
use wgtrain::browser::{Run, Spec};
use wgtrain::Gpu;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console)]
    fn error(message: &str);
}

/// A panic's message on the console (the page also shows the error its Promise rejects with).
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| error(&format!("wgtrain: {info}"))));
}

/// Every module the page's runs may compile, as JSON [[name, WGSL], …]: each shader in f32
/// without subgroups (wgpu has none on the web), but for those that need cooperative matrices
/// or subgroups whatever they are given (the coop, lanes and split-K matmul kernels). The page's ?check=1 hands each to the browser's own compiler.
#[wasm_bindgen]
pub fn shader_sources() -> String {
    use wgtrain::gpu::Shader;
    let native_only = [Shader::AttentionCoop, Shader::AttentionCoop8, Shader::MatmulCoop, Shader::MatmulCoop8];
    let lanes = [Shader::AttentionLanes, Shader::MatmulLanes, Shader::MatmulSplit];
    let all: Vec<(String, String)> = Shader::ALL
        .iter()
        .filter(|s| !native_only.contains(s) && !lanes.contains(s))
        .map(|s| (format!("{s:?} ({})", s.file()), s.source(false)))
        .collect();
    serde_json::to_string(&all).expect("json")
}

struct Inner {
    gpu: Gpu,
    run: Option<Run>,
}

/// The GPU, and the run on it once `start` made one.
#[wasm_bindgen]
pub struct Trainer {
    inner: Rc<RefCell<Inner>>,
}

fn js(e: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&e.to_string())
}

#[wasm_bindgen]
impl Trainer {
    /// The browser's WebGPU adapter, opened.
    pub async fn open() -> Result<Trainer, JsValue> {
        let gpu = Gpu::open_web().await.map_err(js)?;
        // No tuning: timing kernels needs waits the browser has not. Each kernel takes the
        // adapter type's default variant.
        gpu.tuning.lock().unwrap().tune = false;
        Ok(Trainer { inner: Rc::new(RefCell::new(Inner { gpu, run: None })) })
    }

    /// What wgpu knows of the adapter: its name where the browser gives one, back end and kind.
    pub fn adapter(&self) -> String {
        let inner = self.inner.borrow();
        let info = &inner.gpu.info;
        format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type).trim().to_string()
    }

    /// Starts a run of the model in `config` (a models/*.toml's text) on `corpus` (bytes), or
    /// from a saved model (`resume_config` its config.json, `resume_weights` its
    /// model.safetensors); `steps` overrides the config's. Returns the run's settings as JSON.
    pub fn start(
        &self,
        config: &str,
        config_name: &str,
        corpus: &[u8],
        resume_config: Option<String>,
        resume_weights: Option<Vec<u8>>,
        steps: Option<u32>,
    ) -> Result<String, JsValue> {
        let mut inner = self.inner.try_borrow_mut().map_err(|_| js("busy: await the call before"))?;
        let resume = match (&resume_config, &resume_weights) {
            (Some(c), Some(w)) => Some((c.as_str(), w.as_slice())),
            (None, None) => None,
            _ => return Err(js("resuming takes both config.json and model.safetensors")),
        };
        let spec = Spec { config, config_name, resume, corpus, steps: steps.map(u64::from) };
        inner.run = None;
        let run = Run::new(&inner.gpu, &spec).map_err(js)?;
        let s = &run.settings;
        let info = serde_json::json!({
            "batch_size": s.batch_size, "seq_len": s.seq_len, "steps": s.steps, "lr": s.lr,
            "warmup": s.warmup, "eval_every": s.eval_every, "tokens_per_step": run.tokens_per_step(),
            "parameters": run.parameters(), "n_layer": run.config.n_layer, "n_head": run.config.n_head,
            "n_embd": run.config.n_embd,
        });
        inner.run = Some(run);
        Ok(info.to_string())
    }

    /// Runs the next step; resolves to its JSON ({step, loss, norm, lr, skipped}), or to null
    /// once the run took all its steps.
    pub fn step(&self) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let mut g = inner.try_borrow_mut().map_err(|_| js("busy: await the call before"))?;
            let Inner { gpu, run } = &mut *g;
            let run = run.as_mut().ok_or_else(|| js("no run: call start first"))?;
            if run.done() {
                return Ok(JsValue::NULL);
            }
            let d = run.step(gpu).await.map_err(js)?;
            let out = serde_json::json!({
                "step": d.step, "loss": d.loss, "norm": d.norm, "lr": d.lr, "skipped": d.skipped,
            });
            Ok(JsValue::from_str(&out.to_string()))
        })
    }

    /// Resolves to the validation loss over `batches` batches (null: no validation text).
    pub fn val_loss(&self, batches: u32) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let mut g = inner.try_borrow_mut().map_err(|_| js("busy: await the call before"))?;
            let Inner { gpu, run } = &mut *g;
            let run = run.as_mut().ok_or_else(|| js("no run: call start first"))?;
            Ok(match run.val_loss(gpu, batches as usize).await.map_err(js)? {
                Some(v) => JsValue::from_f64(v as f64),
                None => JsValue::NULL,
            })
        })
    }

    /// Resolves to `n` bytes of text after `prompt`, sampled at `temperature` from the top
    /// `top_k`, seeded.
    pub fn sample(&self, prompt: String, n: u32, temperature: f32, top_k: u32, seed: u32) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let g = inner.try_borrow().map_err(|_| js("busy: await the call before"))?;
            let run = g.run.as_ref().ok_or_else(|| js("no run: call start first"))?;
            let sampling = (temperature, top_k as usize, seed as u64);
            let text = run.sample(&g.gpu, &prompt, n as usize, sampling).await.map_err(|e| js(format!("{e:#}")))?;
            Ok(JsValue::from_str(&text))
        })
    }

    /// Resolves to [model.safetensors (Uint8Array), config.json (string)] of the weights now.
    pub fn save(&self) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let g = inner.try_borrow().map_err(|_| js("busy: await the call before"))?;
            let run = g.run.as_ref().ok_or_else(|| js("no run: call start first"))?;
            let (bytes, config) = run.save(&g.gpu).await.map_err(js)?;
            let out = Array::new();
            out.push(&Uint8Array::from(bytes.as_slice()));
            out.push(&JsValue::from_str(&config));
            Ok(out.into())
        })
    }
}
