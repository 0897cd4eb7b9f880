//! The race catalogue: one file per race, each with its variants.

use racelab_harness::catalogue::RaceDef;

/// Every race, in catalogue order.
pub fn catalogue() -> Vec<RaceDef> {
    vec![]
}
