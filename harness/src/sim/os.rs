//! Processes, files and `flock`. (Stub: the full simulator replaces it.)

use crate::op::{ActorId, Applied, Footprint, OsOp, Outcome, Pid};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Os {
    actors: usize,
}

impl Os {
    pub fn new(actors: usize) -> Os {
        Os { actors }
    }
    /// Start a process at init that runs `actors` (all its tasks). Returns its pid.
    pub fn start_process(&mut self, _actors: &[ActorId]) -> Pid {
        1
    }
    /// Declare `actor` dormant: it runs only once spawned (its first op is `AwaitSpawn`).
    pub fn add_dormant(&mut self, _actor: ActorId) {}
    pub fn apply(&mut self, _actor: ActorId, _op: &OsOp, _fp: &mut Footprint) -> Applied {
        Applied::Done(Outcome::Ok)
    }
    pub fn is_ready(&self, _actor: ActorId) -> bool {
        false
    }
    pub fn is_dormant(&self, _actor: ActorId) -> bool {
        false
    }
    pub fn take_ready(&mut self, _actor: ActorId, _fp: &mut Footprint) -> Option<Outcome> {
        None
    }
    pub fn cancel_wait(&mut self, _actor: ActorId, _fp: &mut Footprint) -> Outcome {
        Outcome::Err(crate::op::ErrorCode::ETIMEDOUT)
    }
    /// Kill `actor`'s process; returns all actors that ran in it.
    pub fn crash(&mut self, actor: ActorId) -> Vec<ActorId> {
        let _ = self.actors;
        vec![actor]
    }
}
