//! Linear layers, `out = input · weightᵀ + bias`, with an AVX-512 kernel of our own on
//! weights packed once when the checkpoint loads.
//!
//! Why not the `gemm` crate here (it still serves attention): it packs the weight matrix
//! again on every call and adds the bias in a separate pass, and its blocking suits these
//! thin products (384 or 1536 inputs) less well. Side by side on this project's shapes,
//! this kernel ran 1.2–1.3× faster where a layer has 1152 or 1536 outputs and level with
//! `gemm` at 384 (docs/BENCH.md).
//!
//! Layout: the weight is cut into panels of [`COLUMNS`] outputs, each stored input by
//! input (`COLUMNS` contiguous values per input), 64-byte aligned so that every vector
//! load is one cache line. The kernel holds a tile of [`ROWS`] input rows × `COLUMNS`
//! outputs in 28 registers while it walks up to [`DEPTH`] inputs, reading the rows from a
//! small packed copy and prefetching the panel ahead of use.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Mutex;

use rayon::prelude::*;

use super::vector::Avx512;

/// Input rows per tile: with two vectors of outputs each, 28 of the 32 vector registers.
const ROWS: usize = 14;
/// Outputs per panel: two 16-lane vectors.
const COLUMNS: usize = 32;
/// Inputs per pass over a tile; a panel's slice of this depth is 96 KB. Deeper slices
/// reload and repack less: 768 ran about 5 % faster than 384 over whole MiniLM runs,
/// where the 1,536-input feed-forward output took four slices.
const DEPTH: usize = 768;
/// Panels whose slices (768 KB at full depth) stay in the L2 cache while every row tile
/// passes them.
const PANELS_PER_BLOCK: usize = 8;
/// How many inputs ahead the panel and the rows are prefetched.
const PREFETCH_STEPS: usize = 32;
/// The fewest row tiles a thread claims at once (but for the last rows): each claim
/// streams every weight block into L2 again.
const MIN_CLAIM_TILES: usize = 8;

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

/// A Linear layer's weight in panels, and its bias padded to whole panels.
pub struct PackedLinear {
    panels: AlignedBuffer,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl PackedLinear {
    /// `weight` is [outputs, inputs] as PyTorch stores it; `bias` has `outputs` values.
    pub fn new(_proof: Avx512, weight: &[f32], bias: &[f32], inputs: usize) -> Self {
        let outputs = bias.len();
        assert_eq!(
            weight.len(),
            outputs * inputs,
            "weight is not [outputs, inputs]"
        );
        let count = outputs.div_ceil(COLUMNS);
        let mut panels = AlignedBuffer::zeroed(count * inputs * COLUMNS);
        // SAFETY: `_proof` exists only on a CPU with AVX-512F; the sizes are as asserted.
        unsafe { pack_weight(weight, outputs, inputs, &mut panels) };
        let mut padded = bias.to_vec();
        padded.resize(count * COLUMNS, 0.0);
        Self {
            panels,
            bias: padded,
            inputs,
            outputs,
        }
    }

    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// `out = input · weightᵀ + bias` for the first `rows` rows of `input` (row-major,
    /// `inputs` wide) into the first `rows` rows of `out` (`outputs` wide), the rows
    /// claimed in bands by the rayon pool's threads (see [`Unclaimed::claim`]).
    pub fn apply(&self, _proof: Avx512, input: &[f32], rows: usize, out: &mut [f32]) {
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
                    unclaimed.claim(threads, inputs, outputs)
                };
                let Some((input_band, out_band)) = claim else {
                    break;
                };
                let count = out_band.len() / outputs;
                PACKED_ROWS.with(|packed_rows| {
                    let mut packed_rows = packed_rows.borrow_mut();
                    // SAFETY: `_proof` exists only on a CPU with AVX-512F; the band's
                    // slices hold `count` rows each, as `claim` cuts them.
                    unsafe { self.band(input_band, count, out_band, &mut packed_rows) }
                })
            });
    }

    /// One thread's rows: for each slice of [`DEPTH`] inputs, the rows are packed tile
    /// by tile, then each block of panels meets every row tile while it sits in L2.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `input` holds `rows` rows of `inputs` values and `out`
    /// `rows` rows of `outputs` values.
    #[target_feature(enable = "avx512f")]
    unsafe fn band(&self, input: &[f32], rows: usize, out: &mut [f32], packed: &mut Vec<f32>) {
        let (inputs, outputs) = (self.inputs, self.outputs);
        let panel_count = outputs.div_ceil(COLUMNS);
        let tiles = rows.div_ceil(ROWS);
        for first_input in (0..inputs).step_by(DEPTH) {
            let depth = DEPTH.min(inputs - first_input);
            // Every value of the packed tiles is written below, so stale values from an
            // earlier call are never read and the buffer is not cleared.
            if packed.len() < tiles * depth * ROWS {
                packed.resize(tiles * depth * ROWS, 0.0);
            }
            for (tile, packed_tile) in packed
                .chunks_exact_mut(depth * ROWS)
                .take(tiles)
                .enumerate()
            {
                let first_row = tile * ROWS;
                let tile_rows = ROWS.min(rows - first_row);
                pack_tile(
                    &input[first_row * inputs..(first_row + tile_rows) * inputs],
                    inputs,
                    first_input,
                    packed_tile,
                );
            }
            for first_panel in (0..panel_count).step_by(PANELS_PER_BLOCK) {
                let panels = first_panel..(first_panel + PANELS_PER_BLOCK).min(panel_count);
                for tile in 0..tiles {
                    let tile_rows = ROWS.min(rows - tile * ROWS);
                    for panel in panels.clone() {
                        let columns = COLUMNS.min(outputs - panel * COLUMNS);
                        let start = if first_input == 0 {
                            Start::Bias(&self.bias[panel * COLUMNS..(panel + 1) * COLUMNS])
                        } else {
                            Start::Accumulate
                        };
                        tile_product(
                            &packed[tile * depth * ROWS..(tile + 1) * depth * ROWS],
                            &self.panels[(panel * inputs + first_input) * COLUMNS..]
                                [..depth * COLUMNS],
                            &mut out[tile * ROWS * outputs + panel * COLUMNS..],
                            outputs,
                            tile_rows,
                            columns,
                            start,
                        );
                    }
                }
            }
        }
    }
}

/// Writes each panel of [`COLUMNS`] outputs input by input, 16 inputs at a time
/// through the register transpose (a scalar copy was a tenth of the load time).
/// `panels` arrives zeroed: outputs past the last stay zero.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn pack_weight(weight: &[f32], outputs: usize, inputs: usize, panels: &mut [f32]) {
    let whole = inputs - inputs % 16;
    for (panel, target) in panels.chunks_exact_mut(inputs * COLUMNS).enumerate() {
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
        for input in whole..inputs {
            for output in 0..panel_outputs {
                target[input * COLUMNS + output] = source(output)[input];
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
    /// the product nears its end (guided scheduling), in whole tiles and never under
    /// [`MIN_CLAIM_TILES`] tiles. A thread that runs faster claims more bands, so threads
    /// finish together even when the host runs one core slower than the other (seen here:
    /// 123 against 150 GFLOP/s in the same second, which left the faster core idle for
    /// a tenth of every product split in equal halves); large first bands keep each block
    /// of weights in L2 for many row tiles.
    fn claim(
        &mut self,
        threads: usize,
        inputs: usize,
        outputs: usize,
    ) -> Option<(&'a [f32], &'a mut [f32])> {
        let rows = self.out.len() / outputs;
        if rows == 0 {
            return None;
        }
        let tiles = rows.div_ceil(ROWS);
        let take = (tiles.div_ceil(2 * threads).max(MIN_CLAIM_TILES) * ROWS).min(rows);
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

/// Writes `rows[r][first_input + step]` at `packed[step * ROWS + r]` for every step of
/// the tile's depth (`packed.len() / ROWS`), zero for rows past the last: 16 steps at a
/// time through a register transpose, since a scalar copy or a scatter cost a tenth of
/// the products.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn pack_tile(rows: &[f32], inputs: usize, first_input: usize, packed: &mut [f32]) {
    let depth = packed.len() / ROWS;
    let tile_rows = rows.len() / inputs;
    assert!(tile_rows <= ROWS && first_input + depth <= inputs);
    let whole = depth - depth % 16;
    for first_step in (0..whole).step_by(16) {
        let mut block = [_mm512_setzero_ps(); 16];
        for (row, lanes) in block.iter_mut().enumerate().take(tile_rows) {
            *lanes =
                _mm512_loadu_ps(rows[row * inputs + first_input + first_step..][..16].as_ptr());
        }
        transpose(&mut block);
        for (step, lanes) in block.iter().enumerate() {
            let target = &mut packed[(first_step + step) * ROWS..][..ROWS];
            // SAFETY: the mask writes the first ROWS (14) lanes, all inside `target`.
            _mm512_mask_storeu_ps(target.as_mut_ptr(), (1 << ROWS) - 1, *lanes);
        }
    }
    for step in whole..depth {
        for row in 0..ROWS {
            packed[step * ROWS + row] = if row < tile_rows {
                rows[row * inputs + first_input + step]
            } else {
                0.0
            };
        }
    }
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

/// What a tile's sums start from: the bias (first slice of inputs) or what earlier
/// slices wrote.
#[derive(Clone, Copy)]
enum Start<'a> {
    Bias(&'a [f32]),
    Accumulate,
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

/// `out[r][c] (+)= Σ_step rows[step][r] · panel[step][c]` for `tile_rows` rows and
/// `columns` outputs; `out`'s rows are `out_stride` apart.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile_product(
    rows: &[f32],
    panel: &[f32],
    out: &mut [f32],
    out_stride: usize,
    tile_rows: usize,
    columns: usize,
    start: Start<'_>,
) {
    let depth = panel.len() / COLUMNS;
    assert!(rows.len() == depth * ROWS && (1..=ROWS).contains(&tile_rows));
    assert!((1..=COLUMNS).contains(&columns));
    assert!(out.len() >= (tile_rows - 1) * out_stride + columns);
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
                // (the assertion above).
                sums[2 * row] = _mm512_maskz_loadu_ps(masks[0], out_row(row));
                sums[2 * row + 1] = _mm512_maskz_loadu_ps(masks[1], out_row(row).wrapping_add(16));
            }
        }
    }
    let (mut row_values, mut weights) = (rows.as_ptr(), panel.as_ptr());
    for _ in 0..depth {
        // A prefetch never faults, so it may run past the end of the panel.
        _mm_prefetch::<_MM_HINT_T0>(weights.wrapping_add(PREFETCH_STEPS * COLUMNS).cast());
        _mm_prefetch::<_MM_HINT_T0>(weights.wrapping_add(PREFETCH_STEPS * COLUMNS + 16).cast());
        _mm_prefetch::<_MM_HINT_T0>(row_values.wrapping_add(PREFETCH_STEPS * ROWS).cast());
        // SAFETY: `depth` steps of COLUMNS weights and ROWS row values lie in the slices.
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

#[cfg(test)]
mod tests {
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

    #[test]
    fn a_small_layer_matches_hand_computed_values() {
        let Some(simd) = Avx512::detect() else {
            eprintln!("no AVX-512F on this CPU: the packed kernel is not used here");
            return;
        };
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
        // 2,048 rows are 147 tiles. Each claim takes a quarter of the tiles left (two
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
        while let Some((input_band, out_band)) = unclaimed.claim(2, inputs, outputs) {
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

    #[test]
    fn every_edge_of_the_tiling_matches_the_plain_product() {
        let Some(simd) = Avx512::detect() else {
            eprintln!("no AVX-512F on this CPU: the packed kernel is not used here");
            return;
        };
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
                    "{rows}×{inputs}→{outputs}: value {index} is {got}, expected {want}"
                );
            }
            assert!(
                out[rows * outputs..].iter().all(|v| v.is_nan()),
                "wrote past the rows"
            );
        }
    }
}
