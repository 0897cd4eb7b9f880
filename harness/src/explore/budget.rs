//! What a user can bound and watch in one run, outside a scenario's bounds: a wall-clock limit,
//! an interrupt (Ctrl-C), a progress report; and which share of the state space a run explores.
//!
//! None of these reaches a verdict except as the reason of an `inconclusive` one ("time limit
//! reached: 10 s"): the counts reported with it are the partial counts, and no timing is part of
//! any result.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// How often (in transitions) a search looks at the clock, the interrupt flag and the progress
/// sink: rarely enough to cost nothing measurable, often enough to stop within milliseconds.
pub const CHECK_EVERY: u64 = 4096;

/// Where a long search stands, for a progress line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// Distinct states visited so far.
    pub states: u64,
    /// Transitions executed so far.
    pub transitions: u64,
    /// Length of the current path.
    pub depth: u32,
    /// Choices waiting on the depth-first stack to be explored.
    pub frontier: u64,
    /// The share being explored, `(index, count)`, when the search is sharded.
    pub share: Option<(u32, u32)>,
}

/// Where progress reports go.
pub type ProgressSink = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Limits and observers of one run. The default has none.
#[derive(Clone, Default)]
pub struct Budget {
    /// Stop at this instant; the number is the limit in seconds, named in the reason.
    pub deadline: Option<(Instant, u64)>,
    /// Stop once this is set (by a SIGINT handler).
    pub interrupt: Option<&'static AtomicBool>,
    /// Called every [`CHECK_EVERY`] transitions.
    pub progress: Option<ProgressSink>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("deadline", &self.deadline.map(|(_, secs)| secs))
            .field("interrupt", &self.interrupt.is_some())
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl Budget {
    /// A budget of `secs` seconds from now.
    pub fn time_limit(secs: u64) -> Budget {
        Budget { deadline: Some((Instant::now() + std::time::Duration::from_secs(secs), secs)), ..Budget::default() }
    }

    /// Why the run must stop now, if it must.
    pub fn exceeded(&self) -> Option<String> {
        if self.interrupt.is_some_and(|flag| flag.load(Ordering::Relaxed)) {
            return Some("interrupted (SIGINT) before the exploration was complete".to_string());
        }
        match self.deadline {
            Some((at, secs)) if Instant::now() >= at => Some(format!("time limit reached: {secs} s")),
            _ => None,
        }
    }

    pub fn report(&self, progress: &Progress) {
        if let Some(sink) = &self.progress {
            sink(progress);
        }
    }
}

/// One share of a sharded exhaustive search.
///
/// Every share walks the same top of the search tree (paths shorter than `split_depth`, with a
/// cache of their own, so the walk is identical in every share). A state reached at exactly
/// `split_depth` steps is a frontier state; it belongs to share `fingerprint mod count`, and only
/// its owner explores below it. Every visit of one frontier state lands in the same share, so
/// shares never split one state's sleep-set bookkeeping. States below the frontier may be
/// reached from frontier states of different shares: each share explores them, so summed state
/// counts may count one state more than once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// From 0.
    pub index: u32,
    pub count: u32,
    /// Depth of the frontier; the same in every share of one search.
    pub split_depth: u32,
}

impl Shard {
    /// Does this share explore below the frontier state `fingerprint`?
    pub fn owns(&self, fingerprint: u128) -> bool {
        // The low bits of an xxh3 fingerprint are uniform; fold in the high half anyway.
        let folded = (fingerprint as u64) ^ ((fingerprint >> 64) as u64);
        folded % u64::from(self.count) == u64::from(self.index)
    }

    /// Counts that every share would repeat (the top of the tree) are kept by share 0 only, so
    /// that summing the shares counts them once.
    pub fn keeps_top_counts(&self) -> bool {
        self.index == 0
    }
}

/// Parse `i/n` (1-based `i`, as a batch scheduler's array index is usually written).
pub fn parse_share(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{text}` is not a share: write i/n with 1 ≤ i ≤ n ≤ 4096, e.g. 2/8");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let (i, n): (u32, u32) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if i == 0 || n == 0 || i > n || n > 4096 {
        return Err(bad());
    }
    Ok((i - 1, n))
}
