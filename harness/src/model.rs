//! The model API: sans-IO actors, the model that sets them up, and the properties checked.
//!
//! An actor never performs I/O. It names its next [`Op`] and later consumes that op's
//! [`Outcome`]. Whoever runs the actor (an explorer over the simulated world, or a controller
//! over a real server) decides when each op executes.

use std::fmt::Debug;
use std::hash::Hash;

use crate::op::{Op, Outcome};
use crate::sim::World;

/// A sans-IO state machine: one client thread, request handler, hook, or daemon.
pub trait Actor: Clone + Eq + Hash + Debug {
    /// The operation this actor runs next, or `None` once it has finished. A pure function of
    /// the actor's state.
    fn next_op(&self) -> Option<Op>;

    /// Consume the outcome of the op that [`Actor::next_op`] returned.
    fn on_outcome(&mut self, outcome: &Outcome);

    /// The actor's process crashed. Return the state it restarts in, or `None` to stay dead.
    /// Volatile state is lost: a restarted actor keeps only what it would re-read from disk.
    fn on_crash(&self) -> Option<Self> {
        None
    }
}

/// Where an actor stands, as the explorer tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Has an op to run (or a completed wait to collect).
    Running,
    /// Its op waits in the world.
    Waiting,
    /// `next_op` returned `None`.
    Finished,
    /// Its process crashed and it did not restart.
    Crashed,
}

/// When a property is evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// After every step.
    Step,
    /// In a final state: no actor can move.
    Final,
}

/// What a property sees: the world, every actor, and the explorer's view of each actor.
pub struct View<'a, A> {
    pub world: &'a World,
    pub actors: &'a [A],
    pub status: &'a [Status],
    pub phase: Phase,
}

/// A named safety property. `check` returns a one-line explanation when it is violated.
pub struct Invariant<A> {
    pub name: &'static str,
    pub check: fn(&View<'_, A>) -> Result<(), String>,
}

/// A named state that the exploration must reach, so that a fix cannot "hold" because it never
/// gets to the critical section.
pub struct Target<A> {
    pub name: &'static str,
    pub reached: fn(&View<'_, A>) -> bool,
}

/// A race variant, set up with its parameters: stateright's `Model` without the search.
pub trait Model: Send + Sync + 'static {
    type Actor: Actor;

    /// The initial world and actors. Actor `i` is named `actor_names()[i]` in timelines.
    fn init(&self) -> (World, Vec<Self::Actor>);

    /// Column headings for timelines, one per actor.
    fn actor_names(&self) -> Vec<String>;

    /// Properties that must hold in every reachable state.
    fn invariants(&self) -> Vec<Invariant<Self::Actor>>;

    /// States that must be reachable (non-vacuity).
    fn targets(&self) -> Vec<Target<Self::Actor>>;

    /// Is a state where every unfinished actor waits a violation? Almost always.
    fn deadlock_is_violation(&self) -> bool {
        true
    }
}

/// The name of the built-in deadlock property.
pub const DEADLOCK: &str = "no-deadlock";
