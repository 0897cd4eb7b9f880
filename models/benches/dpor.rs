//! The DPOR table: for every scenario the catalogue explores exhaustively, under its declared
//! bounds, properties unchecked (so that a violated scenario is counted whole): distinct
//! states of the exhaustive search, executions without reduction, their Mazurkiewicz traces,
//! executions of source-DPOR and of sleep sets alone, and DPOR executions per trace (1.00 is
//! optimal). Sleep sets alone never run two equivalent complete executions either; what they
//! waste is explorations cut short (blocked) and their transitions.
//!
//! `cargo bench -p racelab-models --bench dpor` (or `just bench-dpor`) prints a Markdown table.
//! `RACELAB_DPOR_CAP` (default 200000) caps the enumeration and each search's executions; a
//! capped count is shown as `> cap`. Times are wall clock, for orientation only.

use std::path::Path;
use std::time::Instant;

use racelab_harness::explore::dpor::Dpor;
use racelab_harness::explore::Bounds;
use racelab_harness::run::Mode;
use racelab_harness::scenario;

fn main() {
    let cap: u64 = std::env::var("RACELAB_DPOR_CAP").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let scenarios = scenario::load_dir(&dir, &racelab_models::catalogue()).expect("scenario files load");
    println!(
        "| scenario | faults | states | executions | traces | DPOR executions | DPOR / traces | \
         sleep sets alone | transitions: DPOR / sleep sets alone | DPOR (s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let counted = |n: u64, complete: bool| if complete { n.to_string() } else { format!("> {cap}") };
    for s in scenarios.iter().filter(|s| s.mode == Mode::Exhaustive) {
        let bounds = Bounds { ..s.bounds.clone() };
        let states = s.model.explore_exhaustive(&bounds, true);
        let count = s.model.count_traces(&bounds, cap);
        let unchecked = Dpor { check_properties: false, max_executions: cap, ..Dpor::default() };
        let start = Instant::now();
        let (dpor, report) = s.model.explore_dpor(&bounds, &unchecked);
        let secs = start.elapsed().as_secs_f64();
        let (sleep, sleep_report) = s.model.explore_dpor(&bounds, &Dpor { source_sets: false, ..unchecked });
        let ratio = if count.complete && dpor.complete {
            format!("{:.2}", dpor.stats.executions as f64 / count.traces.len() as f64)
        } else {
            "–".to_string()
        };
        let runs = |e: &racelab_harness::explore::Exploration, blocked: u64| {
            if blocked > 0 {
                format!("{} (+{blocked} blocked)", counted(e.stats.executions, e.complete))
            } else {
                counted(e.stats.executions, e.complete)
            }
        };
        let b = &s.bounds;
        let faults: Vec<String> = [
            (b.crashes, "crash"),
            (b.errors, "error"),
            (b.timeouts, "timeout"),
            (b.lost_replies, "lost reply"),
            (b.power_losses, "power loss"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, name)| format!("{n} {name}"))
        .collect();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {:.2} |",
            s.id,
            if faults.is_empty() { "none".to_string() } else { faults.join(", ") },
            if states.violation.is_some() || states.complete { states.stats.states.to_string() } else { "–".into() },
            counted(count.executions, count.complete),
            counted(count.traces.len() as u64, count.complete),
            runs(&dpor, report.sleep_blocked),
            ratio,
            runs(&sleep, sleep_report.sleep_blocked),
            dpor.stats.transitions,
            sleep.stats.transitions,
            secs,
        );
    }
}
