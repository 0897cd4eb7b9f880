//! Test support, so that a model's tests read as timelines: build an explicit schedule, run it
//! with [`crate::explore::shortest::replay`], then look at the timeline cells and the state.
//!
//! ```text
//! let r = replay(&model, &Bounds::default(), &steps(&[0, 1, 0, 1])).unwrap();
//! assert_eq!(r.violation.unwrap().invariant, "no-two-documents-per-tag");
//! assert_eq!(texts(&r.events)[3], "add_document(2, s1, summary-2) → [2, s1, summary-2]");
//! ```

use crate::explore::{Choice, ChoiceKind, Event, State};
use crate::model::{Model, Phase, View};
use crate::op::ActorId;

/// A plain step of each actor in turn: `steps(&[0, 1, 0])` is actor 0, then 1, then 0.
pub fn steps(actors: &[ActorId]) -> Vec<Choice> {
    actors.iter().map(|&actor| choice(actor, ChoiceKind::Step)).collect()
}

/// `actor`'s process crashes (enabled only while `Bounds::crashes` allows).
pub fn crash(actor: ActorId) -> Choice {
    choice(actor, ChoiceKind::Crash)
}

/// `actor`'s next op fails with an injected error (enabled only while `Bounds::errors` allows).
pub fn error(actor: ActorId) -> Choice {
    choice(actor, ChoiceKind::Error)
}

fn choice(actor: ActorId, kind: ChoiceKind) -> Choice {
    Choice { actor: u8::try_from(actor).expect("an actor index fits a choice"), kind }
}

/// The timeline cells of `events`, in order.
pub fn texts(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.text.as_str()).collect()
}

/// The names of every invariant of `model` that `state` violates when checked in `phase`, in
/// the model's order. Unlike [`State::check`] it does not stop at the first one, and it leaves
/// the deadlock check out.
pub fn violated<M: Model>(model: &M, state: &State<M::Actor>, phase: Phase) -> Vec<&'static str> {
    let view = View { world: &state.world, actors: &state.actors, status: &state.status, phase };
    model.invariants().into_iter().filter(|inv| inv.check(&view).is_err()).map(|inv| inv.name).collect()
}
