//! Matrix products through the `gemm` crate (the same kernels candle's CPU backend
//! calls, here with their AVX-512 variants enabled), on strided views so that
//! attention reads its heads straight out of the fused QKV rows without copies.

/// A matrix view: element (i, j) is `values[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub struct Matrix<'a> {
    pub values: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Matrix<'a> {
    /// `rows × cols`, each row `row_stride` apart.
    pub fn rows(values: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            values,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose of a `cols × rows` matrix stored row-major with `row_stride`:
    /// an attention head's keys, read in place from the fused QKV rows.
    pub fn transposed(values: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            values,
            rows,
            cols,
            row_stride: 1,
            col_stride: row_stride,
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.values.len()
    }
}

/// `out = lhs · rhs` on the calling thread (each attention task is already one of many);
/// `out` is row-major with row stride `out_stride`.
pub fn product(lhs: Matrix<'_>, rhs: Matrix<'_>, out: &mut [f32], out_stride: usize) {
    assert_eq!(lhs.cols, rhs.rows, "inner dimensions differ");
    assert!(lhs.fits() && rhs.fits(), "operand view exceeds its buffer");
    let (m, n) = (lhs.rows, rhs.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * out_stride + n <= out.len(),
        "output view exceeds its buffer"
    );
    // SAFETY: the assertions above keep every index the strides reach inside its slice,
    // and `out` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            lhs.cols,
            out.as_mut_ptr(),
            1,
            out_stride as isize,
            false,
            lhs.values.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.values.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_products_match_hand_computed_values() {
        // lhs = [[1, 2], [3, 4]]; weight [out=3, in=2] = [[1, 0], [0, 1], [1, 1]].
        let lhs = [1.0, 2.0, 3.0, 4.0];
        let weight = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let mut out = [10.0, 20.0, 30.0, 10.0, 20.0, 30.0];
        product(
            Matrix::rows(&lhs, 2, 2, 2),
            Matrix::transposed(&weight, 2, 3, 2),
            &mut out,
            3,
        );
        assert_eq!(out, [1.0, 2.0, 3.0, 3.0, 4.0, 7.0]);
        // Every other column of a wider buffer, written into a strided output.
        let wide = [1.0, 9.0, 2.0, 9.0, 3.0, 9.0, 4.0, 9.0];
        let lhs = Matrix {
            values: &wide,
            rows: 2,
            cols: 2,
            row_stride: 4,
            col_stride: 2,
        };
        let mut strided = [0.0; 5];
        product(lhs, Matrix::rows(&[1.0, 1.0], 2, 1, 1), &mut strided, 4);
        assert_eq!(strided, [3.0, 0.0, 0.0, 0.0, 7.0]);
    }
}
