//! Clustering the probe examples three ways (the paper's Fig. 8): by their
//! final-checkpoint embeddings, by their whole trajectories, and by their
//! trajectories trimmed at the dwell onset, each into as many clusters as the
//! probe has classes, and each scored by its adjusted Rand index (ARI)
//! against the classes and against the final-embedding clustering.
//!
//! All three use Ward linkage (Lance–Williams update, nearest-neighbour
//! chain); the final embeddings on Euclidean distance in the full space, the
//! trajectories on dynamic time warping (DTW) over Euclidean ground
//! distances, which aligns trajectories of unequal length. Details and the
//! reasoning are in docs/ANALYTICS.md.

use ndarray::{s, Array2, Array3, ArrayView2, Axis};
use rayon::prelude::*;
use serde::Serialize;

use super::detectors::DetectorKind;
use super::trajectory::{AnalysisError, CheckpointReader, PositionSource, TrajectoryAnalysis};

/// Trajectories are compared over at most this many checkpoints, chosen
/// evenly by index with the first and the latest always in: DTW costs grows
/// with the square of the length, and 64 points resolve a run's motion.
pub const MAX_TRAJECTORY_CHECKPOINTS: usize = 64;

/// One merge of a linkage, numbered as scipy numbers them: the examples are
/// clusters 0..n-1 and the i-th merge (in height order) makes cluster n+i.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Merge {
    /// The smaller of the two merged cluster ids.
    pub left: usize,
    pub right: usize,
    pub height: f64,
    /// Examples in the merged cluster.
    pub size: usize,
}

/// A Ward hierarchy over n examples: n-1 merges in ascending height.
#[derive(Debug, Clone, PartialEq)]
pub struct Dendrogram {
    examples: usize,
    merges: Vec<Merge>,
}

impl Dendrogram {
    pub fn merges(&self) -> &[Merge] {
        &self.merges
    }

    /// The partition into `clusters` clusters (at least 1, at most n): the
    /// first n - clusters merges applied. Cluster ids are numbered by their
    /// smallest example index, so the first example is always in cluster 0.
    pub fn cut(&self, clusters: usize) -> Vec<usize> {
        let clusters = clusters.clamp(1.min(self.examples), self.examples);
        let mut sets = DisjointSets::new(self.examples);
        // A merge's ids name clusters made by earlier merges; map each id to
        // one of its examples.
        let mut representative: Vec<usize> = (0..self.examples).collect();
        for merge in &self.merges[..self.examples - clusters] {
            let (a, b) = (representative[merge.left], representative[merge.right]);
            sets.union(a, b);
            representative.push(a);
        }
        let mut numbering: Vec<Option<usize>> = vec![None; self.examples];
        let mut next = 0;
        (0..self.examples)
            .map(|example| {
                let root = sets.find(example);
                *numbering[root].get_or_insert_with(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect()
    }
}

struct DisjointSets {
    parent: Vec<usize>,
}

impl DisjointSets {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        self.parent[a.max(b)] = a.min(b);
    }
}

/// Ward linkage on a symmetric matrix of distances (not squared), as scipy's
/// `linkage(y, method="ward")` computes it: the nearest-neighbour chain with
/// the Lance–Williams update
/// d(k, i∪j) = √(((n_i+n_k)·d_ik² + (n_j+n_k)·d_jk² − n_k·d_ij²) / (n_i+n_j+n_k)).
///
/// Deterministic: a chain starts at the lowest-numbered active cluster; the
/// nearest neighbour is the one with the strictly smallest distance, on a tie
/// the chain's previous element if it is among the tied, else the
/// lowest-numbered; the merges are then sorted by height, keeping chain order
/// on equal heights (so a merge always precedes the merges that contain it).
pub fn ward_linkage(distances: ArrayView2<f64>) -> Dendrogram {
    let n = distances.nrows();
    let mut d = distances.to_owned();
    let mut size = vec![1usize; n];
    let mut active = vec![true; n];
    let mut raw: Vec<(usize, usize, f64)> = Vec::with_capacity(n.saturating_sub(1));
    let mut chain: Vec<usize> = Vec::with_capacity(n);
    while raw.len() + 1 < n {
        if chain.is_empty() {
            chain.push(active.iter().position(|&a| a).expect("two active clusters"));
        }
        let (x, y, height) = loop {
            let x = *chain.last().expect("non-empty chain");
            let previous = chain.len().checked_sub(2).map(|i| chain[i]);
            let mut nearest = previous;
            let mut best = previous.map_or(f64::INFINITY, |p| d[[x, p]]);
            for i in (0..n).filter(|&i| active[i] && i != x) {
                if d[[x, i]] < best {
                    best = d[[x, i]];
                    nearest = Some(i);
                }
            }
            let y = nearest.expect("another active cluster");
            if Some(y) == previous {
                chain.truncate(chain.len() - 2);
                break (x, y, best);
            }
            chain.push(y);
        };
        // The merged cluster lives on in the higher slot, as in scipy.
        let (low, high) = (x.min(y), x.max(y));
        let (n_low, n_high) = (size[low] as f64, size[high] as f64);
        for k in (0..n).filter(|&k| active[k] && k != low && k != high) {
            let n_k = size[k] as f64;
            let squared = ((n_low + n_k) * d[[low, k]].powi(2)
                + (n_high + n_k) * d[[high, k]].powi(2)
                - n_k * height.powi(2))
                / (n_low + n_high + n_k);
            // Distances that are not Euclidean (DTW) can make this negative.
            let merged = squared.max(0.0).sqrt();
            d[[high, k]] = merged;
            d[[k, high]] = merged;
        }
        active[low] = false;
        size[high] += size[low];
        raw.push((low, high, height));
    }
    Dendrogram {
        examples: n,
        merges: number_merges(n, raw),
    }
}

/// Sorts the chain's merges by height (stable) and renames the slots they
/// were found in to scipy's cluster ids.
fn number_merges(n: usize, mut raw: Vec<(usize, usize, f64)>) -> Vec<Merge> {
    raw.sort_by(|a, b| a.2.total_cmp(&b.2));
    let mut sets = DisjointSets::new(n);
    // The cluster id currently standing for each set's root.
    let mut id_of_root: Vec<usize> = (0..n).collect();
    let mut sizes = vec![1usize; n];
    raw.into_iter()
        .enumerate()
        .map(|(i, (a, b, height))| {
            let (root_a, root_b) = (sets.find(a), sets.find(b));
            let (id_a, id_b) = (id_of_root[root_a], id_of_root[root_b]);
            let size = sizes[root_a] + sizes[root_b];
            sets.union(root_a, root_b);
            let root = sets.find(root_a);
            id_of_root[root] = n + i;
            sizes[root] = size;
            Merge {
                left: id_a.min(id_b),
                right: id_a.max(id_b),
                height,
                size,
            }
        })
        .collect()
}

/// Pairwise Euclidean distances between the rows of `points`, from the Gram
/// matrix of the centred rows (centring keeps the subtraction in
/// ‖a‖² + ‖b‖² − 2a·b from losing the small distances).
pub fn euclidean_distances(points: ArrayView2<f64>) -> Array2<f64> {
    let Some(mean) = points.mean_axis(Axis(0)) else {
        return Array2::zeros((0, 0));
    };
    let centred = &points - &mean;
    let gram = centred.dot(&centred.t());
    let norms = gram.diag().to_owned();
    let mut distances = Array2::zeros(gram.raw_dim());
    for ((i, j), value) in distances.indexed_iter_mut() {
        if i != j {
            *value = (norms[i] + norms[j] - 2.0 * gram[[i, j]]).max(0.0).sqrt();
        }
    }
    distances
}

/// Dynamic time warping between two trajectories of `n` and `m` points, each at least
/// one, in time order, given the Euclidean ground distance of point i of the first and
/// point j of the second: the least sum of ground distances over a monotone alignment of
/// both from first to last point, divided by n + m so that long and short trajectories
/// are on one scale (the average cost per aligned point, up to the path's length). The
/// cost table is kept one row at a time.
fn dtw(n: usize, m: usize, ground: impl Fn(usize, usize) -> f64) -> f64 {
    let mut row = vec![f64::INFINITY; m];
    for i in 0..n {
        // `row[j]` still holds cost[i - 1][j] until it is overwritten with cost[i][j];
        // `diagonal` holds cost[i - 1][j - 1].
        let mut diagonal = f64::INFINITY;
        for j in 0..m {
            let above = row[j];
            let before = match (i, j) {
                (0, 0) => 0.0,
                (0, _) => row[j - 1],
                (_, 0) => above,
                _ => diagonal.min(above).min(row[j - 1]),
            };
            diagonal = above;
            row[j] = before + ground(i, j);
        }
    }
    row[m - 1] / (n + m) as f64
}

/// DTW between every pair of trajectories, once for each set of lengths: `positions`
/// is [examples, checkpoints, H] and, in a set, example d's trajectory is its first
/// `lengths[d]` checkpoints (each at least 1). The ground distances come from one
/// matrix product per example against every later example's points, shared by the
/// sets (a product per pair of 12-point trajectories spent most of its time packing
/// the small operands, and every pair recomputed the same squared norms).
fn trajectory_distances(positions: &Array3<f64>, length_sets: &[&[usize]]) -> Vec<Array2<f64>> {
    let (examples, checkpoints, width) = positions.dim();
    let positions = positions.as_standard_layout();
    let points = positions
        .view()
        .into_shape_with_order((examples * checkpoints, width))
        .expect("a standard-layout array reshapes");
    let norms: Vec<f64> = points.rows().into_iter().map(|p| p.dot(&p)).collect();
    let rows: Vec<Vec<Vec<f64>>> = (0..examples)
        .into_par_iter()
        .map(|i| {
            let later = (i + 1) * checkpoints;
            let products = points
                .slice(s![i * checkpoints..later, ..])
                .dot(&points.slice(s![later.., ..]).t());
            length_sets
                .iter()
                .map(|lengths| {
                    (i + 1..examples)
                        .map(|j| {
                            let offset = (j - i - 1) * checkpoints;
                            dtw(lengths[i], lengths[j], |a, b| {
                                let squared = norms[i * checkpoints + a]
                                    + norms[j * checkpoints + b]
                                    - 2.0 * products[[a, offset + b]];
                                squared.max(0.0).sqrt()
                            })
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    (0..length_sets.len())
        .map(|set| {
            let mut distances = Array2::zeros((examples, examples));
            for (i, sets) in rows.iter().enumerate() {
                for (offset, &value) in sets[set].iter().enumerate() {
                    let j = i + 1 + offset;
                    distances[[i, j]] = value;
                    distances[[j, i]] = value;
                }
            }
            distances
        })
        .collect()
}

/// The adjusted Rand index of two partitions of the same examples (Hubert and
/// Arabie's, as scikit-learn's `adjusted_rand_score`): 1 for identical
/// partitions, about 0 for independent ones. Two partitions that are both
/// one cluster, or both all singletons, score 1.
pub fn adjusted_rand_index(a: &[usize], b: &[usize]) -> f64 {
    assert_eq!(a.len(), b.len(), "two partitions of the same examples");
    let rows = a.iter().max().map_or(0, |m| m + 1);
    let columns = b.iter().max().map_or(0, |m| m + 1);
    let mut table = Array2::<f64>::zeros((rows, columns));
    for (&i, &j) in a.iter().zip(b) {
        table[[i, j]] += 1.0;
    }
    let pairs = |count: &f64| count * (count - 1.0) / 2.0;
    let index: f64 = table.iter().map(pairs).sum();
    let row_pairs: f64 = table.sum_axis(Axis(1)).iter().map(pairs).sum();
    let column_pairs: f64 = table.sum_axis(Axis(0)).iter().map(pairs).sum();
    let all_pairs = pairs(&(a.len() as f64));
    let expected = if all_pairs > 0.0 {
        row_pairs * column_pairs / all_pairs
    } else {
        0.0
    };
    let maximum = (row_pairs + column_pairs) / 2.0;
    if maximum == expected {
        return 1.0;
    }
    (index - expected) / (maximum - expected)
}

/// What `cluster` finds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Clustering {
    /// Clusters per method: the number of classes with probe examples.
    pub clusters: usize,
    /// The detector whose onsets trim the trajectories.
    pub detector: DetectorKind,
    /// The checkpoint steps the trajectories are compared over.
    pub steps: Vec<u64>,
    pub methods: Methods,
    /// The examples whose trimmed-trajectory cluster is not their final one:
    /// they travelled with other examples than those they settled with.
    pub moved: Vec<MovedExample>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Methods {
    /// Ward on Euclidean distances of the latest checkpoint's embeddings.
    #[serde(rename = "final")]
    pub final_embeddings: MethodResult,
    /// Ward on DTW distances of the whole trajectories.
    pub trajectory: MethodResult,
    /// Ward on DTW distances of the trajectories up to each example's onset.
    pub trimmed: MethodResult,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodResult {
    pub ari_vs_classes: f64,
    pub ari_vs_final: f64,
    /// Per cluster: its size and the class most of its examples have.
    pub cluster_summary: Vec<ClusterSummary>,
    /// The cluster of each probe example, in probe order.
    #[serde(skip)]
    pub assignment: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterSummary {
    pub cluster: usize,
    pub size: usize,
    /// The most frequent class in the cluster (the lower class id on a tie).
    pub majority_class: usize,
    pub majority_share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MovedExample {
    pub example: usize,
    pub class: usize,
    pub trimmed_cluster: usize,
    pub final_cluster: usize,
    /// The majority class of its trimmed-trajectory cluster: the class it
    /// travelled with.
    pub travels_with: usize,
    /// The majority class of its final cluster: the class it settled with.
    pub settles_with: usize,
}

/// Clusters the examples of `analysis` three ways, reading every checkpoint
/// of `source` once (the full space, whatever space the analysis used).
/// Trimmed trajectories end at each example's first stay point under
/// `detector` (that checkpoint included); an example that never dwells keeps
/// its whole trajectory.
pub fn cluster<S: PositionSource>(
    source: &mut S,
    analysis: &TrajectoryAnalysis,
    detector: DetectorKind,
) -> Result<Clustering, AnalysisError<S::Error>> {
    let steps = &analysis.steps;
    let labels: Vec<usize> = analysis.examples.iter().map(|e| e.class).collect();
    let examples = labels.len();
    let chosen = evenly_spaced(steps.len(), MAX_TRAJECTORY_CHECKPOINTS);
    let mut reader = CheckpointReader {
        source,
        steps,
        examples,
    };
    let dim = reader.dim();
    let mut positions = Array3::<f64>::zeros((examples, chosen.len(), dim));
    for (slot, &checkpoint) in chosen.iter().enumerate() {
        let matrix = reader.read(checkpoint)?;
        let matrix =
            ArrayView2::from_shape((examples, dim), &matrix).expect("the reader checked the size");
        positions
            .slice_mut(s![.., slot, ..])
            .assign(&matrix.mapv(f64::from));
    }
    let trimmed_lengths: Vec<usize> = analysis
        .examples
        .iter()
        .map(|example| {
            let onset = match detector {
                DetectorKind::Distance => example.onset_step.distance,
                DetectorKind::Straightness => example.onset_step.straightness,
                DetectorKind::Relative => example.onset_step.relative,
            };
            match onset {
                Some(onset) => chosen
                    .iter()
                    .take_while(|&&t| steps[t] <= onset)
                    .count()
                    .max(1),
                None => chosen.len(),
            }
        })
        .collect();
    let clusters = {
        let mut present = labels.clone();
        present.sort_unstable();
        present.dedup();
        present.len()
    };
    let latest = chosen.len().saturating_sub(1);
    let final_distances = euclidean_distances(positions.slice(s![.., latest, ..]));
    let whole_lengths = vec![chosen.len(); examples];
    let [whole_distances, trimmed_distances]: [Array2<f64>; 2] =
        trajectory_distances(&positions, &[&whole_lengths, &trimmed_lengths])
            .try_into()
            .expect("one distance matrix per set of lengths");
    let partition = |distances: &Array2<f64>| ward_linkage(distances.view()).cut(clusters.max(1));
    let final_assignment = if examples == 0 {
        Vec::new()
    } else {
        partition(&final_distances)
    };
    let result = |assignment: Vec<usize>| MethodResult {
        ari_vs_classes: adjusted_rand_index(&assignment, &labels),
        ari_vs_final: adjusted_rand_index(&assignment, &final_assignment),
        cluster_summary: summarise(&assignment, &labels),
        assignment,
    };
    let (whole, trimmed) = if examples == 0 {
        (Vec::new(), Vec::new())
    } else {
        (partition(&whole_distances), partition(&trimmed_distances))
    };
    let methods = Methods {
        final_embeddings: result(final_assignment.clone()),
        trajectory: result(whole),
        trimmed: result(trimmed),
    };
    let moved = moved_examples(&methods, &labels);
    Ok(Clustering {
        clusters,
        detector,
        steps: chosen.iter().map(|&t| steps[t]).collect(),
        methods,
        moved,
    })
}

/// At most `most` indexes of 0..count, evenly spread, first and last in.
fn evenly_spaced(count: usize, most: usize) -> Vec<usize> {
    if count <= most {
        return (0..count).collect();
    }
    let mut chosen: Vec<usize> = (0..most)
        .map(|i| (i * (count - 1) + (most - 1) / 2) / (most - 1))
        .collect();
    chosen.dedup();
    chosen
}

fn summarise(assignment: &[usize], labels: &[usize]) -> Vec<ClusterSummary> {
    let clusters = assignment.iter().max().map_or(0, |m| m + 1);
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    let mut table = Array2::<usize>::zeros((clusters, classes));
    for (&cluster, &class) in assignment.iter().zip(labels) {
        table[[cluster, class]] += 1;
    }
    table
        .outer_iter()
        .enumerate()
        .map(|(cluster, row)| {
            let size: usize = row.sum();
            // max_by_key keeps the last maximum: compare on the reversed id.
            let (majority_class, &count) = row
                .iter()
                .enumerate()
                .max_by_key(|&(class, count)| (*count, std::cmp::Reverse(class)))
                .expect("a cluster has classes");
            ClusterSummary {
                cluster,
                size,
                majority_class,
                majority_share: count as f64 / size.max(1) as f64,
            }
        })
        .collect()
}

/// Trimmed clusters are matched one to one to final clusters, greedily by
/// the examples they share (largest overlap first; on a tie the lower
/// trimmed, then final, cluster id); an example moved when its trimmed
/// cluster's match is not its final cluster.
fn moved_examples(methods: &Methods, labels: &[usize]) -> Vec<MovedExample> {
    let trimmed = &methods.trimmed;
    let settled = &methods.final_embeddings;
    let clusters = |a: &[usize]| a.iter().max().map_or(0, |m| m + 1);
    let (rows, columns) = (clusters(&trimmed.assignment), clusters(&settled.assignment));
    let mut overlap = Array2::<usize>::zeros((rows, columns));
    for (&t, &f) in trimmed.assignment.iter().zip(&settled.assignment) {
        overlap[[t, f]] += 1;
    }
    let mut cells: Vec<(usize, usize, usize)> = overlap
        .indexed_iter()
        .map(|((t, f), &count)| (t, f, count))
        .collect();
    cells.sort_by_key(|&(t, f, count)| (std::cmp::Reverse(count), t, f));
    let mut matched: Vec<Option<usize>> = vec![None; rows];
    let mut taken = vec![false; columns];
    for (t, f, _) in cells {
        if matched[t].is_none() && !taken[f] {
            matched[t] = Some(f);
            taken[f] = true;
        }
    }
    trimmed
        .assignment
        .iter()
        .zip(&settled.assignment)
        .enumerate()
        .filter(|(_, (&t, &f))| matched[t] != Some(f))
        .map(|(example, (&t, &f))| MovedExample {
            example,
            class: labels[example],
            trimmed_cluster: t,
            final_cluster: f,
            travels_with: trimmed.cluster_summary[t].majority_class,
            settles_with: settled.cluster_summary[f].majority_class,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DTW of two trajectories (rows: points in time order) the direct way, with
    /// their ground distances through one matrix product: the reference the batched
    /// [`trajectory_distances`] is held to. `None` for an empty trajectory.
    fn dtw_distance(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Option<f64> {
        let (n, m) = (a.nrows(), b.nrows());
        if n == 0 || m == 0 {
            return None;
        }
        let ground = euclidean_cross_distances(a, b);
        Some(dtw(n, m, |i, j| ground[[i, j]]))
    }

    /// ‖a_i − b_j‖ for every row pair, through one matrix product.
    fn euclidean_cross_distances(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Array2<f64> {
        let a_norms = a.map_axis(Axis(1), |row| row.dot(&row));
        let b_norms = b.map_axis(Axis(1), |row| row.dot(&row));
        let mut distances = a.dot(&b.t());
        for ((i, j), value) in distances.indexed_iter_mut() {
            *value = (a_norms[i] + b_norms[j] - 2.0 * *value).max(0.0).sqrt();
        }
        distances
    }
    use ndarray::array;

    #[test]
    fn ari_of_hand_computed_partitions() {
        // Identical up to renaming.
        assert_eq!(adjusted_rand_index(&[0, 0, 1, 1], &[1, 1, 0, 0]), 1.0);
        // a = {0,1},{2,3}; b = {0,2},{1,3}: no pair together in both.
        // index 0, row and column pairs 2 each, all pairs 6: expected 2/3,
        // max 2: (0 − 2/3) / (2 − 2/3) = −0.5.
        let ari = adjusted_rand_index(&[0, 0, 1, 1], &[0, 1, 0, 1]);
        assert!((ari + 0.5).abs() < 1e-12, "{ari}");
        // a = {0,1,2},{3,4}; b = {0,1},{2,3,4}: index C(2,2)+C(2,2) = 2,
        // rows 3+1 = 4, columns 1+3 = 4, all 10: expected 1.6, max 4:
        // (2 − 1.6) / (4 − 1.6) = 1/6.
        let ari = adjusted_rand_index(&[0, 0, 0, 1, 1], &[0, 0, 1, 1, 1]);
        assert!((ari - 1.0 / 6.0).abs() < 1e-12, "{ari}");
        assert_eq!(adjusted_rand_index(&[0, 0, 0], &[0, 0, 0]), 1.0);
        assert_eq!(adjusted_rand_index(&[0, 1, 2], &[2, 0, 1]), 1.0);
        assert_eq!(adjusted_rand_index(&[], &[]), 1.0);
    }

    #[test]
    fn ari_agrees_with_scikit_learn() {
        // scikit-learn 1.9.1's adjusted_rand_score(a, b) on these lists
        // (printed with repr).
        let a = [0, 0, 1, 1, 2, 2, 2, 0, 1, 3, 3, 3];
        let b = [1, 1, 1, 0, 0, 2, 2, 2, 0, 3, 3, 1];
        let ari = adjusted_rand_index(&a, &b);
        assert!((ari - SKLEARN_ARI).abs() < 1e-12, "{ari}");
    }

    const SKLEARN_ARI: f64 = 0.16143497757847533;

    fn points() -> Array2<f64> {
        array![
            [0.0, 0.0],
            [0.4, 0.1],
            [5.0, 5.0],
            [5.3, 4.6],
            [0.2, 1.1],
            [9.0, 0.0],
            [8.1, 0.7],
            [4.4, 5.9],
        ]
    }

    #[test]
    fn ward_equals_scipy_on_a_small_case() {
        let distances = euclidean_distances(points().view());
        let merges = ward_linkage(distances.view());
        let got: Vec<(usize, usize, usize)> = merges
            .merges()
            .iter()
            .map(|m| (m.left, m.right, m.size))
            .collect();
        assert_eq!(got, SCIPY_IDS.to_vec());
        for (merge, height) in merges.merges().iter().zip(SCIPY_HEIGHTS) {
            assert!(
                (merge.height - height).abs() < 1e-9,
                "{merge:?} vs {height}"
            );
        }
        assert_eq!(merges.cut(3), [0, 0, 1, 1, 0, 2, 2, 1]);
        assert_eq!(merges.cut(1), [0; 8]);
        assert_eq!(merges.cut(8), [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    // scipy 1.17.1: linkage(points, method="ward"); columns 0, 1 and 3 of Z,
    // and column 2 (printed with repr). fcluster(Z, 3, "maxclust") gave
    // [1 1 3 3 1 2 2 3], the partition `cut(3)` numbers by first example.
    const SCIPY_IDS: [(usize, usize, usize); 7] = [
        (0, 1, 2),
        (2, 3, 2),
        (5, 6, 2),
        (4, 8, 3),
        (7, 9, 3),
        (10, 12, 5),
        (11, 13, 8),
    ];
    const SCIPY_HEIGHTS: [f64; 7] = [
        0.4123105625617661,
        0.5000000000000001,
        1.1401754250991383,
        1.2124355652982142,
        1.5373136743466942,
        9.362407097892435,
        13.13552435192444,
    ];

    #[test]
    fn ward_ties_are_broken_by_the_lowest_cluster_id() {
        // Four corners of a unit square: every side is a tie.
        let square = array![[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]];
        let dendrogram = ward_linkage(euclidean_distances(square.view()).view());
        let pairs: Vec<(usize, usize)> = dendrogram
            .merges()
            .iter()
            .map(|m| (m.left, m.right))
            .collect();
        // 0's nearest is 1 (lower id than 2 at the same distance), 1's is 0
        // back: merge {0,1}; then 2 and 3 (distance 1) before the pair of pairs.
        assert_eq!(pairs, [(0, 1), (2, 3), (4, 5)]);
        assert_eq!(dendrogram.cut(2), [0, 0, 1, 1]);
    }

    #[test]
    fn dtw_aligns_trajectories_of_unequal_length() {
        let a = array![[0.0], [1.0], [2.0]];
        let b = array![[0.0], [2.0]];
        // Best alignment (0,0) (1,0 or 1,1) (2,1): costs 0 + 1 + 0 = 1, / (3 + 2).
        assert_eq!(dtw_distance(a.view(), b.view()), Some(0.2));
        assert_eq!(dtw_distance(a.view(), a.view()), Some(0.0));
        let point = array![[3.0]];
        // One point against three: 3 + 2 + 1 = 6, / 4.
        assert_eq!(dtw_distance(point.view(), a.view()), Some(1.5));
        assert_eq!(dtw_distance(a.slice(s![..0, ..]), a.view()), None);
    }

    #[test]
    fn batched_trajectory_distances_equal_pairwise_dtw() {
        let positions = Array3::from_shape_fn((5, 4, 3), |(d, t, k)| {
            ((d * 7 + t * 3 + k * 5) % 11) as f64 / 4.0 - 1.0
        });
        let whole = [4; 5];
        let trimmed = [4, 1, 3, 2, 4];
        let sets = trajectory_distances(&positions, &[&whole, &trimmed]);
        for (lengths, distances) in [whole.as_slice(), trimmed.as_slice()].iter().zip(&sets) {
            for i in 0..5 {
                for j in 0..5 {
                    let expected = if i == j {
                        0.0
                    } else {
                        dtw_distance(
                            positions.slice(s![i, ..lengths[i], ..]),
                            positions.slice(s![j, ..lengths[j], ..]),
                        )
                        .unwrap()
                    };
                    assert!((distances[[i, j]] - expected).abs() < 1e-12, "{i}, {j}");
                }
            }
        }
    }

    #[test]
    fn evenly_spaced_keeps_first_and_last() {
        assert_eq!(evenly_spaced(3, 64), [0, 1, 2]);
        assert_eq!(evenly_spaced(10, 4), [0, 3, 6, 9]);
        assert_eq!(evenly_spaced(0, 4), Vec::<usize>::new());
    }
}
