//! The race catalogue: one file per race, each with its variants.

use racelab_harness::catalogue::RaceDef;

pub mod agent_lock_commit;
pub mod area_ensure;
pub mod config_edit;
pub mod daemon_spawn;
pub mod deferred_stop;
pub mod file_steps;
pub mod guidance_write;
pub mod judge_persist;
pub mod lock_reentrancy;
pub mod lock_timeout_leak;
pub mod nested_locks;
pub mod pool_exhaustion;
pub mod progress_clear_insert;
pub mod reaper_commit;
pub mod session_get_or_create;
pub mod skill_inject;
pub mod state_save;
pub mod summarise_dedup;
pub mod summary_upsert;

/// Every race, by id.
pub fn catalogue() -> Vec<RaceDef> {
    vec![
        agent_lock_commit::race(),
        area_ensure::race(),
        config_edit::race(),
        daemon_spawn::race(),
        deferred_stop::race(),
        guidance_write::race(),
        judge_persist::race(),
        lock_reentrancy::race(),
        lock_timeout_leak::race(),
        nested_locks::race(),
        pool_exhaustion::race(),
        progress_clear_insert::race(),
        reaper_commit::race(),
        session_get_or_create::race(),
        skill_inject::race(),
        state_save::race(),
        summarise_dedup::race(),
        summary_upsert::race(),
    ]
}
