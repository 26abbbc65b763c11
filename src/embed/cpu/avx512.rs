//! The AVX-512 micro-kernel: tiles of 14 rows × 32 outputs (two 16-lane vectors a row,
//! 28 of the 32 vector registers), masked loads and stores at the edges, packing
//! through a 16 × 16 register transpose.

use std::arch::x86_64::*;

use super::kernel::{portable_pack_panel, portable_pack_rows, Kernel, Start};
use super::vector::row_operations;
use crate::embed::Isa;

const ROWS: usize = 14;
const COLUMNS: usize = 32;
/// How many inputs ahead the panel and the rows are prefetched.
const PREFETCH_STEPS: usize = 32;

/// Proof that this CPU has AVX-512F, AVX-512DQ and FMA: only [`Kernel::detect`] makes
/// one.
#[derive(Debug, Clone, Copy)]
pub struct Avx512(());

impl Kernel for Avx512 {
    const ISA: Isa = Isa::Avx512;
    const ROWS: usize = ROWS;
    const COLUMNS: usize = COLUMNS;

    fn detect() -> Option<Self> {
        let present = std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("fma");
        present.then_some(Avx512(()))
    }

    #[target_feature(enable = "avx512f")]
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
        let masks = column_masks(columns);
        let base = out.as_mut_ptr();
        let out_row = |row: usize| base.wrapping_add(row * out_stride);
        let mut sums = [_mm512_setzero_ps(); 2 * ROWS];
        match start {
            Start::Bias(bias) => {
                let low = _mm512_loadu_ps(bias.as_ptr());
                let high = _mm512_loadu_ps(bias[16..].as_ptr());
                for row in 0..ROWS {
                    sums[2 * row] = low;
                    sums[2 * row + 1] = high;
                }
            }
            Start::Accumulate => {
                for row in 0..tile_rows {
                    // SAFETY: masked-off lanes are not read; the lanes read lie in `out`
                    // (checked by `run_tile`).
                    sums[2 * row] = _mm512_maskz_loadu_ps(masks[0], out_row(row));
                    sums[2 * row + 1] =
                        _mm512_maskz_loadu_ps(masks[1], out_row(row).wrapping_add(16));
                }
            }
        }
        let (mut row_values, mut weights) = (rows.as_ptr(), panel.as_ptr());
        for _ in 0..panel.len() / COLUMNS {
            // A prefetch never faults, so it may run past the end of the panel.
            _mm_prefetch::<_MM_HINT_T0>(weights.wrapping_add(PREFETCH_STEPS * COLUMNS).cast());
            _mm_prefetch::<_MM_HINT_T0>(weights.wrapping_add(PREFETCH_STEPS * COLUMNS + 16).cast());
            _mm_prefetch::<_MM_HINT_T0>(row_values.wrapping_add(PREFETCH_STEPS * ROWS).cast());
            // SAFETY: the depth's steps of COLUMNS weights and ROWS row values lie in the
            // slices (`run_tile`).
            let low = _mm512_loadu_ps(weights);
            let high = _mm512_loadu_ps(weights.add(16));
            for row in 0..ROWS {
                let value = _mm512_set1_ps(*row_values.add(row));
                sums[2 * row] = _mm512_fmadd_ps(value, low, sums[2 * row]);
                sums[2 * row + 1] = _mm512_fmadd_ps(value, high, sums[2 * row + 1]);
            }
            row_values = row_values.add(ROWS);
            weights = weights.add(COLUMNS);
        }
        for row in 0..tile_rows {
            // SAFETY: as for the loads above.
            _mm512_mask_storeu_ps(out_row(row), masks[0], sums[2 * row]);
            _mm512_mask_storeu_ps(out_row(row).wrapping_add(16), masks[1], sums[2 * row + 1]);
        }
    }

    /// 16 steps at a time through a register transpose, since a scalar copy or a
    /// scatter cost a tenth of the products.
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_rows(self, rows: &[f32], stride: usize, first_input: usize, packed: &mut [f32]) {
        let depth = packed.len() / ROWS;
        let tile_rows = rows.len() / stride;
        let whole = depth - depth % 16;
        for first_step in (0..whole).step_by(16) {
            let mut block = [_mm512_setzero_ps(); 16];
            for (row, lanes) in block.iter_mut().enumerate().take(tile_rows) {
                let source = &rows[row * stride + first_input + first_step..][..16];
                *lanes = _mm512_loadu_ps(source.as_ptr());
            }
            transpose(&mut block);
            for (step, lanes) in block.iter().enumerate() {
                let target = &mut packed[(first_step + step) * ROWS..][..ROWS];
                // SAFETY: the mask writes the first ROWS (14) lanes, all inside `target`.
                _mm512_mask_storeu_ps(target.as_mut_ptr(), (1 << ROWS) - 1, *lanes);
            }
        }
        portable_pack_rows::<Self>(rows, stride, first_input, packed, whole);
    }

    /// 16 inputs at a time through the register transpose (a scalar copy was a tenth
    /// of the load time).
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_panel(self, weight: &[f32], inputs: usize, panel: usize, target: &mut [f32]) {
        let outputs = weight.len() / inputs;
        let whole = inputs - inputs % 16;
        let first_output = panel * COLUMNS;
        let panel_outputs = COLUMNS.min(outputs - first_output);
        let source = |output: usize| &weight[(first_output + output) * inputs..][..inputs];
        for first_input in (0..whole).step_by(16) {
            for half in 0..2 {
                let mut block = [_mm512_setzero_ps(); 16];
                for (row, lanes) in block.iter_mut().enumerate() {
                    let output = half * 16 + row;
                    if output < panel_outputs {
                        *lanes = _mm512_loadu_ps(source(output)[first_input..][..16].as_ptr());
                    }
                }
                transpose(&mut block);
                for (step, lanes) in block.iter().enumerate() {
                    let place = &mut target[(first_input + step) * COLUMNS + half * 16..][..16];
                    _mm512_storeu_ps(place.as_mut_ptr(), *lanes);
                }
            }
        }
        portable_pack_panel::<Self>(weight, inputs, panel, target, whole);
    }

    row_operations!("avx512f,avx512dq,fma");
}

/// Transposes 16 rows of 16 lanes in place: for each bit of the row and lane indices, a
/// butterfly swaps that bit between them.
#[target_feature(enable = "avx512f")]
fn transpose(block: &mut [__m512; 16]) {
    for bit in 0..4 {
        let distance = 1usize << bit;
        // Lane l of the lower row takes lane l (bit clear) or lane l - distance of the
        // upper row; lane l of the upper row takes lane l + distance of the lower row or
        // lane l of the upper. Index 16 + i names lane i of the second operand.
        let pick = |upper: bool| {
            let lanes: [i32; 16] = std::array::from_fn(|lane| {
                let clear = lane & distance == 0;
                match (upper, clear) {
                    (false, true) => lane as i32,
                    (false, false) => (16 + lane - distance) as i32,
                    (true, true) => (lane + distance) as i32,
                    (true, false) => (16 + lane) as i32,
                }
            });
            // SAFETY: `lanes` is 16 i32 values, one 512-bit load.
            unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
        };
        let (lower_pick, upper_pick) = (pick(false), pick(true));
        for row in (0..16).filter(|row| row & distance == 0) {
            let (lower, upper) = (block[row], block[row + distance]);
            block[row] = _mm512_permutex2var_ps(lower, lower_pick, upper);
            block[row + distance] = _mm512_permutex2var_ps(lower, upper_pick, upper);
        }
    }
}

/// Lane masks for `columns` (≤ 32) valid outputs across the two vectors.
fn column_masks(columns: usize) -> [__mmask16; 2] {
    let lanes = |count: usize| match count {
        0 => 0,
        16.. => 0xffff,
        _ => ((1u32 << count) - 1) as __mmask16,
    };
    [lanes(columns), lanes(columns.saturating_sub(16))]
}

#[cfg(test)]
mod tests {
    super::super::kernel::tests::kernel_tests!(super::Avx512);
}
