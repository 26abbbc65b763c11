//! Runs the training half of `dwell demo` and prints its progress, for timing:
//!
//!     cargo run --release --example train_demo -- /tmp/demo-out [--max-steps N] [--save-steps N] [--epochs N]
//!
//! Writes `OUT/run/checkpoint-<step>` (a Hugging Face Trainer output_dir) and the
//! corpus to `OUT/data`.

use std::io::Write;
use std::time::Instant;

use dwell::demo::{train, DemoConfig, TrainProgress};

fn parse_args() -> Result<DemoConfig, String> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or("usage: train_demo OUT_DIR [--epochs N] [--max-steps N] [--save-steps N]")?;
    let mut config = DemoConfig::new(out);
    while let Some(flag) = args.next() {
        let value: u64 = args
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{flag} needs a number"))?;
        match flag.as_str() {
            "--epochs" => config.epochs = value,
            "--max-steps" => config.max_steps = Some(value),
            "--save-steps" => config.save_steps = value,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(config)
}

fn main() {
    let config = match parse_args() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let mut last_step = Instant::now();
    let result = train(&config, &mut |progress| match progress {
        TrainProgress::Started {
            run_dir,
            vocab_size,
            steps_per_epoch,
            max_steps,
        } => {
            println!(
                "training into {} (vocabulary {vocab_size}, {steps_per_epoch} steps per epoch, {max_steps} steps) after {:.1}s",
                run_dir.display(),
                started.elapsed().as_secs_f64()
            );
            last_step = Instant::now();
        }
        TrainProgress::Step {
            step,
            max_steps,
            epoch,
            loss,
        } => {
            print!("\rstep {step}/{max_steps}  epoch {epoch:.2}  loss {loss:.4}   ");
            let _ = std::io::stdout().flush();
        }
        TrainProgress::Saved {
            checkpoint, eval, ..
        } => {
            let per_class: Vec<String> = eval
                .f1
                .iter()
                .map(|(label, f1)| format!("{label} {f1:.2}"))
                .collect();
            println!(
                "\r{}  {:.1}s (+{:.1}s)  eval loss {:.3}  accuracy {:.3}  macro F1 {:.3}\n    F1: {}",
                checkpoint.display(),
                started.elapsed().as_secs_f64(),
                last_step.elapsed().as_secs_f64(),
                eval.loss,
                eval.accuracy,
                eval.macro_f1,
                per_class.join(", ")
            );
            last_step = Instant::now();
        }
    });
    match result {
        Ok(summary) => println!(
            "done in {:.1}s: {} checkpoints; probe {}",
            started.elapsed().as_secs_f64(),
            summary.evaluations.len(),
            summary.probe.display()
        ),
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    }
}
