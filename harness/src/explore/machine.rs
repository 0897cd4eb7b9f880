//! One execution of a model with its types erased: what another exploration engine (loom,
//! shuttle) needs to drive racelab's semantics without knowing the model's actor type.
//!
//! A [`Machine`] is a [`State`] together with the model's properties and the scenario's bounds.
//! It moves by racelab [`Choice`]s only, through the same [`State::apply`] every racelab
//! explorer uses, so a schedule an engine took is a racelab schedule: it replays, prints as a
//! timeline and encodes as a token.

use std::sync::Arc;

use crate::model::{Actor, Model, Status};

use super::state::{FaultsUsed, Properties, State};
use super::{Bounds, Choice, Violation};

/// A model's state and properties, `'static` and `Send`, so that engine threads can share it.
pub trait Machine: Send {
    /// An independent copy (properties are shared).
    fn boxed_clone(&self) -> Box<dyn Machine>;
    /// How many actors the model has.
    fn actor_count(&self) -> usize;
    /// Every choice enabled here, as [`State::choices`] lists them.
    fn choices(&self) -> Vec<Choice>;
    /// Apply one enabled choice.
    fn apply(&mut self, choice: Choice);
    /// Is some actor able to take a plain step? If not, the state is final.
    fn any_step(&self) -> bool;
    /// The first property violated here (the deadlock first), as racelab's explorers check it.
    fn violation(&self) -> Option<Violation>;
    /// Bitmask of the model's targets reached here.
    fn targets_reached(&self) -> u64;
    /// Names of the targets whose bit is not in `reached`.
    fn unreached(&self, reached: u64) -> Vec<String>;
    /// Faults spent so far.
    fn faults_used(&self) -> FaultsUsed;
    /// The scenario's bounds.
    fn bounds(&self) -> &Bounds;
    /// The state's 128-bit fingerprint, as the exhaustive search computes it.
    fn fingerprint(&self) -> u128;
    /// What an observer sees: each actor's state and status, and the world's committed state.
    fn observation(&self) -> Vec<String>;
}

struct Erased<A> {
    state: State<A>,
    props: Arc<Properties<A>>,
    deadlock_is_violation: bool,
    bounds: Bounds,
}

/// The initial state of `model` within `bounds`, erased.
pub fn machine<M: Model>(model: &M, bounds: &Bounds) -> Box<dyn Machine> {
    Box::new(Erased {
        state: State::initial(model),
        props: Arc::new(Properties::of(model)),
        deadlock_is_violation: model.deadlock_is_violation(),
        bounds: bounds.clone(),
    })
}

impl<A: Actor> Machine for Erased<A> {
    fn boxed_clone(&self) -> Box<dyn Machine> {
        Box::new(Erased {
            state: self.state.clone(),
            props: Arc::clone(&self.props),
            deadlock_is_violation: self.deadlock_is_violation,
            bounds: self.bounds.clone(),
        })
    }
    fn actor_count(&self) -> usize {
        self.state.actors.len()
    }
    fn choices(&self) -> Vec<Choice> {
        self.state.choices(&self.bounds)
    }
    fn apply(&mut self, choice: Choice) {
        self.state.apply(choice, &self.bounds);
    }
    fn any_step(&self) -> bool {
        self.state.any_step()
    }
    fn violation(&self) -> Option<Violation> {
        self.state.check_with(self.deadlock_is_violation, &self.props)
    }
    fn targets_reached(&self) -> u64 {
        self.state.targets_reached(&self.props)
    }
    fn unreached(&self, reached: u64) -> Vec<String> {
        let targets = self.props.targets.iter().enumerate();
        targets.filter(|(k, _)| reached & (1u64 << k) == 0).map(|(_, t)| t.name.to_string()).collect()
    }
    fn faults_used(&self) -> FaultsUsed {
        self.state.faults
    }
    fn bounds(&self) -> &Bounds {
        &self.bounds
    }
    fn fingerprint(&self) -> u128 {
        self.state.fingerprint()
    }
    fn observation(&self) -> Vec<String> {
        let actors = self.state.actors.iter().zip(&self.state.status);
        let mut lines: Vec<String> = actors
            .enumerate()
            .map(|(i, (actor, status))| {
                let status = match status {
                    Status::Running => "running",
                    Status::Waiting => "waiting",
                    Status::Finished => "finished",
                    Status::Crashed => "crashed",
                };
                format!("actor {i} {status}: {actor:?}")
            })
            .collect();
        lines.extend(self.state.world.describe());
        lines
    }
}
