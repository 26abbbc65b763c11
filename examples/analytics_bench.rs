//! Benchmarks the streaming trajectory analytics on generated data.
//!
//!     cargo run --release --example analytics_bench -- \
//!         [--examples 1000] [--checkpoints 500] [--dim 768] [--classes 6] \
//!         [--space full|pca2] [--in-memory]
//!
//! Positions are generated per checkpoint on request, so the source itself
//! holds only two [P, H] matrices (base points and drift directions);
//! `--in-memory` materialises every checkpoint first, as a baseline.
//! Prints wall time and peak RSS (VmHWM from /proc/self/status).

use std::time::Instant;

use dwell::analyze::detectors::DetectorKind;
use dwell::analyze::params::{AnalysisParams, Space};
use dwell::analyze::sweep::sweep;
use dwell::analyze::trajectory::{analyze, InMemoryPositions, PositionSource};

struct Options {
    examples: usize,
    checkpoints: usize,
    dim: usize,
    classes: usize,
    space: Space,
    in_memory: bool,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        examples: 1000,
        checkpoints: 500,
        dim: 768,
        classes: 6,
        space: Space::Full,
        in_memory: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |text: String| text.parse::<usize>().map_err(|e| format!("{text}: {e}"));
        match flag.as_str() {
            "--examples" => options.examples = number(value()?)?,
            "--checkpoints" => options.checkpoints = number(value()?)?,
            "--dim" => options.dim = number(value()?)?,
            "--classes" => options.classes = number(value()?)?.max(1),
            "--space" => {
                options.space = match value()?.as_str() {
                    "full" => Space::Full,
                    "pca2" => Space::Pca2,
                    other => return Err(format!("unknown space {other}")),
                }
            }
            "--in-memory" => options.in_memory = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

/// Trajectories that move fast and then settle, each class at its own pace:
/// v_t = base + (1 - e^{-t/τ_c})·drift + σ·noise(d, t).
struct GeneratedRun {
    dim: usize,
    examples: usize,
    base: Vec<f32>,
    drift: Vec<f32>,
    settle_checkpoints: Vec<f32>,
}

impl GeneratedRun {
    fn new(examples: usize, dim: usize, classes: usize) -> Self {
        let base = (0..examples * dim)
            .map(|i| noise(1, i as u64) * 4.0)
            .collect();
        let drift = (0..examples * dim)
            .map(|i| noise(2, i as u64) * 2.0)
            .collect();
        let settle_checkpoints = (0..examples)
            .map(|d| 20.0 + 30.0 * (d % classes) as f32)
            .collect();
        Self {
            dim,
            examples,
            base,
            drift,
            settle_checkpoints,
        }
    }
}

impl PositionSource for GeneratedRun {
    type Error = std::convert::Infallible;

    fn dim(&self) -> usize {
        self.dim
    }

    fn positions(&mut self, checkpoint: usize) -> Result<Vec<f32>, Self::Error> {
        let t = checkpoint as f32;
        let mut matrix = Vec::with_capacity(self.examples * self.dim);
        for d in 0..self.examples {
            let progress = 1.0 - (-t / self.settle_checkpoints[d]).exp();
            let row = d * self.dim..(d + 1) * self.dim;
            let seed = ((checkpoint as u64) << 40) ^ ((d as u64) << 20);
            for (j, (&base, &drift)) in self.base[row.clone()]
                .iter()
                .zip(&self.drift[row])
                .enumerate()
            {
                matrix.push(base + progress * drift + JITTER * noise(seed, j as u64));
            }
        }
        Ok(matrix)
    }
}

const JITTER: f32 = 0.002;

/// A uniform value in [-0.5, 0.5) from a hash of (seed, index).
fn noise(seed: u64, index: u64) -> f32 {
    let mut z = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(index.wrapping_mul(0xbf58_476d_1ce4_e5b9));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .map(|line| line["VmHWM:".len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options()?;
    let steps: Vec<u64> = (0..options.checkpoints as u64)
        .map(|t| 50 * (t + 1))
        .collect();
    let labels: Vec<usize> = (0..options.examples).map(|d| d % options.classes).collect();
    let params = AnalysisParams {
        space: options.space,
        ..AnalysisParams::default()
    };
    println!(
        "{} examples × {} checkpoints × {} dims, space {:?}, {}",
        options.examples,
        options.checkpoints,
        options.dim,
        options.space,
        if options.in_memory {
            "all checkpoints in memory"
        } else {
            "streaming"
        }
    );
    let mut run = GeneratedRun::new(options.examples, options.dim, options.classes);
    let started = Instant::now();
    let analysis = if options.in_memory {
        let checkpoints = (0..options.checkpoints)
            .map(|t| run.positions(t))
            .collect::<Result<Vec<_>, _>>()?;
        analyze(
            &mut InMemoryPositions::new(options.dim, checkpoints),
            &steps,
            &labels,
            options.classes,
            &params,
        )?
    } else {
        analyze(&mut run, &steps, &labels, options.classes, &params)?
    };
    let analysed = started.elapsed();
    let thresholds: Vec<f64> = (1..=10).map(|i| 0.05 * i as f64).collect();
    let rows = sweep(&analysis, DetectorKind::Straightness, &thresholds, None)?;
    let swept = started.elapsed() - analysed;
    println!(
        "analysis: {:.2} s (including generating the positions)",
        analysed.as_secs_f64()
    );
    println!(
        "sweep of {} ε values: {:.3} s",
        rows.len(),
        swept.as_secs_f64()
    );
    println!("peak RSS (VmHWM): {}", peak_rss());
    println!("auto D = {:?}", analysis.rules.distance.threshold);
    for class in &analysis.classes {
        let dwell = &class.dwell;
        println!(
            "class {}: onset distance {:?} straightness {:?} relative {:?}; fractions {:?} {:?} {:?}",
            class.class,
            dwell.distance.onset_step,
            dwell.straightness.onset_step,
            dwell.relative.onset_step,
            dwell.distance.dwell_fraction,
            dwell.straightness.dwell_fraction,
            dwell.relative.dwell_fraction,
        );
    }
    Ok(())
}
