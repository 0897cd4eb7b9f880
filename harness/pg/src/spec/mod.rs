//! A runner for PostgreSQL's isolation-test spec format.
//!
//! PostgreSQL's `src/test/isolation` suite describes concurrency tests as
//! *spec files*: global `setup` and `teardown` SQL, a handful of sessions each
//! with its own `setup`, `teardown` and named `step`s, and optional
//! `permutation` lines naming the order in which steps run.  Its tester runs
//! every step on the session's own connection, notices when a step blocks on a
//! lock held by another session, and prints a transcript that is compared with
//! an expected `.out` file.
//!
//! This module reads the same format ([`parse`]), runs it against a real
//! server ([`run_spec_file`]) and prints the same transcript, byte for byte,
//! so that PostgreSQL's own expected outputs can be used as test oracles:
//!
//! * [`parse`] — the grammar, including unquoted and `"quoted"` names,
//!   several `setup` blocks and the blocking markers of permutation steps
//!   (`step(*)`, `step(other)`, `step(other notices N)`);
//! * [`format`](mod@format) — the transcript's pieces (result sets as libpq's `PQprint`
//!   lays them out, notices, error lines, step lines);
//! * [`run_spec_file`] / [`run_spec`] — one connection per session plus a
//!   control connection that polls `pg_isolation_test_session_is_blocked` to
//!   detect lock waits.

pub mod format;
mod parse;
mod run;

use std::fmt;
use std::path::Path;

pub use parse::{parse, parse_named};
pub use run::{
    regression_database, run_spec, run_spec_file, run_spec_file_with, run_spec_streaming, run_spec_with, RunOptions,
    REGRESSION_DATABASE,
};

/// A parsed spec file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The global `setup` blocks, in order; each runs as one simple-query batch.
    pub setup: Vec<String>,
    /// The global `teardown` block.
    pub teardown: Option<String>,
    /// The sessions, in the order they were declared.
    pub sessions: Vec<Session>,
    /// The permutations given in the file; when empty, every interleaving of
    /// the sessions' steps runs.
    pub permutations: Vec<Permutation>,
    /// Warnings found while checking the spec (the tester prints these on
    /// standard error, which the regression suite folds into the transcript).
    pub warnings: Vec<String>,
}

/// One session of a spec: a connection with its own setup, steps and teardown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub name: String,
    pub setup: Option<String>,
    pub steps: Vec<Step>,
    pub teardown: Option<String>,
    /// Line of the `session` keyword.
    pub line: usize,
}

/// A named SQL step of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    /// The SQL as written between the braces (leading and trailing blanks on
    /// the brace lines removed, newlines kept), printed as is in the transcript.
    pub sql: String,
    /// Line of the `step` keyword.
    pub line: usize,
}

/// A `permutation` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permutation {
    pub steps: Vec<PermutationStep>,
    /// Line of the `permutation` keyword.
    pub line: usize,
}

/// One step named in a permutation, with its blocking markers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermutationStep {
    pub name: String,
    pub blockers: Vec<Blocker>,
    pub line: usize,
}

/// A blocking marker of a permutation step: `name(marker, ...)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// `(*)`: report the step as waiting the first time it is looked at,
    /// whether or not it really waits (for output stability).
    Once,
    /// `(other)`: do not report the step complete while step `other` (of
    /// another session) is still running.
    OtherStep(String),
    /// `(other notices N)`: do not report the step complete until `other`'s
    /// session has sent `N` more notices than when this step started.
    Notices { step: String, count: u32 },
}

impl Spec {
    /// Every step of every session, with its session's index.
    pub fn all_steps(&self) -> impl Iterator<Item = (usize, &Step)> {
        self.sessions.iter().enumerate().flat_map(|(i, s)| s.steps.iter().map(move |st| (i, st)))
    }

    /// The permutations that will run: the given ones, or else every
    /// interleaving of the sessions' steps that keeps each session's order, in
    /// the isolation tester's order (earlier sessions first). Produced one at a
    /// time: a spec of 24 steps in 8 sessions has about 10^17 interleavings,
    /// which run (as PostgreSQL's tester runs them) but could never be listed.
    pub fn effective_permutations(&self) -> Permutations<'_> {
        Permutations { spec: self, given: 0, next: None, started: false }
    }
}

/// The iterator of [`Spec::effective_permutations`].
pub struct Permutations<'a> {
    spec: &'a Spec,
    /// The next given permutation to yield.
    given: usize,
    /// The interleaving to yield next, as session indexes.
    next: Option<Vec<usize>>,
    started: bool,
}

impl Permutations<'_> {
    /// Steps per session.
    fn sizes(&self) -> Vec<usize> {
        self.spec.sessions.iter().map(|s| s.steps.len()).collect()
    }

    /// Extend `seq` with the earliest sessions that still have steps.
    fn fill(seq: &mut Vec<usize>, remaining: &mut [usize]) {
        while let Some(j) = remaining.iter().position(|&r| r > 0) {
            remaining[j] -= 1;
            seq.push(j);
        }
    }

    /// The interleaving after `seq` in the tester's depth-first order, if any.
    fn successor(seq: &[usize], sizes: &[usize]) -> Option<Vec<usize>> {
        let mut remaining = vec![0usize; sizes.len()];
        let mut seq = seq.to_vec();
        // Walk back, giving steps back, until a later session can go at position k.
        while let Some(last) = seq.pop() {
            remaining[last] += 1;
            if let Some(j) = (last + 1..sizes.len()).find(|&j| remaining[j] > 0) {
                remaining[j] -= 1;
                seq.push(j);
                Self::fill(&mut seq, &mut remaining);
                return Some(seq);
            }
        }
        None
    }

    fn to_steps(&self, seq: &[usize]) -> Vec<PermutationStep> {
        let mut taken = vec![0usize; self.spec.sessions.len()];
        seq.iter()
            .map(|&i| {
                let step = &self.spec.sessions[i].steps[taken[i]];
                taken[i] += 1;
                PermutationStep { name: step.name.clone(), blockers: Vec::new(), line: step.line }
            })
            .collect()
    }
}

impl Iterator for Permutations<'_> {
    type Item = Vec<PermutationStep>;

    fn next(&mut self) -> Option<Vec<PermutationStep>> {
        if !self.spec.permutations.is_empty() {
            let p = self.spec.permutations.get(self.given)?;
            self.given += 1;
            return Some(p.steps.clone());
        }
        let sizes = self.sizes();
        if !self.started {
            self.started = true;
            let mut first = Vec::new();
            Self::fill(&mut first, &mut sizes.clone());
            self.next = Some(first);
        }
        let current = self.next.take()?;
        self.next = Self::successor(&current, &sizes);
        Some(self.to_steps(&current))
    }
}

/// Everything that can go wrong reading or running a spec.
#[derive(Debug)]
pub enum SpecError {
    /// The spec file could not be read.
    Io { path: String, error: std::io::Error },
    /// The spec does not follow the grammar, or names what it does not define.
    Parse { file: String, line: usize, message: String },
    /// Connecting to the server failed.
    Connect { what: String, error: String },
    /// A setup block failed (the tester gives up on the whole spec then).
    Setup { what: String, error: String },
    /// A step did not complete even after being cancelled.
    Timeout { step: String, seconds: u64 },
    /// Something else went wrong talking to the server.
    Server { what: String, error: String },
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::Io { path, error } => write!(f, "{path}: {error}"),
            SpecError::Parse { file, line, message } => write!(f, "{file}:{line}: {message}"),
            SpecError::Connect { what, error } => write!(f, "connection for {what} failed: {error}"),
            SpecError::Setup { what, error } => write!(f, "{what} failed: {error}"),
            SpecError::Timeout { step, seconds } => write!(f, "step {step} timed out after {seconds} seconds"),
            SpecError::Server { what, error } => write!(f, "{what}: {error}"),
        }
    }
}

impl std::error::Error for SpecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpecError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Reads and parses a spec file; errors name the file.
pub fn parse_file(path: &Path) -> Result<Spec, SpecError> {
    let text =
        std::fs::read_to_string(path).map_err(|error| SpecError::Io { path: path.display().to_string(), error })?;
    parse_named(&text, &path.display().to_string())
}
