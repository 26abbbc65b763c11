//! Finding a model named by a folder or a Hugging Face hub id, offline: the id is
//! looked up in the local cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`; `refs/<revision>` → `snapshots/<sha>`) through `hf-hub`
//! with its network features off. Nothing is ever downloaded.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use super::CheckpointError;

/// The hub cache folder, by the precedence huggingface_hub uses.
fn hub_cache_dir() -> Option<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(cache) = set("HF_HUB_CACHE") {
        return Some(PathBuf::from(cache));
    }
    if let Some(home) = set("HF_HOME") {
        return Some(PathBuf::from(home).join("hub"));
    }
    set("HOME").map(|home| PathBuf::from(home).join(".cache/huggingface/hub"))
}

/// The folder of the model `name`: `name` itself when it is a folder (as given, then
/// relative to each of `relative_to`), else the snapshot of the hub id `name` at
/// `revision` (default `main`) in the local cache. `asked_by` is the file (or flag)
/// that named it, for the error, which lists every place searched.
pub fn locate_model(
    name: &str,
    revision: Option<&str>,
    relative_to: &[&Path],
    asked_by: &Path,
) -> Result<PathBuf, CheckpointError> {
    let mut searched = Vec::new();
    let as_path = Path::new(name);
    let candidates = std::iter::once(as_path.to_path_buf()).chain(
        relative_to
            .iter()
            .filter(|_| as_path.is_relative())
            .map(|dir| dir.join(as_path)),
    );
    for candidate in candidates {
        if candidate.join("config.json").is_file() {
            return Ok(candidate);
        }
        searched.push(candidate);
    }
    if let Some(cache) = hub_cache_dir().filter(|_| is_hub_id(name)) {
        let revision = revision.unwrap_or("main");
        let repo = Repo::with_revision(name.to_string(), RepoType::Model, revision.to_string());
        let snapshot_of_sha = cache
            .join(repo.folder_name())
            .join("snapshots")
            .join(revision);
        let found = Cache::new(cache.clone())
            .repo(repo)
            .get("config.json")
            .and_then(|config| config.parent().map(Path::to_path_buf))
            // A revision that is a commit hash names its snapshot directly.
            .or_else(|| {
                snapshot_of_sha
                    .join("config.json")
                    .is_file()
                    .then_some(snapshot_of_sha)
            });
        match found {
            Some(snapshot) => return Ok(snapshot),
            None => searched.push(cache.join(format!("models--{}", name.replace('/', "--")))),
        }
    }
    Err(CheckpointError::ModelNotFound {
        asked_by: asked_by.to_path_buf(),
        name: name.to_string(),
        searched,
    })
}

/// `name` or `org/name`, of the characters the hub allows.
fn is_hub_id(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() <= 2
        && parts.iter().all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_names_or_org_names() {
        assert!(is_hub_id("bert-base-uncased"));
        assert!(is_hub_id("dwell-fixtures/tiny-bert"));
        assert!(!is_hub_id("/abs/path"));
        assert!(!is_hub_id("a/b/c"));
        assert!(!is_hub_id("../up"));
    }
}
