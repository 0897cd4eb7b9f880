//! The race catalogue: one file per race, each with its variants.

use racelab_harness::catalogue::RaceDef;

pub mod nested_locks;
pub mod progress_clear_insert;
pub mod summary_upsert;

/// Every race of the catalogue, by id.
pub fn catalogue() -> Vec<RaceDef> {
    vec![nested_locks::race(), progress_clear_insert::race(), summary_upsert::race()]
}
