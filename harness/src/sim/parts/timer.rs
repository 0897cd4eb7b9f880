//! [`Timer`]: sleeps that end when a clock actor's ticks say so.

use std::fmt;
use std::hash::Hash;

use crate::explore::state::ByteSink;

use crate::op::{ActorId, Applied, ErrorCode, Footprint, Outcome};
use crate::sim::subsystem::{PartOp, Subsystem};
use crate::symmetry::Renaming;

use super::{resource, MAX_WAITERS};

/// Ops on [`Timer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerOp {
    /// `time.sleep(n)`: waits until `n` ticks have passed.
    Sleep(u32),
    /// One tick of time passes, for every sleeper at once. A clock actor issues these, so the
    /// explorer decides when a sleep ends relative to everything else. While nobody sleeps the
    /// passing of time changes nothing, so a tick waits (idle, never deadlocked) for a sleeper.
    Tick,
}

impl fmt::Display for TimerOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimerOp::Sleep(n) => write!(f, "({n})"),
            TimerOp::Tick => Ok(()),
        }
    }
}

impl PartOp for TimerOp {
    fn is_fallible(&self) -> bool {
        false
    }
}

/// Sleeps that end when a clock actor's ticks say so, never by the wall clock. A sleeper whose
/// ticks have passed is ready; until then it waits (a timeout fault interrupts it: `ETIMEDOUT`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Timer {
    /// Each sleeper with the ticks it still has to wait, in the order they fell asleep.
    sleepers: Vec<(ActorId, u32)>,
    /// Clocks whose tick waits for a sleeper.
    idle_clocks: Vec<ActorId>,
}

impl Timer {
    pub fn new() -> Timer {
        Timer::default()
    }

    /// Actors asleep now, woken or not.
    pub fn sleepers(&self) -> usize {
        self.sleepers.len()
    }

    fn tick(&mut self) {
        for (_, left) in &mut self.sleepers {
            *left = left.saturating_sub(1);
        }
    }
}

impl Subsystem for Timer {
    type Op = TimerOp;

    fn name(&self) -> &'static str {
        "timer"
    }

    fn renamable(&self) -> Result<(), String> {
        Ok(())
    }

    fn rename(&mut self, r: &Renaming) {
        self.sleepers.iter_mut().for_each(|(a, _)| *a = r.actor(*a));
        self.idle_clocks.iter_mut().for_each(|a| *a = r.actor(*a));
    }

    /// Where `actor` sleeps and how long it has left, or where it waits as a clock.
    fn actor_signature(&self, actor: ActorId, _: &Renaming, out: &mut ByteSink<'_>) {
        let asleep = self.sleepers.iter().position(|&(a, _)| a == actor).map(|k| (k, self.sleepers[k].1));
        (asleep, self.idle_clocks.iter().position(|&a| a == actor)).hash(out);
    }

    fn apply(&mut self, actor: ActorId, op: &TimerOp, fp: &mut Footprint) -> Applied {
        fp.write(resource(5, 0));
        match *op {
            TimerOp::Sleep(0) => Applied::Done(Outcome::Ok),
            TimerOp::Sleep(n) => {
                assert!(self.sleepers.len() < MAX_WAITERS, "too many sleepers");
                self.sleepers.push((actor, n));
                Applied::Blocked
            }
            TimerOp::Tick if self.sleepers.is_empty() => {
                assert!(self.idle_clocks.len() < MAX_WAITERS, "too many clocks");
                self.idle_clocks.push(actor);
                Applied::Blocked
            }
            TimerOp::Tick => {
                self.tick();
                Applied::Done(Outcome::Ok)
            }
        }
    }

    fn is_ready(&self, actor: ActorId) -> bool {
        self.sleepers.iter().any(|&(a, left)| a == actor && left == 0)
            || (self.idle_clocks.contains(&actor) && !self.sleepers.is_empty())
    }

    fn take_ready(&mut self, actor: ActorId, fp: &mut Footprint) -> Option<Outcome> {
        fp.write(resource(5, 0));
        if let Some(k) = self.sleepers.iter().position(|&(a, left)| a == actor && left == 0) {
            self.sleepers.remove(k);
            return Some(Outcome::Ok);
        }
        let k = self.idle_clocks.iter().position(|&a| a == actor).filter(|_| !self.sleepers.is_empty())?;
        self.idle_clocks.remove(k);
        self.tick();
        Some(Outcome::Ok)
    }

    fn cancel_wait(&mut self, actor: ActorId, fp: &mut Footprint) -> Outcome {
        fp.global();
        self.sleepers.retain(|&(a, _)| a != actor);
        self.idle_clocks.retain(|&a| a != actor);
        Outcome::Err(ErrorCode::ETIMEDOUT)
    }

    fn on_crash(&mut self, dead: &[ActorId], fp: &mut Footprint) {
        fp.global();
        self.sleepers.retain(|(a, _)| !dead.contains(a));
        self.idle_clocks.retain(|a| !dead.contains(a));
    }

    /// A clock is idle only while there is nobody to wake; once someone sleeps, its tick is due.
    fn is_idle(&self, actor: ActorId) -> bool {
        self.idle_clocks.contains(&actor) && self.sleepers.is_empty()
    }

    fn describe(&self) -> Vec<String> {
        if self.sleepers.is_empty() {
            return Vec::new();
        }
        let asleep: Vec<String> = self.sleepers.iter().map(|(a, left)| format!("#{a} for {left} more ticks")).collect();
        vec![format!("asleep: {}", asleep.join(", "))]
    }
}
