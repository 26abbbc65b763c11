//! A replay of the Hugging Face Trainer's `_save_checkpoint`: the files of a checkpoint
//! in its write order (config, weights in chunks, tokenizer and the rest,
//! `trainer_state.json` last), then `save_total_limit` rotation as transformers 5's
//! `rotate_checkpoints` does it (sorted by folder mtime, by step when the mtimes span
//! under a second; the newest kept; `shutil.rmtree` of the rest).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How a replayed Trainer writes each file.
#[derive(Debug, Clone, Copy)]
pub struct WritePace {
    /// Pieces each file is written in (weights always in at least 4).
    pub pieces: usize,
    /// Pause after each piece.
    pub pause: Duration,
}

impl WritePace {
    /// Weights in 4 chunks 60 ms apart, other files at once: a Trainer on a fast disk.
    pub const USUAL: WritePace = WritePace {
        pieces: 1,
        pause: Duration::from_millis(60),
    };
}

/// Copies the checkpoint folder `source` to `target` in the Trainer's order.
pub fn write_like_the_trainer(source: &Path, target: &Path, pace: WritePace) {
    std::fs::create_dir_all(target).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(source)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|name| match name.as_str() {
        "config.json" | "adapter_config.json" => 0,
        "model.safetensors" | "adapter_model.safetensors" => 1,
        "trainer_state.json" => 3,
        _ => 2,
    });
    for name in names {
        let bytes = std::fs::read(source.join(&name)).unwrap();
        let pieces = if name.ends_with(".safetensors") {
            pace.pieces.max(4)
        } else {
            pace.pieces
        };
        let mut file = std::fs::File::create(target.join(&name)).unwrap();
        for piece in bytes.chunks(bytes.len() / pieces + 1) {
            file.write_all(piece).unwrap();
            file.flush().unwrap();
            if pieces > 1 {
                std::thread::sleep(pace.pause);
            }
        }
    }
}

/// `rotate_checkpoints(output_dir, save_total_limit, use_mtime=True)` of transformers 5.
pub fn rotate_like_the_trainer(run: &Path, limit: usize) {
    let mut checkpoints: Vec<(SystemTime, u64, PathBuf)> = std::fs::read_dir(run)
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let step = path
                .file_name()?
                .to_str()?
                .strip_prefix("checkpoint-")?
                .parse()
                .ok()?;
            let mtime = std::fs::metadata(&path).ok()?.modified().ok()?;
            path.is_dir().then_some((mtime, step, path))
        })
        .collect();
    checkpoints.sort();
    let span = match (checkpoints.first(), checkpoints.last()) {
        (Some(first), Some(last)) => last.0.duration_since(first.0).unwrap_or_default(),
        _ => Duration::ZERO,
    };
    if span < Duration::from_secs(1) {
        checkpoints.sort_by_key(|c| c.1);
    }
    let remove = checkpoints.len().saturating_sub(limit);
    for (_, _, path) in &checkpoints[..remove] {
        // shutil.rmtree(checkpoint, ignore_errors=True)
        let _ = std::fs::remove_dir_all(path);
    }
}

/// Each file of a folder (and the folder) with its size and mtime: what the Trainer's
/// rotation and a person would see.
pub fn folder_state(dir: &Path) -> Vec<(String, u64, SystemTime)> {
    let metadata = std::fs::metadata(dir).unwrap();
    let mut files = vec![(String::from("."), 0, metadata.modified().unwrap())];
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let metadata = entry.metadata().unwrap();
        files.push((
            entry.file_name().to_string_lossy().into_owned(),
            metadata.len(),
            metadata.modified().unwrap(),
        ));
    }
    files.sort();
    files
}
