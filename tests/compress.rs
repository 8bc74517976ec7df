//! Quantization and GGUF: the block formats against the `gguf` package's reference code
//! (fixtures from scripts/make_quant_fixture.py), GGUF files both ways, and the dequantizing
//! kernels against the CPU reference.

use wgtrain::formats::gguf::{Gguf, Value};
use wgtrain::formats::quant::{self, QType};
use wgtrain::gpu::{Category, Recorder};
use wgtrain::kernels::quant::{self as qk, QView};
use wgtrain::kernels::{Dtype, View};
use wgtrain::reference::{encoder, matmul as cpu, Rng};

use crate::common::{assert_close, builds};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const BLOCKS: [QType; 3] = [QType::Q8_0, QType::Q4_0, QType::Q4_1];

fn json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{FIX}/{name}")).unwrap()).unwrap()
}

fn bits(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|b| f32::from_bits(b.as_u64().unwrap() as u32)).collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn blocks_match_the_gguf_package_bit_for_bit() {
    let g = json("quant_golden.json");
    let x = bits(&g["input"]);
    for q in BLOCKS {
        let want = &g[q.name()];
        let bytes = quant::quantize(&x, q);
        assert_eq!(bytes, hex(want["bytes"].as_str().unwrap()), "{} bytes", q.name());
        let back = quant::dequantize(&bytes, q);
        let want_back = bits(&want["dequantized"]);
        let same = back.iter().zip(&want_back).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{} dequantized values differ", q.name());
    }
}

#[test]
fn reads_a_file_the_gguf_package_wrote() {
    let g = Gguf::read(std::path::Path::new(&format!("{FIX}/gguf_py.gguf"))).unwrap();
    assert_eq!(g.version, 3);
    let get = |k: &str| g.get(k).unwrap_or_else(|| panic!("{k}")).clone();
    assert_eq!(get("general.architecture"), Value::Str("gpt2".into()));
    assert_eq!(get("t.u8"), Value::U8(200));
    assert_eq!(get("t.i8"), Value::I8(-100));
    assert_eq!(get("t.u16"), Value::U16(60000));
    assert_eq!(get("t.i16"), Value::I16(-30000));
    assert_eq!(get("t.u32"), Value::U32(4_000_000_000));
    assert_eq!(get("t.i32"), Value::I32(-2_000_000_000));
    assert_eq!(get("t.f32"), Value::F32(0.15625));
    assert_eq!(get("t.bool"), Value::Bool(true));
    assert_eq!(get("t.str"), Value::Str("héllo".into()));
    let arr = ["a", "bc", ""].map(|s| Value::Str(s.into())).to_vec();
    assert_eq!(get("t.arr"), Value::Array(arr));
    assert_eq!(get("t.u64"), Value::U64(1 << 40));
    assert_eq!(get("t.i64"), Value::I64(-(1 << 40)));
    assert_eq!(get("t.f64"), Value::F64(2.5e-300));
    let want = json("gguf_py.json");
    let tensors = want["tensors"].as_array().unwrap();
    assert_eq!(g.tensors.len(), tensors.len());
    for (t, w) in g.tensors.iter().zip(tensors) {
        assert_eq!(t.name, w["name"].as_str().unwrap());
        assert_eq!(t.qtype.ggml_id() as u64, w["type"].as_u64().unwrap(), "{}", t.name);
        let dims: Vec<u64> = w["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        assert_eq!(t.dims, dims, "{}", t.name);
        let got = quant::dequantize(g.data(t), t.qtype);
        let same = got.iter().zip(bits(&w["values"])).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{} values", t.name);
    }
}

#[test]
fn malformed_files_are_errors() {
    let good = std::fs::read(format!("{FIX}/gguf_py.gguf")).unwrap();
    assert!(Gguf::parse(b"GGML".to_vec()).unwrap_err().contains("magic"));
    for cut in [3, 10, 30, 200, good.len() - 40] {
        assert!(Gguf::parse(good[..cut].to_vec()).is_err(), "cut at {cut}");
    }
    let mut huge = good.clone();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(Gguf::parse(huge).unwrap_err().contains("do not fit"));
}

/// `m` rows of `k` (a multiple of 32) f32 values, quantized as `q` and placed in GPU words.
fn quantized(q: QType, rows: usize, k: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let x = Rng::new(seed).vec(rows * k);
    let bytes = quant::quantize(&x, q);
    (quant::dequantize(&bytes, q), quant::gpu_words(&bytes, q))
}

#[test]
fn dequant_matmul_matches_the_reference() {
    // M and N odd, not multiples of the 32 × 32 tile; K three blocks.
    let (m, n, k) = (37usize, 45usize, 96usize);
    for gpu in builds() {
        for q in BLOCKS {
            for act in [Dtype::F32, Dtype::F16] {
                // f16 activations in the trusted build only: the checked build's cold compiles
                // weigh on CI, and its f32 runs cover the same indexing.
                let f16 = gpu.device.features().contains(wgpu::Features::SHADER_F16) && !gpu.checked_shaders;
                if act == Dtype::F16 && !f16 {
                    continue;
                }
                let (w, words) = quantized(q, n, k, 1);
                let mut r = Rng::new(2);
                let (inp, bias) = (r.vec(m * k), r.vec(n));
                let inp = if act == Dtype::F16 {
                    inp.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
                } else {
                    inp
                };
                let mut want = vec![0.0; m * n];
                cpu::forward(&mut want, &inp, &w, Some(&bias), m, n, k);
                for (rows, mm) in [(false, m), (true, m), (true, 1)] {
                    let got = run_qmatmul(gpu, q, act, &inp[..mm * k], &words, &bias, (mm, n, k), rows);
                    let tol = if act == Dtype::F16 { 2e-3 } else { 1e-5 };
                    let what = format!("{} {act:?} rows kernel {rows} M {mm}", q.name());
                    assert_close(&what, &got, &want[..mm * n], tol, tol);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_qmatmul(
    gpu: &wgtrain::Gpu,
    q: QType,
    act: Dtype,
    inp: &[f32],
    words: &[u32],
    bias: &[f32],
    (m, n, k): (usize, usize, usize),
    rows: bool,
) -> Vec<f32> {
    let pool = &gpu.pool;
    let upload = |v: &[f32]| match act {
        Dtype::F32 => pool.storage_from(&gpu.queue, Category::Activations, v).unwrap(),
        Dtype::F16 => {
            let mut h: Vec<u16> = v.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect();
            h.resize(h.len().next_multiple_of(2), 0);
            pool.storage_from(&gpu.queue, Category::Activations, &h).unwrap()
        }
    };
    let a = upload(inp);
    let out = upload(&vec![f32::NAN; m * n]);
    let wbuf = pool.storage_from(&gpu.queue, Category::Parameters, words).unwrap();
    let bbuf = pool.storage_from(&gpu.queue, Category::Parameters, bias).unwrap();
    let wv = QView { buf: &wbuf, offset: 0, qtype: q, rows: n as u32, cols: k as u32 };
    let ops = qk::forward_variant(
        gpu,
        View::typed(&out, act),
        View::typed(&a, act),
        wv,
        Some(View::from(&bbuf)),
        m as u32,
        rows,
    )
    .unwrap();
    let mut rec = Recorder::new(gpu);
    rec.run(&ops);
    rec.submit().unwrap();
    match act {
        Dtype::F32 => gpu.read(&out, 0, m * n).unwrap(),
        Dtype::F16 => gpu.read_f16(&out, 0, m * n).unwrap(),
    }
}

/// dinp = dout · deq(W), and += onto what dinp held: M odd, N not a multiple of the tile
/// (a partial last step over N), K three blocks; without `add` dinp starts as NaN.
#[test]
fn dequant_backward_input_matches_the_reference() {
    let (m, n, k) = (37usize, 45usize, 96usize);
    for gpu in builds() {
        for q in BLOCKS {
            let (w, words) = quantized(q, n, k, 5);
            let mut r = Rng::new(6);
            let (dout, prior) = (r.vec(m * n), r.vec(m * k));
            let mut want = vec![0.0; m * k];
            cpu::backward_input(&mut want, &dout, &w, m, n, k);
            for add in [false, true] {
                let pool = &gpu.pool;
                let start = if add { prior.clone() } else { vec![f32::NAN; m * k] };
                let dinp = pool.storage_from(&gpu.queue, Category::Activations, &start).unwrap();
                let dy = pool.storage_from(&gpu.queue, Category::Activations, &dout).unwrap();
                let wbuf = pool.storage_from(&gpu.queue, Category::Parameters, &words).unwrap();
                let wv = QView { buf: &wbuf, offset: 0, qtype: q, rows: n as u32, cols: k as u32 };
                let ops = qk::backward_input(gpu, View::from(&dinp), View::from(&dy), wv, m as u32, add).unwrap();
                let mut rec = Recorder::new(gpu);
                rec.run(&ops);
                rec.submit().unwrap();
                let got: Vec<f32> = gpu.read(&dinp, 0, m * k).unwrap();
                let want: Vec<f32> = want.iter().zip(&prior).map(|(w, p)| if add { w + p } else { *w }).collect();
                assert_close(&format!("backward_input {} add {add}", q.name()), &got, &want, 1e-5, 1e-5);
            }
        }
    }
}

/// The dequantizing copy (the Dequant path's scratch) holds exactly the CPU's values, in f32,
/// and in f16 rounded as the CPU rounds them; the copy starts as NaN.
#[test]
fn dequantized_copy_is_the_cpu_dequantization() {
    let (n, k) = (45usize, 96usize);
    for gpu in builds() {
        for q in BLOCKS {
            let (w, words) = quantized(q, n, k, 7);
            for act in [Dtype::F32, Dtype::F16] {
                if act == Dtype::F16 && !gpu.device.features().contains(wgpu::Features::SHADER_F16) {
                    continue;
                }
                let out = gpu.pool.storage_from(&gpu.queue, Category::Scratch, &vec![f32::NAN; n * k]).unwrap();
                let wbuf = gpu.pool.storage_from(&gpu.queue, Category::Parameters, &words).unwrap();
                let wv = QView { buf: &wbuf, offset: 0, qtype: q, rows: n as u32, cols: k as u32 };
                let op = qk::dequantize(gpu, View::typed(&out, act), wv).unwrap();
                let mut rec = Recorder::new(gpu);
                rec.dispatch(&op);
                rec.submit().unwrap();
                let (got, want): (Vec<f32>, Vec<f32>) = match act {
                    Dtype::F32 => (gpu.read(&out, 0, n * k).unwrap(), w.clone()),
                    Dtype::F16 => (
                        gpu.read_f16(&out, 0, n * k).unwrap(),
                        w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
                    ),
                };
                assert_close(&format!("dequantize {} {act:?}", q.name()), &got, &want, 0.0, 0.0);
            }
        }
    }
}

#[test]
fn dequant_embedding_matches_the_reference() {
    let (v, c, t, rows) = (29usize, 64usize, 7usize, 21usize);
    for gpu in builds() {
        for q in BLOCKS {
            let (wte, words) = quantized(q, v, c, 3);
            let wpe = Rng::new(4).vec(t * c);
            let tokens: Vec<u32> = (0..rows as u32).map(|i| (i * 13 + 5) % v as u32).collect();
            let mut want = vec![0.0; rows * c];
            encoder::forward(&mut want, &tokens, &wte, &wpe, t, c);
            let pool = &gpu.pool;
            let out = pool.storage_from(&gpu.queue, Category::Activations, &vec![f32::NAN; rows * c]).unwrap();
            let tok = pool.storage_from(&gpu.queue, Category::Activations, &tokens).unwrap();
            let wbuf = pool.storage_from(&gpu.queue, Category::Parameters, &words).unwrap();
            let pbuf = pool.storage_from(&gpu.queue, Category::Parameters, &wpe).unwrap();
            let wv = QView { buf: &wbuf, offset: 0, qtype: q, rows: v as u32, cols: c as u32 };
            let op =
                qk::embed(gpu, View::from(&out), &tok, wv, Some(View::from(&pbuf)), rows as u32, t as u32, t as u32)
                    .unwrap();
            let mut rec = Recorder::new(gpu);
            rec.dispatch(&op);
            rec.submit().unwrap();
            let got: Vec<f32> = gpu.read(&out, 0, rows * c).unwrap();
            assert_close(&format!("embed {}", q.name()), &got, &want, 0.0, 0.0);
        }
    }
}

/// A small GPT-2 whose rows are whole blocks (C 32), seeded values, in a checkpoint directory.
fn tiny_model(dir: &std::path::Path, seed: u64) -> (wgtrain::model::GptConfig, Vec<Vec<f32>>) {
    let config = wgtrain::model::GptConfig::gpt2(2, 2, 32, 67, 16);
    let mut r = Rng::new(seed);
    let values: Vec<Vec<f32>> = config
        .parameter_specs()
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let base = if name.contains("ln_") && name.ends_with(".weight") { 1.0 } else { 0.0 };
            (0..n).map(|_| base + 0.3 * r.uniform()).collect()
        })
        .collect();
    wgtrain::model::checkpoint::save_hf(dir, &config, &values).unwrap();
    (config, values)
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("wgtrain-compress-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The committed tests/fixtures/wgtrain_q4_1.gguf is what wgtrain writes for `tiny_model(1)`
/// (q4_1, wte too), and both readers see the same in it: ours here, the `gguf` package's in
/// gguf_wgtrain.json (scripts/make_quant_fixture.py --check).
#[test]
fn a_written_file_reads_back_in_both_readers() {
    use wgtrain::model::export::{self, Format};
    let dir = tmp("written");
    tiny_model(&dir, 1);
    let format = Format { qtype: QType::Q4_1, embeddings: true };
    wgtrain::compress::quantize(&dir, format, &dir.join("q")).unwrap();
    let written = std::fs::read(dir.join("q/model.gguf")).unwrap();
    let committed = format!("{FIX}/wgtrain_q4_1.gguf");
    if std::env::var("WGTRAIN_WRITE_FIXTURES").is_ok_and(|v| v == "1") {
        std::fs::write(&committed, &written).unwrap();
    }
    assert!(written == std::fs::read(&committed).unwrap(), "wgtrain writes other bytes than {committed}");
    let g = Gguf::parse(written).unwrap();
    let want = json("gguf_wgtrain.json");
    for t in want["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let ours = g.tensor(name).unwrap_or_else(|| panic!("{name}"));
        let dims: Vec<u64> = t["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        assert_eq!(ours.dims, dims, "{name}");
        assert_eq!(ours.qtype.name().to_uppercase(), t["type"].as_str().unwrap(), "{name}");
        assert_eq!(ours.bytes(), t["bytes"].as_u64().unwrap(), "{name}");
    }
    assert_eq!(g.tensors.len(), want["tensors"].as_array().unwrap().len());
    for (key, v) in want["metadata"].as_object().unwrap() {
        let ours = g.get(key).unwrap_or_else(|| panic!("{key}"));
        match v {
            serde_json::Value::String(s) => assert_eq!(ours.as_str(), Some(s.as_str()), "{key}"),
            serde_json::Value::Number(n) => {
                assert_eq!(ours.as_f64().unwrap() as f32, n.as_f64().unwrap() as f32, "{key}")
            }
            serde_json::Value::Object(o) => {
                assert_eq!(ours.as_array().unwrap().len() as u64, o["len"].as_u64().unwrap())
            }
            serde_json::Value::Array(a) => {
                let ours: Vec<_> = ours.as_array().unwrap().iter().map(|x| x.as_str()).collect();
                let want: Vec<_> = a.iter().map(|x| x.as_str()).collect();
                assert_eq!(ours, want, "{key}")
            }
            serde_json::Value::Bool(b) => assert!(matches!(ours, Value::Bool(x) if x == b), "{key}"),
            _ => panic!("{key}: a metadata kind the test does not compare"),
        }
    }
    let m = export::read_gpt2(&dir.join("q/model.gguf")).unwrap();
    assert_eq!(m.config.n_embd, 32);
    assert_eq!(m.tensors.iter().filter(|t| t.qtype == QType::Q4_1).count(), 1 + 4 * 2);
}

/// The logits of the evaluation forward of `tokens` (one batch).
pub fn eval_logits(gpu: &wgtrain::Gpu, gpt: &wgtrain::model::Gpt, tokens: &[u32]) -> Vec<f32> {
    gpt.upload_batch(gpu, 0, tokens, tokens);
    let mut rec = Recorder::new(gpu);
    gpt.record_eval(&mut rec);
    rec.submit().unwrap();
    gpt.read_logits(gpu).unwrap()
}

/// eval on a quantized model is the f32 model of its dequantized weights: the kernels only
/// change where the dequantization happens.
#[test]
fn a_quantized_model_runs_as_its_dequantized_weights() {
    use wgtrain::model::export::{self, Format};
    use wgtrain::model::{Gpt, Precision};
    let Some(gpu) = crate::common::gpu() else { return };
    let dir = tmp("runs");
    let (config, _) = tiny_model(&dir, 2);
    let (b, t) = (2, 11);
    let tokens: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 7 + 3) % 67).collect();
    let logits = |gpt: &Gpt| eval_logits(gpu, gpt, &tokens);
    for q in BLOCKS {
        let out = dir.join(q.name());
        wgtrain::compress::quantize(&dir, Format { qtype: q, embeddings: true }, &out).unwrap();
        let m = export::read_gpt2(&out.join("model.gguf")).unwrap();
        let quantized = Gpt::from_gguf(gpu, &m, b, t, Precision::F32).unwrap();
        let dense = Gpt::new(gpu, config.clone(), b, t, 1).unwrap();
        dense.write_params(gpu, &m.tensors.iter().map(|t| quant::dequantize(&t.bytes, t.qtype)).collect::<Vec<_>>());
        assert_close(&format!("{} logits", q.name()), &logits(&quantized), &logits(&dense), 1e-5, 1e-5);
        let mut dec = quantized.decoder(gpu).unwrap();
        let mut dense_dec = dense.decoder(gpu).unwrap();
        for &tok in &tokens[..5] {
            let (a, b) = (dec.next(gpu, tok).unwrap(), dense_dec.next(gpu, tok).unwrap());
            assert_close(&format!("{} decoding", q.name()), &a, &b, 1e-5, 1e-5);
        }
    }
}

/// QAT's forward is the forward of the fake-quantized weights, and those are the CPU
/// reference's quantize-dequantize bit for bit; the export's blocks are the CPU's blocks.
#[test]
fn qat_forward_is_the_forward_of_the_dequantized_weights() {
    use wgtrain::model::export::is_linear_weight;
    use wgtrain::model::{Gpt, Precision};
    let Some(gpu) = crate::common::gpu() else { return };
    let dir = tmp("qat");
    let (config, values) = tiny_model(&dir, 5);
    let (b, t) = (2, 13);
    let tokens: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 11 + 1) % 67).collect();
    for q in BLOCKS {
        let qat = Gpt::training(gpu, config.clone(), (b, t, 1), Precision::F32, Some(q)).unwrap();
        qat.write_params(gpu, &values);
        let fq: Vec<Vec<f32>> = values
            .iter()
            .zip(config.parameter_specs())
            .map(
                |(v, (name, _))| {
                    if is_linear_weight(&name) {
                        quant::dequantize(&quant::quantize(v, q), q)
                    } else {
                        v.clone()
                    }
                },
            )
            .collect();
        let dense = Gpt::new(gpu, config.clone(), b, t, 1).unwrap();
        dense.write_params(gpu, &fq);
        let logits = |gpt: &Gpt| eval_logits(gpu, gpt, &tokens);
        let (a, d) = (logits(&qat), logits(&dense));
        assert!(a.iter().zip(&d).all(|(x, y)| x.to_bits() == y.to_bits()), "{} logits differ", q.name());
        let copy = qat.arena.fake_quant.as_ref().unwrap();
        let on_gpu = qat.arena.table.unpack(&gpu.read::<f32>(copy, 0, qat.arena.table.len as usize).unwrap());
        let (planned, data) = qat.qat_export(gpu).unwrap();
        for (i, (name, _)) in config.parameter_specs().iter().enumerate().filter(|(_, (n, _))| is_linear_weight(n)) {
            let bad = on_gpu[i].iter().zip(&fq[i]).position(|(x, y)| x.to_bits() != y.to_bits());
            assert!(
                bad.is_none(),
                "{} {name}: the GPU's fake quantization differs from the CPU's at {bad:?}: {} vs {}",
                q.name(),
                on_gpu[i][bad.unwrap_or(0)],
                fq[i][bad.unwrap_or(0)]
            );
            assert_eq!(planned[i].qtype, q);
            assert_eq!(data[i], quant::quantize(&values[i], q), "{} {name}: exported blocks", q.name());
        }
    }
}

/// A QAT run's model.gguf is the model it evaluated: its val loss on the same batches is the
/// run's last val loss within 1e-5.
#[test]
fn a_qat_run_ends_with_the_quantized_model_it_trained() {
    use wgtrain::model::{Gpt, Precision};
    let Some(gpu) = crate::common::gpu() else { return };
    let dir = tmp("qat-run");
    let tokens: Vec<u32> = (0..3000).map(|i| ((i * 7 + i / 13) % 19) as u32).collect();
    wgtrain::data::write_tokens(&dir.join("train.bin"), &tokens).unwrap();
    wgtrain::data::write_tokens(&dir.join("val.bin"), &tokens[..700]).unwrap();
    std::fs::write(dir.join("tiny.toml"), "n_layer = 1\nn_head = 2\nn_embd = 32\nvocab_size = 19\nn_positions = 16\n")
        .unwrap();
    let a = wgtrain::train::TrainArgs {
        qat: Some(QType::Q4_0),
        val_data: Some(dir.join("val.bin")),
        steps: 4,
        eval_every: 4,
        val_batches: 3,
        lr: 1e-2,
        ..crate::train::args(&dir)
    };
    wgtrain::train::train(gpu, &a).unwrap();
    let metrics = std::fs::read_to_string(a.out.join("metrics.jsonl")).unwrap();
    let val = metrics
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["val_loss"].as_f64())
        .expect("a val loss");
    let m = wgtrain::model::export::read_gpt2(&a.out.join("model.gguf")).unwrap();
    assert_eq!(m.tensors.iter().filter(|t| t.qtype == QType::Q4_0).count(), 4);
    let gpt = Gpt::from_gguf(gpu, &m, a.batch_size, a.seq_len, Precision::F32).unwrap();
    let val_tokens = wgtrain::data::read_tokens(&dir.join("val.bin")).unwrap();
    let mut loader = wgtrain::data::Loader::new(val_tokens, a.batch_size, a.seq_len, false, 0).unwrap();
    let loss = wgtrain::train::evaluate(gpu, &gpt, &mut loader, a.val_batches).unwrap() as f64;
    assert!((loss - val).abs() <= 1e-5, "model.gguf's val loss {loss} against the run's {val}");
}
