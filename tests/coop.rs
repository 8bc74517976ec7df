//! The cooperative-matrix kernels (shaders/matmul_coop.wgsl, attention_coop.wgsl) on both
//! fragment shapes, 8×8×8 and 16×16×16, against the CPU references at awkward sizes, in both
//! shader builds, outputs pre-filled with NaN; and a training run on them against f32.
//!
//! They need an adapter with cooperative matrices. In CI that is Mesa 26's lavapipe:
//! `bash scripts/lavapipe-coop.sh cargo test --release -- coop::` runs them there. Elsewhere
//! they pass without running anything, unless WGTRAIN_REQUIRE_COOP=1 (CI sets it for that run),
//! which makes them fail instead.
//!
//! lavapipe 26 lists only 8×8×8, yet runs the 16×16×16 kernels: these tests force that shape
//! on it (the device has the feature; the tuner and `wgtrain check` offer listed shapes only,
//! which `auto_offers_only_listed_shapes` checks).

use wgtrain::kernels::attention::{self, AttnShape, AttnVariant};
use wgtrain::kernels::View;
use wgtrain::model::PrecisionChoice;
use wgtrain::reference::{self, Rng};
use wgtrain::train::train;
use wgtrain::tune::matmul::{Dims, Matmul, Variant};
use wgtrain::Gpu;

use crate::common::{assert_close, builds};
use crate::half::{check_matmul, h, nan16, read16, run, rvec, up16, up32};

fn require_coop() -> bool {
    std::env::var("WGTRAIN_REQUIRE_COOP").is_ok_and(|v| v == "1")
}

/// Both builds of the adapter, where it has cooperative matrices; none (or a failure, with
/// WGTRAIN_REQUIRE_COOP=1) elsewhere.
fn coop_builds() -> Vec<&'static Gpu> {
    let all = builds();
    let names: Vec<String> = all.iter().map(|g| g.name()).collect();
    let coop: Vec<_> = all.into_iter().filter(|g| g.coop_matrix).collect();
    if coop.is_empty() {
        assert!(
            !require_coop(),
            "WGTRAIN_REQUIRE_COOP=1 and no adapter with cooperative matrices ({}): run under scripts/lavapipe-coop.sh",
            names.join(", ")
        );
        eprintln!("no cooperative matrices on {}: coop tests not run", names.join(", "));
    }
    coop
}

/// f16 operands, f32 accumulation, bounds of tests/half.rs: one past each shape's tile
/// (2·frag plus 1) and its inner step (frag plus 1), 1, and primes; then with a 4 KiB binding
/// limit, which splits the operands along M into windows at unaligned offsets. W stays within
/// one window (1008 elements): split along N, dinp would sum its windows' partial products in
/// f16, one more rounding each, which these bounds do not allow for (any variant; not the coop
/// kernels' doing).
#[test]
fn coop_matmul_matches_reference() {
    for gpu in coop_builds() {
        for &v in Variant::COOP {
            let Variant::Coop { frag } = v else { unreachable!() };
            let mut mm = Matmul::with_variant(gpu, v);
            let past = (2 * frag + 1, 2 * frag + 1, frag + 1);
            for (i, &(m, n, k)) in [(1, 1, 1), past, (17, 33, 65), (37, 29, 70)].iter().enumerate() {
                check_matmul(gpu, &mm, Dims::linear(m, n, k), 1700 + i as u64);
            }
            mm.binding_limit = 4096;
            check_matmul(gpu, &mm, Dims::linear(127, 13, 63), 1710);
        }
    }
}

/// f16 q, k, v, dout; f32 scores, L and D, f32 accumulators. Bounds of tests/half.rs's f16
/// attention (out 1e-5 + 1e-3·|want|, dqkv 1e-3 + 4e-3·|want|), but for one more rounding in
/// the forward: P goes to f16 for P·V (as flash attention does in f16), each weight off by at
/// most 2^-11 of itself, so out = Σ P·v / l by at most 2^-11·max|v| = 4.9e-4 (|v| < 1): out's
/// atol is 5e-4. The backward's f16 P and dS stay within dqkv's bounds. GPT-2's fused qkv at T = 1, one past a block and
/// primes, and grouped-query planes (3 query heads per KV head), each head size a multiple of
/// the fragment.
#[test]
fn coop_attention_matches_reference() {
    for gpu in coop_builds() {
        for &v in AttnVariant::COOP {
            let AttnVariant::Coop { frag } = v else { unreachable!() };
            let f = frag;
            let fused = |b, t, c, nh| AttnShape::fused(b, t, c, nh).unwrap();
            let shapes = [
                fused(1, 1, 2 * f, 2),
                fused(2, f + 1, 3 * f, 3),
                fused(1, 37, 64, 1),
                fused(1, 65, 4 * f, 2),
                AttnShape::planes(2, 19, 6, 2, f).unwrap(),
            ];
            for (i, s) in shapes.iter().enumerate() {
                check_attention(gpu, v, s, 1800 + i as u64);
            }
        }
    }
}

fn check_attention(gpu: &Gpu, v: AttnVariant, s: &AttnShape, seed: u64) {
    let (b, t, nh, hs) = (s.b as usize, s.t as usize, s.nh as usize, s.hs as usize);
    let (len, n, c) = (s.qkv.len as usize, b * t, nh * hs);
    let mut r = Rng::new(seed);
    let (qkv, dout) = (rvec(&mut r, len), rvec(&mut r, n * c));
    let (gq, gd) = (up16(gpu, &qkv), up16(gpu, &dout));
    let (out, dqkv) = (nan16(gpu, n * c), nan16(gpu, len));
    let (lse, dd) = (up32(gpu, &vec![f32::NAN; b * nh * t]), up32(gpu, &vec![f32::NAN; b * nh * t]));
    let mut ops = vec![attention::forward_shaped(gpu, v, h(&out), View::from(&lse), h(&gq), s).unwrap()];
    let io = [h(&gd), h(&out), h(&gq), View::from(&lse)];
    ops.extend(attention::backward_shaped(gpu, v, h(&dqkv), View::from(&dd), io, s).unwrap());
    run(gpu, &ops);
    let mut want = vec![0.0; n * c];
    reference::attention::forward_in(&mut want, &qkv, s);
    let mut want_d = vec![0.0; len];
    reference::attention::backward_in(&mut want_d, &dout, &qkv, s);
    let build = if gpu.checked_shaders { "checked" } else { "trusted" };
    let tag = format!("f16 attention {v} {build} B{b} T{t} NH{nh} NKV{} HS{hs}", s.nkv);
    assert_close(&format!("{tag} out"), &read16(gpu, &out, n * c), &want, 5e-4, 1e-3);
    let got = read16(gpu, &dqkv, len);
    // Planes leave gaps that nothing writes (NaN in got, 0 in want): compare q, k and v only.
    let kvd = s.nkv as usize * hs;
    let (kb, vb) = (s.qkv.k_base as usize, s.qkv.v_base as usize);
    let parts: Vec<(&str, usize, usize)> = if s.qkv.q_stride as usize == 3 * c {
        vec![("dqkv", 0, len)]
    } else {
        vec![("dq", 0, n * c), ("dk", kb, n * kvd), ("dv", vb, n * kvd)]
    };
    for (name, at, l) in parts {
        assert_close(&format!("{tag} {name}"), &got[at..at + l], &want_d[at..at + l], 1e-3, 4e-3);
    }
}

/// The tuner and `wgtrain check` offer a coop variant only for fragment shapes the adapter
/// lists, though the device builds the others (which the tests above force).
#[test]
fn auto_offers_only_listed_shapes() {
    for gpu in coop_builds() {
        let listed = wgtrain::gpu::coop_fragments(&gpu.adapter);
        assert_eq!(gpu.coop_fragments, listed);
        let offered: Vec<Variant> = wgtrain::tune::coop_offered(gpu);
        assert_eq!(offered, listed.iter().map(|&frag| Variant::Coop { frag }).collect::<Vec<_>>());
        let attn = wgtrain::tune::coop_attention_offered(gpu, 64);
        assert_eq!(attn, listed.iter().map(|&frag| AttnVariant::Coop { frag }).collect::<Vec<_>>());
        // Head size 8 only fits 8×8×8 fragments.
        assert!(!wgtrain::tune::coop_attention_offered(gpu, 8).contains(&AttnVariant::Coop { frag: 16 }));
    }
}

/// tests/mixed.rs's pinned 30-step run in f16 with every f16 matmul and the attention on the
/// listed cooperative-matrix shape, against the same run in f32, within that test's bounds:
/// the loss within 2% at every step, the final validation loss within 1%.
#[test]
fn f16_training_on_coop_kernels_tracks_f32() {
    let Some(&shared) = coop_builds().first() else { return };
    let frag = *shared.coop_fragments.first().expect("the adapter lists a coop shape");
    // A device of its own: pinning variants on the shared one would change other tests' runs.
    let gpu = Gpu::from_env().unwrap();
    {
        let mut t = gpu.tuning.lock().unwrap();
        t.tune = false;
        t.fallback_f16 = Some(Variant::Coop { frag }.to_string());
        t.attention_fallback = Some(AttnVariant::Coop { frag }.to_string());
    }
    let dir = crate::mixed::setup("coop");
    assert_eq!(train(&gpu, &crate::mixed::pinned(&dir, PrecisionChoice::F32, "f32")).unwrap(), None);
    assert_eq!(train(&gpu, &crate::mixed::pinned(&dir, PrecisionChoice::F16, "f16")).unwrap(), None);
    let choices = gpu.tuning.lock().unwrap().choices();
    let coop: Vec<_> = choices.iter().filter(|(_, v)| v.starts_with("coop")).collect();
    assert!(coop.iter().any(|(k, _)| k.starts_with("attention")), "the attention ran on coop: {choices:?}");
    assert!(coop.iter().any(|(k, _)| k.starts_with("forward")), "the matmuls ran on coop: {choices:?}");
    let (a, b) =
        (crate::train::losses(&dir.join("f32/metrics.jsonl")), crate::train::losses(&dir.join("f16/metrics.jsonl")));
    assert_eq!((a.len(), b.len()), (30, 30));
    for (x, y) in a.iter().zip(&b) {
        let rel = ((y.1 - x.1) / x.1).abs();
        assert!(rel <= 0.02, "step {}: coop f16 loss {} vs f32 {} ({:.2}%)", x.0, y.1, x.1, 100.0 * rel);
    }
    let (va, vb) = (
        crate::mixed::val_loss(&dir.join("f32/metrics.jsonl")),
        crate::mixed::val_loss(&dir.join("f16/metrics.jsonl")),
    );
    let worst = a.iter().zip(&b).map(|(x, y)| ((y.1 - x.1) / x.1).abs()).fold(0.0, f32::max);
    eprintln!("coop f16 vs f32: worst step loss {:.3}% apart, final val loss {vb} vs {va}", 100.0 * worst);
    assert!(((vb - va) / va).abs() <= 0.01, "final val loss coop f16 {vb} vs f32 {va}");
    std::fs::remove_dir_all(&dir).ok();
}
