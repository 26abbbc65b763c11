//! A run on object storage (`s3://bucket/prefix/`): listed by polling, since a bucket
//! sends no file events, and mirrored into the state directory, so that the pipeline
//! reads a local run folder as for any other run. Only what dwell reads is fetched
//! (weights, config, tokenizer, `trainer_state.json`; never optimizer, scheduler, RNG
//! or `training_args.bin`), in ranged GETs of [`RANGE_BYTES`]; nothing is written to
//! the bucket. A checkpoint is fetched once its `trainer_state.json` is listed (the
//! Trainer uploads it last, like it writes it last) and its listing — every object's
//! name, size and ETag — has held for the settle interval: an upload in progress
//! changes it. Credentials come from the usual environment variables (`AWS_*`) through
//! the `object_store` crate and are never logged: only the URL is, which holds none.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use super::discovery::parse_checkpoint_name as parse_step;

/// Bytes per ranged GET: large enough that a request's latency is small beside its
/// transfer, small enough that a failed one costs little.
pub const RANGE_BYTES: u64 = 8 << 20;

/// The files of a Trainer checkpoint that dwell never reads.
fn is_unread(name: &str) -> bool {
    matches!(
        name,
        "optimizer.pt" | "scheduler.pt" | "scaler.pt" | "training_args.bin"
    ) || (name.starts_with("rng_state") && name.ends_with(".pth"))
}

/// Files of the run folder itself that the tokenizer may be read from.
fn is_run_level_tokenizer_file(name: &str) -> bool {
    matches!(
        name,
        "tokenizer.json"
            | "tokenizer_config.json"
            | "vocab.txt"
            | "special_tokens_map.json"
            | "added_tokens.json"
    )
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{url}: {message}")]
    Url { url: String, message: String },
    #[error("{url}: {error}")]
    Store {
        url: String,
        error: Box<object_store::Error>,
    },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{url}: {name} changed while it was fetched (expected {expected} bytes, got {got}); it is fetched again once it settles")]
    Changed {
        url: String,
        name: String,
        expected: u64,
        got: u64,
    },
}

/// True for a RUN argument that names object storage rather than a folder.
pub fn is_remote(run: &str) -> bool {
    run.starts_with("s3://") || run.starts_with("s3a://")
}

/// A run folder on object storage.
#[derive(Debug, Clone)]
pub struct RemoteRun {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
}

impl RemoteRun {
    /// `s3://bucket/prefix/`, with the endpoint, region and credentials of the `AWS_*`
    /// environment variables (`AWS_ENDPOINT` and `AWS_ALLOW_HTTP=true` for an
    /// S3-compatible server).
    pub fn from_url(url: &str) -> Result<Self, RemoteError> {
        let refuse = |message: String| RemoteError::Url {
            url: url.to_string(),
            message,
        };
        let parsed = url::Url::parse(url).map_err(|e| refuse(e.to_string()))?;
        if !matches!(parsed.scheme(), "s3" | "s3a") {
            return Err(refuse(
                "only s3:// is supported (this build has the object_store crate's aws feature)"
                    .into(),
            ));
        }
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| refuse("no bucket: write s3://BUCKET/PREFIX/".into()))?;
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|error| refuse(error.to_string()))?;
        let prefix = ObjectPath::from(parsed.path().trim_matches('/'));
        Ok(Self {
            url: url.to_string(),
            store: Arc::new(store),
            prefix,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn store_error(&self, error: object_store::Error) -> RemoteError {
        RemoteError::Store {
            url: self.url.clone(),
            error: Box::new(error),
        }
    }

    /// Objects directly under `prefix` (no deeper), and the folders there.
    async fn list(
        &self,
        prefix: &ObjectPath,
    ) -> Result<(Vec<object_store::ObjectMeta>, Vec<ObjectPath>), RemoteError> {
        let listed = self
            .store
            .list_with_delimiter(Some(prefix))
            .await
            .map_err(|e| self.store_error(e))?;
        Ok((listed.objects, listed.common_prefixes))
    }

    /// Fetches `object` to `target` in ranged GETs, refusing a size that differs from
    /// the listing (an object replaced mid-fetch).
    async fn fetch(
        &self,
        object: &object_store::ObjectMeta,
        target: &Path,
    ) -> Result<(), RemoteError> {
        let io = |error| RemoteError::Io {
            path: target.to_path_buf(),
            error,
        };
        let mut file = std::fs::File::create(target).map_err(io)?;
        let size = object.size;
        let mut start = 0;
        while start < size {
            let end = (start + RANGE_BYTES).min(size);
            let bytes = self
                .store
                .get_range(&object.location, start..end)
                .await
                .map_err(|e| self.store_error(e))?;
            if bytes.len() as u64 != end - start {
                return Err(RemoteError::Changed {
                    url: self.url.clone(),
                    name: object.location.to_string(),
                    expected: size,
                    got: start + bytes.len() as u64,
                });
            }
            file.write_all(&bytes).map_err(io)?;
            start = end;
        }
        file.sync_all().map_err(io)
    }
}

/// A checkpoint's listing: each object's name, size and ETag.
type Listing = Vec<(String, u64, Option<String>)>;

/// What one [`Mirror::sync`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MirrorScan {
    /// Checkpoints fetched into the mirror by this sync.
    pub fetched: Vec<u64>,
    /// Listed without `trainer_state.json` yet, or still changing.
    pub being_written: usize,
    /// Bytes fetched by this sync.
    pub bytes: u64,
}

/// The local copy of a remote run: `<mirror>/checkpoint-<step>/` with the files dwell
/// reads, and the run folder's tokenizer files. It holds the checkpoints not stored yet
/// and the newest one (whose `config.json` names the labels and whose
/// `trainer_state.json` says whether the run is finished).
pub struct Mirror {
    run: RemoteRun,
    root: PathBuf,
    settle: Duration,
    /// Listings of checkpoints not fetched yet, and since when they are unchanged.
    settling: BTreeMap<u64, (Listing, Instant)>,
}

impl Mirror {
    pub fn new(run: RemoteRun, root: PathBuf, settle: Duration) -> Self {
        Self {
            run,
            root,
            settle,
            settling: BTreeMap::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Lists the run once, fetches each settled checkpoint that is neither stored nor
    /// mirrored, and removes mirrored checkpoints that are stored, but the newest.
    pub async fn sync(&mut self, stored: &BTreeSet<u64>) -> Result<MirrorScan, RemoteError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| RemoteError::Io { path, error }
        };
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let mut scan = MirrorScan::default();
        let (objects, folders) = self.run.list(&self.run.prefix).await?;
        for object in &objects {
            let Some(name) = object.location.filename() else {
                continue;
            };
            let target = self.root.join(name);
            let fresh = std::fs::metadata(&target).is_ok_and(|m| m.len() == object.size);
            if is_run_level_tokenizer_file(name) && !fresh {
                let partial = self.root.join(format!(".partial-{name}"));
                self.run.fetch(object, &partial).await?;
                std::fs::rename(&partial, &target).map_err(io(&target))?;
                scan.bytes += object.size;
            }
        }
        let remote: BTreeMap<u64, ObjectPath> = folders
            .into_iter()
            .filter_map(|folder| {
                let step = parse_step(folder.filename()?)?;
                Some((step, folder))
            })
            .collect();
        let mirrored = self.mirrored()?;
        self.settling.retain(|step, _| remote.contains_key(step));
        // One clock reading for the whole scan, as the pipeline's settle check takes:
        // read per checkpoint, behind each checkpoint's listing, a later checkpoint
        // could settle in the same scan as an earlier one that does not, and be
        // fetched (and embedded) first.
        let now = Instant::now();
        for (&step, folder) in &remote {
            if stored.contains(&step) || mirrored.contains(&step) {
                continue;
            }
            let (objects, _) = self.run.list(folder).await?;
            let mut listing: Listing = objects
                .iter()
                .filter_map(|o| Some((o.location.filename()?.to_string(), o.size, o.e_tag.clone())))
                .collect();
            listing.sort();
            if !listing
                .iter()
                .any(|(name, ..)| name == "trainer_state.json")
            {
                scan.being_written += 1;
                continue;
            }
            let settled = match self.settling.get(&step) {
                Some((seen, since)) if *seen == listing => {
                    now.duration_since(*since) >= self.settle
                }
                _ => {
                    self.settling.insert(step, (listing, now));
                    self.settle.is_zero()
                }
            };
            if !settled {
                scan.being_written += 1;
                continue;
            }
            let partial = self.root.join(format!(".partial-checkpoint-{step}"));
            if partial.exists() {
                std::fs::remove_dir_all(&partial).map_err(io(&partial))?;
            }
            std::fs::create_dir_all(&partial).map_err(io(&partial))?;
            for object in &objects {
                let Some(name) = object.location.filename() else {
                    continue;
                };
                if is_unread(name) {
                    continue;
                }
                self.run.fetch(object, &partial.join(name)).await?;
                scan.bytes += object.size;
            }
            let target = self.root.join(format!("checkpoint-{step}"));
            std::fs::rename(&partial, &target).map_err(io(&target))?;
            self.settling.remove(&step);
            tracing::info!(step, run = %self.run.url(), "fetched a checkpoint from object storage");
            scan.fetched.push(step);
        }
        prune_mirror(&self.root, stored)?;
        Ok(scan)
    }

    fn mirrored(&self) -> Result<BTreeSet<u64>, RemoteError> {
        mirrored_steps(&self.root)
    }
}

fn mirrored_steps(root: &Path) -> Result<BTreeSet<u64>, RemoteError> {
    let io = |error| RemoteError::Io {
        path: root.to_path_buf(),
        error,
    };
    let mut steps = BTreeSet::new();
    for entry in std::fs::read_dir(root).map_err(io)? {
        let entry = entry.map_err(io)?;
        if let Some(step) = entry.file_name().to_str().and_then(parse_step) {
            steps.insert(step);
        }
    }
    Ok(steps)
}

/// Removes the checkpoints of the mirror at `root` that are stored, but the newest.
pub fn prune_mirror(root: &Path, stored: &BTreeSet<u64>) -> Result<(), RemoteError> {
    let mirrored = mirrored_steps(root)?;
    let newest = mirrored.last().copied();
    for step in mirrored {
        if stored.contains(&step) && Some(step) != newest {
            let path = root.join(format!("checkpoint-{step}"));
            std::fs::remove_dir_all(&path).map_err(|error| RemoteError::Io { path, error })?;
        }
    }
    Ok(())
}

/// Where a remote run is mirrored inside its state directory.
pub fn mirror_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("remote-run")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimizer_and_rng_files_are_never_fetched() {
        for name in [
            "optimizer.pt",
            "scheduler.pt",
            "rng_state.pth",
            "rng_state_3.pth",
            "training_args.bin",
        ] {
            assert!(is_unread(name), "{name}");
        }
        for name in [
            "model.safetensors",
            "config.json",
            "trainer_state.json",
            "pytorch_model.bin",
        ] {
            assert!(!is_unread(name), "{name}");
        }
    }

    #[test]
    fn only_s3_urls_with_a_bucket_are_runs() {
        assert!(is_remote("s3://bucket/run/"));
        assert!(!is_remote("/data/run"));
        let error = RemoteRun::from_url("s3:///run").unwrap_err().to_string();
        assert!(error.contains("no bucket"), "{error}");
        let error = RemoteRun::from_url("s3://").unwrap_err().to_string();
        assert!(error.starts_with("s3://"), "{error}");
    }
}
