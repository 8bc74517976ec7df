//! Quantization and GGUF: the block formats against the `gguf` package's reference code
//! (fixtures from scripts/make_quant_fixture.py), GGUF files both ways, and the dequantizing
//! kernels against the CPU reference.

use wgtrain::compress::gguf::{Gguf, Value};
use wgtrain::compress::quant::{self, QType};
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
                if act == Dtype::F16 && !gpu.device.features().contains(wgpu::Features::SHADER_F16) {
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
                let got = run_qmatmul(gpu, q, act, &inp, &words, &bias, (m, n, k));
                let tol = if act == Dtype::F16 { 2e-3 } else { 1e-5 };
                assert_close(&format!("{} {act:?}", q.name()), &got, &want, tol, tol);
            }
        }
    }
}

fn run_qmatmul(
    gpu: &wgtrain::Gpu,
    q: QType,
    act: Dtype,
    inp: &[f32],
    words: &[u32],
    bias: &[f32],
    (m, n, k): (usize, usize, usize),
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
    let ops = qk::forward(gpu, View::typed(&out, act), View::typed(&a, act), wv, Some(View::from(&bbuf)), m as u32)
        .unwrap();
    let mut rec = Recorder::new(gpu);
    rec.run(&ops);
    rec.submit().unwrap();
    match act {
        Dtype::F32 => gpu.read(&out, 0, m * n).unwrap(),
        Dtype::F16 => gpu.read_f16(&out, 0, m * n).unwrap(),
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
            let op = qk::embed(gpu, View::from(&out), &tok, wv, View::from(&pbuf), rows as u32, t as u32, t as u32)
                .unwrap();
            let mut rec = Recorder::new(gpu);
            rec.dispatch(&op);
            rec.submit().unwrap();
            let got: Vec<f32> = gpu.read(&out, 0, rows * c).unwrap();
            assert_close(&format!("embed {}", q.name()), &got, &want, 0.0, 0.0);
        }
    }
}
