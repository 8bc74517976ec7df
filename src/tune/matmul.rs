//! The matmuls as the runtime calls them: `kernels::matmul` with each product's variant taken
//! from the run's tuning (`tune::choose`) unless one is pinned. Everything else of the kernels'
//! module (Dims, Product, Variant, …) is re-exported as it is.

pub use crate::kernels::matmul::*;

use crate::gpu::{Gpu, GpuError};
use crate::kernels::matmul::Matmul as Pinned;
use crate::kernels::Dispatches;
use crate::kernels::{half_mask, View};

/// Builds matmul dispatches on one GPU, each product in its tuned variant.
pub struct Matmul<'g> {
    gpu: &'g Gpu,
    /// One variant for every product (tests and benches pin them); None asks the GPU's tuning
    /// table per product and shape.
    pub variant: Option<Variant>,
    /// Largest window bound at once, in bytes: the adapter's limit unless lowered (tests lower
    /// it to exercise the windowing at small sizes).
    pub binding_limit: u64,
}

impl<'g> Matmul<'g> {
    pub fn new(gpu: &'g Gpu) -> Self {
        Self { gpu, variant: None, binding_limit: gpu.max_binding() }
    }

    /// The GPU it builds for.
    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// The same builder with `variant` pinned.
    pub fn with_variant(gpu: &'g Gpu, variant: Variant) -> Self {
        Self { variant: Some(variant), ..Self::new(gpu) }
    }

    /// The variant that runs `product` at `d` on f32 operands: the pinned one, else the
    /// tuning table's.
    pub fn variant_for(&self, product: Product, d: Dims) -> Result<Variant, GpuError> {
        self.variant_typed(product, d, 0)
    }

    /// `variant_for` with the operands (out, a, b) of mask `half` in f16, which the tuner
    /// times as their own class.
    /// A forward-only variant, whether pinned here or named by the table (a run's recorded
    /// choices, the cache), runs a backward product as the baseline.
    pub fn variant_typed(&self, product: Product, d: Dims, half: u8) -> Result<Variant, GpuError> {
        let v = match self.variant {
            Some(v) => v,
            None => super::choose(self.gpu, product, d, self.binding_limit, half)?,
        };
        Ok(v.for_product(product))
    }

    /// The kernels' builder for `product` at `d` over `views` (out, a, b).
    fn at(&self, product: Product, d: Dims, views: [View; 3]) -> Result<Pinned<'g>, GpuError> {
        let v = self.variant_typed(product, d, half_mask(&views.map(Some)))?;
        Ok(self.pinned(v))
    }

    fn pinned(&self, v: Variant) -> Pinned<'g> {
        let mut mm = Pinned::with_variant(self.gpu, v);
        mm.binding_limit = self.binding_limit;
        mm
    }

    /// out (Z, M, N) = inp (Z, M, K) · W (N, K)ᵀ + bias (N).
    pub fn forward(&self, out: View, inp: View, w: View, bias: Option<View>, d: Dims) -> Dispatches {
        self.at(Product::Forward, d, [out, inp, w])?.forward(out, inp, w, bias, d)
    }

    /// out (Z, M, N) += inp (Z, M, K) · W (N, K)ᵀ: a second product into one output (LoRA).
    pub fn forward_add(&self, out: View, inp: View, w: View, d: Dims) -> Dispatches {
        self.at(Product::Forward, d, [out, inp, w])?.forward_add(out, inp, w, d)
    }

    /// dinp (Z, M, K) = dout (Z, M, N) · W (N, K).
    pub fn backward_input(&self, dinp: View, dout: View, w: View, d: Dims) -> Dispatches {
        self.at(Product::BackwardInput, d, [dinp, dout, w])?.backward_input(dinp, dout, w, d, false)
    }

    /// dinp (Z, M, K) += dout (Z, M, N) · W (N, K).
    pub fn backward_input_add(&self, dinp: View, dout: View, w: View, d: Dims) -> Dispatches {
        self.at(Product::BackwardInput, d, [dinp, dout, w])?.backward_input(dinp, dout, w, d, true)
    }

    /// dW (N, K) += dout (Z, M, N)ᵀ · inp (Z, M, K); per batch entry unless the weight is shared.
    pub fn backward_weight(&self, dw: View, dout: View, inp: View, d: Dims) -> Dispatches {
        self.at(Product::BackwardWeight, d, [dw, dout, inp])?.backward_weight(dw, dout, inp, d)
    }

    /// A linear layer's whole backward: dinp = dout·W, dW += doutᵀ·inp, and dbias += the column
    /// sums of dout when the layer has a bias.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        dinp: View,
        dw: View,
        dbias: Option<View>,
        dout: View,
        inp: View,
        w: View,
        d: Dims,
    ) -> Dispatches {
        self.backward_into(dinp, dw, dbias, [dout, inp, w], d, false)
    }

    /// `backward` with dinp += dout·W: the second and later layers that read one input.
    pub fn backward_add(&self, dinp: View, dw: View, dbias: Option<View>, io: [View; 3], d: Dims) -> Dispatches {
        self.backward_into(dinp, dw, dbias, io, d, true)
    }

    fn backward_into(
        &self,
        dinp: View,
        dw: View,
        dbias: Option<View>,
        [dout, inp, w]: [View; 3],
        d: Dims,
        add: bool,
    ) -> Dispatches {
        let input = self.at(Product::BackwardInput, d, [dinp, dout, w])?;
        let mut ops = input.backward_input(dinp, dout, w, d, add)?;
        ops.extend(self.backward_weight(dw, dout, inp, d)?);
        if let Some(db) = dbias {
            ops.extend(input.backward_bias(db, dout, d)?);
        }
        Ok(ops)
    }

    /// dbias (N) += column sums of dout (Z·M, N).
    pub fn backward_bias(&self, dbias: View, dout: View, d: Dims) -> Dispatches {
        self.pinned(Variant::BASELINE).backward_bias(dbias, dout, d)
    }

    /// The baseline: out = inp · Wᵀ + bias with one thread per output and no blocking.
    pub fn naive(&self, out: View, inp: View, w: View, bias: Option<View>, d: Dims) -> Dispatches {
        self.pinned(Variant::BASELINE).naive(out, inp, w, bias, d)
    }
}
