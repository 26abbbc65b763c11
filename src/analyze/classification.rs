//! Per-class precision, recall and F1 from the predictions on the probe set (SPEC §4).

use serde::Serialize;

/// Confusion counts: `counts[truth][predicted]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfusionMatrix {
    pub counts: Vec<Vec<usize>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Probe examples of this class.
    pub support: usize,
}

/// The arg-max of each row of row-major `logits` [rows, classes]; the first maximum wins, as in PyTorch.
pub fn predictions(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks(classes.max(1))
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 {
                        (i, v)
                    } else {
                        best
                    }
                })
                .0
        })
        .collect()
}

impl ConfusionMatrix {
    pub fn new(truth: &[usize], predicted: &[usize], classes: usize) -> Self {
        let mut counts = vec![vec![0; classes]; classes];
        for (&t, &p) in truth.iter().zip(predicted) {
            counts[t][p] += 1;
        }
        Self { counts }
    }

    /// Scores per class; a zero denominator makes that precision or recall 0.
    pub fn scores(&self) -> Vec<ClassScores> {
        let classes = self.counts.len();
        (0..classes)
            .map(|c| {
                let true_positives = self.counts[c][c] as f64;
                let support: usize = self.counts[c].iter().sum();
                let predicted: usize = self.counts.iter().map(|row| row[c]).sum();
                let ratio = |num: f64, den: usize| if den == 0 { 0.0 } else { num / den as f64 };
                let precision = ratio(true_positives, predicted);
                let recall = ratio(true_positives, support);
                let f1 = if precision + recall == 0.0 {
                    0.0
                } else {
                    2.0 * precision * recall / (precision + recall)
                };
                ClassScores {
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect()
    }

    /// The other class that this class's examples are most often predicted as, with the
    /// share of the class's examples predicted as it; `None` when none is mispredicted.
    pub fn most_confused_with(&self, class: usize) -> Option<(usize, f64)> {
        let row = &self.counts[class];
        let support: usize = row.iter().sum();
        row.iter()
            .enumerate()
            .filter(|&(other, &count)| other != class && count > 0)
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
            .map(|(other, &count)| (other, count as f64 / support as f64))
    }
}

/// Mean F1 over the classes present in the probe set.
pub fn macro_f1(scores: &[ClassScores]) -> f64 {
    let present: Vec<f64> = scores
        .iter()
        .filter(|s| s.support > 0)
        .map(|s| s.f1)
        .collect();
    if present.is_empty() {
        0.0
    } else {
        present.iter().sum::<f64>() / present.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(predictions(&[0.1, 0.9, 0.9, 2.0, 1.0, -1.0], 3), vec![1, 0]);
    }

    #[test]
    fn scores_by_hand() {
        // truth:     0 0 0 1 1 2
        // predicted: 0 0 1 1 0 1
        let matrix = ConfusionMatrix::new(&[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 0, 1], 4);
        let scores = matrix.scores();
        // class 0: tp 2, predicted 3, support 3 → p 2/3, r 2/3, f1 2/3
        assert!((scores[0].f1 - 2.0 / 3.0).abs() < 1e-12);
        // class 1: tp 1, predicted 3, support 2 → p 1/3, r 1/2, f1 0.4
        assert!((scores[1].precision - 1.0 / 3.0).abs() < 1e-12);
        assert!((scores[1].f1 - 0.4).abs() < 1e-12);
        // class 2: tp 0, predicted 0 → precision 0 (zero denominator), f1 0
        assert_eq!((scores[2].precision, scores[2].f1), (0.0, 0.0));
        // class 3 is absent from the probe set and does not count in macro F1
        assert_eq!(scores[3].support, 0);
        assert!((macro_f1(&scores) - (2.0 / 3.0 + 0.4 + 0.0) / 3.0).abs() < 1e-12);
        assert_eq!(matrix.most_confused_with(0), Some((1, 1.0 / 3.0)));
        assert_eq!(matrix.most_confused_with(2), Some((1, 1.0)));
        assert_eq!(matrix.most_confused_with(3), None);
    }
}
