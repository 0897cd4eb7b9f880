//! Reusable parts a model can add to its world with [`super::World::add_part`]: an in-process
//! mutex, atomic cells, a TTL cache with explored time, a bounded connection pool, and a timer
//! whose sleeps end when a clock actor's ticks say so. Each is a
//! [`Subsystem`](super::Subsystem) like the built-in database, OS and HTTP boundary.
//!
//! Keys are small integers chosen by the model (a lock per area name, a cell per counter), so
//! that states stay small and hash fast.

use crate::op::{ErrorCode, Resource};

/// Upper bound on waiters queued on one lock or pool.
const MAX_WAITERS: usize = crate::op::MAX_ACTORS;

/// Releasing a lock (or returning a connection) one does not hold.
pub const EPERM: ErrorCode = ErrorCode("EPERM");

fn resource(kind: u64, key: i64) -> Resource {
    Resource::Custom(kind.wrapping_mul(31).wrapping_add(key as u64))
}

mod atomic;
mod cache;
mod mutex;
mod pool;
mod timer;

pub use atomic::*;
pub use cache::*;
pub use mutex::*;
pub use pool::*;
pub use timer::*;

#[cfg(test)]
mod tests;
