//! Spearman's rank correlation, for how well a detector's per-class results
//! order the classes by their training counts.

/// Ranks 1..n, tied values sharing the mean of their ranks. Infinities rank
/// last (an onset that has not happened is later than every real one).
fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let end = order[start..]
            .iter()
            .position(|&i| values[i] != values[order[start]])
            .map_or(order.len(), |offset| start + offset);
        // Positions start..end hold ranks start+1..=end; their mean:
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Spearman's ρ: Pearson's correlation of the average ranks (so ties are
/// handled as scipy's `spearmanr` handles them). `None` when there are fewer
/// than two pairs or either side is constant, where no order exists.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    assert_eq!(x.len(), y.len(), "paired values");
    if x.len() < 2 || x.iter().chain(y).any(|v| v.is_nan()) {
        return None;
    }
    let (rx, ry) = (average_ranks(x), average_ranks(y));
    let mean = (x.len() + 1) as f64 / 2.0;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mean) * (b - mean);
        sxx += (a - mean) * (a - mean);
        syy += (b - mean) * (b - mean);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_share_ties_and_put_infinity_last() {
        assert_eq!(
            average_ranks(&[30.0, 10.0, f64::INFINITY, 10.0, f64::INFINITY]),
            [3.0, 1.5, 4.5, 1.5, 4.5]
        );
    }

    #[test]
    fn spearman_of_hand_computed_orders() {
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        // x ranks 1 2 3 4, y ranks 1 3 2 4: d² = 0 1 1 0, 1 − 6·2/(4·15) = 0.8.
        let rho = spearman(&[1.0, 2.0, 3.0, 4.0], &[5.0, 7.0, 6.0, 8.0]).unwrap();
        assert!((rho - 0.8).abs() < 1e-12, "{rho}");
        assert_eq!(spearman(&[1.0, 2.0], &[4.0, 4.0]), None);
        assert_eq!(spearman(&[1.0], &[1.0]), None);
    }

    #[test]
    fn spearman_with_ties_agrees_with_scipy() {
        // scipy 1.17.1: spearmanr([400, 400, 400, 100, 100, 100, 10, 10, 10],
        // [0.98, 0.9, 1.0, 0.5, 0.7, 0.5, 0.1, 0.3, 0.1]).statistic (repr).
        let counts = [400.0, 400.0, 400.0, 100.0, 100.0, 100.0, 10.0, 10.0, 10.0];
        let fractions = [0.98, 0.9, 1.0, 0.5, 0.7, 0.5, 0.1, 0.3, 0.1];
        let rho = spearman(&counts, &fractions).unwrap();
        assert!((rho - SCIPY_RHO).abs() < 1e-12, "{rho}");
    }

    const SCIPY_RHO: f64 = 0.9566892062149209;
}
