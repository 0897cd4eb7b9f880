//! The race catalogue: one file per race, each with its variants.

use racelab_harness::catalogue::RaceDef;

pub mod area_ensure;
pub mod daemon_spawn;
pub mod judge_persist;
pub mod nested_locks;
pub mod progress_clear_insert;
pub mod summary_upsert;

/// Every race, by id.
pub fn catalogue() -> Vec<RaceDef> {
    vec![
        area_ensure::race(),
        daemon_spawn::race(),
        judge_persist::race(),
        nested_locks::race(),
        progress_clear_insert::race(),
        summary_upsert::race(),
    ]
}
