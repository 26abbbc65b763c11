//! The NEON micro-kernel (aarch64): tiles of 8 rows × 12 outputs, three 4-lane vectors a
//! row in 24 of the 32 vector registers, the tile's 8 row values in two more and
//! multiplied by lane (`fmla v.4s, v.4s, v.s[lane]`), so no broadcast is needed. The
//! edges go through a small stack copy (NEON has no masked loads); packing is the
//! portable one of [`Kernel`].

use std::arch::aarch64::*;

use super::kernel::{Kernel, Start};
use super::vector::row_operations;
use crate::embed::Isa;

const ROWS: usize = 8;
const COLUMNS: usize = 12;

/// Proof that this CPU has NEON (every aarch64 Linux CPU does; checked all the same).
#[derive(Debug, Clone, Copy)]
pub struct Neon(());

impl Kernel for Neon {
    const ISA: Isa = Isa::Neon;
    const ROWS: usize = ROWS;
    const COLUMNS: usize = COLUMNS;

    fn detect() -> Option<Self> {
        std::arch::is_aarch64_feature_detected!("neon").then_some(Neon(()))
    }

    #[target_feature(enable = "neon")]
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
        let mut sums = [vdupq_n_f32(0.0); 3 * ROWS];
        match start {
            Start::Bias(bias) => {
                let parts = [0, 4, 8].map(|offset| vld1q_f32(bias[offset..].as_ptr()));
                for row in 0..ROWS {
                    sums[3 * row..3 * row + 3].copy_from_slice(&parts);
                }
            }
            Start::Accumulate => {
                for row in 0..tile_rows {
                    let mut values = [0f32; COLUMNS];
                    values[..columns].copy_from_slice(&out[row * out_stride..][..columns]);
                    for part in 0..3 {
                        sums[3 * row + part] = vld1q_f32(values[4 * part..].as_ptr());
                    }
                }
            }
        }
        let (mut row_values, mut weights) = (rows.as_ptr(), panel.as_ptr());
        for _ in 0..panel.len() / COLUMNS {
            // SAFETY: the depth's steps of COLUMNS weights and ROWS row values lie in the slices.
            let parts = [
                vld1q_f32(weights),
                vld1q_f32(weights.add(4)),
                vld1q_f32(weights.add(8)),
            ];
            let (first, second) = (vld1q_f32(row_values), vld1q_f32(row_values.add(4)));
            macro_rules! multiply_by_lane {
                ($($row:literal: $values:ident[$lane:literal]),*) => {$(
                    for part in 0..3 {
                        let sum = &mut sums[3 * $row + part];
                        *sum = vfmaq_laneq_f32::<$lane>(*sum, parts[part], $values);
                    }
                )*};
            }
            multiply_by_lane!(
                0: first[0], 1: first[1], 2: first[2], 3: first[3],
                4: second[0], 5: second[1], 6: second[2], 7: second[3]
            );
            row_values = row_values.add(ROWS);
            weights = weights.add(COLUMNS);
        }
        for row in 0..tile_rows {
            let mut values = [0f32; COLUMNS];
            for part in 0..3 {
                vst1q_f32(values[4 * part..].as_mut_ptr(), sums[3 * row + part]);
            }
            out[row * out_stride..][..columns].copy_from_slice(&values[..columns]);
        }
    }

    row_operations!("neon");
}

#[cfg(test)]
mod tests {
    super::super::kernel::tests::kernel_tests!(super::Neon);
}
