//! The embedding thread: the only place a model runs. Callers send jobs and receive
//! outcomes over channels, so neither discovery nor the senders ever wait on a forward pass.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{EmbedError, Embedder, Embeddings, ModelSource, TokenizedProbe};
use crate::checkpoint::Family;

pub struct EmbedJob {
    pub step: u64,
    pub model: ModelSource,
    pub probe: Arc<TokenizedProbe>,
}

pub struct JobOutcome {
    pub step: u64,
    pub model: ModelSource,
    pub result: Result<Embeddings, EmbedError>,
    pub elapsed: Duration,
}

pub struct EmbedWorker {
    jobs: Option<Sender<EmbedJob>>,
    outcomes: Receiver<JobOutcome>,
    thread: Option<JoinHandle<()>>,
    /// The families the embedder refuses, with its reason: asked before it moves to its
    /// thread, so that a run is checked without waiting behind a forward pass.
    refused: Vec<(Family, String)>,
}

impl EmbedWorker {
    pub fn spawn(mut embedder: Box<dyn Embedder>) -> Self {
        let refused = Family::ALL
            .into_iter()
            .filter_map(|family| Some((family, embedder.accepts(family).err()?.to_string())))
            .collect();
        let (jobs, job_receiver) = channel::<EmbedJob>();
        let (outcome_sender, outcomes) = channel();
        let thread = std::thread::Builder::new()
            .name("dwell-embed".into())
            .spawn(move || {
                for job in job_receiver {
                    let started = Instant::now();
                    let result = embedder.embed(&job.model, &job.probe);
                    let outcome = JobOutcome {
                        step: job.step,
                        model: job.model,
                        result,
                        elapsed: started.elapsed(),
                    };
                    if outcome_sender.send(outcome).is_err() {
                        break;
                    }
                }
            })
            .expect("spawning a thread only fails when the OS is out of resources");
        Self {
            jobs: Some(jobs),
            outcomes,
            thread: Some(thread),
            refused,
        }
    }

    /// Why the embedder does not run `family`'s models, if it does not (see
    /// [`Embedder::accepts`]).
    pub fn refuses(&self, family: Family) -> Option<&str> {
        self.refused
            .iter()
            .find(|(refused, _)| *refused == family)
            .map(|(_, reason)| reason.as_str())
    }

    /// Queues a job; false if the worker has stopped.
    pub fn submit(&self, job: EmbedJob) -> bool {
        self.jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok())
    }

    /// The next finished job, waiting at most `timeout`.
    pub fn next_outcome(&self, timeout: Duration) -> Option<JobOutcome> {
        self.outcomes.recv_timeout(timeout).ok()
    }
}

impl Drop for EmbedWorker {
    fn drop(&mut self) {
        // Closing the job channel ends the thread's loop after the job in hand.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
