//! GGUF v3, the file format of llama.cpp: a header, typed metadata, tensor descriptions, and
//! the tensor data aligned to `general.alignment` (32 unless given).
//!
//!   u32 magic "GGUF", u32 version, u64 tensor count, u64 metadata count
//!   metadata: string key, u32 type, value          (strings are u64 length + UTF-8 bytes)
//!   tensors:  string name, u32 n_dims, u64 × n_dims (ne0 first: the row length), u32 ggml
//!             type, u64 offset from the data start
//!
//! The reader checks every length and offset against the file before it uses it, so a
//! malformed file is an error, never a panic or a huge allocation.

use std::path::Path;

use super::quant::QType;

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const VERSION: u32 = 3;
const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::Str(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    /// An unsigned integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's description. `dims` are ggml's `ne`: dims[0] is the row length.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub qtype: QType,
    /// From the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn bytes(&self) -> u64 {
        self.numel() / self.qtype.block_len() as u64 * self.qtype.block_bytes() as u64
    }
}

/// A GGUF file read into memory.
pub struct Gguf {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    data: Vec<u8>,
    /// Where the data section starts in `data`.
    data_start: usize,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf").field("version", &self.version).field("tensors", &self.tensors).finish_non_exhaustive()
    }
}

/// Reads little-endian values from a byte slice, failing past its end.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], String> {
        let end = (self.at as u64).checked_add(n).filter(|&e| e <= self.bytes.len() as u64);
        let end = end.ok_or_else(|| format!("truncated at byte {} reading {what}", self.at))? as usize;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.u64(what)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }

    /// Bytes left: a bound on how many items a count may claim.
    fn left(&self) -> u64 {
        (self.bytes.len() - self.at) as u64
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N as u64, "a metadata value")?.try_into().unwrap())
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<Value, String> {
        Ok(match ty {
            0 => Value::U8(self.fixed::<1>()?[0]),
            1 => Value::I8(self.fixed::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.fixed()?)),
            3 => Value::I16(i16::from_le_bytes(self.fixed()?)),
            4 => Value::U32(u32::from_le_bytes(self.fixed()?)),
            5 => Value::I32(i32::from_le_bytes(self.fixed()?)),
            6 => Value::F32(f32::from_le_bytes(self.fixed()?)),
            7 => Value::Bool(self.fixed::<1>()?[0] != 0),
            8 => Value::Str(self.string("a string value")?),
            9 => {
                if depth > 0 {
                    return Err("arrays of arrays are not read".into());
                }
                let ety = self.u32("an array type")?;
                let len = self.u64("an array length")?;
                // Every element takes at least one byte.
                if len > self.left() {
                    return Err(format!("an array of {len} elements is longer than the file"));
                }
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.value(ety, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(self.fixed()?)),
            11 => Value::I64(i64::from_le_bytes(self.fixed()?)),
            12 => Value::F64(f64::from_le_bytes(self.fixed()?)),
            other => return Err(format!("unknown metadata type {other}")),
        })
    }
}

impl Gguf {
    pub fn read(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a whole file. Tensor types other than F32, F16, Q8_0, Q4_0 and Q4_1 are refused.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, String> {
        let mut c = Cursor { bytes: &bytes, at: 0 };
        if c.take(4, "the magic")? != MAGIC {
            return Err("not a GGUF file (no GGUF magic)".into());
        }
        let version = c.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(format!("GGUF version {version}; versions 2 and 3 are read"));
        }
        let (n_tensors, n_kv) = (c.u64("the tensor count")?, c.u64("the metadata count")?);
        if n_tensors > c.left() || n_kv > c.left() {
            return Err(format!("{n_tensors} tensors and {n_kv} metadata entries do not fit the file"));
        }
        let mut metadata = Vec::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let key = c.string("a metadata key")?;
            let ty = c.u32("a metadata type")?;
            let v = c.value(ty, 0).map_err(|e| format!("{key}: {e}"))?;
            metadata.push((key, v));
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            tensors.push(Self::tensor_info(&mut c)?);
        }
        let align = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, v)) => {
                v.as_u64().filter(|a| a.is_power_of_two()).ok_or("general.alignment is not a power of two")?
            }
            None => DEFAULT_ALIGNMENT,
        };
        let data_start = (c.at as u64).next_multiple_of(align).min(bytes.len() as u64) as usize;
        let data_len = (bytes.len() - data_start) as u64;
        for t in &tensors {
            if t.offset % align != 0 || t.offset.checked_add(t.bytes()).is_none_or(|end| end > data_len) {
                return Err(format!(
                    "tensor {}: {} bytes at offset {} lie outside the data",
                    t.name,
                    t.bytes(),
                    t.offset
                ));
            }
        }
        Ok(Self { version, metadata, tensors, data: bytes, data_start })
    }

    fn tensor_info(c: &mut Cursor) -> Result<TensorInfo, String> {
        let name = c.string("a tensor name")?;
        let n_dims = c.u32("a tensor's dimension count")?;
        if !(1..=4).contains(&n_dims) {
            return Err(format!("tensor {name}: {n_dims} dimensions (1 to 4 are read)"));
        }
        let dims = (0..n_dims).map(|_| c.u64("a tensor dimension")).collect::<Result<Vec<_>, _>>()?;
        let id = c.u32("a tensor type")?;
        let qtype = QType::from_ggml(id)
            .ok_or_else(|| format!("tensor {name}: ggml type {id}; F32, F16, Q8_0, Q4_0 and Q4_1 are read"))?;
        let offset = c.u64("a tensor offset")?;
        let numel = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).filter(|&n| n > 0 && n < 1 << 40);
        let numel = numel.ok_or_else(|| format!("tensor {name}: dimensions {dims:?} are empty or too large"))?;
        if dims[0] % qtype.block_len() as u64 != 0 || numel % qtype.block_len() as u64 != 0 {
            return Err(format!("tensor {name}: rows of {} are not whole {} blocks", dims[0], qtype.name()));
        }
        Ok(TensorInfo { name, dims, qtype, offset })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's bytes, in its ggml layout.
    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        &self.data[self.data_start + t.offset as usize..][..t.bytes() as usize]
    }
}

/// Builds a GGUF file: metadata and tensors in the order added.
#[derive(Default)]
pub struct Writer {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(TensorInfo, Vec<u8>)>,
}

impl Writer {
    pub fn meta(&mut self, key: &str, v: Value) {
        self.metadata.push((key.to_string(), v));
    }

    /// Adds a tensor of ggml dims `dims` whose bytes are already in `qtype`'s layout.
    pub fn tensor(&mut self, name: &str, dims: Vec<u64>, qtype: QType, bytes: Vec<u8>) {
        let info = TensorInfo { name: name.to_string(), dims, qtype, offset: 0 };
        assert_eq!(info.bytes(), bytes.len() as u64, "tensor {name}: bytes match the shape");
        self.tensors.push((info, bytes));
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(MAGIC);
        out.extend(VERSION.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            out.extend(v.type_id().to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        for (t, _) in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            t.dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(t.qtype.ggml_id().to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset = (offset + t.bytes()).next_multiple_of(DEFAULT_ALIGNMENT);
        }
        for (_, data) in &self.tensors {
            out.resize((out.len() as u64).next_multiple_of(DEFAULT_ALIGNMENT) as usize, 0);
            out.extend(data);
        }
        out
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::Str(s) => put_str(out, s),
        Value::Array(items) => {
            let ety = items.first().map_or(4, Value::type_id);
            assert!(items.iter().all(|i| i.type_id() == ety), "one element type per array");
            out.extend(ety.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            items.iter().for_each(|i| put_value(out, i));
        }
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
    }
}
