//! The one mechanism by which the world executes ops: a [`Subsystem`].
//!
//! A subsystem is a piece of shared state (a database, an operating system, a mutex, a cache)
//! that applies its own ops atomically, may make an op wait and grant it later, records what
//! each transition touched for partial-order reduction, and says what a crash of an actor's
//! process does to it. The built-in database, OS and HTTP boundary implement it, and so does
//! every part a model adds with [`crate::sim::World::add_part`]; the world routes every op
//! through the same trait.
//!
//! A subsystem is `Clone + Eq + Hash`: explorers fork worlds and remember which states they saw,
//! so keep subsystem state small and hash only what matters for the future.

use std::any::Any;
use std::fmt::{self, Debug, Display};
use std::hash::{Hash, Hasher};

use crate::explore::state::ByteSink;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::op::{ActorId, Applied, ErrorCode, Footprint, Op, OpKind, Outcome};
use crate::symmetry::Renaming;

/// An op a subsystem executes. `Display` renders its arguments in a timeline cell, such as
/// `(key=3)`, after the op's application-level name.
pub trait PartOp: Clone + Eq + Hash + Debug + Display + Send + Sync + 'static {
    /// May the explorer replace this op's outcome with an injected error, or lose its reply?
    /// Releasing a lock, say, does not fail in most models.
    fn is_fallible(&self) -> bool {
        true
    }
}

/// Shared state in the world that executes ops of type [`Subsystem::Op`].
pub trait Subsystem: Clone + Eq + Hash + Debug + Send + Sync + 'static {
    type Op: PartOp;

    /// A short name, for messages and the final-state description.
    fn name(&self) -> &'static str;

    /// Apply `actor`'s op atomically: it completes, or it waits (return [`Applied::Blocked`] and
    /// grant it later, so that [`Subsystem::is_ready`] turns true). Record what it touched in `fp`.
    fn apply(&mut self, actor: ActorId, op: &Self::Op, fp: &mut Footprint) -> Applied;

    /// Has `actor`'s waiting op been granted?
    fn is_ready(&self, actor: ActorId) -> bool {
        let _ = actor;
        false
    }

    /// Collect the outcome of `actor`'s granted op.
    fn take_ready(&mut self, actor: ActorId, fp: &mut Footprint) -> Option<Outcome> {
        let _ = (actor, fp);
        None
    }

    /// A timeout fires on `actor`'s waiting op: dequeue it and return the error it gets.
    fn cancel_wait(&mut self, actor: ActorId, fp: &mut Footprint) -> Outcome {
        let _ = (actor, fp);
        panic!("{}: cancel_wait on a subsystem whose ops never wait", self.name())
    }

    /// `actor`'s op fails with an injected error instead of running.
    fn inject_error(&mut self, actor: ActorId, op: &Self::Op, fp: &mut Footprint) -> Outcome {
        let _ = (actor, op, fp);
        Outcome::Err(ErrorCode::EIO)
    }

    /// `actor`'s op took effect (with `outcome`) but its reply is lost: return what the actor
    /// sees instead (a timeout, by default), and change the state as the failure would.
    fn lose_reply(&mut self, actor: ActorId, op: &Self::Op, outcome: Outcome, fp: &mut Footprint) -> Outcome {
        let _ = (actor, op, outcome, fp);
        Outcome::Err(ErrorCode::ETIMEDOUT)
    }

    /// The processes running `dead` crashed: drop their waits and release what they held.
    fn on_crash(&mut self, dead: &[ActorId], fp: &mut Footprint) {
        let _ = (dead, fp);
    }

    /// Does `actor` wait here without being stuck (a server idle in `accept`)?
    fn is_idle(&self, actor: ActorId) -> bool {
        let _ = actor;
        false
    }

    /// How many distinct durable states a power loss could leave now (1: nothing is volatile).
    /// At most 1024: more than 32 take two explored picks.
    fn power_loss_states(&self) -> usize {
        1
    }

    /// Power fails (every process already died through [`Subsystem::on_crash`]); keep durable
    /// state `k` of [`Subsystem::power_loss_states`]. Returns what survived, for the timeline.
    fn power_loss(&mut self, k: usize, fp: &mut Footprint) -> String {
        let _ = (k, fp);
        String::new()
    }

    /// Lines a reader of a counterexample needs: who holds what, what is stored.
    fn describe(&self) -> Vec<String> {
        Vec::new()
    }

    /// Can [`Subsystem::rename`] rename this state? `Err` says why not, and the search then
    /// keys this state by its plain fingerprint (see [`crate::symmetry`]).
    fn renamable(&self) -> Result<(), String> {
        Err(format!("the {} part does not rename actors", self.name()))
    }

    /// What this state keeps about `actor` (where it waits in a queue, what it holds), for
    /// sorting a group of identical actors: `abstracting` ([`Renaming::abstracting`]) names
    /// the other members, their values and every slot and pid alike, so the result must not
    /// depend on which member `actor` is. States that differ only in such a queue order then
    /// sort alike. Written into `out`, which hashes a member's whole key in one pass. Nothing
    /// by default.
    fn actor_signature(&self, actor: ActorId, abstracting: &Renaming, out: &mut ByteSink<'_>) {
        let _ = (actor, abstracting, out);
    }

    /// Do [`Subsystem::apply`], [`Subsystem::take_ready`] and [`Subsystem::on_crash`] mark in
    /// `fp` every actor other than the caller (or the dead) whose [`Subsystem::actor_signature`]
    /// they may have changed ([`Footprint::signature_changed`])? If not (the default), the world
    /// assumes every actor's. A subsystem whose signature is empty may simply say yes.
    /// Marking too many costs time; missing one makes the symmetry reduction depend on the path.
    fn reports_signature_changes(&self) -> bool {
        false
    }

    /// Rename the actors, connections and values this state keeps, as `renaming` says. Called
    /// only when [`Subsystem::renamable`] is `Ok`.
    fn rename(&mut self, renaming: &Renaming) {
        let _ = renaming;
        unreachable!("{}: rename without renamable", self.name())
    }

    /// Would [`Subsystem::rename`] by `renaming` leave this state as it is? A search asks this
    /// of every state where identical actors tie (see `State::mirrors`). By default it renames
    /// a copy and compares; a subsystem may answer without the copy, as long as it answers alike.
    fn fixed_by(&self, renaming: &Renaming) -> bool {
        let mut renamed = self.clone();
        renamed.rename(renaming);
        renamed == *self
    }
}

/// An op of some subsystem, type-erased so that [`OpKind`] can carry it.
pub trait AnyOp: Any + Debug + Send + Sync {
    fn eq_dyn(&self, other: &dyn AnyOp) -> bool;
    fn hash_dyn(&self, state: &mut dyn Hasher);
    fn as_any(&self) -> &dyn Any;
    fn args(&self) -> String;
    fn fallible(&self) -> bool;
}

impl<T: PartOp> AnyOp for T {
    fn eq_dyn(&self, other: &dyn AnyOp) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
    fn hash_dyn(&self, mut state: &mut dyn Hasher) {
        self.hash(&mut state);
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn args(&self) -> String {
        self.to_string()
    }
    fn fallible(&self) -> bool {
        self.is_fallible()
    }
}

/// An op for a model-defined part: which part, and the op itself.
#[derive(Clone)]
pub struct PartOpBox {
    pub part: u8,
    pub op: Arc<dyn AnyOp>,
}

impl Debug for PartOpBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "part{}:{:?}", self.part, self.op)
    }
}
impl PartialEq for PartOpBox {
    fn eq(&self, other: &Self) -> bool {
        self.part == other.part && self.op.eq_dyn(&*other.op)
    }
}
impl Eq for PartOpBox {}
impl Hash for PartOpBox {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.part.hash(state);
        self.op.hash_dyn(state);
    }
}

/// A subsystem with its types erased, so that a world can hold parts of any type.
pub trait Part: Any + Debug + Send + Sync {
    fn clone_box(&self) -> Box<dyn Part>;
    fn eq_dyn(&self, other: &dyn Part) -> bool;
    fn hash_dyn(&self, state: &mut dyn Hasher);
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn apply_dyn(&mut self, actor: ActorId, op: &dyn AnyOp, fp: &mut Footprint) -> Applied;
    fn is_ready_dyn(&self, actor: ActorId) -> bool;
    fn take_ready_dyn(&mut self, actor: ActorId, fp: &mut Footprint) -> Option<Outcome>;
    fn cancel_wait_dyn(&mut self, actor: ActorId, fp: &mut Footprint) -> Outcome;
    fn inject_error_dyn(&mut self, actor: ActorId, op: &dyn AnyOp, fp: &mut Footprint) -> Outcome;
    fn lose_reply_dyn(&mut self, actor: ActorId, op: &dyn AnyOp, outcome: Outcome, fp: &mut Footprint) -> Outcome;
    fn on_crash_dyn(&mut self, dead: &[ActorId], fp: &mut Footprint);
    fn is_idle_dyn(&self, actor: ActorId) -> bool;
    fn power_loss_states_dyn(&self) -> usize;
    fn power_loss_dyn(&mut self, k: usize, fp: &mut Footprint) -> String;
    fn describe_dyn(&self) -> Vec<String>;
    fn renamable_dyn(&self) -> Result<(), String>;
    fn rename_dyn(&mut self, renaming: &Renaming);
    fn fixed_by_dyn(&self, renaming: &Renaming) -> bool;
    fn actor_signature_dyn(&self, actor: ActorId, abstracting: &Renaming, out: &mut ByteSink<'_>);
}

fn downcast<S: Subsystem>(s: &S, op: &dyn AnyOp) -> S::Op {
    match op.as_any().downcast_ref::<S::Op>() {
        Some(op) => op.clone(),
        None => panic!("{}: an op of another subsystem was routed here: {op:?}", s.name()),
    }
}

impl<S: Subsystem> Part for S {
    fn clone_box(&self) -> Box<dyn Part> {
        Box::new(self.clone())
    }
    fn eq_dyn(&self, other: &dyn Part) -> bool {
        other.as_any().downcast_ref::<S>() == Some(self)
    }
    fn hash_dyn(&self, mut state: &mut dyn Hasher) {
        self.hash(&mut state);
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn apply_dyn(&mut self, actor: ActorId, op: &dyn AnyOp, fp: &mut Footprint) -> Applied {
        let applied = match op.as_any().downcast_ref::<S::Op>() {
            Some(op) => self.apply(actor, op, fp),
            None => self.apply(actor, &downcast(self, op), fp),
        };
        if !self.reports_signature_changes() {
            fp.signatures_changed();
        }
        applied
    }
    fn is_ready_dyn(&self, actor: ActorId) -> bool {
        self.is_ready(actor)
    }
    fn take_ready_dyn(&mut self, actor: ActorId, fp: &mut Footprint) -> Option<Outcome> {
        let outcome = self.take_ready(actor, fp);
        if !self.reports_signature_changes() {
            fp.signatures_changed();
        }
        outcome
    }
    fn cancel_wait_dyn(&mut self, actor: ActorId, fp: &mut Footprint) -> Outcome {
        self.cancel_wait(actor, fp)
    }
    fn inject_error_dyn(&mut self, actor: ActorId, op: &dyn AnyOp, fp: &mut Footprint) -> Outcome {
        let op = downcast(self, op);
        self.inject_error(actor, &op, fp)
    }
    fn lose_reply_dyn(&mut self, actor: ActorId, op: &dyn AnyOp, outcome: Outcome, fp: &mut Footprint) -> Outcome {
        let op = downcast(self, op);
        self.lose_reply(actor, &op, outcome, fp)
    }
    fn on_crash_dyn(&mut self, dead: &[ActorId], fp: &mut Footprint) {
        self.on_crash(dead, fp);
        if !self.reports_signature_changes() {
            fp.signatures_changed();
        }
    }
    fn is_idle_dyn(&self, actor: ActorId) -> bool {
        self.is_idle(actor)
    }
    fn power_loss_states_dyn(&self) -> usize {
        self.power_loss_states()
    }
    fn power_loss_dyn(&mut self, k: usize, fp: &mut Footprint) -> String {
        self.power_loss(k, fp)
    }
    fn describe_dyn(&self) -> Vec<String> {
        self.describe()
    }
    fn renamable_dyn(&self) -> Result<(), String> {
        self.renamable()
    }
    fn rename_dyn(&mut self, renaming: &Renaming) {
        self.rename(renaming)
    }
    fn fixed_by_dyn(&self, renaming: &Renaming) -> bool {
        self.fixed_by(renaming)
    }
    fn actor_signature_dyn(&self, actor: ActorId, abstracting: &Renaming, out: &mut ByteSink<'_>) {
        self.actor_signature(actor, abstracting, out)
    }
}

/// The model-defined parts of a world, in the order they were added.
#[derive(Default)]
pub struct Parts(pub(crate) Vec<Box<dyn Part>>);

impl Clone for Parts {
    fn clone(&self) -> Self {
        Parts(self.0.iter().map(|p| p.clone_box()).collect())
    }
}
impl Debug for Parts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}
impl PartialEq for Parts {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|(a, b)| a.eq_dyn(&**b))
    }
}
impl Eq for Parts {}
impl Hash for Parts {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.len().hash(state);
        for p in &self.0 {
            p.hash_dyn(state);
        }
    }
}

/// Upper bound on model-defined parts per world.
pub const MAX_PARTS: usize = 16;

/// A typed handle to a part a model added to its world: it builds that part's ops, and reads
/// the part's state in properties.
pub struct PartId<S> {
    pub(crate) index: u8,
    _type: PhantomData<fn() -> S>,
}

impl<S> Clone for PartId<S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for PartId<S> {}
impl<S> Debug for PartId<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PartId({})", self.index)
    }
}
impl<S> PartialEq for PartId<S> {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index
    }
}
impl<S> Eq for PartId<S> {}
impl<S> Hash for PartId<S> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.index.hash(state);
    }
}

impl<S: Subsystem> PartId<S> {
    pub(crate) fn new(index: u8) -> PartId<S> {
        PartId { index, _type: PhantomData }
    }

    /// An op on this part, named `name` in timelines.
    pub fn op(self, name: &'static str, op: S::Op) -> Op {
        Op { name, kind: OpKind::Part(PartOpBox { part: self.index, op: Arc::new(op) }) }
    }
}

/// For tests of [`Subsystem::reports_signature_changes`]: every one of `actors` actors whose
/// [`Subsystem::actor_signature`] `change` alters, other than `mover`, is named in the footprint
/// it leaves (which starts as a crash's does: everything touched, no signature named yet).
#[cfg(test)]
pub(crate) fn assert_changed_signatures_named<S: Subsystem>(
    subject: &mut S,
    actors: usize,
    mover: Option<ActorId>,
    change: impl FnOnce(&mut S, &mut Footprint),
) {
    use crate::symmetry::Symmetry;
    let identity = Renaming::new((0..actors).collect(), &[], &Symmetry::default());
    let signatures = |s: &S| -> Vec<Vec<u8>> {
        (0..actors)
            .map(|a| {
                let mut bytes = Vec::new();
                s.actor_signature(a, &identity, &mut ByteSink(&mut bytes));
                bytes
            })
            .collect()
    };
    let before = signatures(subject);
    let mut fp = Footprint { signatures: 0, ..Footprint::GLOBAL };
    change(subject, &mut fp);
    let after = signatures(subject);
    for a in (0..actors).filter(|&a| Some(a) != mover && before[a] != after[a]) {
        assert!(fp.signatures & (1 << a) != 0, "actor {a}'s signature changed unnamed");
    }
}
