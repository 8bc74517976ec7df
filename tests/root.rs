//! wgtrain's tests, one binary. GPU tests skip without an adapter, and fail instead when
//! WGTRAIN_REQUIRE_ADAPTER=1 (CI sets it).

mod browser;
mod check;
mod common;
mod compress;
mod coop;
mod data;
mod dist;
mod distill;
mod fuzz;
mod gpt2;
mod half;
mod layers;
mod llama;
mod llama_model;
mod lora;
mod matmul;
mod mixed;
mod optim;
mod prepare;
mod prune;
mod qlora;
mod reliability;
mod runtime;
mod sample;
mod sft;
mod shaders;
mod smollm2;
mod structured;
mod task;
mod train;
mod translate;
mod tune;
