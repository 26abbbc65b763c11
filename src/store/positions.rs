//! Stored `[CLS]` positions as the trajectory analysis reads them, one checkpoint at a
//! time, with a bounded in-memory cache: a daemon that re-analyses the whole run after
//! every checkpoint reads only the new one from disk while the run fits the cache.

use std::collections::HashMap;
use std::sync::Arc;

use crate::analyze::cluster::{cluster, Clustering};
use crate::analyze::detectors::DetectorKind;
use crate::analyze::params::AnalysisParams;
use crate::analyze::pca::Pca2;
use crate::analyze::trajectory::{analyze, AnalysisError, PositionSource, TrajectoryAnalysis};

use super::{StateDir, StoreError};

/// Cached positions up to this many bytes unless told otherwise: a whole run of a
/// base-size model with a thousand probe texts and eighty checkpoints, or of the tiny
/// test model with thousands.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

/// `cls` matrices by step. Stored embeddings are written once and never change, so an
/// entry never goes stale; once the budget is used up, further steps are read from disk
/// each time (the earliest steps stay: every analysis reads them all anyway).
#[derive(Debug)]
pub struct PositionCache {
    budget_bytes: usize,
    used_bytes: usize,
    by_step: HashMap<u64, Arc<Vec<f32>>>,
    hidden: Option<usize>,
}

impl Default for PositionCache {
    fn default() -> Self {
        Self::new(DEFAULT_CACHE_BYTES)
    }
}

impl PositionCache {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget_bytes,
            used_bytes: 0,
            by_step: HashMap::new(),
            hidden: None,
        }
    }

    /// The `cls` matrix of `step` and its width.
    pub fn positions(
        &mut self,
        state: &StateDir,
        step: u64,
    ) -> Result<(Arc<Vec<f32>>, usize), StoreError> {
        if let (Some(cls), Some(hidden)) = (self.by_step.get(&step), self.hidden) {
            return Ok((cls.clone(), hidden));
        }
        let stored = state.read_embeddings(step)?;
        let cls = Arc::new(stored.cls);
        let bytes = cls.len() * std::mem::size_of::<f32>();
        if self.used_bytes + bytes <= self.budget_bytes {
            self.used_bytes += bytes;
            self.by_step.insert(step, cls.clone());
            self.hidden = Some(stored.hidden);
        }
        Ok((cls, stored.hidden))
    }
}

struct StoredPositions<'a> {
    state: &'a StateDir,
    cache: &'a mut PositionCache,
    steps: &'a [u64],
    dim: usize,
}

impl<'a> StoredPositions<'a> {
    /// The stored checkpoints `steps`, read through `cache`; an error when none is stored.
    fn over(
        state: &'a StateDir,
        cache: &'a mut PositionCache,
        steps: &'a [u64],
    ) -> Result<Self, StoredAnalysisError> {
        let Some(&first) = steps.first() else {
            return Err(StoredAnalysisError::NothingStored(
                state.root().to_path_buf(),
            ));
        };
        let (_, dim) = cache.positions(state, first)?;
        Ok(Self {
            state,
            cache,
            steps,
            dim,
        })
    }
}

impl PositionSource for StoredPositions<'_> {
    type Error = StoreError;

    fn dim(&self) -> usize {
        self.dim
    }

    fn positions(&mut self, checkpoint: usize) -> Result<Vec<f32>, StoreError> {
        let (cls, _) = self.cache.positions(self.state, self.steps[checkpoint])?;
        Ok(cls.as_ref().clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoredAnalysisError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("trajectory analysis: {0}")]
    Analysis(#[from] Box<AnalysisError<StoreError>>),
    #[error("{0}: no stored checkpoint to analyse")]
    NothingStored(std::path::PathBuf),
}

/// Trajectory analytics over the stored checkpoints `steps`.
pub fn analyze_stored(
    state: &StateDir,
    cache: &mut PositionCache,
    steps: &[u64],
    example_classes: &[usize],
    num_classes: usize,
    params: &AnalysisParams,
) -> Result<TrajectoryAnalysis, StoredAnalysisError> {
    let mut source = StoredPositions::over(state, cache, steps)?;
    analyze(&mut source, steps, example_classes, num_classes, params)
        .map_err(|error| StoredAnalysisError::Analysis(Box::new(error)))
}

/// The three clusterings of `analysis`'s examples (final embeddings, whole and trimmed
/// trajectories) from the stored `[CLS]` positions, trimmed at `detector`'s onsets.
pub fn cluster_stored(
    state: &StateDir,
    cache: &mut PositionCache,
    analysis: &TrajectoryAnalysis,
    detector: DetectorKind,
) -> Result<Clustering, StoredAnalysisError> {
    let mut source = StoredPositions::over(state, cache, &analysis.steps)?;
    cluster(&mut source, analysis, detector)
        .map_err(|error| StoredAnalysisError::Analysis(Box::new(error)))
}

/// Every stored checkpoint of `steps` through `pca`: per checkpoint, x0, y0, x1, y1, …
pub fn project_stored(
    state: &StateDir,
    cache: &mut PositionCache,
    steps: &[u64],
    pca: &Pca2,
) -> Result<Vec<Vec<f64>>, StoreError> {
    steps
        .iter()
        .map(|&step| {
            let (cls, hidden) = cache.positions(state, step)?;
            let mut projected = Vec::with_capacity(cls.len() / hidden.max(1) * 2);
            pca.project_into(&cls, &mut projected);
            Ok(projected)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::Embeddings;

    fn state_with(steps: &[u64]) -> (tempfile::TempDir, StateDir) {
        let dir = tempfile::tempdir().unwrap();
        let manifest = super::super::one_class_manifest(2);
        let state = StateDir::open(dir.path(), &manifest).unwrap();
        for &step in steps {
            let x = step as f32;
            let embeddings = Embeddings {
                cls: vec![x, 0.0, 0.0, x],
                hidden: 2,
                logits: None,
                num_labels: 0,
            };
            state.write_embeddings(step, &embeddings, "test").unwrap();
        }
        (dir, state)
    }

    #[test]
    fn a_cached_step_is_not_read_again_and_the_budget_holds() {
        let (dir, state) = state_with(&[1, 2]);
        // Room for one 2×2 f32 matrix (16 bytes).
        let mut cache = PositionCache::new(16);
        assert_eq!(
            *cache.positions(&state, 1).unwrap().0,
            vec![1.0, 0.0, 0.0, 1.0]
        );
        assert_eq!(
            *cache.positions(&state, 2).unwrap().0,
            vec![2.0, 0.0, 0.0, 2.0]
        );
        std::fs::remove_dir_all(dir.path().join("embeddings")).unwrap();
        assert_eq!(cache.positions(&state, 1).unwrap().1, 2, "step 1 is cached");
        assert!(
            cache.positions(&state, 2).is_err(),
            "step 2 was over budget"
        );
    }

    #[test]
    fn projections_of_every_step_and_no_analysis_without_steps() {
        let (_dir, state) = state_with(&[1, 3]);
        let mut cache = PositionCache::default();
        let pca = Pca2 {
            mean: vec![0.0, 0.0],
            components: [vec![1.0, 0.0], vec![0.0, 1.0]],
        };
        let cloud = project_stored(&state, &mut cache, &[1, 3], &pca).unwrap();
        assert_eq!(
            cloud,
            vec![vec![1.0, 0.0, 0.0, 1.0], vec![3.0, 0.0, 0.0, 3.0]]
        );
        let error = analyze_stored(
            &state,
            &mut cache,
            &[],
            &[0, 0],
            1,
            &AnalysisParams::default(),
        )
        .unwrap_err();
        assert!(matches!(error, StoredAnalysisError::NothingStored(_)));
    }
}
