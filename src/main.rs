use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use dwell::embed::CandleEmbedder;
use dwell::pipeline::{Pipeline, PipelineConfig, Progress};
use dwell::report::{write_json, Report};

/// Follows a fixed probe set's embeddings across a fine-tuning run's checkpoints and
/// tells you which classes need data, which need redefining, and which are fine.
#[derive(Parser)]
#[command(name = "dwell", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed every complete checkpoint of a Trainer output_dir once, then write report.json.
    Analyze(AnalyzeArgs),
}

#[derive(Args)]
struct AnalyzeArgs {
    /// The Hugging Face Trainer output_dir (finished or still running).
    run_dir: PathBuf,
    /// Labelled probe set: JSON Lines, CSV or TSV with `text` and `label` (and optionally `id`).
    #[arg(long, env = "DWELL_PROBE")]
    probe: PathBuf,
    /// Where embeddings and reports are kept [default: RUN_DIR/.dwell].
    #[arg(long, env = "DWELL_STATE")]
    state: Option<PathBuf>,
    /// Truncate probe texts to this many tokens, special tokens included.
    #[arg(long, env = "DWELL_MAX_LEN", default_value_t = 128)]
    max_len: usize,
    /// The pretrained model folder the run started from, embedded as step 0.
    #[arg(long, env = "DWELL_BASE_MODEL")]
    base_model: Option<PathBuf>,
    /// A tokenizer.json, vocab.txt or model folder, used when no checkpoint has a tokenizer.
    #[arg(long, env = "DWELL_TOKENIZER")]
    tokenizer: Option<PathBuf>,
    /// Probe examples per forward pass.
    #[arg(long, env = "DWELL_BATCH_SIZE", default_value_t = 32)]
    batch_size: usize,
}

fn main() -> std::process::ExitCode {
    init_tracing();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DWELL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Analyze(args) => analyze(args),
    }
}

fn analyze(args: AnalyzeArgs) -> anyhow::Result<()> {
    let config = PipelineConfig {
        run_dir: args.run_dir,
        probe: args.probe,
        state_dir: args.state,
        max_len: args.max_len,
        base_model: args.base_model,
        tokenizer: args.tokenizer,
        batch_size: args.batch_size,
    };
    let embedder = CandleEmbedder::new(config.batch_size).context("starting the model runtime")?;
    let mut pipeline = Pipeline::open(config, Box::new(embedder))?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} checkpoints {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message("embedding");
    let summary = pipeline.embed_pending(&mut |event| match event {
        Progress::Planned { checkpoints } => bar.set_length(checkpoints as u64),
        Progress::Embedded { step, elapsed } => {
            bar.inc(1);
            tracing::info!(step, seconds = elapsed.as_secs_f64(), "embedded");
        }
        Progress::Skipped(skipped) => {
            bar.suspend(|| eprintln!("skipped step {}: {}", skipped.step, skipped.reason))
        }
    })?;
    bar.finish_and_clear();
    let report = pipeline.build_report()?;
    let path = write_json(pipeline.state(), &report)?;
    eprintln!(
        "embedded {} checkpoint(s), {} already stored, {} skipped, {} incomplete, {} vanished",
        summary.embedded.len(),
        summary.already_stored,
        summary.skipped,
        summary.incomplete,
        summary.vanished
    );
    let mut out = std::io::stdout().lock();
    print_f1_table(&mut out, &report)
        .and_then(|()| writeln!(out, "report: {}", path.display()))
        .or_else(ignore_broken_pipe)?;
    Ok(())
}

/// `dwell analyze | head` closing the pipe early is not an error.
fn ignore_broken_pipe(error: std::io::Error) -> std::io::Result<()> {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(error)
    }
}

fn print_f1_table(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    let labels = &report.run.labels;
    let width = labels
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(4)
        .clamp(5, 10);
    let mut header = format!("{:>8} {:>8}", "step", "macro F1");
    for label in labels {
        header.push_str(&format!(" {:>width$}", truncate(label, width)));
    }
    writeln!(out, "{header}")?;
    for checkpoint in &report.checkpoints {
        let mut line = format!(
            "{:>8} {:>8}",
            checkpoint.step,
            checkpoint
                .macro_f1
                .map_or("-".to_string(), |f| format!("{f:.3}"))
        );
        for label in labels {
            let f1 = checkpoint
                .per_class_f1
                .as_ref()
                .and_then(|scores| scores.get(label));
            line.push_str(&format!(
                " {:>width$}",
                f1.map_or("-".to_string(), |f| format!("{f:.3}"))
            ));
        }
        writeln!(out, "{line}")?;
    }
    for skipped in &report.skipped {
        writeln!(
            out,
            "skipped step {}: {} ({})",
            skipped.step,
            skipped.reason,
            skipped.file.display()
        )?;
    }
    Ok(())
}

fn truncate(label: &str, width: usize) -> String {
    label.chars().take(width).collect()
}
