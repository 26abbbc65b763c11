//! What an instruction set contributes to the CPU backend, and nothing more: the tile
//! product at the heart of every Linear layer, the packing that feeds it, and the row
//! operations compiled for its vectors. Everything else (the weights' panel layout,
//! row bands and their claims, depth slices, cache blocking, the encoder itself) is
//! written once, generic over [`Kernel`].
//!
//! A new instruction set is one more module that implements [`Kernel`] on a proof type
//! only its `detect` makes: the tile shape (`ROWS` × `COLUMNS`, chosen to fill its
//! vector registers), `tile_product`, and the row operations through
//! [`super::vector::row_operations`]. Packing has a portable version here; a module
//! overrides it where a register transpose pays.

use std::time::Instant;

use super::linear::AlignedBuffer;
use crate::checkpoint::Activation;
use crate::embed::Isa;

/// What a tile's sums start from: the bias (first slice of inputs) or what earlier
/// slices wrote.
#[derive(Clone, Copy)]
pub enum Start<'a> {
    /// The panel's `COLUMNS` bias values (padded with zeros past the last output).
    Bias(&'a [f32]),
    Accumulate,
}

/// One instruction set's micro-kernel. Values of an implementing type exist only on a
/// CPU that has the set (its `detect` checks); the unsafe methods also rely on the
/// bounds that [`run_tile`], [`pack_tile_rows`] and [`pack_weight_panel`] check before
/// they call them, so that an implementation can be a `#[target_feature]` pointer walk.
pub trait Kernel: Copy + Send + Sync + 'static {
    const ISA: Isa;
    /// Input rows per tile.
    const ROWS: usize;
    /// Outputs per weight panel.
    const COLUMNS: usize;

    fn detect() -> Option<Self>;

    /// `out[r][c] (+)= Σ_step rows[step·ROWS + r] · panel[step·COLUMNS + c]` for
    /// `tile_rows` rows and `columns` outputs, the sums started as `start` says; `out`'s
    /// rows are `out_stride` apart. Only those rows and columns of `out` are touched.
    ///
    /// # Safety
    /// The bounds [`run_tile`] checks hold.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_product(
        self,
        rows: &[f32],
        panel: &[f32],
        out: &mut [f32],
        out_stride: usize,
        tile_rows: usize,
        columns: usize,
        start: Start<'_>,
    );

    /// Writes `rows[r·stride + first_input + step]` at `packed[step·ROWS + r]` for every
    /// step of the tile's depth (`packed.len() / ROWS`), zero for rows past the last
    /// (`rows` holds `rows.len() / stride` of them). This portable version is what a
    /// module without a register transpose uses.
    ///
    /// # Safety
    /// The bounds [`pack_tile_rows`] checks hold.
    unsafe fn pack_rows(self, rows: &[f32], stride: usize, first_input: usize, packed: &mut [f32]) {
        portable_pack_rows::<Self>(rows, stride, first_input, packed, 0)
    }

    /// Writes panel `panel` of `weight` ([outputs, inputs], as PyTorch stores it) input
    /// by input: `target[input·COLUMNS + c] = weight[(panel·COLUMNS + c)·inputs + input]`.
    /// `target` arrives zeroed: outputs past the last stay zero. Portable, as above.
    ///
    /// # Safety
    /// The bounds [`pack_weight_panel`] checks hold.
    unsafe fn pack_panel(self, weight: &[f32], inputs: usize, panel: usize, target: &mut [f32]) {
        portable_pack_panel::<Self>(weight, inputs, panel, target, 0)
    }

    /// `value = activation(value)` for every value.
    fn activate(self, values: &mut [f32], kind: Activation);

    /// `row = LayerNorm(row + residual)` for each row of `weight.len()` values, as
    /// PyTorch computes it: mean, then the biased variance of the centred values.
    fn add_layer_norm(
        self,
        rows: &mut [f32],
        residual: Option<&[f32]>,
        weight: &[f32],
        bias: &[f32],
        eps: f32,
    );

    /// In-place softmax of `row * scale`.
    fn scaled_softmax(self, row: &mut [f32], scale: f32);
}

/// [`Kernel::pack_rows`] one value at a time, from step `first_step` on (a module's
/// transpose leaves the steps past its last whole block to this).
pub fn portable_pack_rows<K: Kernel>(
    rows: &[f32],
    stride: usize,
    first_input: usize,
    packed: &mut [f32],
    first_step: usize,
) {
    let tile_rows = rows.len() / stride;
    for (step, values) in packed
        .chunks_exact_mut(K::ROWS)
        .enumerate()
        .skip(first_step)
    {
        for (row, value) in values.iter_mut().enumerate() {
            *value = if row < tile_rows {
                rows[row * stride + first_input + step]
            } else {
                0.0
            };
        }
    }
}

/// [`Kernel::pack_panel`] one value at a time, from input `first_input` on.
pub fn portable_pack_panel<K: Kernel>(
    weight: &[f32],
    inputs: usize,
    panel: usize,
    target: &mut [f32],
    first_input: usize,
) {
    let first_output = panel * K::COLUMNS;
    let panel_outputs = K::COLUMNS.min(weight.len() / inputs - first_output);
    for output in 0..panel_outputs {
        let source = &weight[(first_output + output) * inputs..][..inputs];
        for (input, &value) in source.iter().enumerate().skip(first_input) {
            target[input * K::COLUMNS + output] = value;
        }
    }
}

/// [`Kernel::tile_product`] after checking what its pointer walk relies on: `rows` and
/// `panel` hold the same number of steps, the tile and its columns are within the
/// kernel's shape, a bias start has a whole panel of values, and `out` holds every
/// value written.
#[allow(clippy::too_many_arguments)]
pub fn run_tile<K: Kernel>(
    kernel: K,
    rows: &[f32],
    panel: &[f32],
    out: &mut [f32],
    out_stride: usize,
    tile_rows: usize,
    columns: usize,
    start: Start<'_>,
) {
    let depth = panel.len() / K::COLUMNS;
    assert!(
        panel.len() == depth * K::COLUMNS && rows.len() == depth * K::ROWS,
        "rows and panel differ in depth"
    );
    assert!((1..=K::ROWS).contains(&tile_rows) && (1..=K::COLUMNS).contains(&columns));
    assert!(
        out.len() >= (tile_rows - 1) * out_stride + columns,
        "output tile exceeds its buffer"
    );
    if let Start::Bias(bias) = start {
        assert_eq!(bias.len(), K::COLUMNS, "a bias start is one panel wide");
    }
    // SAFETY: `kernel` exists only on a CPU with its instruction set; the bounds are
    // checked above.
    unsafe { kernel.tile_product(rows, panel, out, out_stride, tile_rows, columns, start) }
}

/// [`Kernel::pack_rows`] after checking that the tile has at most `ROWS` rows and the
/// depth fits within them.
pub fn pack_tile_rows<K: Kernel>(
    kernel: K,
    rows: &[f32],
    stride: usize,
    first_input: usize,
    packed: &mut [f32],
) {
    let depth = packed.len() / K::ROWS;
    assert!(packed.len() == depth * K::ROWS && rows.len().is_multiple_of(stride));
    assert!(rows.len() / stride <= K::ROWS && first_input + depth <= stride);
    // SAFETY: as in `run_tile`.
    unsafe { kernel.pack_rows(rows, stride, first_input, packed) }
}

/// [`Kernel::pack_panel`] after checking that `weight` is whole rows of `inputs`, the
/// panel lies within it and `target` is one panel.
pub fn pack_weight_panel<K: Kernel>(
    kernel: K,
    weight: &[f32],
    inputs: usize,
    panel: usize,
    target: &mut [f32],
) {
    assert!(inputs > 0 && weight.len().is_multiple_of(inputs));
    assert!(panel * K::COLUMNS < weight.len() / inputs && target.len() == inputs * K::COLUMNS);
    // SAFETY: as in `run_tile`.
    unsafe { kernel.pack_panel(weight, inputs, panel, target) }
}

/// The tile product's rate in GFLOP/s on the calling thread with its operands in L1
/// cache (a full tile, 384 inputs deep, from a zero bias), measured for about
/// `seconds`: the ceiling of this instruction set's kernel on this CPU, which
/// `dwell bench` prints beside the passes it times.
pub fn rate_in_l1<K: Kernel>(kernel: K, seconds: f64) -> f64 {
    const DEPTH: usize = 384;
    const BATCH: usize = 1000;
    // Aligned as the packed weights are: a vector load that straddles two cache lines
    // would halve the rate.
    let mut rows = AlignedBuffer::zeroed(DEPTH * K::ROWS);
    rows.fill(0.5);
    let mut panel = AlignedBuffer::zeroed(DEPTH * K::COLUMNS);
    panel.fill(0.25);
    let zeros = vec![0.0; K::COLUMNS];
    let mut out = vec![0.0; K::ROWS * K::COLUMNS];
    let started = Instant::now();
    let mut tiles = 0usize;
    while tiles == 0 || started.elapsed().as_secs_f64() < seconds {
        for _ in 0..BATCH {
            run_tile(
                kernel,
                &rows,
                &panel,
                std::hint::black_box(&mut out),
                K::COLUMNS,
                K::ROWS,
                K::COLUMNS,
                Start::Bias(&zeros),
            );
        }
        tiles += BATCH;
    }
    let flops = 2.0 * (DEPTH * K::ROWS * K::COLUMNS * tiles) as f64;
    flops / started.elapsed().as_secs_f64() / 1e9
}

#[cfg(test)]
pub(super) mod tests {
    //! The checks every kernel must pass, called from each instruction set's tests with
    //! its forced kernel (so that a machine with AVX-512 tests the AVX2 kernel too).
    use super::*;

    fn value(i: usize, seed: usize) -> f32 {
        ((i * seed) % 97) as f32 / 97.0 - 0.5
    }

    /// Every tile height and column count, from the bias and accumulating, against the
    /// plain sums; values outside the tile untouched.
    pub fn tile_product_matches_plain_sums<K: Kernel>(kernel: K) {
        let (rows_n, columns_n) = (K::ROWS, K::COLUMNS);
        for depth in [1, 7, 33] {
            let rows: Vec<f32> = (0..depth * rows_n).map(|i| value(i, 31)).collect();
            let panel: Vec<f32> = (0..depth * columns_n).map(|i| value(i, 57)).collect();
            let bias: Vec<f32> = (0..columns_n).map(|i| value(i, 13)).collect();
            for tile_rows in 1..=rows_n {
                for columns in 1..=columns_n {
                    let stride = columns_n + 3;
                    for accumulate in [false, true] {
                        let before: Vec<f32> = (0..rows_n * stride).map(|i| value(i, 7)).collect();
                        let mut out = before.clone();
                        let start = if accumulate {
                            Start::Accumulate
                        } else {
                            Start::Bias(&bias)
                        };
                        run_tile(
                            kernel, &rows, &panel, &mut out, stride, tile_rows, columns, start,
                        );
                        for r in 0..rows_n {
                            for c in 0..stride {
                                let index = r * stride + c;
                                let expected = if r < tile_rows && c < columns {
                                    let first = if accumulate { before[index] } else { bias[c] };
                                    (0..depth).fold(first as f64, |sum, step| {
                                        sum + rows[step * rows_n + r] as f64
                                            * panel[step * columns_n + c] as f64
                                    }) as f32
                                } else {
                                    before[index]
                                };
                                assert!(
                                    (out[index] - expected).abs() <= 1e-5,
                                    "{:?} depth {depth}, tile {tile_rows}×{columns}, \
                                     accumulate {accumulate}: out[{r}][{c}] = {}, expected {expected}",
                                    K::ISA,
                                    out[index]
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The kernel's packing equals the portable definition, at every edge.
    pub fn packing_matches_its_definition<K: Kernel>(kernel: K) {
        for (tile_rows, stride, first_input, depth) in [
            (1, 5, 0, 5),
            (K::ROWS, 40, 3, 37),
            (K::ROWS - 1, 64, 16, 48),
            (2, 17, 0, 17),
        ] {
            let rows: Vec<f32> = (0..tile_rows * stride).map(|i| value(i, 31)).collect();
            let mut packed = vec![f32::NAN; depth * K::ROWS];
            pack_tile_rows(kernel, &rows, stride, first_input, &mut packed);
            for step in 0..depth {
                for row in 0..K::ROWS {
                    let expected = if row < tile_rows {
                        rows[row * stride + first_input + step]
                    } else {
                        0.0
                    };
                    assert_eq!(packed[step * K::ROWS + row], expected, "{:?} rows", K::ISA);
                }
            }
        }
        for (outputs, inputs) in [(1, 1), (K::COLUMNS + 3, 19), (3 * K::COLUMNS, 48), (5, 40)] {
            let weight: Vec<f32> = (0..outputs * inputs).map(|i| value(i, 57)).collect();
            for panel in 0..outputs.div_ceil(K::COLUMNS) {
                let mut target = vec![0.0; inputs * K::COLUMNS];
                pack_weight_panel(kernel, &weight, inputs, panel, &mut target);
                for input in 0..inputs {
                    for c in 0..K::COLUMNS {
                        let output = panel * K::COLUMNS + c;
                        let expected = if output < outputs {
                            weight[output * inputs + input]
                        } else {
                            0.0
                        };
                        assert_eq!(
                            target[input * K::COLUMNS + c],
                            expected,
                            "{:?} panel",
                            K::ISA
                        );
                    }
                }
            }
        }
    }

    /// Every generic check of the CPU backend as tests of one instruction set's module, on
    /// its kernel forced: each says it was skipped where the CPU lacks the set.
    macro_rules! kernel_tests {
        ($kernel:ty) => {
            $crate::embed::cpu::kernel::tests::kernel_tests!($kernel:
                kernel::tile_product_matches_plain_sums,
                kernel::packing_matches_its_definition,
                linear::a_small_layer_matches_hand_computed_values,
                linear::every_edge_of_the_tiling_matches_the_plain_product,
                attention::attention_matches_the_plain_formula,
                vector::every_activation_equals_its_definition,
                vector::softmax_of_rows_shorter_than_longer_than_and_as_long_as_a_vector,
                vector::layer_norm_softmax_and_gelu_match_hand_computed_rows,
            );
        };
        ($kernel:ty: $($module:ident::$check:ident,)+) => {
            fn forced() -> Option<$kernel> {
                use $crate::embed::cpu::kernel::Kernel;
                let kernel = <$kernel>::detect();
                if kernel.is_none() {
                    eprintln!("skipped: this CPU has no {}", <$kernel>::ISA.name());
                }
                kernel
            }

            $(
                #[test]
                fn $check() {
                    forced().map($crate::embed::cpu::$module::tests::$check);
                }
            )+
        };
    }
    pub(in crate::embed::cpu) use kernel_tests;
}
