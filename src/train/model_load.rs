//! The model a run trains, built and loaded: a full model, or LoRA adapters over a frozen base
//! (kept block-quantized where it is so: QLoRA), with its weights from a checkpoint, --init or
//! a fresh init; and the --teacher model of a distillation run.

use std::path::Path;

use anyhow::{bail, Context};

use super::TrainArgs;
use crate::data::tokenizer::Tokenizer;
use crate::dist::Dist;
use crate::gpu::Gpu;
use crate::model::export::Loaded;
use crate::model::quantized::dense_values;
use crate::model::{checkpoint, Gpt, GptConfig, Precision, QuantWeights};
use crate::optim::OptimizerKind;

/// The weights a run starts from: a checkpoint's (resume), --init's, or a fresh init. A LoRA
/// run's base always comes from --init (`base`, read before the model was built), its adapters
/// from the checkpoint, --lora-adapter or their own init.
pub(super) fn load_weights(
    gpu: &Gpu,
    gpt: &Gpt,
    a: &TrainArgs,
    resume: Option<&Path>,
    (config, base): (&GptConfig, Option<Vec<Loaded>>),
) -> anyhow::Result<()> {
    use crate::model::lora::{load_peft, ADAPTER_FILE};
    if let Some(base) = base {
        gpt.write_base(gpu, &dense_values(&base))?;
        let adapters = resume.or(a.lora.lora_adapter.as_deref());
        if let Some(dir) = adapters {
            let file = dir.join(ADAPTER_FILE);
            let values = load_peft(&file, config, &gpt.arena.table).map_err(|e| anyhow::anyhow!("{e}"))?;
            gpt.write_params(gpu, &values);
        }
        return Ok(());
    }
    match (resume, &a.init) {
        (Some(ckpt), _) => {
            // An f16 model.safetensors has its f32 masters beside it.
            let master = ckpt.join(checkpoint::MASTER);
            let file = if master.is_file() { master } else { ckpt.join("model.safetensors") };
            gpt.write_params(gpu, &checkpoint::load_hf(&file, config)?)
        }
        (None, Some(init)) => gpt.write_params(gpu, &super::init::weights(init, config)?),
        (None, None) => gpt.init(gpu, a.seed),
    }
    Ok(())
}

/// The model at (B, T) with K micro-batches, its pipelines built (and tuned); under MPI rank 0
/// sends its tuning choices to the others. Out-of-memory becomes the run's whole need. With
/// `lora` (the LoRA flags' adapters), the model trains those over frozen weights.
pub(super) fn build_model(
    gpu: &Gpu,
    a: &TrainArgs,
    (config, lora, base): (&GptConfig, Option<crate::model::lora::LoraConfig>, Option<&[Loaded]>),
    p: Precision,
    dist: &Dist,
) -> anyhow::Result<Gpt> {
    let (b, t) = (a.batch_size, a.seq_len);
    let state = if a.optimizer == OptimizerKind::Sgd { 1 } else { 2 };
    // What the parameters take: a full fine-tune's with gradients and state; a LoRA run's
    // frozen base as stored, and its adapters with theirs.
    let params = match (&lora, base) {
        (Some(l), Some(base)) => {
            let adapters = crate::model::lora::adapter_specs(config, l).unwrap_or_default();
            let trained: usize = adapters.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
            let stored: usize = base
                .iter()
                .map(|t| if t.qtype.is_block() { t.bytes.len() } else { 4 * t.shape.iter().product::<usize>() })
                .sum();
            (stored + 4 * trained * (2 + state)) as u64
        }
        _ => 4 * crate::optim::ParamTable::new(config.parameter_specs()).numel() * (2 + state as u64),
    };
    let gpt = match lora {
        Some(lora) => QuantWeights::upload(gpu, base.unwrap_or_default())
            .and_then(|quant| Gpt::with_lora(gpu, (config.clone(), quant), (b, t, a.grad_accum), p, lora, a.seed)),
        None => Gpt::training(gpu, config.clone(), (b, t, a.grad_accum), p, a.qat),
    };
    if dist.size > 1 && dist.is_root() {
        // The other ranks wait in prepare_tuning for the choices rank 0 made while building.
        dist.string_from_root(serde_json::to_string(&gpu.tuning.lock().unwrap().choices())?);
    }
    gpt.map_err(|e| {
        let need = params + Gpt::activation_bytes_for(config, b, t, a.grad_accum, p);
        match e {
            crate::GpuError::BufferTooLarge { .. } | crate::GpuError::OutOfMemory { .. } => anyhow::anyhow!(
                "{e}; this model at batch {b} × {t} needs about {:.1} MB of GPU memory in all: lower --batch-size \
                 or --seq-len, or use a larger adapter",
                need as f64 / 1e6
            ),
            e => e.into(),
        }
    })
}

/// The --teacher model, forward only, in f32, at the run's batch: an HF checkpoint, or a GGUF
/// file whose block-quantized weights stay so on the GPU. It must have been made for the
/// data's tokenizer and the student's vocabulary.
pub(super) fn load_teacher(
    gpu: &Gpu,
    dir: &Path,
    a: &TrainArgs,
    student: &GptConfig,
    tok: &Tokenizer,
) -> anyhow::Result<Gpt> {
    let what = format!("--teacher {}", dir.display());
    let gguf = match crate::compress::gguf_path(dir) {
        Some(path) => Some(crate::model::export::read_gpt2(&path).map_err(|e| anyhow::anyhow!("{what}: {e}"))?),
        None => None,
    };
    let hf_tok;
    let (config, theirs) = match &gguf {
        Some(m) => (m.config.clone(), &m.tokenizer),
        None => {
            hf_tok = Tokenizer::for_dir(dir).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
            (GptConfig::load(&dir.join("config.json")).with_context(|| what.clone())?, &hf_tok)
        }
    };
    if !theirs.same_ids(tok) || config.vocab_size != student.vocab_size {
        bail!(
            "{what}: its tokenizer (or vocab_size {}) is not the student's (vocab_size {}): a teacher must share \
             the data's tokenizer",
            config.vocab_size,
            student.vocab_size
        );
    }
    if a.seq_len > config.n_positions {
        bail!("{what}: --seq-len {} exceeds the teacher's n_positions {}", a.seq_len, config.n_positions);
    }
    if let Some(m) = &gguf {
        return Ok(Gpt::from_gguf(gpu, m, a.batch_size, a.seq_len, Precision::F32)?);
    }
    let values = checkpoint::load_hf(&dir.join("model.safetensors"), &config).with_context(|| what.clone())?;
    let table = crate::optim::ParamTable::new(config.parameter_specs());
    let teacher = Gpt::for_inference(gpu, config, a.batch_size, a.seq_len, Precision::F32, table, None)?;
    teacher.write_params(gpu, &values);
    Ok(teacher)
}

/// What a LoRA model's frozen base takes on the GPU: its f32 arena, and its quantized
/// weights where it holds some (QLoRA).
pub(super) fn frozen_bytes(gpt: &Gpt) -> String {
    let dense = gpt.lora.as_ref().map_or(0, |l| 4 * l.base.table.len);
    match &gpt.quant {
        Some(q) => {
            format!(" in {:.1} MB ({:.1} MB block-quantized)", (dense + q.bytes()) as f64 / 1e6, q.bytes() as f64 / 1e6)
        }
        None => format!(" in {:.1} MB (f32)", dense as f64 / 1e6),
    }
}
