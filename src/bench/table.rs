//! The bench's plain-text report: the machine, the whole-run comparison, and per case a
//! table of dwell's figures beside PyTorch's (when the baseline ran) with their ratio.

use std::fmt::Write;

use super::baseline::{Baseline, BaselineCase};
use super::measure::{padding_share, per_second, CaseMeasurement, PeakMemory};
use super::{median, BenchReport, WholeRunMeasurement};

#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    PerSecond,
    Count,
    Share,
    Megabytes,
}

struct Row {
    label: String,
    dwell: Option<f64>,
    torch: Option<f64>,
    unit: Unit,
}

fn row(label: impl Into<String>, dwell: Option<f64>, torch: Option<f64>, unit: Unit) -> Row {
    Row {
        label: label.into(),
        dwell,
        torch,
        unit,
    }
}

fn format_value(value: Option<f64>, unit: Unit) -> String {
    let Some(value) = value else {
        return "-".into();
    };
    match unit {
        Unit::Seconds => format!("{value:.3}"),
        Unit::PerSecond => format!("{value:.2}"),
        Unit::Count => format!("{value:.0}"),
        Unit::Share => format!("{:.1}%", value * 100.0),
        Unit::Megabytes => format!("{value:.1}"),
    }
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// The whole report, ready to print.
pub fn render(report: &BenchReport) -> String {
    let mut out = String::new();
    let machine = &report.machine;
    let _ = writeln!(
        out,
        "dwell bench on {}, {} cores, {} threads, batch size {}",
        machine.cpu, machine.cores, machine.threads, report.batch_size
    );
    if let Some(baseline) = &report.baseline {
        let attention: Vec<&str> = baseline
            .cases
            .values()
            .map(|case| case.attn_implementation.as_str())
            .collect();
        let _ = writeln!(
            out,
            "PyTorch baseline: torch {}, transformers {}, {} threads, batch size {}, attention {}",
            baseline.torch,
            baseline.transformers,
            baseline.threads,
            baseline.batch_size,
            attention.first().copied().unwrap_or("-")
        );
        let _ = writeln!(
            out,
            "dwell/PyTorch: below 1 is dwell faster for times, above 1 for rates"
        );
    }
    if let Some(whole) = &report.whole_run {
        let _ = writeln!(out);
        render_whole_run(&mut out, whole);
    }
    for case in &report.cases {
        let torch = report
            .baseline
            .as_ref()
            .and_then(|b| b.cases.get(case.case.dir_name()));
        let _ = writeln!(out);
        render_case(&mut out, case, torch, report.baseline.as_ref());
    }
    out
}

fn render_whole_run(out: &mut String, whole: &WholeRunMeasurement) {
    let per_checkpoint = |seconds: f64| seconds / whole.checkpoints.max(1) as f64;
    let totals = whole.torch_totals();
    let _ = writeln!(
        out,
        "whole run, minilm, {} checkpoints, {} round(s){}:",
        whole.checkpoints,
        whole.rounds.len(),
        if totals.is_some() {
            ", dwell and PyTorch alternating"
        } else {
            ""
        }
    );
    match &totals {
        Some(totals) => {
            let _ = writeln!(
                out,
                "  {:<7}{:>17}{:>19}{:>11}",
                "round", "dwell analyze s", "PyTorch passes s", "speed-up"
            );
            for (index, (round, total)) in whole.rounds.iter().zip(totals).enumerate() {
                let _ = writeln!(
                    out,
                    "  {:<7}{:>17.2}{:>19.2}{:>10.2}x",
                    index + 1,
                    round.dwell_seconds,
                    total,
                    total / round.dwell_seconds
                );
            }
        }
        None => {
            let _ = writeln!(out, "  {:<7}{:>17}", "round", "dwell analyze s");
            for (index, round) in whole.rounds.iter().enumerate() {
                let _ = writeln!(out, "  {:<7}{:>17.2}", index + 1, round.dwell_seconds);
            }
        }
    }
    let peak = match &whole.peak_rss {
        Ok(bytes) => format!("peak RSS {:.1} MB", megabytes(*bytes)),
        Err(why) => format!("peak RSS not measured: {why}"),
    };
    let dwell = whole.dwell_median();
    let _ = writeln!(
        out,
        "  dwell analyze, whole process (start-up, loading, tokenising included): median {dwell:.2} s ({:.3} s per checkpoint, {peak})",
        per_checkpoint(dwell)
    );
    if let (Some(totals), Some(speedups)) = (&totals, whole.speedups()) {
        let torch = median(totals);
        let _ = writeln!(
            out,
            "  PyTorch, sum of {} embedding passes alone (imports, loads, tokenising not counted): median {torch:.2} s ({:.3} s per checkpoint)",
            whole.checkpoints,
            per_checkpoint(torch)
        );
        let (lowest, highest) = speedups
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), &s| {
                (low.min(s), high.max(s))
            });
        let _ = writeln!(
            out,
            "  speed-up, PyTorch passes / dwell whole process: median {:.2}x of the rounds' (lowest {lowest:.2}x, highest {highest:.2}x)",
            median(&speedups)
        );
    }
}

fn render_case(
    out: &mut String,
    case: &CaseMeasurement,
    torch: Option<&BaselineCase>,
    baseline: Option<&Baseline>,
) {
    let _ = writeln!(
        out,
        "{}: {} texts, max length {}",
        case.case, case.texts, case.max_len
    );
    let torch_value = |f: &dyn Fn(&BaselineCase) -> Option<f64>| torch.and_then(f);
    let torch_median = torch.map(BaselineCase::pass_median);
    let (at_start, loading_peak, embedding_peak) = match &case.memory {
        PeakMemory::Measured {
            at_start,
            loading_peak,
            embedding_peak,
        } => (
            Some(megabytes(*at_start)),
            Some(megabytes(*loading_peak)),
            Some(megabytes(*embedding_peak)),
        ),
        PeakMemory::Unavailable(_) => (None, None, None),
    };
    let weights = megabytes(case.weights_bytes);
    let rows = [
        row(
            format!("load s, median of {}", case.load_seconds.len()),
            Some(median(&case.load_seconds)),
            torch_value(&|t| Some(median(&t.load_seconds))),
            Unit::Seconds,
        ),
        row(
            "load s, fastest",
            case.load_seconds.iter().copied().reduce(f64::min),
            torch_value(&|t| t.load_seconds.iter().copied().reduce(f64::min)),
            Unit::Seconds,
        ),
        row(
            "LoRA load s, first",
            case.lora_load_seconds.first().copied(),
            None,
            Unit::Seconds,
        ),
        row(
            format!(
                "LoRA load s, median of {} more",
                case.lora_load_seconds.len().saturating_sub(1)
            ),
            (case.lora_load_seconds.len() > 1).then(|| median(&case.lora_load_seconds[1..])),
            None,
            Unit::Seconds,
        ),
        row(
            "tokenise s",
            Some(case.tokenize_seconds),
            torch_value(&|t| Some(t.tokenize_seconds)),
            Unit::Seconds,
        ),
        row(
            format!("pass s, median of {}", case.pass_seconds.len()),
            Some(case.pass_median()),
            torch_median,
            Unit::Seconds,
        ),
        row(
            "texts/s",
            Some(case.texts_per_second()),
            torch_value(&|t| Some(per_second(t.texts, t.pass_median()))),
            Unit::PerSecond,
        ),
        row(
            "tokens/s",
            Some(case.tokens_per_second()),
            torch_value(&|t| Some(per_second(t.tokens, t.pass_median()))),
            Unit::PerSecond,
        ),
        row(
            "real tokens",
            Some(case.tokens as f64),
            torch_value(&|t| Some(t.tokens as f64)),
            Unit::Count,
        ),
        row(
            "padding share",
            Some(case.padding_share()),
            torch_value(&|t| Some(padding_share(t.tokens, t.padded_tokens))),
            Unit::Share,
        ),
        row(
            "RSS at case start MB",
            at_start,
            torch_value(&|t| t.rss_at_start_bytes.map(megabytes)),
            Unit::Megabytes,
        ),
        row(
            "peak RSS, loads + tokenising MB",
            loading_peak,
            torch_value(&|t| t.loading_peak_rss_bytes.map(megabytes)),
            Unit::Megabytes,
        ),
        row(
            "peak RSS, embedding MB",
            embedding_peak,
            torch_value(&|t| t.embedding_peak_rss_bytes.map(megabytes)),
            Unit::Megabytes,
        ),
        row(
            "weights on disk MB",
            Some(weights),
            torch.map(|_| weights),
            Unit::Megabytes,
        ),
        row(
            "peak RSS, embedding - weights MB",
            embedding_peak.map(|peak| peak - weights),
            torch_value(&|t| t.embedding_peak_rss_bytes.map(|b| megabytes(b) - weights)),
            Unit::Megabytes,
        ),
    ];
    write_rows(out, &rows, baseline.is_some());
    if let PeakMemory::Unavailable(why) = &case.memory {
        let _ = writeln!(out, "peak RSS not measured: {why}");
    }
    if let Some(torch) = torch {
        let _ = writeln!(
            out,
            "PyTorch's RSS includes the interpreter and torch itself (whole process peak {:.1} MB)",
            megabytes(torch.process_max_rss_bytes)
        );
        match &torch.parity {
            Some(parity) => {
                let _ = writeln!(
                    out,
                    "parity, max |PyTorch - dwell|: cls {:.2e}, logits {}",
                    parity.cls_max_abs_diff,
                    parity
                        .logits_max_abs_diff
                        .map_or("-".into(), |d| format!("{d:.2e}"))
                );
            }
            None => {
                let _ = writeln!(out, "parity: not checked (no dwell output for this case)");
            }
        }
    } else if baseline.is_some() {
        let _ = writeln!(out, "PyTorch: no figures for this case");
    }
}

fn write_rows(out: &mut String, rows: &[Row], with_torch: bool) {
    let width = rows.iter().map(|r| r.label.len()).max().unwrap_or(6).max(6);
    if with_torch {
        let _ = writeln!(
            out,
            "  {:<width$} {:>12} {:>12} {:>14}",
            "metric", "dwell", "PyTorch", "dwell/PyTorch"
        );
    } else {
        let _ = writeln!(out, "  {:<width$} {:>12}", "metric", "dwell");
    }
    for row in rows {
        let dwell = format_value(row.dwell, row.unit);
        if with_torch {
            let ratio = match (row.dwell, row.torch) {
                (Some(dwell), Some(torch)) if torch != 0.0 => format!("{:.2}", dwell / torch),
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "  {:<width$} {dwell:>12} {:>12} {ratio:>14}",
                row.label,
                format_value(row.torch, row.unit)
            );
        } else {
            let _ = writeln!(out, "  {:<width$} {dwell:>12}", row.label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{
        BaselineWholeRun, CaseName, Machine, Parity, WholeRunMeasurement, WholeRunRound,
        BASELINE_SCHEMA,
    };
    use std::collections::BTreeMap;

    fn minilm() -> CaseMeasurement {
        CaseMeasurement {
            case: CaseName::Minilm,
            texts: 400,
            max_len: 64,
            load_seconds: vec![0.05, 0.04, 0.06],
            lora_load_seconds: vec![0.07, 0.02, 0.03],
            tokenize_seconds: 0.01,
            pass_seconds: vec![0.5, 0.4, 0.6],
            tokens: 8000,
            padded_tokens: 10000,
            weights_bytes: 90_000_000,
            memory: PeakMemory::Measured {
                at_start: 20_000_000,
                loading_peak: 200_000_000,
                embedding_peak: 150_000_000,
            },
        }
    }

    /// A report of one MiniLM case and whole runs over 4 checkpoints.
    fn report(
        case: CaseMeasurement,
        rounds: Vec<WholeRunRound>,
        peak_rss: Result<u64, String>,
        baseline: Option<Baseline>,
    ) -> BenchReport {
        BenchReport {
            machine: Machine {
                cpu: "Test CPU".into(),
                cores: 2,
                threads: 2,
            },
            batch_size: 32,
            whole_run: Some(WholeRunMeasurement {
                checkpoints: 4,
                rounds,
                peak_rss,
            }),
            cases: vec![case],
            baseline,
        }
    }

    #[test]
    fn dwell_alone_has_one_column_and_no_comparison() {
        let rounds = [2.0, 2.5]
            .map(|dwell_seconds| WholeRunRound {
                dwell_seconds,
                torch: None,
            })
            .to_vec();
        let report = report(minilm(), rounds, Ok(300_000_000), None);
        let expected = "\
dwell bench on Test CPU, 2 cores, 2 threads, batch size 32

whole run, minilm, 4 checkpoints, 2 round(s):
  round    dwell analyze s
  1                   2.00
  2                   2.50
  dwell analyze, whole process (start-up, loading, tokenising included): median 2.25 s (0.562 s per checkpoint, peak RSS 300.0 MB)

minilm: 400 texts, max length 64
  metric                                  dwell
  load s, median of 3                     0.050
  load s, fastest                         0.040
  LoRA load s, first                      0.070
  LoRA load s, median of 2 more           0.025
  tokenise s                              0.010
  pass s, median of 3                     0.500
  texts/s                                800.00
  tokens/s                             16000.00
  real tokens                              8000
  padding share                           20.0%
  RSS at case start MB                     20.0
  peak RSS, loads + tokenising MB         200.0
  peak RSS, embedding MB                  150.0
  weights on disk MB                       90.0
  peak RSS, embedding - weights MB         60.0
";
        assert_eq!(render(&report), expected);
    }

    #[test]
    fn with_the_baseline_each_figure_has_its_ratio_and_parity_is_shown() {
        let mut cases = BTreeMap::new();
        cases.insert(
            "minilm".to_string(),
            BaselineCase {
                texts: 400,
                load_seconds: vec![0.2],
                tokenize_seconds: 0.02,
                pass_seconds: vec![1.0, 1.2],
                tokens: 8000,
                padded_tokens: 16000,
                rss_at_start_bytes: Some(400_000_000),
                loading_peak_rss_bytes: Some(600_000_000),
                embedding_peak_rss_bytes: Some(500_000_000),
                process_max_rss_bytes: 700_000_000,
                attn_implementation: "sdpa".into(),
                parity: Some(Parity {
                    cls_max_abs_diff: 0.0000021,
                    logits_max_abs_diff: Some(0.0000004),
                }),
            },
        );
        let mut case = minilm();
        case.memory = PeakMemory::Unavailable("no /proc here".into());
        // Speed-ups 5.0 / 2.0, 4.8 / 2.4 and 4.8 / 1.6: 2.5, 2.0 and 3.0.
        let rounds = [
            (2.0, [1.0, 1.0, 1.0, 2.0]),
            (2.4, [1.2; 4]),
            (1.6, [1.2; 4]),
        ]
        .map(|(dwell_seconds, pass_seconds)| WholeRunRound {
            dwell_seconds,
            torch: Some(BaselineWholeRun {
                checkpoints: 4,
                pass_seconds: pass_seconds.to_vec(),
            }),
        })
        .to_vec();
        let report = report(
            case,
            rounds,
            Err("no /proc here".into()),
            Some(Baseline {
                schema: BASELINE_SCHEMA.into(),
                torch: "2.9.0".into(),
                transformers: "5.0.0".into(),
                threads: 2,
                batch_size: 32,
                cases,
                whole_run: None,
            }),
        );
        let expected = "\
dwell bench on Test CPU, 2 cores, 2 threads, batch size 32
PyTorch baseline: torch 2.9.0, transformers 5.0.0, 2 threads, batch size 32, attention sdpa
dwell/PyTorch: below 1 is dwell faster for times, above 1 for rates

whole run, minilm, 4 checkpoints, 3 round(s), dwell and PyTorch alternating:
  round    dwell analyze s   PyTorch passes s   speed-up
  1                   2.00               5.00      2.50x
  2                   2.40               4.80      2.00x
  3                   1.60               4.80      3.00x
  dwell analyze, whole process (start-up, loading, tokenising included): median 2.00 s (0.500 s per checkpoint, peak RSS not measured: no /proc here)
  PyTorch, sum of 4 embedding passes alone (imports, loads, tokenising not counted): median 4.80 s (1.200 s per checkpoint)
  speed-up, PyTorch passes / dwell whole process: median 2.50x of the rounds' (lowest 2.00x, highest 3.00x)

minilm: 400 texts, max length 64
  metric                                  dwell      PyTorch  dwell/PyTorch
  load s, median of 3                     0.050        0.200           0.25
  load s, fastest                         0.040        0.200           0.20
  LoRA load s, first                      0.070            -              -
  LoRA load s, median of 2 more           0.025            -              -
  tokenise s                              0.010        0.020           0.50
  pass s, median of 3                     0.500        1.100           0.45
  texts/s                                800.00       363.64           2.20
  tokens/s                             16000.00      7272.73           2.20
  real tokens                              8000         8000           1.00
  padding share                           20.0%        50.0%           0.40
  RSS at case start MB                        -        400.0              -
  peak RSS, loads + tokenising MB             -        600.0              -
  peak RSS, embedding MB                      -        500.0              -
  weights on disk MB                       90.0         90.0           1.00
  peak RSS, embedding - weights MB            -        410.0              -
peak RSS not measured: no /proc here
PyTorch's RSS includes the interpreter and torch itself (whole process peak 700.0 MB)
parity, max |PyTorch - dwell|: cls 2.10e-6, logits 4.00e-7
";
        assert_eq!(render(&report), expected);
    }
}
