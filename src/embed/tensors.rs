//! The named tensors of one checkpoint, read one at a time.
//!
//! Safetensors files are opened once and each tensor is read with a positional read
//! into a buffer of its own (the avx512 backend then packs it and drops it), so loading
//! never holds the whole model twice, neither as a mapping nor as a staging area. The
//! open handles keep the files readable even if the Trainer's rotation deletes the
//! checkpoint mid-load.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{LayerNorm, Linear};
use serde::Deserialize;

use super::EmbedError;
use crate::checkpoint::{AdapterFiles, CheckpointError, EncoderSpec, WeightFiles};

/// Named tensors with errors that say which file and tensor is missing or wrong.
pub struct NamedTensors {
    entries: HashMap<String, Entry>,
    source: String,
    device: Device,
}

enum Entry {
    Loaded(Tensor),
    InFile(FileTensor),
}

struct FileTensor {
    file: std::sync::Arc<File>,
    path: PathBuf,
    dtype: StoredType,
    shape: Vec<usize>,
    /// Absolute byte offset of the data in the file.
    offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoredType {
    F32,
    F16,
    BF16,
    /// Present in the file but never read as a weight (e.g. BERT's `position_ids`).
    Other,
}

impl StoredType {
    fn parse(name: &str) -> Self {
        match name {
            "F32" => StoredType::F32,
            "F16" => StoredType::F16,
            "BF16" => StoredType::BF16,
            _ => StoredType::Other,
        }
    }

    fn size(name: &str) -> Option<usize> {
        Some(match name {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
            _ => return None,
        })
    }
}

#[derive(Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

impl NamedTensors {
    /// Tensors already in memory: the model being trained, or a pickle candle has read.
    pub fn new(tensors: HashMap<String, Tensor>, source: String, device: &Device) -> Self {
        Self {
            entries: tensors
                .into_iter()
                .map(|(name, tensor)| (name, Entry::Loaded(tensor)))
                .collect(),
            source,
            device: device.clone(),
        }
    }

    /// Opens a checkpoint's weight files and reads their headers; no tensor data yet.
    pub fn open(weights: &WeightFiles, device: &Device) -> Result<Self, EmbedError> {
        let source = match weights {
            WeightFiles::ShardedSafetensors { index, .. } => index.display().to_string(),
            WeightFiles::Safetensors(path) | WeightFiles::Pickle(path) => {
                path.display().to_string()
            }
            WeightFiles::Adapter(adapter) => adapter.tensors.display().to_string(),
        };
        let mut entries = HashMap::new();
        match weights {
            WeightFiles::Safetensors(path) => read_header(path, &mut entries)?,
            // The adapter's own tensors; `embed::lora` merges them into the base.
            WeightFiles::Adapter(adapter) if !is_pickle(&adapter.tensors) => {
                read_header(&adapter.tensors, &mut entries)?
            }
            WeightFiles::ShardedSafetensors { shards, .. } => {
                for shard in shards {
                    read_header(shard, &mut entries)?;
                }
            }
            WeightFiles::Pickle(path)
            | WeightFiles::Adapter(AdapterFiles { tensors: path, .. }) => {
                if !path.exists() {
                    return Err(vanished(path));
                }
                // candle's reader interprets pickle opcodes as data: no class is imported, no code runs.
                let tensors =
                    candle_core::pickle::read_all(path).map_err(|e| EmbedError::Weights {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })?;
                entries.extend(
                    tensors
                        .into_iter()
                        .map(|(name, tensor)| (name, Entry::Loaded(tensor))),
                );
            }
        }
        Ok(Self {
            entries,
            source,
            device: device.clone(),
        })
    }

    /// Every tensor, as f32 on the model's device (a base model kept for its adapters).
    pub fn into_tensors(self) -> Result<HashMap<String, Tensor>, EmbedError> {
        self.all_with_prefix("")
    }

    /// The backbone's prefix in these weights: `"bert."` for a classifier's, `""` for a
    /// bare encoder's.
    pub fn backbone_prefix(&self, spec: &EncoderSpec) -> String {
        let wrapped = format!("{}.", spec.backbone());
        if self.contains(&format!("{wrapped}{}.weight", spec.word_embeddings())) {
            wrapped
        } else {
            String::new()
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The first dimension of a tensor, if present.
    pub fn rows_of(&self, name: &str) -> Option<usize> {
        match self.entries.get(name)? {
            Entry::Loaded(tensor) => tensor.dims().first().copied(),
            Entry::InFile(tensor) => tensor.shape.first().copied(),
        }
    }

    /// The values of `name` as f32, checked against the shape config.json implies.
    pub fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EmbedError> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| self.error(format!("tensor {name} is missing")))?;
        let dims = match entry {
            Entry::Loaded(tensor) => tensor.dims(),
            Entry::InFile(tensor) => tensor.shape.as_slice(),
        };
        if dims != shape {
            return Err(self.error(format!(
                "tensor {name} has shape {dims:?}, config.json implies {shape:?}"
            )));
        }
        match entry {
            Entry::Loaded(tensor) => tensor
                .flatten_all()
                .and_then(|t| t.to_dtype(DType::F32))
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| self.candle(e)),
            Entry::InFile(tensor) => tensor.read(name),
        }
    }

    /// The rows `which` (ascending) of the 2-D tensor `name`, one after another, checked
    /// against the shape config.json implies. Only those rows are read from a file.
    pub fn rows(
        &self,
        name: &str,
        shape: [usize; 2],
        which: &[u32],
    ) -> Result<Vec<f32>, EmbedError> {
        let [count, width] = shape;
        if let Some(&beyond) = which.iter().find(|&&row| row as usize >= count) {
            return Err(self.error(format!(
                "row {beyond} of tensor {name} asked for; it has {count} rows"
            )));
        }
        match self.entries.get(name) {
            Some(Entry::InFile(tensor)) if tensor.shape == shape => {
                let mut values = Vec::with_capacity(which.len() * width);
                // Runs of consecutive rows are read at once.
                let mut rest = which;
                while let Some(&first) = rest.first() {
                    let run = 1 + rest
                        .windows(2)
                        .take_while(|pair| pair[1] == pair[0] + 1)
                        .count();
                    values.extend(tensor.read_range(name, first as usize * width, run * width)?);
                    rest = &rest[run..];
                }
                Ok(values)
            }
            // In memory (a kept base, merged): gather the rows without copying the table.
            Some(Entry::Loaded(tensor)) if tensor.dims() == shape => {
                let ids = Tensor::from_slice(which, which.len(), tensor.device())
                    .map_err(|e| self.candle(e))?;
                tensor
                    .index_select(&ids, 0)
                    .and_then(|rows| rows.to_dtype(DType::F32))
                    .and_then(|rows| rows.flatten_all())
                    .and_then(|rows| rows.to_vec1::<f32>())
                    .map_err(|e| self.candle(e))
            }
            _ => {
                let all = self.values(name, &shape)?;
                Ok(which
                    .iter()
                    .flat_map(|&row| &all[row as usize * width..(row as usize + 1) * width])
                    .copied()
                    .collect())
            }
        }
    }

    /// The tensor on the model's device, checked against the shape config.json implies.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, EmbedError> {
        if let Some(Entry::Loaded(tensor)) = self.entries.get(name) {
            if tensor.dims() == shape {
                return tensor
                    .to_dtype(DType::F32)
                    .and_then(|t| t.to_device(&self.device))
                    .map_err(|e| self.candle(e));
            }
        }
        let values = self.values(name, shape)?;
        Tensor::from_vec(values, shape, &self.device).map_err(|e| self.candle(e))
    }

    pub fn linear(
        &self,
        prefix: &str,
        out_dim: usize,
        in_dim: usize,
    ) -> Result<Linear, EmbedError> {
        self.linear_with(prefix, out_dim, in_dim, true)
    }

    /// A linear layer whose config says whether it has a bias (ModernBERT's `*_bias`).
    pub fn linear_with(
        &self,
        prefix: &str,
        out_dim: usize,
        in_dim: usize,
        bias: bool,
    ) -> Result<Linear, EmbedError> {
        let bias = if bias {
            Some(self.get(&format!("{prefix}.bias"), &[out_dim])?)
        } else {
            None
        };
        Ok(Linear::new(
            self.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?,
            bias,
        ))
    }

    /// Every tensor whose name starts with `prefix`, named without it, as f32 on the
    /// model's device: for a candle-transformers model, which reads its own names.
    pub fn all_with_prefix(&self, prefix: &str) -> Result<HashMap<String, Tensor>, EmbedError> {
        self.entries
            .keys()
            .filter_map(|name| Some((name, name.strip_prefix(prefix)?)))
            .map(|(name, short)| {
                let shape = match &self.entries[name] {
                    Entry::Loaded(tensor) => tensor.dims().to_vec(),
                    Entry::InFile(tensor) => tensor.shape.clone(),
                };
                Ok((short.to_string(), self.get(name, &shape)?))
            })
            .collect()
    }

    /// The weight and bias names of a LayerNorm: old TensorFlow-converted checkpoints
    /// call them gamma and beta.
    pub fn layer_norm_names(&self, prefix: &str) -> (String, String) {
        if self.contains(&format!("{prefix}.weight")) {
            (format!("{prefix}.weight"), format!("{prefix}.bias"))
        } else {
            (format!("{prefix}.gamma"), format!("{prefix}.beta"))
        }
    }

    pub fn layer_norm(&self, prefix: &str, dim: usize, eps: f64) -> Result<LayerNorm, EmbedError> {
        self.layer_norm_with(prefix, dim, eps, true)
    }

    /// A LayerNorm whose config says whether it has a bias (ModernBERT's `norm_bias`).
    pub fn layer_norm_with(
        &self,
        prefix: &str,
        dim: usize,
        eps: f64,
        bias: bool,
    ) -> Result<LayerNorm, EmbedError> {
        let (weight, bias_name) = self.layer_norm_names(prefix);
        let weight = self.get(&weight, &[dim])?;
        Ok(if bias {
            LayerNorm::new(weight, self.get(&bias_name, &[dim])?, eps)
        } else {
            LayerNorm::new_no_bias(weight, eps)
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn candle(&self, error: candle_core::Error) -> EmbedError {
        self.error(error.to_string())
    }

    pub(crate) fn error(&self, message: String) -> EmbedError {
        EmbedError::Weights {
            path: self.source.clone(),
            message,
        }
    }
}

impl FileTensor {
    fn read(&self, name: &str) -> Result<Vec<f32>, EmbedError> {
        self.read_range(name, 0, self.shape.iter().product())
    }

    /// `count` values from value `first` on, in the tensor's row-major order.
    fn read_range(&self, name: &str, first: usize, count: usize) -> Result<Vec<f32>, EmbedError> {
        let error = |message: String| EmbedError::Weights {
            path: self.path.display().to_string(),
            message,
        };
        let element = match self.dtype {
            StoredType::F32 => 4,
            StoredType::F16 | StoredType::BF16 => 2,
            StoredType::Other => {
                return Err(error(format!(
                    "tensor {name} is not stored as F32, F16 or BF16"
                )))
            }
        };
        let offset = self.offset + (first * element) as u64;
        let read = |bytes: &mut [u8]| {
            self.file
                .read_exact_at(bytes, offset)
                .map_err(|e| error(format!("reading tensor {name}: {e}")))
        };
        if element == 4 {
            let mut values = vec![0f32; count];
            // SAFETY: any 4 bytes are a valid f32; the bytes are little-endian on
            // disk and converted in place below on big-endian machines.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), count * 4)
            };
            read(bytes)?;
            if cfg!(target_endian = "big") {
                values
                    .iter_mut()
                    .for_each(|v| *v = f32::from_bits(u32::from_le(v.to_bits())));
            }
            Ok(values)
        } else {
            let mut bytes = vec![0u8; count * 2];
            read(&mut bytes)?;
            let halves = bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]));
            Ok(if self.dtype == StoredType::F16 {
                halves.map(|h| half::f16::from_bits(h).to_f32()).collect()
            } else {
                halves.map(|h| half::bf16::from_bits(h).to_f32()).collect()
            })
        }
    }
}

fn is_pickle(path: &Path) -> bool {
    path.extension().is_some_and(|extension| extension == "bin")
}

fn vanished(path: &Path) -> EmbedError {
    EmbedError::Checkpoint(CheckpointError::Vanished {
        path: path.to_path_buf(),
    })
}

/// Reads a safetensors header and checks every tensor lies inside the file, so a
/// truncated file is refused at load whichever tensors the model goes on to read.
fn read_header(path: &Path, entries: &mut HashMap<String, Entry>) -> Result<(), EmbedError> {
    let error = |message: String| EmbedError::Weights {
        path: path.display().to_string(),
        message,
    };
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => vanished(path),
        _ => error(e.to_string()),
    })?;
    let file_len = file.metadata().map_err(|e| error(e.to_string()))?.len();
    let mut length = [0u8; 8];
    file.read_exact_at(&mut length, 0).map_err(|_| {
        error(format!(
            "{file_len} bytes is too short for a safetensors header"
        ))
    })?;
    let header_len = u64::from_le_bytes(length);
    // The format caps headers at 100 MB; anything larger is not a safetensors file.
    if header_len > 100_000_000 || 8 + header_len > file_len {
        return Err(error(format!(
            "header length {header_len} does not fit in the file's {file_len} bytes"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8)
        .map_err(|e| error(format!("reading the header: {e}")))?;
    let parsed: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| error(format!("invalid safetensors header: {e}")))?;
    let data_start = 8 + header_len;
    let file = std::sync::Arc::new(file);
    for (name, value) in parsed {
        if name == "__metadata__" {
            continue;
        }
        let entry: HeaderEntry = serde_json::from_value(value)
            .map_err(|e| error(format!("header entry {name}: {e}")))?;
        let [start, end] = entry.data_offsets;
        let element = StoredType::size(&entry.dtype)
            .ok_or_else(|| error(format!("tensor {name} has unknown dtype {}", entry.dtype)))?;
        let expected = entry.shape.iter().product::<usize>() as u64 * element as u64;
        if end < start || end - start != expected {
            return Err(error(format!(
                "tensor {name}: data_offsets {start}..{end} do not match shape {:?} of {}",
                entry.shape, entry.dtype
            )));
        }
        if data_start + end > file_len {
            return Err(error(format!(
                "tensor {name} ends at byte {} but the file has {file_len} bytes (truncated?)",
                data_start + end
            )));
        }
        entries.insert(
            name,
            Entry::InFile(FileTensor {
                file: file.clone(),
                path: path.to_path_buf(),
                dtype: StoredType::parse(&entry.dtype),
                shape: entry.shape,
                offset: data_start + start,
            }),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_safetensors(path: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            header.insert(
                (*name).into(),
                serde_json::json!({"dtype": dtype, "shape": shape,
                    "data_offsets": [data.len(), data.len() + bytes.len()]}),
            );
            data.extend_from_slice(bytes);
        }
        let header = serde_json::to_vec(&header).unwrap();
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend(header);
        file.extend(data);
        std::fs::write(path, file).unwrap();
    }

    #[test]
    fn reads_f32_f16_and_bf16_and_checks_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let f32_bytes: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let f16_bytes: Vec<u8> = [half::f16::from_f32(0.5), half::f16::from_f32(-3.0)]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bf16_bytes: Vec<u8> = half::bf16::from_f32(4.0).to_le_bytes().to_vec();
        let table_bytes: Vec<u8> = (0..8).flat_map(|v| (v as f32).to_le_bytes()).collect();
        write_safetensors(
            &path,
            &[
                ("a", "F32", vec![2], f32_bytes),
                ("b", "F16", vec![1, 2], f16_bytes),
                ("c", "BF16", vec![1], bf16_bytes),
                ("ids", "I64", vec![1], 7i64.to_le_bytes().to_vec()),
                ("table", "F32", vec![4, 2], table_bytes),
            ],
        );
        let tensors =
            NamedTensors::open(&WeightFiles::Safetensors(path.clone()), &Device::Cpu).unwrap();
        assert_eq!(tensors.values("a", &[2]).unwrap(), vec![1.5, -2.0]);
        assert_eq!(tensors.values("b", &[1, 2]).unwrap(), vec![0.5, -3.0]);
        assert_eq!(tensors.values("c", &[1]).unwrap(), vec![4.0]);
        assert_eq!(tensors.rows("b", [1, 2], &[0]).unwrap(), vec![0.5, -3.0]);
        // Rows 2 and 3 are one run, row 0 another.
        assert_eq!(
            tensors.rows("table", [4, 2], &[0, 2, 3]).unwrap(),
            vec![0.0, 1.0, 4.0, 5.0, 6.0, 7.0]
        );
        let beyond = tensors.rows("b", [1, 2], &[1]).unwrap_err().to_string();
        assert!(
            beyond.contains("row 1 of tensor b asked for; it has 1 rows"),
            "{beyond}"
        );
        let wrong = tensors.values("a", &[3]).unwrap_err().to_string();
        assert!(
            wrong.contains("tensor a has shape [2], config.json implies [3]"),
            "{wrong}"
        );
        let missing = tensors.values("z", &[1]).unwrap_err().to_string();
        assert!(missing.contains("model.safetensors") && missing.contains("tensor z is missing"));
        let not_float = tensors.values("ids", &[1]).unwrap_err().to_string();
        assert!(not_float.contains("not stored as F32"), "{not_float}");
    }

    #[test]
    fn a_truncated_file_is_refused_at_open_naming_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        write_safetensors(&path, &[("a", "F32", vec![4], vec![0u8; 16])]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let message = NamedTensors::open(&WeightFiles::Safetensors(path), &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(message.contains("tensor a ends at byte"), "{message}");
        assert!(message.contains("truncated"), "{message}");
    }
}
