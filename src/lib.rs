//! `dwell`: follows a fixed probe set's `[CLS]` embeddings across the checkpoints
//! of a fine-tuning run and turns their trajectories into advice.
//!
//! The modules follow the pipeline (see `ARCHITECTURE.md`):
//! checkpoint → embed → store → analyze → advise → report; `bench` measures the
//! embedding side against PyTorch.

pub mod advise;
pub mod analyze;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod demo;
pub mod embed;
pub mod pipeline;
pub mod probe;
pub mod report;
pub mod sinks;
pub mod store;
pub mod watch;
