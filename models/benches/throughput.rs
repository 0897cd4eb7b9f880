//! States per second of the sequential exhaustive search on one core, on the headline races:
//! the holding variant of each seed's headline race, with as many workers as make the plain
//! (unreduced) search visit at least `RACELAB_THROUGHPUT_STATES` states (default 200,000) or
//! the model's largest worker count, and one crash allowed.
//!
//! `cargo bench -p racelab-models --bench throughput` (or `just bench-throughput`) prints a
//! Markdown table: the plain search (sleep sets, no symmetry) and the reduced one (symmetry), each
//! with states, transitions, seconds, states/s and transitions/s. Times are wall clock; take the
//! best of several runs on a quiet machine. `RACELAB_THROUGHPUT_RACES` (a comma-separated list of
//! substrings of `race/variant`) picks the rows.

// The allocator the `racelab` binary uses, so that the table times what `check` does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::time::Instant;

use racelab_harness::catalogue::{DynModel, Param, Params};
use racelab_harness::explore::budget::Budget;
use racelab_harness::explore::exhaustive::Exhaustive;
use racelab_harness::explore::{Bounds, Exploration};

/// The headline race of each seed (and the session race of the progress seed), its holding
/// variant, and the parameter that counts its identical workers (`None`: fixed actors).
const ROWS: &[(&str, &str, Option<&str>)] = &[
    ("summary-upsert", "advisory-xact-lock", Some("requests")),
    ("progress-clear-insert", "upsert", Some("requests")),
    ("daemon-spawn", "daemon-writes-pid", Some("hooks")),
    ("state-save", "unique-tmp-fsync-rename", Some("savers")),
    ("judge-persist", "await-persist", None),
    ("nested-locks", "single-namespace", Some("hooks")),
];

/// No exploration runs longer than this.
const LIMIT_S: u64 = 60;

fn main() {
    let wanted: u64 = std::env::var("RACELAB_THROUGHPUT_STATES").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let races: Vec<String> = std::env::var("RACELAB_THROUGHPUT_RACES")
        .map(|v| v.split(',').map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect())
        .unwrap_or_default();
    let catalogue = racelab_models::catalogue();
    println!(
        "| race/variant | workers | plain states | transitions | s | states/s | transitions/s | \
         reduced states | transitions | s | states/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &(race, variant, param) in ROWS {
        let id = format!("{race}/{variant}");
        if !races.is_empty() && !races.iter().any(|r| id.contains(r.as_str())) {
            continue;
        }
        let def = catalogue.iter().find(|r| r.id == race).expect("race in the catalogue");
        let build = def.variants.iter().find(|v| v.id == variant).expect("variant").build;
        let bounds = Bounds { crashes: 1, max_depth: 400, max_states: 100_000_000, ..Bounds::default() };
        // Grow the worker count until the plain search is large enough to time.
        let mut chosen: Option<(usize, Box<dyn DynModel>, Exploration, f64)> = None;
        for n in 2..=16usize {
            let params = match param {
                Some(p) => Params::new(BTreeMap::from([(p.to_string(), Param::Int(n as i64))])),
                None if n == 2 => Params::default(),
                None => break,
            };
            let Ok(model) = build(&params) else { break };
            let (plain, secs) = run(&*model, &bounds, false);
            let big = plain.stats.states >= wanted || !plain.complete;
            chosen = Some((n, model, plain, secs));
            if big {
                break;
            }
        }
        let (n, model, plain, secs) = chosen.expect("the model builds with 2 workers");
        let (reduced, reduced_secs) = run(&*model, &bounds, true);
        let shown = |e: &Exploration, s: f64| {
            if e.complete {
                format!("{:.2}", s)
            } else {
                format!("> {LIMIT_S}")
            }
        };
        println!(
            "| {id} | {} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {:.0} |",
            if param.is_some() { n.to_string() } else { "–".into() },
            plain.stats.states,
            plain.stats.transitions,
            shown(&plain, secs),
            plain.stats.states as f64 / secs.max(1e-9),
            plain.stats.transitions as f64 / secs.max(1e-9),
            reduced.stats.states,
            reduced.stats.transitions,
            shown(&reduced, reduced_secs),
            reduced.stats.states as f64 / reduced_secs.max(1e-9),
        );
    }
}

fn run(model: &dyn DynModel, bounds: &Bounds, symmetry: bool) -> (Exploration, f64) {
    let search = Exhaustive { budget: Budget::time_limit(LIMIT_S), symmetry, ..Exhaustive::default() };
    let start = Instant::now();
    let exploration = model.explore_exhaustive_with(bounds, &search);
    (exploration, start.elapsed().as_secs_f64())
}
