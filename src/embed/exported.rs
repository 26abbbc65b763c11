//! Embeddings computed elsewhere (JAX, Keras, a training loop of one's own): a folder of
//! `step-<N>.safetensors` with `cls` [P, H] and optionally `logits` [P, C], or of
//! `step-<N>.npy` (`cls`) with an optional `step-<N>.logits.npy` beside it
//! (docs/EMBEDDINGS.md). They take the place of checkpoint + model: the pipeline stores
//! what is read here and everything after embedding runs unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};

use super::Embeddings;

#[derive(Debug, thiserror::Error)]
pub enum ExportedError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: both step-{step}.safetensors and step-{step}.npy: keep one")]
    Ambiguous { path: PathBuf, step: u64 },
}

fn invalid(path: &Path, message: impl Into<String>) -> ExportedError {
    ExportedError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// One step's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportedStep {
    Safetensors(PathBuf),
    Npy {
        cls: PathBuf,
        logits: Option<PathBuf>,
    },
}

impl ExportedStep {
    /// The file the step is named by (the one holding `cls`).
    pub fn path(&self) -> &Path {
        match self {
            ExportedStep::Safetensors(path) => path,
            ExportedStep::Npy { cls, .. } => cls,
        }
    }
}

/// The steps in `dir`, ascending. Files that are not `step-<N>.…` are not ours and are
/// left alone (a `labels.txt`, a README); a `step-` file of another kind is an error.
pub fn list_exported(dir: &Path) -> Result<BTreeMap<u64, ExportedStep>, ExportedError> {
    let io = |error| ExportedError::Io {
        path: dir.to_path_buf(),
        error,
    };
    let mut safetensors = BTreeMap::new();
    let mut npy = BTreeMap::new();
    let mut logits = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Some(rest) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix("step-"))
        else {
            continue;
        };
        let (number, kind) = rest.split_once('.').unwrap_or((rest, ""));
        let step: u64 = number
            .parse()
            .map_err(|_| invalid(&path, NOT_A_STEP_FILE))?;
        let target = match kind {
            "safetensors" => &mut safetensors,
            "npy" => &mut npy,
            "logits.npy" => &mut logits,
            _ => return Err(invalid(&path, NOT_A_STEP_FILE)),
        };
        target.insert(step, path);
    }
    let mut steps: BTreeMap<u64, ExportedStep> = safetensors
        .into_iter()
        .map(|(step, path)| (step, ExportedStep::Safetensors(path)))
        .collect();
    for (step, cls) in npy {
        if steps.contains_key(&step) {
            return Err(ExportedError::Ambiguous {
                path: dir.to_path_buf(),
                step,
            });
        }
        let logits = logits.remove(&step);
        steps.insert(step, ExportedStep::Npy { cls, logits });
    }
    if let Some((_, orphan)) = logits.into_iter().next() {
        return Err(invalid(
            &orphan,
            "logits without a step-<N>.npy of cls beside them",
        ));
    }
    Ok(steps)
}

/// Why a `step-` file's name is refused.
const NOT_A_STEP_FILE: &str = "not step-<N>.safetensors, step-<N>.npy or step-<N>.logits.npy";

/// A row-major float matrix as read from a file.
struct Matrix {
    values: Vec<f32>,
    rows: usize,
    columns: usize,
}

/// Reads one step, checking that it has one row per probe example and, where it has
/// logits, `classes` columns of them.
pub fn read_exported(
    step: &ExportedStep,
    probe_rows: usize,
    classes: usize,
) -> Result<Embeddings, ExportedError> {
    let ((cls, cls_path), logits) = match step {
        ExportedStep::Safetensors(path) => with_safetensors(path, |tensors| {
            let cls = safetensors_matrix(tensors, "cls", path)?
                .ok_or_else(|| invalid(path, "no `cls` tensor (the [CLS] embeddings, [P, H])"))?;
            Ok((
                (cls, path.as_path()),
                safetensors_matrix(tensors, "logits", path)?.map(|m| (m, path.as_path())),
            ))
        })?,
        ExportedStep::Npy { cls, logits } => (
            (read_npy(cls)?, cls.as_path()),
            match logits {
                Some(path) => Some((read_npy(path)?, path.as_path())),
                None => None,
            },
        ),
    };
    if cls.rows != probe_rows {
        return Err(invalid(
            cls_path,
            format!(
                "cls has {} rows, the probe set {probe_rows} examples (one row per example, probe order)",
                cls.rows
            ),
        ));
    }
    if cls.columns == 0 {
        return Err(invalid(cls_path, "cls has no columns"));
    }
    if let Some(bad) = cls.values.iter().position(|v| !v.is_finite()) {
        return Err(invalid(
            cls_path,
            format!("cls row {} holds {}", bad / cls.columns, cls.values[bad]),
        ));
    }
    let (logits, num_labels) = match logits {
        None => (None, 0),
        Some((logits, path)) => {
            if logits.rows != probe_rows {
                return Err(invalid(
                    path,
                    format!(
                        "logits have {} rows, the probe set {probe_rows} examples",
                        logits.rows
                    ),
                ));
            }
            if logits.columns != classes {
                return Err(invalid(
                    path,
                    format!(
                        "logits have {} columns, the run {classes} classes",
                        logits.columns
                    ),
                ));
            }
            (Some(logits.values), logits.columns)
        }
    };
    Ok(Embeddings {
        cls: cls.values,
        hidden: cls.columns,
        logits,
        num_labels,
    })
}

/// The column count of the first step's logits, if it has any: how many classes the
/// exporter's head has.
pub fn exported_classes(step: &ExportedStep) -> Result<Option<usize>, ExportedError> {
    match step {
        ExportedStep::Safetensors(path) => with_safetensors(path, |tensors| {
            Ok(safetensors_matrix(tensors, "logits", path)?.map(|m| m.columns))
        }),
        ExportedStep::Npy { logits, .. } => match logits {
            Some(path) => Ok(Some(read_npy(path)?.columns)),
            None => Ok(None),
        },
    }
}

/// `read` applied to the tensors of the safetensors file at `path`.
fn with_safetensors<T>(
    path: &Path,
    read: impl FnOnce(&SafeTensors) -> Result<T, ExportedError>,
) -> Result<T, ExportedError> {
    let bytes = std::fs::read(path).map_err(|error| ExportedError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| invalid(path, e.to_string()))?;
    read(&tensors)
}

fn safetensors_matrix(
    tensors: &SafeTensors,
    name: &str,
    path: &Path,
) -> Result<Option<Matrix>, ExportedError> {
    let view = match tensors.tensor(name) {
        Ok(view) => view,
        Err(safetensors::SafeTensorError::TensorNotFound(_)) => return Ok(None),
        Err(e) => return Err(invalid(path, e.to_string())),
    };
    let &[rows, columns] = view.shape() else {
        return Err(invalid(
            path,
            format!("`{name}` has shape {:?}, not [rows, columns]", view.shape()),
        ));
    };
    let element = match view.dtype() {
        Dtype::F32 => Element::F32,
        Dtype::F64 => Element::F64,
        Dtype::F16 => Element::F16,
        Dtype::BF16 => Element::Bf16,
        other => {
            return Err(invalid(
                path,
                format!("`{name}` is {other:?}; floats (F32, F64, F16, BF16) are read"),
            ))
        }
    };
    Ok(Some(Matrix {
        values: element.decode_le(view.data()),
        rows,
        columns,
    }))
}

#[derive(Clone, Copy)]
enum Element {
    F32,
    F64,
    F16,
    Bf16,
}

impl Element {
    fn width(self) -> usize {
        match self {
            Element::F64 => 8,
            Element::F32 => 4,
            Element::F16 | Element::Bf16 => 2,
        }
    }

    /// Little-endian values as f32 (f64 rounded: the pipeline computes in f32).
    fn decode_le(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Element::F32 => crate::store::f32_from_le_bytes(bytes),
            Element::F64 => bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
            Element::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Element::Bf16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        }
    }
}

/// A 2-D C-order little-endian float array in NumPy's `.npy` format (versions 1-3).
/// The header is a Python dict literal; only its three keys are read, no code runs.
fn read_npy(path: &Path) -> Result<Matrix, ExportedError> {
    let bytes = std::fs::read(path).map_err(|error| ExportedError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    parse_npy(&bytes).map_err(|message| invalid(path, message))
}

fn parse_npy(bytes: &[u8]) -> Result<Matrix, String> {
    let rest = bytes
        .strip_prefix(b"\x93NUMPY")
        .ok_or("not a .npy file (no \\x93NUMPY magic)")?;
    let (&[major, _minor], rest) = rest.split_first_chunk::<2>().ok_or("truncated header")?;
    let (header_len, rest) = match major {
        1 => {
            let (len, rest) = rest.split_first_chunk::<2>().ok_or("truncated header")?;
            (u16::from_le_bytes(*len) as usize, rest)
        }
        2 | 3 => {
            let (len, rest) = rest.split_first_chunk::<4>().ok_or("truncated header")?;
            (u32::from_le_bytes(*len) as usize, rest)
        }
        other => return Err(format!(".npy format version {other} is not supported")),
    };
    if rest.len() < header_len {
        return Err("truncated header".into());
    }
    let (header, data) = rest.split_at(header_len);
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
    let descr = header_value(header, "descr").ok_or("the header has no 'descr'")?;
    let element = match descr.trim_matches(|c| c == '\'' || c == '"') {
        "<f4" => Element::F32,
        "<f8" => Element::F64,
        "<f2" => Element::F16,
        other => {
            return Err(format!(
                "dtype {other} is not read; save little-endian floats (float32, float64, float16)"
            ))
        }
    };
    match header_value(header, "fortran_order") {
        Some("False") => {}
        Some("True") => {
            return Err("Fortran-order arrays are not read: save np.ascontiguousarray(x)".into())
        }
        _ => return Err("the header has no 'fortran_order'".into()),
    }
    let shape = header_value(header, "shape").ok_or("the header has no 'shape'")?;
    let dims: Vec<usize> = shape
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|dim| !dim.is_empty())
        .map(|dim| {
            dim.parse()
                .map_err(|_| format!("shape {shape} is not integers"))
        })
        .collect::<Result<_, _>>()?;
    let &[rows, columns] = dims.as_slice() else {
        return Err(format!("shape {shape} is not [rows, columns]"));
    };
    let expected = rows
        .checked_mul(columns)
        .and_then(|n| n.checked_mul(element.width()))
        .ok_or_else(|| format!("shape {shape} is too large"))?;
    if data.len() != expected {
        return Err(format!(
            "shape {shape} needs {expected} bytes of data, the file has {}",
            data.len()
        ));
    }
    Ok(Matrix {
        values: element.decode_le(data),
        rows,
        columns,
    })
}

/// The text after `'key':` in a header dict, up to the next top-level comma or brace.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?
        + key.len()
        + 2;
    let after = header[start..].trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0usize;
    let end = after
        .char_indices()
        .find(|&(_, c)| match c {
            '(' => {
                depth += 1;
                false
            }
            ')' => {
                depth = depth.saturating_sub(1);
                false
            }
            ',' | '}' => depth == 0,
            _ => false,
        })
        .map_or(after.len(), |(at, _)| at);
    Some(after[..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes `np.save` writes for `np.arange(6, dtype=dtype).reshape(2, 3)`.
    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn reads_float32_and_float64_matrices() {
        let f32s: Vec<u8> = (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let matrix = parse_npy(&npy("<f4", "(2, 3)", &f32s)).unwrap();
        assert_eq!((matrix.rows, matrix.columns), (2, 3));
        assert_eq!(matrix.values, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let f64s: Vec<u8> = (0..6)
            .flat_map(|v| (v as f64 * 0.5).to_le_bytes())
            .collect();
        let matrix = parse_npy(&npy("<f8", "(3, 2)", &f64s)).unwrap();
        assert_eq!((matrix.rows, matrix.columns), (3, 2));
        assert_eq!(matrix.values, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
    }

    #[test]
    fn refuses_what_it_cannot_read_with_the_reason() {
        let data = [0u8; 24];
        let cases = [
            (npy("<i4", "(2, 3)", &data), "dtype <i4"),
            (npy(">f4", "(2, 3)", &data), "dtype >f4"),
            (npy("<f4", "(6,)", &data), "not [rows, columns]"),
            (npy("<f4", "(2, 4)", &data), "needs 32 bytes"),
            (b"PK\x03\x04".to_vec(), "magic"),
        ];
        for (bytes, expected) in cases {
            let error = parse_npy(&bytes).err().unwrap();
            assert!(error.contains(expected), "{error}");
        }
        let mut fortran = npy("<f4", "(2, 3)", &data);
        let at = fortran.windows(5).position(|w| w == b"False").unwrap();
        fortran[at..at + 5].copy_from_slice(b"True ");
        let error = parse_npy(&fortran).err().unwrap();
        assert!(error.contains("Fortran"), "{error}");
    }

    #[test]
    fn lists_steps_and_pairs_npy_logits() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "step-10.npy",
            "step-10.logits.npy",
            "step-20.npy",
            "labels.txt",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let steps = list_exported(dir.path()).unwrap();
        assert_eq!(steps.keys().copied().collect::<Vec<_>>(), vec![10, 20]);
        assert_eq!(
            steps[&10],
            ExportedStep::Npy {
                cls: dir.path().join("step-10.npy"),
                logits: Some(dir.path().join("step-10.logits.npy")),
            }
        );
        std::fs::write(dir.path().join("step-20.safetensors"), b"").unwrap();
        assert!(matches!(
            list_exported(dir.path()),
            Err(ExportedError::Ambiguous { step: 20, .. })
        ));
        std::fs::remove_file(dir.path().join("step-20.safetensors")).unwrap();
        std::fs::write(dir.path().join("step-x.npy"), b"").unwrap();
        let error = list_exported(dir.path()).unwrap_err().to_string();
        assert!(error.contains("step-x.npy"), "{error}");
    }

    #[test]
    fn rows_and_classes_are_checked_against_the_probe() {
        let dir = tempfile::tempdir().unwrap();
        let cls: Vec<u8> = (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let logits: Vec<u8> = (0..4).flat_map(|v| (v as f32).to_le_bytes()).collect();
        std::fs::write(dir.path().join("step-1.npy"), npy("<f4", "(2, 3)", &cls)).unwrap();
        std::fs::write(
            dir.path().join("step-1.logits.npy"),
            npy("<f4", "(2, 2)", &logits),
        )
        .unwrap();
        let steps = list_exported(dir.path()).unwrap();
        let embeddings = read_exported(&steps[&1], 2, 2).unwrap();
        assert_eq!((embeddings.hidden, embeddings.num_labels), (3, 2));
        assert_eq!(embeddings.logits.unwrap(), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(exported_classes(&steps[&1]).unwrap(), Some(2));
        let error = read_exported(&steps[&1], 3, 2).unwrap_err().to_string();
        assert!(
            error.contains("step-1.npy") && error.contains("2 rows"),
            "{error}"
        );
        let error = read_exported(&steps[&1], 2, 4).unwrap_err().to_string();
        assert!(
            error.contains("step-1.logits.npy") && error.contains("2 columns"),
            "{error}"
        );
    }
}
