//! Row-wise operations of the encoder, written once as plain lane-parallel loops (16
//! lanes: one AVX-512 vector, two AVX2 ones, four NEON ones) that the compiler
//! vectorises for each instruction set inside its `#[target_feature]` functions
//! ([`row_operations`]).
//! `erf` and `exp` are polynomial approximations whose error (≤ 6e-7 absolute for erf,
//! ≤ 2 ulp for exp) stays far below the 1e-4 parity the embeddings are held to. Their
//! polynomials are written with `mul_add`: the compiler does not fuse `a * b + c` by
//! itself, and inside functions compiled with FMA (or NEON) each becomes one instruction.

use crate::checkpoint::Activation;

const LANES: usize = 16;

#[inline(always)]
fn exp(x: f32) -> f32 {
    // e^x = 2^n · e^r with n = round(x / ln 2) and |r| ≤ ln 2 / 2 (Cephes' expf).
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = n.mul_add(2.121_944_4e-4, n.mul_add(-0.693_359_4, x));
    let poly = [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ]
    .into_iter()
    .fold(1.987_569_1e-4, |sum: f32, coefficient| {
        sum.mul_add(r, coefficient)
    });
    let e_r = (poly * r).mul_add(r, r + 1.0);
    // SAFETY: the clamp above bounds n to [-126, 127]: finite and within i32.
    let exponent = unsafe { n.to_int_unchecked::<i32>() } + 127;
    e_r * f32::from_bits((exponent as u32) << 23)
}

#[inline(always)]
fn erf(x: f32) -> f32 {
    // Abramowitz & Stegun 7.1.26.
    let a = x.abs();
    let t = 1.0 / 0.327_591_1f32.mul_add(a, 1.0);
    let poly = [-1.453_152, 1.421_413_7, -0.284_496_74, 0.254_829_6]
        .into_iter()
        .fold(1.061_405_4, |sum: f32, coefficient| {
            sum.mul_add(t, coefficient)
        })
        * t;
    (-poly).mul_add(exp(-a * a), 1.0).copysign(x)
}

#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    let half = 0.5 * x;
    half.mul_add(erf(x * std::f32::consts::FRAC_1_SQRT_2), half)
}

#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    // tanh(u) = 1 - 2 / (e^{2u} + 1)
    let u = 0.797_884_6 * (x + 0.044_715 * x * x * x);
    let tanh = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
    0.5 * x * (1.0 + tanh)
}

/// One value from a vector's lanes, halving it pairwise (four vector steps, where a
/// lane-by-lane fold takes fifteen dependent scalar ones).
#[inline(always)]
fn reduce(mut lanes: [f32; LANES], combine: impl Fn(f32, f32) -> f32) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for lane in 0..width {
            lanes[lane] = combine(lanes[lane], lanes[lane + width]);
        }
        width /= 2;
    }
    lanes[0]
}

/// `lanes` combined lane-wise with each whole vector of `values`; the remainder is left.
#[inline(always)]
fn fold_vectors<'a>(
    lanes: &mut [f32; LANES],
    values: &'a [f32],
    combine: impl Fn(f32, f32) -> f32,
) -> &'a [f32] {
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane = combine(*lane, value);
        }
    }
    chunks.remainder()
}

#[inline(always)]
fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let remainder = fold_vectors(&mut lanes, values, |a, b| a + b);
    reduce(lanes, |a, b| a + b) + remainder.iter().sum::<f32>()
}

/// The row operations of [`super::kernel::Kernel`] for an instruction set: each compiles
/// the bodies below inside a `#[target_feature]` function with `$features`, so that
/// the same loops become that set's vector instructions.
macro_rules! row_operations {
    ($features:literal) => {
        fn activate(self, values: &mut [f32], kind: $crate::checkpoint::Activation) {
            #[target_feature(enable = $features)]
            unsafe fn compiled(values: &mut [f32], kind: $crate::checkpoint::Activation) {
                $crate::embed::cpu::vector::activate(values, kind)
            }
            // SAFETY: `self` exists only on a CPU with these features.
            unsafe { compiled(values, kind) }
        }

        fn add_layer_norm(
            self,
            rows: &mut [f32],
            residual: Option<&[f32]>,
            weight: &[f32],
            bias: &[f32],
            eps: f32,
        ) {
            #[target_feature(enable = $features)]
            unsafe fn compiled(
                rows: &mut [f32],
                residual: Option<&[f32]>,
                weight: &[f32],
                bias: &[f32],
                eps: f32,
            ) {
                $crate::embed::cpu::vector::add_layer_norm(rows, residual, weight, bias, eps)
            }
            // SAFETY: as above.
            unsafe { compiled(rows, residual, weight, bias, eps) }
        }

        fn scaled_softmax(self, row: &mut [f32], scale: f32) {
            #[target_feature(enable = $features)]
            unsafe fn compiled(row: &mut [f32], scale: f32) {
                $crate::embed::cpu::vector::scaled_softmax(row, scale)
            }
            // SAFETY: as above.
            unsafe { compiled(row, scale) }
        }
    };
}
pub(crate) use row_operations;

#[inline(always)]
pub(crate) fn activate(values: &mut [f32], kind: Activation) {
    let values = values.iter_mut();
    match kind {
        Activation::GeluErf => values.for_each(|v| *v = gelu_erf(*v)),
        Activation::GeluTanh => values.for_each(|v| *v = gelu_tanh(*v)),
        Activation::Relu => values.for_each(|v| *v = v.max(0.0)),
        Activation::Identity => {}
        // The rarer activations, one value at a time in f64: exact, and a small part of
        // a pass next to the products.
        other => values.for_each(|v| *v = other.reference(f64::from(*v)) as f32),
    }
}

#[inline(always)]
pub(crate) fn add_layer_norm(
    rows: &mut [f32],
    residual: Option<&[f32]>,
    weight: &[f32],
    bias: &[f32],
    eps: f32,
) {
    let width = weight.len();
    for (index, row) in rows.chunks_exact_mut(width).enumerate() {
        if let Some(residual) = residual {
            let residual = &residual[index * width..(index + 1) * width];
            row.iter_mut().zip(residual).for_each(|(v, r)| *v += r);
        }
        let mean = sum(row) / width as f32;
        row.iter_mut().for_each(|v| *v -= mean);
        let mut squares = [0f32; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (lane, &value) in squares.iter_mut().zip(chunk) {
                *lane += value * value;
            }
        }
        let variance = (squares.iter().sum::<f32>()
            + chunks.remainder().iter().map(|v| v * v).sum::<f32>())
            / width as f32;
        let scale = 1.0 / (variance + eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(weight).zip(bias) {
            *v = *v * scale * w + b;
        }
    }
}

#[inline(always)]
pub(crate) fn scaled_softmax(row: &mut [f32], scale: f32) {
    // A probe text's rows of scores are a dozen values, less than one vector: the values
    // past the last whole vector go through one full vector (padded lanes held at
    // -inf, then 0), so that every step runs 16 lanes wide instead of one by one.
    let whole = row.len() - row.len() % LANES;
    let (body, tail) = row.split_at_mut(whole);
    let mut last = [f32::NEG_INFINITY; LANES];
    last[..tail.len()].copy_from_slice(tail);
    // Not `f32::max`, whose NaN rule keeps the compiler to one lane at a time.
    let larger = |a: f32, b: f32| if a > b { a } else { b };
    let mut top = last;
    fold_vectors(&mut top, body, larger);
    let top = reduce(top, larger) * scale;
    body.iter_mut().for_each(|v| *v = exp(*v * scale - top));
    for (lane, v) in last.iter_mut().enumerate() {
        let e = exp(*v * scale - top);
        *v = if lane < tail.len() { e } else { 0.0 };
    }
    let mut totals = last;
    fold_vectors(&mut totals, body, |a, b| a + b);
    let total = 1.0 / reduce(totals, |a, b| a + b);
    body.iter_mut().for_each(|v| *v *= total);
    last.iter_mut().for_each(|v| *v *= total);
    tail.copy_from_slice(&last[..tail.len()]);
}

#[cfg(test)]
pub(super) mod tests {
    //! The approximations in plain code here; the row operations as each instruction
    //! set compiles them through the generic checks below, which every kernel module's
    //! tests call with its forced kernel.
    use super::*;
    use crate::embed::cpu::kernel::Kernel;

    #[test]
    fn approximations_are_within_their_stated_error() {
        let mut worst_erf = 0f64;
        let mut worst_exp = 0f64;
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            worst_erf = worst_erf.max((erf(x) as f64 - erf_reference(x as f64)).abs());
            let e = (x as f64).exp();
            worst_exp = worst_exp.max(((exp(x) as f64 - e) / e).abs());
        }
        assert!(worst_erf < 6e-7, "erf error {worst_erf}");
        assert!(worst_exp < 2.5e-7, "exp relative error {worst_exp}");
        assert_eq!(exp(-200.0), exp(-87.0));
    }

    /// Every activation against its definition.
    pub fn every_activation_equals_its_definition<K: Kernel>(simd: K) {
        let xs: Vec<f32> = (-160..=160).map(|i| i as f32 / 20.0).collect();
        for activation in Activation::ALL {
            let mut got = xs.clone();
            simd.activate(&mut got, activation);
            for (&x, &y) in xs.iter().zip(&got) {
                let expected = activation.reference(f64::from(x));
                assert!(
                    (f64::from(y) - expected).abs() <= 2e-6 * expected.abs().max(1.0),
                    "{:?}: {activation:?}({x}) = {y}, expected {expected}",
                    K::ISA
                );
            }
        }
    }

    /// erf by its Maclaurin series (|x| < 3) or continued fraction, in f64.
    fn erf_reference(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let mut term = x;
            let mut total = x;
            for n in 1..200 {
                term *= -x * x / n as f64;
                total += term / (2 * n + 1) as f64;
            }
            total * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let a = x.abs();
            let mut fraction = 0.0;
            for n in (1..60).rev() {
                fraction = (n as f64 / 2.0) / (a + fraction);
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + fraction);
            (1.0 - erfc).copysign(x)
        }
    }

    pub fn softmax_of_rows_shorter_than_longer_than_and_as_long_as_a_vector<K: Kernel>(simd: K) {
        for length in [1, 2, 14, 16, 17, 37, 64] {
            let row: Vec<f32> = (0..length).map(|i| ((i * 29) % 23) as f32 - 11.0).collect();
            let mut got = row.clone();
            simd.scaled_softmax(&mut got, 0.25);
            let top = row.iter().copied().fold(f32::MIN, f32::max) as f64 * 0.25;
            let exps: Vec<f64> = row.iter().map(|&v| (v as f64 * 0.25 - top).exp()).collect();
            let total: f64 = exps.iter().sum();
            for (index, (&g, e)) in got.iter().zip(&exps).enumerate() {
                assert!(
                    (g as f64 - e / total).abs() < 1e-7,
                    "length {length}, value {index}: {g} vs {}",
                    e / total
                );
            }
        }
    }

    pub fn layer_norm_softmax_and_gelu_match_hand_computed_rows<K: Kernel>(simd: K) {
        // Row [1, 2, 3, 4] + residual [1, 0, 1, 0] = [2, 2, 4, 4]: mean 3, variance 1.
        let mut rows = vec![1.0, 2.0, 3.0, 4.0];
        simd.add_layer_norm(
            &mut rows,
            Some(&[1.0, 0.0, 1.0, 0.0]),
            &[1.0, 2.0, 1.0, 1.0],
            &[0.0, 0.0, 0.5, 0.0],
            0.0,
        );
        assert_eq!(rows, vec![-1.0, -2.0, 1.5, 1.0]);
        // softmax(2 · [0, ln 3]) = [1/10, 9/10]
        let mut row = vec![0.0, 3f32.ln()];
        simd.scaled_softmax(&mut row, 2.0);
        assert!(
            (row[0] - 0.1).abs() < 1e-6 && (row[1] - 0.9).abs() < 1e-6,
            "{row:?}"
        );
        let mut values = vec![-1.0, 0.0, 1.0, 1.0, -1.0, -1.0];
        simd.activate(&mut values, Activation::GeluErf);
        // 0.5·x·(1 + erf(x/√2)) at ±1: 0.841344746 and -0.158655254.
        let (plus, minus) = (0.841_344_7, -0.158_655_25);
        for (value, expected) in values.iter().zip([minus, 0.0, plus, plus, minus, minus]) {
            assert!((value - expected).abs() < 1e-6, "{values:?}");
        }
    }
}
