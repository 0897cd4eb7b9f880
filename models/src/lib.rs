//! The race catalogue: one file per race, each with its variants.

use racelab_harness::catalogue::RaceDef;

pub mod daemon_spawn;
pub mod judge_persist;

/// Every race, by id.
pub fn catalogue() -> Vec<RaceDef> {
    vec![daemon_spawn::race(), judge_persist::race()]
}
