//! The strategy matrix: per-class dwell onset and F1 turned into advice. Pure, no I/O.
//!
//! `advise` places every class in a quadrant of SPEC §5's matrix and picks an
//! action; `diff` tells which (class, action) changes have held for enough
//! checkpoints to be announced, so that unchanged advice is not announced twice.
//! The thresholds and wording come from `Rules` (`rules/default.toml`); the
//! logic is documented in `docs/ADVICE.md`.

mod advice;
mod diff;
mod matrix;
mod rules;
mod template;

pub use advice::{
    Action, Advice, Basis, Confusion, CutoffBasis, EarlyCutoff, Evidence, Quadrant, Recommendation,
    RunAdvice, RunEvidence, RunFinding,
};
pub use diff::{announce, extend_streaks, material_changes, ActionChange, Streak, Streaks};
pub use matrix::{advise, ClassEvidenceInput, DwellInput, RunInput};
pub use rules::{
    CollapseRules, Detector, DwellRules, EvidenceRules, F1Rules, Rules, RulesError, RunRules,
};
