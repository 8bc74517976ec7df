//! A GPT of wgtrain's shape trained in Burn 0.22 (wgpu backend, fusion and autotune on), to compare training
//! tokens/s with `wgtrain bench train` on the same adapter in the same session. Pre-LayerNorm blocks, GELU
//! MLP of 4·C, learned positions, LM head tied to the token embedding, AdamW, no dropout: the work of one
//! wgtrain step. Tokens are synthetic, as in `wgtrain bench train`.
//!
//! cargo run --release -- [--vocab 2048] [--layers 4] [--heads 4] [--channels 128] [--batch 8] [--seq 128]
//!                        [--warmup 3] [--steps 10]
use burn::module::Module;
use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use std::time::Instant;

#[derive(Module, Debug)]
struct Gpt {
    wte: Embedding,
    wpe: Embedding,
    blocks: TransformerEncoder,
    ln_f: LayerNorm,
}

struct Shape {
    vocab: usize,
    layers: usize,
    heads: usize,
    channels: usize,
    batch: usize,
    seq: usize,
    warmup: usize,
    steps: usize,
}

impl Gpt {
    fn new(s: &Shape, device: &Device) -> Self {
        let c = s.channels;
        let blocks = TransformerEncoderConfig::new(c, 4 * c, s.heads, s.layers).with_dropout(0.0).with_norm_first(true);
        Gpt {
            wte: EmbeddingConfig::new(s.vocab, c).with_initializer(gpt2_init()).init(device),
            wpe: EmbeddingConfig::new(s.seq, c).with_initializer(gpt2_init()).init(device),
            blocks: blocks.init(device),
            ln_f: LayerNormConfig::new(c).init(device),
        }
    }

    /// Mean cross-entropy of next-token prediction over a [B, T] batch.
    fn loss(&self, inputs: Tensor<2, Int>, targets: Tensor<1, Int>, positions: Tensor<2, Int>) -> Tensor<1> {
        let [b, t] = inputs.dims();
        let device = inputs.device();
        let x = self.wte.forward(inputs) + self.wpe.forward(positions);
        let mask = generate_autoregressive_mask(b, t, &device);
        let h = self.blocks.forward(TransformerEncoderInput::new(x).mask_attn(mask));
        let h = self.ln_f.forward(h).reshape([b * t, self.wte.weight.dims()[1]]);
        let logits = h.matmul(self.wte.weight.val().transpose());
        CrossEntropyLossConfig::new().init(&device).forward(logits, targets)
    }
}

/// GPT-2's embedding init, N(0, 0.02): Burn's N(0, 1) would start the tied head at a loss near 86.
fn gpt2_init() -> Initializer {
    Initializer::Normal { mean: 0.0, std: 0.02 }
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    match args.iter().position(|a| a == name) {
        None => default,
        Some(i) => match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(v) if v > 0 => v,
            _ => {
                eprintln!("error: {name} needs a positive whole number");
                std::process::exit(2);
            }
        },
    }
}

/// Synthetic tokens from a fixed LCG, so every run trains on the same batches.
fn batch(s: &Shape, step: usize, device: &Device) -> (Tensor<2, Int>, Tensor<1, Int>) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ step as u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) % s.vocab as u64) as i64
    };
    let row: Vec<i64> = (0..s.batch * (s.seq + 1)).map(|_| next()).collect();
    let mut inputs = Vec::with_capacity(s.batch * s.seq);
    let mut targets = Vec::with_capacity(s.batch * s.seq);
    for r in row.chunks(s.seq + 1) {
        inputs.extend_from_slice(&r[..s.seq]);
        targets.extend_from_slice(&r[1..]);
    }
    let inputs = Tensor::from_data(TensorData::new(inputs, [s.batch, s.seq]), device);
    let targets = Tensor::from_data(TensorData::new(targets, [s.batch * s.seq]), device);
    (inputs, targets)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    const FLAGS: [&str; 8] =
        ["--vocab", "--layers", "--heads", "--channels", "--batch", "--seq", "--warmup", "--steps"];
    if let Some(bad) = args.iter().skip(1).step_by(2).find(|a| !FLAGS.contains(&a.as_str())) {
        eprintln!("error: unknown flag {bad}; the flags are {}, each with a number", FLAGS.join(" "));
        std::process::exit(2);
    }
    let s = Shape {
        vocab: arg(&args, "--vocab", 2048),
        layers: arg(&args, "--layers", 4),
        heads: arg(&args, "--heads", 4),
        channels: arg(&args, "--channels", 128),
        batch: arg(&args, "--batch", 8),
        seq: arg(&args, "--seq", 128),
        warmup: arg(&args, "--warmup", 3),
        steps: arg(&args, "--steps", 10),
    };
    if !s.channels.is_multiple_of(s.heads) {
        eprintln!("error: --channels {} is not a multiple of --heads {}", s.channels, s.heads);
        std::process::exit(2);
    }
    let device = Device::default().autodiff();
    let mut model = Gpt::new(&s, &device);
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let pos: Vec<i64> = (0..s.batch).flat_map(|_| 0..s.seq as i64).collect();
    let positions = Tensor::<2, Int>::from_data(TensorData::new(pos, [s.batch, s.seq]), &device);
    // As `wgtrain bench train` and its training loop do: queue a step, then read the previous step's loss.
    let mut previous: Option<Tensor<1>> = None;
    let mut timed = None;
    let start = Instant::now();
    for step in 0..s.warmup + s.steps {
        if step == s.warmup {
            timed = Some(Instant::now());
        }
        let t0 = Instant::now();
        let (inputs, targets) = batch(&s, step, &device);
        let loss = model.loss(inputs, targets, positions.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
        if let Some(prev) = previous.replace(loss.detach()) {
            let value: f32 = prev.into_scalar();
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            println!("step {:3} loss {value:.4} (queued {ms:.1} ms after the step before)", step - 1);
        }
    }
    let last: f32 = previous.expect("at least one step").into_scalar();
    let ms = timed.expect("timed steps").elapsed().as_secs_f64() * 1e3 / s.steps as f64;
    let tokens = (s.batch * s.seq) as f64;
    println!(
        "burn 0.22 wgpu: {:.0} tokens/s, {ms:.1} ms per step (mean of {} steps after {} warm-up; last loss \
         {last:.4}; {:.1} s in all)",
        tokens / (ms / 1e3),
        s.steps,
        s.warmup,
        start.elapsed().as_secs_f64()
    );
}
