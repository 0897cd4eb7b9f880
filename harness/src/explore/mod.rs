//! Explorers: which actor moves next, and which fault strikes.
//!
//! Every strategy sits behind [`Explorer`]. Stateless strategies (random, PCT, replay) plug a
//! [`Scheduler`] into [`stateless::Stateless`], which runs whole schedules from the initial state
//! and so works on any backend. [`exhaustive::Exhaustive`] is a stateful depth-first search over
//! the simulated world with state caching and sleep sets; [`dpor::Dpor`] is a stateless search
//! with source sets and sleep sets. When anything finds a violation,
//! [`shortest`] turns it into a minimal schedule.

pub mod budget;
pub mod dpor;
pub mod exhaustive;
pub mod machine;
pub mod parallel;
pub mod shortest;
pub mod state;
pub mod stateless;
mod visited;

use serde::Serialize;

use crate::model::Model;

pub use budget::{Budget, Progress, Shard};
pub use state::{Event, State, Violation};

/// Which fault (or none) a choice applies to its actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChoiceKind {
    /// Run the actor's next op, or collect its granted wait.
    Step,
    /// Its process crashes.
    Crash,
    /// Its next op fails with an injected error instead of running.
    Error,
    /// Its waiting op times out.
    Timeout,
    /// Its op takes effect, but the reply is lost: it sees an error or a timeout instead of the
    /// outcome (a commit that committed while its client timed out).
    LostReply,
    /// Power fails: every process dies, and the files keep one of the durable states the
    /// persistence model allows. The choice's `actor` field picks which one (0..32), not an actor.
    PowerLoss,
}

impl ChoiceKind {
    /// Every kind, in token order.
    pub const ALL: [ChoiceKind; 6] = [
        ChoiceKind::Step,
        ChoiceKind::Crash,
        ChoiceKind::Error,
        ChoiceKind::Timeout,
        ChoiceKind::LostReply,
        ChoiceKind::PowerLoss,
    ];

    pub fn is_fault(self) -> bool {
        self != ChoiceKind::Step
    }
}

/// One scheduling decision. A schedule is a sequence of them, and a token encodes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Choice {
    pub actor: u8,
    pub kind: ChoiceKind,
}

impl Choice {
    /// The actor this choice moves, or `None` for a power loss, whose `actor` field picks a
    /// durable state instead. Timelines show world events in the first column.
    pub fn actor_index(&self) -> Option<usize> {
        (self.kind != ChoiceKind::PowerLoss).then_some(usize::from(self.actor))
    }
}

/// The limits of an exploration. Everything the explorers do is bounded by these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Bounds {
    /// Crash faults per execution.
    pub crashes: u8,
    /// Injected error returns per execution.
    pub errors: u8,
    /// Timeouts of waiting ops per execution.
    pub timeouts: u8,
    /// Lost replies (the op took effect, the actor saw an error) per execution.
    pub lost_replies: u8,
    /// Power losses per execution.
    pub power_losses: u8,
    /// At most this many preemptive context switches per execution (`None`: unbounded).
    pub preemptions: Option<u8>,
    /// Steps per execution.
    pub max_depth: u32,
    /// Distinct states per exploration.
    pub max_states: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            crashes: 0,
            errors: 0,
            timeouts: 0,
            lost_replies: 0,
            power_losses: 0,
            preemptions: None,
            max_depth: 200,
            max_states: 2_000_000,
        }
    }
}

/// How many schedules, states and steps an exploration covered. Each counter counts one thing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Stats {
    /// Complete executions covered: for a stateless strategy, the schedules it ran; for the
    /// exhaustive search, the paths from the initial state to a final state in the explored
    /// graph (counted through the state cache, so one visit of a state stands for every path
    /// through it; saturates at [`Stats::EXECUTIONS_SATURATED`]).
    pub executions: u64,
    /// Distinct final states (no actor can move) reached.
    pub final_states: u64,
    /// Distinct states visited.
    pub states: u64,
    /// Transitions executed.
    pub transitions: u64,
    /// Transitions skipped by sleep sets.
    pub pruned: u64,
    /// Longest execution, in steps.
    pub depth: u32,
}

impl Stats {
    /// Where the exhaustive search's count of executions stops: it means "at least this many".
    pub const EXECUTIONS_SATURATED: u64 = u64::MAX - 1;
}

/// The result of exploring one model.
#[derive(Clone, Debug)]
pub struct Exploration {
    pub stats: Stats,
    /// The first violation found, with the schedule that reached it.
    pub violation: Option<(Violation, Vec<Choice>)>,
    /// Was every schedule within the bounds explored?
    pub complete: bool,
    /// Why not, when it was not.
    pub incomplete_reason: Option<String>,
    /// Names of the model's targets that no explored state reached (only filled in when the
    /// exploration was complete).
    pub unreached: Vec<String>,
    /// Bitmask of the targets some explored state reached, whatever the completeness: a share
    /// of a sharded search reports it so that the merge can take the union.
    pub reached: u64,
    /// Bytes the exhaustive search's visited-state tables allocated (slots, control bytes and
    /// stored sleep sets), for measuring bytes per state; 0 for stateless searches.
    pub cache_bytes: u64,
}

impl Exploration {
    /// The result of a search that stopped at `violation`, at `incomplete` (why it could not
    /// finish), or complete when neither: unreached targets are named only when complete.
    pub fn ended<M: Model>(
        model: &M,
        stats: Stats,
        violation: Option<(Violation, Vec<Choice>)>,
        incomplete: Option<String>,
        reached: u64,
        cache_bytes: u64,
    ) -> Exploration {
        let complete = violation.is_none() && incomplete.is_none();
        Exploration {
            unreached: if complete { unreached_targets(model, reached) } else { Vec::new() },
            stats,
            violation,
            complete,
            incomplete_reason: incomplete,
            reached,
            cache_bytes,
        }
    }
}

/// An exploration strategy.
pub trait Explorer {
    fn explore<M: Model>(&mut self, model: &M, bounds: &Bounds) -> Exploration;
}

/// A stateless scheduling policy, in the manner of Shuttle's `Scheduler`.
pub trait Scheduler {
    /// Prepare schedule number `index` (from 0). `false` when there are no more.
    fn begin(&mut self, index: u64) -> bool;
    /// Pick one of `enabled` (never empty) at step `step` of the current schedule.
    fn choose(&mut self, enabled: &[Choice], step: u32) -> usize;
    /// For a scheduler that enumerates: has it produced every schedule? `None` for a sampler,
    /// which can never cover them all.
    fn exhausted(&self) -> Option<bool> {
        None
    }
}

/// Names of targets whose bit is not in `reached`.
pub(crate) fn unreached_targets<M: Model>(model: &M, reached: u64) -> Vec<String> {
    model
        .targets()
        .iter()
        .enumerate()
        .filter(|(k, _)| reached & (1u64 << k) == 0)
        .map(|(_, t)| t.name.to_string())
        .collect()
}
