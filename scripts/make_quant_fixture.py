#!/usr/bin/env python3
"""Writes the quantization and GGUF fixtures from the `gguf` package's reference code:

- tests/fixtures/quant_golden.json: blocks of awkward values (ties at .5, zero and constant
  blocks, a negative largest value, tiny and huge magnitudes) as f32 bit patterns, with what
  gguf.quants.quantize makes of them in Q8_0, Q4_0 and Q4_1 (hex bytes) and what
  gguf.quants.dequantize gives back (f32 bit patterns).
- tests/fixtures/gguf_py.gguf: a small GGUF written by gguf.GGUFWriter (every metadata type,
  tensors in F32, F16, Q8_0, Q4_0, Q4_1), and gguf_py.json: what its reader sees.
- With --check FILE.gguf: reads a GGUF written by wgtrain with gguf.GGUFReader and prints
  its metadata and tensors as JSON (tests/fixtures/gguf_wgtrain.json records one).

Run from the repo root: python3 scripts/make_quant_fixture.py (needs `pip install gguf numpy`).
"""
import json
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

FIX = "tests/fixtures"
TYPES = {"q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "q4_1": Q.Q4_1}


def blocks():
    rng = np.random.default_rng(7)
    rows = [
        rng.standard_normal(32) * 0.02,
        rng.standard_normal(32) * 3.0,
        np.zeros(32),
        np.full(32, 0.75),
        np.full(32, -1.5),
        # Ties: x/d lands on .5 for Q8_0 (d = 127/127 = 1).
        np.concatenate([[127.0, -127.0], np.arange(30) + 0.5]),
        # The largest magnitude negative (Q4_0's signed max), then positive with a tie.
        np.concatenate([[-8.0], np.linspace(-7.5, 7.5, 31)]),
        np.concatenate([[8.0], -np.linspace(-7.5, 7.5, 31)]),
        np.linspace(-1e-8, 1e-8, 32),
        np.linspace(-6e4, 6e4, 32),
        rng.uniform(-1, 1, 32) * np.array([1e-3] * 16 + [10.0] * 16),
    ]
    return np.concatenate(rows).astype(np.float32)


def golden():
    x = blocks()
    out = {"input": x.view(np.uint32).tolist()}
    for name, t in TYPES.items():
        q = gguf.quants.quantize(x.reshape(-1, 32), t)
        d = gguf.quants.dequantize(q, t).astype(np.float32).reshape(-1)
        out[name] = {"bytes": q.tobytes().hex(), "dequantized": d.view(np.uint32).tolist()}
    with open(f"{FIX}/quant_golden.json", "w") as f:
        json.dump(out, f)


def py_gguf():
    rng = np.random.default_rng(3)
    w = gguf.GGUFWriter(f"{FIX}/gguf_py.gguf", "gpt2")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 0.15625)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    w.add_array("t.arr", ["a", "bc", ""])
    w.add_uint64("t.u64", 1 << 40)
    w.add_int64("t.i64", -(1 << 40))
    w.add_float64("t.f64", 2.5e-300)
    expect = []
    for name, t, shape in [("a.f32", Q.F32, (3, 5)), ("b.f16", Q.F16, (7,)), ("c.q8_0", Q.Q8_0, (3, 64)),
                           ("d.q4_0", Q.Q4_0, (2, 32)), ("e.q4_1", Q.Q4_1, (5, 32))]:
        x = rng.standard_normal(shape).astype(np.float32)
        if t == Q.F32:
            data = x
        elif t == Q.F16:
            data = x.astype(np.float16)
        else:
            data = gguf.quants.quantize(x, t)
        w.add_tensor(name, data, raw_dtype=t)
        deq = gguf.quants.dequantize(data.view(np.uint8) if t not in (Q.F32, Q.F16) else data, t)
        expect.append({"name": name, "type": int(t), "dims": list(reversed(shape)),
                       "values": np.asarray(deq, dtype=np.float32).reshape(-1).view(np.uint32).tolist()})
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(f"{FIX}/gguf_py.json", "w") as f:
        json.dump({"tensors": expect}, f)


def check(path):
    r = gguf.GGUFReader(path)
    meta = {}
    for k, field in r.fields.items():
        if k.startswith("GGUF."):
            continue
        v = field.contents()
        if isinstance(v, list) and len(v) > 8:
            v = {"len": len(v), "first": v[:4], "last": v[-1]}
        meta[k] = v
    tensors = [{"name": t.name, "dims": [int(d) for d in t.shape], "type": t.tensor_type.name,
                "bytes": int(t.n_bytes)} for t in r.tensors]
    print(json.dumps({"metadata": meta, "tensors": tensors}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check(sys.argv[2])
    else:
        golden()
        py_gguf()
