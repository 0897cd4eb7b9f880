//! The model API: sans-IO actors, the model that sets them up, and the properties checked.
//!
//! An actor never performs I/O. It names its next [`Op`] and later consumes that op's
//! [`Outcome`]. Whoever runs the actor (an explorer over the simulated world, or a controller
//! over a real server) decides when each op executes.

use std::fmt::Debug;
use std::hash::Hash;

use crate::op::{Op, Outcome};
use crate::sim::World;
use crate::symmetry::{Renaming, Symmetry};

/// A sans-IO state machine: one client thread, request handler, hook, or daemon.
/// `Send + 'static` so that another engine can run each actor on a thread of its own.
pub trait Actor: Clone + Eq + Hash + Debug + Send + 'static {
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

    /// Rename what this actor holds (its connections, the values it owns) as `renaming` says.
    /// Called only for models that declare a [`Model::symmetry`]; see [`crate::symmetry`].
    fn rename(&mut self, renaming: &Renaming) {
        let _ = renaming;
        unreachable!("a model that declares a symmetry implements Actor::rename for its actors")
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

type CheckFn<A> = dyn Fn(&View<'_, A>) -> Result<(), String> + Send + Sync;
type ReachedFn<A> = dyn Fn(&View<'_, A>) -> bool + Send + Sync;

/// A named safety property: a one-line explanation when it is violated. A closure, so that it
/// can read the model's parameters (`move |v| … self.requests …`).
pub struct Invariant<A> {
    pub name: &'static str,
    /// Checked only in final states (no actor can move), such as "every request was answered".
    pub final_only: bool,
    check: Box<CheckFn<A>>,
}

impl<A> Invariant<A> {
    /// A property checked after every step and in the final state.
    pub fn new(
        name: &'static str,
        check: impl Fn(&View<'_, A>) -> Result<(), String> + Send + Sync + 'static,
    ) -> Invariant<A> {
        Invariant { name, final_only: false, check: Box::new(check) }
    }

    /// A property checked only in final states.
    pub fn final_only(
        name: &'static str,
        check: impl Fn(&View<'_, A>) -> Result<(), String> + Send + Sync + 'static,
    ) -> Invariant<A> {
        Invariant { name, final_only: true, check: Box::new(check) }
    }

    pub fn check(&self, view: &View<'_, A>) -> Result<(), String> {
        (self.check)(view)
    }
}

/// A named state that the exploration must reach, so that a fix cannot "hold" because it never
/// gets to the critical section.
pub struct Target<A> {
    pub name: &'static str,
    reached: Box<ReachedFn<A>>,
}

impl<A> Target<A> {
    pub fn new(name: &'static str, reached: impl Fn(&View<'_, A>) -> bool + Send + Sync + 'static) -> Target<A> {
        Target { name, reached: Box::new(reached) }
    }

    pub fn reached(&self, view: &View<'_, A>) -> bool {
        (self.reached)(view)
    }
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

    /// Groups of identical actors and the values each owns, when the model has them: the
    /// exhaustive search then explores one state of each class of states that differ only by
    /// a renaming of identical actors (see [`crate::symmetry`]). The model's properties must not
    /// single out one actor of a group, and its actors must implement [`Actor::rename`].
    fn symmetry(&self) -> Option<Symmetry> {
        None
    }

    /// Is a state where every unfinished actor waits a violation? Almost always.
    fn deadlock_is_violation(&self) -> bool {
        true
    }
}

/// The name of the built-in deadlock property.
pub const DEADLOCK: &str = "no-deadlock";
