//! The `pca2` space: the top two principal components of one checkpoint's
//! positions, without a linear-algebra dependency.
//!
//! Numerical choices: everything is f64. The eigenproblem is solved on the
//! smaller of the covariance Xcᵀ·Xc (H×H) and the Gram matrix Xc·Xcᵀ (P×P);
//! both have the same non-zero eigenvalues and a Gram eigenvector a maps to
//! the component Xcᵀ·a. The top two eigenpairs come from block subspace
//! iteration (a block of 8 for faster convergence of the second vector) with
//! a Rayleigh–Ritz step solved by cyclic Jacobi, stopping when both residuals
//! |M·y - θ·y| fall to 1e-10·θ₁ (or after 1000 iterations). The start block
//! comes from a fixed-seed generator, so a fit is deterministic. A direction
//! without variance (fewer than three distinct points) is completed by the
//! first unit axis that is far from the components found.

use serde::Serialize;

const BLOCK: usize = 8;
const MAX_ITERATIONS: usize = 1000;
const RELATIVE_RESIDUAL: f64 = 1e-10;
/// Eigenvalues at or below this share of the largest count as no variance.
const NO_VARIANCE: f64 = 1e-12;
const SEED: u64 = 0x5eed_d3e1_1000_0002;

/// A fitted projection to two dimensions: y = Cᵀ(x - mean).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pca2 {
    pub mean: Vec<f64>,
    /// Unit, orthogonal; each one's entry of largest absolute value is
    /// positive (the first such entry on an exact tie).
    pub components: [Vec<f64>; 2],
}

impl Pca2 {
    /// Fits on the row-major `rows × dim` matrix. `dim` must be at least 2.
    pub fn fit(matrix: &[f32], rows: usize, dim: usize) -> Self {
        debug_assert!(dim >= 2 && matrix.len() == rows * dim);
        let mut mean = vec![0.0; dim];
        for row in matrix.chunks_exact(dim) {
            for (sum, &x) in mean.iter_mut().zip(row) {
                *sum += f64::from(x);
            }
        }
        if rows > 0 {
            mean.iter_mut().for_each(|sum| *sum /= rows as f64);
        }
        let centred: Vec<f64> = matrix
            .chunks_exact(dim)
            .flat_map(|row| row.iter().zip(&mean).map(|(&x, m)| f64::from(x) - m))
            .collect();

        let mut components: Vec<Vec<f64>> = Vec::with_capacity(2);
        if rows <= dim {
            let gram = gram_matrix(&centred, rows, dim);
            let pairs = top_two_eigenpairs(&gram, rows);
            let largest = pairs.first().map_or(0.0, |&(value, _)| value);
            for (value, vector) in pairs {
                if value > NO_VARIANCE * largest {
                    let mut component = vec![0.0; dim];
                    for (row, &weight) in centred.chunks_exact(dim).zip(&vector) {
                        for (c, &x) in component.iter_mut().zip(row) {
                            *c += weight * x;
                        }
                    }
                    normalise(&mut component);
                    components.push(component);
                }
            }
        } else {
            let covariance = covariance_matrix(&centred, dim);
            let pairs = top_two_eigenpairs(&covariance, dim);
            let largest = pairs.first().map_or(0.0, |&(value, _)| value);
            components.extend(
                pairs
                    .into_iter()
                    .filter(|&(value, _)| value > NO_VARIANCE * largest)
                    .map(|(_, vector)| vector),
            );
        }
        while components.len() < 2 {
            let axis = farthest_unit_axis(&components, dim);
            components.push(axis);
        }
        for component in &mut components {
            apply_sign_rule(component);
        }
        let second = components.pop().unwrap_or_default();
        let first = components.pop().unwrap_or_default();
        Self {
            mean,
            components: [first, second],
        }
    }

    /// Projects each row of a row-major `rows × dim` matrix, appending the
    /// two coordinates per row to `out`.
    pub fn project_into(&self, matrix: &[f32], out: &mut Vec<f64>) {
        let dim = self.mean.len();
        for row in matrix.chunks_exact(dim) {
            for component in &self.components {
                let coordinate = row
                    .iter()
                    .zip(&self.mean)
                    .zip(component)
                    .map(|((&x, m), c)| (f64::from(x) - m) * c)
                    .sum();
                out.push(coordinate);
            }
        }
    }
}

fn gram_matrix(centred: &[f64], rows: usize, dim: usize) -> Vec<f64> {
    let mut gram = vec![0.0; rows * rows];
    for i in 0..rows {
        let row_i = &centred[i * dim..(i + 1) * dim];
        for j in 0..=i {
            let row_j = &centred[j * dim..(j + 1) * dim];
            let value = dot(row_i, row_j);
            gram[i * rows + j] = value;
            gram[j * rows + i] = value;
        }
    }
    gram
}

fn covariance_matrix(centred: &[f64], dim: usize) -> Vec<f64> {
    let mut covariance = vec![0.0; dim * dim];
    for row in centred.chunks_exact(dim) {
        for (i, &xi) in row.iter().enumerate() {
            let upper = &mut covariance[i * dim + i..(i + 1) * dim];
            for (entry, &xj) in upper.iter_mut().zip(&row[i..]) {
                *entry += xi * xj;
            }
        }
    }
    for i in 0..dim {
        for j in 0..i {
            covariance[i * dim + j] = covariance[j * dim + i];
        }
    }
    covariance
}

/// The (up to) two largest eigenpairs of the symmetric PSD `n × n` matrix,
/// largest first, unit eigenvectors.
fn top_two_eigenpairs(matrix: &[f64], n: usize) -> Vec<(f64, Vec<f64>)> {
    if n == 0 {
        return Vec::new();
    }
    let wanted = n.min(2);
    let block = n.min(BLOCK);
    let mut random = SplitMix64(SEED);
    let mut basis: Vec<Vec<f64>> = (0..block).map(|_| random.vector(n)).collect();
    orthonormalise(&mut basis, &mut random);
    let mut iteration = 0;
    loop {
        iteration += 1;
        let images: Vec<Vec<f64>> = basis.iter().map(|v| multiply(matrix, n, v)).collect();
        let mut projected = vec![vec![0.0; block]; block];
        for i in 0..block {
            for j in 0..=i {
                let value = (dot(&basis[i], &images[j]) + dot(&basis[j], &images[i])) / 2.0;
                projected[i][j] = value;
                projected[j][i] = value;
            }
        }
        let (values, vectors) = jacobi_eigen(projected);
        let combine = |columns: &[Vec<f64>], k: usize| {
            let mut out = vec![0.0; n];
            for (column, coefficient) in columns.iter().zip(vectors.iter().map(|row| row[k])) {
                for (o, &c) in out.iter_mut().zip(column) {
                    *o += coefficient * c;
                }
            }
            out
        };
        let ritz: Vec<Vec<f64>> = (0..block).map(|k| combine(&basis, k)).collect();
        let ritz_images: Vec<Vec<f64>> = (0..block).map(|k| combine(&images, k)).collect();
        let converged = (0..wanted).all(|k| {
            let residual: f64 = ritz_images[k]
                .iter()
                .zip(&ritz[k])
                .map(|(my, y)| (my - values[k] * y).powi(2))
                .sum::<f64>()
                .sqrt();
            residual <= RELATIVE_RESIDUAL * values[0].abs()
        });
        if converged || iteration >= MAX_ITERATIONS {
            return ritz
                .into_iter()
                .take(wanted)
                .zip(values)
                .map(|(mut vector, value)| {
                    normalise(&mut vector);
                    (value.max(0.0), vector)
                })
                .collect();
        }
        basis = ritz_images;
        orthonormalise(&mut basis, &mut random);
    }
}

/// Eigen-decomposition of a small symmetric matrix by cyclic Jacobi
/// rotations: eigenvalues in descending order and the matching eigenvectors
/// as columns (`vectors[row][k]`).
fn jacobi_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for _sweep in 0..100 {
        let off_diagonal: f64 = (0..n)
            .flat_map(|i| (0..i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        let diagonal: f64 = (0..n).map(|i| a[i][i] * a[i][i]).sum();
        if off_diagonal <= 1e-30 * diagonal {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q] == 0.0 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut().chain(v.iter_mut()) {
                    let (kp, kq) = (row[p], row[q]);
                    row[p] = c * kp - s * kq;
                    row[q] = s * kp + c * kq;
                }
                let (upper, lower) = a.split_at_mut(q);
                for (pk, qk) in upper[p].iter_mut().zip(lower[0].iter_mut()) {
                    (*pk, *qk) = (c * *pk - s * *qk, s * *pk + c * *qk);
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j][j].total_cmp(&a[i][i]));
    let values = order.iter().map(|&k| a[k][k]).collect();
    let vectors = v
        .iter()
        .map(|row| order.iter().map(|&k| row[k]).collect())
        .collect();
    (values, vectors)
}

/// Modified Gram–Schmidt, applied twice for orthogonality to working
/// precision; a vector that collapses (the matrix has lower rank than the
/// block) is replaced by a fresh pseudo-random one.
fn orthonormalise(vectors: &mut [Vec<f64>], random: &mut SplitMix64) {
    for i in 0..vectors.len() {
        let (done, rest) = vectors.split_at_mut(i);
        let vector = &mut rest[0];
        for attempt in 0.. {
            let original = norm(vector);
            for _pass in 0..2 {
                for previous in done.iter() {
                    let projection = dot(vector, previous);
                    for (x, p) in vector.iter_mut().zip(previous) {
                        *x -= projection * p;
                    }
                }
            }
            let remaining = norm(vector);
            if remaining > 1e-8 * original || attempt == 16 {
                normalise(vector);
                break;
            }
            *vector = random.vector(vector.len());
        }
    }
}

/// The unit axis least aligned with the (at most one) components found:
/// a deterministic completion for a direction without variance.
fn farthest_unit_axis(components: &[Vec<f64>], dim: usize) -> Vec<f64> {
    let alignment = |axis: usize| -> f64 { components.iter().map(|c| c[axis] * c[axis]).sum() };
    let best = (0..dim)
        .min_by(|&i, &j| alignment(i).total_cmp(&alignment(j)))
        .unwrap_or(0);
    let mut axis = vec![0.0; dim];
    axis[best] = 1.0;
    for component in components {
        let projection = component[best];
        for (x, c) in axis.iter_mut().zip(component) {
            *x -= projection * c;
        }
    }
    normalise(&mut axis);
    axis
}

fn apply_sign_rule(component: &mut [f64]) {
    let largest = component
        .iter()
        .copied()
        .reduce(|best, x| if x.abs() > best.abs() { x } else { best });
    if largest.is_some_and(|x| x < 0.0) {
        component.iter_mut().for_each(|x| *x = -*x);
    }
}

fn multiply(matrix: &[f64], n: usize, vector: &[f64]) -> Vec<f64> {
    matrix.chunks_exact(n).map(|row| dot(row, vector)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(vector: &[f64]) -> f64 {
    dot(vector, vector).sqrt()
}

fn normalise(vector: &mut [f64]) {
    let length = norm(vector);
    if length > 0.0 {
        vector.iter_mut().for_each(|x| *x /= length);
    }
}

/// A small fixed-seed generator so that fits never depend on global state.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    fn vector(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.next_unit()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(actual: &[f64], expected: &[f64], tolerance: f64) {
        assert_eq!(actual.len(), expected.len());
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() <= tolerance, "{actual:?} != {expected:?}");
        }
    }

    /// Points mean ± 2a and mean ± b with a = (0.6, -0.8, 0), b = (0.8, 0.6, 0):
    /// variance 2 along a, 0.5 along b, none along z.
    fn rotated_cross(padding: usize) -> (Vec<f32>, usize) {
        let mean = [1.0, 2.0, 3.0];
        let a = [0.6, -0.8, 0.0];
        let b = [0.8, 0.6, 0.0];
        let dim = 3 + padding;
        let mut matrix = Vec::new();
        for (scale, direction) in [(2.0, a), (-2.0, a), (1.0, b), (-1.0, b)] {
            for axis in 0..dim {
                let offset = if axis < 3 {
                    mean[axis] + scale * direction[axis]
                } else {
                    0.0
                };
                matrix.push(offset as f32);
            }
        }
        (matrix, dim)
    }

    #[test]
    fn hand_computed_components_follow_the_sign_rule() {
        // Four rows in three dimensions: the covariance path.
        let (matrix, dim) = rotated_cross(0);
        let pca = Pca2::fit(&matrix, 4, dim);
        // f32 inputs: the mean is exact only to f32 precision.
        assert_close(&pca.mean, &[1.0, 2.0, 3.0], 1e-6);
        // ±a has its largest entry at index 1 (|0.8|): +(−a) = (−0.6, 0.8, 0).
        assert_close(&pca.components[0], &[-0.6, 0.8, 0.0], 1e-6);
        assert_close(&pca.components[1], &[0.8, 0.6, 0.0], 1e-6);
        let mut projected = Vec::new();
        pca.project_into(&matrix, &mut projected);
        assert_close(
            &projected,
            &[-2.0, 0.0, 2.0, 0.0, 0.0, 1.0, 0.0, -1.0],
            1e-6,
        );
    }

    #[test]
    fn gram_path_agrees_with_the_covariance_path() {
        // Four rows in five dimensions: the Gram path.
        let (matrix, dim) = rotated_cross(2);
        let pca = Pca2::fit(&matrix, 4, dim);
        assert_close(&pca.components[0], &[-0.6, 0.8, 0.0, 0.0, 0.0], 1e-6);
        assert_close(&pca.components[1], &[0.8, 0.6, 0.0, 0.0, 0.0], 1e-6);
    }

    #[test]
    fn two_by_two_matches_the_closed_form() {
        // Covariance ∝ [[3, 1], [1, 3]]: eigenvectors (1, 1)/√2 (value 4),
        // (1, -1)/√2 (value 2), whose sign rounding decides between tied entries.
        let matrix = [2.0f32, 2.0, -2.0, -2.0, 1.0, -1.0, -1.0, 1.0];
        let pca = Pca2::fit(&matrix, 4, 2);
        let h = std::f64::consts::FRAC_1_SQRT_2;
        assert_close(&pca.components[0], &[h, h], 1e-9);
        assert_close(
            &pca.components[1]
                .iter()
                .map(|x| x.abs())
                .collect::<Vec<_>>(),
            &[h, h],
            1e-9,
        );
        assert!(pca.components[0].iter().all(|&x| x > 0.0));
    }

    #[test]
    fn missing_variance_is_completed_by_an_orthogonal_unit_axis() {
        // All points on the line through (0,0,0) and (0,0,1): one component.
        let matrix = [0.0f32, 0.0, -1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 3.0];
        let pca = Pca2::fit(&matrix, 3, 3);
        assert_close(&pca.components[0], &[0.0, 0.0, 1.0], 1e-9);
        assert_close(&pca.components[1], &[1.0, 0.0, 0.0], 1e-9);
        // A single point has no variance at all.
        let single = Pca2::fit(&[5.0, 6.0, 7.0], 1, 3);
        assert_close(&single.components[0], &[1.0, 0.0, 0.0], 0.0);
        assert_close(&single.components[1], &[0.0, 1.0, 0.0], 0.0);
    }

    #[test]
    fn fit_is_deterministic_and_matches_a_full_jacobi_decomposition() {
        let (rows, dim) = (40, 12);
        let mut random = SplitMix64(7);
        let matrix: Vec<f32> = random
            .vector(rows * dim)
            .iter()
            .enumerate()
            .map(|(i, &noise)| {
                let scale = match i % dim {
                    3 => 10.0,
                    7 => 4.0,
                    _ => 1.0,
                };
                (scale * noise) as f32
            })
            .collect();
        let pca = Pca2::fit(&matrix, rows, dim);
        assert_eq!(pca, Pca2::fit(&matrix, rows, dim));

        let centred: Vec<f64> = matrix
            .chunks_exact(dim)
            .flat_map(|row| row.iter().zip(&pca.mean).map(|(&x, m)| f64::from(x) - m))
            .collect();
        let covariance = covariance_matrix(&centred, dim);
        let (_, vectors) =
            jacobi_eigen(covariance.chunks_exact(dim).map(<[f64]>::to_vec).collect());
        for (k, component) in pca.components.iter().enumerate() {
            let mut expected: Vec<f64> = vectors.iter().map(|row| row[k]).collect();
            apply_sign_rule(&mut expected);
            assert_close(component, &expected, 1e-8);
        }
        assert!(dot(&pca.components[0], &pca.components[1]).abs() < 1e-12);
    }
}
