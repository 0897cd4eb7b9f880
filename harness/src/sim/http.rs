//! An HTTP boundary between client and server actors. (Stub: the full simulator replaces it.)

use crate::op::{ActorId, Applied, Footprint, HttpOp, Outcome};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Http {
    actors: usize,
}

impl Http {
    pub fn new(actors: usize) -> Http {
        Http { actors }
    }
    pub fn apply(&mut self, _actor: ActorId, _op: &HttpOp, _fp: &mut Footprint) -> Applied {
        Applied::Done(Outcome::Ok)
    }
    pub fn is_ready(&self, _actor: ActorId) -> bool {
        false
    }
    pub fn take_ready(&mut self, _actor: ActorId, _fp: &mut Footprint) -> Option<Outcome> {
        None
    }
    pub fn cancel_wait(&mut self, _actor: ActorId, _fp: &mut Footprint) -> Outcome {
        Outcome::Err(crate::op::ErrorCode::ETIMEDOUT)
    }
    /// `actor` died: requests it was serving fail with ECONNRESET for their clients.
    pub fn crash(&mut self, _actor: ActorId, _fp: &mut Footprint) {
        let _ = self.actors;
    }
}
