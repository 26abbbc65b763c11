//! The bench's plain-text report: the machine, the whole-run comparison, and per case a
//! table of dwell's figures beside PyTorch's and ONNX Runtime's (when the baselines
//! ran) with their ratios.

use std::fmt::Write;

use super::baseline::{Baseline, BaselineCase, OrtCase};
use super::measure::{padding_share, per_second, CaseMeasurement, PeakMemory};
use super::{median, BenchReport, KernelCeiling, WholeRunMeasurement};
use crate::embed::Backend;

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
    ort: Option<f64>,
    unit: Unit,
}

fn row(label: impl Into<String>, dwell: Option<f64>, torch: Option<f64>, unit: Unit) -> Row {
    Row {
        label: label.into(),
        dwell,
        torch,
        ort: None,
        unit,
    }
}

impl Row {
    fn with_ort(self, ort: Option<f64>) -> Self {
        Self { ort, ..self }
    }
}

/// The baseline columns a table has.
#[derive(Clone, Copy)]
struct Columns {
    torch: bool,
    ort: bool,
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
    if let Some(ceiling) = &report.kernel_ceiling {
        let _ = writeln!(
            out,
            "cpu ({}) tile product alone, operands in L1 cache: {:.1} GFLOP/s per thread",
            ceiling.isa.name(),
            ceiling.gflops_per_thread
        );
    }
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
        if let Some(version) = &baseline.onnxruntime {
            let _ = writeln!(
                out,
                "ONNX Runtime baseline: onnxruntime {version}, the same model exported by torch.onnx, {} intra-op threads, length-sorted batches of {}",
                baseline.threads, baseline.batch_size
            );
        }
        let _ = writeln!(
            out,
            "dwell/PyTorch, dwell/ORT: below 1 is dwell faster for times, above 1 for rates"
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
        let ceiling = report.kernel_ceiling.as_ref();
        render_case(
            &mut out,
            case,
            torch,
            report.baseline.as_ref(),
            machine.threads,
            ceiling,
        );
    }
    out
}

fn render_whole_run(out: &mut String, whole: &WholeRunMeasurement) {
    let per_checkpoint = |seconds: f64| seconds / whole.checkpoints.max(1) as f64;
    let totals = whole.torch_totals();
    let ort_totals = whole.ort_totals();
    let _ = writeln!(
        out,
        "whole run, minilm, {} checkpoints, {} backend, {} round(s){}:",
        whole.checkpoints,
        whole.backend.as_deref().unwrap_or("unreported"),
        whole.rounds.len(),
        match (&totals, &ort_totals) {
            (Some(_), Some(_)) => ", dwell, PyTorch and ONNX Runtime alternating",
            (Some(_), None) => ", dwell and PyTorch alternating",
            _ => "",
        }
    );
    match &totals {
        Some(totals) => {
            let mut header = format!(
                "  {:<7}{:>17}{:>19}{:>11}",
                "round", "dwell analyze s", "PyTorch passes s", "speed-up"
            );
            if ort_totals.is_some() {
                let _ = write!(header, "{:>15}{:>11}", "ORT passes s", "speed-up");
            }
            let _ = writeln!(out, "{header}");
            for (index, (round, total)) in whole.rounds.iter().zip(totals).enumerate() {
                let _ = write!(
                    out,
                    "  {:<7}{:>17.2}{:>19.2}{:>10.2}x",
                    index + 1,
                    round.dwell_seconds,
                    total,
                    total / round.dwell_seconds
                );
                if let Some(ort) = ort_totals.as_ref().map(|totals| totals[index]) {
                    let _ = write!(out, "{ort:>15.2}{:>10.2}x", ort / round.dwell_seconds);
                }
                let _ = writeln!(out);
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
        let (lowest, highest) = range(&speedups);
        let _ = writeln!(
            out,
            "  speed-up, PyTorch passes / dwell whole process: median {:.2}x of the rounds' (lowest {lowest:.2}x, highest {highest:.2}x)",
            median(&speedups)
        );
    }
    if let (Some(totals), Some(speedups)) = (&ort_totals, whole.ort_speedups()) {
        let ort = median(totals);
        let (lowest, highest) = range(&speedups);
        let _ = writeln!(
            out,
            "  ONNX Runtime, sum of {} sorted embedding passes alone: median {ort:.2} s ({:.3} s per checkpoint)",
            whole.checkpoints,
            per_checkpoint(ort)
        );
        let _ = writeln!(
            out,
            "  speed-up, ORT passes / dwell whole process: median {:.2}x of the rounds' (lowest {lowest:.2}x, highest {highest:.2}x)",
            median(&speedups)
        );
    }
}

/// The lowest and highest value.
fn range(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), &v| {
            (low.min(v), high.max(v))
        })
}

fn render_case(
    out: &mut String,
    case: &CaseMeasurement,
    torch: Option<&BaselineCase>,
    baseline: Option<&Baseline>,
    threads: usize,
    ceiling: Option<&KernelCeiling>,
) {
    let _ = writeln!(
        out,
        "{}: {} texts, max length {}, {} backend",
        case.case,
        case.texts,
        case.max_len,
        case.backend.name()
    );
    let torch_value = |f: &dyn Fn(&BaselineCase) -> Option<f64>| torch.and_then(f);
    let torch_median = torch.map(BaselineCase::pass_median);
    let ort = torch.and_then(|t| t.ort.as_ref());
    let ort_value = |f: &dyn Fn(&OrtCase) -> f64| ort.map(f);
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
        )
        .with_ort(ort_value(&|o| o.session_seconds)),
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
        )
        .with_ort(ort_value(&OrtCase::pass_median)),
        row(
            "texts/s",
            Some(case.texts_per_second()),
            torch_value(&|t| Some(per_second(t.texts, t.pass_median()))),
            Unit::PerSecond,
        )
        .with_ort(torch.and_then(|t| ort_value(&|o| per_second(t.texts, o.pass_median())))),
        row(
            "tokens/s",
            Some(case.tokens_per_second()),
            torch_value(&|t| Some(per_second(t.tokens, t.pass_median()))),
            Unit::PerSecond,
        )
        .with_ort(torch.and_then(|t| ort_value(&|o| per_second(t.tokens, o.pass_median())))),
        row(
            "real tokens",
            Some(case.tokens as f64),
            torch_value(&|t| Some(t.tokens as f64)),
            Unit::Count,
        )
        .with_ort(torch.and_then(|t| ort_value(&|_| t.tokens as f64))),
        row(
            "padding share",
            Some(case.padding_share()),
            torch_value(&|t| Some(padding_share(t.tokens, t.padded_tokens))),
            Unit::Share,
        )
        .with_ort(torch.and_then(|t| ort_value(&|o| padding_share(t.tokens, o.padded_tokens)))),
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
    let columns = Columns {
        torch: baseline.is_some(),
        ort: baseline.is_some_and(|b| b.onnxruntime.is_some()),
    };
    write_rows(out, &rows, columns);
    if let (Some(flops), Some(rate)) = (case.pass_flops, case.gflops_per_thread(threads)) {
        let share = ceiling
            .filter(|ceiling| case.backend == Backend::Cpu(ceiling.isa))
            .map_or(String::new(), |ceiling| {
                format!(
                    ", {:.0}% of the tile product's rate alone",
                    100.0 * rate / ceiling.gflops_per_thread
                )
            });
        let _ = writeln!(
            out,
            "work: {:.1} GFLOP a pass (real tokens only, the last layer for [CLS] only), \
             {rate:.1} GFLOP/s per thread{share}",
            flops / 1e9
        );
    }
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
        if let Some(ort) = ort {
            let _ = writeln!(
                out,
                "ORT's load is its InferenceSession created from the exported file (the export not counted){}",
                ort.parity.map_or(String::new(), |parity| format!(
                    "; parity, max |ORT - dwell|: cls {:.2e}, logits {}",
                    parity.cls_max_abs_diff,
                    parity
                        .logits_max_abs_diff
                        .map_or("-".into(), |d| format!("{d:.2e}"))
                ))
            );
        }
    } else if baseline.is_some() {
        let _ = writeln!(out, "PyTorch: no figures for this case");
    }
}

fn write_rows(out: &mut String, rows: &[Row], columns: Columns) {
    let width = rows.iter().map(|r| r.label.len()).max().unwrap_or(6).max(6);
    let mut header = format!("  {:<width$} {:>12}", "metric", "dwell");
    if columns.torch {
        let _ = write!(header, " {:>12}", "PyTorch");
    }
    if columns.ort {
        let _ = write!(header, " {:>12}", "ORT");
    }
    if columns.torch {
        let _ = write!(header, " {:>14}", "dwell/PyTorch");
    }
    if columns.ort {
        let _ = write!(header, " {:>10}", "dwell/ORT");
    }
    let _ = writeln!(out, "{header}");
    let ratio = |dwell: Option<f64>, other: Option<f64>| match (dwell, other) {
        (Some(dwell), Some(other)) if other != 0.0 => format!("{:.2}", dwell / other),
        _ => "-".into(),
    };
    for row in rows {
        let mut line = format!(
            "  {:<width$} {:>12}",
            row.label,
            format_value(row.dwell, row.unit)
        );
        if columns.torch {
            let _ = write!(line, " {:>12}", format_value(row.torch, row.unit));
        }
        if columns.ort {
            let _ = write!(line, " {:>12}", format_value(row.ort, row.unit));
        }
        if columns.torch {
            let _ = write!(line, " {:>14}", ratio(row.dwell, row.torch));
        }
        if columns.ort {
            let _ = write!(line, " {:>10}", ratio(row.dwell, row.ort));
        }
        let _ = writeln!(out, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{
        BaselineWholeRun, CaseName, Machine, OrtCase, Parity, WholeRunMeasurement, WholeRunRound,
        BASELINE_SCHEMA,
    };
    use crate::embed::Isa;
    use std::collections::BTreeMap;

    fn minilm() -> CaseMeasurement {
        CaseMeasurement {
            case: CaseName::Minilm,
            backend: Backend::Cpu(Isa::Avx2),
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
            pass_flops: Some(61.7e9),
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
                backend: Some("cpu (avx2)".into()),
                rounds,
                peak_rss,
            }),
            cases: vec![case],
            baseline,
            kernel_ceiling: Some(KernelCeiling {
                isa: Isa::Avx2,
                gflops_per_thread: 123.4,
            }),
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
cpu (avx2) tile product alone, operands in L1 cache: 123.4 GFLOP/s per thread

whole run, minilm, 4 checkpoints, cpu (avx2) backend, 2 round(s):
  round    dwell analyze s
  1                   2.00
  2                   2.50
  dwell analyze, whole process (start-up, loading, tokenising included): median 2.25 s (0.562 s per checkpoint, peak RSS 300.0 MB)

minilm: 400 texts, max length 64, cpu (avx2) backend
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
work: 61.7 GFLOP a pass (real tokens only, the last layer for [CLS] only), 61.7 GFLOP/s per thread, 50% of the tile product's rate alone
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
                ort: Some(OrtCase {
                    session_seconds: 0.1,
                    pass_seconds: vec![0.4, 0.5, 0.6],
                    padded_tokens: 10000,
                    parity: Some(Parity {
                        cls_max_abs_diff: 0.0000032,
                        logits_max_abs_diff: Some(0.0000005),
                    }),
                }),
            },
        );
        let mut case = minilm();
        case.memory = PeakMemory::Unavailable("no /proc here".into());
        // Speed-ups 5.0 / 2.0, 4.8 / 2.4 and 4.8 / 1.6: 2.5, 2.0 and 3.0; ORT's
        // 2.0 / 2.0, 1.8 / 2.4 and 2.4 / 1.6: 1.0, 0.75 and 1.5.
        let rounds = [
            (2.0, [1.0, 1.0, 1.0, 2.0], [0.5; 4]),
            (2.4, [1.2; 4], [0.3, 0.5, 0.5, 0.5]),
            (1.6, [1.2; 4], [0.6; 4]),
        ]
        .map(|(dwell_seconds, pass_seconds, ort)| WholeRunRound {
            dwell_seconds,
            torch: Some(BaselineWholeRun {
                checkpoints: 4,
                pass_seconds: pass_seconds.to_vec(),
                ort_pass_seconds: Some(ort.to_vec()),
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
                onnxruntime: Some("1.32.0".into()),
                cases,
                whole_run: None,
            }),
        );
        let expected = "\
dwell bench on Test CPU, 2 cores, 2 threads, batch size 32
cpu (avx2) tile product alone, operands in L1 cache: 123.4 GFLOP/s per thread
PyTorch baseline: torch 2.9.0, transformers 5.0.0, 2 threads, batch size 32, attention sdpa
ONNX Runtime baseline: onnxruntime 1.32.0, the same model exported by torch.onnx, 2 intra-op threads, length-sorted batches of 32
dwell/PyTorch, dwell/ORT: below 1 is dwell faster for times, above 1 for rates

whole run, minilm, 4 checkpoints, cpu (avx2) backend, 3 round(s), dwell, PyTorch and ONNX Runtime alternating:
  round    dwell analyze s   PyTorch passes s   speed-up   ORT passes s   speed-up
  1                   2.00               5.00      2.50x           2.00      1.00x
  2                   2.40               4.80      2.00x           1.80      0.75x
  3                   1.60               4.80      3.00x           2.40      1.50x
  dwell analyze, whole process (start-up, loading, tokenising included): median 2.00 s (0.500 s per checkpoint, peak RSS not measured: no /proc here)
  PyTorch, sum of 4 embedding passes alone (imports, loads, tokenising not counted): median 4.80 s (1.200 s per checkpoint)
  speed-up, PyTorch passes / dwell whole process: median 2.50x of the rounds' (lowest 2.00x, highest 3.00x)
  ONNX Runtime, sum of 4 sorted embedding passes alone: median 2.00 s (0.500 s per checkpoint)
  speed-up, ORT passes / dwell whole process: median 1.00x of the rounds' (lowest 0.75x, highest 1.50x)

minilm: 400 texts, max length 64, cpu (avx2) backend
  metric                                  dwell      PyTorch          ORT  dwell/PyTorch  dwell/ORT
  load s, median of 3                     0.050        0.200        0.100           0.25       0.50
  load s, fastest                         0.040        0.200            -           0.20          -
  LoRA load s, first                      0.070            -            -              -          -
  LoRA load s, median of 2 more           0.025            -            -              -          -
  tokenise s                              0.010        0.020            -           0.50          -
  pass s, median of 3                     0.500        1.100        0.500           0.45       1.00
  texts/s                                800.00       363.64       800.00           2.20       1.00
  tokens/s                             16000.00      7272.73     16000.00           2.20       1.00
  real tokens                              8000         8000         8000           1.00       1.00
  padding share                           20.0%        50.0%        20.0%           0.40       1.00
  RSS at case start MB                        -        400.0            -              -          -
  peak RSS, loads + tokenising MB             -        600.0            -              -          -
  peak RSS, embedding MB                      -        500.0            -              -          -
  weights on disk MB                       90.0         90.0            -           1.00          -
  peak RSS, embedding - weights MB            -        410.0            -              -          -
work: 61.7 GFLOP a pass (real tokens only, the last layer for [CLS] only), 61.7 GFLOP/s per thread, 50% of the tile product's rate alone
peak RSS not measured: no /proc here
PyTorch's RSS includes the interpreter and torch itself (whole process peak 700.0 MB)
parity, max |PyTorch - dwell|: cls 2.10e-6, logits 4.00e-7
ORT's load is its InferenceSession created from the exported file (the export not counted); parity, max |ORT - dwell|: cls 3.20e-6, logits 5.00e-7
";
        assert_eq!(render(&report), expected);
    }
}
