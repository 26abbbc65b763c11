//! The AVX2 + FMA micro-kernel (x86-64 CPUs without AVX-512: AMD before Zen 4, Intel
//! client CPUs, many cloud instances): tiles of 6 rows × 16 outputs, two 8-lane vectors
//! a row in 12 of the 16 vector registers, with two for the panel's vectors and one for
//! the broadcast row value (the shape BLIS and OpenBLAS use on Haswell and Zen).
//! Packing goes through an 8 × 8 register transpose.

use std::arch::x86_64::*;

use super::kernel::{portable_pack_panel, portable_pack_rows, Kernel, Start};
use super::vector::row_operations;
use crate::embed::Isa;

const ROWS: usize = 6;
const COLUMNS: usize = 16;
/// How many inputs ahead the panel and the rows are prefetched (a panel step is one
/// 64-byte line here).
const PREFETCH_STEPS: usize = 32;

/// Proof that this CPU has AVX2 and FMA: only [`Kernel::detect`] makes one.
#[derive(Debug, Clone, Copy)]
pub struct Avx2(());

impl Kernel for Avx2 {
    const ISA: Isa = Isa::Avx2;
    const ROWS: usize = ROWS;
    const COLUMNS: usize = COLUMNS;

    fn detect() -> Option<Self> {
        let present = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        present.then_some(Avx2(()))
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_product(
        self,
        rows: &[f32],
        panel: &[f32],
        out: &mut [f32],
        out_stride: usize,
        tile_rows: usize,
        columns: usize,
        start: Start<'_>,
    ) {
        let whole = columns == COLUMNS;
        let masks = column_masks(columns);
        let base = out.as_mut_ptr();
        let out_row = |row: usize| base.wrapping_add(row * out_stride);
        let mut sums = [_mm256_setzero_ps(); 2 * ROWS];
        match start {
            Start::Bias(bias) => {
                let low = _mm256_loadu_ps(bias.as_ptr());
                let high = _mm256_loadu_ps(bias[8..].as_ptr());
                for row in 0..ROWS {
                    sums[2 * row] = low;
                    sums[2 * row + 1] = high;
                }
            }
            Start::Accumulate => {
                for row in 0..tile_rows {
                    // SAFETY: the lanes read lie in `out` (checked by `run_tile`);
                    // masked-off lanes are neither read nor faulted on.
                    let place = out_row(row);
                    if whole {
                        sums[2 * row] = _mm256_loadu_ps(place);
                        sums[2 * row + 1] = _mm256_loadu_ps(place.add(8));
                    } else {
                        sums[2 * row] = _mm256_maskload_ps(place, masks[0]);
                        sums[2 * row + 1] = _mm256_maskload_ps(place.wrapping_add(8), masks[1]);
                    }
                }
            }
        }
        let (mut row_values, mut weights) = (rows.as_ptr(), panel.as_ptr());
        for _ in 0..panel.len() / COLUMNS {
            // A prefetch never faults, so it may run past the end of the panel.
            _mm_prefetch::<_MM_HINT_T0>(weights.wrapping_add(PREFETCH_STEPS * COLUMNS).cast());
            _mm_prefetch::<_MM_HINT_T0>(row_values.wrapping_add(PREFETCH_STEPS * ROWS).cast());
            // SAFETY: the depth's steps of COLUMNS weights and ROWS row values lie in the
            // slices (`run_tile`).
            let low = _mm256_loadu_ps(weights);
            let high = _mm256_loadu_ps(weights.add(8));
            for row in 0..ROWS {
                let value = _mm256_broadcast_ss(&*row_values.add(row));
                sums[2 * row] = _mm256_fmadd_ps(value, low, sums[2 * row]);
                sums[2 * row + 1] = _mm256_fmadd_ps(value, high, sums[2 * row + 1]);
            }
            row_values = row_values.add(ROWS);
            weights = weights.add(COLUMNS);
        }
        for row in 0..tile_rows {
            // SAFETY: as for the loads above.
            let place = out_row(row);
            if whole {
                _mm256_storeu_ps(place, sums[2 * row]);
                _mm256_storeu_ps(place.add(8), sums[2 * row + 1]);
            } else {
                _mm256_maskstore_ps(place, masks[0], sums[2 * row]);
                _mm256_maskstore_ps(place.wrapping_add(8), masks[1], sums[2 * row + 1]);
            }
        }
    }

    /// 8 steps at a time through the register transpose; each step's 6 values are
    /// stored as 4 + 2 lanes (AMD's masked stores are microcoded and slow).
    #[target_feature(enable = "avx2")]
    unsafe fn pack_rows(self, rows: &[f32], stride: usize, first_input: usize, packed: &mut [f32]) {
        let depth = packed.len() / ROWS;
        let tile_rows = rows.len() / stride;
        let whole = depth - depth % 8;
        for first_step in (0..whole).step_by(8) {
            let mut block = [_mm256_setzero_ps(); 8];
            for (row, lanes) in block.iter_mut().enumerate().take(tile_rows) {
                let source = &rows[row * stride + first_input + first_step..][..8];
                *lanes = _mm256_loadu_ps(source.as_ptr());
            }
            transpose(&mut block);
            for (step, lanes) in block.iter().enumerate() {
                let target = &mut packed[(first_step + step) * ROWS..][..ROWS];
                let (low, high) = (
                    _mm256_castps256_ps128(*lanes),
                    _mm256_extractf128_ps::<1>(*lanes),
                );
                // SAFETY: 4 values at target[0..4], 2 (64 bits) at target[4..6].
                _mm_storeu_ps(target.as_mut_ptr(), low);
                _mm_storel_epi64(target[4..].as_mut_ptr().cast(), _mm_castps_si128(high));
            }
        }
        portable_pack_rows::<Self>(rows, stride, first_input, packed, whole);
    }

    /// 8 inputs at a time through the register transpose.
    #[target_feature(enable = "avx2")]
    unsafe fn pack_panel(self, weight: &[f32], inputs: usize, panel: usize, target: &mut [f32]) {
        let outputs = weight.len() / inputs;
        let whole = inputs - inputs % 8;
        let first_output = panel * COLUMNS;
        let panel_outputs = COLUMNS.min(outputs - first_output);
        let source = |output: usize| &weight[(first_output + output) * inputs..][..inputs];
        for first_input in (0..whole).step_by(8) {
            for half in 0..2 {
                let mut block = [_mm256_setzero_ps(); 8];
                for (row, lanes) in block.iter_mut().enumerate() {
                    let output = half * 8 + row;
                    if output < panel_outputs {
                        *lanes = _mm256_loadu_ps(source(output)[first_input..][..8].as_ptr());
                    }
                }
                transpose(&mut block);
                for (step, lanes) in block.iter().enumerate() {
                    let place = &mut target[(first_input + step) * COLUMNS + half * 8..][..8];
                    _mm256_storeu_ps(place.as_mut_ptr(), *lanes);
                }
            }
        }
        portable_pack_panel::<Self>(weight, inputs, panel, target, whole);
    }

    row_operations!("avx2,fma");
}

/// Transposes 8 rows of 8 lanes in place.
#[target_feature(enable = "avx")]
fn transpose(block: &mut [__m256; 8]) {
    // Pairs of rows interleaved, then pairs of pairs, then the 128-bit halves swapped.
    let pairs: [__m256; 8] = std::array::from_fn(|index| {
        let (row, high) = (2 * (index / 2), index % 2 == 1);
        if high {
            _mm256_unpackhi_ps(block[row], block[row + 1])
        } else {
            _mm256_unpacklo_ps(block[row], block[row + 1])
        }
    });
    // pairs: [lo01, hi01, lo23, hi23, lo45, hi45, lo67, hi67]
    let quads = [
        _mm256_shuffle_ps::<0x44>(pairs[0], pairs[2]),
        _mm256_shuffle_ps::<0xEE>(pairs[0], pairs[2]),
        _mm256_shuffle_ps::<0x44>(pairs[1], pairs[3]),
        _mm256_shuffle_ps::<0xEE>(pairs[1], pairs[3]),
        _mm256_shuffle_ps::<0x44>(pairs[4], pairs[6]),
        _mm256_shuffle_ps::<0xEE>(pairs[4], pairs[6]),
        _mm256_shuffle_ps::<0x44>(pairs[5], pairs[7]),
        _mm256_shuffle_ps::<0xEE>(pairs[5], pairs[7]),
    ];
    // quads[c] holds column c of rows 0-3 (low half) and column c + 4 (high half);
    // quads[4 + c] the same for rows 4-7.
    for column in 0..4 {
        block[column] = _mm256_permute2f128_ps::<0x20>(quads[column], quads[4 + column]);
        block[column + 4] = _mm256_permute2f128_ps::<0x31>(quads[column], quads[4 + column]);
    }
}

/// Lane masks for `columns` (≤ 16) valid outputs across the two vectors: all bits of a
/// lane set where it is valid.
#[target_feature(enable = "avx2")]
fn column_masks(columns: usize) -> [__m256i; 2] {
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let below = |count: usize| _mm256_cmpgt_epi32(_mm256_set1_epi32(count as i32), lanes);
    [below(columns.min(8)), below(columns.saturating_sub(8))]
}

#[cfg(test)]
mod tests {
    super::super::kernel::tests::kernel_tests!(super::Avx2);
}
