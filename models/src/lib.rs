//! The race catalogue: one file per race, each with its variants.

use racelab_harness::catalogue::RaceDef;

pub mod area_ensure;
pub mod config_edit;
pub mod daemon_spawn;
pub mod file_steps;
pub mod guidance_write;
pub mod judge_persist;
pub mod nested_locks;
pub mod progress_clear_insert;
pub mod state_save;
pub mod summary_upsert;

/// Every race, by id.
pub fn catalogue() -> Vec<RaceDef> {
    vec![
        area_ensure::race(),
        config_edit::race(),
        daemon_spawn::race(),
        guidance_write::race(),
        judge_persist::race(),
        nested_locks::race(),
        progress_clear_insert::race(),
        state_save::race(),
        summary_upsert::race(),
    ]
}
