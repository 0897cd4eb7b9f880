//! The scale table: every race that holds, with more and more identical workers plus one crash,
//! explored exhaustively: states, time, states/s and bytes per visited state of the sequential
//! search, and the time of the parallel search (`--threads`) on one and on two threads.
//!
//! `cargo bench -p racelab-models --bench scale` (or `just bench-scale`) prints a Markdown
//! table. Each exploration gets `RACELAB_SCALE_LIMIT` seconds (default 10), after which its row
//! says how far it got; `RACELAB_SCALE_WORKERS` (default `2,4,6,8,16`) picks the worker counts
//! and `RACELAB_SCALE_RACES` (a comma-separated list of substrings of `race/variant`) the rows;
//! `RACELAB_SCALE_SEQUENTIAL=1` skips the thread columns.
//! Times are wall clock on whatever the machine is doing; take the best of several runs.

// The allocator the `racelab` binary uses, so that the table times what `check` does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::time::Instant;

use racelab_harness::catalogue::{Param, Params};
use racelab_harness::explore::budget::Budget;
use racelab_harness::explore::exhaustive::Exhaustive;
use racelab_harness::explore::Bounds;

/// The fault one row allows.
#[derive(Clone, Copy)]
enum Fault {
    Crash,
    /// For the races that hold only without faults: skill-inject/refresh (a crash between
    /// sending the prompt and persisting it makes any design inject twice) and config-edit/flock
    /// (a crash between the truncation and the write empties the config), as their doc
    /// comments say.
    None,
}

/// The holding variants whose workers are identical, the parameter that counts them, and the
/// fault each row allows.
const CELLS: &[(&str, &str, &str, Fault)] = &[
    ("summary-upsert", "advisory-xact-lock", "requests", Fault::Crash),
    ("summary-upsert", "unique-on-conflict", "requests", Fault::Crash),
    ("progress-clear-insert", "upsert", "requests", Fault::Crash),
    ("nested-locks", "single-namespace", "hooks", Fault::Crash),
    ("daemon-spawn", "daemon-writes-pid", "hooks", Fault::Crash),
    ("agent-lock-commit", "session-lock", "hooks", Fault::Crash),
    ("lock-timeout-leak", "unconditional-unlock", "hooks", Fault::Crash),
    ("lock-reentrancy", "reentrancy-guard", "hooks", Fault::Crash),
    ("summarise-dedup", "for-update-nowait", "summarisers", Fault::Crash),
    ("pool-exhaustion", "checkout-timeout", "hooks", Fault::Crash),
    ("session-get-or-create", "partial-unique-index", "messages", Fault::Crash),
    ("skill-inject", "refresh", "hooks", Fault::None),
    ("reaper-commit", "commit-inside-lock", "hooks", Fault::Crash),
    // No symmetry declared: their worlds (files, a page API, a document store) are not renamed.
    // area-ensure's count is per instance, of two instances.
    ("area-ensure", "idempotency-key", "workers", Fault::Crash),
    ("state-save", "unique-tmp-fsync-rename", "savers", Fault::Crash),
    ("guidance-write", "mkstemp-fsync-rename", "writers", Fault::Crash),
    ("config-edit", "flock", "editors", Fault::None),
];

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let limit: u64 = std::env::var("RACELAB_SCALE_LIMIT").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let workers: Vec<usize> = std::env::var("RACELAB_SCALE_WORKERS")
        .unwrap_or_else(|_| "2,4,6,8,16".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    let races: Vec<String> = std::env::var("RACELAB_SCALE_RACES")
        .map(|v| v.split(',').map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect())
        .unwrap_or_default();
    let catalogue = racelab_models::catalogue();
    println!(
        "| race/variant | workers | faults | result | states | sequential (s) | states/s | bytes/state | \
         1 thread (s) | 2 threads (s) | speed-up | bytes/state (threads) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &(race, variant, param, fault) in CELLS {
        let id = format!("{race}/{variant}");
        if !races.is_empty() && !races.iter().any(|r| id.contains(r.as_str())) {
            continue;
        }
        let (faults, crashes) = match fault {
            Fault::Crash => ("1 crash", 1),
            Fault::None => ("none", 0),
        };
        let def = catalogue.iter().find(|r| r.id == race).expect("race in the catalogue");
        let build = def.variants.iter().find(|v| v.id == variant).expect("variant").build;
        for &n in &workers {
            let params = Params::new(BTreeMap::from([(param.to_string(), Param::Int(n as i64))]));
            let Ok(model) = build(&params) else {
                println!("| {id} | {n} | {faults} | more workers than the model takes | | | | | | | | |");
                continue;
            };
            let bounds = Bounds { crashes, max_depth: 400, max_states: 100_000_000, ..Bounds::default() };
            let start = Instant::now();
            let sequential = model.explore_exhaustive_with(
                &bounds,
                &Exhaustive { budget: Budget::time_limit(limit), ..Exhaustive::default() },
            );
            let secs = start.elapsed().as_secs_f64();
            let parallel = |threads: usize| {
                let start = Instant::now();
                let e = model.explore_parallel(&bounds, threads, &Budget::time_limit(limit), true);
                (e, start.elapsed().as_secs_f64())
            };
            let skip = std::env::var_os("RACELAB_SCALE_SEQUENTIAL").is_some();
            let (one, t1) = if skip { (sequential.clone(), f64::NAN) } else { parallel(1) };
            let (two, t2) = if skip { (sequential.clone(), f64::NAN) } else { parallel(2) };
            let result = if sequential.violation.is_some() {
                "violated".to_string()
            } else if sequential.complete {
                "complete".to_string()
            } else {
                format!("stopped: {}", sequential.incomplete_reason.clone().unwrap_or_default())
            };
            let states = sequential.stats.states;
            let time = |e: &racelab_harness::explore::Exploration, t: f64| {
                if skip {
                    "–".to_string()
                } else if e.complete || e.violation.is_some() {
                    format!("{t:.2}")
                } else {
                    format!("> {limit} ({} states)", e.stats.states)
                }
            };
            // Below a tenth of a second the ratio is all noise.
            let speedup =
                if one.complete && two.complete && t1 >= 0.1 { format!("{:.2}", t1 / t2) } else { "–".to_string() };
            println!(
                "| {id} | {n} | {faults} | {result} | {states} | {secs:.2} | {:.0} | {:.0} | {} | {} | {speedup} | {} |",
                states as f64 / secs.max(1e-9),
                sequential.cache_bytes as f64 / states.max(1) as f64,
                time(&one, t1),
                time(&two, t2),
                if skip {
                    "–".to_string()
                } else {
                    format!("{:.0}", two.cache_bytes as f64 / two.stats.states.max(1) as f64)
                },
            );
        }
    }
}
