//! The scale table: every race that holds, with more and more identical workers plus one crash,
//! explored exhaustively: states, time, states/s, bytes per visited state, and the time on one
//! and on two threads (`--threads`, which runs the sharded search).
//!
//! `cargo bench -p racelab-models --bench scale` (or `just bench-scale`) prints a Markdown
//! table. Each exploration gets `RACELAB_SCALE_LIMIT` seconds (default 10), after which its row
//! says how far it got; `RACELAB_SCALE_WORKERS` (default `2,4,6,8,16`) picks the worker counts.
//! Times are wall clock on whatever the machine is doing; take the best of several runs.

use std::collections::BTreeMap;
use std::time::Instant;

use racelab_harness::catalogue::{Param, Params};
use racelab_harness::explore::budget::Budget;
use racelab_harness::explore::Bounds;
use racelab_harness::run::{Backend, Mode, Options};

/// The holding variants whose workers are identical, and the parameter that counts them.
const CELLS: &[(&str, &str, &str)] = &[
    ("summary-upsert", "advisory-xact-lock", "requests"),
    ("summary-upsert", "unique-on-conflict", "requests"),
    ("progress-clear-insert", "upsert", "requests"),
    ("nested-locks", "single-namespace", "hooks"),
    ("daemon-spawn", "daemon-writes-pid", "hooks"),
];

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let limit: u64 = std::env::var("RACELAB_SCALE_LIMIT").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let workers: Vec<usize> = std::env::var("RACELAB_SCALE_WORKERS")
        .unwrap_or_else(|_| "2,4,6,8,16".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    let catalogue = racelab_models::catalogue();
    println!("| race/variant | workers | faults | verdict | states | time (s) | states/s | bytes/state | 1 thread (s) | 2 threads (s) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &(race, variant, param) in CELLS {
        let def = catalogue.iter().find(|r| r.id == race).expect("race in the catalogue");
        let build = def.variants.iter().find(|v| v.id == variant).expect("variant").build;
        for &n in &workers {
            let params = Params::new(BTreeMap::from([(param.to_string(), Param::Int(n as i64))]));
            let Ok(model) = build(&params) else {
                println!("| {race}/{variant} | {n} | 1 crash | (more workers than the model takes) | | | | | | |");
                continue;
            };
            let bounds = Bounds { crashes: 1, max_depth: 400, max_states: 100_000_000, ..Bounds::default() };
            let id = format!("{race}/{variant}");
            let options = |threads: Option<usize>| Options { budget: Budget::time_limit(limit), share: None, threads };
            let start = Instant::now();
            let explored = model.explore_exhaustive_with(&bounds, &options(None).budget);
            let secs = start.elapsed().as_secs_f64();
            let verdict = if explored.violation.is_some() {
                "violated".to_string()
            } else if explored.complete {
                "complete".to_string()
            } else {
                format!("stopped: {}", explored.incomplete_reason.unwrap_or_default())
            };
            let states = explored.stats.states;
            // Threads only where one run completes quickly: each costs as much again.
            let threads = |t: usize| {
                let start = Instant::now();
                let c = model.check_with(&id, &Mode::Exhaustive, &bounds, &Backend::Sim, &options(Some(t)));
                if c.complete || c.counterexample.is_some() {
                    format!("{:.2}", start.elapsed().as_secs_f64())
                } else {
                    format!("> {limit}")
                }
            };
            let (t1, t2) = if explored.complete && secs * 20.0 < limit as f64 {
                (threads(1), threads(2))
            } else {
                ("–".to_string(), "–".to_string())
            };
            println!(
                "| {id} | {n} | 1 crash | {verdict} | {states} | {secs:.2} | {:.0} | {:.0} | {t1} | {t2} |",
                states as f64 / secs.max(1e-9),
                explored.cache_bytes as f64 / states.max(1) as f64,
            );
        }
    }
}
