//! Layer kernels of the GPT-2 model against their CPU references at awkward sizes, outputs
//! pre-filled with NaN, accumulated gradients starting from random values.

use wgtrain::gpu::{Category, GpuBuffer, Recorder};
use wgtrain::kernels::{layernorm, View};
use wgtrain::reference::{self, Rng};
use wgtrain::Gpu;

use crate::common::{assert_close, gpu};

fn upload(gpu: &Gpu, data: &[f32]) -> GpuBuffer {
    gpu.pool.storage_from(&gpu.queue, Category::Scratch, data).unwrap()
}

fn read(gpu: &Gpu, b: &GpuBuffer, len: usize) -> Vec<f32> {
    gpu.read(b, 0, len).unwrap()
}

const SIZES: &[(usize, usize)] = &[(1, 1), (3, 5), (17, 33), (127, 255), (37, 768)];

/// Tolerance: outputs are O(1) (inputs and parameters uniform in [-1, 1)); the forward and the
/// input gradient differ from the f64 reference by a few f32 roundings per term of a C-long
/// sum: |d| <= 2e-5 + 1e-5·|want|. Parameter gradients are N-long sums: |d| <= 1e-6·N + 1e-5·|want|.
#[test]
fn layernorm_matches_reference() {
    let Some(gpu) = gpu() else { return };
    for (i, &(n, c)) in SIZES.iter().enumerate() {
        let mut r = Rng::new(100 + i as u64);
        let (x, w, b, dout) = (r.vec(n * c), r.vec(c), r.vec(c), r.vec(n * c));
        let (dinp0, dw0, db0) = (r.vec(n * c), r.vec(c), r.vec(c));
        let (gx, gw, gb, gdout) = (upload(gpu, &x), upload(gpu, &w), upload(gpu, &b), upload(gpu, &dout));
        let out = upload(gpu, &vec![f32::NAN; n * c]);
        let stats = upload(gpu, &vec![f32::NAN; 2 * n]);
        let (gdinp, gdw, gdb) = (upload(gpu, &dinp0), upload(gpu, &dw0), upload(gpu, &db0));
        let (n32, c32) = (n as u32, c as u32);
        let fwd = layernorm::forward(
            gpu,
            (&out).into(),
            (&stats).into(),
            (&gx).into(),
            (&gw).into(),
            (&gb).into(),
            n32,
            c32,
        )
        .unwrap();
        let bwd = layernorm::backward(
            gpu,
            View::from(&gdinp),
            View::from(&gdw),
            View::from(&gdb),
            View::from(&gdout),
            View::from(&gx),
            View::from(&stats),
            View::from(&gw),
            n32,
            c32,
        )
        .unwrap();
        let mut rec = Recorder::new(gpu);
        rec.dispatch(&fwd);
        rec.run(&bwd);
        rec.submit().unwrap();

        let mut want = vec![0.0; n * c];
        let st = reference::layernorm::forward(&mut want, &x, &w, &b, n, c);
        let (mut dinp, mut dw, mut db) = (dinp0.clone(), dw0.clone(), db0.clone());
        reference::layernorm::backward(&mut dinp, &mut dw, &mut db, &dout, &x, &w, &st, n, c);
        let tag = format!("layernorm {n}x{c}");
        assert_close(&format!("{tag} out"), &read(gpu, &out, n * c), &want, 2e-5, 1e-5);
        let flat: Vec<f32> = st.iter().flat_map(|&(m, s)| [m, s]).collect();
        assert_close(
            &format!("{tag} mean/rstd"),
            &read(gpu, &stats, 2 * n),
            &flat,
            1e-6,
            1e-5,
        );
        assert_close(&format!("{tag} dinp"), &read(gpu, &gdinp, n * c), &dinp, 2e-5, 1e-5);
        assert_close(
            &format!("{tag} dweight"),
            &read(gpu, &gdw, c),
            &dw,
            1e-6 * n as f32,
            1e-5,
        );
        assert_close(&format!("{tag} dbias"), &read(gpu, &gdb, c), &db, 1e-6 * n as f32, 1e-5);
    }
}
