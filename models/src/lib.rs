//! The race catalogue: one file per race, each with its variants.

use racelab_harness::catalogue::RaceDef;

pub mod summary_upsert;

/// Every race of the catalogue, by id.
pub fn catalogue() -> Vec<RaceDef> {
    vec![summary_upsert::race()]
}
