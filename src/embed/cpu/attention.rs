//! Self-attention of one text, `softmax(Q·Kᵀ / √d)·V` head by head, through the same
//! tile product as the Linear layers: `Q·Kᵀ` is a Linear layer whose weight is the
//! head's keys (`[length, d]`, PyTorch's `[outputs, inputs]`), `P·V` one whose weight
//! is the values transposed. So attention runs on the instruction set the backend was
//! given and on no other: a forced `cpu-avx2` on an AVX-512 CPU is AVX2 throughout,
//! as on a CPU without AVX-512 (the `gemm` crate this replaced picks its kernels
//! from the CPU, whatever was forced).
//!
//! The operands are packed per head (a copy of `length · d` values each, against
//! `2 · length² · d` multiply-adds), into buffers each pool thread keeps between calls.

use std::cell::RefCell;

use super::kernel::{pack_tile_rows, pack_weight_panel, run_tile, Kernel, Start};

/// The widest tile any kernel has (AVX-512's 32 columns): the zero bias a product
/// without one starts from.
const ZEROS: [f32; 32] = [0.0; 32];

/// One pool thread's packed operands, kept at the last text's size (every value is
/// written before it is read), so that texts after the first allocate nothing.
#[derive(Default)]
struct Packed {
    /// One head's keys, contiguous: `[length, d]`.
    keys: Vec<f32>,
    /// The keys in panels (the weight of `Q·Kᵀ`).
    key_panels: Vec<f32>,
    /// The queries in row tiles.
    query_tiles: Vec<f32>,
    /// `Q·Kᵀ`, then its softmax: `[length, length]`.
    scores: Vec<f32>,
    /// The softmax rows in row tiles.
    score_tiles: Vec<f32>,
    /// The values in panels (the weight of `P·V`).
    value_panels: Vec<f32>,
}

thread_local! {
    static PACKED: RefCell<Packed> = RefCell::new(Packed::default());
}

/// The shape of one text's attention: `qkv` holds its `length` rows of queries, keys
/// and values (`3 · hidden` values each), `context` receives its `length` rows of
/// `hidden` values.
pub struct Heads {
    pub heads: usize,
    pub head_dim: usize,
    pub hidden: usize,
}

impl Heads {
    pub fn attend<K: Kernel>(&self, kernel: K, qkv: &[f32], length: usize, context: &mut [f32]) {
        let (hidden, d) = (self.hidden, self.head_dim);
        let stride = 3 * hidden;
        assert!(qkv.len() >= length * stride && context.len() >= length * hidden);
        assert!(self.heads * d == hidden && K::COLUMNS <= ZEROS.len());
        if length == 0 {
            return;
        }
        let scale = 1.0 / (d as f32).sqrt();
        let qkv = &qkv[..length * stride];
        PACKED.with(|packed| {
            let packed = &mut *packed.borrow_mut();
            for head in 0..self.heads {
                let column = head * d;
                // Q·Kᵀ: the keys are the weight, [length outputs, d inputs].
                packed.keys.resize(length * d, 0.0);
                for (token, key) in packed.keys.chunks_exact_mut(d).enumerate() {
                    key.copy_from_slice(&qkv[token * stride + hidden + column..][..d]);
                }
                let panel_len = d * K::COLUMNS;
                packed
                    .key_panels
                    .resize(length.div_ceil(K::COLUMNS) * panel_len, 0.0);
                for (panel, target) in packed.key_panels.chunks_exact_mut(panel_len).enumerate() {
                    // The last panel's columns past the last key stay zero, as packing
                    // expects.
                    target.fill(0.0);
                    pack_weight_panel(kernel, &packed.keys, d, panel, target);
                }
                packed.scores.resize(length * length, 0.0);
                let queries = Rows {
                    values: qkv,
                    stride,
                    first_input: column,
                    count: length,
                    depth: d,
                };
                queries.times(
                    kernel,
                    &mut packed.query_tiles,
                    &packed.key_panels,
                    length,
                    &mut packed.scores,
                    length,
                );
                for row in packed.scores.chunks_exact_mut(length) {
                    kernel.scaled_softmax(row, scale);
                }
                // P·V: the values transposed are the weight; panel p holds, input (token)
                // by input, the head's values p·COLUMNS.. .
                let panel_len = length * K::COLUMNS;
                packed
                    .value_panels
                    .resize(d.div_ceil(K::COLUMNS) * panel_len, 0.0);
                for (panel, target) in packed.value_panels.chunks_exact_mut(panel_len).enumerate() {
                    let first = column + panel * K::COLUMNS;
                    let width = K::COLUMNS.min(column + d - first);
                    for (token, values) in target.chunks_exact_mut(K::COLUMNS).enumerate() {
                        let source = &qkv[token * stride + 2 * hidden + first..][..width];
                        values[..width].copy_from_slice(source);
                        values[width..].fill(0.0);
                    }
                }
                let weights = Rows {
                    values: &packed.scores,
                    stride: length,
                    first_input: 0,
                    count: length,
                    depth: length,
                };
                weights.times(
                    kernel,
                    &mut packed.score_tiles,
                    &packed.value_panels,
                    d,
                    &mut context[column..],
                    hidden,
                );
            }
        })
    }
}

/// `count` rows of `depth` inputs each: row `r`'s are `values[r·stride + first_input..]`.
struct Rows<'a> {
    values: &'a [f32],
    stride: usize,
    first_input: usize,
    count: usize,
    depth: usize,
}

impl Rows<'_> {
    /// `out = rows · panels` from zero: the rows packed into `tiles` (the caller's buffer),
    /// then every row tile times every panel (`outputs` in all, `depth` inputs each) into
    /// `out`, whose rows are `out_stride` apart.
    fn times<K: Kernel>(
        &self,
        kernel: K,
        tiles: &mut Vec<f32>,
        panels: &[f32],
        outputs: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let tile_len = self.depth * K::ROWS;
        let panel_len = self.depth * K::COLUMNS;
        tiles.resize(self.count.div_ceil(K::ROWS) * tile_len, 0.0);
        for (tile, target) in tiles.chunks_exact_mut(tile_len).enumerate() {
            let rows = tile_range::<K>(tile, self.count);
            pack_tile_rows(
                kernel,
                &self.values[rows.start * self.stride..rows.end * self.stride],
                self.stride,
                self.first_input,
                target,
            );
        }
        for (tile, packed_rows) in tiles.chunks_exact(tile_len).enumerate() {
            let rows = tile_range::<K>(tile, self.count);
            for (panel, weights) in panels.chunks_exact(panel_len).enumerate() {
                let first = panel * K::COLUMNS;
                run_tile(
                    kernel,
                    packed_rows,
                    weights,
                    &mut out[rows.start * out_stride + first..],
                    out_stride,
                    rows.len(),
                    K::COLUMNS.min(outputs - first),
                    Start::Bias(&ZEROS[..K::COLUMNS]),
                );
            }
        }
    }
}

/// The rows of row tile `tile` of a text of `length` tokens.
fn tile_range<K: Kernel>(tile: usize, length: usize) -> std::ops::Range<usize> {
    let first = tile * K::ROWS;
    first..(first + K::ROWS).min(length)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Attention of texts of every length around the tile edges, against the plain
    /// formula in f64, with a head width that leaves a partial panel on every kernel.
    pub fn attention_matches_the_plain_formula<K: Kernel>(kernel: K) {
        let value = |i: usize, seed: usize| ((i * seed) % 97) as f32 / 97.0 - 0.5;
        for (heads, head_dim) in [(2, 20), (3, 32), (1, 64)] {
            let hidden = heads * head_dim;
            let shape = Heads {
                heads,
                head_dim,
                hidden,
            };
            for length in [1, 2, K::ROWS - 1, K::ROWS, K::COLUMNS + 1, 45] {
                let qkv: Vec<f32> = (0..length * 3 * hidden).map(|i| value(i, 31)).collect();
                let mut context = vec![f32::NAN; length * hidden];
                shape.attend(kernel, &qkv, length, &mut context);
                let at = |token: usize, part: usize, head: usize, i: usize| {
                    qkv[token * 3 * hidden + part * hidden + head * head_dim + i] as f64
                };
                for head in 0..heads {
                    for query in 0..length {
                        let scores: Vec<f64> = (0..length)
                            .map(|key| {
                                (0..head_dim)
                                    .map(|i| at(query, 0, head, i) * at(key, 1, head, i))
                                    .sum::<f64>()
                                    / (head_dim as f64).sqrt()
                            })
                            .collect();
                        let top = scores.iter().cloned().fold(f64::MIN, f64::max);
                        let weights: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
                        let total: f64 = weights.iter().sum();
                        for i in 0..head_dim {
                            let expected: f64 = (0..length)
                                .map(|key| weights[key] / total * at(key, 2, head, i))
                                .sum();
                            let got = context[query * hidden + head * head_dim + i];
                            assert!(
                                (got as f64 - expected).abs() <= 1e-5,
                                "{:?} {heads}×{head_dim}, length {length}: head {head}, \
                                 query {query}, value {i} is {got}, expected {expected}",
                                K::ISA
                            );
                        }
                    }
                }
            }
        }
    }
}
