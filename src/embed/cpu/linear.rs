//! Linear layers, `out = input · weightᵀ + bias`, with a kernel of our own on weights
//! packed once when the checkpoint loads; the instruction set's part is the tile
//! product and packing of a [`Kernel`] (`super::avx512`, `super::avx2`, `super::neon`).
//!
//! Why not the `gemm` crate here (nor in attention, `super::attention`): it packs the weight matrix
//! again on every call and adds the bias in a separate pass, and its blocking suits these
//! thin products (384 or 1536 inputs) less well. Side by side on this project's shapes,
//! the AVX-512 kernel ran 1.2–1.3× faster where a layer has 1152 or 1536 outputs and
//! level with `gemm` at 384 (docs/BENCH.md).
//!
//! Layout: the weight is cut into panels of `K::COLUMNS` outputs, each stored input by
//! input (`COLUMNS` contiguous values per input), 64-byte aligned so that vector loads
//! do not straddle cache lines. The kernel holds a tile of `K::ROWS` input rows ×
//! `COLUMNS` outputs in registers while it walks up to [`DEPTH`] inputs, reading the
//! rows from a small packed copy. Each thread claims bands of rows; for each slice of
//! inputs it packs its row tiles, then every block of panels meets every tile while the
//! block sits in L2.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cell::RefCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Mutex;

use rayon::prelude::*;

use super::kernel::{pack_tile_rows, pack_weight_panel, run_tile, Kernel, Start};

/// Inputs per pass over a tile; a panel's slice of this depth is 96 KB with AVX-512's
/// 32 columns, 48 KB with AVX2's 16. Deeper slices reload and repack less: 768 ran
/// about 5 % faster than 384 over whole MiniLM runs (AVX-512), where the 1,536-input
/// feed-forward output took four slices.
const DEPTH: usize = 768;
/// Panels whose slices (768 KB at full depth for AVX-512, 384 KB for AVX2, within even
/// a Zen 3 core's 512 KB) stay in the L2 cache while every row tile passes them.
const PANELS_PER_BLOCK: usize = 8;
/// The fewest row tiles a thread claims at once (but for the last rows): each claim
/// streams every weight block into L2 again. 8 AVX-512 tiles are 112 rows.
const MIN_CLAIM_ROWS: usize = 112;

/// Buffers of at least this many bytes start on a 2 MiB boundary and ask the kernel for
/// transparent huge pages: the products walk megabytes of rows and weights, and with
/// 4 KiB pages every tile's rows and panel sit on different pages.
const HUGE_PAGE: usize = 2 << 20;

/// Floats starting on a cache-line boundary (a huge-page boundary when large),
/// zero-initialised.
pub struct AlignedBuffer {
    values: NonNull<f32>,
    len: usize,
    layout: Layout,
}

// SAFETY: the buffer owns its memory, like a `Box<[f32]>`.
unsafe impl Send for AlignedBuffer {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for AlignedBuffer {}

impl AlignedBuffer {
    pub fn zeroed(len: usize) -> Self {
        let bytes = (len * size_of::<f32>()).next_multiple_of(64).max(64);
        let align = if bytes >= HUGE_PAGE { HUGE_PAGE } else { 64 };
        let layout = Layout::from_size_align(bytes, align).expect("a buffer size within isize");
        // SAFETY: `layout` has a non-zero size.
        let memory = unsafe { alloc(layout) };
        let Some(values) = NonNull::new(memory.cast::<f32>()) else {
            handle_alloc_error(layout)
        };
        #[cfg(target_os = "linux")]
        if align == HUGE_PAGE {
            // A hint only: where huge pages are off, the kernel says so and 4 KiB pages
            // serve. Given before the first write, so that the pages faulted in are huge.
            // SAFETY: the range is the allocation just made.
            unsafe { libc::madvise(memory.cast(), bytes, libc::MADV_HUGEPAGE) };
        }
        // SAFETY: `memory` is valid for `bytes` bytes of writes.
        unsafe { memory.write_bytes(0, bytes) };
        Self {
            values,
            len,
            layout,
        }
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout, and freed only here.
        unsafe { dealloc(self.values.as_ptr().cast(), self.layout) }
    }
}

impl Deref for AlignedBuffer {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        // SAFETY: the allocation holds at least `len` initialised f32 values.
        unsafe { std::slice::from_raw_parts(self.values.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuffer {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as above, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.values.as_ptr(), self.len) }
    }
}

/// A Linear layer's weight in `K`'s panels, and its bias padded to whole panels.
pub struct PackedLinear<K: Kernel> {
    panels: AlignedBuffer,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
    kernel: PhantomData<K>,
}

impl<K: Kernel> PackedLinear<K> {
    /// `weight` is [outputs, inputs] as PyTorch stores it; `bias` has `outputs` values.
    pub fn new(kernel: K, weight: &[f32], bias: &[f32], inputs: usize) -> Self {
        let outputs = bias.len();
        assert_eq!(
            weight.len(),
            outputs * inputs,
            "weight is not [outputs, inputs]"
        );
        let count = outputs.div_ceil(K::COLUMNS);
        let mut panels = AlignedBuffer::zeroed(count * inputs * K::COLUMNS);
        if inputs > 0 {
            for (panel, target) in panels.chunks_exact_mut(inputs * K::COLUMNS).enumerate() {
                pack_weight_panel(kernel, weight, inputs, panel, target);
            }
        }
        let mut padded = bias.to_vec();
        padded.resize(count * K::COLUMNS, 0.0);
        Self {
            panels,
            bias: padded,
            inputs,
            outputs,
            kernel: PhantomData,
        }
    }

    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// `out = input · weightᵀ + bias` for the first `rows` rows of `input` (row-major,
    /// `inputs` wide) into the first `rows` rows of `out` (`outputs` wide), the rows
    /// claimed in bands by the rayon pool's threads (see [`Unclaimed::claim`]).
    pub fn apply(&self, kernel: K, input: &[f32], rows: usize, out: &mut [f32]) {
        let (inputs, outputs) = (self.inputs, self.outputs);
        assert!(
            input.len() >= rows * inputs,
            "input holds fewer than {rows} rows"
        );
        assert!(
            out.len() >= rows * outputs,
            "output holds fewer than {rows} rows"
        );
        if rows == 0 || outputs == 0 {
            return;
        }
        let threads = rayon::current_num_threads();
        let unclaimed = Mutex::new(Unclaimed {
            input: &input[..rows * inputs],
            out: &mut out[..rows * outputs],
        });
        (0..threads)
            .into_par_iter()
            .with_max_len(1)
            .for_each(|_| loop {
                let claim = {
                    let mut unclaimed = unclaimed.lock().unwrap_or_else(|e| e.into_inner());
                    unclaimed.claim(threads, K::ROWS, inputs, outputs)
                };
                let Some((input_band, out_band)) = claim else {
                    break;
                };
                let count = out_band.len() / outputs;
                PACKED_ROWS.with(|packed_rows| {
                    self.band(
                        kernel,
                        input_band,
                        count,
                        out_band,
                        &mut packed_rows.borrow_mut(),
                    )
                })
            });
    }

    /// One thread's rows: for each slice of [`DEPTH`] inputs, the rows are packed tile
    /// by tile, then each block of panels meets every row tile while it sits in L2.
    /// `input` holds `rows` rows of `inputs` values and `out` `rows` rows of `outputs`.
    fn band(&self, kernel: K, input: &[f32], rows: usize, out: &mut [f32], packed: &mut Vec<f32>) {
        let (inputs, outputs) = (self.inputs, self.outputs);
        let (tile_height, columns) = (K::ROWS, K::COLUMNS);
        let panel_count = outputs.div_ceil(columns);
        let tiles = rows.div_ceil(tile_height);
        for first_input in (0..inputs).step_by(DEPTH) {
            let depth = DEPTH.min(inputs - first_input);
            let tile_len = depth * tile_height;
            // Every value of the packed tiles is written below, so stale values from an
            // earlier call are never read and the buffer is not cleared.
            if packed.len() < tiles * tile_len {
                packed.resize(tiles * tile_len, 0.0);
            }
            for (tile, packed_tile) in packed.chunks_exact_mut(tile_len).take(tiles).enumerate() {
                let first_row = tile * tile_height;
                let tile_rows = tile_height.min(rows - first_row);
                pack_tile_rows(
                    kernel,
                    &input[first_row * inputs..(first_row + tile_rows) * inputs],
                    inputs,
                    first_input,
                    packed_tile,
                );
            }
            for first_panel in (0..panel_count).step_by(PANELS_PER_BLOCK) {
                let panels = first_panel..(first_panel + PANELS_PER_BLOCK).min(panel_count);
                for tile in 0..tiles {
                    let tile_rows = tile_height.min(rows - tile * tile_height);
                    for panel in panels.clone() {
                        let start = if first_input == 0 {
                            Start::Bias(&self.bias[panel * columns..(panel + 1) * columns])
                        } else {
                            Start::Accumulate
                        };
                        run_tile(
                            kernel,
                            &packed[tile * tile_len..(tile + 1) * tile_len],
                            &self.panels[(panel * inputs + first_input) * columns..]
                                [..depth * columns],
                            &mut out[tile * tile_height * outputs + panel * columns..],
                            outputs,
                            tile_rows,
                            columns.min(outputs - panel * columns),
                            start,
                        );
                    }
                }
            }
        }
    }
}

/// The rows of a product that no thread has claimed yet.
struct Unclaimed<'a> {
    input: &'a [f32],
    out: &'a mut [f32],
}

impl<'a> Unclaimed<'a> {
    /// Cuts the next band off the unclaimed rows: a share of what is left that shrinks as
    /// the product nears its end (guided scheduling), in whole tiles of `tile_height`
    /// rows and never under [`MIN_CLAIM_ROWS`] rows (rounded up to whole tiles). A thread that runs faster claims more bands, so threads
    /// finish together even when the host runs one core slower than the other (seen here:
    /// 123 against 150 GFLOP/s in the same second, which left the faster core idle for
    /// a tenth of every product split in equal halves); large first bands keep each block
    /// of weights in L2 for many row tiles.
    fn claim(
        &mut self,
        threads: usize,
        tile_height: usize,
        inputs: usize,
        outputs: usize,
    ) -> Option<(&'a [f32], &'a mut [f32])> {
        let rows = self.out.len() / outputs;
        if rows == 0 {
            return None;
        }
        let tiles = rows.div_ceil(tile_height);
        let fewest = MIN_CLAIM_ROWS.div_ceil(tile_height);
        let take = (tiles.div_ceil(2 * threads).max(fewest) * tile_height).min(rows);
        let (input, rest_input) = self.input.split_at(take * inputs);
        let (out, rest_out) = std::mem::take(&mut self.out).split_at_mut(take * outputs);
        self.input = rest_input;
        self.out = rest_out;
        Some((input, out))
    }
}

thread_local! {
    /// Each pool thread's packed rows, kept between calls so that no call faults in
    /// fresh pages.
    static PACKED_ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
pub(super) mod tests {
    //! The banding here; the products through each kernel module's tests, which call
    //! the generic checks below with their forced kernel.
    use super::*;

    /// `input · weightᵀ + bias` the plain way, in f64.
    fn reference(input: &[f32], weight: &[f32], bias: &[f32], inputs: usize) -> Vec<f32> {
        input
            .chunks_exact(inputs)
            .flat_map(|row| {
                weight
                    .chunks_exact(inputs)
                    .zip(bias)
                    .map(|(w, &b)| {
                        let dot: f64 = row.iter().zip(w).map(|(&x, &y)| x as f64 * y as f64).sum();
                        (dot + b as f64) as f32
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub fn a_small_layer_matches_hand_computed_values<K: Kernel>(simd: K) {
        // input [[1, 2], [3, 4]]; weight [out=3, in=2] = [[1, 0], [0, 1], [1, 1]].
        let layer = PackedLinear::new(
            simd,
            &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
            &[10.0, 20.0, 30.0],
            2,
        );
        let mut out = [-1.0; 7];
        layer.apply(simd, &[1.0, 2.0, 3.0, 4.0], 2, &mut out);
        assert_eq!(out, [11.0, 22.0, 33.0, 13.0, 24.0, 37.0, -1.0]);
    }

    #[test]
    fn bands_shrink_as_the_rows_run_out_and_cover_every_row_once() {
        // 2,048 rows are 147 tiles of 14 (AVX-512's). Each claim takes a quarter of the tiles left (two
        // threads), rounded up, at least 8 tiles, at most the rows left:
        // 37, 28, 21, 16, 12, 9 tiles, then 8, 8 and the last 102 rows.
        let (inputs, outputs) = (2, 3);
        let input: Vec<f32> = (0..2048 * inputs).map(|i| i as f32).collect();
        let mut out = vec![0f32; 2048 * outputs];
        let mut unclaimed = Unclaimed {
            input: &input,
            out: &mut out,
        };
        let mut bands = Vec::new();
        let mut next_row = 0;
        while let Some((input_band, out_band)) = unclaimed.claim(2, 14, inputs, outputs) {
            let rows = input_band.len() / inputs;
            assert_eq!(
                input_band[0],
                (next_row * inputs) as f32,
                "band starts in order"
            );
            assert_eq!(out_band.len(), rows * outputs);
            out_band.fill(1.0);
            next_row += rows;
            bands.push(rows);
        }
        assert_eq!(bands, [518, 392, 294, 224, 168, 126, 112, 112, 102]);
        assert!(out.iter().all(|&v| v == 1.0));
    }

    pub fn every_edge_of_the_tiling_matches_the_plain_product<K: Kernel>(simd: K) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        // Rows that leave partial tiles and bands (300 rows: three claims, the last of
        // 76 rows), outputs that leave a partial panel (and a panel block of more than
        // one), inputs over two depth slices.
        for (rows, inputs, outputs) in [
            (1, 3, 1),
            (29, 384, 9),
            (57, 800, 300),
            (15, 16, 33),
            (20, 37, 40),
            (300, 20, 40),
        ] {
            let value = |i: usize, seed: usize| ((i * seed) % 97) as f32 / 97.0 - 0.5;
            let input: Vec<f32> = (0..rows * inputs).map(|i| value(i, 31)).collect();
            let weight: Vec<f32> = (0..outputs * inputs).map(|i| value(i, 57)).collect();
            let bias: Vec<f32> = (0..outputs).map(|i| value(i, 13)).collect();
            let layer = PackedLinear::new(simd, &weight, &bias, inputs);
            let mut out = vec![f32::NAN; rows * outputs + 5];
            pool.install(|| layer.apply(simd, &input, rows, &mut out));
            let expected = reference(&input, &weight, &bias, inputs);
            for (index, (&got, &want)) in out.iter().zip(&expected).enumerate() {
                assert!(
                    (got - want).abs() <= 1e-4,
                    "{:?} {rows}×{inputs}→{outputs}: value {index} is {got}, expected {want}",
                    K::ISA
                );
            }
            assert!(
                out[rows * outputs..].iter().all(|v| v.is_nan()),
                "wrote past the rows"
            );
        }
    }
}
